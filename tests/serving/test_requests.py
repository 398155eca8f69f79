"""Request checks: every problem comes back with its index and field (docs/api.md)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from features.record import BOUNDED_FIELDS, DATE_PATTERN, STRING_FIELDS
from features.schema import RECORD, check_declarations
from serving.requests import (
    batch_errors,
    declaration_type_errors,
    error,
    outcome_errors,
)
from tests.e2e.stack import contract_example


def _where(errors: list[dict]) -> list[tuple]:
    return [(e["index"], e["field"]) for e in errors]


def _outcome(**changes) -> dict:
    outcome = {"declaration_id": "97061800", "inspected_on": "2021-03-02", "result": "fraud", "notes": "undervalued"}
    outcome.update(changes)
    return {key: value for key, value in outcome.items() if value is not _DROP}


_DROP = object()


def test_error_shape():
    assert error(3, "hs6_code", "must be exactly 6 digits") == {
        "index": 3,
        "field": "hs6_code",
        "message": "must be exactly 6 digits",
    }


# --- batch_errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("items", [None, {"declaration_id": "1"}, "abc", 5])
def test_batch_must_be_a_list(items):
    errors = batch_errors(items, "declarations", 1000)
    assert _where(errors) == [(None, "declarations")]
    assert "list" in errors[0]["message"]


def test_empty_batch_is_rejected():
    errors = batch_errors([], "outcomes", 1000)
    assert _where(errors) == [(None, "outcomes")]
    assert "1 to 1000" in errors[0]["message"]


def test_batch_over_the_limit_is_rejected():
    assert batch_errors([{}] * 10, "declarations", 10) == []
    errors = batch_errors([{}] * 11, "declarations", 10)
    assert _where(errors) == [(None, "declarations")]
    assert "got 11" in errors[0]["message"]


def test_each_non_object_item_is_reported_by_index():
    items = [{"a": 1}, "text", {"b": 2}, 7, None, ["x"]]
    errors = batch_errors(items, "declarations", 1000)
    assert _where(errors) == [(1, "declarations"), (3, "declarations"), (4, "declarations"), (5, "declarations")]
    assert all(e["message"] == "must be an object" for e in errors)


def test_valid_batch_has_no_errors():
    assert batch_errors([{"declaration_id": "1"}], "declarations", 1) == []


# --- outcome_errors ----------------------------------------------------------------------------


def test_valid_outcomes_have_no_errors():
    outcomes = [_outcome(), _outcome(result="clean", notes=_DROP), _outcome(result="critical", notes=None)]
    assert outcome_errors(outcomes) == []


@pytest.mark.parametrize("declaration_id", ["", "   ", 97061800, None, _DROP, "x" * 65, ["97061800"]])
def test_bad_declaration_id(declaration_id):
    errors = outcome_errors([_outcome(), _outcome(declaration_id=declaration_id)])
    assert _where(errors) == [(1, "declaration_id")]


def test_longest_declaration_id_is_accepted():
    assert outcome_errors([_outcome(declaration_id="x" * 64)]) == []


@pytest.mark.parametrize(
    "inspected_on",
    ["2021-02-30", "21-01-01", "2021-13-01", "2021/01/01", "01-02-2021", "2021-1-1", "", None, 20210101, _DROP],
)
def test_bad_inspection_date(inspected_on):
    errors = outcome_errors([_outcome(inspected_on=inspected_on)])
    assert _where(errors) == [(0, "inspected_on")]
    assert "YYYY-MM-DD" in errors[0]["message"]


@pytest.mark.parametrize("inspected_on", ["2021-W01-1", "20210101T0"])
def test_only_the_extended_calendar_date_format_is_accepted(inspected_on):
    errors = outcome_errors([_outcome(inspected_on=inspected_on)])
    assert _where(errors) == [(0, "inspected_on")]


@pytest.mark.parametrize("result", ["Fraud", "suspicious", "", None, 1, _DROP])
def test_bad_result(result):
    errors = outcome_errors([_outcome(result=result)])
    assert _where(errors) == [(0, "result")]
    assert "clean, fraud, critical" in errors[0]["message"]


@pytest.mark.parametrize("notes", [42, ["a"], {"a": 1}, "x" * 4001])
def test_bad_notes(notes):
    errors = outcome_errors([_outcome(notes=notes)])
    assert _where(errors) == [(0, "notes")]


@pytest.mark.parametrize("additional_duty", [0, 0.0, 1840000.0, 125, None, _DROP, float(2**53), 10**308])
def test_additional_duty_is_optional_and_any_amount_from_zero(additional_duty):
    assert outcome_errors([_outcome(additional_duty=additional_duty)]) == []


@pytest.mark.parametrize(
    "additional_duty", [-0.01, -1, "1200", True, False, float("nan"), float("inf"), float("-inf"), 2 * 10**308, [1], {}]
)
def test_a_negative_non_finite_or_non_number_additional_duty_is_named(additional_duty):
    errors = outcome_errors([_outcome(), _outcome(additional_duty=additional_duty)])
    assert _where(errors) == [(1, "additional_duty")]
    assert "at least 0" in errors[0]["message"] and "finite" in errors[0]["message"]


def test_extra_field_is_rejected_by_name():
    errors = outcome_errors([_outcome(), _outcome(inspector="Kim", zeta=1)])
    assert _where(errors) == [(1, "inspector"), (1, "zeta")]
    assert all("not an outcome field" in e["message"] for e in errors)


def test_every_problem_of_every_outcome_is_reported():
    outcomes = [
        _outcome(),
        _outcome(declaration_id="", result="maybe"),
        _outcome(inspected_on="2021-02-29", notes=3, extra=True),
    ]
    assert sorted(_where(outcome_errors(outcomes)), key=str) == sorted(
        [(1, "declaration_id"), (1, "result"), (2, "extra"), (2, "inspected_on"), (2, "notes")], key=str
    )


@pytest.mark.parametrize("inspected_on", ["1900-01-01", "2099-12-31"])
def test_dates_at_the_bounds_are_accepted(inspected_on):
    assert outcome_errors([_outcome(inspected_on=inspected_on)]) == []


@pytest.mark.parametrize("inspected_on", ["1899-12-31", "2100-01-01", "0001-01-01", "9999-12-31"])
def test_dates_past_the_bounds_are_rejected(inspected_on):
    assert _where(outcome_errors([_outcome(inspected_on=inspected_on)])) == [(0, "inspected_on")]


@pytest.mark.parametrize(
    ("date", "matches"),
    [("1900-01-01", True), ("2099-12-31", True), ("1899-12-31", False), ("2100-01-01", False)],
)
def test_the_documented_date_pattern_is_the_checked_range(date, matches):
    assert bool(re.search(DATE_PATTERN, date)) is matches


# --- declaration_type_errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hs6_code", 440890, "must be a JSON string"),  # a code sent as a number lost its leading zeros
        ("importer_id", {"id": "QLRUBN9"}, "must be a JSON string"),
        ("seller_id", ["0VKY2BR"], "must be a JSON string"),
        ("declaration_date", 20200101, "must be a JSON string"),
        ("tax_rate", True, "must be a JSON number"),  # bool is an int in Python
        ("item_price", "372254.4", "must be a JSON number"),
        ("net_mass_kg", [108.0], "must be a JSON number"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_named(field, value, message):
    declarations = [contract_example(), {**contract_example(), field: value}]
    assert declaration_type_errors(declarations) == [error(1, field, message)]


def test_nulls_and_unknown_fields_are_left_to_the_schema():
    declaration = {**contract_example(), "importer_id": None, "seller_id": None, "colour": 3}
    assert declaration_type_errors([declaration]) == []


def test_numbers_of_any_size_pass_the_type_check():
    declaration = {**contract_example(), "item_price": 10**400, "net_mass_kg": 1e-320, "tax_rate": 0}
    assert declaration_type_errors([declaration]) == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_not_json_numbers(value):
    assert _where(declaration_type_errors([{**contract_example(), "tax_rate": value}])) == [(0, "tax_rate")]


# --- identifiers and codes of at most 64 characters (issue 15) ------------------------------------


@pytest.mark.parametrize("field", STRING_FIELDS)
def test_a_string_over_64_characters_is_refused_before_parsing(field):
    declaration = dict(contract_example(), **{field: "A" * 1_000_000})
    assert declaration_type_errors([contract_example(), declaration]) == [
        error(1, field, "must be at most 64 characters")
    ]


@pytest.mark.parametrize("field", BOUNDED_FIELDS)
def test_64_characters_pass_the_request_checks_and_the_schema(field):
    declaration = dict(contract_example(), **{field: "A" * 64})
    assert declaration_type_errors([declaration]) == []
    assert check_declarations(pd.DataFrame([declaration]), RECORD).failures.empty


@pytest.mark.parametrize(
    "changes",
    [
        {"origin_country": "ZZ"},
        {"departure_country": "ZZ", "origin_country": "ZZ"},
        {"container_number": "CSQU3054383", "bill_of_lading": "MEDUKR123456"},
        {"container_number": None, "bill_of_lading": None},
    ],
)
def test_unknown_countries_and_containers_are_valid_requests(changes):
    declaration = dict(contract_example(), **changes)
    assert declaration_type_errors([declaration]) == []
    assert check_declarations(pd.DataFrame([declaration]), RECORD).failures.empty


@pytest.mark.parametrize("field", ["container_number", "bill_of_lading"])
def test_container_and_bill_must_be_json_strings(field):
    assert declaration_type_errors([dict(contract_example(), **{field: 3054383})]) == [
        error(0, field, "must be a JSON string")
    ]
