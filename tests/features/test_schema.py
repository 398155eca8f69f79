"""The canonical declaration record (docs/record.md): one bad value fails its own row and
field with a message an analyst can read; good rows around it pass untouched, in their
canonical types, from the same call."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from features.record import (
    DECLARATION_FIELDS,
    INSPECTED_ON,
    LABEL_FIELDS,
    NUMERIC_FIELDS,
    OPTIONAL_FIELDS,
    RECOVERED_DUTY,
)
from features.schema import LABELLED, RECORD, Rules, check_declarations

REQUIRED_FIELDS = [f for f in DECLARATION_FIELDS if f not in OPTIONAL_FIELDS]
BAD_ROW = 3
N_ROWS = 7


@pytest.fixture(scope="module")
def good_records(kcs_records) -> pd.DataFrame:
    """A handful of real, valid KCS records as read (strings), on a non-default index. (Rows with
    the unknown country ZZ are valid too, but left out: the tests put their own bad values in.)"""
    valid = kcs_records[kcs_records["origin_country"].ne("ZZ") & kcs_records["departure_country"].ne("ZZ")]
    # one row without seller and courier among rows that have them: optional fields may be null
    with_seller = valid[valid["seller_id"].notna() & valid["courier_id"].notna()].head(N_ROWS - 1)
    without = valid[valid["seller_id"].isna() & valid["courier_id"].isna()].head(1)
    records = pd.concat([with_seller, without])
    assert len(records) == N_ROWS
    records.index = range(100, 100 + N_ROWS)  # check_declarations reports positions, not labels
    return records.astype(object)


def _records(good_records: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """The rules' fields, without the outcome details a source may leave out (inspected_on,
    additional_duty)."""
    return good_records[[f for f in rules.fields if f not in rules.details]].copy()


def _failures(records: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    return check_declarations(records, rules).failures


def _valid(records: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """The typed rows of records that must all pass."""
    checked = check_declarations(records, rules)
    assert checked.failures.empty, checked.failures.to_dict("records")
    return checked.valid


def _with_value(records: pd.DataFrame, field: str, value) -> pd.DataFrame:
    out = records.copy()
    out[field] = out[field].astype(object)
    out.iloc[BAD_ROW, out.columns.get_loc(field)] = value
    return out


def _assert_only_row(failures: pd.DataFrame, row: int, field: str, message: str | None) -> None:
    """Exactly `row` fails, only on `field`, and one of its messages says `message`."""
    records = failures.to_dict("records")
    assert list(failures.columns) == ["index", "field", "check", "message"]
    assert set(failures["index"]) == {row}, records
    assert set(failures["field"]) == {field}, records
    assert all(isinstance(text, str) and text for text in failures["message"]), records
    if message is not None:
        assert any(message in text for text in failures["message"]), records
        assert not any(text.startswith("failed check") for text in failures["message"]), records


@pytest.mark.parametrize("rules", [LABELLED, RECORD], ids=["history", "scoring"])
def test_good_records_have_no_failures(good_records, rules):
    records = _records(good_records, rules)
    failures = _failures(records, rules)
    assert failures.empty, failures.to_dict("records")


# (field, bad value, expected words of the message). The messages of the two custom checks
# (iso_country, finite) are asserted in test_custom_check_messages_are_readable_in_both_schemas.
ISO_MESSAGE = "must be an ISO 3166-1 alpha-2 country code, or ZZ for unknown"
FINITE_MESSAGE = "must be a finite number"
BAD_VALUES = [
    ("hs6_code", "12345", "must be exactly 6 digits"),
    ("hs6_code", "1234567", "must be exactly 6 digits"),
    ("hs6_code", "12345A", "must be exactly 6 digits"),
    ("hs6_code", "8471.30", "must be exactly 6 digits"),
    ("departure_country", "zz", None),
    ("departure_country", "Z", None),
    ("origin_country", "XX", None),
    ("origin_country", "cn", None),
    ("origin_country", "CHN", None),
    ("tax_rate", "-0.5", "must be >= 0"),
    ("tax_rate", "1000.01", "must be <= 1000"),
    ("tax_rate", "5000", "must be <= 1000"),
    ("net_mass_kg", "-1", "must be >= 0"),
    ("item_price", "-0.01", "must be >= 0"),
    ("item_price", "abc", "must be a number"),
    ("tax_rate", "12%", "must be a number"),
    ("net_mass_kg", "1,000", "must be a number"),
    ("item_price", "inf", None),
    ("item_price", float("inf"), None),
    ("tax_rate", "1e400", None),
    ("net_mass_kg", "-inf", None),
    ("declaration_date", "2020/01/05", "must be a date YYYY-MM-DD"),
    ("declaration_date", "05-01-2020", "must be a date YYYY-MM-DD"),
    ("declaration_date", "2020-13-01", "must be a date YYYY-MM-DD"),
    ("declaration_date", "2021-02-30", "must be a date YYYY-MM-DD"),
    ("declaration_date", "2020-01-05T10:00", "must be a date YYYY-MM-DD"),
    ("declaration_date", "yesterday", "must be a date YYYY-MM-DD"),
    ("importer_id", "", "non-empty string"),
    ("declaration_id", "x" * 65, "at most 64 characters"),
    ("importer_id", "Q" * 65, "at most 64 characters"),
    ("courier_id", "C" * 1_000_000, "at most 64 characters"),
    ("bill_of_lading", "B" * 65, "at most 64 characters"),
    ("bill_of_lading", " ", "non-empty string"),
    ("container_number", "CSQU3054384", "check digit"),
    ("container_number", "CSQU305438", "ISO 6346"),
    ("container_number", "csqu3054383", "ISO 6346"),
    ("container_number", "CSQX3054383", "ISO 6346"),
    ("container_number", "CSQU 305438 3", "ISO 6346"),
]


@pytest.mark.parametrize("rules", [LABELLED, RECORD], ids=["history", "scoring"])
@pytest.mark.parametrize(("field", "value", "message"), BAD_VALUES)
def test_one_bad_value_fails_only_its_row_and_field(good_records, rules, field, value, message):
    records = _with_value(_records(good_records, rules), field, value)
    _assert_only_row(_failures(records, rules), BAD_ROW, field, message)


@pytest.mark.parametrize(
    ("field", "value"),
    [(field, None) for field in REQUIRED_FIELDS]
    + [("importer_id", np.nan), ("tax_rate", np.nan), ("declaration_date", pd.NaT)],
)
def test_null_required_field_is_reported(good_records, field, value):
    records = _with_value(_records(good_records, RECORD), field, value)
    _assert_only_row(_failures(records, RECORD), BAD_ROW, field, "is required")


@pytest.mark.parametrize("field", LABEL_FIELDS)
def test_a_label_null_without_the_other_is_reported_in_history(good_records, field):
    other = "critical_fraud" if field == "fraud" else "fraud"
    records = _with_value(good_records, field, None)
    _assert_only_row(_failures(records, LABELLED), BAD_ROW, field, f"is empty while {other} is not")


@pytest.mark.parametrize("empty", [None, np.nan], ids=["None", "NaN"])
def test_a_declaration_nobody_inspected_is_valid_history_with_null_labels(good_records, empty):
    records = _with_value(_with_value(good_records, "fraud", empty), "critical_fraud", empty)
    typed = _valid(records, LABELLED)
    assert typed[LABEL_FIELDS].iloc[BAD_ROW].isna().all()
    assert typed[LABEL_FIELDS].drop(index=BAD_ROW).notna().all().all()  # the others keep theirs
    assert all(typed[field].dtype == "Int8" for field in LABEL_FIELDS)
    assert np.isnan(typed["fraud"].to_numpy()[BAD_ROW])  # numpy reads a missing label as NaN


@pytest.mark.parametrize("value", ["2", "-1", "0.5", "yes", 2])
@pytest.mark.parametrize("field", LABEL_FIELDS)
def test_labels_must_be_0_or_1(good_records, field, value):
    records = _with_value(good_records, field, value)
    expected = "must be a number" if value == "yes" else "must be 0 or 1"
    _assert_only_row(_failures(records, LABELLED), BAD_ROW, field, expected)


@pytest.mark.parametrize(
    ("labels", "field", "check"),
    [
        ((None, "0"), "fraud", "fraud_empty_alone"),
        ((None, "1"), "fraud", "fraud_empty_alone"),
        (("0", None), "critical_fraud", "critical_fraud_empty_alone"),
        (("1", None), "critical_fraud", "critical_fraud_empty_alone"),
        (("0", "1"), "critical_fraud", "critical_implies_fraud"),
    ],
)
def test_each_bad_combination_of_labels_has_its_own_reason(good_records, labels, field, check):
    fraud, critical = labels
    records = _with_value(_with_value(good_records, "fraud", fraud), "critical_fraud", critical)
    failures = _failures(records, LABELLED)
    _assert_only_row(failures, BAD_ROW, field, None)
    assert failures["check"].tolist() == [check]


@pytest.mark.parametrize("field", [INSPECTED_ON, RECOVERED_DUTY])
def test_an_outcome_detail_without_labels_is_reported(good_records, field):
    """A date of inspection or an assessed duty says an inspection took place: labels empty
    contradict it."""
    records = _with_value(_with_value(good_records, "fraud", None), "critical_fraud", None)
    records = _with_value(records.assign(**{field: None}), field, {INSPECTED_ON: "2021-06-01"}.get(field, "10"))
    failures = _failures(records, LABELLED)
    _assert_only_row(failures, BAD_ROW, field, "must be empty where nobody inspected the declaration")
    assert failures["check"].tolist() == [f"{field}_without_labels"]


def test_the_inspection_date_is_a_date_on_or_after_the_declaration(good_records):
    declared = pd.Timestamp(good_records["declaration_date"].iloc[BAD_ROW])
    records = _records(good_records, LABELLED).assign(**{INSPECTED_ON: None})
    for inspected, message in [
        ((declared - pd.Timedelta(days=1)).strftime("%Y-%m-%d"), "must not be before the declaration_date"),
        ("2021-02-30", "must be a date YYYY-MM-DD"),
        ("1899-12-31", "must be between 1900-01-01 and 2099-12-31"),
    ]:
        _assert_only_row(
            _failures(_with_value(records, INSPECTED_ON, inspected), LABELLED), BAD_ROW, INSPECTED_ON, message
        )
    for inspected in [declared.strftime("%Y-%m-%d"), "2099-12-31", None]:
        typed = _valid(_with_value(records, INSPECTED_ON, inspected), LABELLED)
        assert typed[INSPECTED_ON].dtype == np.dtype("datetime64[ns]")
        assert typed[INSPECTED_ON].iloc[BAD_ROW] is pd.NaT if inspected is None else pd.Timestamp(inspected)


def test_critical_fraud_requires_fraud(good_records):
    records = _with_value(good_records, "critical_fraud", "1")
    records = _with_value(records, "fraud", "0")
    failures = _failures(records, LABELLED)
    _assert_only_row(failures, BAD_ROW, "critical_fraud", "critical_fraud = 1 requires fraud = 1")
    # and the legal combinations pass
    for fraud, critical in [("1", "1"), ("1", "0"), ("0", "0")]:
        ok = _with_value(_with_value(good_records, "critical_fraud", critical), "fraud", fraud)
        assert _failures(ok, LABELLED).empty


def test_several_bad_rows_are_each_reported_once(good_records):
    records = _with_value(good_records, "hs6_code", "1")
    records.iloc[5, records.columns.get_loc("origin_country")] = "XX"
    failures = _failures(records, LABELLED)
    assert failures[["index", "field"]].values.tolist() == [[BAD_ROW, "hs6_code"], [5, "origin_country"]]


@pytest.mark.parametrize(
    ("rules", "field"),
    [(LABELLED, field) for field in REQUIRED_FIELDS]
    + [(RECORD, field) for field in ("declaration_id", "hs6_code", "item_price", "declaration_date")],
)
def test_missing_required_column_is_reported_for_every_row(good_records, rules, field):
    records = _records(good_records, rules).drop(columns=[field])
    failures = _failures(records, rules)
    assert set(failures["field"]) == {field}
    assert sorted(failures["index"]) == list(range(N_ROWS))
    assert set(failures["message"]) == {"is required"}


@pytest.mark.parametrize("field", LABEL_FIELDS)
def test_missing_label_column_is_reported_in_history(good_records, field):
    failures = _failures(good_records.drop(columns=[field]), LABELLED)
    missing = failures[failures["field"] == field]
    assert sorted(missing["index"]) == list(range(N_ROWS))
    assert set(missing["message"]) == {"is required"}


@pytest.mark.parametrize("field", LABEL_FIELDS)
def test_missing_label_column_is_its_only_failure(good_records, field):
    failures = _failures(good_records.drop(columns=[field]), LABELLED)
    assert set(failures["field"]) == {field}, failures.to_dict("records")


@pytest.mark.parametrize("rules", [LABELLED, RECORD], ids=["history", "scoring"])
def test_extra_field_is_rejected_not_dropped(good_records, rules):
    """A column-level problem: every record carries the unknown field (documented behaviour)."""
    records = _records(good_records, rules)
    records["discount"] = None
    records.iloc[BAD_ROW, records.columns.get_loc("discount")] = "5%"
    checked = check_declarations(records, rules)
    assert set(checked.failures["field"]) == {"discount"}
    assert set(checked.failures["message"]) == {"is not a declaration field"}
    assert sorted(checked.failures["index"]) == list(range(N_ROWS))
    assert checked.valid.empty
    assert list(checked.valid.columns) == rules.fields


def test_labels_are_never_sent_for_scoring(good_records):
    failures = _failures(good_records, RECORD)
    assert set(failures["field"]) == {*LABEL_FIELDS, INSPECTED_ON, RECOVERED_DUTY}
    assert set(failures["message"]) == {"is not a declaration field"}


@pytest.mark.parametrize("rules", [LABELLED, RECORD], ids=["history", "scoring"])
@pytest.mark.parametrize("how", ["null", "absent"])
def test_optional_fields_may_be_missing(good_records, rules, how):
    """Seller, courier, container number and bill of lading: null, NaN or not sent at all."""
    records = _records(good_records, rules)
    if how == "null":
        records["seller_id"] = records["container_number"] = None
        records["courier_id"] = records["bill_of_lading"] = np.nan
    else:
        records = records.drop(columns=sorted(OPTIONAL_FIELDS))
    typed = _valid(records, rules)
    assert typed[sorted(OPTIONAL_FIELDS)].isna().all().all()
    assert list(typed.columns) == DECLARATION_FIELDS + (
        LABEL_FIELDS + [INSPECTED_ON, RECOVERED_DUTY] if rules is LABELLED else []
    )


def test_boundary_values_are_valid(good_records):
    records = _with_value(good_records, "tax_rate", "1000")
    records = _with_value(records, "net_mass_kg", "0")
    records.iloc[0, records.columns.get_loc("tax_rate")] = "0"
    records.iloc[0, records.columns.get_loc("item_price")] = "0"
    assert _failures(records, LABELLED).empty


def test_numbers_may_arrive_as_numbers_or_strings(good_records):
    records = _with_value(good_records, "item_price", 12.5)
    records = _with_value(records, "tax_rate", 8)
    records.iloc[1, records.columns.get_loc("net_mass_kg")] = "1e3"
    typed = _valid(records, LABELLED)
    assert typed["item_price"].iloc[BAD_ROW] == 12.5
    assert typed["tax_rate"].iloc[BAD_ROW] == 8.0
    assert typed["net_mass_kg"].iloc[1] == 1000.0


def test_valid_rows_have_the_canonical_types(good_records):
    records = _with_value(good_records, "hs6_code", "010121")
    records = _with_value(records, "office_id", "030")
    records = _with_value(records, "declaration_id", "00012345")
    records = _with_value(records, "fraud", "1")
    records = _with_value(records, "critical_fraud", "1")
    typed = _valid(records, LABELLED)

    assert list(typed.columns) == DECLARATION_FIELDS + LABEL_FIELDS + [INSPECTED_ON, RECOVERED_DUTY]
    assert typed[INSPECTED_ON].dtype == np.dtype("datetime64[ns]") and typed[INSPECTED_ON].isna().all()
    assert typed[RECOVERED_DUTY].dtype == np.dtype("float64") and typed[RECOVERED_DUTY].isna().all()
    row = typed.iloc[BAD_ROW]
    assert row["hs6_code"] == "010121"
    assert row["office_id"] == "030"
    assert row["declaration_id"] == "00012345"
    for field in DECLARATION_FIELDS:
        if field in NUMERIC_FIELDS or field == "declaration_date":
            continue
        present = typed[field].dropna()
        assert all(isinstance(v, str) for v in present), field
    assert typed["declaration_date"].dtype == np.dtype("datetime64[ns]")
    assert typed["declaration_date"].iloc[0] == pd.Timestamp(good_records["declaration_date"].iloc[0])
    for field in NUMERIC_FIELDS:
        assert typed[field].dtype == np.float64, field
    expected_price = float(good_records["item_price"].iloc[0])
    assert typed["item_price"].iloc[0] == expected_price
    for field in LABEL_FIELDS:
        assert pd.api.types.is_integer_dtype(typed[field]), field
        assert set(typed[field].unique()) <= {0, 1}
    assert typed["fraud"].iloc[BAD_ROW] == 1 and typed["critical_fraud"].iloc[BAD_ROW] == 1


def test_valid_rows_without_labels(good_records):
    typed = _valid(good_records[DECLARATION_FIELDS], RECORD)
    assert list(typed.columns) == DECLARATION_FIELDS
    assert len(typed) == N_ROWS
    # a valid sample coerces to the same values it was read from
    assert typed["importer_id"].tolist() == good_records["importer_id"].tolist()
    assert typed["tax_rate"].tolist() == [float(v) for v in good_records["tax_rate"]]


def test_valid_rows_and_failures_come_together(good_records):
    """The rows that pass, typed and named by position, and the failures of the others."""
    records = _with_value(good_records, "origin_country", "XX")
    records.iloc[5, records.columns.get_loc("tax_rate")] = "12%"
    checked = check_declarations(records, LABELLED)
    assert checked.failures[["index", "field", "check"]].values.tolist() == [
        [BAD_ROW, "origin_country", "iso_country"],
        [5, "tax_rate", "is_a_number"],
    ]
    passing = [i for i in range(N_ROWS) if i not in (BAD_ROW, 5)]
    assert checked.valid.index.tolist() == passing
    assert checked.valid["declaration_id"].tolist() == records["declaration_id"].iloc[passing].tolist()
    assert checked.valid["tax_rate"].dtype == np.float64
    assert checked.valid["declaration_date"].dtype == np.dtype("datetime64[ns]")


def test_a_missing_field_leaves_no_valid_row_but_typed_columns(good_records):
    checked = check_declarations(good_records.drop(columns=["hs6_code"]), LABELLED)
    assert checked.valid.empty
    assert list(checked.valid.columns) == LABELLED.fields
    assert checked.valid["declaration_date"].dtype == np.dtype("datetime64[ns]")
    assert checked.valid["item_price"].dtype == np.float64
    assert all(checked.valid[field].dtype == "Int8" for field in LABEL_FIELDS)
    assert checked.valid[INSPECTED_ON].dtype == np.dtype("datetime64[ns]")


@pytest.mark.parametrize("value", ["123456\n", "１２３４５６", "١٢٣٤٥٦"], ids=["newline", "fullwidth", "arabic"])
def test_hs6_code_is_exactly_six_ascii_digits(good_records, value):
    records = _with_value(good_records, "hs6_code", value)
    _assert_only_row(_failures(records, LABELLED), BAD_ROW, "hs6_code", "6 digits")


def test_date_must_be_zero_padded_iso(good_records):
    records = _with_value(good_records, "declaration_date", "2020-1-5")
    _assert_only_row(_failures(records, LABELLED), BAD_ROW, "declaration_date", "YYYY-MM-DD")


CUSTOM_CHECK_CASES = [
    ("departure_country", "EU", ISO_MESSAGE),
    ("origin_country", "XX", ISO_MESSAGE),
    ("item_price", "inf", FINITE_MESSAGE),
    ("net_mass_kg", float("inf"), FINITE_MESSAGE),
]


def test_custom_check_messages_are_readable_in_both_schemas(good_records):
    seen = []
    for name, rules in (("history", LABELLED), ("scoring", RECORD)):
        for field, value, message in CUSTOM_CHECK_CASES:
            records = _with_value(_records(good_records, rules), field, value)
            failures = _failures(records, rules)
            assert set(failures["index"]) == {BAD_ROW}
            assert set(failures["field"]) == {field}
            if message not in failures["message"].tolist():
                seen.append((name, field, failures["message"].tolist()))
    assert not seen, seen  # (rules, field, messages) that do not say what is wrong


@pytest.mark.parametrize("value", [17976931348623157 * 10**292 + 1, int(sys.float_info.max) + 1, -(10**400), 10**400])
def test_integers_past_the_largest_float_are_not_finite(good_records, value):
    """A JSON integer just past the largest float would round down to it: it is out of range,
    as the OpenAPI document's maximum says (found by `make fuzz`)."""
    records = _with_value(_records(good_records, RECORD), "item_price", value)
    _assert_only_row(_failures(records, RECORD), BAD_ROW, "item_price", FINITE_MESSAGE)


@pytest.mark.parametrize(
    ("sent", "failed"),
    [("1840.5", False), ("0", False), (None, False), ("-1", True), ("inf", True), ("lots", True)],
)
def test_the_duty_an_inspection_assessed_is_a_number_at_least_0_or_unknown(good_records, sent, failed):
    records = _with_value(_records(good_records, LABELLED).assign(**{RECOVERED_DUTY: None}), RECOVERED_DUTY, sent)
    checked = check_declarations(records, LABELLED)
    found = checked.failures[checked.failures["field"] == RECOVERED_DUTY]
    assert (len(found) == 1) is failed, found
    if failed:
        assert found["index"].tolist() == [BAD_ROW]
    else:
        value = checked.valid[RECOVERED_DUTY].iloc[BAD_ROW]
        assert np.isnan(value) if sent is None else value == float(sent)
