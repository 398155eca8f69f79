"""Hyperparameter search judged the way a targeting center works: the fraud model by precision in
the top 5%, the critical model by how well it ranks the rare critical frauds (PR AUC)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import average_precision_score

from models.metrics import top_share
from models.training import Data, fit_early_stopped, predict, rows_of


def precision_at(scores: np.ndarray, labels: np.ndarray, rate_percent: float) -> float:
    return float(np.asarray(labels)[top_share(scores, rate_percent)].mean())


def recall_at(scores: np.ndarray, labels: np.ndarray, rate_percent: float) -> float:
    labels = np.asarray(labels)
    return float(labels[top_share(scores, rate_percent)].sum() / max(labels.sum(), 1))


@dataclass(frozen=True)
class Objective:
    """What a trial is judged by on the validation window: the value maximised, then figures
    kept beside it in the trial table."""

    label: str
    value: Callable[[dict[str, float]], float]
    figures: Callable[[np.ndarray, np.ndarray], dict[str, float]]


# precision@5% with precision@10% as a tie-breaker a thousand times smaller: near the ceiling
# many settings tie at 5%
FRAUD = Objective(
    "fraud",
    lambda f: f["precision_at_5"] + 1e-3 * f["precision_at_10"],
    lambda s, y: {"precision_at_5": precision_at(s, y, 5), "precision_at_10": precision_at(s, y, 10)},
)
# critical frauds are a few per thousand declarations: recall in a small share moves by whole
# declarations, so the search follows PR AUC over the whole ranking and keeps recall@5% to read
CRITICAL = Objective(
    "critical_fraud",
    lambda f: f["pr_auc"],
    lambda s, y: {
        "pr_auc": float(average_precision_score(y, s)) if 0 < y.sum() < len(y) else 0.0,
        "recall_at_5": recall_at(s, y, 5),
    },
)


# searched parameter -> (low, high, log scale); integers where params.yaml has integers. Bounded
# on purpose: every score walks every tree (twice for a declaration with reasons: its leaf indices
# read the reasons' table, models.contributions), and that table holds a row per leaf of every tree.
# (When reasons were TreeSHAP, 1,000 declarations took 50 s at 63 leaves and rate 0.05.)
SEARCH_SPACE = {
    "num_leaves": (15, 63, True),
    "learning_rate": (0.08, 0.2, True),
    "min_data_in_leaf": (5, 100, True),
    "feature_fraction": (0.4, 1.0, False),
    "lambda_l2": (1e-3, 10.0, True),
    "cat_smoothing": (1.0, 50.0, True),
}


def suggest(trial: optuna.Trial, base: dict) -> dict:
    params = dict(base)
    for name, (low, high, log) in SEARCH_SPACE.items():
        if isinstance(base[name], int):
            params[name] = trial.suggest_int(name, low, high, log=log)
        else:
            params[name] = trial.suggest_float(name, low, high, log=log)
    return params


def tune(
    x: Data,
    y: np.ndarray,
    is_train: np.ndarray,
    is_valid: np.ndarray,
    base_params: dict,
    trials: int,
    seed: int,
    objective: Objective = FRAUD,
) -> tuple[dict, pd.DataFrame]:
    """Best parameters and the trial table, by the objective on the validation window. Seeded
    sampler, sequential trials, deterministic LightGBM: reruns agree."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    train_x, valid_x, valid_y = rows_of(x, is_train), rows_of(x, is_valid), y[is_valid]

    def judged(trial: optuna.Trial) -> float:
        params = suggest(trial, base_params)
        booster = fit_early_stopped(train_x, y[is_train], valid_x, valid_y, params)
        scores = predict(booster, valid_x, num_iteration=booster.best_iteration)
        figures = objective.figures(scores, valid_y)
        for name, figure in figures.items():
            trial.set_user_attr(name, figure)
        trial.set_user_attr("best_iteration", booster.best_iteration)
        shown = ", ".join(f"{name} {figure:.4f}" for name, figure in figures.items())
        print(f"tune: {objective.label} trial {trial.number + 1}/{trials}: {shown}", flush=True)
        return objective.value(figures)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial({name: base_params[name] for name in SEARCH_SPACE})  # params.yaml first
    study.optimize(judged, n_trials=trials)
    best = {**base_params, **study.best_params}
    table = study.trials_dataframe(attrs=("number", "value", "params", "user_attrs"))
    return best, table
