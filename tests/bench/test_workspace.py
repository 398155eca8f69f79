"""bench.workspace runs each measured child in its own session (so the terminal's Ctrl-C never
reaches it): the bench itself must stop it when it is interrupted."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import psutil
import pytest

from bench.workspace import run_child


class Interrupted(Exception):
    pass


def _interrupt(signum, frame):
    raise Interrupted


def test_an_interrupted_run_stops_its_child_and_the_childs_children(tmp_path):
    started = tmp_path / "started"
    script = (
        "import pathlib, subprocess, sys, time\n"
        "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"pathlib.Path({str(started)!r}).write_text(str(grandchild.pid))\n"
        "time.sleep(60)\n"
    )

    def interrupt_once_started():
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGALRM)  # handled in the main thread, inside run_child's wait

    previous = signal.signal(signal.SIGALRM, _interrupt)
    try:
        threading.Thread(target=interrupt_once_started, daemon=True).start()
        with pytest.raises(Interrupted):
            run_child([sys.executable, "-c", script], tmp_path, dict(os.environ))
    finally:
        signal.signal(signal.SIGALRM, previous)
    grandchild = int(started.read_text())
    deadline = time.monotonic() + 5
    while _running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(grandchild), "the child's own child outlived the interrupted bench"


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE  # a zombie waits for its reaper only
    except psutil.NoSuchProcess:
        return False
