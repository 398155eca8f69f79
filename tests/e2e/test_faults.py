"""Faults with the real service: a kill -9 in the middle of a stream of outcomes loses none that
was acknowledged; a full disk or a read-only file system under the audit store gives 503 with the
cause and stores nothing half, and the service recovers when the disk does.

The disk faults are real: for a full disk the service runs in a mount namespace of its own
(`unshare`) with its audit store on a 3 MB tmpfs, which the test fills through /proc/<pid>/root."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.stack import contract_example, kill_9, serve_bento

pytestmark = pytest.mark.e2e


def _outcome(i: int) -> dict:
    return {
        "declaration_id": f"KILL-{i:05d}",
        "inspected_on": "2021-03-02",
        "result": ("clean", "fraud", "critical")[i % 3],
    }


def _stored(audit: Path) -> dict[str, str]:
    with sqlite3.connect(audit) as db:
        return dict(db.execute("SELECT declaration_id, result FROM outcomes"))


def test_every_acknowledged_outcome_survives_kill_9(workspace, tmp_path):
    audit = tmp_path / "audit.db"
    env = {**workspace["env"], "RISK_AUDIT_DB": str(audit), "RISK_WORKERS": "2"}
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
        while len(acknowledged) < 150:
            time.sleep(0.05)
        kill_9(served.process)
        for client in clients:
            client.join(timeout=60)
    assert failures, "the clients should have seen the service die"
    stored = _stored(audit)  # WAL recovery happens here, as on the next start
    lost = {key: value for key, value in acknowledged.items() if stored.get(key) != value}
    assert not lost, f"{len(lost)} acknowledged outcomes lost: {sorted(lost)[:5]}"
    # the restarted service opens the store and goes on
    with serve_bento(workspace["root"], env, tmp_path / "restart.log") as served:
        response = httpx.post(f"{served.base}/outcomes", json={"outcomes": [_outcome(999_999)]}, timeout=30)
        assert response.json() == {"stored": 1}
    assert len(_stored(audit)) == len(stored) + 1


def _can_unshare() -> bool:
    if not shutil.which("unshare") or not shutil.which("nsenter"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


needs_mount_namespace = pytest.mark.skipif(
    not _can_unshare(), reason="needs `unshare --mount` (root or user namespaces)"
)


@pytest.fixture
def on_a_small_disk(workspace, tmp_path):
    """The service with its audit store alone on a 3 MB tmpfs, in a mount namespace of its own."""
    disk = tmp_path / "disk"
    disk.mkdir()
    audit = disk / "audit.db"
    env = {**workspace["env"], "RISK_AUDIT_DB": str(audit)}
    mount_then_serve = (
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'mount -t tmpfs -o size=3m tmpfs "{disk}" && exec "$0" "$@"',
    )
    with serve_bento(workspace["root"], env, tmp_path / "serve.log", wrapper=mount_then_serve) as served:
        inside = Path(f"/proc/{served.process.pid}/root") / disk.relative_to("/")
        with httpx.Client(base_url=served.base, timeout=60) as client:
            yield {
                "client": client,
                "pid": served.process.pid,
                "disk": disk,
                "inside": inside,
                "log": tmp_path / "serve.log",
            }


def _refused_with_503(response: httpx.Response, cause: str) -> None:
    assert response.status_code == 503, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "audit_store"
    assert cause in error["message"] and "nothing was stored" in error["message"], error


def _outcomes_inside(fixture: dict) -> set[str]:
    """The stored outcomes, read from inside the service's namespace (SQLite does not follow
    /proc/<pid>/root to the store's WAL files)."""
    read = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        "print('\\n'.join(row[0] for row in db.execute('SELECT declaration_id FROM outcomes')))"
    )
    result = subprocess.run(
        [
            "nsenter",
            "--target",
            str(fixture["pid"]),
            "--mount",
            sys.executable,
            "-c",
            read,
            str(fixture["disk"] / "audit.db"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(result.stdout.split())


@needs_mount_namespace
def test_a_full_disk_gives_503_stores_nothing_and_recovers(on_a_small_disk):
    client = on_a_small_disk["client"]
    assert client.post("/outcomes", json={"outcomes": [_outcome(1)]}).status_code == 200
    filler = on_a_small_disk["inside"] / "filler"
    with filler.open("wb") as out, pytest.raises(OSError):
        while True:  # until the tmpfs is full: ENOSPC
            out.write(b"\0" * 65536)
            out.flush()
    batch = [_outcome(i) for i in range(2, 400)]
    _refused_with_503(client.post("/outcomes", json={"outcomes": batch}), "database or disk is full")
    declaration = {**contract_example(), "declaration_id": "FULL-DISK"}
    _refused_with_503(client.post("/score", json={"declarations": [declaration]}), "database or disk is full")
    assert _outcomes_inside(on_a_small_disk) == {"KILL-00001"}
    filler.unlink()
    assert client.post("/outcomes", json={"outcomes": batch}).json() == {"stored": len(batch)}
    assert client.post("/score", json={"declarations": [declaration]}).status_code == 200
    assert len(_outcomes_inside(on_a_small_disk)) == 1 + len(batch)


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


def test_a_store_turned_read_only_gives_503_and_recovers(workspace, tmp_path):
    """The kernel refuses to remount a file system read-only while the store is open for
    writing (EBUSY), so the store's files are made immutable instead: from then on every write
    to them fails, through the descriptors already open too (EPERM)."""
    store = tmp_path / "store"
    store.mkdir()
    if not _can_make_immutable(tmp_path):
        pytest.skip("chattr +i is not available on this file system")
    env = {**workspace["env"], "RISK_AUDIT_DB": str(store / "audit.db")}
    with (
        serve_bento(workspace["root"], env, tmp_path / "serve.log") as served,
        httpx.Client(base_url=served.base, timeout=60) as client,
    ):
        assert client.post("/outcomes", json={"outcomes": [_outcome(1)]}).status_code == 200
        # the database and its write-ahead log; the shared-memory index is written through
        # mmap, where the kernel answers an immutable file with SIGBUS rather than an error
        files = [store / "audit.db", store / "audit.db-wal"]
        _immutable(files, True)
        try:
            response = client.post("/outcomes", json={"outcomes": [_outcome(2)]})
            scored = client.post("/score", json={"declarations": [contract_example()]})
        finally:
            _immutable(files, False)
        _refused_with_503(response, "cannot write")
        assert response.headers["retry-after"] == "30"
        _refused_with_503(scored, "cannot write")
        assert client.post("/outcomes", json={"outcomes": [_outcome(2)]}).json() == {"stored": 1}
    assert set(_stored(store / "audit.db")) == {"KILL-00001", "KILL-00002"}
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
