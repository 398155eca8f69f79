"""`customs-risk` commands: the metrics table, clear errors from `score` on bad files, and its
partial batches. (Scoring through the packaged model is covered end to end in tests/e2e.)"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.schema import DECLARATION_FIELDS
from serving.cli import app
from tests.e2e.stack import contract_example
from tests.serving.test_decide import StandInModel

METRICS = {
    "precision_at_1": 0.8123,
    "precision_at_2": 0.7051,
    "precision_at_5": 0.6543,
    "precision_at_10": 0.5012,
    "recall_at_1": 0.0412,
    "recall_at_2": 0.0731,
    "recall_at_5": 0.1502,
    "recall_at_10": 0.2333,
    "duty_recovered_at_1": 0.1111,
    "duty_recovered_at_2": 0.2222,
    "duty_recovered_at_5": 0.3333,
    "duty_recovered_at_10": 0.4444,
    "critical_recall_at_1": 0.0909,
    "critical_recall_at_2": 0.1818,
    "critical_recall_at_5": 0.2727,
    "critical_recall_at_10": 0.3636,
    "roc_auc": 0.8765,
    "pr_auc": 0.5432,
    "brier": 0.12345,
    "critical_roc_auc": 0.7777,
    "validation_rows": 12345.0,
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _plain(text: str) -> str:
    """Output without rich's box drawing and line wrapping, for substring checks."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    text = re.sub(r"[│╭╮╰╯─┃━┏┓┗┛┡┩└┘┌┐├┤┬┴┼╇╈┳┻╋]", " ", text)
    return " ".join(text.split())


def test_metrics_prints_the_table(runner, tmp_path):
    path = tmp_path / "targeting.json"
    path.write_text(json.dumps(METRICS))
    result = runner.invoke(app, ["metrics", "--path", str(path)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "12,345 declarations" in out
    rows = {}
    for line in out.splitlines():
        match = re.search(r"top (\d+)%", line)
        if match:
            rows[match.group(1)] = re.findall(r"\d\.\d{3}", line)
    # one row per rate, in numeric order (2 before 10), each with the four metrics to 3 places
    assert list(rows) == ["1", "2", "5", "10"]
    for rate, values in rows.items():
        expected = [
            f"{METRICS[f'{name}_at_{rate}']:.3f}"
            for name in ("precision", "recall", "duty_recovered", "critical_recall")
        ]
        assert values == expected, rate
    plain = _plain(out)
    for header in ("inspected", "precision", "recall", "duty recovered", "critical recall"):
        assert header in plain
    assert f"ROC AUC {METRICS['roc_auc']:.3f}" in plain
    assert f"PR AUC {METRICS['pr_auc']:.3f}" in plain
    assert f"Brier {METRICS['brier']:.4f}" in plain
    assert f"critical ROC AUC {METRICS['critical_roc_auc']:.3f}" in plain


def test_metrics_prints_the_lane_table(runner, tmp_path):
    lanes = {
        f"lane_{lane}_{figure}": round(0.1 * i + 0.01 * j, 3)
        for i, lane in enumerate(("red", "yellow", "green"), 1)
        for j, figure in enumerate(("share", "hit_rate", "fraud_share", "duty_share", "critical_share"))
    }
    path = tmp_path / "targeting.json"
    path.write_text(json.dumps({**METRICS, **lanes, "lane_red_yellow_critical_share": 0.808}))
    result = runner.invoke(app, ["metrics", "--path", str(path)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    rows = {
        line.split()[1]: re.findall(r"\d\.\d{3}", line)
        for line in result.stdout.splitlines()
        if re.match(r"\W+(red|yellow|green)\W", line)
    }
    assert list(rows) == ["red", "yellow", "green"]
    for lane, shown in rows.items():
        assert shown == [
            f"{lanes[f'lane_{lane}_{f}']:.3f}"
            for f in ("share", "hit_rate", "fraud_share", "duty_share", "critical_share")
        ]
    assert "red and yellow together hold 80.8% of critical frauds" in _plain(result.stdout)


def test_metrics_without_critical_auc_still_prints(runner, tmp_path):
    path = tmp_path / "targeting.json"
    path.write_text(json.dumps({k: v for k, v in METRICS.items() if k != "critical_roc_auc"}))
    result = runner.invoke(app, ["metrics", "--path", str(path)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "critical ROC AUC nan" in _plain(result.stdout)


def test_metrics_of_a_window_without_fraud_still_print(runner, tmp_path):
    import numpy as np

    from models.metrics import targeting_metrics

    zeros = np.zeros(200)
    values = targeting_metrics(zeros, zeros, np.ones(200), np.linspace(0, 1, 200), zeros, [1, 2, 5, 10])
    path = tmp_path / "targeting.json"
    path.write_text(json.dumps(values))
    result = runner.invoke(app, ["metrics", "--path", str(path)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, repr(result.exception)
    assert "top 10%" in result.stdout


def test_metrics_on_a_missing_file_fails(runner, tmp_path):
    result = runner.invoke(app, ["metrics", "--path", str(tmp_path / "nope.json")])
    assert result.exit_code != 0


@pytest.mark.parametrize(
    ("source", "target"), [("in.csv", "out.parquet"), ("in.parquet", "out.csv"), ("in.csv", "out.txt")]
)
def test_score_refuses_an_output_of_another_format(runner, tmp_path, source, target):
    (tmp_path / source).write_text("declaration_id\n1\n")
    result = runner.invoke(
        app, ["score", "--input", str(tmp_path / source), "--output", str(tmp_path / target)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2
    assert "the output must have the input's format" in _plain(result.output)
    assert not (tmp_path / target).exists()


def test_score_refuses_a_txt_input(runner, tmp_path):
    (tmp_path / "in.txt").write_text("declaration_id\n1\n")
    result = runner.invoke(
        app,
        ["score", "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.txt")],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2
    assert "expected a .csv or .parquet file" in _plain(result.output)
    assert not (tmp_path / "out.txt").exists()


def test_score_refuses_a_missing_input(runner, tmp_path):
    result = runner.invoke(
        app,
        ["score", "--input", str(tmp_path / "absent.csv"), "--output", str(tmp_path / "out.csv")],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2
    assert "absent.csv" in _plain(result.output)


# Partial batches (docs/commands.md): the model is a stand-in here (the decision itself is real),
# so these tests hold the command's handling of rows; tests/e2e/test_readme_commands.py runs it on
# a real champion.

_FAKE_CHAMPION = SimpleNamespace(
    tag="customs-risk:fake", info=SimpleNamespace(metadata={"serving": {"max_reasons": 3}})
)


@pytest.fixture
def fake_champion(monkeypatch):
    """`score` with a stand-in champion (every valid declaration green, by the model), its
    decisions recorded: the declarations each was given and the reasons asked for."""
    import serving.cli
    import serving.decide
    import serving.loading
    import serving.profiles

    scored: list = []
    asked: list[dict] = []
    decide = serving.decide.decide

    def recorded(model, declarations, **options):
        scored.append(declarations)
        asked.append({"reasons": options["reasons"]})
        return decide(model, declarations, **options)

    monkeypatch.setattr(serving.cli, "use_stores", lambda settings: {})
    monkeypatch.setattr(serving.loading, "model_tag", lambda settings: "customs-risk:fake")
    monkeypatch.setattr(serving.loading, "packaged_champion", lambda tag: _FAKE_CHAMPION)
    monkeypatch.setattr(serving.loading, "load_packaged", lambda champion: StandInModel())
    monkeypatch.setattr(
        serving.profiles.RiskProfiles,
        "from_environment",
        classmethod(lambda cls, settings=None: SimpleNamespace(rules=(), path="rules.yaml")),
    )
    monkeypatch.setattr(serving.decide, "decide", recorded)
    return SimpleNamespace(scored=scored, asked=asked)


def _declarations(*changes: dict) -> pd.DataFrame:
    rows = [{**contract_example(), "declaration_id": f"D{i + 1}", **change} for i, change in enumerate(changes)]
    return pd.DataFrame(rows)


def _score(runner, tmp_path, records: pd.DataFrame, suffix: str = ".csv", options: tuple = ()):
    source, output = tmp_path / f"day{suffix}", tmp_path / f"scored{suffix}"
    if suffix == ".csv":
        records.to_csv(source, index=False)
    else:
        records.to_parquet(source, index=False)
    result = runner.invoke(
        app, ["score", "--input", str(source), "--output", str(output), *options], env={"COLUMNS": "200"}
    )
    read = (lambda p: pd.read_csv(p, dtype=str)) if suffix == ".csv" else pd.read_parquet
    rejected = tmp_path / f"scored.rejected{suffix}"
    return result, read(output) if output.exists() else None, read(rejected) if rejected.exists() else None


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_score_scores_the_valid_rows_and_lists_the_others(runner, tmp_path, fake_champion, suffix):
    records = _declarations({}, {"hs6_code": "44089"}, {}, {"importer_id": "Q" * 65, "origin_country": "XX"}, {})
    result, scored, rejected = _score(runner, tmp_path, records, suffix)
    assert result.exit_code == 3, result.output
    assert scored["declaration_id"].tolist() == ["D1", "D3", "D5"]  # the valid rows, in input order
    assert fake_champion.scored[0]["declaration_id"].tolist() == ["D1", "D3", "D5"]
    assert list(rejected.columns) == ["row", "field", "message"]
    assert [(int(row), field) for row, field in zip(rejected["row"], rejected["field"])] == [
        (2, "hs6_code"),
        (4, "importer_id"),
        (4, "origin_country"),
    ]
    assert rejected["message"].iloc[1] == "must be at most 64 characters"
    assert "rejected 2 of 5 rows" in _plain(result.output)


def test_score_exits_0_when_every_row_is_scored_and_drops_an_old_rejected_file(runner, tmp_path, fake_champion):
    (tmp_path / "scored.rejected.csv").write_text("row,field,message\n1,hs6_code,old\n")
    result, scored, rejected = _score(runner, tmp_path, _declarations({}, {"origin_country": "ZZ"}))
    assert result.exit_code == 0, result.output
    assert scored["declaration_id"].tolist() == ["D1", "D2"]
    assert rejected is None


def test_score_exits_2_when_no_row_can_be_scored(runner, tmp_path, fake_champion):
    result, scored, rejected = _score(runner, tmp_path, _declarations({"hs6_code": "1"}, {"tax_rate": "-1"}))
    assert result.exit_code == 2, result.output
    assert scored is not None and scored.empty  # OUT holds this input's (no) results, not an older run's
    assert rejected["row"].tolist() == ["1", "2"]
    assert fake_champion.scored == []


def test_an_extra_column_rejects_every_row(runner, tmp_path, fake_champion):
    result, _, rejected = _score(runner, tmp_path, _declarations({}, {}).assign(colour="red"))
    assert result.exit_code == 2, result.output
    assert rejected[["row", "field"]].values.tolist() == [["1", "colour"], ["2", "colour"]]
    assert set(rejected["message"]) == {"is not a declaration field"}


def test_containers_and_bills_of_lading_are_checked_per_row(runner, tmp_path, fake_champion):
    records = _declarations(
        {"container_number": "CSQU3054383", "bill_of_lading": "MEDUKR123456"},
        {"container_number": "CSQU3054384"},  # a wrong check digit
        {"container_number": None, "bill_of_lading": None},
    )
    result, scored, rejected = _score(runner, tmp_path, records)
    assert result.exit_code == 3, result.output
    assert scored["declaration_id"].tolist() == ["D1", "D3"]
    assert rejected[["row", "field"]].values.tolist() == [["2", "container_number"]]
    assert "check digit" in rejected["message"].iloc[0]


def test_an_unreadable_input_scores_nothing(runner, tmp_path, fake_champion):
    (tmp_path / "day.parquet").write_bytes(b"not parquet")
    result = runner.invoke(
        app, ["score", "--input", str(tmp_path / "day.parquet"), "--output", str(tmp_path / "o.parquet")]
    )
    assert result.exit_code == 2
    assert "cannot be read" in _plain(result.output)


@pytest.mark.parametrize(
    ("options", "asked"), [((), "selected"), (("--reasons", "all"), "all"), (("--reasons", "none"), "none")]
)
def test_score_asks_for_the_reasons_as_a_score_request_does(runner, tmp_path, fake_champion, options, asked):
    result, _, _ = _score(runner, tmp_path, _declarations({}), options=options)
    assert result.exit_code == 0, result.output
    assert fake_champion.asked == [{"reasons": asked}]


def test_score_refuses_an_unknown_reasons_choice(runner, tmp_path, fake_champion):
    result, _, _ = _score(runner, tmp_path, _declarations({}), options=("--reasons", "some"))
    assert result.exit_code == 2
    assert "selected, all, none" in _plain(result.output)
    assert fake_champion.scored == []


# Lanes that follow traffic (issue 28): a stand-in champion packaged with `follow`, whose scores
# come from each declaration (tests.serving.test_decide.TrafficModel).

FOLLOW_WINDOW = 40


@pytest.fixture
def following_champion(monkeypatch, history):
    """`score` with a stand-in champion packaged to follow the last FOLLOW_WINDOW declarations,
    its window starting from 60 declarations' scores; yields what the test compares with."""
    import serving.cli
    import serving.loading
    import serving.profiles
    from models.bundle import validated_declarations
    from models.lanes import SCORES, LanePolicy
    from serving.loading import LANE_WINDOW, PackagedLanes
    from tests.serving.test_decide import SHARES, TrafficModel

    records = history[DECLARATION_FIELDS].iloc[:160].reset_index(drop=True)
    model = TrafficModel()
    validation = model.scores(validated_declarations(records.iloc[:60]))
    model.lanes = LanePolicy.fit(SHARES, "key", *validation.T)
    champion = SimpleNamespace(
        tag="customs-risk:fake",
        info=SimpleNamespace(
            metadata={
                "version": "3",
                "serving": {"max_reasons": 3, "lane_thresholds": "follow", "follow_window": FOLLOW_WINDOW},
            }
        ),
        custom_objects={LANE_WINDOW: {name: validation[:, k] for k, name in enumerate(SCORES)}},
    )
    monkeypatch.setattr(serving.cli, "use_stores", lambda settings: {})
    monkeypatch.setattr(serving.loading, "model_tag", lambda settings: "customs-risk:fake")
    monkeypatch.setattr(serving.loading, "packaged_champion", lambda tag: champion)
    monkeypatch.setattr(serving.loading, "load_packaged", lambda bento_model: model)
    monkeypatch.setattr(
        serving.profiles.RiskProfiles,
        "from_environment",
        classmethod(lambda cls, settings=None: SimpleNamespace(rules=(), path="rules.yaml")),
    )
    return SimpleNamespace(
        model=model, lanes=PackagedLanes.of(champion, model.lanes), records=records.iloc[60:].reset_index(drop=True)
    )


def _as_decided(model, records: pd.DataFrame, window) -> pd.DataFrame:
    from models.bundle import RESULT_COLUMNS, validated_declarations
    from serving.decide import decide

    return decide(model, validated_declarations(records), window=window)[RESULT_COLUMNS]


def test_score_follows_the_files_rows_in_order_from_the_packaged_scores(runner, tmp_path, following_champion):
    champion = following_champion
    result, scored, _ = _score(runner, tmp_path, champion.records, suffix=".parquet")
    assert result.exit_code == 0, result.output
    expected = _as_decided(champion.model, champion.records, champion.lanes.window())
    assert scored[["declaration_id", "lane", "selected_by"]].equals(expected[["declaration_id", "lane", "selected_by"]])
    assert "following the last 40 declarations scored" in _plain(result.output)
    # not the packaged thresholds: the file's own rows moved them
    fixed = _as_decided(champion.model, champion.records, None)
    assert scored["lane"].tolist() != fixed["lane"].tolist()


def test_score_with_an_audit_store_continues_its_window_and_writes_nothing(runner, tmp_path, following_champion):
    from serving.audit import AuditStore

    champion, store = following_champion, AuditStore(tmp_path / "audit.db")
    earlier = champion.records.iloc[:30]
    decided = _as_decided(champion.model, earlier, champion.lanes.window())
    store.record_decisions(earlier.to_dict("records"), decided, "3", "follow")
    store.record_decisions(earlier.head(5).to_dict("records"), decided.head(5).assign(risk_score=0.99), "2", "follow")
    rest = champion.records.iloc[30:].reset_index(drop=True)
    result, scored, _ = _score(runner, tmp_path, rest, suffix=".parquet", options=("--audit-db", str(store.path)))
    assert result.exit_code == 0, result.output
    # after the packaged scores, the champion's (version 3's) 30 decisions, then the file: the
    # lanes of one stream, as the service that made those decisions would give the file next
    whole = _as_decided(champion.model, champion.records, champion.lanes.window())
    assert scored["lane"].tolist() == whole["lane"].iloc[30:].tolist()
    assert scored["selected_by"].tolist() == whole["selected_by"].iloc[30:].tolist()
    assert len(store.read("decisions")) == 35  # read, never written
    assert "30 decisions of" in _plain(result.output)


def test_score_refuses_an_audit_store_that_is_not_there(runner, tmp_path, following_champion):
    result, _, _ = _score(
        runner, tmp_path, following_champion.records, options=("--audit-db", str(tmp_path / "absent.db"))
    )
    assert result.exit_code == 2
    assert "no audit store at" in _plain(result.output)
    assert not (tmp_path / "absent.db").exists()


def test_score_refuses_a_file_that_is_no_audit_store(runner, tmp_path, following_champion):
    (tmp_path / "notes.db").write_text("not a database\n" * 100)
    result, _, _ = _score(
        runner, tmp_path, following_champion.records, options=("--audit-db", str(tmp_path / "notes.db"))
    )
    assert result.exit_code == 2
    assert "cannot be opened" in _plain(result.output)
