"""One pipeline run and one service for all e2e modules: each costs minutes or ~10 s, so they are
built once a session. Modules that change the workspace work on a copy of it."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.conftest import REPO
from tests.e2e.stack import BIN, TRAIN_ROWS, VALID_ROWS, _run, _sample_kcs, keyed_service


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, _migrated_mlflow_db) -> dict:
    """A copy of the project with a small history, and the pipeline run in it by `dvc repro`."""
    root = tmp_path_factory.mktemp("workspace")
    for name in ("features", "models", "serving", "pipelines"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    (root / "data" / "feedback").mkdir()
    _sample_kcs(REPO / "data/raw/df_syn_train_eng.csv", raw / "df_syn_train_eng.csv", TRAIN_ROWS)
    _sample_kcs(REPO / "data/raw/df_syn_valid_eng.csv", raw / "df_syn_valid_eng.csv", VALID_ROWS)
    shutil.copy(_migrated_mlflow_db, root / "mlflow.db")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "BENTOML_HOME": str(root / ".bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "RISK_AUDIT_DB": str(root / "data/serving/audit.db"),
        "PYTHONDONTWRITEBYTECODE": "1",
        # LightGBM's OpenMP threads spin while they wait: on a busy 2-core machine that made a
        # 3,000-row training take 65 s instead of 2.5 s
        "OMP_WAIT_POLICY": "passive",
    }
    env.pop("RISK_API_KEYS", None)
    _run([str(BIN / "dvc"), "init", "--no-scm", "-q"], root, env)
    started = time.perf_counter()
    repro = _run([str(BIN / "dvc"), "repro"], root, env)
    return {"root": root, "env": env, "repro": repro, "seconds": time.perf_counter() - started}


@pytest.fixture(scope="session")
def service(workspace):
    """The built bento served with an API key."""
    with keyed_service(workspace, workspace["root"] / "serve.log") as service:
        yield service
