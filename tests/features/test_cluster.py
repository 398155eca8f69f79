"""Featurize's entity histories on a real Dask cluster (tests/conftest.py: a LocalCluster of two
worker processes on loopback): features from the cluster equal the local ones; a worker killed
mid-featurize changes nothing; a scheduler that does not answer fails the stage, naming its
deadline, writing nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from features.cluster import CONNECT_TIMEOUT_SECONDS, cluster_entities
from tests.conftest import REPO, featurize_parts

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def assert_same_features(matrix: pd.DataFrame, reference: pd.DataFrame) -> None:
    assert list(matrix.columns) == list(reference.columns) and len(matrix) == len(reference)
    numbers = reference.select_dtypes("number").columns
    as_floats = {"dtype": "float64", "na_value": np.nan}  # the labels are nullable integers
    np.testing.assert_allclose(
        matrix[numbers].to_numpy(**as_floats), reference[numbers].to_numpy(**as_floats), rtol=0, atol=1e-9
    )
    assert (matrix["declaration_id"] == reference["declaration_id"]).all()


def test_features_on_the_cluster_equal_the_local_ones(dask_client, validated_parts, local_features, tmp_path):
    matrix = featurize_parts(validated_parts, tmp_path, cluster_entities(dask_client))
    assert_same_features(matrix, local_features[1])
    reference = (local_features[0] / "state" / "entity_totals.parquet").read_bytes()
    assert (tmp_path / "state" / "entity_totals.parquet").read_bytes() == reference


def test_a_worker_killed_during_featurize_changes_nothing(dask_client, validated_parts, local_features, tmp_path):
    """Dask reschedules the lost tasks (the nanny starts a new worker): same features."""
    runner = cluster_entities(dask_client)
    killed = []

    def kill_one_worker_soon():
        time.sleep(0.2)  # inside the next entity's shuffle
        pid = next(iter(dask_client.run(os.getpid).values()))
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    def entities(sorted_dir, part_rows):
        for number, result in enumerate(runner(sorted_dir, part_rows)):
            if number == 1:
                threading.Thread(target=kill_one_worker_soon, daemon=True).start()
            yield result

    matrix = featurize_parts(validated_parts, tmp_path, entities)
    assert killed, "a worker was killed"
    assert killed[0] not in dask_client.run(os.getpid).values()
    assert_same_features(matrix, local_features[1])


def test_the_featurize_stage_writes_nothing_when_the_scheduler_does_not_answer(validated_parts, tmp_path):
    (tmp_path / "data" / "validated").mkdir(parents=True)
    (tmp_path / "data" / "validated" / "declarations.parquet").symlink_to(validated_parts)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": "tcp://127.0.0.1:9", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.featurize"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=CONNECT_TIMEOUT_SECONDS + 60,
    )
    assert result.returncode != 0
    assert "DASK_SCHEDULER_ADDRESS" in result.stderr
    assert f"did not answer within {CONNECT_TIMEOUT_SECONDS} s" in result.stderr
    assert not (tmp_path / "data" / "features").exists()
