"""LightGBM classifiers, early-stopped on the validation window and refit on all of history.

Training data is either a feature frame held in memory or `MatrixRows`: a range of the
partitioned feature matrix that LightGBM reads a row group at a time (`lgb.Sequence`), so the
binned dataset (about one byte per feature and row) is all the history that training holds.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeAlias

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.matrix import CATEGORICAL, FEATURE_NAMES, model_input
from features.partitioned import CARRIED, parts_of, read_part
from models.calibration import Calibration

NON_BOOSTER_KEYS = {"max_rounds", "early_stopping_rounds", "seed"}


def booster_params(train_params: dict) -> dict:
    """LightGBM parameters from params.yaml's `train` section, seeded and deterministic."""
    params = {key: value for key, value in train_params.items() if key not in NON_BOOSTER_KEYS}
    params.update(
        objective="binary",
        metric="average_precision",
        seed=train_params["seed"],
        deterministic=True,
        force_row_wise=True,
        num_threads=2,
        verbosity=-1,
    )
    return params


class FeatureMatrix:
    """The featurize stage's partitioned matrix: rows in (date, ID) order, row groups indexed."""

    def __init__(self, directory: Path):
        self.parts = parts_of(directory)
        groups = []  # (part, row group, first row)
        self.part_bounds = []  # (part, first row, end row)
        offset = 0
        for part in self.parts:
            read_part(part, [*FEATURE_NAMES, *CARRIED], schema_only=True)  # unreadable or short: named
            metadata = pq.ParquetFile(part).metadata
            first = offset
            for group in range(metadata.num_row_groups):
                groups.append((part, group, offset))
                offset += metadata.row_group(group).num_rows
            self.part_bounds.append((part, first, offset))
        self.groups = groups
        self.group_starts = np.array([start for _, _, start in groups] + [offset], dtype="int64")
        self.rows = offset

    def column(self, name: str) -> np.ndarray:
        """One column of every row (labels, dates, IDs): small beside the features."""
        return np.concatenate([read_part(part, [name]).column(name).to_numpy() for part in self.parts])

    def frame(self, start: int, stop: int, columns: list[str]) -> pd.DataFrame:
        """Rows [start, stop) of some columns, read group by group."""
        first, last = np.searchsorted(self.group_starts, [start, stop], side="right") - 1
        pieces = []
        for index in range(first, min(last, len(self.groups) - 1) + 1):
            part, group, offset = self.groups[index]
            table = pq.ParquetFile(part).read_row_group(group, columns=columns).to_pandas()
            pieces.append(table.iloc[max(start - offset, 0) : stop - offset])
        return pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame(columns=columns)

    def rows_between(self, start: int, stop: int) -> MatrixRows:
        return MatrixRows(self, start, stop)


class MatrixRows(lgb.Sequence):
    """Rows of a FeatureMatrix as the boosters' float input, for lgb.Dataset: a run [start, stop),
    or, where a window holds rows that cannot be learned from (declarations nobody inspected),
    the sorted absolute `positions` of the rows kept."""

    def __init__(self, matrix: FeatureMatrix, start: int, stop: int, positions: np.ndarray | None = None):
        self.matrix, self.start, self.stop = matrix, start, stop
        self.positions = positions
        self.batch_size = 65_536
        self._cached: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.stop - self.start if self.positions is None else len(self.positions)

    def _group(self, index: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != index:
            part, group, _ = self.matrix.groups[index]
            table = pq.ParquetFile(part).read_row_group(group, columns=FEATURE_NAMES)
            self._cached = (index, table.to_pandas().to_numpy(dtype="float64"))
        return self._cached[1]

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, _ = index.indices(len(self))
            return self.take(start, stop)
        return self.take(int(index), int(index) + 1)[0]

    def take(self, first: int, end: int) -> np.ndarray:
        """Rows [first, end) of this selection (relative) as one float array."""
        if self.positions is None:
            return self.batch(self.start + first, self.start + end)
        rows = self.positions[first:end]
        starts = self.matrix.group_starts
        groups = np.searchsorted(starts, rows, side="right") - 1
        out = np.empty((len(rows), len(FEATURE_NAMES)))
        for group in np.unique(groups):
            mine = groups == group
            out[mine] = self._group(int(group))[rows[mine] - starts[group]]
        return out

    def batch(self, start: int, stop: int) -> np.ndarray:
        """Matrix rows [start, stop) (absolute) as one float array."""
        starts = self.matrix.group_starts
        first, last = np.searchsorted(starts, [start, stop - 1], side="right") - 1
        pieces = [self._group(g)[max(start - starts[g], 0) : stop - starts[g]] for g in range(first, last + 1)]
        return np.concatenate(pieces) if pieces else np.empty((0, len(FEATURE_NAMES)))

    def subset(self, mask: np.ndarray) -> MatrixRows:
        """The rows a boolean mask selects: a run stays a run (windows are time ranges and the
        matrix is in time order); anything else keeps its positions."""
        selected = np.flatnonzero(mask)
        if self.positions is not None:
            return MatrixRows(self.matrix, self.start, self.stop, self.positions[selected])
        if len(selected) and selected[-1] - selected[0] + 1 != len(selected):
            return MatrixRows(self.matrix, self.start, self.stop, self.start + selected)
        first = int(selected[0]) if len(selected) else 0
        return MatrixRows(self.matrix, self.start + first, self.start + first + len(selected))


Data: TypeAlias = pd.DataFrame | MatrixRows


def rows_of(x: Data, mask: np.ndarray) -> Data:
    return x.subset(mask) if isinstance(x, MatrixRows) else x[mask]


def dataset(
    x: Data, y: np.ndarray, reference: lgb.Dataset | None = None, weight: np.ndarray | None = None
) -> lgb.Dataset:
    # numbers, not a frame: a booster that never saw a pandas frame keeps no category lists of
    # its own, and scores the state's categorical frames and their codes alike
    data = x if isinstance(x, MatrixRows) else model_input(x).to_numpy()
    return lgb.Dataset(
        data,
        y,
        reference=reference,
        weight=weight,
        feature_name=FEATURE_NAMES,
        categorical_feature=CATEGORICAL,
        free_raw_data=False,
    )


def predict(booster: lgb.Booster, x: Data, **options) -> np.ndarray:
    """Predictions for in-memory features, or for matrix rows a batch at a time."""
    if not isinstance(x, MatrixRows):
        return booster.predict(model_input(x), **options)
    step = x.batch_size
    return np.concatenate(
        [booster.predict(x.take(start, min(start + step, len(x))), **options) for start in range(0, len(x), step)]
        or [np.empty(0)]
    )


def fit_early_stopped(
    train_x: Data, train_y: np.ndarray, valid_x: Data, valid_y: np.ndarray, train_params: dict
) -> lgb.Booster:
    """Trees are added while the validation window improves; the booster keeps the best count."""
    train_set = dataset(train_x, train_y)
    return _early_stopped(
        booster_params(train_params), train_set, dataset(valid_x, valid_y, reference=train_set), train_params
    )


def _early_stopped(params: dict, train_set: lgb.Dataset, valid_set: lgb.Dataset, train_params: dict) -> lgb.Booster:
    return lgb.train(
        params,
        train_set,
        num_boost_round=train_params["max_rounds"],
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(train_params["early_stopping_rounds"], verbose=False)],
    )


def refit_rounds(best_iteration: int, train_rows: int, all_rows: int) -> int:
    """More rows support proportionally more trees at the same learning rate."""
    return max(1, round(best_iteration * all_rows / max(train_rows, 1)))


def fit_rounds(x: Data, y: np.ndarray, train_params: dict, rounds: int) -> lgb.Booster:
    return lgb.train(booster_params(train_params), dataset(x, y), num_boost_round=rounds)


@dataclass(frozen=True)
class FittedTarget:
    booster: lgb.Booster  # refit on all of history: the served one
    calibration: Calibration
    validation_scores: np.ndarray  # calibrated, from the validation-window booster: out of sample
    best_iteration: int
    refit_rounds: int


class Trainer(Protocol):
    """Where boosters are fitted: this process (the module's functions), or a Dask cluster
    (`models.cluster.ClusterTrainer`). Everything else about a target is the same."""

    def fit_early_stopped(
        self, train_x: Data, train_y: np.ndarray, valid_x: Data, valid_y: np.ndarray, train_params: dict
    ) -> lgb.Booster: ...

    def fit_rounds(self, x: Data, y: np.ndarray, train_params: dict, rounds: int) -> lgb.Booster: ...


LOCAL: Trainer = sys.modules[__name__]


def fit_target(
    x: Data, y: np.ndarray, is_train: np.ndarray, is_valid: np.ndarray, train_params: dict, trainer: Trainer = LOCAL
) -> FittedTarget:
    """One target end to end: early-stopped on the validation window, calibrated on its
    out-of-sample margins, then refit on all rows with the tree count scaled to the rows.

    Only inspected rows (a label, not null) are learned from and judged on; every validation
    row is scored, inspected or not, since lanes share out all of the traffic."""
    y = np.asarray(y, dtype="float64")
    labelled = ~np.isnan(y)
    learn, judge = is_train & labelled, is_valid & labelled
    judged_x = rows_of(x, judge)
    early = trainer.fit_early_stopped(rows_of(x, learn), y[learn], judged_x, y[judge], train_params)
    margins = predict(early, judged_x, num_iteration=early.best_iteration, raw_score=True)
    calibration = Calibration.fit(margins, y[judge])
    if (is_valid & ~labelled).any():
        margins = predict(early, rows_of(x, is_valid), num_iteration=early.best_iteration, raw_score=True)
    rounds = refit_rounds(early.best_iteration, int(learn.sum()), int(labelled.sum()))
    final = trainer.fit_rounds(rows_of(x, labelled), y[labelled], train_params, rounds)
    return FittedTarget(final, calibration, calibration(margins), early.best_iteration, rounds)


@dataclass(frozen=True)
class FittedDuty:
    booster: lgb.Booster  # refit on all of history: the served one
    validation_estimates: np.ndarray  # from the training-window booster: out of sample
    train_rows: int  # frauds with a reported duty it learned from
    valid_rows: int


# Recovered duty is zero for most and huge for a few frauds: Tweedie fits such amounts (never
# negative, variance growing with the mean) and its mean is the expected duty a pick recovers.
DUTY_OBJECTIVE = {"objective": "tweedie", "metric": "tweedie"}


def fit_duty(
    x: Data,
    duty: np.ndarray,
    fraud: np.ndarray,
    is_train: np.ndarray,
    is_valid: np.ndarray,
    train_params: dict,
    min_rows: int,
) -> FittedDuty | None:
    """The duty an inspection of a fraud recovers, learned from the frauds whose outcome reported
    it (`additional_duty`), or None when either window holds fewer than `min_rows` of them: the
    declared duty is then the estimate. Every other row is in the data with weight 0, so the
    matrix streams as it does for the classifiers (a window is one run of rows)."""
    known = (np.asarray(fraud) == 1) & ~np.isnan(np.asarray(duty, dtype=float))
    if min((known & is_train).sum(), (known & is_valid).sum()) < min_rows:
        return None
    label, weight = np.where(known, duty, 0.0), known.astype("float64")
    params = {**booster_params(train_params), **DUTY_OBJECTIVE}
    train_set = dataset(rows_of(x, is_train), label[is_train], weight=weight[is_train])
    valid_set = dataset(rows_of(x, is_valid), label[is_valid], reference=train_set, weight=weight[is_valid])
    early = _early_stopped(params, train_set, valid_set, train_params)
    estimates = predict(early, rows_of(x, is_valid), num_iteration=early.best_iteration)
    rounds = refit_rounds(early.best_iteration, int(is_train.sum()), len(x))
    final = lgb.train(params, dataset(x, label, weight=weight), num_boost_round=rounds)
    return FittedDuty(final, estimates, int((known & is_train).sum()), int((known & is_valid).sum()))


def window_masks(dates: np.ndarray, windows: dict) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows): time is the split, validation the most recent window."""
    dates = np.asarray(dates, dtype="datetime64[ns]")
    is_train = dates < np.datetime64(windows["valid_start"])
    is_valid = (dates >= np.datetime64(windows["valid_start"])) & (dates <= np.datetime64(windows["valid_end"]))
    return is_train, is_valid


def most_recent(mask: np.ndarray, rows: int) -> np.ndarray:
    """The last `rows` rows a mask selects (rows are in time order): a bounded sample that stays
    closest to the validation window."""
    selected = np.flatnonzero(mask)
    bounded = np.zeros_like(mask)
    bounded[selected[-rows:] if rows else selected[:0]] = True
    return bounded
