"""The declaration record (CONTRACT section 1, docs/record.md), written once: its fields, what
each holds and whether it may be null, every limit, every rule and the words a failure is
reported in.

Everything that checks or describes a record reads it from here: the pandera schemas of history
(features.schema), the online checker of what is sent for scoring (features.online), the JSON
checks of the service (serving.requests), its OpenAPI document (serving.openapi), the KCS layout
(features.adapters) and the tables of docs/record.md (`markdown_table`). A limit changed here is
changed for all of them.

A rule is data: a name (the check a failure reports), the fields it applies to, its message and
its test. A test answers both for one value (the online checker) and for a column (pandera), and
the two answers are held equal by a property test (tests/features/test_schema_requests.py).

Unusual is not wrong: a zero price with a positive mass (free samples, warranty replacements),
a zero mass (documents), a tax rate of 0 or a price far from an HS code's median are real
declarations, and the risk features are there to judge them. Only values that cannot be true
are rejected.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import pandas as pd
import pycountry

# --- limits and formats ----------------------------------------------------------------------

MAX_ID_CHARACTERS = 64  # every identifier and code string
MAX_TAX_RATE = 1000  # percent
ISO_COUNTRIES = frozenset(country.alpha_2 for country in pycountry.countries)
# "ZZ" (user-assigned in ISO 3166-1) is "unknown or not declared": administrations and the KCS data
# use it, and a declaration with it is valid and scored, its country a feature value like any other.
UNKNOWN_COUNTRY = "ZZ"
COUNTRY_CODES = ISO_COUNTRIES | {UNKNOWN_COUNTRY}
HS6_CODE = r"[0-9]{6}"  # ASCII digits only: "\d" would take "１２３４５６"
# HS chapters run 01..97; chapter 77 is reserved by the WCO and holds no goods (98 and 99 are
# left to national nomenclatures, so not HS6).
HS_CHAPTERS = frozenset(f"{chapter:02d}" for chapter in range(1, 98)) - {"77"}
ISO_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"  # exactly YYYY-MM-DD: pandas alone takes 2020-1-5
# No declaration is older than 1900, and pandas' nanosecond dates end in 2262: a date outside
# these bounds is a typo, and would not survive the features' date arithmetic.
EARLIEST_DATE, LATEST_DATE = "1900-01-01", "2099-12-31"
# The same dates as a JSON Schema pattern (the OpenAPI document), one alternative per century of
# the bounds, which start and end a century; `format: date` says the rest (a day of the calendar).
DATE_PATTERN = (
    "^("
    + "|".join(str(century) for century in range(int(EARLIEST_DATE[:2]), int(LATEST_DATE[:2]) + 1))
    + r")[0-9]{2}-[0-9]{2}-[0-9]{2}$"
)
# ISO 6346 container number: owner code (3 letters), category (U freight, J detachable equipment,
# Z trailer or chassis), 6-digit serial, check digit. Capitals only, as the standard writes it.
CONTAINER_NUMBER = r"[A-Z]{3}[UJZ][0-9]{7}"
# Blank means ASCII white space only: regex engines disagree on which other characters are
# space (Python counts \x1c, ECMAScript \ufeff), and the OpenAPI document states this one.
NOT_BLANK = r"[^ \t\n\r\f\v]"
LARGEST_NUMBER = sys.float_info.max  # a JSON number beyond it is parsed as infinity or overflows
# The largest number as the OpenAPI document writes it (1.7976931348623157e+308), read as a
# decimal: an integer past it is out of range even where it would round down to the largest float.
LARGEST_INTEGER = int(decimal.Decimal(repr(LARGEST_NUMBER)))

# ISO 6346 letter values: A=10 onwards, skipping the multiples of 11 (11, 22, 33).
_ISO6346_LETTERS = dict(
    zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", [n for n in range(10, 39) if n % 11]),
)


def iso6346_check_digit(first_ten: str) -> int:
    """The check digit of an owner code, category and serial (ISO 6346 Annex A): each
    character's value times 2**position, the sum mod 11, then mod 10 (a remainder of 10 gives 0)."""
    values = [_ISO6346_LETTERS[c] if c in _ISO6346_LETTERS else int(c) for c in first_ten]
    return sum(value << position for position, value in enumerate(values)) % 11 % 10


def is_container_number(value: str) -> bool:
    """An ISO 6346 container number: the format, and a check digit that matches."""
    return bool(re.fullmatch(CONTAINER_NUMBER, value)) and iso6346_check_digit(value[:10]) == int(value[10])


def is_recovered_duty(duty):
    """What an inspection may report as recovered duty: a finite amount of at least 0. For a
    number or a column alike: history's check and /outcomes' share it."""
    return (duty >= 0) & (duty != math.inf)


# --- the fields ------------------------------------------------------------------------------

# What a field holds, which decides how it is parsed, typed and checked.
IDENTIFIER = "identifier"  # text of at most MAX_ID_CHARACTERS, any characters
CODE = "code"  # text with a format of its own, which also bounds its length
DATE = "date"
NUMBER = "number"
LABEL = "label"  # 0 or 1, read as a number


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    required: bool  # False: null allowed
    type: str  # as the contract's table states it
    kcs: str | None  # the KCS export's column it comes from, as the contract's table names it


def _field(name: str, kind: str, type_: str, kcs: str | None, required: bool = True) -> Field:
    return Field(name, kind, required, type_, kcs)


DECLARATION = (
    _field("declaration_id", IDENTIFIER, "string, unique", "Declaration ID"),
    _field("declaration_date", DATE, "date", "Date"),
    _field("office_id", IDENTIFIER, "string", "Office ID"),
    _field("process_type", IDENTIFIER, "string", "Process Type"),
    _field("import_type", IDENTIFIER, "string", "Import Type"),
    _field("import_use", IDENTIFIER, "string", "Import Use"),
    _field("payment_type", IDENTIFIER, "string", "Payment Type"),
    _field("transport_mode", IDENTIFIER, "string", "Mode of Transport"),
    _field("declarant_id", IDENTIFIER, "string", "Declarant ID"),
    _field("importer_id", IDENTIFIER, "string", "Importer ID"),
    _field("seller_id", IDENTIFIER, "string", "Seller ID", required=False),
    _field("courier_id", IDENTIFIER, "string", "Courier ID", required=False),
    _field("hs6_code", CODE, "string of exactly 6 digits", "HS6 Code"),
    _field("departure_country", CODE, "ISO 3166-1 alpha-2", "Country of Departure"),
    _field("origin_country", CODE, "ISO 3166-1 alpha-2", "Country of Origin"),
    _field("tax_rate", NUMBER, f"number, percent, 0 <= x <= {MAX_TAX_RATE}", "Tax Rate"),
    _field("tax_type", IDENTIFIER, "string", "Tax Type"),
    _field("origin_indicator", IDENTIFIER, "string", "Country of Origin Indicator"),
    _field("net_mass_kg", NUMBER, "number >= 0", "Net Mass"),
    _field("item_price", NUMBER, "number >= 0 (local currency)", "Item Price"),
    _field("container_number", CODE, "ISO 6346 (4 letters, 7 digits, valid check digit)", None, required=False),
    _field("bill_of_lading", IDENTIFIER, "string", None, required=False),
)
# When the outcome became known, from which day its label may count in features; null where
# nobody inspected, and where a source does not say (the KCS data, all of them inspected).
INSPECTED_ON = "inspected_on"
# The duty an inspection assessed beyond the declared duty (/outcomes, optional): it teaches the
# duty model what a fraud's inspection actually recovers.
RECOVERED_DUTY = "additional_duty"
# What history holds of a declaration beyond the record, never sent for scoring. History holds
# every declaration the center received: the labels are null together where nobody inspected it.
OUTCOME = (
    _field("fraud", LABEL, "0, 1, or null (not inspected)", "Fraud", required=False),
    _field(
        "critical_fraud",
        LABEL,
        "0, 1, or null (not inspected)",
        "1 where Critical Fraud == 2, else 0",
        required=False,
    ),
    _field(INSPECTED_ON, DATE, "date or null: when the outcome became known", None, required=False),
    _field(RECOVERED_DUTY, NUMBER, "number >= 0 or null: duty the inspection assessed", None, required=False),
)
# What selected a declaration that was fed back from the service (export-feedback's `selected_by`,
# one of models.lanes.SOURCES): provenance evaluate weighs the validation window's labels by, never
# a feature, and no field of the contract's record, so null where a source does not say (the KCS
# export, canonical files).
SELECTED_BY = "selected_by"
FIELDS = {field.name: field for field in DECLARATION + OUTCOME}

DECLARATION_FIELDS = [field.name for field in DECLARATION]
OPTIONAL_FIELDS = {field.name for field in DECLARATION if not field.required}
NUMERIC_FIELDS = [field.name for field in DECLARATION if field.kind == NUMBER]
STRING_FIELDS = [field.name for field in DECLARATION if field.kind in (IDENTIFIER, CODE)]
CODE_FIELDS = [field.name for field in DECLARATION if field.kind == CODE]
BOUNDED_FIELDS = [field.name for field in DECLARATION if field.kind == IDENTIFIER]  # at most MAX_ID_CHARACTERS
LABEL_FIELDS = [field.name for field in OUTCOME if field.kind == LABEL]
OUTCOME_DETAILS = [field.name for field in OUTCOME if field.kind != LABEL]  # what an outcome says beside its labels
LABELLED_FIELDS = DECLARATION_FIELDS + [field.name for field in OUTCOME]  # a row of history


def markdown_table(fields: tuple[Field, ...], required_column: bool = True) -> str:
    """The fields as the contract and docs/record.md tabulate them; history's outcome without the
    required column (its type says null is allowed)."""
    header = ["field", "type", *(["required"] if required_column else []), "KCS column"]
    rows = [
        [
            field.name,
            field.type,
            *(["yes" if field.required else "no (null allowed)"] if required_column else []),
            field.kcs or "-",
        ]
        for field in fields
    ]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, ["---"] * len(header), *rows])


# --- the words a failure is reported in --------------------------------------------------------

FAILURE_COLUMNS = ["index", "field", "check", "message"]  # one failed check of one row
TOO_LONG = f"must be at most {MAX_ID_CHARACTERS} characters"
REQUIRED = ("required", "is required")
# Checks pandera itself runs, by pandera's name: (check name, message).
BUILT_IN_CHECKS = {
    "not_nullable": REQUIRED,
    "column_in_dataframe": REQUIRED,
    "column_in_schema": ("known_field", "is not a declaration field"),
}
# What parsing finds before any rule runs: (check name, message).
IS_A_NUMBER = ("is_a_number", "must be a number")
IS_A_DATE = ("iso_date", "must be a date YYYY-MM-DD")
DATE_IN_RANGE = ("date_in_range", f"must be between {EARLIEST_DATE} and {LATEST_DATE}")


# --- parsing one value -------------------------------------------------------------------------


def past_float_range(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > LARGEST_INTEGER


def parse_number(value) -> float:
    """A number as float64, NaN where it is not one. A JSON integer too large for a float becomes
    +-inf, which the `finite` rule then reports, instead of an OverflowError or, just past the
    largest float, silently rounding down to it."""
    if past_float_range(value):
        return math.inf if value > 0 else -math.inf
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def in_date_range(day: np.datetime64) -> bool:
    return bool(_EARLIEST <= day <= _LATEST)


_EARLIEST, _LATEST = np.datetime64(EARLIEST_DATE, "D"), np.datetime64(LATEST_DATE, "D")


@lru_cache(maxsize=4096)  # a batch's declarations share a few days
def parse_date(text: str) -> tuple[tuple[str, str] | None, np.datetime64 | None]:
    """(None, the day), or (the failure, None): exactly YYYY-MM-DD, a day of the calendar, from
    EARLIEST_DATE to LATEST_DATE, as history's dates are read."""
    if not re.fullmatch(ISO_DATE, text):
        return IS_A_DATE, None
    try:  # pandas, unlike Python, takes the year 0, a leap year as 2000 is
        dt.date.fromisoformat(f"2000{text[4:]}" if text.startswith("0000") else text)
    except ValueError:
        return IS_A_DATE, None
    day = np.datetime64(text, "D")
    return (None, day) if in_date_range(day) else (DATE_IN_RANGE, None)


# --- the rules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matches:
    pattern: str
    whole: bool = True

    @cached_property
    def _match(self):
        compiled = re.compile(self.pattern)
        return compiled.fullmatch if self.whole else compiled.search

    def value(self, text: str) -> bool:
        return self._match(text) is not None

    def column(self, texts: pd.Series) -> pd.Series:
        return texts.str.fullmatch(self.pattern) if self.whole else texts.str.contains(self.pattern)


@dataclass(frozen=True)
class AtMostCharacters:
    limit: int

    def value(self, text: str) -> bool:
        return len(text) <= self.limit

    def column(self, texts: pd.Series) -> pd.Series:
        return texts.str.len() <= self.limit


@dataclass(frozen=True)
class OneOf:
    allowed: frozenset

    def value(self, text: str) -> bool:
        return text in self.allowed

    def column(self, texts: pd.Series) -> pd.Series:
        return texts.isin(self.allowed)


@dataclass(frozen=True)
class Arithmetic:
    """A comparison written once: Python numbers and pandas columns share the operators."""

    test: Callable

    def value(self, number: float) -> bool:
        return bool(self.test(number))

    def column(self, numbers: pd.Series) -> pd.Series:
        return self.test(numbers)


@dataclass(frozen=True)
class EachValue:
    """A test with no column form: pandera maps it over the values too."""

    test: Callable[[str], bool]

    def value(self, text: str) -> bool:
        return self.test(text)

    def column(self, texts: pd.Series) -> pd.Series:
        return texts.map(self.test)


@dataclass(frozen=True)
class TwoForms:
    """A test whose column form is vectorised differently from its value form (a property test
    holds the two equal, as for every rule)."""

    value: Callable[[str], bool]
    column: Callable[[pd.Series], pd.Series]


@dataclass(frozen=True)
class ValueRule:
    """A rule on one field's value: a null is its field's `required` matter, not the rule's."""

    name: str
    fields: tuple[str, ...]
    message: str
    test: Matches | AtMostCharacters | OneOf | Arithmetic | EachValue | TwoForms


@dataclass(frozen=True)
class RowRule:
    """A rule across a row's fields, reported against the field an analyst would correct."""

    name: str
    field: str
    message: str
    broken: Callable[[pd.DataFrame], pd.Series]  # the rows that break it (a null compares false)


# The contract's rules: the scoring service and the validate stage share them, so a record the
# service rejects is one the pipeline would never train on.
RECORD_RULES = (
    ValueRule("not_blank", tuple(STRING_FIELDS), "must be a non-empty string", Matches(NOT_BLANK, whole=False)),
    ValueRule(
        f"at_most_{MAX_ID_CHARACTERS}_characters",
        tuple(BOUNDED_FIELDS),
        TOO_LONG,
        AtMostCharacters(MAX_ID_CHARACTERS),
    ),
    ValueRule(
        "hs6_six_digits",
        ("hs6_code",),
        "must be exactly 6 digits (5 digits: a leading zero was lost)",
        Matches(HS6_CODE),
    ),
    ValueRule(
        "iso_country",
        ("departure_country", "origin_country"),
        f"must be an ISO 3166-1 alpha-2 country code, or {UNKNOWN_COUNTRY} for unknown",
        OneOf(COUNTRY_CODES),
    ),
    ValueRule(
        "iso6346_format",
        ("container_number",),
        "must be an ISO 6346 container number: 3 capital letters, U, J or Z, 7 digits",
        Matches(CONTAINER_NUMBER),
    ),
    ValueRule(
        "iso6346_check_digit",
        ("container_number",),
        "must end in its ISO 6346 check digit (a typing error in the number)",
        # a malformed number is iso6346_format's finding, not a second one here
        EachValue(lambda number: is_container_number(number) or not re.fullmatch(CONTAINER_NUMBER, number)),
    ),
    ValueRule("not_negative", tuple(NUMERIC_FIELDS), "must be >= 0", Arithmetic(lambda number: number >= 0)),
    ValueRule(
        f"tax_rate_at_most_{MAX_TAX_RATE}",
        ("tax_rate",),
        f"must be <= {MAX_TAX_RATE} (a percentage)",
        Arithmetic(lambda rate: rate <= MAX_TAX_RATE),
    ),
    ValueRule(
        "finite", tuple(NUMERIC_FIELDS), "must be a finite number", Arithmetic(lambda number: abs(number) != math.inf)
    ),
)
# Per field, in the order pandera runs and reports them.
RULES_BY_FIELD = {field: tuple(rule for rule in RECORD_RULES if field in rule.fields) for field in DECLARATION_FIELDS}

# What history says of an inspection, value by value and across the row.
OUTCOME_RULES = (
    ValueRule(
        "label_0_or_1",
        tuple(LABEL_FIELDS),
        "must be 0 or 1",  # a null is not inspected, with both labels null (CONSISTENCY_RULES)
        OneOf(frozenset({0, 1})),
    ),
    ValueRule(
        "duty_not_negative",
        (RECOVERED_DUTY,),
        "must be a finite number >= 0 (the duty the inspection assessed), or empty",
        Arithmetic(is_recovered_duty),
    ),
)
_BOTH_OR_NEITHER = "both labels are empty where the declaration was not inspected, neither where it was"
_NOT_INSPECTED = "must be empty where nobody inspected the declaration (fraud and critical_fraud empty)"


def _not_inspected(rows: pd.DataFrame) -> pd.Series:
    return rows[LABEL_FIELDS].isna().all(axis=1)


CONSISTENCY_RULES = (
    RowRule(
        "fraud_empty_alone",
        "fraud",
        f"is empty while critical_fraud is not: {_BOTH_OR_NEITHER}",
        lambda rows: rows["fraud"].isna() & rows["critical_fraud"].notna(),
    ),
    RowRule(
        "critical_fraud_empty_alone",
        "critical_fraud",
        f"is empty while fraud is not: {_BOTH_OR_NEITHER}",
        lambda rows: rows["critical_fraud"].isna() & rows["fraud"].notna(),
    ),
    RowRule(
        "critical_implies_fraud",
        "critical_fraud",
        "critical_fraud = 1 requires fraud = 1",
        lambda rows: (rows["critical_fraud"] == 1) & (rows["fraud"] == 0),
    ),
    RowRule(
        "inspected_on_without_labels",
        INSPECTED_ON,
        _NOT_INSPECTED,
        lambda rows: rows[INSPECTED_ON].notna() & _not_inspected(rows),
    ),
    RowRule(
        "additional_duty_without_labels",
        RECOVERED_DUTY,
        _NOT_INSPECTED,
        lambda rows: rows[RECOVERED_DUTY].notna() & _not_inspected(rows),
    ),
    RowRule(
        "inspected_on_not_before_declaration",
        INSPECTED_ON,
        "must not be before the declaration_date: an inspection follows its declaration",
        lambda rows: rows[INSPECTED_ON] < rows["declaration_date"],
    ),
)


@dataclass(frozen=True)
class HistoryRules:
    """Limits a history row must also respect (validate.* in params.yaml)."""

    run_date: pd.Timestamp  # nothing is declared, nor inspected, after the data was exported
    history_start: pd.Timestamp  # earlier dates are typos or placeholders (1900-01-01)
    max_net_mass_kg: float  # more than any ship carries: a unit or typing error


def history_limit_rules(limits: HistoryRules) -> tuple[ValueRule, ...]:
    """What only a history is held to: limits from params.yaml and stricter formats (an HS
    chapter that exists, IDs without padding). The service still scores such declarations: the
    contract makes any six digits and any ID valid input, unseen ones included."""
    run_date, start = limits.run_date.normalize(), limits.history_start.normalize()
    return (
        ValueRule(
            "not_after_run_date",
            ("declaration_date", INSPECTED_ON),
            f"must not be after the run date {run_date:%Y-%m-%d} (validate.run_date)",
            Arithmetic(lambda dates: dates <= run_date),
        ),
        ValueRule(
            "not_before_history_start",
            ("declaration_date",),
            f"must not be before the history start {start:%Y-%m-%d} (validate.history_start)",
            Arithmetic(lambda dates: dates >= start),
        ),
        ValueRule(
            "hs_chapter_exists",
            ("hs6_code",),
            "must be in an HS chapter, 01 to 97 (77 is reserved)",
            # a malformed code is hs6_six_digits' finding, not a second one here
            TwoForms(
                lambda code: code[:2] in HS_CHAPTERS or not re.fullmatch(HS6_CODE, code),
                lambda codes: codes.str[:2].isin(HS_CHAPTERS) | ~codes.str.fullmatch(HS6_CODE),
            ),
        ),
        ValueRule(
            "mass_physically_possible",
            ("net_mass_kg",),
            f"must be at most {limits.max_net_mass_kg:,.0f} kg (validate.max_net_mass_kg)",
            Arithmetic(lambda mass: mass <= limits.max_net_mass_kg),
        ),
        ValueRule(
            # "QLRUBN9 " would silently be a new importer with no history; blank is not_blank's finding
            "no_surrounding_spaces",
            tuple(BOUNDED_FIELDS),
            "must not start or end with spaces",
            TwoForms(
                lambda value: value == value.strip() or value.strip() == "",
                lambda values: (values == values.str.strip()) | (values.str.strip() == ""),
            ),
        ),
    )
