"""The audit and outcomes store: every decision and every inspection result, on disk before the
HTTP answer leaves (SQLite in WAL mode, synchronous=FULL).

The store's layout has a version (SQLite's `user_version`): a store written by an earlier
release is brought up to this one when it is opened for writing, in one transaction, so the
service and the CLI can open it at the same time. Version 0 (no version) is the first layout;
version 1 adds each decision's container number and bill of lading (null when not declared);
version 2 adds each outcome's `additional_duty`, the duty the inspection assessed beyond the
declared duty (null when not reported, and in every outcome stored before version 2); version 3
adds each decision's `duty_at_risk`, the lane thresholds it was made with and their mode
(`lane_thresholds`: fixed or follow), null in every decision stored before it.

Lane thresholds that follow traffic read their window here (`recent_scores`): the scores of the
last declarations the champion scored, whichever worker or replica scored them, so a restart or
another replica continues the same window."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from models.lanes import SCORES, THRESHOLDS

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
    reasons TEXT NOT NULL,
    container_number TEXT,
    bill_of_lading TEXT,
    duty_at_risk REAL,
    red_critical_threshold REAL,
    red_value_threshold REAL,
    red_threshold REAL,
    yellow_critical_threshold REAL,
    yellow_threshold REAL,
    lane_thresholds TEXT
);
CREATE INDEX IF NOT EXISTS decisions_by_declaration ON decisions (declaration_id);
CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (scored_at);
CREATE INDEX IF NOT EXISTS decisions_by_model ON decisions (model_version, id);
CREATE TABLE IF NOT EXISTS outcomes (
    declaration_id TEXT PRIMARY KEY,
    inspected_on TEXT NOT NULL,
    result TEXT NOT NULL,
    notes TEXT,
    received_at TEXT NOT NULL,
    additional_duty REAL
);
"""


SCHEMA_VERSION = 3
# What a decision row holds of its declaration besides the record itself, so that port control
# and partner alerts can query and export them.
DECISION_IDENTIFIERS = ("container_number", "bill_of_lading")
# Columns added to a decision or an outcome after the first layout: (version added, SQL type).
DECISION_COLUMNS = {
    **dict.fromkeys(DECISION_IDENTIFIERS, (1, "TEXT")),
    "duty_at_risk": (3, "REAL"),
    **dict.fromkeys(THRESHOLDS, (3, "REAL")),
    "lane_thresholds": (3, "TEXT"),
}
OUTCOME_COLUMNS = {"additional_duty": (2, "REAL")}


class AuditStoreUnavailable(RuntimeError):
    """The store cannot write (a full disk, a read-only file system, a failing device): the
    request is refused whole, so nothing is answered that was not stored."""


def _text(value) -> str | None:
    """An optional identifier as stored: null when not declared."""
    return None if value is None or (isinstance(value, float) and value != value) else str(value)


def _amount(value) -> float | None:
    """An optional amount as stored: a float (SQLite cannot hold an integer past 2**63), or null."""
    return None if value is None else float(value)


def _limit(value) -> float | None:
    """A threshold as stored: null for a source given no share (it picks nothing: infinite)."""
    return float(value) if np.isfinite(value) else None


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
        self._migrate()

    def _migrate(self) -> None:
        """Bring a store of an earlier layout up to SCHEMA_VERSION. Under BEGIN IMMEDIATE, so a
        second process opening the store at the same time waits, then finds it done."""
        if self._db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for table, added in (("decisions", DECISION_COLUMNS), ("outcomes", OUTCOME_COLUMNS)):
                    columns = table_columns(self._db, table)
                    for column, (_, kind) in added.items():
                        if column not in columns:
                            self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")  # fixed names
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._db.execute("COMMIT")
            except BaseException:
                self._roll_back()
                raise

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

    def record_decisions(
        self, records: list[dict], results: pd.DataFrame, model_version: str, lane_thresholds: str | None = None
    ) -> None:
        """Store each declaration as sent (`records`) with its decision (`results`, as
        serving.decide gives them: the /score fields, then the thresholds the lane was decided
        with) and how those thresholds were set (models.lanes: fixed or follow). What a caller's
        results lack (`duty_at_risk`, the thresholds) is stored null, and a decision without its
        scores never joins the window thresholds follow."""
        scored_at, n = _now(), len(records)

        def optional(column: str, stored) -> list:
            return [stored(value) for value in results[column].tolist()] if column in results else [None] * n

        # column by column: a frame's rows cost more to read one by one than the write itself
        values = {
            "declaration_id": results["declaration_id"].tolist(),
            "scored_at": [scored_at] * n,
            "model_version": [model_version] * n,
            "record": [json.dumps(record, default=str) for record in records],
            "risk_score": [float(score) for score in results["risk_score"].tolist()],
            "critical_score": [float(score) for score in results["critical_score"].tolist()],
            "lane": results["lane"].tolist(),
            "selected_by": results["selected_by"].tolist(),
            "reasons": [json.dumps(reasons) for reasons in results["reasons"].tolist()],
            **{column: [_text(record.get(column)) for record in records] for column in DECISION_IDENTIFIERS},
            "duty_at_risk": optional("duty_at_risk", _amount),
            **{name: optional(name, _limit) for name in THRESHOLDS},
            "lane_thresholds": [lane_thresholds] * n,
        }
        self._write(
            f"INSERT INTO decisions ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",  # noqa: S608 - fixed names
            list(zip(*values.values())),
        )

    def record_outcomes(self, outcomes: list[dict]) -> int:
        """Store outcomes; a later outcome for the same declaration replaces the earlier one."""
        received_at = _now()
        rows = [
            (
                o["declaration_id"],
                o["inspected_on"],
                o["result"],
                o.get("notes"),
                received_at,
                _amount(o.get("additional_duty")),
            )
            for o in outcomes
        ]
        self._write(
            "INSERT INTO outcomes (declaration_id, inspected_on, result, notes, received_at, additional_duty)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(declaration_id) DO UPDATE SET"
            " inspected_on=excluded.inspected_on, result=excluded.result, notes=excluded.notes,"
            " received_at=excluded.received_at, additional_duty=excluded.additional_duty",
            rows,
        )
        return len(rows)

    def recent_decisions(self, count: int) -> list[tuple[float, str]]:
        """(risk score, lane) of the last `count` decisions (newest first), whichever process
        made them: what every service worker's live gauges are computed on, so they agree."""
        with self._lock:
            return self._db.execute(
                "SELECT risk_score, lane FROM decisions ORDER BY id DESC LIMIT ?", (int(count),)
            ).fetchall()

    def recent_scores(self, count: int, model_version: str) -> pd.DataFrame:
        """The scores (models.lanes.SCORES) and lane of the last `count` declarations this model
        version decided, oldest first, whichever process decided them: the window lane
        thresholds follow. Another version's scores are not this model's (a new champion's
        window starts again from its own validation scores)."""
        try:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {', '.join(SCORES)}, lane FROM decisions"  # noqa: S608 - fixed names
                    " WHERE model_version = ? AND duty_at_risk IS NOT NULL ORDER BY id DESC LIMIT ?",
                    (model_version, int(count)),
                ).fetchall()
        except sqlite3.Error as failed:
            raise AuditStoreUnavailable(f"the audit store {self.path} cannot be read: {failed}") from failed
        return pd.DataFrame(rows[::-1], columns=[*SCORES, "lane"])

    def close(self) -> None:
        """Let go of the store: a command that only read it leaves no connection behind."""
        with self._lock:
            self._db.close()

    def read(self, table: str) -> pd.DataFrame:
        if table not in ("decisions", "outcomes"):
            raise ValueError(f"unknown table {table}")
        with self._lock:
            return pd.read_sql_query(f"SELECT * FROM {table}", self._db)  # noqa: S608 - fixed names


EXPORTS = {
    # what an auditor reads: each decision with the outcome later reported for its declaration
    "decisions": (
        "SELECT d.*, o.inspected_on AS outcome_inspected_on, o.result AS outcome_result,"
        " o.notes AS outcome_notes, o.received_at AS outcome_received_at, {outcome_additional_duty}"
        " FROM decisions d LEFT JOIN outcomes o ON o.declaration_id = d.declaration_id"
        " WHERE d.scored_at >= ? AND d.scored_at < ? ORDER BY d.id"
    ),
    "outcomes": "SELECT * FROM outcomes WHERE received_at >= ? AND received_at < ? ORDER BY received_at, declaration_id",
}


def table_columns(db: sqlite3.Connection, table: str) -> set[str]:
    """The columns a table of the store has (none when it has no such table)."""
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def read_only(path: Path, **options) -> sqlite3.Connection:
    """The store opened read-only: readers beside a running service neither block nor change it.
    FileNotFoundError when there is no store (connecting would create one)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no audit store at {path}")
    return sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, **options)


def export(path: Path, table: str, since: dt.date, until: dt.date) -> pd.DataFrame:
    """Rows of one export from `since` to `until`, both whole UTC days included. The store is
    opened read-only, so exporting beside a running service neither blocks nor changes it."""
    if table not in EXPORTS:
        raise ValueError(f"unknown export {table}; one of {', '.join(EXPORTS)}")
    if until < since:
        raise ValueError(f"--until {until} is before --since {since}")
    db = read_only(path)
    try:
        bounds = (since.isoformat(), (until + dt.timedelta(days=1)).isoformat())
        # a store of an earlier layout, not opened for writing since: its outcomes reported no duty
        duty = "o.additional_duty" if "additional_duty" in table_columns(db, "outcomes") else "NULL"
        sql = EXPORTS[table].format(outcome_additional_duty=f"{duty} AS outcome_additional_duty")
        rows = pd.read_sql_query(sql, db, params=bounds)
    finally:
        db.close()
    if table == "outcomes" and "additional_duty" not in rows.columns:
        rows["additional_duty"] = None
    if table == "decisions":
        # a store of an earlier layout, not opened for writing since: its decisions hold none
        for position, column in enumerate(DECISION_COLUMNS, start=rows.columns.get_loc("reasons") + 1):
            if column not in rows.columns:
                rows.insert(position, column, None)
    return rows
