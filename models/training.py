"""LightGBM classifiers, early-stopped on the validation window and refit on all of history."""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

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


def fit_early_stopped(
    train_x: pd.DataFrame,
    train_y: np.ndarray,
    valid_x: pd.DataFrame,
    valid_y: np.ndarray,
    train_params: dict,
) -> lgb.Booster:
    """Trees are added while the validation window improves; the booster keeps the best count."""
    train_set = lgb.Dataset(train_x, train_y, free_raw_data=False)
    valid_set = lgb.Dataset(valid_x, valid_y, reference=train_set, free_raw_data=False)
    return lgb.train(
        booster_params(train_params),
        train_set,
        num_boost_round=train_params["max_rounds"],
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(train_params["early_stopping_rounds"], verbose=False)],
    )


def refit_rounds(best_iteration: int, train_rows: int, all_rows: int) -> int:
    """More rows support proportionally more trees at the same learning rate."""
    return max(1, int(round(best_iteration * all_rows / max(train_rows, 1))))


def fit_rounds(x: pd.DataFrame, y: np.ndarray, train_params: dict, rounds: int) -> lgb.Booster:
    return lgb.train(booster_params(train_params), lgb.Dataset(x, y), num_boost_round=rounds)


@dataclass(frozen=True)
class FittedTarget:
    booster: lgb.Booster  # refit on all of history: the served one
    calibration: Calibration
    validation_scores: np.ndarray  # calibrated, from the validation-window booster: out of sample
    best_iteration: int
    refit_rounds: int


def fit_target(
    x: pd.DataFrame, y: np.ndarray, is_train: np.ndarray, is_valid: np.ndarray, train_params: dict
) -> FittedTarget:
    """One target end to end: early-stopped on the validation window, calibrated on its
    out-of-sample margins, then refit on all rows with the tree count scaled to the rows."""
    early = fit_early_stopped(x[is_train], y[is_train], x[is_valid], y[is_valid], train_params)
    margins = early.predict(x[is_valid], num_iteration=early.best_iteration, raw_score=True)
    calibration = Calibration.fit(margins, y[is_valid])
    rounds = refit_rounds(early.best_iteration, int(is_train.sum()), len(x))
    final = fit_rounds(x, y, train_params, rounds)
    return FittedTarget(final, calibration, calibration(margins), early.best_iteration, rounds)
