"""What is sent for scoring, checked one value at a time, and the typed columns scoring reads.

A pandera pass (features.schema) costs tens of milliseconds a call whatever the batch's size,
more than scoring one declaration. `check_online` holds a batch to the same record rules
(features.record: RECORD_RULES, the built-in checks, the same parsing) one value at a time, with
the same result, and leaves to pandera only what a client's JSON or a typed frame rarely holds;
`features.schema.check_requests` is the entry point that chooses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from features.record import (
    DATE_IN_RANGE,
    DECLARATION_FIELDS,
    FAILURE_COLUMNS,
    NUMERIC_FIELDS,
    OPTIONAL_FIELDS,
    REQUIRED,
    RULES_BY_FIELD,
    STRING_FIELDS,
    in_date_range,
    parse_date,
    parse_number,
)

_TEXT = pd.StringDtype(na_value=np.nan)  # the "str" dtype, resolved once


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
class CheckedRequests:
    """What `check_online` found: the two frames of `features.schema.Checked`, made when first
    read, and the valid rows as `Declarations`, which is what scoring reads without them."""

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


def check_online(records: pd.DataFrame | list[dict]) -> CheckedRequests | None:
    """The batch checked against the record's rules one value at a time, or None where only
    `check_declarations`' parsing may decide: a field the record does not have (the batch is
    refused whatever else it holds, and pandera says so), or a value a client's JSON or a typed
    frame rarely holds (a number written as text, a numpy integer).

    `records` is a frame or the JSON objects a client sent, which are checked as their frame
    would be without making it (a text field holding anything but a string takes the frame's
    path, where pandas may have turned the value into another)."""
    if not isinstance(records, pd.DataFrame) and not _all_text(records):
        return check_online(pd.DataFrame(records))
    sent = sent_columns(records)
    if not set(sent) <= _FIELDS:
        return None
    count = len(records)
    rows = range(count)
    typed_dates = (
        isinstance(records, pd.DataFrame)
        and "declaration_date" in sent
        and (pd.api.types.is_datetime64_any_dtype(records["declaration_date"]))
    )
    failures: list[tuple] = []
    columns: dict[str, list] = {}
    for field in DECLARATION_FIELDS:
        if field in sent:
            values = _checked_values(field, sent[field], typed_dates, failures)
            if values is None:
                return None
            columns[field] = values
        else:
            if field not in OPTIONAL_FIELDS:
                failures.extend((i, field, *REQUIRED) for i in rows)
            columns[field] = [None] * count
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


def _checked_values(field: str, sent: list, typed_dates: bool, failures: list) -> list | None:
    """A field's values parsed (None where missing or failed), their failures appended; None when
    a value is of a kind only `check_declarations` parses. `typed_dates`: the frame's dates are
    datetimes already, not text."""
    required, rules = field not in OPTIONAL_FIELDS, RULES_BY_FIELD[field]
    numeric, date = field in NUMERIC_FIELDS, field == "declaration_date"
    failed_rules: dict = {}  # (name, message) of the rules a value fails, by value: a batch repeats its codes
    values: list = []
    for i, value in enumerate(sent):
        if _missing(value):
            if required:
                failures.append((i, field, *REQUIRED))
            values.append(None)
            continue
        if numeric:
            if not isinstance(value, (int, float)):
                return None
            value = parse_number(value)
        elif date:
            if typed_dates:
                value = value.to_datetime64()
                failure = None if in_date_range(value) else DATE_IN_RANGE
            else:
                failure, value = parse_date(str(value))
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


def _typed_column(field: str, values: list):
    if field in NUMERIC_FIELDS:
        return np.array([math.nan if v is None else v for v in values], dtype="float64")
    if field == "declaration_date":
        return np.array([np.datetime64("NaT") if v is None else v for v in values], dtype="datetime64[ns]")
    return np.array([math.nan if v is None else v for v in values], dtype=object)
