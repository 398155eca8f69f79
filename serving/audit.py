"""The center's store: every decision and every inspection result, committed before the HTTP
answer leaves, the partner alerts, and the window lane thresholds follow.

`RISK_AUDIT_DB` is one value: the absolute path of a SQLite file (the embedded default, WAL
with synchronous=FULL) or a `postgresql://` URL, which every replica of a center points at so
they share one record. The SQL is SQLAlchemy Core over tables declared once (`METADATA`): one
set of statements for both databases, with a pool that checks a connection before use
(`pool_pre_ping`), so a PostgreSQL that went away and came back is reconnected without a
restart. Only what the dialects spell differently is written twice: the upsert, reading a field
of a stored record's JSON (`record_field`), and how writers are serialized.

Schema versions: the layout's version is in the table `store_version`. A store of an earlier
layout (a SQLite file of user_version 0 to 3, written before this table existed) is brought up to
this one when it is opened for writing, in one transaction, nothing lost: the tables it lacks are
created, the columns it lacks are added with Alembic's operations (which know how each dialect
adds a column). The migrations are programmatic rather than an Alembic script directory because
every change so far only adds nullable columns and tables, which the declared tables themselves
describe; a script directory would also have to ship inside the bento. Two processes may open
the store at once: on SQLite the migration runs under BEGIN IMMEDIATE, on PostgreSQL under an
advisory lock, so the second waits and then finds it done.

Version 1 added each decision's container number and bill of lading; version 2 each outcome's
`additional_duty`; version 3 each decision's `duty_at_risk`, the lane thresholds it was made with
and their mode (`lane_thresholds`: fixed or follow); version 4 the `alerts` table in the schema
and the version in `store_version`. Each is null in the rows stored before it.

Lane thresholds that follow traffic read their window here (`recent_scores`): the scores of the
last declarations the champion scored, whichever worker or replica scored them (decision ids are
ordered across replicas), so a restart or another replica continues the same window."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.dialects import postgresql, sqlite

from models.lanes import SCORES, THRESHOLDS
from serving.settings import is_server_url, masked

SCHEMA_VERSION = 4
# What a decision row holds of its declaration besides the record itself, so that port control
# and partner alerts can query and export them.
DECISION_IDENTIFIERS = ("container_number", "bill_of_lading")
# Seconds a connection to PostgreSQL may take, and a SQLite writer may wait for another's lock:
# past them a request is refused (503) rather than left hanging.
CONNECT_TIMEOUT_SECONDS = 3
BUSY_TIMEOUT_SECONDS = 10.0
# How long a readiness answer is reused: a probe every second costs one query, not one per probe.
READY_CACHE_SECONDS = 1.0
# The advisory lock key under which PostgreSQL writers that must not interleave (a migration, an
# alert import) take turns; any constant unlikely to be used by another application.
PG_LOCK_KEY = 3_100_2026

METADATA = sa.MetaData()
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: the rowid, AUTOINCREMENT

DECISIONS = sa.Table(
    "decisions",
    METADATA,
    sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("declaration_id", sa.Text, nullable=False),
    sa.Column("scored_at", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("risk_score", sa.Float, nullable=False),
    sa.Column("critical_score", sa.Float, nullable=False),
    sa.Column("lane", sa.Text, nullable=False),
    sa.Column("selected_by", sa.Text, nullable=False),
    sa.Column("reasons", sa.Text, nullable=False),
    *(sa.Column(name, sa.Text) for name in DECISION_IDENTIFIERS),
    sa.Column("duty_at_risk", sa.Float),
    *(sa.Column(name, sa.Float) for name in THRESHOLDS),
    sa.Column("lane_thresholds", sa.Text),
    sa.Index("decisions_by_declaration", "declaration_id"),
    sa.Index("decisions_by_time", "scored_at"),
    sa.Index("decisions_by_model", "model_version", "id"),
    sqlite_autoincrement=True,
)
OUTCOMES = sa.Table(
    "outcomes",
    METADATA,
    sa.Column("declaration_id", sa.Text, primary_key=True),
    sa.Column("inspected_on", sa.Text, nullable=False),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("notes", sa.Text),
    sa.Column("received_at", sa.Text, nullable=False),
    sa.Column("additional_duty", sa.Float),
)
ALERTS = sa.Table(
    "alerts",
    METADATA,
    sa.Column("alert_id", sa.Text, primary_key=True),
    sa.Column("issued_by", sa.Text, nullable=False),
    sa.Column("issued_on", sa.Text, nullable=False),
    sa.Column("valid_until", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("lane", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("hashed", sa.Integer, nullable=False),
    sa.Column("imported_at", sa.Text, nullable=False),
    sa.Column("import_no", sa.Integer, nullable=False),
    sa.Index("alerts_by_import", "import_no"),
)
STORE_VERSION = sa.Table("store_version", METADATA, sa.Column("version", sa.Integer, nullable=False))


class AuditStoreUnavailable(RuntimeError):
    """The store cannot be reached or cannot write (a stopped server, a full disk, a read-only
    file system): the request is refused whole, so nothing is answered that was not stored."""


def _text(value) -> str | None:
    """An optional identifier as stored: null when not declared."""
    return None if value is None or (isinstance(value, float) and value != value) else str(value)


def _amount(value) -> float | None:
    """An optional amount as stored: a float (SQLite cannot hold an integer past 2**63), or null."""
    return None if value is None else float(value)


def _limit(value) -> float | None:
    """A threshold as stored: null for a source given no share (it picks nothing: infinite)."""
    return float(value) if np.isfinite(value) else None


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def reason(failed: BaseException) -> str:
    """What the database said, on one line: SQLAlchemy's own text repeats the statement and its
    parameters (records, in a write), which a log line or a client's error has no use for."""
    original = getattr(failed, "orig", None) or failed
    return " ".join(str(original).split()) or type(original).__name__


# --- engines -----------------------------------------------------------------------------------


def _sqlite_engine(path: Path, read_only: bool, timeout: float) -> sa.Engine:
    if read_only:
        if not path.is_file():
            raise FileNotFoundError(f"no audit store at {path}")  # connecting would create one
        target, uri = f"{path.resolve().as_uri()}?mode=ro", True
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        target, uri = str(path), False

    def connect() -> sqlite3.Connection:
        # isolation_level=None: the begin event below says how each transaction begins
        return sqlite3.connect(target, uri=uri, timeout=timeout, check_same_thread=False, isolation_level=None)

    engine = sa.create_engine(f"sqlite:///{path}", creator=connect, poolclass=sa.pool.QueuePool)

    @sa.event.listens_for(engine, "connect")
    def durable(connection, _record) -> None:
        if not read_only:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")

    @sa.event.listens_for(engine, "begin")
    def begin(connection) -> None:
        # a writer takes the write lock first (IMMEDIATE): one that upgraded a read lock could
        # find another writer ahead of it and fail instead of waiting its turn
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get("writes") else "BEGIN")

    return engine


def connect(location: str | Path, read_only: bool = False, timeout: float = BUSY_TIMEOUT_SECONDS) -> sa.Engine:
    """An engine on the store at `location` (a SQLite path or a postgresql:// URL). Read-only,
    a SQLite reader beside a running service neither blocks nor changes it, and a PostgreSQL
    reader's transactions are READ ONLY. FileNotFoundError for a SQLite store that is not there."""
    if not is_server_url(location):
        return _sqlite_engine(Path(location), read_only, timeout)
    url = sa.make_url(str(location)).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS})
    return engine.execution_options(postgresql_readonly=True) if read_only else engine


@contextlib.contextmanager
def reading(location: str | Path, timeout: float = BUSY_TIMEOUT_SECONDS) -> Iterator[sa.Connection]:
    """One read-only connection to the store, let go of after (a command leaves none behind).
    AuditStoreUnavailable, with the database's reason, when the store cannot be read."""
    engine = connect(location, read_only=True, timeout=timeout)
    try:
        with engine.connect() as connection:
            yield connection
    except sa.exc.SQLAlchemyError as failed:
        raise AuditStoreUnavailable(f"the audit store {masked(location)} cannot be read: {reason(failed)}") from failed
    finally:
        engine.dispose()


def table_columns(connection: sa.Connection, table: str) -> set[str]:
    """The columns a table of the store has (none when it has no such table)."""
    try:
        return {column["name"] for column in sa.inspect(connection).get_columns(table)}
    except sa.exc.NoSuchTableError:
        return set()


def record_field(connection: sa.Connection, column: str, field: str) -> str:
    """SQL for one text field of a stored record (JSON text) in `column`: the one expression
    the dialects spell differently. `field` is one of the code's own names, never input."""
    if connection.dialect.name == "postgresql":
        return f"({column}::json ->> '{field}')"
    return f"json_extract({column}, '$.{field}')"


def upsert(connection: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
    """Insert rows; a row whose primary key is stored replaces it (PostgreSQL and SQLite both
    spell it ON CONFLICT ... DO UPDATE, from their own dialect's insert)."""
    insert = (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(table)
    key = [column.name for column in table.primary_key]
    replaced = {column.name: insert.excluded[column.name] for column in table.columns if column.name not in key}
    connection.execute(insert.on_conflict_do_update(index_elements=key, set_=replaced), rows)


# --- the store ---------------------------------------------------------------------------------


class AuditStore:
    """The store opened for writing (the service, `alerts import`, the CLI's window): brought up
    to this layout once, then a pool of connections any thread of the process may use."""

    def __init__(self, location: str | Path):
        self.location = location
        self.described = masked(location)
        self.engine = connect(location)
        self._writer = self.engine.execution_options(writes=True)
        self._ready: tuple[float, bool] = (0.0, False)
        self._ready_lock = threading.Lock()
        try:
            self._migrate()
        except sa.exc.SQLAlchemyError as failed:
            self.engine.dispose()
            raise AuditStoreUnavailable(
                f"the audit store {self.described} cannot be opened: {reason(failed)}"
            ) from None

    @property
    def path(self) -> Path:
        """The SQLite file (tests and tools that look at the file itself)."""
        if is_server_url(self.location):
            raise ValueError(f"the audit store {self.described} is a server, not a file")
        return Path(self.location)

    @contextlib.contextmanager
    def serialized(self) -> Iterator[sa.Connection]:
        """A write transaction that no other serialized one interleaves with, in any process: a
        migration, an alert import (which numbers its import after the last)."""
        with self._writer.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
            yield connection

    def _version(self, connection: sa.Connection) -> int:
        if not sa.inspect(connection).has_table(STORE_VERSION.name):
            return 0
        return connection.execute(sa.select(sa.func.max(STORE_VERSION.c.version))).scalar() or 0

    def _migrate(self) -> None:
        """Bring a store of an earlier layout up to SCHEMA_VERSION (the module's docstring)."""
        with self.engine.connect() as connection:
            if self._version(connection) >= SCHEMA_VERSION:
                return
        with self.serialized() as connection:
            if self._version(connection) >= SCHEMA_VERSION:
                return  # another process did it while this one waited
            METADATA.create_all(connection)  # the tables the store lacks, with their indexes
            operations = Operations(MigrationContext.configure(connection))
            for table in (DECISIONS, OUTCOMES, ALERTS):
                present = table_columns(connection, table.name)
                for column in table.columns:
                    if column.name not in present:  # added in a later version: nullable
                        operations.add_column(table.name, sa.Column(column.name, column.type))
                for index in table.indexes:
                    index.create(connection, checkfirst=True)
            connection.execute(sa.delete(STORE_VERSION))
            connection.execute(sa.insert(STORE_VERSION), {"version": SCHEMA_VERSION})

    def _write(self, table: sa.Table, rows: list[dict], replace: bool = False) -> None:
        try:
            with self._writer.begin() as connection:
                if replace:
                    upsert(connection, table, rows)
                else:
                    connection.execute(sa.insert(table), rows)
        except sa.exc.SQLAlchemyError as failed:
            raise AuditStoreUnavailable(f"the audit store {self.described} cannot write: {reason(failed)}") from None

    def _read(self, query) -> list[sa.Row]:
        try:
            with self.engine.connect() as connection:
                return list(connection.execute(query))
        except sa.exc.SQLAlchemyError as failed:
            raise AuditStoreUnavailable(f"the audit store {self.described} cannot be read: {reason(failed)}") from None

    def ready(self) -> bool:
        """Whether the store answers now (`SELECT 1`), the answer reused for a second: what
        /readyz reports, so a store that went away takes the replica out of a balancer's pool."""
        with self._ready_lock:
            checked, answered = self._ready
            if time.monotonic() - checked < READY_CACHE_SECONDS:
                return answered
            try:
                self._read(sa.text("SELECT 1"))
                answered = True
            except AuditStoreUnavailable:
                answered = False
            self._ready = (time.monotonic(), answered)
            return answered

    def record_decisions(
        self, records: list[dict], results: pd.DataFrame, model_version: str, lane_thresholds: str | None = None
    ) -> None:
        """Store each declaration as sent (`records`) with its decision (`results`, as
        serving.decide gives them: the /score fields, then the thresholds the lane was decided
        with) and how those thresholds were set (models.lanes: fixed or follow). What a caller's
        results lack (`duty_at_risk`, the thresholds) is stored null, and a decision without its
        scores never joins the window thresholds follow."""
        scored_at, n = now(), len(records)

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
        self._write(DECISIONS, [dict(zip(values, row, strict=True)) for row in zip(*values.values(), strict=True)])

    def record_outcomes(self, outcomes: list[dict]) -> int:
        """Store outcomes; a later outcome for the same declaration replaces the earlier one."""
        received_at = now()
        rows = [
            {
                "declaration_id": o["declaration_id"],
                "inspected_on": o["inspected_on"],
                "result": o["result"],
                "notes": o.get("notes"),
                "received_at": received_at,
                "additional_duty": _amount(o.get("additional_duty")),
            }
            for o in outcomes
        ]
        self._write(OUTCOMES, rows, replace=True)
        return len(rows)

    def recent_decisions(self, count: int) -> list[tuple[float, str]]:
        """(risk score, lane) of the last `count` decisions (newest first), whichever process
        made them: what every service worker's live gauges are computed on, so they agree."""
        query = sa.select(DECISIONS.c.risk_score, DECISIONS.c.lane).order_by(DECISIONS.c.id.desc()).limit(int(count))
        return [tuple(row) for row in self._read(query)]

    def recent_scores(self, count: int, model_version: str) -> pd.DataFrame:
        """The scores (models.lanes.SCORES) and lane of the last `count` declarations this model
        version decided, oldest first, whichever process decided them: the window lane
        thresholds follow. Another version's scores are not this model's (a new champion's
        window starts again from its own validation scores)."""
        query = (
            sa.select(*(DECISIONS.c[score] for score in SCORES), DECISIONS.c.lane)
            .where(DECISIONS.c.model_version == model_version, DECISIONS.c.duty_at_risk.is_not(None))
            .order_by(DECISIONS.c.id.desc())
            .limit(int(count))
        )
        return pd.DataFrame([tuple(row) for row in self._read(query)][::-1], columns=[*SCORES, "lane"])

    def read(self, table: str) -> pd.DataFrame:
        tables = {"decisions": DECISIONS, "outcomes": OUTCOMES}
        if table not in tables:
            raise ValueError(f"unknown table {table}")
        with self.engine.connect() as connection:
            return pd.read_sql_query(sa.select(tables[table]).order_by(*tables[table].primary_key), connection)

    def close(self) -> None:
        """Let go of the store: a command that only read it leaves no connection behind."""
        self.engine.dispose()


# --- exports -----------------------------------------------------------------------------------

EXPORTS = {
    # what an auditor reads: each decision with the outcome later reported for its declaration
    "decisions": (
        "SELECT {decision_columns}, o.inspected_on AS outcome_inspected_on, o.result AS outcome_result,"
        " o.notes AS outcome_notes, o.received_at AS outcome_received_at, {outcome_additional_duty}"
        " FROM decisions d LEFT JOIN outcomes o ON o.declaration_id = d.declaration_id"
        " WHERE d.scored_at >= :since AND d.scored_at < :until ORDER BY d.id"
    ),
    "outcomes": (
        "SELECT {outcome_columns} FROM outcomes o WHERE received_at >= :since AND received_at < :until"
        " ORDER BY received_at, declaration_id"
    ),
}


def present_columns(connection: sa.Connection, table: sa.Table, alias: str) -> str:
    """The table's columns in their declared order, as `alias.column`, each one a store of an
    earlier layout (opened read-only, so not migrated) lacks given as null under its name."""
    present = table_columns(connection, table.name)
    named = [column.name for column in table.columns]
    return ", ".join(f"{alias}.{name}" if name in present else f"NULL AS {name}" for name in named)


def export(location: str | Path, table: str, since: dt.date, until: dt.date) -> pd.DataFrame:
    """Rows of one export from `since` to `until`, both whole UTC days included. The store is
    opened read-only, so exporting beside a running service neither blocks nor changes it."""
    if table not in EXPORTS:
        raise ValueError(f"unknown export {table}; one of {', '.join(EXPORTS)}")
    if until < since:
        raise ValueError(f"--until {until} is before --since {since}")
    bounds = {"since": since.isoformat(), "until": (until + dt.timedelta(days=1)).isoformat()}
    with reading(location) as connection:
        duty = "o.additional_duty" if "additional_duty" in table_columns(connection, "outcomes") else "NULL"
        sql = EXPORTS[table].format(
            decision_columns=present_columns(connection, DECISIONS, "d"),
            outcome_columns=present_columns(connection, OUTCOMES, "o"),
            outcome_additional_duty=f"{duty} AS outcome_additional_duty",
        )
        return pd.read_sql_query(sa.text(sql), connection, params=bounds)
