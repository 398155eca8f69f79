"""The search is seeded and judged on precision@5%; reports carry what reviewers read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.matrix import training_features
from models.lanes import LanePolicy, LaneShares
from models.metrics import lane_metrics
from models.reports import (
    lane_frontier,
    model_card,
    plot_bars,
    plot_lane_frontier,
    plot_reliability,
    plot_roc_pr,
    plot_targeting_curve,
    plot_yellow_frontier,
    targeting_curve,
    yellow_frontier,
)
from models.tuning import SEARCH_SPACE, precision_at, tune

BASE = {
    "seed": 42,
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "cat_smoothing": 10.0,
    "max_cat_to_onehot": 8,
    "max_rounds": 20,
    "early_stopping_rounds": 5,
}


@pytest.fixture(scope="module")
def split(history):
    matrix, _ = training_features(history, 10)
    dates = history["declaration_date"]
    is_valid = (dates >= np.sort(dates.unique())[int(dates.nunique() * 0.8)]).to_numpy()
    return matrix, history["fraud"].to_numpy(), ~is_valid, is_valid


def test_search_is_reproducible_and_starts_from_params_yaml(split):
    matrix, y, is_train, is_valid = split
    best, table = tune(matrix, y, is_train, is_valid, BASE, trials=2, seed=1)
    again, table_again = tune(matrix, y, is_train, is_valid, BASE, trials=2, seed=1)
    assert best == again
    pd.testing.assert_frame_equal(
        table.drop(columns=[c for c in table if "datetime" in c]),
        table_again.drop(columns=[c for c in table_again if "datetime" in c]),
    )
    first = table.iloc[0]
    assert first["params_num_leaves"] == BASE["num_leaves"]  # the enqueued params.yaml trial
    assert len(table) == 2
    # the value is precision@5% with a tiny precision@10% tie-breaker
    assert table["value"].to_numpy() == pytest.approx(
        (table["user_attrs_precision_at_5"] + 1e-3 * table["user_attrs_precision_at_10"]).to_numpy()
    )
    for name, (low, high, _) in SEARCH_SPACE.items():
        assert low <= best[name] <= high
        assert isinstance(best[name], type(BASE[name]))
    assert {k: v for k, v in best.items() if k not in SEARCH_SPACE} == {
        k: v for k, v in BASE.items() if k not in SEARCH_SPACE
    }


def test_precision_at_counts_the_top_share():
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.5, 0.0])
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 1])
    assert precision_at(scores, labels, 20) == 0.5  # top 2: 0.9 (fraud) and 0.8 (clean)
    assert precision_at(scores, labels, 100) == 0.3


def test_plots_are_written(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(y * 0.6 + rng.random(500) * 0.4, 0, 1)
    curve = targeting_curve(y, rng.random(500) * 100, p)
    assert curve["precision"].iloc[0] >= curve["precision"].iloc[-1]
    paths = [
        plot_targeting_curve(curve, tmp_path / "curve.png"),
        *plot_roc_pr(y, p, tmp_path / "roc.png", tmp_path / "pr.png"),
        plot_reliability({"fraud": (y, p)}, tmp_path / "rel.png"),
        plot_bars(pd.Series([3.0, 1.0, 2.0], index=["a", "b", "c"]), "t", "x", tmp_path / "bars.png"),
    ]
    for path in paths:
        assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"


def test_model_card_states_data_metrics_lanes_and_limits():
    metrics = {
        f"{m}_at_{r}": 0.5 + r / 100
        for m in ("precision", "recall", "duty_recovered", "critical_recall")
        for r in (5, 10)
    }
    metrics.update(roc_auc=0.9, pr_auc=0.7, brier=0.1, critical_roc_auc=0.8, critical_brier=0.01, validation_rows=1234)
    metrics.update(validation_rows_labelled=1234)
    metrics.update(
        {
            f"lane_{lane}_{figure}": value
            for lane, value in (("red", 0.07), ("yellow", 0.1), ("green", 0.83))
            for figure in ("share", "hit_rate", "fraud_share", "duty_share", "critical_share")
        },
        lane_red_yellow_critical_share=0.8,
    )
    lanes = {
        "red_share": 0.06,
        "red_risk_share": 0.025,
        "red_value_share": 0.015,
        "red_critical_share": 0.02,
        "yellow_share": 0.1,
        "yellow_critical_share": 0.05,
        "exploration_share": 0.01,
    }
    windows = {"train_start": "2020-01-01", "valid_start": "2021-01-01", "valid_end": "2021-03-31"}
    identity = {"run_id": "r1", "data_version": "d1", "git_commit": "c1"}
    tuning = {"params": {"num_leaves": 63}, "trials": 6, "train_rows_sampled": 2_000_000, "train_rows": 9_000_000}
    card = model_card(identity, windows, metrics, lanes, tuning, [5, 10])
    own = model_card(identity, windows, metrics, lanes, {**tuning, "critical_params": {"num_leaves": 15}}, [5])
    assert "Critical model (searched on its own, by PR AUC): num_leaves=15" in own
    assert "| top 5% | 0.550 | 0.550 | 0.550 | 0.550 |" in card
    assert "| top 10% | 0.600 |" in card
    assert "2021-01-01 .. 2021-03-31 (1,234 declarations)" in card
    assert "`d1`" in card and "`c1`" in card and "num_leaves=63" in card
    assert "Known limits" in card
    assert "counts the labelled (inspected) declarations only: 1,234 of the window's 1,234." in " ".join(card.split())
    # some declarations never inspected: the random picks' hit rate and the estimate beside the labelled figures
    partly = metrics | {
        "validation_rows_labelled": 200,
        "random_picks": 12,
        "random_pick_hit_rate": 0.25,
        "ipw_precision_at_5": 0.41,
        "ipw_precision_at_10": 0.32,
    }
    shown = " ".join(model_card(identity, windows, partly, lanes, tuning, [5, 10]).split())
    assert "labelled (inspected) declarations only: 200 of the window's 1,234." in shown
    assert "the 12 inspected random picks' hit rate 0.250" in shown
    assert "estimate of precision over all 1,234," in shown and "top 5% 0.410, top 10% 0.320 (`ipw_" in shown
    assert "no random pick was inspected" in " ".join(
        model_card(
            identity, windows, partly | {"random_picks": 0, "random_pick_hit_rate": None}, lanes, tuning, [5]
        ).split()
    )
    assert "Red by score 6.0%: critical score 2.0%, then duty at risk 1.5%" in " ".join(card.split())
    assert "| red | 0.070 | 0.070 | 0.070 | 0.070 | 0.070 |" in card and "hold 80.0% of critical frauds" in " ".join(
        card.split()
    )
    assert "Critical model (searched on its own, by PR AUC): the same" in card
    assert "the 2,000,000 most recent of the 9,000,000 training rows (`tune.max_train_rows`)" in card
    everything = model_card(identity, windows, metrics, lanes, {**tuning, "train_rows_sampled": 9_000_000}, [5])
    assert "Searched in 6 trials on every training row." in everything
    untuned = model_card(identity, windows, metrics, lanes, {"params": {"num_leaves": 63}, "trials": 0}, [5])
    assert "Not searched" in untuned
    # which lane thresholds are packaged: fixed as fitted (the default), or following traffic
    assert "thresholds fixed as fitted on the validation window's scores" in " ".join(card.split())
    following = " ".join(model_card(identity, windows, metrics, lanes, tuning, [5], follow_window=1000).split())
    assert "follow traffic (`serving.lane_thresholds: follow`)" in following
    assert "the last 1,000 declarations the center scored with this model" in following


@pytest.fixture(scope="module")
def packaged():
    """Out-of-sample-like scores of a validation window and the policy fitted on them."""
    rng = np.random.default_rng(3)
    n = 3000
    fraud = (rng.random(n) < 0.2).astype(float)
    critical = fraud * (rng.random(n) < 0.1)
    scores = pd.DataFrame(
        {
            "declaration_id": [f"D{i}" for i in range(n)],
            "fraud": fraud,
            "critical_fraud": critical,
            "duty_exposure": rng.lognormal(8, 2, n),
            "risk_score": np.clip(0.5 * fraud + rng.random(n) * 0.6, 0, 1),
            "critical_score": np.clip(0.4 * critical + rng.random(n) * 0.3, 0, 1),
        }
    )
    scores["duty_at_risk"] = scores["risk_score"] * scores["duty_exposure"]
    shares = LaneShares(
        red_risk_share=0.03,
        red_value_share=0.01,
        red_critical_share=0.02,
        yellow_share=0.1,
        yellow_critical_share=0.04,
        exploration_share=0.01,
    )
    policy = LanePolicy.fit(shares, "key", scores["risk_score"], scores["critical_score"], scores["duty_at_risk"])
    lane, _ = policy.assign(
        scores["risk_score"], scores["critical_score"], scores["duty_at_risk"], scores["declaration_id"].tolist()
    )
    return policy, scores, lane_metrics(lane, scores["fraud"], scores["critical_fraud"], scores["duty_exposure"])


def test_lane_frontier_splits_the_same_red_capacity_and_holds_the_packaged_point(packaged, tmp_path):
    policy, scores, figures = packaged
    frontier = lane_frontier(policy, scores, step=0.01)
    settings = frontier[["setting_risk", "setting_value", "setting_critical"]].sum(axis=1)
    assert np.allclose(settings, policy.red_share)
    chosen = frontier[
        np.isclose(frontier["setting_value"], policy.red_value_share)
        & np.isclose(frontier["setting_critical"], policy.red_critical_share)
    ]
    assert len(chosen) == 1
    for name in ("hit_rate", "duty_share", "critical_share"):
        assert chosen[f"red_{name}"].item() == pytest.approx(figures[f"lane_red_{name}"])
    assert plot_lane_frontier(frontier, policy, tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_yellow_frontier_moves_yellow_only_and_holds_the_packaged_point(packaged, tmp_path):
    policy, scores, figures = packaged
    frontier = yellow_frontier(policy, scores, step=0.02)
    assert frontier["setting_yellow_critical"].iloc[0] == 0
    assert frontier["setting_yellow_critical"].iloc[-1] == pytest.approx(policy.yellow_share)
    # yellow's capacity is the same whatever the split; red is as packaged, so red + yellow hold
    # at least what red alone holds
    assert np.allclose(frontier["yellow_share"], figures["lane_yellow_share"], atol=1 / len(scores))
    assert (frontier["red_yellow_critical_share"] >= figures["lane_red_critical_share"]).all()
    chosen = frontier[np.isclose(frontier["setting_yellow_critical"], policy.yellow_critical_share)]
    assert chosen["yellow_hit_rate"].item() == pytest.approx(figures["lane_yellow_hit_rate"])
    assert chosen["red_yellow_critical_share"].item() == pytest.approx(figures["lane_red_yellow_critical_share"])
    assert plot_yellow_frontier(frontier, policy, tmp_path / "y.png").read_bytes()[:4] == b"\x89PNG"
