"""Analyst risk profiles: refused with a clear message when wrong, applied as documented when right,
and picked up from the file while the service runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.matrix import FEATURE_NAMES, serving_features, serving_inputs, training_features
from features.schema import DECLARATION_FIELDS, RECORD, check_declarations
from serving.rules import (
    DEFAULT_PATH,
    SEVERITY,
    RiskProfileError,
    RiskProfiles,
    Rule,
    parse_rules,
    route,
    routed_lanes,
    rule_hits,
    score_routed,
)

TIMBER = """
rules:
  - name: timber-from-watch-list-origins
    lane: red
    reason: "timber from an origin on the watch list"
    when:
      hs6_code: {prefix: ["4407", "4408"]}
      origin_country: {in: ["MM", "KH"]}
"""


def _rules(text: str):
    return parse_rules(text, Path("profiles.yaml"))


def _rule(name: str, lane: str, when: str) -> str:
    return f'  - name: {name}\n    lane: {lane}\n    reason: "{name} fired"\n    when: {when}\n'


@pytest.fixture(scope="module")
def state(history):
    return training_features(history, smoothing=10)[1]


def _client_records(declarations: pd.DataFrame, **columns) -> pd.DataFrame:
    records = declarations.copy()
    for column, values in columns.items():
        records[column] = values
    return records


def _typed(records: pd.DataFrame) -> pd.DataFrame:
    return check_declarations(records, RECORD).valid


def _model_results(records: pd.DataFrame, lanes: list[str], selected_by: list[str] | None = None) -> pd.DataFrame:
    """What the model answered before the rules: lanes as given, one model reason each."""
    n = len(records)
    return pd.DataFrame(
        {
            "declaration_id": records["declaration_id"].tolist(),
            "risk_score": np.linspace(0.1, 0.9, n),
            "critical_score": np.zeros(n),
            "lane": lanes,
            "selected_by": selected_by or ["model"] * n,
            "reasons": [
                [{"feature": "tax_rate", "value": 8.0, "contribution": 0.5, "text": "tax rate 8%"}] for _ in range(n)
            ],
        }
    )


def test_shipped_file_has_no_rules_and_its_documented_example_parses():
    text = DEFAULT_PATH.read_text()
    assert _rules(text) == ()
    example = "\n".join(line[2:] for line in text.splitlines() if line.startswith(("# rules:", "#   ")))
    rules = _rules(example)
    assert [rule.name for rule in rules] == [
        "timber-from-watch-list-origins",
        "textiles-below-cost",
        "watch-listed-importer",
    ]
    assert {rule.lane for rule in rules} == {"red", "yellow"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [", "not valid YAML"),
        ("- name: x", "one key, 'rules'"),
        ("rules: []\nextra: 1", "one key, 'rules'"),
        (
            "rules:\n" + _rule("a", "blue", '{importer_id: {in: ["X"]}}'),
            "rules[0] (a).lane: expected one of yellow, red, got 'blue'",
        ),
        ("rules:\n" + _rule("a", "green", '{importer_id: {in: ["X"]}}'), "lane: expected one of yellow, red"),
        ("rules:\n" + _rule("a", "red", '{importer: {in: ["X"]}}'), "rules[0] (a).when: unknown field 'importer'"),
        ("rules:\n" + _rule("a", "red", "{hs6_code: {prefix: [4408]}}"), "hs6_code.prefix: 4408 must be a quoted"),
        ("rules:\n" + _rule("a", "red", '{hs6_code: {prefix: ["44-08"]}}'), "'44-08' is not an HS code or prefix"),
        (
            "rules:\n" + _rule("a", "red", '{origin_country: {in: ["XX"]}}'),
            "'XX' is not an ISO 3166-1 alpha-2 country code",
        ),
        ("rules:\n" + _rule("a", "red", "{origin_country: {below: 3}}"), "'below' does not apply to origin_country"),
        ("rules:\n" + _rule("a", "red", '{value_per_kg: {in: ["1"]}}'), "'in' does not apply to value_per_kg"),
        (
            "rules:\n" + _rule("a", "red", '{value_per_kg: {below: "cheap"}}'),
            "value_per_kg.below: expected a number, got 'cheap'",
        ),
        ("rules:\n" + _rule("a", "red", "{value_per_kg: {below: .nan}}"), "expected a number"),
        ("rules:\n" + _rule("a", "red", "{importer_id: {in: []}}"), "expected a non-empty list"),
        ("rules:\n" + _rule("a", "red", "{}"), "(a).when: expected at least one condition"),
        ("rules:\n" + _rule("a", "red", '{importer_id: {in: ["X"]}}') + "    priority: 1\n", "unknown key 'priority'"),
        ('rules:\n  - name: a\n    lane: red\n    when: {importer_id: {in: ["X"]}}\n', "'reason' is required"),
        ("rules:\n" + _rule("a", "red", '{importer_id: {in: ["X"]}}') * 2, "rule name 'a' is used more than once"),
        ("rules:\n  - just a string\n", "rules[0]: expected a mapping"),
    ],
)
def test_a_bad_rule_is_refused_with_where_and_why(text, message):
    with pytest.raises(RiskProfileError) as refused:
        _rules(text)
    assert message in str(refused.value)
    assert "profiles.yaml" in str(refused.value)


def test_every_problem_is_reported_at_once():
    text = "rules:\n" + _rule("a", "blue", '{origin_country: {in: ["XX"]}, importer: {in: ["Y"]}}')
    with pytest.raises(RiskProfileError) as refused:
        _rules(text)
    assert len(refused.value.problems) == 3


def test_hs_prefix_and_origin_list_hit_sets_lane_reason_and_selected_by(declarations, state):
    records = _client_records(
        declarations.head(4), hs6_code=["440890", "440710", "440890", "850440"], origin_country=["MM", "KH", "BE", "MM"]
    )
    routed = route(_model_results(records, ["green"] * 4), _typed(records), _rules(TIMBER), state, max_reasons=3)
    assert routed["lane"].tolist() == ["red", "red", "green", "green"]
    assert routed["selected_by"].tolist() == ["rule", "rule", "model", "model"]
    first = routed.at[0, "reasons"]
    assert first[0] == {
        "feature": "risk_profile",
        "value": "timber-from-watch-list-origins",
        "contribution": None,
        "text": "timber from an origin on the watch list",
    }
    assert first[1]["feature"] == "tax_rate"
    assert routed.at[2, "reasons"] == _model_results(records, ["green"] * 4).at[2, "reasons"]


def test_a_rule_raises_a_lane_but_never_lowers_it(declarations, state):
    records = _client_records(declarations.head(4), importer_id="WATCHED")
    rules = _rules("rules:\n" + _rule("watched", "yellow", '{importer_id: {in: ["WATCHED"]}}'))
    model = _model_results(records, ["green", "yellow", "red", "red"], ["model", "model", "model", "random"])
    routed = route(model, _typed(records), rules, state, max_reasons=3)
    # a random pick keeps its red; held by a rule, it no longer counts as random
    assert routed["lane"].tolist() == ["yellow", "yellow", "red", "red"]
    assert routed["selected_by"].tolist() == ["rule"] * 4


SOURCES = ["model", "value", "critical", "random"]


@settings(max_examples=200, deadline=None)
@given(
    decided=st.lists(
        st.sampled_from([(lane, source) for lane in SEVERITY for source in SOURCES]), min_size=1, max_size=30
    ),
    rule_lanes=st.lists(st.sampled_from(list(SEVERITY)), min_size=1, max_size=4),
    data=st.data(),
)
def test_rules_never_lower_a_lane_whatever_selected_it(decided, rule_lanes, data):
    lanes, selected_by = (list(column) for column in zip(*decided))
    hits = np.array(
        data.draw(
            st.lists(
                st.lists(st.booleans(), min_size=len(rule_lanes), max_size=len(rule_lanes)),
                min_size=len(lanes),
                max_size=len(lanes),
            )
        ),
        dtype=bool,
    )
    rules = tuple(Rule(name=f"r{i}", lane=lane, reason="r", conditions=()) for i, lane in enumerate(rule_lanes))
    routed, routed_by = routed_lanes(lanes, selected_by, hits, rules)
    for row, (before, after) in enumerate(zip(lanes, routed)):
        assert SEVERITY[after] >= SEVERITY[before]
        fired = [rule.lane for rule, hit in zip(rules, hits[row]) if hit]
        if fired:
            assert SEVERITY[after] == max(SEVERITY[before], *(SEVERITY[lane] for lane in fired))
            assert routed_by[row] == "rule"
        else:
            assert (after, routed_by[row]) == (before, selected_by[row])


def test_value_per_kg_bounds_and_missing_values(declarations, state):
    records = _client_records(
        declarations.head(4),
        item_price=[100.0, 100.0, 0.0, 5.0],
        net_mass_kg=[1000.0, 0.0, 0.0, 1.0],
        seller_id=[None, "S1", "S2", "S3"],
    )
    cheap = _rules("rules:\n" + _rule("cheap", "yellow", "{value_per_kg: {below: 0.5}}"))
    dear = _rules("rules:\n" + _rule("dear", "red", "{value_per_kg: {above: 4}}"))
    not_s1 = _rules("rules:\n" + _rule("not-s1", "yellow", '{seller_id: {not_in: ["S1"]}}'))
    green = _model_results(records, ["green"] * 4)
    # 100 for 1000 kg is 0.1/kg; 100 for 0 kg is infinite; 0 for 0 kg has no value per kg
    assert route(green, _typed(records), cheap, state, 3)["selected_by"].tolist() == ["rule", "model", "model", "model"]
    assert route(green, _typed(records), dear, state, 3)["selected_by"].tolist() == ["model", "rule", "model", "rule"]
    # no seller meets no condition, not even not_in
    assert route(green, _typed(records), not_s1, state, 3)["selected_by"].tolist() == ["model", "model", "rule", "rule"]


def test_a_feature_condition_uses_the_serving_features(declarations, state):
    records = declarations.head(5).reset_index(drop=True)
    rates = serving_features(check_declarations(records, RECORD).valid, state)[0]["importer_fraud_rate"].to_numpy()
    bound = float(np.median(rates))
    rules = _rules("rules:\n" + _rule("risky-importer", "red", f"{{importer_fraud_rate: {{above: {bound!r}}}}}"))
    routed = route(_model_results(records, ["green"] * 5), _typed(records), rules, state, 3)
    assert (routed["selected_by"] == "rule").tolist() == (rates > bound).tolist()
    assert 0 < (rates > bound).sum() < 5


def test_rule_reasons_come_first_and_the_total_keeps_max_reasons(declarations, state):
    records = _client_records(declarations.head(1), importer_id="WATCHED", origin_country="MM", hs6_code="440800")
    rules = _rules(TIMBER + _rule("watched", "yellow", '{importer_id: {in: ["WATCHED"]}}'))
    routed = route(_model_results(records, ["green"]), _typed(records), rules, state, max_reasons=2)
    assert [r["value"] for r in routed.at[0, "reasons"]] == ["timber-from-watch-list-origins", "watched"]
    assert routed.at[0, "lane"] == "red"
    assert (
        route(_model_results(records, ["green"]), _typed(records), rules, state, 3).at[0, "reasons"][2]["feature"]
        == "tax_rate"
    )


def test_no_rules_leave_the_model_answer_untouched(declarations, state):
    records = declarations.head(3)
    model = _model_results(records, ["red", "green", "yellow"])
    assert route(model, _typed(records), (), state, 3) is model


def _write(path: Path, text: str, stamp: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(stamp, stamp))  # a distinct mtime even within the file system's resolution


def test_profiles_reload_when_the_file_changes_and_keep_the_rules_in_force_on_a_bad_edit(tmp_path, monkeypatch):
    path = tmp_path / "profiles.yaml"
    _write(path, "rules: []\n", 1_000_000_000)
    monkeypatch.setenv("RISK_PROFILES", str(path))
    profiles = RiskProfiles.from_environment()
    assert profiles.current() == ()
    _write(path, TIMBER, 2_000_000_000)
    assert [rule.name for rule in profiles.current()] == ["timber-from-watch-list-origins"]
    _write(path, TIMBER.replace("lane: red", "lane: purple"), 3_000_000_000)
    assert [rule.name for rule in profiles.current()] == ["timber-from-watch-list-origins"]
    assert "lane: expected one of yellow, red, got 'purple'" in profiles.describe()["reload_error"]
    _write(path, "rules: []\n", 4_000_000_000)
    assert profiles.current() == ()
    assert profiles.describe() == {"path": str(path), "rules": [], "reload_error": None}


def test_a_bad_file_stops_the_start(tmp_path, monkeypatch):
    path = tmp_path / "profiles.yaml"
    path.write_text(TIMBER.replace('"MM"', '"XX"'))
    monkeypatch.setenv("RISK_PROFILES", str(path))
    with pytest.raises(RiskProfileError, match="'XX' is not an ISO 3166-1 alpha-2 country code"):
        RiskProfiles.from_environment()
    monkeypatch.setenv("RISK_PROFILES", str(tmp_path / "missing.yaml"))
    with pytest.raises(RiskProfileError, match="file not found"):
        RiskProfiles.from_environment()
    monkeypatch.setenv("RISK_PROFILES", "profiles.yaml")
    with pytest.raises(RiskProfileError, match="must be an absolute path"):
        RiskProfiles.from_environment()


def test_without_risk_profiles_the_shipped_file_is_used(monkeypatch, tmp_path):
    monkeypatch.delenv("RISK_PROFILES", raising=False)
    monkeypatch.chdir(tmp_path)  # outside a checkout: the file packaged with the service
    assert RiskProfiles.from_environment().path == DEFAULT_PATH
    checkout = tmp_path / "clone"
    (checkout / "serving").mkdir(parents=True)
    for marker in ("dvc.yaml", "pyproject.toml"):
        (checkout / marker).write_text("")
    (checkout / "serving" / "risk_profiles.yaml").write_text("rules: []\n")
    monkeypatch.chdir(checkout)  # in a checkout: the checkout's file, which its analysts edit
    assert RiskProfiles.from_environment().path == checkout.resolve() / "serving" / "risk_profiles.yaml"


# --- score_routed: which declarations carry reasons, after the rules --------------------------------


@pytest.fixture(scope="module")
def model(history):
    from tests.models.test_training_and_bundle import build_model

    return build_model(history)[0]


def _watch(ids: list[str], lane: str = "red") -> tuple:
    quoted = ", ".join(f'"{i}"' for i in ids)
    return _rules("rules:\n" + _rule("watched-ids", lane, f"{{declaration_id: {{in: [{quoted}]}}}}"))


def test_score_routed_gives_reasons_by_the_lane_after_the_rules(model, history):
    """Default reasons: red and yellow declarations only, judged after the rules, so a green the
    rule raises carries the rule's reason and then the model's; "none" keeps the rule's reason
    alone; "all" gives every declaration the model's reasons; scores never change."""

    records = history[DECLARATION_FIELDS].iloc[-200:]
    records = records.reset_index(drop=True)
    plain = score_routed(model, records, (), max_reasons=3)
    every = score_routed(model, records, (), max_reasons=3, reasons="all")
    greens = np.flatnonzero(plain["lane"] == "green")
    carried = np.flatnonzero(plain["lane"] != "green")
    assert len(greens) >= 2 and len(carried) >= 1
    assert all(plain.at[i, "reasons"] == [] for i in greens)
    assert [plain.at[i, "reasons"] for i in carried] == [every.at[i, "reasons"] for i in carried]
    raised = records.at[greens[0], "declaration_id"]
    rules = _watch([raised])
    stated = {"feature": "risk_profile", "value": "watched-ids", "contribution": None, "text": "watched-ids fired"}
    routed = score_routed(model, records, rules, max_reasons=3)
    row = greens[0]
    assert (routed.at[row, "lane"], routed.at[row, "selected_by"]) == ("red", "rule")
    assert routed.at[row, "reasons"] == [stated, *every.at[row, "reasons"][:2]]
    assert len(routed.at[row, "reasons"]) >= 2  # the model's reasons were computed for it
    assert routed.at[greens[1], "reasons"] == []
    assert [routed.at[i, "reasons"] for i in carried] == [plain.at[i, "reasons"] for i in carried]
    none = score_routed(model, records, rules, max_reasons=3, reasons="none")
    assert none.at[row, "reasons"] == [stated]
    assert all(none.at[i, "reasons"] == [] for i in range(len(records)) if i != row)
    everything = score_routed(model, records, rules, max_reasons=3, reasons="all")
    assert everything.at[row, "reasons"] == routed.at[row, "reasons"]
    for other in (none, everything, plain, every):
        np.testing.assert_array_equal(other["risk_score"], routed["risk_score"])
    pd.testing.assert_frame_equal(none.drop(columns="reasons"), routed.drop(columns="reasons"))
    with pytest.raises(ValueError, match="reasons must be one of"):
        score_routed(model, records, rules, max_reasons=3, reasons="some")


def test_score_routed_is_route_over_the_model_answer(model, history):
    """The routed answer equals `route` over `RiskModel.score` whenever the rules leave the
    lanes that carry reasons as they were (here: a yellow rule on red and yellow declarations)."""
    records = history[DECLARATION_FIELDS].iloc[-200:]
    records = records.reset_index(drop=True)
    typed = _typed(records)
    scored = model.score(typed, max_reasons=3)
    held = scored.loc[scored["lane"] != "green", "declaration_id"].tolist()[:3]
    rules = _watch(held, lane="yellow")
    expected = route(scored, typed, rules, model.state, max_reasons=3)
    pd.testing.assert_frame_equal(score_routed(model, records, rules, max_reasons=3), expected)


def test_a_feature_rule_reads_the_same_features_from_the_model_inputs(model, history):
    """Rules on model features see the serving features, whether `route` computes them or
    `score_routed` hands over the model's own arrays."""
    records = _typed(history[DECLARATION_FIELDS].iloc[-100:])
    rules = _rules("rules:\n" + _rule("busy-importer", "yellow", "{importer_declarations: {above: 3}}"))
    matrix = serving_inputs(records, model.state).matrix
    given = rule_hits(records, rules, model.state, {n: matrix[:, j] for j, n in enumerate(FEATURE_NAMES)})
    np.testing.assert_array_equal(given, rule_hits(records, rules, model.state))
    assert given.any() and not given.all()
