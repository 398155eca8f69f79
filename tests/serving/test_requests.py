"""Request checks: every problem comes back with its index and field (CONTRACT.md section 3)."""

from __future__ import annotations

import pytest

from serving.requests import batch_errors, error, outcome_errors


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


@pytest.mark.parametrize(
    "declaration_id", ["", "   ", 97061800, None, _DROP, "x" * 65, ["97061800"]]
)
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


@pytest.mark.xfail(
    reason="bug: the date check is len == 10 plus date.fromisoformat, which on Python 3.11+ also "
    "accepts other ISO 8601 forms of length 10 (week dates, basic format with a time)",
    strict=True,
)
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
