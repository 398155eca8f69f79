"""What is sent for scoring (`check_requests`: the online checker, features.online, wherever it
can decide) against pandera (`check_declarations(..., RECORD)`): the same rules, so any batch a
client can send gets the same verdict, the same failures (index, field, check, message, in the
same order) and the same typed rows both ways."""

from __future__ import annotations

import string

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from features.online import check_online
from features.record import (
    DECLARATION_FIELDS,
    EARLIEST_DATE,
    LATEST_DATE,
    MAX_ID_CHARACTERS,
    NUMERIC_FIELDS,
    RECORD_RULES,
    iso6346_check_digit,
)
from features.schema import RECORD, Checked, check_declarations, check_requests
from tests.e2e.stack import contract_example

# Text a client may send: printable, blank, look-alike digits, long; no lone surrogates, which no
# UTF-8 body can carry.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=MAX_ID_CHARACTERS + 3)
BLANK = st.text(" \t\n\r\f\v\u00a0\ufeff", max_size=3)
NUMBER = st.one_of(
    st.floats(allow_nan=False),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.integers(min_value=-(2**1100), max_value=2**1100),  # past the largest float
    st.sampled_from([0, 0.0, -0.0, 1000, 1000.0000001, -1e-300, 1.7976931348623157e308]),
)
JSON_VALUE = st.one_of(st.none(), st.booleans(), NUMBER, TEXT, st.just([]), st.just({"a": 1}))


def _container(owner: str, category: str, serial: str, wrong: bool) -> str:
    digit = iso6346_check_digit(owner + category + serial)
    return f"{owner}{category}{serial}{(digit + wrong) % 10}"


CONTAINER = st.builds(
    _container,
    st.text(string.ascii_uppercase, min_size=3, max_size=3),
    st.sampled_from("UJZX"),
    st.text(string.digits, min_size=6, max_size=6),
    st.booleans(),
)
DATE = st.one_of(
    st.dates().map(str),  # years 0001 to 9999: many outside EARLIEST_DATE..LATEST_DATE
    st.sampled_from(
        [EARLIEST_DATE, LATEST_DATE, "1899-12-31", "2100-01-01", "2020-02-30", "2020-1-5", "0000-02-29", "0000-02-30"]
    ),
    st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", fullmatch=True),
)
COUNTRY = st.one_of(
    st.sampled_from(["BE", "ZZ", "XX", "EU", "be"]), st.text(string.ascii_uppercase, min_size=2, max_size=2)
)
HS_CODE = st.one_of(st.text(string.digits, min_size=5, max_size=7), st.sampled_from(["１２３４５６", "44089O"]))
# What each field is most likely to get wrong, beside any JSON value.
FIELD_VALUES = {
    "declaration_date": DATE,
    "hs6_code": HS_CODE,
    "departure_country": COUNTRY,
    "origin_country": COUNTRY,
    "container_number": CONTAINER,
    **dict.fromkeys(NUMERIC_FIELDS, NUMBER),
}


@st.composite
def records(draw, json_only: bool = False) -> list[dict]:
    """1 to 4 declarations, each the contract's example with a few fields changed, dropped or
    added. `json_only`: declaration fields only, with values of the JSON types the service lets
    through to the schema."""
    batch = []
    for _ in range(draw(st.integers(1, 4))):
        record = {**contract_example(), "container_number": draw(CONTAINER)}
        for field in draw(st.lists(st.sampled_from(DECLARATION_FIELDS), max_size=3)):
            own = FIELD_VALUES.get(field, st.one_of(TEXT, BLANK))
            json_type = NUMBER if field in NUMERIC_FIELDS else TEXT
            record[field] = draw(st.one_of(st.none(), own, json_type) if json_only else st.one_of(own, JSON_VALUE))
        for field in draw(st.lists(st.sampled_from(DECLARATION_FIELDS), max_size=2)):
            record.pop(field, None)
        if not json_only and draw(st.integers(0, 9)) == 0:
            record[draw(st.sampled_from(["fraud", "extra", "Declaration ID"]))] = draw(JSON_VALUE)
        batch.append(record)
    return batch


def _both(frame: pd.DataFrame) -> tuple[Checked, Checked]:
    try:
        expected = check_declarations(frame, RECORD)
    except Exception as failed:  # noqa: BLE001 - the online checker must then fail alike
        with pytest.raises(type(failed)):
            check_requests(frame)
        return None, None
    return expected, check_requests(frame)


def _assert_same(expected: Checked, found: Checked) -> None:
    pd.testing.assert_frame_equal(found.failures, expected.failures)
    pd.testing.assert_frame_equal(found.valid, expected.valid, check_index_type=False)


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(records())
@example([{**contract_example(), "tax_rate": float("inf"), "net_mass_kg": -float("inf"), "item_price": float("nan")}])
@example([{**contract_example(), "hs6_code": 440890, "seller_id": True, "declaration_date": None}])
@example([contract_example(), {k: v for k, v in contract_example().items() if k != "importer_id"}])
@example(
    [{**contract_example(), "declaration_date": "0000-02-29"}, {**contract_example(), "declaration_date": "0000-02-30"}]
)
def test_any_batch_gets_the_same_verdict_and_failures_both_ways(batch):
    expected, found = _both(pd.DataFrame(batch))
    if expected is not None:
        _assert_same(expected, found)


@PROPERTY
@given(records(json_only=True))
def test_what_the_service_lets_through_is_checked_without_pandera(batch):
    """Declaration fields holding JSON strings, numbers and nulls, as serving/requests.py lets
    them through, never need pandera's parsing: the online path is the whole path."""
    frame = pd.DataFrame(batch)
    found = check_online(frame)
    assert found is not None, "left to pandera"
    _assert_same(check_declarations(frame, RECORD), found)


@PROPERTY
@given(records())
def test_json_objects_are_checked_as_their_frame_would_be(batch):
    """The service checks the objects it received without making a frame of them: the same
    verdicts, failures and typed rows as the frame gets."""
    try:
        expected = check_requests(pd.DataFrame(batch))
    except Exception as failed:  # noqa: BLE001 - the objects must then fail alike
        with pytest.raises(type(failed)):
            check_requests(batch)
        return
    found = check_requests(batch)
    _assert_same(expected, found)
    assert found.passed == expected.failures.empty
    pd.testing.assert_frame_equal(found.declarations.frame(), expected.valid.reset_index(drop=True))


def test_typed_rows_pass_through_unchanged(kcs_records):
    """The batch scorer checks a file with `check_declarations`, then scores its typed rows: they
    come back as they went in."""
    typed = check_declarations(kcs_records[DECLARATION_FIELDS].sample(300, random_state=3), RECORD).valid
    typed = typed.reset_index(drop=True)
    checked = check_requests(typed)
    assert checked.failures.empty
    pd.testing.assert_frame_equal(checked.valid, typed)


def test_failures_name_positions_not_index_labels():
    frame = pd.DataFrame([contract_example(), {**contract_example(), "hs6_code": "4408"}], index=[7, 3])
    expected, found = _both(frame)
    _assert_same(expected, found)
    assert found.failures["index"].tolist() == [1]


def test_typed_dates_out_of_range_fail_alike():
    frame = check_declarations(pd.DataFrame([contract_example()] * 2), RECORD).valid
    frame["declaration_date"] = np.array(["1800-01-01", "2020-01-01"], dtype="datetime64[ns]")
    _assert_same(*_both(frame))


def test_every_record_rule_applies_to_declaration_fields_only():
    assert {field for rule in RECORD_RULES for field in rule.fields} <= set(DECLARATION_FIELDS)
    assert {rule.name for rule in RECORD_RULES} == {
        check.name for column in RECORD.schema.columns.values() for check in column.checks
    }
