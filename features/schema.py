"""Records checked against the record's rules (features.record) with pandera.

Two entry points with one result, the rows that pass, in canonical dtypes, and every failed
check: `check_declarations(records, rules)`, one pandera pass, for history; `check_requests(records)`
for what is sent for scoring, by the online checker (features.online) wherever it can decide,
since a pandera pass would cost more than the scoring. What a record is held to is one `Rules`
value, three layers of features.record's rules, each check named for the rule it enforces and
carrying its message:
- `RECORD`: the contract's record (RECORD_RULES). The scoring service and the validate stage
  share it, so a record the service rejects is one the pipeline would never train on.
- `LABELLED`: adds what history says of each declaration's inspection (the labels, null
  together where nobody inspected it; when the outcome became known; the duty assessed) and
  their consistency (OUTCOME_RULES, CONSISTENCY_RULES).
- `history_rules(limits)`: adds to `LABELLED` what only a history can be held to, with limits
  from params.yaml (`history_limit_rules`).

The record's column names, and the few other names of it that modules imported from here before
features.record existed, are importable from here too (`__all__`); new code imports
features.record.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from features.online import CheckedRequests, Declarations, check_online
from features.record import (
    BOUNDED_FIELDS,
    BUILT_IN_CHECKS,
    CODE,
    CODE_FIELDS,
    CONSISTENCY_RULES,
    COUNTRY_CODES,
    DATE,
    DATE_IN_RANGE,
    DECLARATION,
    DECLARATION_FIELDS,
    EARLIEST_DATE,
    FAILURE_COLUMNS,
    FIELDS,
    HS_CHAPTERS,
    IDENTIFIER,
    INSPECTED_ON,
    IS_A_DATE,
    IS_A_NUMBER,
    ISO_DATE,
    LABEL,
    LABEL_FIELDS,
    LABELLED_FIELDS,
    LATEST_DATE,
    NUMBER,
    NUMERIC_FIELDS,
    OPTIONAL_FIELDS,
    OUTCOME,
    OUTCOME_DETAILS,
    OUTCOME_RULES,
    RECORD_RULES,
    RECOVERED_DUTY,
    STRING_FIELDS,
    UNKNOWN_COUNTRY,
    Field,
    HistoryRules,
    RowRule,
    ValueRule,
    history_limit_rules,
    is_container_number,
    iso6346_check_digit,
    parse_number,
    past_float_range,
)

__all__ = [
    "BOUNDED_FIELDS",
    "CODE_FIELDS",
    "COUNTRY_CODES",
    "DECLARATION_FIELDS",
    "HS_CHAPTERS",
    "INSPECTED_ON",
    "LABELLED",
    "LABELLED_FIELDS",
    "LABEL_FIELDS",
    "NUMERIC_FIELDS",
    "OPTIONAL_FIELDS",
    "OUTCOME_DETAILS",
    "RECORD",
    "RECOVERED_DUTY",
    "STRING_FIELDS",
    "UNKNOWN_COUNTRY",
    "Checked",
    "Declarations",
    "HistoryRules",
    "Rules",
    "check_declarations",
    "check_requests",
    "history_rules",
    "is_container_number",
    "iso6346_check_digit",
]


@dataclass(frozen=True, eq=False)
class Rules:
    """What a record is held to: its fields, in a valid row's order, and the rules on them. The
    pandera schema is built when first used: building one imports pandera's Dask typing (half a
    second at every start, and memory), which the service, checking requests online, never uses."""

    record: tuple[Field, ...]
    value_rules: tuple[ValueRule, ...]
    row_rules: tuple[RowRule, ...] = ()

    @cached_property
    def schema(self) -> pa.DataFrameSchema:
        columns = {
            field.name: pa.Column(
                _PANDERA_TYPES[field.kind],
                checks=[
                    pa.Check(rule.test.column, name=rule.name, error=rule.message)
                    for rule in self.value_rules
                    if field.name in rule.fields
                ],
                nullable=not field.required,
            )
            for field in self.record
        }
        checks = [
            pa.Check(_row_check(rule, self.fields), name=rule.name, error=rule.message) for rule in self.row_rules
        ]
        return pa.DataFrameSchema(columns, checks=checks, strict=True, coerce=True, ordered=False)

    @property
    def fields(self) -> list[str]:
        """A valid row's columns, in order."""
        return [field.name for field in self.record]

    @property
    def labels(self) -> tuple[str, ...]:
        """0 or 1, null where the declaration was not inspected."""
        return tuple(field.name for field in self.record if field.kind == LABEL)

    @property
    def details(self) -> tuple[str, ...]:
        """What an outcome may say beside the labels, null where a source does not report it."""
        return tuple(field.name for field in self.record if field.name in OUTCOME_DETAILS)


_PANDERA_TYPES = {IDENTIFIER: str, CODE: str, DATE: pa.DateTime, NUMBER: float, LABEL: float}
# A valid row's dtypes where pandera's differ: nanosecond dates whatever the input's unit, and
# labels that keep null for "not inspected" (pd.NA; to_numpy() gives NaN, or int8 without one).
_CANONICAL_TYPES = {DATE: "datetime64[ns]", NUMBER: "float64", LABEL: "Int8"}


def _row_check(rule: RowRule, fields: list[str]):
    def passes(rows: pd.DataFrame) -> pd.Series:
        if not set(fields) <= set(rows.columns):  # a missing field fails every row as required already
            return pd.Series(True, index=rows.index)
        return ~rule.broken(rows)

    return passes


RECORD = Rules(DECLARATION, RECORD_RULES)  # what is sent for scoring
LABELLED = Rules(DECLARATION + OUTCOME, RECORD_RULES + OUTCOME_RULES, CONSISTENCY_RULES)  # history, without limits


def history_rules(limits: HistoryRules) -> Rules:
    """`LABELLED` and the checks only a history is held to."""
    return Rules(LABELLED.record, LABELLED.value_rules + history_limit_rules(limits), LABELLED.row_rules)


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


def check_declarations(records: pd.DataFrame, rules: Rules) -> Checked:
    """The records that pass `rules`, in canonical dtypes (strings, datetime64 dates, float
    numbers, nullable Int8 labels), and every failed check of the others, from one parse and one
    pandera pass. Rows are named by their position in `records`, whatever its index.

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
        field, check, message = _describe(rules, case)
        if case.index is None or pd.isna(case.index):
            rows.extend((i, field, check, message) for i in range(len(typed)))
        elif (int(case.index), field) not in unparsed:
            rows.append((int(case.index), field, check, message))
    failures = pd.DataFrame(rows, columns=FAILURE_COLUMNS)
    failures = failures.drop_duplicates().sort_values(["index", "field"], kind="stable").reset_index(drop=True)
    return Checked(_canonical(coerced.drop(index=failures["index"].unique()), rules), failures)


def check_requests(records: pd.DataFrame | list[dict]) -> Checked | CheckedRequests:
    """`check_declarations(records, RECORD)` for what is sent for scoring: the online checker's
    answer, the same rules one value at a time, wherever it can give one; where it leaves a
    batch to pandera's parsing, the pandera pass itself, not a copy of it, decides."""
    checked = check_online(records)
    return checked if checked is not None else check_declarations(pd.DataFrame(records), RECORD)


def _typed(records: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[int, str, str, str]]]:
    """Parse strings, numbers and dates field by field, so that one unparseable value fails
    its own row and field instead of leaving the whole column untyped. A field the record does
    not have is parsed as text, for pandera to refuse."""
    typed = records.copy()
    for field in sorted(OPTIONAL_FIELDS - set(typed.columns)):
        typed[field] = None
    failures: list[tuple[int, str, str, str]] = []
    for field in typed.columns:
        values = typed[field]
        present = values.notna()
        kind = FIELDS[field].kind if field in FIELDS else IDENTIFIER
        if kind in (NUMBER, LABEL):
            parsed = _parse_numbers(values)
            check = IS_A_NUMBER
        elif kind == DATE:
            parsed = _parse_dates(values)
            check = IS_A_DATE
        else:
            parsed = values.map(str, na_action="ignore").astype("str")
            parsed = parsed.where(present, None)
            check = None
        if check:
            broken = present & parsed.isna()
            failures.extend((int(i), field, *check) for i in broken[broken].index)
        if kind == DATE:
            outside = parsed.notna() & ~parsed.between(pd.Timestamp(EARLIEST_DATE), pd.Timestamp(LATEST_DATE))
            failures.extend((int(i), field, *DATE_IN_RANGE) for i in outside[outside].index)
            parsed = parsed.where(~outside)  # as NaT it passes the nanosecond dtype; its failure stays
        typed[field] = parsed
    return typed, failures


def _parse_numbers(values: pd.Series) -> pd.Series:
    """Numbers as float64, NaN where a value is not a number, as `parse_number` reads one value
    (an integer past the largest float is +-inf)."""
    try:
        parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    except OverflowError:
        return values.map(parse_number).astype("float64")
    if values.dtype == object:
        past = values.map(past_float_range).astype(bool)
        parsed[past] = values[past].map(parse_number).astype("float64")
    return parsed


def _parse_dates(values: pd.Series) -> pd.Series:
    """Dates already typed pass; text must be exactly YYYY-MM-DD."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    text = values.map(str, na_action="ignore").astype("str")
    well_formed = text.str.fullmatch(ISO_DATE).fillna(False).astype(bool)
    return pd.to_datetime(text.where(well_formed), format="%Y-%m-%d", errors="coerce")


def _describe(rules: Rules, case) -> tuple[str, str, str]:
    """(field, check name, message) of one pandera failure case."""
    if case.check_number is None or pd.isna(case.check_number):
        name, message = BUILT_IN_CHECKS.get(str(case.check), (str(case.check), f"failed check {case.check}"))
        field = str(case.failure_case) if case.schema_context == "DataFrameSchema" else str(case.column)
        return field, name, message
    if case.schema_context == "Column":
        check = rules.schema.columns[case.column].checks[int(case.check_number)]
        return str(case.column), check.name, str(check.error)
    rule = rules.row_rules[int(case.check_number)]
    return rule.field, rule.name, rule.message


def _canonical(coerced: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    if not set(rules.fields) <= set(coerced.columns):  # a field is missing, so every row failed
        coerced = rules.schema.coerce_dtype(pd.DataFrame(columns=rules.fields, dtype="str"))
    typed = coerced[rules.fields].copy()
    for field in rules.record:
        if field.kind in _CANONICAL_TYPES:
            typed[field.name] = typed[field.name].astype(_CANONICAL_TYPES[field.kind])
    return typed
