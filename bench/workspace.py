"""The workspace the benchmarks and the e2e tests run the pipeline in: a temporary copy of the
project (code, dvc.yaml, params) with a sample of the KCS history, its own MLflow store and
BentoML home, and `dvc` run there; the measured child processes (wall time, peak RSS, a memory
guard); the workspace's declarations as the measurements send them."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pandas as pd
import psutil

from bench.load import as_sent
from bench.plan import Plan
from bench.servers import BIN, PYTHON, REPO, server_env
from features.schema import DECLARATION_FIELDS

CODE = ("features", "models", "serving", "pipelines")
CONFIG = ("dvc.yaml", "params.yaml", ".dvcignore", "requirements.lock")  # the lock: the bento installs from it
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


def _group_members(group: int) -> set[int]:
    """The processes of process group `group` still running (a zombie has exited: only its reaping
    by its parent is left)."""
    members = set()
    for candidate in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if candidate.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(candidate.pid) == group:
                members.add(candidate.pid)
    return members


def _wait_exited(pid: int, group: int) -> None:
    """Until process `pid`, a member of `group` that need not be our child, has exited: its pidfd
    polls readable then (Linux 5.3). No deadline: it was signalled, and the wait is for it to go."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # gone already
    try:
        if os.getpgid(pid) == group:  # still the same process, not a new one given its number
            poll = select.poll()
            poll.register(pidfd, select.POLLIN)
            poll.poll()
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


def stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """`sig` to the child's process group (the child and every descendant that stayed in it,
    which is what run_child's own session holds), and back only once all of them have exited: the
    child reaped, the others waited for however long they take. A member that appears meanwhile
    gets `sig` too. Interrupted again while it waits (a second Ctrl-C), it kills them (SIGKILL,
    which nothing ignores) and waits for that."""
    group, signalled = process.pid, set()
    try:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)
        signalled = _group_members(group) | {group}
        process.wait()
        while members := _group_members(group):
            for pid in members - signalled:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            signalled |= members
            for pid in members:
                _wait_exited(pid, group)
    except BaseException:
        if sig != signal.SIGKILL:
            stop_group(process, signal.SIGKILL)
        raise


class _Launch:
    """A child started in a session of its own by a helper thread. Python runs signal handlers
    (Ctrl-C's KeyboardInterrupt) in the main thread only, so an interrupt never lands inside Popen,
    where it would leave a child running that nothing knows of: whenever it lands, `stop` finds what
    was started and stops it."""

    def __init__(self, command: list[str], cwd: Path, env: dict, out: IO, err: IO):
        self.process: subprocess.Popen | None = None
        self._error: BaseException | None = None
        self._orders: queue.SimpleQueue[bool] = queue.SimpleQueue()
        # An Event, not Thread.join: a join that an exception interrupted marks a thread that is
        # still running as stopped (Python 3.11, bpo-45274's fix), and a second join returns at once.
        self._done = threading.Event()
        helper = threading.Thread(target=self._start, args=(command, cwd, env, out, err), daemon=True)
        helper.start()  # it waits for its order: interrupted here, nothing was started

    def _start(self, command: list[str], cwd: Path, env: dict, out: IO, err: IO) -> None:
        try:
            if self._orders.get():
                self.process = subprocess.Popen(
                    command, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
                )
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            self._error = error
        finally:
            self._done.set()

    def run(self) -> subprocess.Popen:
        self._orders.put(True)
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self.process is not None
        return self.process

    def stop(self) -> None:
        self._orders.put(False)  # the helper's order, unless it took `True` already
        self._done.wait()
        if self.process is not None:
            stop_group(self.process)


def run_child(command: list[str], cwd: Path, env: dict) -> Child:
    """Run to completion; wall time and the child's own peak RSS (os.wait4: the largest of the
    child and the descendants it waited for). The child runs in a session of its own, so the
    terminal's Ctrl-C never reaches it: interrupted (or failing) here, at whatever moment, this
    stops the child's whole process group and returns only once every process in it has exited."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        stop, tripped = threading.Event(), []
        started = time.perf_counter()
        launch = _Launch(command, cwd, env, out, err)
        try:
            process = launch.run()
            watchdog = threading.Thread(target=_watch_memory, args=(process, stop, tripped), daemon=True)
            watchdog.start()
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # Ctrl-C or the bench's own error: its own session never sees the signal
            stop.set()
            launch.stop()
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
