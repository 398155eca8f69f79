"""Analyst risk profiles: refused with a clear message when wrong, firing as documented when right,
and picked up from the file while the service runs. What a rule that fires does to a lane and to
the reasons is the decision's (tests/serving/test_decide.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.matrix import serving_features, serving_inputs, training_features
from features.schema import DECLARATION_FIELDS, RECORD, check_declarations
from serving.profiles import RiskProfileError, RiskProfiles, parse_rules, rule_hits
from serving.settings import PACKAGED_PROFILES

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


def _fired(records: pd.DataFrame, rules, state) -> list[bool]:
    """Per declaration, whether any of the rules fires."""
    return rule_hits(_typed(records), rules, state).any(axis=1).tolist()


def test_shipped_file_has_no_rules_and_its_documented_example_parses():
    text = PACKAGED_PROFILES.read_text()
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


def test_an_hs_prefix_and_an_origin_list_fire_together_only(declarations, state):
    records = _client_records(
        declarations.head(4), hs6_code=["440890", "440710", "440890", "850440"], origin_country=["MM", "KH", "BE", "MM"]
    )
    assert _fired(records, _rules(TIMBER), state) == [True, True, False, False]


def test_every_rule_that_fires_is_told_apart(declarations, state):
    records = _client_records(
        declarations.head(2), importer_id="WATCHED", origin_country=["MM", "BE"], hs6_code="440800"
    )
    rules = _rules(TIMBER + _rule("watched", "yellow", '{importer_id: {in: ["WATCHED"]}}'))
    assert rule_hits(_typed(records), rules, state).tolist() == [[True, True], [False, True]]


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
    # 100 for 1000 kg is 0.1/kg; 100 for 0 kg is infinite; 0 for 0 kg has no value per kg
    assert _fired(records, cheap, state) == [True, False, False, False]
    assert _fired(records, dear, state) == [False, True, False, True]
    # no seller meets no condition, not even not_in
    assert _fired(records, not_s1, state) == [False, False, True, True]


def test_a_feature_condition_uses_the_serving_features(declarations, state):
    records = declarations.head(5).reset_index(drop=True)
    rates = serving_features(_typed(records), state)[0]["importer_fraud_rate"].to_numpy()
    bound = float(np.median(rates))
    rules = _rules("rules:\n" + _rule("risky-importer", "red", f"{{importer_fraud_rate: {{above: {bound!r}}}}}"))
    assert _fired(records, rules, state) == (rates > bound).tolist()
    assert 0 < (rates > bound).sum() < 5


def test_a_feature_rule_reads_the_same_features_from_the_scored_matrix(history, state):
    """Rules on model features see the serving features, whether `rule_hits` computes them or
    the decision hands over the matrix the model scored."""
    records = _typed(history[DECLARATION_FIELDS].iloc[-100:])
    rules = _rules("rules:\n" + _rule("busy-importer", "yellow", "{importer_declarations: {above: 3}}"))
    given = rule_hits(records, rules, state, serving_inputs(records, state).matrix)
    np.testing.assert_array_equal(given, rule_hits(records, rules, state))
    assert given.any() and not given.all()


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
    assert RiskProfiles.from_environment().path == PACKAGED_PROFILES
    checkout = tmp_path / "clone"
    (checkout / "serving").mkdir(parents=True)
    for marker in ("dvc.yaml", "pyproject.toml"):
        (checkout / marker).write_text("")
    (checkout / "serving" / "risk_profiles.yaml").write_text("rules: []\n")
    monkeypatch.chdir(checkout)  # in a checkout: the checkout's file, which its analysts edit
    assert RiskProfiles.from_environment().path == checkout.resolve() / "serving" / "risk_profiles.yaml"
