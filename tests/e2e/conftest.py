"""One pipeline run and one service for all e2e modules: each costs minutes or ~10 s, so they are
built once a session. Modules that change the workspace work on a copy of it. The workspace is
made as `make bench` makes its own (bench/workspace.py), with the e2e sample of the KCS history."""

from __future__ import annotations

import shutil
import time

import pytest

from bench.workspace import RAW_FILES, copy_project, sample_kcs, workspace_env
from tests.conftest import REPO
from tests.e2e.stack import BIN, TRAIN_ROWS, VALID_ROWS, _run, contract_example, keyed_service
from tests.postgres import postgres_server, store_location  # noqa: F401 - fixtures


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, _migrated_mlflow_db) -> dict:
    """A copy of the project with a small history (the example declaration of docs/record.md
    among it), and the pipeline run in it by `dvc repro`."""
    root = tmp_path_factory.mktemp("workspace")
    copy_project(root)
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    for name, rows in zip(RAW_FILES, (TRAIN_ROWS, VALID_ROWS)):
        sample_kcs(REPO / "data/raw" / name, raw / name, rows, keep=[contract_example()["declaration_id"]])
    shutil.copy(_migrated_mlflow_db, root / "mlflow.db")
    env = workspace_env(root)
    _run([str(BIN / "dvc"), "init", "--no-scm", "-q"], root, env)
    started = time.perf_counter()
    repro = _run([str(BIN / "dvc"), "repro"], root, env)
    return {"root": root, "env": env, "repro": repro, "seconds": time.perf_counter() - started}


@pytest.fixture(scope="session")
def service(workspace):
    """The built bento served with an API key."""
    with keyed_service(workspace, workspace["root"] / "serve.log") as service:
        yield service
