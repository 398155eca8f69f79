"""bench.workspace runs each measured child in its own session (so the terminal's Ctrl-C never
reaches it): the bench itself must stop it when it is interrupted, the child's own children too,
and say so only once they are gone. Nothing here waits on a clock: every step waits for the event
it needs (a pipe written, a process exited), so machine load and test order change only how long
it takes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading

import psutil
import pytest

from bench.workspace import run_child


class Interrupted(Exception):
    pass


def _interrupt(signum, frame):
    raise Interrupted


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE  # a zombie waits for its reaper only
    except psutil.NoSuchProcess:
        return False


def _interrupted_run(tmp_path, grandchild_code: str) -> list[int]:
    """run_child on a child that starts a grandchild (`grandchild_code`) and sleeps, interrupted
    (SIGALRM, handled in the main thread, inside run_child's wait) once the grandchild is up:
    it says so through a FIFO, which the interrupting thread blocks on. The grandchild's pid, and
    whatever else it wrote there."""
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    grandchild = f"import pathlib, signal, sys, time\n{grandchild_code}\n"
    script = (
        "import os, subprocess, sys, time\n"
        f"grandchild = subprocess.Popen([sys.executable, '-c', {grandchild!r}, {str(fifo)!r}])\n"
        "sys.exit(grandchild.wait())\n"  # a grandchild that fails ends the run, and the test with it
    )
    said: list[str] = []

    def interrupt_once_started():
        with open(fifo) as started:  # blocks until a writer opens it; read to its close
            said.extend(started.read().split())
        if said:
            signal.pthread_kill(main, signal.SIGALRM)

    main = threading.main_thread().ident
    assert main == threading.get_ident()
    previous = signal.signal(signal.SIGALRM, _interrupt)
    interrupter = threading.Thread(target=interrupt_once_started, daemon=True)
    interrupter.start()
    try:
        with pytest.raises(Interrupted):
            run_child([sys.executable, "-c", script], tmp_path, dict(os.environ))
    finally:
        with contextlib.suppress(OSError):  # the run ended unannounced: release the reader
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        interrupter.join()
        signal.signal(signal.SIGALRM, previous)
    return [int(word) for word in said]


def test_an_interrupted_run_stops_its_child_and_the_childs_children(tmp_path):
    pids = _interrupted_run(
        tmp_path,
        "with open(sys.argv[1], 'w') as fifo:\n    fifo.write(str(__import__('os').getpid()))\ntime.sleep(600)",
    )
    assert not _running(pids[0]), "the child's own child outlived the interrupted bench"


def test_run_child_returns_only_once_a_grandchild_that_cleans_up_has_exited(tmp_path):
    """A grandchild that takes its time on SIGTERM (cleanup) is waited for, not abandoned: when
    run_child returns, it has finished."""
    cleaned = tmp_path / "cleaned"
    code = (
        "def stop(signum, frame):\n"
        "    time.sleep(1)\n"  # the cleanup's work; run_child must wait for it, however long
        f"    pathlib.Path({str(cleaned)!r}).write_text('done')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "with open(sys.argv[1], 'w') as fifo:\n    fifo.write(str(__import__('os').getpid()))\n"
        "time.sleep(600)"
    )
    pids = _interrupted_run(tmp_path, code)
    assert cleaned.read_text() == "done"
    assert not _running(pids[0])


def test_an_interrupt_while_the_child_is_being_started_stops_it(tmp_path, monkeypatch):
    """The interrupt lands inside Popen, the child already running (what a busy machine did to the
    first test: the signal came before run_child was ready for it, and nothing stopped the child)."""
    real_popen = subprocess.Popen
    started: list[int] = []
    main = threading.main_thread().ident

    def popen_interrupted_on_return(*args, **kwargs):
        process = real_popen(*args, **kwargs)
        started.append(process.pid)
        signal.pthread_kill(main, signal.SIGALRM)
        return process

    monkeypatch.setattr(subprocess, "Popen", popen_interrupted_on_return)
    previous = signal.signal(signal.SIGALRM, _interrupt)
    try:
        with pytest.raises(Interrupted):
            run_child([sys.executable, "-c", "import time; time.sleep(600)"], tmp_path, dict(os.environ))
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert started and not _running(started[0]), "the child outlived the interrupted bench"
