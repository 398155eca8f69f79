"""The duty model: what an inspection of a fraud recovers, learned where outcomes reported it
(additional_duty), else the declared duty (docs/api.md, duty_at_risk)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from bench.synthesize import blocks
from features.matrix import training_features
from features.schema import DECLARATION_FIELDS, RECOVERED_DUTY
from models.bundle import RiskModel
from models.lanes import LanePolicy
from models.training import fit_duty
from tests.models.test_training_and_bundle import KEY, SHARES, TRAIN_PARAMS, build_model


@pytest.fixture(scope="module")
def synthetic():
    """A synthetic history whose outcomes report the duty assessed for half the declarations."""
    history = pd.concat(blocks(12_000, seed=11, block_rows=12_000, days=120), ignore_index=True)
    matrix, _ = training_features(history.drop(columns=[RECOVERED_DUTY]), 10)
    dates = history["declaration_date"]
    is_valid = (dates >= dates.quantile(0.8)).to_numpy()
    return history, matrix, ~is_valid, is_valid


def test_too_few_reported_duties_leave_the_declared_duty(synthetic):
    history, matrix, is_train, is_valid = synthetic
    fraud = history["fraud"].to_numpy()
    duty = history[RECOVERED_DUTY].to_numpy()
    known = int(((fraud == 1) & ~np.isnan(duty) & is_valid).sum())
    assert fit_duty(matrix, duty, fraud, is_train, is_valid, TRAIN_PARAMS, min_rows=known + 1) is None
    unreported = np.full(len(duty), np.nan)
    assert fit_duty(matrix, unreported, fraud, is_train, is_valid, TRAIN_PARAMS, min_rows=1) is None


def test_the_learned_duty_ranks_what_inspections_recover_better_than_the_declared_duty(synthetic):
    history, matrix, is_train, is_valid = synthetic
    fraud, duty = history["fraud"].to_numpy(), history[RECOVERED_DUTY].to_numpy()
    fitted = fit_duty(matrix, duty, fraud, is_train, is_valid, TRAIN_PARAMS, min_rows=100)
    assert fitted is not None and fitted.train_rows >= 100 and fitted.valid_rows >= 100
    judged = ((fraud == 1) & ~np.isnan(duty))[is_valid]  # frauds of the validation window with a duty
    actual = duty[is_valid][judged]
    learned = fitted.validation_estimates[judged]
    declared = matrix.loc[is_valid, "duty_exposure"].to_numpy()[judged]
    assert spearmanr(learned, actual).statistic > spearmanr(declared, actual).statistic
    assert (fitted.validation_estimates >= 0).all()  # Tweedie: never a negative duty


def test_a_model_with_a_duty_booster_scores_saves_and_explains_with_it(history, synthetic, tmp_path):
    synthetic_history, matrix, is_train, is_valid = synthetic
    fitted = fit_duty(
        matrix,
        synthetic_history[RECOVERED_DUTY].to_numpy(),
        synthetic_history["fraud"].to_numpy(),
        is_train,
        is_valid,
        TRAIN_PARAMS,
        min_rows=100,
    )
    model, _ = build_model(history)
    learning = dataclasses.replace(model, duty_booster=fitted.booster)
    records = history[DECLARATION_FIELDS].tail(1000).reset_index(drop=True)
    assessed = learning.assess(records)  # thresholds for the learned estimates, as train fits them
    lanes = LanePolicy.fit(SHARES, KEY, assessed.risk, assessed.critical, assessed.duty_at_risk)
    learning = dataclasses.replace(learning, lanes=lanes)
    scored = learning.score(records)
    inputs = learning.assess(records).inputs
    expected = scored["risk_score"] * np.maximum(fitted.booster.predict(inputs.matrix), 0)
    np.testing.assert_allclose(scored["duty_at_risk"], expected, rtol=1e-12)
    learning.save(tmp_path / "bundle")
    again = RiskModel.load(tmp_path / "bundle")
    assert again.duty_booster is not None
    pd.testing.assert_frame_equal(again.score(records), scored)
    value_picks = scored.loc[scored["selected_by"] == "value", "reasons"]
    assert len(value_picks)
    for reasons in value_picks:
        assert reasons[0]["text"].startswith("expected recovered duty ")
