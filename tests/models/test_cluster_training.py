"""Training on a real Dask cluster (tests/conftest.py: a LocalCluster of two worker processes on
loopback): a lightgbm.dask model ranks the validation window as well as the local one."""

from __future__ import annotations

import pytest

from models.cluster import ClusterTrainer
from models.training import FeatureMatrix, fit_target, window_masks
from models.tuning import precision_at
from tests.conftest import CLUSTER_WINDOW

WINDOWS = {"train_start": CLUSTER_WINDOW[0], "valid_start": "2021-01-01", "valid_end": CLUSTER_WINDOW[1]}
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


def test_a_lightgbm_dask_model_ranks_as_well_as_the_local_one(dask_client, local_features):
    matrix = FeatureMatrix(local_features[0] / "matrix")
    is_train, is_valid = window_masks(matrix.column("declaration_date"), WINDOWS)
    x, y = matrix.rows_between(0, matrix.rows), matrix.column("fraud")
    on_one_machine = fit_target(x, y, is_train, is_valid, TRAIN_PARAMS)
    on_the_cluster = fit_target(x, y, is_train, is_valid, TRAIN_PARAMS, ClusterTrainer(dask_client))
    local_precision = precision_at(on_one_machine.validation_scores, y[is_valid], 5)
    cluster_precision = precision_at(on_the_cluster.validation_scores, y[is_valid], 5)
    assert abs(cluster_precision - local_precision) <= 0.02, (cluster_precision, local_precision)
    assert 1 <= on_the_cluster.best_iteration <= TRAIN_PARAMS["max_rounds"]
    assert on_the_cluster.booster.num_trees() == on_the_cluster.refit_rounds
