"""Turning raw booster scores into probabilities an officer can read as "x% chance of fraud"."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Calibration:
    """Platt scaling on the log-odds: strictly increasing, so it never ties two declarations the
    booster ranked apart, and the top n% by probability is the top n% by model."""

    slope: float
    intercept: float

    @classmethod
    def fit(cls, raw_scores: np.ndarray, labels: np.ndarray) -> Calibration:
        logistic = LogisticRegression(C=1e6)
        logistic.fit(_logit(raw_scores).reshape(-1, 1), np.asarray(labels, dtype=int))
        slope = max(float(logistic.coef_[0, 0]), 1e-6)
        return cls(slope, float(logistic.intercept_[0]))

    def __call__(self, raw_scores: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(self.slope * _logit(raw_scores) + self.intercept)))

    def to_dict(self) -> dict:
        return asdict(self)
