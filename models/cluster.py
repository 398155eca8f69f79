"""Past one machine: training's heavy work on the Dask cluster named by DASK_SCHEDULER_ADDRESS.

`ClusterTrainer` is `models.training.Trainer` on lightgbm.dask. The connection, its deadline and
featurize's entity histories on the cluster are `features.cluster`. Every cluster call has a
deadline: `lightgbm.dask` is known to hang after a worker dies mid-training (LightGBM issues 4771,
5920), and it must fail the stage, not stall it. Workers read the stage's files by absolute path,
so they must see the same filesystem (one machine, or a shared mount).
"""

from __future__ import annotations

import threading
from pathlib import Path

import dask
import dask.array as da
import lightgbm as lgb
import numpy as np
import pyarrow.parquet as pq
from distributed import Client
from lightgbm.dask import DaskLGBMClassifier
from sklearn.metrics import average_precision_score

from features.cluster import TASK_TIMEOUT_SECONDS, ClusterError
from features.matrix import CATEGORICAL, FEATURE_NAMES
from models.training import MatrixRows, booster_params


def _read_rows(part: str, start: int, stop: int) -> np.ndarray:
    table = pq.read_table(part, columns=FEATURE_NAMES).slice(start, stop - start)
    return table.to_pandas().to_numpy(dtype="float64")


def _with_deadline(call, what: str):
    """`call()` in a daemon thread, abandoned after TASK_TIMEOUT_SECONDS: a hung lightgbm.dask
    fit cannot be cancelled, but it must not hold the stage forever."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True, name=what)
    thread.start()
    thread.join(TASK_TIMEOUT_SECONDS)
    if thread.is_alive():
        raise ClusterError(f"{what} did not finish on the cluster within {TASK_TIMEOUT_SECONDS} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class ClusterTrainer:
    """`models.training.Trainer` on a Dask cluster with lightgbm.dask: workers read their rows
    of the matrix themselves, one partition per part; only the labels travel from here.

    lightgbm.dask has no early stopping: the early-stopped fit trains up to `max_rounds` and the
    best iteration is then read off the validation window's average precision, every round,
    with the same patience (`early_stopping_rounds`) as LightGBM's own callback."""

    def __init__(self, client: Client):
        self.client = client

    def _arrays(self, x: MatrixRows, y: np.ndarray) -> tuple[da.Array, da.Array]:
        chunks, lengths = [], []
        for part, first, end in x.matrix.part_bounds:
            start, stop = max(x.start, first), min(x.stop, end)
            if start < stop:
                read = dask.delayed(_read_rows)(str(Path(part).resolve()), start - first, stop - first)
                chunks.append(da.from_delayed(read, shape=(stop - start, len(FEATURE_NAMES)), dtype="float64"))
                lengths.append(stop - start)
        return da.concatenate(chunks), da.from_array(np.asarray(y, dtype="float64"), chunks=(tuple(lengths),))

    def _fit(self, x: MatrixRows, y: np.ndarray, train_params: dict, rounds: int) -> lgb.Booster:
        features, labels = self._arrays(x, y)
        params = booster_params(train_params)
        params.pop("num_threads")  # lightgbm.dask sets each worker's to its own thread count
        params["time_out"] = max(1, TASK_TIMEOUT_SECONDS // 60)  # LightGBM's sockets, in minutes
        model = DaskLGBMClassifier(client=self.client, n_estimators=rounds, **params)
        categorical = [FEATURE_NAMES.index(name) for name in CATEGORICAL]

        def fit() -> DaskLGBMClassifier:
            with self.client.as_current():  # lightgbm.dask's collections look for a default client
                return model.fit(features, labels, feature_name=FEATURE_NAMES, categorical_feature=categorical)

        return _with_deadline(fit, f"lightgbm.dask fit of {rounds} rounds").booster_

    def fit_early_stopped(
        self, train_x: MatrixRows, train_y: np.ndarray, valid_x: MatrixRows, valid_y: np.ndarray, train_params: dict
    ) -> lgb.Booster:
        booster = self._fit(train_x, train_y, train_params, train_params["max_rounds"])
        booster.best_iteration = best_iteration(booster, valid_x, valid_y, train_params["early_stopping_rounds"])
        return booster

    def fit_rounds(self, x: MatrixRows, y: np.ndarray, train_params: dict, rounds: int) -> lgb.Booster:
        return self._fit(x, y, train_params, rounds)


def best_iteration(booster: lgb.Booster, valid_x: MatrixRows, valid_y: np.ndarray, patience: int) -> int:
    """The round after which the validation window's average precision stopped improving for
    `patience` rounds, as lgb.early_stopping would have stopped; margins are accumulated tree by
    tree, so reading the whole curve costs one prediction."""
    features = valid_x.batch(valid_x.start, valid_x.stop)  # read once, scored once per tree
    margins = np.zeros(len(valid_x))
    best, best_score = 0, -np.inf
    for iteration in range(booster.num_trees()):
        margins += booster.predict(features, start_iteration=iteration, num_iteration=1, raw_score=True)
        score = average_precision_score(valid_y, margins)
        if score > best_score:
            best, best_score = iteration + 1, score
        elif iteration + 1 - best >= patience:
            break
    return best
