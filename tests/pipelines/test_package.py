"""The package stage's window for lanes that follow traffic: the champion's own run's validation
scores (the evaluate stage logs them), the last `serving.follow_window` by date, and a clear stop
where a run lacks them."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from models.lanes import SCORES, SCORES_ARTIFACTS
from models.registry import configure_tracking, use_experiment
from pipelines.package import validation_window


@pytest.fixture
def tracking(mlflow_store):
    configure_tracking()
    use_experiment()


def test_the_window_is_the_last_validation_scores_of_the_champions_run_by_date(tracking, tmp_path):
    scores = pd.DataFrame(
        {
            "declaration_id": ["A", "B", "C", "D"],
            "declaration_date": pd.to_datetime(["2021-03-02", "2021-03-01", "2021-03-03", "2021-03-02"]),
            "risk_score": [0.2, 0.1, 0.4, 0.3],
            "critical_score": [0.02, 0.01, 0.04, 0.03],
            "duty_at_risk": [20.0, 10.0, 40.0, 30.0],
        }
    )
    path = tmp_path / "validation_scores.parquet"
    scores.to_parquet(path)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(path), SCORES_ARTIFACTS)
    window = validation_window(run.info.run_id, 3)
    assert list(window) == list(SCORES)
    np.testing.assert_array_equal(window["risk_score"], [0.2, 0.3, 0.4])  # A and D on the 2nd, then C
    np.testing.assert_array_equal(window["duty_at_risk"], [20.0, 30.0, 40.0])


def test_a_champion_whose_run_has_no_scores_is_not_packaged_to_follow(tracking):
    with mlflow.start_run() as run:
        pass
    with pytest.raises(SystemExit, match=r"holds no lanes/validation_scores\.parquet") as stopped:
        validation_window(run.info.run_id, 1000)
    assert "serving.lane_thresholds: fixed" in str(stopped.value)
