"""The end-to-end stack's pieces: commands, the small KCS sample, a free port and the example
declaration of docs/record.md. The stack itself (one `dvc repro` and one `bentoml serve` per
session) is built by the fixtures in tests/e2e/conftest.py and shared by every e2e module."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import psutil

BIN = Path(sys.executable).parent
TRAIN_ROWS, VALID_ROWS = 3000, 1000
API_KEY = "e2e-test-key"


def _run(command: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def _sample_kcs(source: Path, target: Path, rows: int) -> None:
    """A time-ordered random sample of a KCS file, in the KCS layout, plus the example declaration of docs/record.md."""
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    sample = frame.sample(n=rows, random_state=11)
    if "97061800" in set(frame["Declaration ID"]) and "97061800" not in set(sample["Declaration ID"]):
        sample = pd.concat([frame[frame["Declaration ID"] == "97061800"], sample.iloc[1:]])
    sample.sort_values("Date", kind="stable").to_csv(target, index=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def contract_example() -> dict:
    """Declaration 97061800, the example of docs/record.md and docs/api.md, as a client sends it."""
    return {
        "declaration_id": "97061800", "declaration_date": "2020-01-01", "office_id": "30",
        "process_type": "B", "import_type": "11", "import_use": "21", "payment_type": "11",
        "transport_mode": "10", "declarant_id": "ZZR1LT6", "importer_id": "QLRUBN9",
        "seller_id": "0VKY2BR", "courier_id": None, "hs6_code": "440890",
        "departure_country": "BE", "origin_country": "BE", "tax_rate": 0.0, "tax_type": "FEU1",
        "origin_indicator": "G", "net_mass_kg": 108.0, "item_price": 372254.4,
    }


@dataclass
class Served:
    base: str  # the service's URL
    process: subprocess.Popen  # `bentoml serve`, leader of its own process group


def kill_9(process: subprocess.Popen) -> None:
    """SIGKILL the server and every process under it: BentoML's workers run in process groups
    of their own, so killing the server's group alone would leave them answering."""
    leader = psutil.Process(process.pid)
    for member in [leader, *leader.children(recursive=True)]:
        with suppress(psutil.NoSuchProcess):
            member.kill()
    process.wait(timeout=30)


@contextmanager
def serve_bento(root: Path, env: dict, log: Path, wrapper: tuple[str, ...] = ()):
    """`bentoml serve` of the workspace's bento on a free loopback port (run through `wrapper`,
    e.g. `unshare`, when given); yields it once /readyz answers, and stops the server after
    unless a test has killed it already."""
    port = _free_port()
    command = [str(BIN / "bentoml"), "serve", "customs-risk-service:latest", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(
            [*wrapper, *command], cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, log.read_text()[-4000:]
                assert time.monotonic() < deadline, "service not ready in 120 s:\n" + log.read_text()[-4000:]
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            yield Served(base, process)
        finally:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


@contextmanager
def keyed_service(workspace: dict, log: Path, audit: Path | None = None):
    """The workspace's bento served with API_KEY (and an audit store of its own when given),
    with a client that sends the key."""
    env = {**workspace["env"], "RISK_API_KEYS": API_KEY}
    if audit is not None:
        env["RISK_AUDIT_DB"] = str(audit)
    with (
        serve_bento(workspace["root"], env, log) as served,
        httpx.Client(base_url=served.base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as client,
    ):
        yield {"client": client, "base": served.base}
