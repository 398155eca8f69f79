"""The rules themselves: named in words with a message, exact at their limits, and rejecting
only what cannot be true; unusual declarations pass. Which layer holds which rule: the
contract's checks apply to scoring too, the history's limits only to history."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from features.record import LABEL_FIELDS, OUTCOME_DETAILS, HistoryRules
from features.schema import LABELLED, RECORD, Rules, check_declarations, history_rules
from tests.conftest import HISTORY_RULES as RULES

HISTORY_ONLY = [*LABEL_FIELDS, *OUTCOME_DETAILS]  # what a row of history holds beyond the record


@pytest.fixture(scope="module")
def rows(kcs_records) -> pd.DataFrame:
    """Five valid history rows as read."""
    valid = kcs_records[kcs_records["origin_country"].ne("ZZ") & kcs_records["departure_country"].ne("ZZ")]
    return valid.sample(5, random_state=41).reset_index(drop=True).astype(object)


def _with(rows: pd.DataFrame, **values) -> pd.DataFrame:
    changed = rows.copy()
    for field, value in values.items():
        changed.loc[2, field] = value
    return changed


def _checks(rows: pd.DataFrame, rules: Rules = RULES) -> list[tuple[int, str, str]]:
    failures = check_declarations(rows, rules).failures
    return list(failures[["index", "field", "check"]].itertuples(index=False, name=None))


def _all_checks(schema):
    yield from (check for column in schema.columns.values() for check in column.checks)
    yield from schema.checks


@pytest.mark.parametrize("rules", [RECORD, LABELLED, RULES], ids=["scoring", "labelled", "history"])
def test_every_check_is_named_in_words_and_says_what_is_wrong(rules):
    for check in _all_checks(rules.schema):
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", check.name), check.name
        assert check.error and not check.error.startswith("failed check"), check.name


def test_the_history_checks_extend_the_contract_checks():
    contract = {c.name for c in _all_checks(RECORD.schema)}
    labelled = {c.name for c in _all_checks(LABELLED.schema)}
    history = {c.name for c in _all_checks(RULES.schema)}
    assert contract < labelled < history
    assert labelled - contract == {
        "label_0_or_1",
        "fraud_empty_alone",
        "critical_fraud_empty_alone",
        "critical_implies_fraud",
        "inspected_on_without_labels",
        "additional_duty_without_labels",
        "inspected_on_not_before_declaration",
        "duty_not_negative",
    }
    assert history - labelled == {
        "hs_chapter_exists",
        "not_after_run_date",
        "not_before_history_start",
        "mass_physically_possible",
        "no_surrounding_spaces",
    }


def test_good_rows_pass_every_layer(rows):
    assert _checks(rows) == []
    assert check_declarations(rows.drop(columns=HISTORY_ONLY), RECORD).failures.empty


@pytest.mark.parametrize("code", ["010121", "440890", "970600", "010000"])
def test_codes_in_real_chapters_pass(rows, code):
    assert _checks(_with(rows, hs6_code=code)) == []


@pytest.mark.parametrize("code", ["000000", "001234", "770100", "980000", "990100"])
def test_codes_outside_the_hs_chapters_fail_once(rows, code):
    assert _checks(_with(rows, hs6_code=code)) == [(2, "hs6_code", "hs_chapter_exists")]


@pytest.mark.parametrize("code", ["10121", "1", "4408901", "44089O"])
def test_a_malformed_code_is_one_finding_not_two(rows, code):
    assert _checks(_with(rows, hs6_code=code)) == [(2, "hs6_code", "hs6_six_digits")]


@pytest.mark.parametrize(
    "values",
    [
        {"item_price": "0", "net_mass_kg": "1200"},  # free of charge: samples, warranty replacements
        {"item_price": "0", "net_mass_kg": "0"},  # documents
        {"item_price": "0.01", "net_mass_kg": "60000000"},  # absurdly cheap bulk: a risk, not an error
        {"tax_rate": "0"},
        {"tax_rate": "1000"},
        {"net_mass_kg": "500000000"},  # at the limit
        {"declaration_date": "2021-06-30"},  # on the run date
        {"declaration_date": "2020-01-01"},  # on the history start
        {"seller_id": None, "courier_id": None},
        {"fraud": None, "critical_fraud": None},  # not inspected
        {"inspected_on": "2021-06-30"},  # the outcome known on the run date
        {"importer_id": "NEW-IMPORTER", "hs6_code": "010190", "origin_country": "TV"},  # never seen before
    ],
    ids=lambda values: ",".join(f"{k}={v}" for k, v in values.items()),
)
def test_unusual_is_not_wrong(rows, values):
    assert _checks(_with(rows, **values)) == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"declaration_date": "2021-07-01"}, [(2, "declaration_date", "not_after_run_date")]),
        ({"declaration_date": "2019-12-31"}, [(2, "declaration_date", "not_before_history_start")]),
        ({"net_mass_kg": "500000000.5"}, [(2, "net_mass_kg", "mass_physically_possible")]),
        ({"seller_id": "0VKY2BR "}, [(2, "seller_id", "no_surrounding_spaces")]),
        ({"hs6_code": " 440890"}, [(2, "hs6_code", "hs6_six_digits")]),  # a code's own rule says it
        ({"seller_id": "  "}, [(2, "seller_id", "not_blank")]),
        ({"net_mass_kg": "-1"}, [(2, "net_mass_kg", "not_negative")]),
        ({"fraud": "0", "critical_fraud": "1"}, [(2, "critical_fraud", "critical_implies_fraud")]),
        ({"inspected_on": "2021-07-01"}, [(2, "inspected_on", "not_after_run_date")]),
    ],
)
def test_just_past_a_limit_fails_with_its_check(rows, values, expected):
    assert _checks(_with(rows, **values)) == expected


def test_the_limits_come_from_the_rules(rows):
    later = history_rules(HistoryRules(pd.Timestamp("2030-01-01"), pd.Timestamp("2015-01-01"), 1e12))
    assert _checks(_with(rows, declaration_date="2025-05-05", net_mass_kg="6e11"), later) == []
    messages = set(check_declarations(_with(rows, declaration_date="2031-01-01"), later).failures["message"])
    assert messages == {"must not be after the run date 2030-01-01 (validate.run_date)"}


def test_a_label_contradiction_is_not_reported_twice_with_a_bad_label(rows):
    assert _checks(_with(rows, fraud="0", critical_fraud="2")) == [(2, "critical_fraud", "label_0_or_1")]


def test_scoring_does_not_apply_the_history_limits(rows):
    """A declaration dated tomorrow, in a national chapter or with a padded ID is scored (the
    contract makes it valid input); only a history row is held to the history's rules."""
    scoring = _with(rows, declaration_date="2031-01-01", importer_id="QLRUBN9 ", net_mass_kg="1e12", hs6_code="990100")
    assert check_declarations(scoring.drop(columns=HISTORY_ONLY), RECORD).failures.empty
    assert {check for _, _, check in _checks(scoring)} == {
        "not_after_run_date",
        "no_surrounding_spaces",
        "mass_physically_possible",
        "hs_chapter_exists",
    }


def test_history_rules_hold_a_row_to_its_labels(rows):
    """History rules include the labels: a row without them fails on each, not on a flag."""
    failures = check_declarations(rows.drop(columns=LABEL_FIELDS), RULES).failures
    assert set(failures["field"]) == set(LABEL_FIELDS)
    assert set(failures["check"]) == {"required"}
    assert sorted(set(failures["index"])) == list(range(len(rows)))
