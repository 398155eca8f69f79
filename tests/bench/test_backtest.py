"""`make backtest` judges the packaged policy on a month the model never saw: the split must hold
that month out of training and validation, and the shares and figures it reports must be the
ones a person would count by hand. The whole run (a full `dvc repro`) is too slow for the suite;
these are its pure parts on inputs small enough to count."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bench.backtest import (
    SCORE_COLUMNS,
    disagreements,
    lane_shares,
    lane_table,
    lanes_following_traffic,
    last_month,
    markdown,
    month_split,
    policy_figures,
    policy_table,
    share_settings,
)
from models.bundle import Assessment
from models.lanes import LanePolicy, LaneShares
from serving.profiles import Condition, Rule


def _kcs(dates: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"Declaration ID": [f"D{i}" for i in range(len(dates))], "Date": dates})


def test_the_month_is_held_out_and_validation_is_the_three_months_before_it():
    kcs = _kcs(
        ["2020-08-31", "2020-09-01", "2020-10-15", "2020-11-30", "2020-12-01", "2020-12-31", "2021-01-01", "2021-02-01"]
    )
    split = month_split(kcs, "2020-12")
    assert split.windows == {"train_start": "2020-08-31", "valid_start": "2020-09-01", "valid_end": "2020-11-30"}
    assert list(split.train["Declaration ID"]) == ["D0"]
    assert list(split.valid["Declaration ID"]) == ["D1", "D2", "D3"]
    assert list(split.month["Declaration ID"]) == ["D4", "D5"]
    # later months are in none of them: the refit model and its entity state must not see the future
    assert not {"D6", "D7"} & set(pd.concat([split.train, split.valid, split.month])["Declaration ID"])


def test_a_march_month_ends_validation_on_the_last_day_of_february():
    split = month_split(_kcs(["2020-11-30", "2020-12-01", "2021-03-31"]), "2021-03")
    assert split.windows["valid_start"] == "2020-12-01"
    assert split.windows["valid_end"] == "2021-02-28"


def test_the_default_month_is_the_last_one_of_the_history():
    assert last_month(_kcs(["2020-01-05", "2021-03-31", "2021-02-01"])) == "2021-03"


@pytest.mark.parametrize(
    ("month", "message"),
    [("2021-04", "no declaration in 2021-04"), ("2020-09", "no history before its 3-month validation window")],
)
def test_a_month_that_cannot_be_backtested_says_why(month, message):
    with pytest.raises(ValueError, match=message):
        month_split(_kcs(["2020-08-31", "2020-09-01", "2020-10-15", "2020-12-01"]), month)


def test_the_settings_count_exploration_on_what_red_and_yellow_leave():
    shares = LaneShares(
        red_risk_share=0.03,
        red_value_share=0.01,
        red_critical_share=0.01,
        yellow_share=0.15,
        yellow_critical_share=0.05,
        exploration_share=0.1,
    )
    settings = share_settings(shares)
    # red by score 5%, yellow 15%: 80% would be green, a tenth of it (8%) goes red at random
    assert settings["red_by_score"] == pytest.approx(0.05)
    assert settings["red_random"] == pytest.approx(0.08)
    assert settings["red"] == pytest.approx(0.13)
    assert settings["green"] == pytest.approx(0.72)
    assert settings["red"] + settings["yellow"] + settings["green"] == pytest.approx(1)


def test_lane_shares_count_each_source_of_red_apart():
    lane = ["red", "red", "red", "red", "red", "red", "yellow", "yellow", "green", "green"]
    selected_by = ["model", "model", "value", "critical", "random", "rule", "critical", "model", "model", "model"]
    assert lane_shares(np.array(lane), np.array(selected_by)) == pytest.approx(
        {
            "red_by_score": 0.4,
            "red_risk": 0.2,
            "red_value": 0.1,
            "red_critical": 0.1,
            "red_random": 0.1,
            "red_rule_alert": 0.1,
            "red": 0.6,
            "yellow": 0.2,
            "green": 0.2,
        }
    )


def test_policy_figures_on_a_month_counted_by_hand():
    lane = np.array(["red", "red", "red", "red", "yellow", "yellow", "green", "green", "green", "green"])
    fraud = np.array([1, 1, 1, 0, 1, 0, 1, 0, 0, 0])
    critical = np.array([1, 0, 0, 0, 1, 0, 1, 0, 0, 0])
    duty = np.array([500.0, 300.0, 0.0, 9999.0, 100.0, 50.0, 100.0, 7.0, 0.0, 0.0])
    # red: 3 frauds of 4; duty at risk on frauds 800 of 1000 (the clean red row's 9999 is not at
    # risk); critical frauds 1 of 3 in red, 2 of 3 in red or yellow
    assert policy_figures(lane, fraud, critical, duty) == pytest.approx(
        {
            "lane_red_hit_rate": 0.75,
            "lane_red_duty_share": 0.8,
            "lane_red_critical_share": 1 / 3,
            "lane_red_yellow_critical_share": 2 / 3,
        }
    )


def _results(**changes) -> pd.DataFrame:
    results = pd.DataFrame(
        {
            "declaration_id": ["A", "B"],
            "risk_score": [0.9, 0.1],
            "critical_score": [0.2, 0.01],
            "duty_at_risk": [10.0, 0.0],
            "lane": ["red", "green"],
            "selected_by": ["model", "model"],
        }
    )
    return results.assign(**changes)


def test_the_cli_and_the_service_must_agree_exactly():
    assert set(disagreements(_results(), _results()).values()) == {0}
    differ = disagreements(_results(), _results(risk_score=[0.9, 0.1 + 1e-12], lane=["red", "yellow"]))
    assert differ == {
        "declaration_id": 0,
        "risk_score": 1,
        "critical_score": 0,
        "duty_at_risk": 0,
        "lane": 1,
        "selected_by": 0,
    }
    assert set(disagreements(_results(), _results().head(1)).values()) == {2}


def test_the_tables_judge_the_month_through_the_service_against_settings_and_targets():
    settings = dict.fromkeys(
        (
            "red_by_score",
            "red_risk",
            "red_value",
            "red_critical",
            "red_random",
            "red_rule_alert",
            "red",
            "yellow",
            "green",
        ),
        0.1,
    )
    service = {**settings, "red_by_score": 0.111, "yellow": 0.109}
    followed = dict(settings, red_by_score=0.102)
    lanes = lane_table(settings, service, dict(settings, yellow=0.5), settings, followed)
    judged = {row["row"]: row["within_1_point"] for row in lanes}
    assert not judged["red_by_score"] and judged["yellow"]  # the service's share is judged, not the CLI's
    month = {
        "lane_red_hit_rate": 0.6,
        "lane_red_duty_share": 0.84,
        "lane_red_critical_share": 0.7,
        "lane_red_yellow_critical_share": 0.9,
    }
    policy = policy_table(month, {**month, "lane_red_hit_rate": 0.5}, {**month, "lane_red_duty_share": 0.91})
    assert [row["month_met"] for row in policy] == [True, False, True, True]
    assert [row["validation_met"] for row in policy] == [False, False, True, True]
    text = markdown(lanes, policy, "header")
    assert "| red by score (risk + value + critical) | 10.00% | 11.10% | 10.00% | 10.00% | NO | 10.20% |" in text
    assert "| red share of duty at risk on frauds | 0.840 (NOT met) | 0.840 (NOT met) | >= 0.85 | 0.910 |" in text


class ScoresModel:
    """What `serving.decide` asks of a model, with known scores by declaration ID: lanes come from
    the policy it is handed, as a RiskModel's do."""

    state = None

    def __init__(self, scores: pd.DataFrame, policy: LanePolicy):
        self.scores, self.lanes = scores.set_index("declaration_id"), policy

    def assess(self, declarations, policy=None) -> Assessment:
        ids = [str(i) for i in declarations["declaration_id"].tolist()]
        risk, critical, duty = (self.scores.loc[ids, column].to_numpy(dtype=float) for column in SCORE_COLUMNS)
        lane, selected_by = (policy or self.lanes).assign(risk, critical, duty, ids)
        return Assessment(ids, risk, critical, duty, lane, selected_by, SimpleNamespace(matrix=None))

    def explain(self, assessed: Assessment, rows, max_reasons: int) -> list[list[dict]]:
        return [[] for _ in assessed.ids]


def test_thresholds_following_traffic_are_fitted_each_day_on_the_declarations_before_it(monkeypatch):
    monkeypatch.setattr("bench.backtest.FOLLOWED_DECLARATIONS", 4)
    shares = LaneShares(
        red_risk_share=0.5,
        red_value_share=0,
        red_critical_share=0,
        yellow_share=0,
        yellow_critical_share=0,
        exploration_share=0,
    )
    earlier = pd.DataFrame({"risk_score": [0.1, 0.2, 0.3, 0.4], "critical_score": 0.0, "duty_at_risk": 0.0})
    # the second day's rows come first: the days are taken in date order, not row order
    month = pd.DataFrame(
        {
            "declaration_id": ["C", "D", "A", "B"],
            "risk_score": [0.32, 0.36, 0.35, 0.25],
            "critical_score": 0.0,
            "duty_at_risk": 0.0,
        }
    )
    records = pd.DataFrame(
        {
            "declaration_id": month["declaration_id"],
            "declaration_date": pd.to_datetime(["2021-03-02", "2021-03-02", "2021-03-01", "2021-03-01"]),
            "hs6_code": "440890",
            "item_price": 100.0,
            "net_mass_kg": 10.0,
        }
    )
    # packaged on the validation window alone: its threshold (0.3) would send C red on day 2 too
    model = ScoresModel(month, LanePolicy.fit(shares, "key", *(earlier[column] for column in SCORE_COLUMNS)))
    lane, selected_by = lanes_following_traffic(model, records, (), shares, "key", earlier, month)
    # day 1: the top half of 0.1..0.4 starts at 0.3, so A (0.35) is red and B (0.25) green; day 2:
    # the last 4 scored are 0.3, 0.4, 0.35, 0.25, whose top half starts at 0.35: D red, C green
    assert list(lane) == ["green", "red", "red", "green"]
    assert list(selected_by) == ["model"] * 4
    assert model.assess(records).lane.tolist() == ["red", "red", "red", "green"]  # as packaged
    # an analyst's rule holds what it holds whatever the thresholds: the same decision as served
    watched = (Rule("watched", "yellow", "r", (Condition("declaration_id", "in", ("B",)),)),)
    lane, selected_by = lanes_following_traffic(model, records, watched, shares, "key", earlier, month)
    assert list(lane) == ["green", "red", "red", "yellow"]
    assert list(selected_by) == ["model", "model", "model", "rule"]
