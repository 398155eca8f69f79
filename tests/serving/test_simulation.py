"""The closed-loop simulation: honest (a period's model reads only labels inspected before it,
known by then), and its outputs as CONTRACT section 2 names them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.cli import app
from serving.simulation import (
    PERIOD_COLUMNS,
    Knowledge,
    Settings,
    score_period,
    simulate,
    write_outputs,
)
from tests.conftest import REPO
from tests.models.test_training_and_bundle import SHARES, TRAIN_PARAMS

STRATEGIES = {
    "policy",
    "risk_only",
    "random",
    "policy_fully_labelled",
    "risk_only_fully_labelled",
    "explore_0",
    "explore_1",
    "explore_5",
    "explore_10",
}


def _settings(history: pd.DataFrame, **changes) -> Settings:
    dates = np.sort(history["declaration_date"].unique())
    start = str(pd.Timestamp(dates[len(dates) // 2]).date())
    values = {
        "start": start,
        "period_days": 60,
        "rounds": 10,
        "critical_rounds": 5,
        "train_params": TRAIN_PARAMS,
        "shares": SHARES,
        "inspection_rate": 0.10,
        "seed": 0,
        "smoothing": 10.0,
        "exploration_key": "customs-risk-exploration",
    }
    return Settings(**{**values, **changes})


def _flip(history: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    changed = history.copy()
    for label in ("fraud", "critical_fraud"):
        changed.loc[rows, label] = 1 - changed.loc[rows, label]
    return changed


def test_a_periods_model_reads_no_label_it_was_not_shown(history):
    """Flip every label the learner was not shown (uninspected earlier rows, the period's own
    rows, later rows): the period's scores do not move."""
    settings = _settings(history)
    start = pd.Timestamp(settings.start)
    dates = history["declaration_date"]
    period = history[(dates >= start) & (dates < start + pd.Timedelta(days=30))]
    knowledge = Knowledge.initial(history, start - pd.Timedelta(days=60))
    earlier = np.flatnonzero(((dates >= start - pd.Timedelta(days=60)) & (dates < start)).to_numpy())
    knowledge.reveal(earlier[::7], start - pd.Timedelta(days=1))  # a few inspected, known the day before
    scored = score_period(knowledge, period, start, settings)
    hidden = np.flatnonzero(~knowledge.revealed)
    flipped = Knowledge(_flip(history, hidden), knowledge.revealed, knowledge.known_on)
    again = score_period(flipped, period, start, settings)
    np.testing.assert_array_equal(again.risk, scored.risk)
    np.testing.assert_array_equal(again.critical, scored.critical)
    # and the labels it was shown do matter: the check above could fail
    shown = Knowledge(_flip(history, earlier[::7]), knowledge.revealed, knowledge.known_on)
    assert not np.array_equal(score_period(shown, period, start, settings).risk, scored.risk)


def test_an_outcome_counts_only_from_the_day_it_was_known(history):
    start = pd.Timestamp(history["declaration_date"].iloc[len(history) // 2])
    knowledge = Knowledge.initial(history, start)
    later = np.flatnonzero((history["declaration_date"] >= start).to_numpy())[:50]
    knowledge.reveal(later, start + pd.Timedelta(days=20))
    frame = knowledge.frame(start + pd.Timedelta(days=40))
    assert frame.loc[later, "fraud"].notna().all()
    assert (frame.loc[later, "inspected_on"] == start + pd.Timedelta(days=20)).all()
    untouched = np.setdiff1d(np.flatnonzero((history["declaration_date"] >= start).to_numpy()), later)
    untouched = untouched[untouched < len(frame)]
    assert frame.loc[untouched, "fraud"].isna().all()


@pytest.fixture(scope="module")
def replay(history):
    settings = _settings(history)
    return settings, *simulate(history, settings)


def test_the_replay_reports_every_strategy_per_period_as_the_contract_names_them(replay, tmp_path):
    settings, table, summary = replay
    assert list(table.columns) == PERIOD_COLUMNS
    assert set(table["strategy"]) == STRATEGIES
    periods = table.groupby("strategy").size()
    assert (periods == summary["periods"]).all() and summary["periods"] >= 2
    budget = (table["declarations"] * settings.inspection_rate).round()
    exact = table[table["strategy"].isin(["risk_only", "random", "explore_5", "explore_10"])]
    assert (exact["inspected"] == budget[exact.index]).all()
    assert (table["hits"] <= table["inspected"]).all() and (table["hits"] <= table["frauds"]).all()
    # every strategy is judged on the same real outcomes of a period, which its model never saw
    assert (table.groupby("period_start")["frauds"].nunique() == 1).all()
    assert table["frauds"].sum() > 0
    means = table.groupby("strategy")["precision"].mean()
    assert means["risk_only_fully_labelled"] > means["random"] and means["risk_only"] > means["random"]
    risk, explore0 = (table[table["strategy"] == name].reset_index(drop=True) for name in ("risk_only", "explore_0"))
    pd.testing.assert_frame_equal(risk.drop(columns="strategy"), explore0.drop(columns="strategy"))
    for name, figures in summary["strategies"].items():
        for kind in ("importer", "combination"):
            assert 0 <= figures[f"{kind}_known_share"] <= 1, (name, kind)
    # a learner that sees every label knows at least as many combinations as one that sees its picks
    known = {name: figures["combination_known_share"] for name, figures in summary["strategies"].items()}
    assert known["risk_only_fully_labelled"] > max(known["risk_only"], known["random"]) > 0
    for name, figures in summary["strategies"].items():  # picks split by known combination add up
        unknown = figures["picks_of_unknown_combination_share"] * figures["inspected"]
        precision = {where: figures[f"precision_on_{where}_combination"] or 0.0 for where in ("known", "unknown")}
        found = precision["unknown"] * unknown + precision["known"] * (figures["inspected"] - unknown)
        assert found == pytest.approx(figures["hits"], abs=0.5), name
    paths = write_outputs(table, summary, tmp_path / "out")
    assert [path.name for path in paths] == ["periods.csv", "summary.json", "simulation.png"]
    assert pd.read_csv(paths[0]).shape == table.shape
    assert json.loads(paths[1].read_text())["strategies"].keys() == summary["strategies"].keys()
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_last_periods_labels_change_nothing_before_they_are_revealed(history, replay):
    """A leak through the loop would let a period's outcomes reach its own selections."""
    settings, table, _ = replay
    last = pd.Timestamp(table["period_start"].max())
    rows = np.flatnonzero((history["declaration_date"] >= last).to_numpy())
    changed, _ = simulate(_flip(history, rows), settings)
    keep = ["strategy", "period_start", "inspected"]
    pd.testing.assert_frame_equal(changed[keep], table[keep])
    before = table["period_start"] < last.date()
    pd.testing.assert_frame_equal(changed[before], table[before])
    assert not changed[~before]["hits"].equals(table[~before]["hits"])


def test_the_command_refuses_what_it_cannot_replay(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["simulate", "--input", str(tmp_path / "none.csv"), "--output", str(tmp_path)])
    assert missing.exit_code == 2 and "none.csv: no such file" in missing.output
    rate = runner.invoke(app, ["simulate", "--inspection-rate", "0", "--output", str(tmp_path)])
    assert rate.exit_code == 2 and "--inspection-rate" in rate.output


def test_the_command_replays_a_canonical_file_with_uninspected_rows_and_logs_a_run(history, tmp_path, mlflow_store):
    """`customs-risk simulate` as a user runs it, on canonical history holding declarations
    nobody inspected (null labels: never counted as clean, never learned from)."""
    from mlflow import MlflowClient

    source = history.copy()
    source.loc[source.index % 9 == 4, ["fraud", "critical_fraud"]] = None
    path = tmp_path / "history.csv"
    source.to_csv(path, index=False, date_format="%Y-%m-%d")
    tracking = mlflow_store
    start = _settings(history).start
    args = [
        "simulate",
        "--input",
        str(path),
        "--start",
        start,
        "--period-days",
        "200",
        "--output",
        str(tmp_path / "out"),
        "--params",
        str(REPO / "params.yaml"),  # mlflow_store runs the test in its own folder
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "periods.csv")
    assert set(table["strategy"]) == STRATEGIES and list(table.columns) == PERIOD_COLUMNS
    # uninspected rows are not frauds a strategy could have found
    inside = history[history["declaration_date"] >= pd.Timestamp(start)]
    assert table.groupby("strategy")["frauds"].sum().max() <= int((source.loc[inside.index, "fraud"] == 1).sum())
    runs = MlflowClient(tracking).search_runs(
        [MlflowClient(tracking).get_experiment_by_name("simulation").experiment_id]
    )
    assert len(runs) == 1 and "policy.mean.precision" in runs[0].data.metrics
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert runs[0].data.metrics["policy.mean.precision"] == pytest.approx(
        summary["strategies"]["policy"]["mean"]["precision"]
    )
