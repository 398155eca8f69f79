"""Real declarations as they come (issue 15): the unknown country ZZ, identifiers and codes of at
most 64 characters, and ISO 6346 container numbers with their check digit (docs/record.md)."""

from __future__ import annotations

import string

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.matrix import FEATURES_BY_NAME, OUTCOME, serving_features, training_features
from features.record import (
    BOUNDED_FIELDS,
    DECLARATION_FIELDS,
    MAX_ID_CHARACTERS,
    STRING_FIELDS,
    is_container_number,
    iso6346_check_digit,
)
from features.schema import LABELLED, RECORD, check_declarations
from tests.conftest import HISTORY_RULES
from tests.e2e.stack import contract_example

RULE_SETS = pytest.mark.parametrize("rules", [RECORD, HISTORY_RULES], ids=["scoring", "history"])


def _record(rules, **changes) -> dict:
    record = {**contract_example(), **changes}
    return {**record, "fraud": "0", "critical_fraud": "0"} if rules.labels else record


def _failures(rules, *records: dict) -> list[tuple[int, str, str]]:
    failures = check_declarations(pd.DataFrame(list(records)), rules).failures
    return list(failures[["index", "field", "message"]].itertuples(index=False, name=None))


# -- ZZ: unknown or not declared -----------------------------------------------------------------


@RULE_SETS
@pytest.mark.parametrize("field", ["departure_country", "origin_country"])
def test_zz_is_a_valid_country(rules, field):
    assert _failures(rules, _record(rules, **{field: "ZZ"})) == []


def test_the_embedded_historys_zz_rows_pass_the_history_rules(kcs_records):
    unknown = kcs_records[kcs_records["origin_country"].eq("ZZ") | kcs_records["departure_country"].eq("ZZ")]
    assert len(unknown) > 0  # the 39 rows issue 15 found quarantined
    failures = check_declarations(unknown, HISTORY_RULES).failures
    assert not failures["field"].isin(["origin_country", "departure_country"]).any(), failures


def test_an_unknown_country_is_a_category_like_any_other_and_its_reason_says_so(history):
    history = history.copy()
    history.loc[history.index[::50], "origin_country"] = "ZZ"  # some history with an unknown origin
    _, state = training_features(history, smoothing=20.0)
    assert "ZZ" in state.categories["origin_country"]
    record = history[DECLARATION_FIELDS].tail(1).assign(origin_country="ZZ").reset_index(drop=True)
    matrix, _ = serving_features(record, state)
    assert matrix["origin_country"].iloc[0] == "ZZ"  # a known category, not the unseen (NaN) one
    # the unknown country is named as such in the sentence of its record (issue 30: a category is
    # stated only with what makes it risky)
    origin = {"origin_country": "ZZ", OUTCOME: "fraud", "origin__inspected_count": 1.0, "origin__fraud_count": 1.0}
    assert FEATURES_BY_NAME["origin_country"].reason.text(origin) == (
        "origin country ZZ (unknown country): the only earlier inspected declaration was fraud"
    )
    route = {
        "origin_country": "ZZ",
        "departure_country": "BE",
        "origin_differs_from_departure": 1.0,
        OUTCOME: "fraud",
        "route__inspected_count": 4.0,
        "route__fraud_count": 3.0,
    }
    assert FEATURES_BY_NAME["origin_differs_from_departure"].reason.text(route) == (
        "shipped from BE with origin ZZ (unknown country): 3 of 4 earlier inspected declarations were fraud"
    )
    assert FEATURES_BY_NAME["departure_country"].reason is None  # a declared field, never a reason alone


# -- every identifier and code at most 64 characters ---------------------------------------------


def test_every_string_field_but_the_formatted_codes_is_bounded():
    assert set(STRING_FIELDS) - set(BOUNDED_FIELDS) == {
        "hs6_code",
        "departure_country",
        "origin_country",
        "container_number",
    }


@RULE_SETS
@pytest.mark.parametrize("field", BOUNDED_FIELDS)
def test_every_identifier_and_code_holds_64_characters_and_no_more(rules, field):
    fits, too_long = "A" * MAX_ID_CHARACTERS, "A" * (MAX_ID_CHARACTERS + 1)
    assert _failures(rules, _record(rules, **{field: fits})) == []
    assert _failures(rules, _record(rules, **{field: fits}), _record(rules, **{field: too_long})) == [
        (1, field, "must be at most 64 characters")
    ]


@RULE_SETS
@pytest.mark.parametrize("field", ["hs6_code", "departure_country", "origin_country", "container_number"])
def test_a_long_code_fails_its_format(rules, field):
    assert [f[:2] for f in _failures(rules, _record(rules, **{field: "1" * 1000}))] == [(0, field)]


# -- container number and bill of lading --------------------------------------------------------


@RULE_SETS
def test_container_number_and_bill_of_lading_are_optional_and_checked(rules):
    records = [
        _record(rules, container_number="CSQU3054383", bill_of_lading="MEDUKR123456"),
        _record(rules, container_number=None, bill_of_lading=None),
        _record(rules),  # not sent at all
        _record(rules, container_number="CSQU3054384"),
        _record(rules, bill_of_lading=""),
    ]
    checked = check_declarations(pd.DataFrame(records), rules)
    assert checked.valid.index.tolist() == [0, 1, 2]
    assert checked.valid["container_number"].tolist()[:1] == ["CSQU3054383"]
    assert checked.valid["container_number"].iloc[1:].isna().all()
    assert checked.failures[["index", "field", "check"]].values.tolist() == [
        [3, "container_number", "iso6346_check_digit"],
        [4, "bill_of_lading", "not_blank"],
    ]


def test_labelled_history_holds_the_new_fields():
    assert {"container_number", "bill_of_lading"} <= set(LABELLED.fields)


# ISO 6346 letter values, as the standard's table gives them (A=10, multiples of 11 skipped).
LETTER_VALUES = dict(
    zip(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        [10, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 34, 35, 36, 37, 38],
    )
)
# Numbers the standard (ISO 6346 Annex A) and the BIC, which keeps the owner-code register, print.
STANDARD_EXAMPLES = ["CSQU3054383", "BICU1234565"]


def _remainder(first_ten: str) -> int:
    return sum((LETTER_VALUES[c] if c.isalpha() else int(c)) * 2**i for i, c in enumerate(first_ten)) % 11


@pytest.mark.parametrize("number", STANDARD_EXAMPLES)
def test_the_standards_examples_are_valid(number):
    assert is_container_number(number)
    assert iso6346_check_digit(number[:10]) == int(number[10])


def test_a_remainder_of_10_gives_check_digit_0():
    assert _remainder("CSQU000007") == 10
    assert is_container_number("CSQU0000070")


VALID_NUMBERS = st.builds(
    lambda owner, category, serial: f"{owner}{category}{serial}",
    st.text(string.ascii_uppercase, min_size=3, max_size=3),
    st.sampled_from("UJZ"),
    st.text(string.digits, min_size=6, max_size=6),
).map(lambda first_ten: first_ten + str(_remainder(first_ten) % 10))


@given(VALID_NUMBERS)
def test_every_number_with_its_check_digit_is_valid(number):
    assert is_container_number(number)


# Every single-character change: in the format's own classes (a letter for a letter, a digit for a
# digit, U/J/Z for the category) and outside them (lower case, space, other signs).
REPLACEMENTS = string.ascii_uppercase + string.digits + "uj z-./Ü٣"


def _missed(number: str, changed: str) -> bool:
    """Exactly when ISO 6346's check digit cannot see a single substitution that keeps the format:
    (a) a letter replaced by one of equal value mod 11 (A, K and U; B, L and V; C, M and W; D, N
    and X; E, O and Y; F, P and Z; G and Q; H and R; I and S; J and T), which leaves the weighted
    sum unchanged mod 11 (the weights 2**i are never 0 mod 11, and digits 0-9 all differ mod 11, so
    a digit change always changes it); or (b) the sum's remainder moving between 0 and 10, which
    both give check digit 0. A change of the check digit itself is always caught."""
    position = next(i for i, (a, b) in enumerate(zip(number, changed)) if a != b)
    if position == 10:
        return False
    old, new = number[position], changed[position]
    if old.isalpha() and LETTER_VALUES[old] % 11 == LETTER_VALUES[new] % 11:
        return True
    return {_remainder(number[:10]), _remainder(changed[:10])} == {0, 10}


@settings(max_examples=300, deadline=None)
@given(VALID_NUMBERS)
def test_every_single_character_change_is_caught_but_the_ones_iso_6346_cannot_see(number):
    for position in range(11):
        for character in REPLACEMENTS:
            if character == number[position]:
                continue
            changed = number[:position] + character + number[position + 1 :]
            in_format = (
                (position < 3 and character in string.ascii_uppercase)
                or (position == 3 and character in "UJZ")
                or (position > 3 and character in string.digits)
            )
            expected = in_format and _missed(number, changed)
            assert is_container_number(changed) is expected, (number, changed)


@given(VALID_NUMBERS)
def test_with_a_check_digit_other_than_0_only_equal_letters_mod_11_go_unseen(number):
    """What the property above means for most numbers: every digit change, and every letter
    change between letters of different value mod 11, is caught."""
    if number[10] == "0":
        return
    for position in range(10):
        alphabet = string.digits if position > 3 else "UJZ" if position == 3 else string.ascii_uppercase
        for character in alphabet:
            changed = number[:position] + character + number[position + 1 :]
            if character == number[position]:
                continue
            same_class = character.isalpha() and LETTER_VALUES[character] % 11 == LETTER_VALUES[number[position]] % 11
            assert is_container_number(changed) is same_class, (number, changed)


def test_the_two_blind_spots_are_real():
    """Shown on concrete numbers, so the property's exceptions are not vacuous: Q and G are 28 and
    17, equal mod 11; CSQU0000070 (remainder 10) and CSQU9000070 (remainder 0) share check digit 0."""
    assert is_container_number("CSQU3054383") and is_container_number("CSGU3054383")
    assert is_container_number("CSQU0000070") and is_container_number("CSQU9000070")
