"""Calibration: booster scores -> probabilities, without changing the ranking."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import rankdata

from models.calibration import Calibration


def _logit(p):
    return np.log(p / (1 - p))


def _window(n: int, seed: int):
    """True fraud probabilities, labels drawn from them, and a mis-scaled booster margin
    (the log-odds of the cube of the probability)."""
    rng = np.random.default_rng(seed)
    true_p = np.clip(rng.beta(1.2, 3.0, n), 0.002, 0.998)
    labels = (rng.random(n) < true_p).astype(int)
    return true_p, labels, _logit(true_p**3)


@pytest.fixture(scope="module")
def fitted():
    true_p, labels, raw = _window(20_000, seed=11)
    return Calibration.fit(raw, labels), (true_p, labels, raw)


def test_mapping_is_strictly_increasing(fitted):
    calibration, _ = fitted
    grid = np.linspace(-12, 12, 5001)
    out = calibration(grid)
    assert np.all(np.diff(out) > 0)
    assert calibration.slope > 0


def test_ranking_is_preserved_exactly(fitted):
    calibration, (_, _, raw) = fitted
    out = calibration(raw)
    # same order and no new ties: the top n% by probability is the top n% by model
    assert np.array_equal(rankdata(out, method="min"), rankdata(raw, method="min"))
    assert np.array_equal(np.argsort(-out, kind="stable"), np.argsort(-raw, kind="stable"))


def test_extreme_raw_scores_keep_their_order(fitted):
    """Margins whose booster probabilities would round to 0 or 1 keep their order."""
    calibration, _ = fitted
    raw = np.array([-40.0, -38.0, -30.0, -29.9])
    assert np.all(np.diff(calibration(raw)) > 0)


def test_probabilities_are_strictly_between_zero_and_one(fitted):
    calibration, (_, _, raw) = fitted
    out = calibration(np.concatenate([raw, [-20.7, -9.2, 0.0, 6.9]]))
    assert np.all(np.isfinite(out))
    assert np.all((out > 0) & (out < 1))


def test_improves_brier_over_mis_scaled_scores():
    _, labels, raw = _window(20_000, seed=1)
    calibration = Calibration.fit(raw, labels)
    # judged on a fresh window drawn the same way, not the rows it was fitted on
    true_p, held_labels, held_raw = _window(20_000, seed=2)
    brier_raw = np.mean((1 / (1 + np.exp(-held_raw)) - held_labels) ** 2)
    brier_calibrated = np.mean((calibration(held_raw) - held_labels) ** 2)
    brier_oracle = np.mean((true_p - held_labels) ** 2)
    assert brier_calibrated < brier_raw - 0.01
    assert brier_calibrated < brier_oracle + 0.01  # close to what the true probabilities score
    # the average probability matches the observed fraud rate
    assert calibration(held_raw).mean() == pytest.approx(held_labels.mean(), abs=0.01)


def test_fit_is_the_maximum_likelihood_platt_scaling(fitted):
    """Compared with an independent fit of p = sigmoid(a * margin + b) by likelihood."""
    calibration, (_, labels, raw) = fitted
    z = raw

    def loss(theta):
        t = theta[0] * z + theta[1]
        return np.sum(np.logaddexp(0, t) - labels * t)

    best = minimize(loss, x0=[1.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 5000})
    assert calibration.slope == pytest.approx(best.x[0], rel=1e-3)
    assert calibration.intercept == pytest.approx(best.x[1], rel=1e-3, abs=1e-3)
    # a cube of the probability has about a third of its log-odds slope
    assert 0.2 < calibration.slope < 0.6


def test_anti_correlated_scores_still_give_an_increasing_mapping():
    """A booster worse than random must not flip the ranking: the slope is kept positive."""
    true_p, labels, _ = _window(5_000, seed=3)
    calibration = Calibration.fit(-_logit(true_p), labels)
    assert calibration.slope > 0
    out = calibration(np.linspace(-5, 5, 99))
    assert np.all(np.diff(out) > 0)


def test_round_trips_through_a_dict(fitted):
    calibration, (_, _, raw) = fitted
    again = Calibration(**calibration.to_dict())
    assert again == calibration
    assert np.array_equal(again(raw), calibration(raw))
