"""Partner alerts and watch lists (docs/alerts.md, CONTRACT section 5): what an alert is, the file
that carries it, and which declarations it matches. Reading and writing the center's store, the
partner keys and the export of findings are the exchange, in serving.alert_exchange; what a match
does to a lane is the decision's, in serving.decide.

- `parse_alerts`: a JSON Lines alert file checked line by line; every problem is reported with its
  line number and field, and a file with any problem yields no alert.
- `AlertIndex`: alerts as dictionaries keyed by (target, value), plain and, per issuer with a
  key, hashed, so a declaration costs one lookup per identifier whatever the number of alerts.

Partner keys are bytes held in memory only: no message or log line written here contains one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.schema import COUNTRY_CODES, Declarations, is_container_number
from models.lanes import RAISED_LANES, SEVERITY
from serving.settings import CENTER_CODE

FIELDS = ("alert_id", "issued_by", "issued_on", "valid_until", "target", "value", "lane", "reason", "hashed")
PAIR_TARGET = "hs6_code+origin_country"
TARGETS = ("importer_id", "declarant_id", "seller_id", "container_number", "bill_of_lading", PAIR_TARGET)
ISO_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
HEX_DIGEST = r"[0-9a-f]{64}"
PAIR_VALUE = r"[0-9]{6}\|[A-Z]{2}"
MAX_ID = 128  # alert_id
MAX_VALUE = 64  # identifiers are at most 64 characters in the declaration schema
MAX_REASON = 1000


class AlertFileError(ValueError):
    """An alert file with problems: nothing of it is imported."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s):\n" + "\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Problem:
    line: int  # from 1
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


@dataclass(frozen=True)
class Alert:
    alert_id: str
    issued_by: str
    issued_on: str  # YYYY-MM-DD
    valid_until: str  # YYYY-MM-DD, after issued_on
    target: str
    value: str
    lane: str
    reason: str
    hashed: bool

    def as_record(self) -> dict:
        """The alert as a line of an alert file, fields in the contract's order."""
        return {name: getattr(self, name) for name in FIELDS}

    def active_on(self, day: str) -> bool:
        return self.issued_on <= day <= self.valid_until


def digest(key: bytes, identifier: str) -> str:
    """The lowercase hex HMAC-SHA256 of an identifier's UTF-8 bytes, as a hashed alert holds it."""
    return hmac.new(key, identifier.encode("utf-8"), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------------------------
# the alert file


def parse_day(value) -> dt.date | None:
    """A date written YYYY-MM-DD, or None for anything else (the file's dates, the store's)."""
    if not isinstance(value, str) or not re.fullmatch(ISO_DATE, value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def _text_problem(value, limit: int) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty string"
    if value != value.strip():
        return "must not start or end with spaces"
    if len(value) > limit:
        return f"must be at most {limit} characters"
    if any(ord(c) < 32 for c in value):
        return "must not hold control characters (line breaks, tabs)"
    return None


def _value_problem(target, value, hashed) -> str | None:
    """The value's problem, given a known target and a boolean `hashed`; never echoes the value."""
    problem = _text_problem(value, MAX_VALUE)
    if problem:
        return problem
    if hashed:
        if not re.fullmatch(HEX_DIGEST, value):
            return "a hashed value must be the HMAC-SHA256: exactly 64 lowercase hex characters"
        return None
    if target == PAIR_TARGET:
        if not re.fullmatch(PAIR_VALUE, value):
            return "must be the HS6 code and the origin country joined by |, such as 440890|BE"
        if value[-2:] not in COUNTRY_CODES:
            return "the origin is not an ISO 3166-1 alpha-2 country code (or ZZ, unknown)"
    if target == "container_number" and not is_container_number(value):
        return "must be an ISO 6346 container number with its check digit, such as MSCU1234565"
    return None


def line_problems(number: int, line: str, keys: Mapping[str, bytes]) -> tuple[Alert | None, list[Problem]]:
    """One line of an alert file: its alert, or every problem found in it."""

    def problem(field: str, message: str) -> Problem:
        return Problem(number, field, message)

    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return None, [problem("json", f"not valid JSON ({err.msg} at column {err.colno})")]
    if not isinstance(record, dict):
        return None, [problem("json", "expected one JSON object (an alert) on the line")]
    problems = [problem(str(key), "unknown field") for key in record if key not in FIELDS]
    problems += [problem(field, "is required") for field in FIELDS if field not in record]
    get = record.get
    if "alert_id" in record and (message := _text_problem(get("alert_id"), MAX_ID)):
        problems.append(problem("alert_id", message))
    issued_by = get("issued_by")
    if "issued_by" in record and (not isinstance(issued_by, str) or not re.fullmatch(CENTER_CODE, issued_by)):
        problems.append(
            problem("issued_by", "must be a partner code: 2 to 16 capital letters, digits, - or _, such as KZ")
        )
    dates: dict[str, dt.date | None] = {}
    for field in ("issued_on", "valid_until"):
        if field in record:
            dates[field] = parse_day(get(field))
            if dates[field] is None:
                problems.append(problem(field, "must be a date YYYY-MM-DD"))
    issued_on, valid_until = dates.get("issued_on"), dates.get("valid_until")
    if issued_on and valid_until and valid_until <= issued_on:
        problems.append(problem("valid_until", "must be after issued_on"))
    target_known = get("target") in TARGETS
    if "target" in record and not target_known:
        problems.append(problem("target", f"must be one of {', '.join(TARGETS)}"))
    if "lane" in record and get("lane") not in RAISED_LANES:
        problems.append(problem("lane", f"must be one of {', '.join(RAISED_LANES)}"))
    if "reason" in record and (message := _text_problem(get("reason"), MAX_REASON)):
        problems.append(problem("reason", message))
    hashed = get("hashed")
    if "hashed" in record and not isinstance(hashed, bool):
        problems.append(problem("hashed", "must be true or false"))
    elif hashed is True and isinstance(get("issued_by"), str) and get("issued_by") not in keys:
        problems.append(problem("hashed", f"no key for issuer {get('issued_by')!r} in RISK_PARTNER_KEYS"))
    if "value" in record and target_known and isinstance(hashed, bool):
        if message := _value_problem(get("target"), get("value"), hashed):
            problems.append(problem("value", message))
    elif "value" in record and (message := _text_problem(get("value"), MAX_VALUE)):
        problems.append(problem("value", message))
    if problems:
        return None, problems
    return Alert(**{field: record[field] for field in FIELDS}), []


def parse_alerts(text: str, keys: Mapping[str, bytes]) -> list[Alert]:
    """The alerts of a JSON Lines file (blank lines are skipped); raises AlertFileError with every
    problem of every line when any line is invalid, so a file is taken whole or not at all."""
    alerts: list[Alert] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        alert, found = line_problems(number, line, keys)
        problems += found
        if alert is None:
            continue
        if alert.alert_id in seen:
            problems.append(Problem(number, "alert_id", f"{alert.alert_id!r} is also on line {seen[alert.alert_id]}"))
            continue
        seen[alert.alert_id] = number
        alerts.append(alert)
    if problems:
        raise AlertFileError(problems)
    return alerts


def read_alert_file(path: Path, keys: Mapping[str, bytes]) -> list[Alert]:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        line = Path(path).read_bytes()[: err.start].count(b"\n") + 1
        raise AlertFileError([Problem(line, "json", "not UTF-8 text")]) from None
    return parse_alerts(text, keys)


# ---------------------------------------------------------------------------------------------
# matching


def declaration_identifiers(declarations: Declarations) -> tuple[list[dict[str, str]], list[str | None]]:
    """Per declaration, its identifiers by alert target (those declared), and its date
    YYYY-MM-DD, for typed declarations (`models.bundle.validated_declarations`)."""
    rows = declarations.rows

    def column(name: str) -> list:
        if name not in declarations:
            return [None] * rows
        return [None if not isinstance(v, str) and pd.isna(v) else str(v) for v in declarations[name].tolist()]

    if "declaration_date" in declarations:
        days = np.datetime_as_string(declarations["declaration_date"].astype("datetime64[D]"))
        dates = [None if day == "NaT" else str(day) for day in days.tolist()]
    else:
        dates = [None] * rows
    plain = {target: column(target) for target in TARGETS if target != PAIR_TARGET}
    hs6, origin = column("hs6_code"), column("origin_country")
    plain[PAIR_TARGET] = [f"{h}|{o}" if h is not None and o is not None else None for h, o in zip(hs6, origin)]
    identifiers = [
        {target: values[row] for target, values in plain.items() if values[row] is not None} for row in range(rows)
    ]
    return identifiers, dates


class AlertIndex:
    """Alerts keyed by (target, value): `plain` for plain values, and per issuer with a key,
    `hashed[issuer] = (key, {(target, digest): alerts})`. Matching a declaration is one lookup per
    identifier (and per issuer with hashed alerts), never a scan of the alerts. Every stored alert
    is indexed: whether it is active depends on each declaration's date."""

    def __init__(self, alerts: Iterable[Alert], keys: Mapping[str, bytes]):
        plain: dict[tuple[str, str], list[Alert]] = {}
        hashed: dict[str, dict[tuple[str, str], list[Alert]]] = {}
        self.count = 0
        self.without_key: set[str] = set()  # issuers of hashed alerts no key is configured for
        for alert in alerts:
            self.count += 1
            if not alert.hashed:
                plain.setdefault((alert.target, alert.value), []).append(alert)
            elif alert.issued_by in keys:
                hashed.setdefault(alert.issued_by, {}).setdefault((alert.target, alert.value), []).append(alert)
            else:
                self.without_key.add(alert.issued_by)
        self.plain = {k: tuple(v) for k, v in plain.items()}
        self.hashed = {
            issuer: (keys[issuer], {k: tuple(v) for k, v in table.items()}) for issuer, table in hashed.items()
        }
        self.lookups = 0  # dictionary lookups made by `matching`, for tests and benchmarks

    def __len__(self) -> int:
        return self.count

    def matching(self, identifiers: Mapping[str, str], day: str | None) -> list[Alert]:
        """The alerts active on `day` whose target and value the declaration's identifiers match,
        strictest first, then by alert_id (independent of the order alerts were stored in)."""
        if day is None or not self.count:
            return []
        found: list[Alert] = []
        for target, value in identifiers.items():
            self.lookups += 1
            found += self.plain.get((target, value), ())
            for key, table in self.hashed.values():
                self.lookups += 1
                found += table.get((target, digest(key, value)), ())
        fired = {a.alert_id: a for a in found if a.active_on(day)}
        return sorted(fired.values(), key=lambda a: (-SEVERITY[a.lane], a.alert_id))

    def fired(self, declarations: Declarations) -> dict[int, list[Alert]]:
        """The alerts each declaration matches (`matching`), by its row, for the rows with any:
        usually none, so the caller has nothing to change."""
        if not self.count:
            return {}
        identifiers, dates = declaration_identifiers(declarations)
        return {
            row: found for row, (held, day) in enumerate(zip(identifiers, dates)) if (found := self.matching(held, day))
        }

    def active_by_issuer(self, day: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        tables = [self.plain, *(table for _, table in self.hashed.values())]
        for table in tables:
            for alerts in table.values():
                for alert in alerts:
                    if alert.active_on(day):
                        counts[alert.issued_by] = counts.get(alert.issued_by, 0) + 1
        return dict(sorted(counts.items()))


EMPTY_INDEX = AlertIndex((), {})
