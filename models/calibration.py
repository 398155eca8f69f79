"""Turning booster margins into probabilities an officer can read as "x% chance of fraud"."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of the booster's margin (log-odds): strictly increasing, so it never ties
    two declarations the booster ranked apart, and the top n% by probability is the top n% by
    model. Working on the margin, not the probability, keeps order even where the booster's own
    probability rounds to 0 or 1."""

    slope: float
    intercept: float

    @classmethod
    def fit(cls, margins: np.ndarray, labels: np.ndarray) -> Calibration:
        logistic = LogisticRegression(C=1e6)
        logistic.fit(np.asarray(margins, dtype=float).reshape(-1, 1), np.asarray(labels, dtype=int))
        slope = max(float(logistic.coef_[0, 0]), 1e-6)
        return cls(slope, float(logistic.intercept_[0]))

    def __call__(self, margins: np.ndarray) -> np.ndarray:
        z = self.slope * np.asarray(margins, dtype=float) + self.intercept
        return 1 / (1 + np.exp(-z))

    def to_dict(self) -> dict:
        return asdict(self)
