"""The pipeline's heavy work on a real Dask cluster: a LocalCluster of two worker processes on
loopback. Features from the cluster equal the local ones; a lightgbm.dask model ranks the
validation window as well as the local one; a worker killed mid-featurize changes nothing; a
scheduler that does not answer fails the stage, naming its deadline, writing nothing."""

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
from distributed import LocalCluster

from features.adapters import SOURCE_FIELDS
from features.partitioned import featurize_history, local_entities
from features.schema import LABELLED, check_declarations
from models.cluster import CONNECT_TIMEOUT_SECONDS, ClusterTrainer, cluster_entities, connect
from models.training import FeatureMatrix, fit_target, window_masks
from models.tuning import precision_at
from tests.conftest import REPO

SMOOTHING = 10
WINDOW = ("2020-01-01", "2021-03-31")
WINDOWS = {"train_start": WINDOW[0], "valid_start": "2021-01-01", "valid_end": WINDOW[1]}
TRAIN_PARAMS = {
    "seed": 42,
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "cat_smoothing": 10,
    "max_cat_to_onehot": 8,
    "max_rounds": 150,
    "early_stopping_rounds": 30,
}

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster):
    client = connect(cluster.scheduler_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def validated(kcs_records, tmp_path_factory):
    """The embedded history, typed, as three parts in no particular order."""
    records = kcs_records.drop(columns=SOURCE_FIELDS, errors="ignore")
    valid = records[records["origin_country"].ne("ZZ") & records["departure_country"].ne("ZZ")]
    typed = check_declarations(valid, LABELLED).valid.sample(frac=1, random_state=5).reset_index(drop=True)
    directory = tmp_path_factory.mktemp("validated")
    for number, part in enumerate(np.array_split(np.arange(len(typed)), 3)):
        typed.iloc[part].to_parquet(directory / f"part-{number:05d}.parquet", index=False)
    return directory


def featurize(validated, directory, entities) -> pd.DataFrame:
    featurize_history(
        validated, directory / "matrix", directory / "state", WINDOW, SMOOTHING, entities, part_rows=10_000
    )
    return pd.read_parquet(directory / "matrix")


@pytest.fixture(scope="module")
def local(validated, tmp_path_factory):
    directory = tmp_path_factory.mktemp("local")
    return directory, featurize(validated, directory, local_entities)


def assert_same_features(matrix: pd.DataFrame, reference: pd.DataFrame) -> None:
    assert list(matrix.columns) == list(reference.columns) and len(matrix) == len(reference)
    numbers = reference.select_dtypes("number").columns
    np.testing.assert_allclose(matrix[numbers].to_numpy(), reference[numbers].to_numpy(), rtol=0, atol=1e-9)
    assert (matrix["declaration_id"] == reference["declaration_id"]).all()


def test_features_on_the_cluster_equal_the_local_ones(client, validated, local, tmp_path):
    matrix = featurize(validated, tmp_path, cluster_entities(client))
    assert_same_features(matrix, local[1])
    reference = (local[0] / "state" / "entity_totals.parquet").read_bytes()
    assert (tmp_path / "state" / "entity_totals.parquet").read_bytes() == reference


def test_a_worker_killed_during_featurize_changes_nothing(client, validated, local, tmp_path):
    """Dask reschedules the lost tasks (the nanny starts a new worker): same features."""
    runner = cluster_entities(client)
    killed = []

    def kill_one_worker_soon():
        time.sleep(0.2)  # inside the next entity's shuffle
        pid = next(iter(client.run(os.getpid).values()))
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    def entities(sorted_dir, part_rows):
        for number, result in enumerate(runner(sorted_dir, part_rows)):
            if number == 1:
                threading.Thread(target=kill_one_worker_soon, daemon=True).start()
            yield result

    matrix = featurize(validated, tmp_path, entities)
    assert killed, "a worker was killed"
    assert killed[0] not in client.run(os.getpid).values()
    assert_same_features(matrix, local[1])


def test_a_lightgbm_dask_model_ranks_as_well_as_the_local_one(client, local):
    matrix = FeatureMatrix(local[0] / "matrix")
    is_train, is_valid = window_masks(matrix.column("declaration_date"), WINDOWS)
    x, y = matrix.rows_between(0, matrix.rows), matrix.column("fraud")
    on_one_machine = fit_target(x, y, is_train, is_valid, TRAIN_PARAMS)
    on_the_cluster = fit_target(x, y, is_train, is_valid, TRAIN_PARAMS, ClusterTrainer(client))
    local_precision = precision_at(on_one_machine.validation_scores, y[is_valid], 5)
    cluster_precision = precision_at(on_the_cluster.validation_scores, y[is_valid], 5)
    assert abs(cluster_precision - local_precision) <= 0.02, (cluster_precision, local_precision)
    assert 1 <= on_the_cluster.best_iteration <= TRAIN_PARAMS["max_rounds"]
    assert on_the_cluster.booster.num_trees() == on_the_cluster.refit_rounds


def test_the_featurize_stage_writes_nothing_when_the_scheduler_does_not_answer(validated, tmp_path):
    (tmp_path / "data" / "validated").mkdir(parents=True)
    (tmp_path / "data" / "validated" / "declarations.parquet").symlink_to(validated)
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
