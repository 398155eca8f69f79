"""The canonical declaration record (docs/record.md) and its validation.

Two entry points with one result, the rows that pass, in canonical dtypes, and every failed
check: `check_declarations(records, rules)`, one pandera pass, for history; `check_requests(records)`,
the contract's rules one value at a time, for what is sent for scoring, where a pandera pass
would cost more than the scoring. The rule set is one value, three layers of rules, each check
named for the rule it enforces and carrying its message:
- `RECORD` (`DeclarationSchema` and `RECORD_RULES`): the contract's record. The scoring service
  and the validate stage share it, so a record the service rejects is one the pipeline would
  never train on.
- `LABELLED` (`LabelledDeclarationSchema`): adds what history says of each declaration's
  inspection (the labels, null together where nobody inspected it; when the outcome became
  known; the duty assessed) and their consistency.
- `history_rules(limits)`: adds to `LABELLED` what only a history can be held to, with limits
  from params.yaml (the run date, the history window, physically possible masses) and stricter
  formats (an HS chapter that exists, IDs without padding). The service still scores such
  declarations: the contract makes any six digits and any ID valid input, unseen ones included.

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache, partial

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pycountry
from pandera.errors import SchemaErrors
from pandera.typing import Series

ISO_COUNTRIES = frozenset(country.alpha_2 for country in pycountry.countries)
# "ZZ" (user-assigned in ISO 3166-1) is "unknown or not declared": administrations and the KCS data
# use it, and a declaration with it is valid and scored, its country a feature value like any other.
UNKNOWN_COUNTRY = "ZZ"
COUNTRY_CODES = ISO_COUNTRIES | {UNKNOWN_COUNTRY}
HS6_CODE = r"[0-9]{6}"  # ASCII digits only: "\d" would take "１２３４５６"
ISO_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"  # exactly YYYY-MM-DD: pandas alone takes 2020-1-5
# No declaration is older than 1900, and pandas' nanosecond dates end in 2262: a date outside
# these bounds is a typo, and would not survive the features' date arithmetic.
EARLIEST_DATE, LATEST_DATE = "1900-01-01", "2099-12-31"
MAX_ID_CHARACTERS = 64  # every identifier and code string (docs/record.md)
TOO_LONG = f"must be at most {MAX_ID_CHARACTERS} characters"
# ISO 6346 container number: owner code (3 letters), category (U freight, J detachable equipment,
# Z trailer or chassis), 6-digit serial, check digit. Capitals only, as the standard writes it.
CONTAINER_NUMBER = r"[A-Z]{3}[UJZ][0-9]{7}"
# Blank means ASCII white space only: regex engines disagree on which other characters are
# space (Python counts \x1c, ECMAScript \ufeff), and the OpenAPI document states this one.
NOT_BLANK = r"[^ \t\n\r\f\v]"
# HS chapters run 01..97; chapter 77 is reserved by the WCO and holds no goods (98 and 99 are
# left to national nomenclatures, so not HS6).
HS_CHAPTERS = frozenset(f"{chapter:02d}" for chapter in range(1, 98)) - {"77"}

DECLARATION_FIELDS = [
    "declaration_id",
    "declaration_date",
    "office_id",
    "process_type",
    "import_type",
    "import_use",
    "payment_type",
    "transport_mode",
    "declarant_id",
    "importer_id",
    "seller_id",
    "courier_id",
    "hs6_code",
    "departure_country",
    "origin_country",
    "tax_rate",
    "tax_type",
    "origin_indicator",
    "net_mass_kg",
    "item_price",
    "container_number",
    "bill_of_lading",
]
# 0 or 1, both null for a declaration nobody inspected: history holds every declaration.
LABEL_FIELDS = ["fraud", "critical_fraud"]
# When the outcome became known, from which day its label may count in features; null where
# nobody inspected, and where a source does not say (the KCS data, all of them inspected).
INSPECTED_ON = "inspected_on"
# The duty an inspection assessed beyond the declared duty (/outcomes, optional): history holds
# it where outcomes reported it, null elsewhere (the KCS data never do), and it teaches the duty
# model what a fraud's inspection actually recovers.
RECOVERED_DUTY = "additional_duty"
# What an outcome may say beside its labels, null where a source does not report it.
OUTCOME_DETAILS = [INSPECTED_ON, RECOVERED_DUTY]


def is_recovered_duty(duty):
    """What an inspection may report as recovered duty: a finite amount of at least 0. For a
    number or a column alike: history's check and /outcomes' share it."""
    return (duty >= 0) & (duty != math.inf)


LABELLED_FIELDS = DECLARATION_FIELDS + LABEL_FIELDS + OUTCOME_DETAILS  # a row of history
OPTIONAL_FIELDS = {"seller_id", "courier_id", "container_number", "bill_of_lading"}
NUMERIC_FIELDS = ["tax_rate", "net_mass_kg", "item_price"]
STRING_FIELDS = [f for f in DECLARATION_FIELDS if f not in NUMERIC_FIELDS and f != "declaration_date"]
# With a format of their own, which also bounds their length.
CODE_FIELDS = ["hs6_code", "departure_country", "origin_country", "container_number"]
BOUNDED_FIELDS = [f for f in STRING_FIELDS if f not in CODE_FIELDS]  # at most MAX_ID_CHARACTERS

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


# Checks pandera itself runs, and the parsing in `_typed`: (check name, message).
BUILT_IN_CHECKS = {
    "not_nullable": ("required", "is required"),
    "column_in_dataframe": ("required", "is required"),
    "column_in_schema": ("known_field", "is not a declaration field"),
}
IS_A_NUMBER = ("is_a_number", "must be a number")
IS_A_DATE = ("iso_date", "must be a date YYYY-MM-DD")
DATE_IN_RANGE = ("date_in_range", f"must be between {EARLIEST_DATE} and {LATEST_DATE}")
# A dataframe-level check is reported against the field an analyst would correct.
_DATAFRAME_CHECK_FIELDS = {
    "fraud_empty_alone": "fraud",
    "critical_fraud_empty_alone": "critical_fraud",
    "critical_implies_fraud": "critical_fraud",
    "inspected_on_without_labels": INSPECTED_ON,
    "additional_duty_without_labels": RECOVERED_DUTY,
    "inspected_on_not_before_declaration": INSPECTED_ON,
}

_BOTH_OR_NEITHER = "both labels are empty where the declaration was not inspected, neither where it was"
_NOT_INSPECTED = "fraud and critical_fraud empty"


def _not_inspected(df: pd.DataFrame) -> pd.Series:
    return df[LABEL_FIELDS].isna().all(axis=1)


def _unless(df: pd.DataFrame, broken: Callable[[], pd.Series]) -> pd.Series:
    """A row-level check across fields: passes the rows where `broken()` is false. A missing
    field fails every row already, as required, so the check then passes them all."""
    if not set(LABELLED_FIELDS) <= set(df.columns):
        return pd.Series(True, index=df.index)
    return ~broken().fillna(False).astype(bool)


# The labels' check names are the method names: pandera (0.35) drops an explicit `name=` the
# second time a model is turned into a schema. The record's rules (RECORD_RULES) are added to each
# schema made, by `with_record_rules`, so their names survive.


class DeclarationSchema(pa.DataFrameModel):
    """A declaration as sent for scoring: no labels. Its fields; the rules on their values are
    RECORD_RULES."""

    declaration_id: Series[str] = pa.Field()
    declaration_date: Series[pa.DateTime] = pa.Field()
    office_id: Series[str] = pa.Field()
    process_type: Series[str] = pa.Field()
    import_type: Series[str] = pa.Field()
    import_use: Series[str] = pa.Field()
    payment_type: Series[str] = pa.Field()
    transport_mode: Series[str] = pa.Field()
    declarant_id: Series[str] = pa.Field()
    importer_id: Series[str] = pa.Field()
    seller_id: Series[str] = pa.Field(nullable=True)
    courier_id: Series[str] = pa.Field(nullable=True)
    hs6_code: Series[str] = pa.Field()
    departure_country: Series[str] = pa.Field()
    origin_country: Series[str] = pa.Field()
    tax_rate: Series[float] = pa.Field()
    tax_type: Series[str] = pa.Field()
    origin_indicator: Series[str] = pa.Field()
    net_mass_kg: Series[float] = pa.Field()
    item_price: Series[float] = pa.Field()
    container_number: Series[str] = pa.Field(nullable=True)
    bill_of_lading: Series[str] = pa.Field(nullable=True)

    class Config:
        coerce = True
        strict = True
        ordered = False


class LabelledDeclarationSchema(DeclarationSchema):
    """A declaration from history: the inspection's result, or nothing where nobody inspected it."""

    fraud: Series[float] = pa.Field(nullable=True)
    critical_fraud: Series[float] = pa.Field(nullable=True)
    inspected_on: Series[pa.DateTime] = pa.Field(nullable=True)
    additional_duty: Series[float] = pa.Field(nullable=True)

    @pa.check(RECOVERED_DUTY, error="must be a finite number >= 0 (the duty the inspection assessed), or empty")
    def duty_not_negative(cls, duty: Series[float]) -> Series[bool]:
        return is_recovered_duty(duty)

    @pa.check(*LABEL_FIELDS, error="must be 0 or 1, or empty where the declaration was not inspected")
    def label_0_or_1(cls, labels: Series[float]) -> Series[bool]:
        return labels.isin([0, 1])

    @pa.dataframe_check(error="is empty while critical_fraud is not: " + _BOTH_OR_NEITHER)
    def fraud_empty_alone(cls, df: pd.DataFrame) -> Series[bool]:
        return _unless(df, lambda: df["fraud"].isna() & df["critical_fraud"].notna())

    @pa.dataframe_check(error="is empty while fraud is not: " + _BOTH_OR_NEITHER)
    def critical_fraud_empty_alone(cls, df: pd.DataFrame) -> Series[bool]:
        return _unless(df, lambda: df["critical_fraud"].isna() & df["fraud"].notna())

    @pa.dataframe_check(error="critical_fraud = 1 requires fraud = 1")
    def critical_implies_fraud(cls, df: pd.DataFrame) -> Series[bool]:
        return _unless(df, lambda: (df["critical_fraud"] == 1) & (df["fraud"] == 0))

    @pa.dataframe_check(error=f"must be empty where nobody inspected the declaration ({_NOT_INSPECTED})")
    def inspected_on_without_labels(cls, df: pd.DataFrame) -> Series[bool]:
        return _unless(df, lambda: df[INSPECTED_ON].notna() & _not_inspected(df))

    @pa.dataframe_check(error=f"must be empty where nobody inspected the declaration ({_NOT_INSPECTED})")
    def additional_duty_without_labels(cls, df: pd.DataFrame) -> Series[bool]:
        return _unless(df, lambda: df[RECOVERED_DUTY].notna() & _not_inspected(df))

    @pa.dataframe_check(error="must not be before the declaration_date: an inspection follows its declaration")
    def inspected_on_not_before_declaration(cls, df: pd.DataFrame) -> Series[bool]:
        return _unless(df, lambda: df[INSPECTED_ON] < df["declaration_date"])


# The contract's rules on one value, each written once: a name (the check's, as failures report
# it), the fields it applies to, its message and its test. A test answers both for one value (the
# online checker, `check_requests`) and for a column (pandera, for history), and the two answers
# are held equal by a property test (tests/features/test_schema_requests.py).


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
class ValueRule:
    name: str
    fields: tuple[str, ...]
    message: str
    test: Matches | AtMostCharacters | OneOf | Arithmetic | EachValue

    def check(self) -> pa.Check:
        return pa.Check(self.test.column, name=self.name, error=self.message)


RECORD_RULES = (
    ValueRule("not_blank", tuple(STRING_FIELDS), "must be a non-empty string", Matches(NOT_BLANK, whole=False)),
    ValueRule("at_most_64_characters", tuple(BOUNDED_FIELDS), TOO_LONG, AtMostCharacters(MAX_ID_CHARACTERS)),
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
        "tax_rate_at_most_1000", ("tax_rate",), "must be <= 1000 (a percentage)", Arithmetic(lambda rate: rate <= 1000)
    ),
    ValueRule(
        "finite", tuple(NUMERIC_FIELDS), "must be a finite number", Arithmetic(lambda number: abs(number) != math.inf)
    ),
)
# Per field, in the order pandera runs and reports them.
RULES_BY_FIELD = {field: tuple(rule for rule in RECORD_RULES if field in rule.fields) for field in DECLARATION_FIELDS}


def with_record_rules(schema: pa.DataFrameSchema) -> pa.DataFrameSchema:
    """`schema` (a copy) with the contract's rules as pandera checks on their fields."""
    return schema.update_columns(
        {
            field: {"checks": schema.columns[field].checks + [rule.check() for rule in rules]}
            for field, rules in RULES_BY_FIELD.items()
            if rules
        }
    )


@dataclass(frozen=True, eq=False)
class Rules:
    """What a record is held to: the checks, and what a valid row carries beside the record. The pandera
    schema is built when first used: building one imports pandera's Dask typing (half a second
    at every start, and memory), which the service, checking requests without pandera, never uses."""

    build_schema: Callable[[], pa.DataFrameSchema]
    labels: tuple[str, ...] = ()  # 0 or 1, null where the declaration was not inspected
    details: tuple[str, ...] = ()  # what an outcome may say beside them, null where a source does not

    @cached_property
    def schema(self) -> pa.DataFrameSchema:
        return self.build_schema()

    @property
    def fields(self) -> list[str]:
        """A valid row's columns, in order."""
        return DECLARATION_FIELDS + list(self.labels) + list(self.details)


RECORD = Rules(lambda: with_record_rules(DeclarationSchema.to_schema()))  # what is sent for scoring
LABELLED = Rules(  # history, without limits
    lambda: with_record_rules(LabelledDeclarationSchema.to_schema()), tuple(LABEL_FIELDS), tuple(OUTCOME_DETAILS)
)


@dataclass(frozen=True)
class HistoryRules:
    """Limits a history row must also respect (validate.* in params.yaml)."""

    run_date: pd.Timestamp  # nothing is declared after the data was exported
    history_start: pd.Timestamp  # earlier dates are typos or placeholders (1900-01-01)
    max_net_mass_kg: float  # more than any ship carries: a unit or typing error


def history_rules(limits: HistoryRules) -> Rules:
    """`LABELLED` and the checks only a history is held to."""
    return Rules(partial(_history_schema, limits), LABELLED.labels, LABELLED.details)


def _history_schema(limits: HistoryRules) -> pa.DataFrameSchema:
    schema = LABELLED.schema
    run_date, start = limits.run_date.normalize(), limits.history_start.normalize()
    # nothing was declared, nor inspected, after the data was exported
    not_after_run_date = pa.Check(
        lambda dates: dates <= run_date,
        name="not_after_run_date",
        error=f"must not be after the run date {run_date:%Y-%m-%d} (validate.run_date)",
    )
    added = {
        INSPECTED_ON: [not_after_run_date],
        "declaration_date": [
            not_after_run_date,
            pa.Check(
                lambda dates: dates >= start,
                name="not_before_history_start",
                error=f"must not be before the history start {start:%Y-%m-%d} (validate.history_start)",
            ),
        ],
        "hs6_code": [
            # a malformed code is hs6_six_digits' finding, not a second one here
            pa.Check(
                lambda codes: codes.str[:2].isin(HS_CHAPTERS) | ~codes.str.fullmatch(HS6_CODE),
                name="hs_chapter_exists",
                error="must be in an HS chapter, 01 to 97 (77 is reserved)",
            ),
        ],
        "net_mass_kg": [
            pa.Check(
                lambda mass: mass <= limits.max_net_mass_kg,
                name="mass_physically_possible",
                error=f"must be at most {limits.max_net_mass_kg:,.0f} kg (validate.max_net_mass_kg)",
            ),
        ],
    }
    for field in [f for f in STRING_FIELDS if f not in CODE_FIELDS]:
        # "QLRUBN9 " would silently be a new importer with no history; blank is not_blank's finding
        added[field] = [
            pa.Check(
                lambda values: (values == values.str.strip()) | (values.str.strip() == ""),
                name="no_surrounding_spaces",
                error="must not start or end with spaces",
            )
        ]
    return schema.update_columns(  # a copy: LABELLED keeps its checks
        {field: {"checks": schema.columns[field].checks + checks} for field, checks in added.items()}
    )


def _typed(records: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[int, str, str, str]]]:
    """Parse strings, numbers and dates field by field, so that one unparseable value fails
    its own row and field instead of leaving the whole column untyped."""
    typed = records.copy()
    for field in sorted(OPTIONAL_FIELDS - set(typed.columns)):
        typed[field] = None
    failures = []
    for field in typed.columns:
        values = typed[field]
        present = values.notna()
        if field in NUMERIC_FIELDS or field in LABEL_FIELDS or field == RECOVERED_DUTY:
            parsed = _parse_numbers(values)
            check = IS_A_NUMBER
        elif field in ("declaration_date", INSPECTED_ON):
            parsed = _parse_dates(values)
            check = IS_A_DATE
        else:
            parsed = values.map(str, na_action="ignore").astype("str")
            parsed = parsed.where(present, None)
            check = None
        if check:
            broken = present & parsed.isna()
            failures.extend((int(i), field, *check) for i in broken[broken].index)
        if check is IS_A_DATE:
            outside = parsed.notna() & ~parsed.between(pd.Timestamp(EARLIEST_DATE), pd.Timestamp(LATEST_DATE))
            failures.extend((int(i), field, *DATE_IN_RANGE) for i in outside[outside].index)
            parsed = parsed.where(~outside)  # as NaT it passes the nanosecond dtype; its failure stays
        typed[field] = parsed
    return typed, failures


def _parse_numbers(values: pd.Series) -> pd.Series:
    """Numbers as float64, NaN where a value is not a number. A JSON integer too large for a
    float becomes +-inf, which the `finite` check then reports, instead of an OverflowError or,
    just past the largest float, silently rounding down to it."""
    try:
        parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    except OverflowError:
        return values.map(_parse_number).astype("float64")
    if values.dtype == object:
        past = values.map(_past_float_range).astype(bool)
        parsed[past] = values[past].map(_parse_number).astype("float64")
    return parsed


# The largest number as the OpenAPI document writes it (1.7976931348623157e+308), read as a
# decimal: an integer past it is out of range even where it would round down to the largest float.
LARGEST_INTEGER = int(decimal.Decimal(repr(sys.float_info.max)))


def _past_float_range(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > LARGEST_INTEGER


def _parse_number(value) -> float:
    if _past_float_range(value):
        return math.inf if value > 0 else -math.inf
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _parse_dates(values: pd.Series) -> pd.Series:
    """Dates already typed pass; text must be exactly YYYY-MM-DD."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    text = values.map(str, na_action="ignore").astype("str")
    well_formed = text.str.fullmatch(ISO_DATE).fillna(False).astype(bool)
    return pd.to_datetime(text.where(well_formed), format="%Y-%m-%d", errors="coerce")


def _describe(schema: pa.DataFrameSchema, case) -> tuple[str, str, str | None]:
    """(field, check name, message) of one pandera failure case."""
    if case.check_number is None or pd.isna(case.check_number):
        name, message = BUILT_IN_CHECKS.get(str(case.check), (str(case.check), f"failed check {case.check}"))
        field = str(case.failure_case) if case.schema_context == "DataFrameSchema" else str(case.column)
        return field, name, message
    if case.schema_context == "Column":
        check = schema.columns[case.column].checks[int(case.check_number)]
        return str(case.column), check.name, check.error
    check = schema.checks[int(case.check_number)]
    return _DATAFRAME_CHECK_FIELDS.get(check.name, str(case.column)), check.name, check.error


FAILURE_COLUMNS = ["index", "field", "check", "message"]


class Declarations(Mapping):
    """Typed declarations as numpy columns by field name, as a typed frame's `to_numpy()` gives
    them (float64 numbers, datetime64[ns] dates, object strings with NaN where missing): what
    scoring reads. For one declaration, building a frame and reading its columns back would cost
    more than scoring it, so a frame is made only where one is needed (`frame()`)."""

    def __init__(self, columns: dict[str, np.ndarray]):
        self._columns = columns

    @classmethod
    def of(cls, records: pd.DataFrame | Declarations) -> Declarations:
        """The columns of a typed frame (`check_declarations`' `valid`), or the declarations as they are."""
        if isinstance(records, Declarations):
            return records
        return cls({str(name): records[name].to_numpy() for name in records.columns})

    def __getitem__(self, name: str) -> np.ndarray:
        return self._columns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        """The number of fields, as for any mapping; `rows` is the number of declarations."""
        return len(self._columns)

    @property
    def rows(self) -> int:
        return len(next(iter(self._columns.values()))) if self._columns else 0

    def take(self, positions) -> Declarations:
        return Declarations({name: column[positions] for name, column in self._columns.items()})

    def frame(self, index=None) -> pd.DataFrame:
        """In canonical dtypes, as `check_declarations` types them (strings as the "str" dtype)."""
        return pd.DataFrame(
            {name: pd.array(c, dtype=_TEXT) if c.dtype == object else c for name, c in self._columns.items()},
            index=index,
            copy=False,
        )


@dataclass(frozen=True)
class Checked:
    """What `check_declarations` found in a batch of records."""

    valid: pd.DataFrame  # the rows that passed every check, canonical dtypes, indexed by position
    failures: pd.DataFrame  # one row per failed check: FAILURE_COLUMNS, index the row's position

    @property
    def passed(self) -> bool:
        return self.failures.empty

    @cached_property
    def declarations(self) -> Declarations:
        return Declarations.of(self.valid)


@dataclass(frozen=True)
class CheckedRequests:
    """What `check_requests` found: `Checked`'s two frames, made when first read, and the valid
    rows as `Declarations`, which is what scoring reads without them."""

    declarations: Declarations  # the rows that passed every check, in order
    positions: np.ndarray | None  # their positions in the batch; None when every row passed
    failure_rows: list[tuple]  # (index, field, check, message), by index then field

    @property
    def passed(self) -> bool:
        return not self.failure_rows

    @cached_property
    def valid(self) -> pd.DataFrame:
        return self.declarations.frame(index=self.positions)

    @cached_property
    def failures(self) -> pd.DataFrame:
        return pd.DataFrame(self.failure_rows, columns=FAILURE_COLUMNS)


def check_declarations(records: pd.DataFrame, rules: Rules) -> Checked:
    """The records that pass `rules`, in canonical dtypes (strings, datetime64 dates, float
    numbers, nullable Int8 labels), and every failed check of the others, from one parse and one pandera
    pass. Rows are named by their position in `records`, whatever its index.

    Column-level problems (a missing or extra field) are reported against every row, because
    each row then lacks or carries that field.
    """
    records = records.reset_index(drop=True)
    for detail in rules.details:  # what a source never reports is unknown, not missing
        if detail not in records.columns:
            records = records.assign(**{detail: None})
    typed, rows = _typed(records)
    unparsed = {(i, field) for i, field, _, _ in rows}
    try:
        coerced = rules.schema.validate(typed, lazy=True)
    except SchemaErrors as err:
        coerced, cases = err.data, err.failure_cases
    else:
        cases = pd.DataFrame(columns=["schema_context", "column", "check", "check_number", "failure_case", "index"])
    for case in cases.itertuples(index=False):
        field, check, message = _describe(rules.schema, case)
        if case.index is None or pd.isna(case.index):
            rows.extend((i, field, check, message) for i in range(len(typed)))
        elif (int(case.index), field) not in unparsed:
            rows.append((int(case.index), field, check, message))
    failures = pd.DataFrame(rows, columns=FAILURE_COLUMNS)
    failures = failures.drop_duplicates().sort_values(["index", "field"], kind="stable").reset_index(drop=True)
    return Checked(_canonical(coerced.drop(index=failures["index"].unique()), rules), failures)


def _canonical(coerced: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    if not set(rules.fields) <= set(coerced.columns):  # a field is missing, so every row failed
        coerced = rules.schema.coerce_dtype(pd.DataFrame(columns=rules.fields, dtype="str"))
    typed = coerced[rules.fields].copy()
    typed["declaration_date"] = typed["declaration_date"].astype("datetime64[ns]")
    if rules.labels:  # nullable: pd.NA where not inspected, as to_numpy() gives NaN
        typed[list(rules.labels)] = typed[list(rules.labels)].astype("Int8")
    if rules.details:
        typed[INSPECTED_ON] = typed[INSPECTED_ON].astype("datetime64[ns]")
        typed[RECOVERED_DUTY] = typed[RECOVERED_DUTY].astype("float64")
    return typed


def check_requests(records: pd.DataFrame | list[dict]) -> Checked | CheckedRequests:
    """`check_declarations(records, RECORD)` for what is sent for scoring, without a pandera pass,
    which costs tens of milliseconds a call whatever the batch's size: the same rules
    (RECORD_RULES, the built-in checks, the same parsing), one value at a time, and the same
    result. A batch with a field the record does not have is refused whatever else it holds, and
    values a client's JSON or a typed frame cannot hold (numbers written as text, numpy integers)
    are rare: both are left to `check_declarations` itself, so that its parsing, not a copy of it,
    decides them.

    `records` is a frame or the JSON objects a client sent, which are checked as their frame
    would be without making it (a text field holding anything but a string takes the frame's
    path, where pandas may have turned the value into another)."""
    if not isinstance(records, pd.DataFrame) and not _all_text(records):
        return check_requests(pd.DataFrame(records))
    sent = sent_columns(records)
    if not set(sent) <= _FIELDS:
        return check_declarations(pd.DataFrame(records), RECORD)
    count = len(records)
    rows = range(count)
    typed_dates = (
        isinstance(records, pd.DataFrame)
        and "declaration_date" in sent
        and (pd.api.types.is_datetime64_any_dtype(records["declaration_date"]))
    )
    failures, columns = [], {}
    for field in DECLARATION_FIELDS:
        if field not in sent:
            if field not in OPTIONAL_FIELDS:
                failures.extend((i, field, *_REQUIRED) for i in rows)
            values = [None] * count
        else:
            values = _checked_values(field, sent[field], typed_dates, failures)
            if values is None:
                return check_declarations(pd.DataFrame(records), RECORD)
        columns[field] = values
    failures.sort(key=lambda failure: (failure[0], failure[1]))  # stable: rule order within a field
    typed = Declarations({field: _typed_column(field, values) for field, values in columns.items()})
    if not failures:
        return CheckedRequests(typed, None, failures)
    positions = np.setdiff1d(np.arange(count), [failure[0] for failure in failures])
    return CheckedRequests(typed.take(positions), positions, failures)


def sent_columns(records: pd.DataFrame | list[dict]) -> dict[str, list]:
    """Each field's values as given, by name: a frame in one conversion (reading its columns one
    by one costs more than checking them), JSON objects transposed (None where a key is absent)."""
    if isinstance(records, pd.DataFrame):
        return dict(zip(records.columns, records.to_numpy(dtype=object).T.tolist()))
    names = dict.fromkeys(name for record in records for name in record)
    return {name: [record.get(name) for record in records] for name in names}


def _all_text(records: list[dict]) -> bool:
    return all(
        value is None or isinstance(value, str)
        for record in records
        for name, value in record.items()
        if name in _TEXT_FIELDS
    )


_FIELDS = frozenset(DECLARATION_FIELDS)
_TEXT_FIELDS = frozenset([*STRING_FIELDS, "declaration_date"])
_REQUIRED = BUILT_IN_CHECKS["not_nullable"]
_EARLIEST, _LATEST = np.datetime64(EARLIEST_DATE, "D"), np.datetime64(LATEST_DATE, "D")


def _checked_values(field: str, sent: list, typed_dates: bool, failures: list) -> list | None:
    """A field's values parsed (None where missing or failed), their failures appended; None when
    a value is of a kind only `check_declarations` parses. `typed_dates`: the frame's dates are
    datetimes already, not text."""
    required, rules = field not in OPTIONAL_FIELDS, RULES_BY_FIELD[field]
    numeric, date = field in NUMERIC_FIELDS, field == "declaration_date"
    failed_rules: dict = {}  # (name, message) of the rules a value fails, by value: a batch repeats its codes
    values = []
    for i, value in enumerate(sent):
        if _missing(value):
            if required:
                failures.append((i, field, *_REQUIRED))
            values.append(None)
            continue
        if numeric:
            if not isinstance(value, (int, float)):
                return None
            value = _parse_number(value)
        elif date:
            failure, value = (None, value.to_datetime64()) if typed_dates else _parse_date(str(value))
            if failure is None and not _EARLIEST <= value <= _LATEST:
                failure = DATE_IN_RANGE
            if failure is not None:
                failures.append((i, field, *failure))
                values.append(None)
                continue
        else:
            value = str(value)
        failed = failed_rules.get(value)
        if failed is None:
            failed = failed_rules[value] = [(rule.name, rule.message) for rule in rules if not rule.test.value(value)]
        if failed:
            failures.extend((i, field, *found) for found in failed)
        values.append(value)
    return values


def _missing(value) -> bool:
    """What pandas counts as missing in a column (None, NaN, NaT, pd.NA), the common kinds first."""
    if value is None:
        return True
    if isinstance(value, str):
        return False
    if isinstance(value, float):
        return value != value
    return pd.api.types.is_scalar(value) and pd.isna(value)


@lru_cache(maxsize=4096)  # a batch's declarations share a few days
def _parse_date(text: str) -> tuple[tuple[str, str] | None, np.datetime64 | None]:
    """As `_parse_dates` reads text: exactly YYYY-MM-DD, and a day of the calendar."""
    if not re.fullmatch(ISO_DATE, text):
        return IS_A_DATE, None
    try:  # pandas, unlike Python, takes the year 0, a leap year as 2000 is
        dt.date.fromisoformat(f"2000{text[4:]}" if text.startswith("0000") else text)
    except ValueError:
        return IS_A_DATE, None
    return None, np.datetime64(text, "D")


def _typed_column(field: str, values: list):
    if field in NUMERIC_FIELDS:
        return np.array([math.nan if v is None else v for v in values], dtype="float64")
    if field == "declaration_date":
        return np.array([np.datetime64("NaT") if v is None else v for v in values], dtype="datetime64[ns]")
    return np.array([math.nan if v is None else v for v in values], dtype=object)


_TEXT = pd.StringDtype(na_value=np.nan)  # the "str" dtype, resolved once
