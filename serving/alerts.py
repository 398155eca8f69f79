"""Partner alerts and watch lists (docs/alerts.md, CONTRACT section 5).

- `parse_alerts`: a JSON Lines alert file checked line by line; every problem is reported with its
  line number and field, and a file with any problem yields no alert.
- `AlertStore`: the alerts in the center's store (the audit store's SQLite file, table `alerts`);
  an import is one transaction, and the same `alert_id` replaces the earlier alert.
- `AlertIndex`: the stored alerts as dictionaries keyed by (target, value), plain and, per issuer
  with a key, hashed, so a declaration costs one lookup per identifier whatever the number of
  alerts. `LiveAlerts` rebuilds it when the table changed, so an import reaches the service and
  the CLI without a restart.
- `apply_alerts`: after the analysts' rules, a matching active alert raises the lane to its own
  (never lowers it), and its reason comes first.
- `export_findings`: the center's confirmed findings (fraud or critical outcomes) as alerts.

Partner keys (`RISK_PARTNER_KEYS`, read in serving.settings) are bytes held in memory only:
no message, log line or file written here contains one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.schema import COUNTRY_CODES, is_container_number, sent_columns
from serving.audit import read_only
from serving.settings import CENTER_CODE

logger = logging.getLogger("customs_risk.alerts")

FIELDS = ("alert_id", "issued_by", "issued_on", "valid_until", "target", "value", "lane", "reason", "hashed")
PAIR_TARGET = "hs6_code+origin_country"
TARGETS = ("importer_id", "declarant_id", "seller_id", "container_number", "bill_of_lading", PAIR_TARGET)
LANES = ("yellow", "red")  # an alert adds scrutiny; it never releases
SEVERITY = {"green": 0, "yellow": 1, "red": 2}
ISO_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
HEX_DIGEST = r"[0-9a-f]{64}"
PAIR_VALUE = r"[0-9]{6}\|[A-Z]{2}"
MAX_ID = 128  # alert_id
MAX_VALUE = 64  # identifiers are at most 64 characters in the declaration schema
MAX_REASON = 1000
REASON_FEATURE = "alert"  # a reason's "feature" when an alert fired (a rule's is "risk_profile")
FINDINGS = ("fraud", "critical")  # outcomes exported as alerts
DEFAULT_VALID_DAYS = 180

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    issued_by TEXT NOT NULL,
    issued_on TEXT NOT NULL,
    valid_until TEXT NOT NULL,
    target TEXT NOT NULL,
    value TEXT NOT NULL,
    lane TEXT NOT NULL,
    reason TEXT NOT NULL,
    hashed INTEGER NOT NULL,
    imported_at TEXT NOT NULL,
    import_no INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_import ON alerts (import_no);
"""
# What tells a reader the table changed: a new import raises max(import_no) (a replaced alert is
# rewritten with the new number); the count catches rows deleted by hand. Both come from indexes.
STAMP = "SELECT count(*), max(import_no) FROM alerts"


class PartnerKeysError(ValueError):
    """RISK_PARTNER_KEYS cannot be used; the message names files and partners, never a key."""


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


# ---------------------------------------------------------------------------------------------
# partner keys


def load_partner_keys(path: Path | None) -> dict[str, bytes]:
    """Partner code -> key bytes from the RISK_PARTNER_KEYS file (None: no keys). Each key is its
    file's text, stripped, as UTF-8 bytes. Errors name the files, never a key's content."""
    if path is None:
        return {}
    try:
        mapping = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise PartnerKeysError(f"RISK_PARTNER_KEYS {path} cannot be read ({err.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PartnerKeysError(f"RISK_PARTNER_KEYS {path} is not a JSON object of partner code -> key file") from None
    if not isinstance(mapping, dict):
        raise PartnerKeysError(f"RISK_PARTNER_KEYS {path} is not a JSON object of partner code -> key file")
    keys = {}
    for partner, key_file in mapping.items():
        if not isinstance(key_file, str) or not key_file.strip():
            raise PartnerKeysError(f"RISK_PARTNER_KEYS {path}: partner {partner!r} must map to the path of a key file")
        key_path = Path(key_file)
        if not key_path.is_absolute():
            key_path = Path(path).parent / key_path  # relative to the mapping file, never the cwd
        try:
            text = key_path.read_bytes().decode("utf-8")
        except OSError as err:
            raise PartnerKeysError(
                f"key file of partner {partner!r} ({key_path}) cannot be read ({err.strerror})"
            ) from None
        except UnicodeDecodeError:
            raise PartnerKeysError(f"key file of partner {partner!r} ({key_path}) is not UTF-8 text") from None
        if not text.strip():
            raise PartnerKeysError(f"key file of partner {partner!r} ({key_path}) is empty")
        keys[partner] = text.strip().encode("utf-8")
    return keys


def digest(key: bytes, identifier: str) -> str:
    """The lowercase hex HMAC-SHA256 of an identifier's UTF-8 bytes, as a hashed alert holds it."""
    return hmac.new(key, identifier.encode("utf-8"), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------------------------
# the alert file


def _date(value) -> dt.date | None:
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
    if "issued_by" in record and (
        not isinstance(get("issued_by"), str) or not re.fullmatch(CENTER_CODE, get("issued_by"))
    ):
        problems.append(
            problem("issued_by", "must be a partner code: 2 to 16 capital letters, digits, - or _, such as KZ")
        )
    dates = {}
    for field in ("issued_on", "valid_until"):
        if field in record:
            dates[field] = _date(get(field))
            if dates[field] is None:
                problems.append(problem(field, "must be a date YYYY-MM-DD"))
    if dates.get("issued_on") and dates.get("valid_until") and dates["valid_until"] <= dates["issued_on"]:
        problems.append(problem("valid_until", "must be after issued_on"))
    target_known = get("target") in TARGETS
    if "target" in record and not target_known:
        problems.append(problem("target", f"must be one of {', '.join(TARGETS)}"))
    if "lane" in record and get("lane") not in LANES:
        problems.append(problem("lane", f"must be one of {', '.join(LANES)}"))
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
    alerts, problems, seen = [], [], {}
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
# the store


def _connect(path: Path) -> sqlite3.Connection:
    """A connection as serving.audit opens the same file: WAL, synchronous=FULL, busy timeout."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=10000")
    return db


def _alert(row) -> Alert:
    return Alert(*row[:8], bool(row[8]))


class AlertStore:
    """The `alerts` table of the center's store (the audit store's file)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = _connect(self.path)
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def import_alerts(self, alerts: Iterable[Alert]) -> tuple[int, int]:
        """Store alerts in one transaction; an alert_id already stored is replaced. Returns
        (new, replaced)."""
        alerts = list(alerts)
        imported_at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                number = self._db.execute("SELECT coalesce(max(import_no), 0) + 1 FROM alerts").fetchone()[0]
                replaced = 0
                for start in range(0, len(alerts), 500):  # SQLite's limit on bound parameters
                    ids = [a.alert_id for a in alerts[start : start + 500]]
                    marks = ",".join("?" * len(ids))
                    query = f"SELECT count(*) FROM alerts WHERE alert_id IN ({marks})"  # noqa: S608 - marks only
                    replaced += self._db.execute(query, ids).fetchone()[0]
                self._db.executemany(
                    "INSERT INTO alerts (alert_id, issued_by, issued_on, valid_until, target, value, lane, reason,"
                    " hashed, imported_at, import_no) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(alert_id) DO UPDATE SET issued_by=excluded.issued_by, issued_on=excluded.issued_on,"
                    " valid_until=excluded.valid_until, target=excluded.target, value=excluded.value,"
                    " lane=excluded.lane, reason=excluded.reason, hashed=excluded.hashed,"
                    " imported_at=excluded.imported_at, import_no=excluded.import_no",
                    [(*(getattr(a, f) for f in FIELDS[:8]), int(a.hashed), imported_at, number) for a in alerts],
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return len(alerts) - replaced, replaced

    def alerts(self) -> list[Alert]:
        with self._lock:
            query = f"SELECT {', '.join(FIELDS)} FROM alerts ORDER BY alert_id"  # noqa: S608 - fixed field names
            return [_alert(row) for row in self._db.execute(query)]


# ---------------------------------------------------------------------------------------------
# matching


def declaration_identifiers(records: pd.DataFrame | list[dict]) -> tuple[list[dict[str, str]], list[str | None]]:
    """Per declaration, its identifiers by alert target (those declared), and its date
    YYYY-MM-DD. `records` are declarations as given (a frame, or the JSON objects a client
    sent) or typed (serving.rules' `typed`)."""
    rows = len(records)
    given = sent_columns(records)

    def column(name: str) -> list:
        if name not in given:
            return [None] * rows
        return [None if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v) for v in given[name]]

    if "declaration_date" in given:
        days = pd.to_datetime(pd.Series(given["declaration_date"]), errors="coerce").dt.strftime("%Y-%m-%d")
        dates = [None if pd.isna(d) else d for d in days]
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
        found = []
        for target, value in identifiers.items():
            self.lookups += 1
            found += self.plain.get((target, value), ())
            for key, table in self.hashed.values():
                self.lookups += 1
                found += table.get((target, digest(key, value)), ())
        fired = {a.alert_id: a for a in found if a.active_on(day)}
        return sorted(fired.values(), key=lambda a: (-SEVERITY[a.lane], a.alert_id))

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


def alert_reason(alert: Alert) -> dict:
    """The reason an alert states, shaped as a risk profile's (serving.rules.route)."""
    return {
        "feature": REASON_FEATURE,
        "value": alert.alert_id,
        "contribution": None,
        "text": f"partner alert {alert.alert_id} from {alert.issued_by} on the {alert.target}: {alert.reason}",
    }


def apply_alerts(
    results: pd.DataFrame, records: pd.DataFrame | list[dict], index: AlertIndex, max_reasons: int
) -> pd.DataFrame:
    """Lanes after partner alerts, for the declarations of `results` in the same order (after
    serving.rules.score_routed). A matching active alert raises the lane to its own when it is
    stricter and never lowers it; `selected_by` becomes "alert" unless the lane was already
    stricter than every alert that fired (then the lane and its selected_by stay). The alerts'
    reasons come first, whatever reasons were asked for, as a rule's do."""
    if not len(index) or results.empty:
        return results
    identifiers, dates = declaration_identifiers(records)
    matched = {
        row: fired for row, (found, day) in enumerate(zip(identifiers, dates)) if (fired := index.matching(found, day))
    }
    if not matched:  # the usual case: the results as they are, not a copy
        return results
    lanes, selected_by, reasons = list(results["lane"]), list(results["selected_by"]), list(results["reasons"])
    for row, fired in matched.items():
        strictest = fired[0].lane
        if SEVERITY[strictest] >= SEVERITY[lanes[row]]:
            lanes[row], selected_by[row] = strictest, "alert"
        reasons[row] = ([alert_reason(a) for a in fired] + list(reasons[row] or []))[:max_reasons]
    return results.assign(lane=lanes, selected_by=selected_by, reasons=reasons)


class LiveAlerts:
    """The alert index as the service and the CLI see it: built from the store, and built again
    when the `alerts` table changed (one indexed query per call), so an import reaches the lanes
    without a restart. The store is only read (read-only connection): with no store yet, or no
    alerts table, nothing matches. Partner keys are read again on each rebuild; keys that cannot
    be read are logged (by file, never content) and the keys in force are kept."""

    def __init__(self, path: Path | None, keys_path: Path | None):
        self.path = Path(path) if path is not None else None
        self.keys_path = keys_path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._stamp = None
        self.keys: dict[str, bytes] = {}
        self.keys_error: str | None = None
        self.index = EMPTY_INDEX
        self._load_keys()

    def _load_keys(self) -> None:
        try:
            self.keys = load_partner_keys(self.keys_path)
            self.keys_error = None
        except PartnerKeysError as err:
            self.keys_error = str(err)
            logger.error("partner keys not loaded, hashed alerts of partners without a key do not match: %s", err)

    def _read(self, sql: str) -> list:
        """Rows of a query on the store, or None when there is no store or no alerts table."""
        if self.path is None:
            return None
        try:
            if self._db is None:
                if not self.path.is_file():
                    return None
                self._db = read_only(self.path, check_same_thread=False)
                self._db.execute("PRAGMA busy_timeout=10000")
            return self._db.execute(sql).fetchall()
        except sqlite3.Error:
            return None

    def current(self) -> AlertIndex:
        with self._lock:
            rows = self._read(STAMP)
            stamp = tuple(rows[0]) if rows else None
            if stamp != self._stamp:
                loaded = self._read(f"SELECT {', '.join(FIELDS)} FROM alerts")  # noqa: S608 - fixed names
                if stamp is not None:
                    self._load_keys()  # a new partner's key comes with its first import
                self.index = AlertIndex((_alert(row) for row in loaded or ()), self.keys)
                self._stamp = stamp
                if self.index.without_key:
                    logger.warning(
                        "hashed alerts of %s cannot match: no key in RISK_PARTNER_KEYS",
                        ", ".join(sorted(self.index.without_key)),
                    )
                logger.info("partner alerts loaded from %s: %d alert(s)", self.path, len(self.index))
            return self.index

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


# ---------------------------------------------------------------------------------------------
# export


FINDINGS_QUERY = (
    "SELECT o.declaration_id, o.inspected_on, o.result, o.notes, d.record FROM outcomes o"
    " JOIN decisions d ON d.id = (SELECT max(id) FROM decisions WHERE declaration_id = o.declaration_id)"
    " WHERE o.result IN ('fraud', 'critical') AND o.inspected_on >= ? AND o.inspected_on <= ?"
    " ORDER BY o.inspected_on, o.declaration_id"
)
# Identifiers of a declaration that never leave in the clear when the export is for a partner:
# they are taken out of the outcome's notes.
WITHHELD = ("declaration_id", "importer_id", "declarant_id", "seller_id", "container_number", "bill_of_lading")


@dataclass(frozen=True)
class Findings:
    alerts: list[Alert]
    outcomes: int  # fraud or critical outcomes inspected in the period
    without_decision: int  # of which no decision is stored (nothing to say what was declared)


def _present(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def export_findings(
    path: Path,
    since: dt.date,
    until: dt.date,
    center: str,
    key: bytes | None = None,
    valid_days: int = DEFAULT_VALID_DAYS,
) -> Findings:
    """The declarations whose outcome, inspected from `since` to `until` (both included), was
    fraud or critical, as alerts of `center`: one on the importer and one on the container where
    declared, red, with the outcome's notes as reason. An alert is active from the declaration's
    date (so a partner's copy matches the same consignment) to `valid_days` after the inspection.

    With `key` (a partner's), every value is hashed with it, alert IDs carry a keyed digest of
    the declaration instead of its ID, and the declaration's identifiers are taken out of the
    notes, so the file holds no raw identifier. The store is opened read-only."""
    if until < since:
        raise ValueError(f"--until {until} is before --since {since}")
    db = read_only(path)
    try:
        rows = db.execute(FINDINGS_QUERY, (since.isoformat(), until.isoformat())).fetchall()
        outcomes = db.execute(
            "SELECT count(*) FROM outcomes WHERE result IN ('fraud', 'critical') AND inspected_on >= ? AND inspected_on <= ?",
            (since.isoformat(), until.isoformat()),
        ).fetchone()[0]
    finally:
        db.close()
    records = [
        (declaration_id, inspected_on, result, notes, json.loads(record))
        for declaration_id, inspected_on, result, notes, record in rows
    ]
    withheld = sorted(
        {str(r.get(f)) for *_, r in records for f in WITHHELD if _present(r.get(f))}
        | {d for d, *_ in records if _present(d)},
        key=len,
        reverse=True,  # longest first: no identifier is left half-replaced
    )
    alerts = []
    for declaration_id, inspected_on, result, notes, record in records:
        declared = str(record.get("declaration_date", ""))[:10]
        inspected = _date(inspected_on[:10]) if isinstance(inspected_on, str) else None
        if _date(declared) is None or inspected is None:
            continue
        until_day = max(inspected, _date(declared)) + dt.timedelta(days=valid_days)
        text = notes.strip() if _present(notes) else ""
        if key is not None:
            for identifier in withheld:
                text = text.replace(identifier, "[withheld]")
        reason = f"{result} found on inspection on {inspected_on[:10]}" + (f": {text}" if text else "")
        reference = digest(key, str(declaration_id))[:20] if key is not None else str(declaration_id)
        for target in ("importer_id", "container_number"):
            value = record.get(target)
            if not _present(value):
                continue
            value = str(value)
            alerts.append(
                Alert(
                    alert_id=f"{center}-{reference}-{'IMP' if target == 'importer_id' else 'CTR'}",
                    issued_by=center,
                    issued_on=declared,
                    valid_until=until_day.isoformat(),
                    target=target,
                    value=digest(key, value) if key is not None else value,
                    lane="red",
                    reason=_one_line(reason),
                    hashed=key is not None,
                )
            )
    return Findings(alerts, outcomes, outcomes - len(records))


def _one_line(text: str) -> str:
    """A reason as an alert line may hold it: no control characters, within the length limit."""
    return " ".join("".join(c if ord(c) >= 32 else " " for c in text).split())[:MAX_REASON]


def write_alert_file(alerts: Iterable[Alert], path: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with Path(path).open("w", encoding="utf-8") as out:
        for alert in alerts:
            out.write(json.dumps(alert.as_record(), ensure_ascii=False) + "\n")
