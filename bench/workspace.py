"""The workspace the benchmarks and the e2e tests run the pipeline in: a temporary copy of the
project (code, dvc.yaml, params) with a sample of the KCS history, its own MLflow store and
BentoML home, and `dvc` run there; the measured child processes (wall time, peak RSS, a memory
guard); the workspace's declarations as the measurements send them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil

from bench.load import as_sent
from bench.plan import Plan
from bench.servers import BIN, PYTHON, REPO, server_env
from features.schema import DECLARATION_FIELDS

CODE = ("features", "models", "serving", "pipelines")
CONFIG = ("dvc.yaml", "params.yaml", ".dvcignore")
RAW_FILES = ("df_syn_train_eng.csv", "df_syn_valid_eng.csv")
VALIDATED = Path("data/validated/declarations.parquet")
# A child above this is stopped: the machine has 24 GiB and is shared.
RSS_LIMIT_BYTES = 18 * 2**30


def copy_project(root: Path) -> None:
    """The code and configuration `dvc repro` runs, copied into `root` (created), and the empty
    folder of exported outcomes that a clone holds (data/feedback/: ingest depends on it)."""
    for name in CODE:
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in CONFIG:
        shutil.copy(REPO / name, root / name)
    (root / "data" / "feedback").mkdir(parents=True)


def sample_kcs(source: Path, target: Path, rows: int | None, keep: Iterable[str] = ()) -> None:
    """`rows` declarations of a KCS file drawn at random (all of them when None), in date order
    and the KCS layout, with the declarations whose IDs are in `keep` among them."""
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    if rows is not None:
        sample = frame.sample(n=rows, random_state=11)
        for declaration in keep:
            if declaration in set(frame["Declaration ID"]) and declaration not in set(sample["Declaration ID"]):
                sample = pd.concat([frame[frame["Declaration ID"] == declaration], sample.iloc[1:]])
        frame = sample.sort_values("Date", kind="stable")
    frame.to_csv(target, index=False)


def workspace_env(root: Path, pythonpath: str | None = None) -> dict[str, str]:
    """The environment of everything run in the workspace: its MLflow store, BentoML home and
    audit store (data/serving/audit.db)."""
    return server_env(
        root / ".bentoml", root / "data/serving/audit.db", mlflow_db=root / "mlflow.db", pythonpath=pythonpath
    )


@dataclass
class Workspace:
    root: Path
    env: dict = field(default_factory=dict)


@dataclass
class Child:
    seconds: float
    peak_rss_bytes: int
    stdout: str


class MemoryLimitExceeded(RuntimeError):
    pass


def _watch_memory(process: subprocess.Popen, stop: threading.Event, tripped: list[bool]) -> None:
    """Kill the child's process group before it takes the machine down with it."""
    while not stop.wait(0.2):
        try:
            parent = psutil.Process(process.pid)
            rss = sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
        except psutil.Error:
            continue
        if rss > RSS_LIMIT_BYTES:
            tripped.append(True)
            os.killpg(process.pid, signal.SIGKILL)
            return


def run_child(command: list[str], cwd: Path, env: dict) -> Child:
    """Run to completion; wall time and the child's own peak RSS (os.wait4: the largest of the
    child and the descendants it waited for)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True)
        stop, tripped = threading.Event(), []
        watchdog = threading.Thread(target=_watch_memory, args=(process, stop, tripped), daemon=True)
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # Ctrl-C or the bench's own error: its own session never sees the signal
            stop.set()
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            raise
        seconds = time.perf_counter() - started
        stop.set()
        watchdog.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if tripped:
        raise MemoryLimitExceeded(f"stopped above {RSS_LIMIT_BYTES / 2**30:.0f} GiB RSS after {seconds:.0f} s")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return Child(seconds, usage.ru_maxrss * 1024, stdout)


def worker(task: list[str], cwd: Path, env: dict) -> tuple[dict, Child]:
    """A measurement of bench/workers.py in a child process: its JSON result and the child."""
    child = run_child([PYTHON, "-m", "bench.workers", *task], cwd, {**env, "PYTHONPATH": str(REPO)})
    return json.loads(child.stdout.strip().splitlines()[-1]), child


def dvc(ws: Workspace, *args: str) -> Child:
    return run_child([str(BIN / "dvc"), *args], ws.root, ws.env)


def make_workspace(root: Path, plan: Plan) -> Workspace:
    """The project copied into `root` with the plan's sample of the KCS history (the workspace's
    own code first on PYTHONPATH), and `dvc init` run there."""
    copy_project(root)
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    for name, rows in zip(RAW_FILES, plan.kcs_rows or (None, None)):
        sample_kcs(REPO / "data/raw" / name, raw / name, rows)
    workspace = Workspace(root, workspace_env(root, pythonpath=str(root)))
    dvc(workspace, "init", "--no-scm", "-q")
    return workspace


def declaration_pool(ws: Workspace, rows: int) -> list[dict]:
    """Validation-window declarations as a client sends them (JSON values, ISO dates)."""
    history = pd.read_parquet(ws.root / VALIDATED, columns=DECLARATION_FIELDS)
    return as_sent(history.sort_values("declaration_date").tail(rows))


def batch_input(ws: Workspace, rows: int, path: Path) -> None:
    """KCS declarations resampled to `rows` with fresh IDs: real entities, so lookups hit."""
    history = pd.read_parquet(ws.root / VALIDATED, columns=DECLARATION_FIELDS)
    sample = history.sample(n=rows, replace=True, random_state=3).reset_index(drop=True)
    sample["declaration_id"] = [f"B{i:09d}" for i in range(rows)]
    sample.to_parquet(path, index=False)
