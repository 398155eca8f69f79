"""The exchange of partner alerts (docs/alerts.md, CONTRACT section 5): the center's store of
imported alerts, the partner keys that hashed alerts need, and the center's own findings sent out
as alerts. What an alert is and what it matches is serving.alerts.

- `AlertStore`: the alerts in the center's store (serving.audit, table `alerts`);
  an import is one transaction, and the same `alert_id` replaces the earlier alert.
- `LiveAlerts`: the stored alerts as an `AlertIndex`, rebuilt when the table changed, so an
  import reaches the service and the CLI without a restart.
- `export_findings`: the center's confirmed findings (fraud or critical outcomes) as alerts.

Partner keys (`RISK_PARTNER_KEYS`, read in serving.settings) are bytes held in memory only:
no message, log line or file written here contains one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from serving.alerts import EMPTY_INDEX, FIELDS, MAX_REASON, Alert, AlertIndex, digest, parse_day
from serving.audit import ALERTS, AuditStore, connect, now, reading, upsert
from serving.settings import masked

logger = logging.getLogger("customs_risk.alerts")

DEFAULT_VALID_DAYS = 180

# What tells a reader the table changed: a new import raises max(import_no) (a replaced alert is
# rewritten with the new number); the count catches rows deleted by hand. Both come from indexes.
STAMP = sa.select(sa.func.count(), sa.func.max(ALERTS.c.import_no)).select_from(ALERTS)


class PartnerKeysError(ValueError):
    """RISK_PARTNER_KEYS cannot be used; the message names files and partners, never a key."""


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


# ---------------------------------------------------------------------------------------------
# the store


def _alert(row) -> Alert:
    # one starred tuple: mypy reads `Alert(*row[:8], bool(row[8]))` as too many arguments, since a
    # starred sequence of unknown length may fill every parameter
    fields = (*row[:8], bool(row[8]))
    return Alert(*fields)


ALERT_ROWS = sa.select(*(ALERTS.c[field] for field in FIELDS))


class AlertStore:
    """The `alerts` table of the center's store (serving.audit), opened for writing."""

    def __init__(self, location: str | Path):
        self.store = AuditStore(location)

    def close(self) -> None:
        self.store.close()

    def import_alerts(self, alerts: Iterable[Alert]) -> tuple[int, int]:
        """Store alerts in one transaction; an alert_id already stored is replaced. Returns
        (new, replaced). Imports take turns (serialized), so each has its own number."""
        alerts = list(alerts)
        imported_at = now()
        with self.store.serialized() as connection:
            number = connection.execute(sa.select(sa.func.coalesce(sa.func.max(ALERTS.c.import_no), 0) + 1)).scalar()
            replaced = 0
            for start in range(0, len(alerts), 500):  # within every database's limit on bound parameters
                ids = [a.alert_id for a in alerts[start : start + 500]]
                stored = sa.select(sa.func.count()).select_from(ALERTS).where(ALERTS.c.alert_id.in_(ids))
                replaced += connection.execute(stored).scalar() or 0
            rows = [
                {
                    **{field: getattr(a, field) for field in FIELDS[:8]},
                    "hashed": int(a.hashed),
                    "imported_at": imported_at,
                    "import_no": number,
                }
                for a in alerts
            ]
            if rows:
                upsert(connection, ALERTS, rows)
        return len(alerts) - replaced, replaced

    def alerts(self) -> list[Alert]:
        with self.store.engine.connect() as connection:
            return [_alert(row) for row in connection.execute(ALERT_ROWS.order_by(ALERTS.c.alert_id))]


class LiveAlerts:
    """The alert index as the service and the CLI see it: built from the store, and built again
    when the `alerts` table changed (one indexed query per call), so an import on any host
    reaches the lanes without a restart. The store is only read (read-only): with no store yet,
    no alerts table, or a store out of reach, the index in force is kept (empty at first).
    Partner keys are read again on each rebuild; keys that cannot be read are logged (by file,
    never content) and the keys in force are kept."""

    def __init__(self, location: str | Path | None, keys_path: Path | None):
        self.location = location
        self.keys_path = keys_path
        self._lock = threading.Lock()
        self._engine: sa.Engine | None = None
        self._stamp: tuple[Any, ...] | None = None
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

    def _read(self, query) -> list | None:
        """Rows of a query on the store, or None when there is no store, no alerts table, or
        the store cannot be reached now."""
        if self.location is None:
            return None
        try:
            if self._engine is None:
                self._engine = connect(self.location, read_only=True)
            with self._engine.connect() as connection:
                return list(connection.execute(query))
        except (FileNotFoundError, sa.exc.SQLAlchemyError):
            return None

    def current(self) -> AlertIndex:
        with self._lock:
            rows = self._read(STAMP)
            if rows is None and self._stamp is not None:
                return self.index  # the store is out of reach for now: keep what was loaded
            stamp = tuple(rows[0]) if rows else None
            if stamp != self._stamp:
                loaded = self._read(ALERT_ROWS)
                if stamp is not None:
                    self._load_keys()  # a new partner's key comes with its first import
                self.index = AlertIndex((_alert(row) for row in loaded or ()), self.keys)
                self._stamp = stamp
                if self.index.without_key:
                    logger.warning(
                        "hashed alerts of %s cannot match: no key in RISK_PARTNER_KEYS",
                        ", ".join(sorted(self.index.without_key)),
                    )
                logger.info("partner alerts loaded from %s: %d alert(s)", masked(self.location or ""), len(self.index))
            return self.index

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


# ---------------------------------------------------------------------------------------------
# export


FINDINGS_QUERY = (
    "SELECT o.declaration_id, o.inspected_on, o.result, o.notes, d.record FROM outcomes o"
    " JOIN decisions d ON d.id = (SELECT max(id) FROM decisions WHERE declaration_id = o.declaration_id)"
    " WHERE o.result IN ('fraud', 'critical') AND o.inspected_on >= :since AND o.inspected_on <= :until"
    " ORDER BY o.inspected_on, o.declaration_id"
)
FINDINGS_COUNT = (
    "SELECT count(*) FROM outcomes WHERE result IN ('fraud', 'critical')"
    " AND inspected_on >= :since AND inspected_on <= :until"
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
    location: str | Path,
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
    period = {"since": since.isoformat(), "until": until.isoformat()}
    with reading(location) as connection:
        rows = list(connection.execute(sa.text(FINDINGS_QUERY), period))
        outcomes = connection.execute(sa.text(FINDINGS_COUNT), period).scalar() or 0
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
        inspected = parse_day(inspected_on[:10]) if isinstance(inspected_on, str) else None
        declared_day = parse_day(declared)
        if declared_day is None or inspected is None:
            continue
        until_day = max(inspected, declared_day) + dt.timedelta(days=valid_days)
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
