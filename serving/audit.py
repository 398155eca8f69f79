"""The audit and outcomes store: every decision and every inspection result, on disk before the
HTTP answer leaves (SQLite in WAL mode, synchronous=FULL)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from pathlib import Path

import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    declaration_id TEXT NOT NULL,
    scored_at TEXT NOT NULL,
    model_version TEXT NOT NULL,
    record TEXT NOT NULL,
    risk_score REAL NOT NULL,
    critical_score REAL NOT NULL,
    lane TEXT NOT NULL,
    selected_by TEXT NOT NULL,
    reasons TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_by_declaration ON decisions (declaration_id);
CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (scored_at);
CREATE TABLE IF NOT EXISTS outcomes (
    declaration_id TEXT PRIMARY KEY,
    inspected_on TEXT NOT NULL,
    result TEXT NOT NULL,
    notes TEXT,
    received_at TEXT NOT NULL
);
"""


class AuditStoreUnavailable(RuntimeError):
    """The store cannot write (a full disk, a read-only file system, a failing device): the
    request is refused whole, so nothing is answered that was not stored."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class AuditStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(SCHEMA)

    def _write(self, sql: str, rows: list[tuple]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as failed:
                self._roll_back()
                raise AuditStoreUnavailable(f"the audit store {self.path} cannot write: {failed}") from failed
            except BaseException:
                self._roll_back()
                raise

    def _roll_back(self) -> None:
        """SQLite may already have rolled back (it does on a full disk), or be unable to."""
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def record_decisions(self, records: list[dict], results: pd.DataFrame, model_version: str) -> None:
        scored_at = _now()
        rows = [
            (
                result.declaration_id,
                scored_at,
                model_version,
                json.dumps(record, default=str),
                float(result.risk_score),
                float(result.critical_score),
                result.lane,
                result.selected_by,
                json.dumps(result.reasons),
            )
            for record, result in zip(records, results.itertuples(index=False))
        ]
        self._write(
            "INSERT INTO decisions (declaration_id, scored_at, model_version, record, risk_score,"
            " critical_score, lane, selected_by, reasons) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def record_outcomes(self, outcomes: list[dict]) -> int:
        """Store outcomes; a later outcome for the same declaration replaces the earlier one."""
        received_at = _now()
        rows = [
            (o["declaration_id"], o["inspected_on"], o["result"], o.get("notes"), received_at)
            for o in outcomes
        ]
        self._write(
            "INSERT INTO outcomes (declaration_id, inspected_on, result, notes, received_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(declaration_id) DO UPDATE SET"
            " inspected_on=excluded.inspected_on, result=excluded.result, notes=excluded.notes,"
            " received_at=excluded.received_at",
            rows,
        )
        return len(rows)

    def read(self, table: str) -> pd.DataFrame:
        if table not in ("decisions", "outcomes"):
            raise ValueError(f"unknown table {table}")
        with self._lock:
            return pd.read_sql_query(f"SELECT * FROM {table}", self._db)  # noqa: S608 - fixed names


EXPORTS = {
    # what an auditor reads: each decision with the outcome later reported for its declaration
    "decisions": (
        "SELECT d.*, o.inspected_on AS outcome_inspected_on, o.result AS outcome_result,"
        " o.notes AS outcome_notes, o.received_at AS outcome_received_at"
        " FROM decisions d LEFT JOIN outcomes o ON o.declaration_id = d.declaration_id"
        " WHERE d.scored_at >= ? AND d.scored_at < ? ORDER BY d.id"
    ),
    "outcomes": "SELECT * FROM outcomes WHERE received_at >= ? AND received_at < ? ORDER BY received_at, declaration_id",
}


def export(path: Path, table: str, since: dt.date, until: dt.date) -> pd.DataFrame:
    """Rows of one export from `since` to `until`, both whole UTC days included. The store is
    opened read-only, so exporting beside a running service neither blocks nor changes it."""
    if table not in EXPORTS:
        raise ValueError(f"unknown export {table}; one of {', '.join(EXPORTS)}")
    if until < since:
        raise ValueError(f"--until {until} is before --since {since}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"no audit store at {path}")
    db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        bounds = (since.isoformat(), (until + dt.timedelta(days=1)).isoformat())
        return pd.read_sql_query(EXPORTS[table], db, params=bounds)
    finally:
        db.close()
