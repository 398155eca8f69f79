"""The end-to-end stack's pieces: commands, the small KCS sample, a free port and the example
declaration of docs/record.md. The stack itself (one `dvc repro` and one `bentoml serve` per
session) is built by the fixtures in tests/e2e/conftest.py and shared by every e2e module."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import psutil
import pytest

from bench.servers import BIN as BIN
from bench.servers import bentoml_serve, free_port, stop_servers, wait_ready, with_service_settings

TRAIN_ROWS, VALID_ROWS = 3000, 1000
API_KEY = "e2e-test-key"


def _run(command: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


_free_port = free_port  # the name the e2e modules import


def contract_example() -> dict:
    """Declaration 97061800, the example of docs/record.md and docs/api.md, as a client sends it."""
    return {
        "declaration_id": "97061800",
        "declaration_date": "2020-01-01",
        "office_id": "30",
        "process_type": "B",
        "import_type": "11",
        "import_use": "21",
        "payment_type": "11",
        "transport_mode": "10",
        "declarant_id": "ZZR1LT6",
        "importer_id": "QLRUBN9",
        "seller_id": "0VKY2BR",
        "courier_id": None,
        "hs6_code": "440890",
        "departure_country": "BE",
        "origin_country": "BE",
        "tax_rate": 0.0,
        "tax_type": "FEU1",
        "origin_indicator": "G",
        "net_mass_kg": 108.0,
        "item_price": 372254.4,
    }


def until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Wait for a condition (checked every 0.05 s), failing with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.05)


def kill_9(process: subprocess.Popen) -> None:
    """SIGKILL the server and every process under it: BentoML's workers run in process groups
    of their own, so killing the server's group alone would leave them answering."""
    leader = psutil.Process(process.pid)
    for member in [leader, *leader.children(recursive=True)]:
        with suppress(psutil.NoSuchProcess):
            member.kill()
    process.wait(timeout=30)


BIND_ATTEMPTS = 3  # starts of a service whose free port another process took first


@contextmanager
def serve_bento(root: Path, env: dict, log: Path, wrapper: tuple[str, ...] = ()):
    """`bentoml serve` of the workspace's bento on a free loopback port (run through `wrapper`,
    e.g. `unshare`, when given), started as bench/servers.py starts it; yields the server (its
    `base` URL and `process`) once /readyz answers, and stops it after unless a test has killed
    it already: a server that outlives 30 s of SIGTERM is killed, and fails the test. A port is
    free when picked, not when bound seconds later: a start that lost it to another process is
    started again on another one."""
    for attempts_left in reversed(range(BIND_ATTEMPTS)):
        server = bentoml_serve("customs-risk-service:latest", root, env, log, wrapper)
        try:
            wait_ready(server, timeout=120)
            break
        except RuntimeError:
            if attempts_left and server.process.poll() is not None and "Could not bind" in log.read_text():
                continue
            stop_servers([server])
            raise
    try:
        yield server
    finally:
        assert not stop_servers([server]), (
            "the service did not stop within 30 s of SIGTERM:\n" + log.read_text()[-4000:]
        )


@contextmanager
def keyed_service(workspace: dict, log: Path, audit: Path | str | None = None):
    """The workspace's bento served with API_KEY (and an audit store of its own when given),
    with a client that sends the key."""
    env = with_service_settings(workspace["env"], audit_db=audit, api_keys=API_KEY)
    with (
        serve_bento(workspace["root"], env, log) as served,
        httpx.Client(base_url=served.base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as client,
    ):
        yield {"client": client, "base": served.base}
