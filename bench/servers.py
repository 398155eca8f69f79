"""Starting and stopping the servers that `make bench` measures, `make soak` and `make fuzz` drive,
and tests/e2e check: our BentoML service (`bentoml serve`), the minimal FastAPI baseline,
`mlflow models serve`; the environment they get, free loopback ports, the wait for readiness.

Every server runs in a process group of its own with its output in a log file, and is ready when
its probe answers 200. OMP_WAIT_POLICY is not set here: each server imports `models` (BentoML's
service via serving/, the baselines via models.bundle) before LightGBM loads OpenMP, and
models/__init__.py sets it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.load import Target

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PYTHON = sys.executable
SERVICE = "customs-risk-service"
STOP_SECONDS = 30  # after SIGTERM, before SIGKILL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(
    bentoml_home: Path,
    audit_db: Path | str,
    *,
    mlflow_db: Path | None = None,
    pythonpath: str | None = None,
    api_keys: str | None = None,
) -> dict[str, str]:
    """The environment of the pipeline's commands and of every server: this interpreter's bin
    first on PATH, a BentoML store and an audit store of their own, the MLflow store when given
    (else the caller's), no API keys unless given (the service then answers loopback only), and
    PYTHONPATH only when given (without it a bento runs its own code)."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "BENTOML_HOME": str(bentoml_home),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("PYTHONPATH", None)
    env.pop("RISK_API_KEYS", None)
    if mlflow_db is not None:
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{mlflow_db}"
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return with_service_settings(env, audit_db=audit_db, api_keys=api_keys)


def with_service_settings(
    env: dict[str, str], *, audit_db: Path | str | None = None, api_keys: str | None = None
) -> dict[str, str]:
    """`env` with the service's audit store and/or API keys (comma-separated) replaced."""
    changed = dict(env)
    if audit_db is not None:
        changed["RISK_AUDIT_DB"] = str(audit_db)
    if api_keys is not None:
        changed["RISK_API_KEYS"] = api_keys
    return changed


@dataclass
class Server:
    target: Target  # what the load generator sends its scoring requests to
    base: str  # http://127.0.0.1:PORT
    ready_url: str
    process: subprocess.Popen  # leader of its own process group
    log: Path


def launch(
    name: str,
    command: list[str],
    port: int,
    cwd: Path,
    env: dict,
    log: Path,
    probe: str,
    score: tuple[str, Callable[[list[dict]], dict], Callable[[dict], int]],
    wrapper: Sequence[str] = (),
) -> Server:
    """Start `command` (listening on `port`, run through `wrapper` when given, e.g. `unshare`) in a
    process group of its own, its output in `log`; `score` is the scoring path, the request body
    for a list of declarations and the count of results in an answer."""
    with log.open("w") as out:
        process = subprocess.Popen(
            [*wrapper, *command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    path, body, count = score
    return Server(Target(name, base + path, body, count), base, base + probe, process, log)


def bentoml_serve(bento: str, cwd: Path, env: dict, log: Path, wrapper: Sequence[str] = ()) -> Server:
    """`bentoml serve` of our scoring service on a free loopback port."""
    port = free_port()
    return launch(
        "customs-risk (BentoML)",
        [str(BIN / "bentoml"), "serve", bento, "--host", "127.0.0.1", "--port", str(port)],
        port,
        cwd,
        env,
        log,
        "/readyz",
        ("/score", lambda d: {"declarations": d}, lambda b: len(b["results"])),
        wrapper,
    )


def minimal_fastapi(root: Path, env: dict) -> Server:
    """bench/minimal_api.py under uvicorn, on the workspace's model bundle."""
    port = free_port()
    return launch(
        "minimal FastAPI + uvicorn",
        [
            PYTHON,
            "-m",
            "uvicorn",
            "bench.minimal_api:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        port,
        root,
        {**env, "PYTHONPATH": f"{root}{os.pathsep}{REPO}", "RISK_BUNDLE": str(root / "data/model/bundle")},
        root / "minimal.log",
        "/healthz",
        ("/score", lambda d: {"declarations": d}, lambda b: len(b["results"])),
    )


def mlflow_serve(root: Path, env: dict, log: Path | None = None) -> Server:
    """`mlflow models serve` of the registered champion, in this environment (its log in `root`
    unless `log` says where)."""
    port = free_port()
    return launch(
        "mlflow models serve",
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/customs-risk@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        port,
        root,
        env,
        log or root / "mlflow.log",
        "/ping",
        ("/invocations", lambda d: {"dataframe_records": d}, lambda b: len(b["predictions"])),
    )


def replica_home(bentoml_home: Path, home: Path) -> Path:
    """A copy of a BentoML store for one more replica of the service: a replica on another host
    has a store of its own, and `bentoml serve` empties its store's Prometheus folder when it
    starts, so two replicas on one store would wipe each other's counters."""
    shutil.copytree(bentoml_home, home, ignore=shutil.ignore_patterns("prometheus_multiproc_dir"))
    return home


def packaged_bento(bentoml_home: Path) -> str | None:
    """The tag of the latest packaged scoring service in a BentoML store, if `make run` built one."""
    latest = bentoml_home / "bentos" / SERVICE / "latest"
    return f"{SERVICE}:{latest.read_text().strip()}" if latest.is_file() else None


def serve_packaged(bentoml_home: Path, bento: str, folder: Path, api_key: str | None = None) -> Server:
    """A packaged bento as `make run` left it, for `make soak` and `make fuzz`: the bento's own
    code (no PYTHONPATH), a fresh audit store in `folder` (never the repository's), loopback,
    and a key only when one is given."""
    env = server_env(bentoml_home, folder / "audit.db", api_keys=api_key or None)
    return bentoml_serve(bento, folder, env, folder / "customs-risk.log")


def wait_ready(server: Server, timeout: float = 240) -> None:
    """Until the server's probe answers 200; RuntimeError with its log's tail if it exits first
    or is not ready in `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.target.name} exited:\n{server.log.read_text()[-4000:]}")
        try:
            if httpx.get(server.ready_url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{server.target.name} not ready in {timeout:.0f} s:\n{server.log.read_text()[-4000:]}")


def stop_servers(servers: Sequence[Server]) -> list[str]:
    """SIGTERM to each server's process group (all at once), SIGKILL to those still running
    STOP_SECONDS later; the names of the servers that had to be killed. A server already gone
    (or killed by a test) is fine."""
    for server in servers:
        with suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGTERM)
    killed = []
    for server in servers:
        try:
            server.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            killed.append(server.target.name)
            with suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
    return killed
