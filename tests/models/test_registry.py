"""The registry decides the champion (docs/design.md invariant 4)."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from models.registry import champion, configure_tracking, register_version, use_experiment

NAME = "customs-risk"
METRIC = "precision_at_5"
WINDOW = "2021-01-01..2021-03-31"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[float]:
        return [0.5] * len(model_input)


@pytest.fixture
def tracking(mlflow_store):
    uri = configure_tracking()
    assert uri == mlflow_store
    use_experiment()
    return MlflowClient()


def _run(value: float, window: str = WINDOW) -> tuple[str, str]:
    """A real run: the validation window tag, the champion metric and a logged model."""
    with mlflow.start_run() as run:
        mlflow.set_tag("validation_window", window)
        mlflow.log_metric(METRIC, value)
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
    return info.model_uri, run.info.run_id


def _register(value: float, window: str = WINDOW) -> dict:
    model_uri, run_id = _run(value, window)
    return register_version(model_uri, NAME, run_id, METRIC, value)


def _alias(client: MlflowClient, alias: str) -> str:
    return str(client.get_model_version_by_alias(NAME, alias).version)


def test_experiment_artifacts_are_not_in_mlruns(tracking):
    experiment = tracking.get_experiment_by_name("customs-risk")
    assert experiment is not None
    assert "mlartifacts" in experiment.artifact_location
    assert "mlruns" not in experiment.artifact_location


def test_first_version_becomes_champion(tracking):
    assert champion(NAME) is None
    decision = _register(0.40)
    assert decision["alias"] == "champion"
    assert decision["version"] == "1"
    assert _alias(tracking, "champion") == "1"
    assert str(champion(NAME).version) == "1"
    tags = tracking.get_model_version(NAME, "1").tags
    assert tags["registration_alias"] == "champion"
    assert tags["registration_reason"]


def test_worse_model_on_the_same_window_is_challenger(tracking):
    _register(0.40)
    model_uri, run_id = _run(0.35)
    decision = register_version(model_uri, NAME, run_id, METRIC, 0.35)
    assert decision["alias"] == "challenger"
    assert decision["version"] == "2"
    assert decision["champion_value"] == pytest.approx(0.40)
    assert _alias(tracking, "champion") == "1"
    assert _alias(tracking, "challenger") == "2"
    version = tracking.get_model_version(NAME, "2")
    assert version.run_id == run_id
    assert version.tags["registration_alias"] == "challenger"
    assert "0.3500 < 0.4000" in version.tags["registration_reason"]
    # the champion's own registration tags are untouched
    assert tracking.get_model_version(NAME, "1").tags["registration_alias"] == "champion"


@pytest.mark.parametrize("value", [0.40, 0.45])
def test_equal_or_better_model_takes_the_champion_alias(tracking, value):
    _register(0.40)
    decision = _register(value)
    assert decision["alias"] == "champion"
    assert decision["previous_champion"] == "1"
    assert _alias(tracking, "champion") == "2"
    version = tracking.get_model_version(NAME, "2")
    assert version.tags["registration_alias"] == "champion"
    assert ">=" in version.tags["registration_reason"]


def test_champion_is_compared_with_the_current_champion_not_the_latest(tracking):
    _register(0.40)  # 1: champion
    _register(0.30)  # 2: challenger
    decision = _register(0.35)  # better than 2, worse than the champion 1
    assert decision["alias"] == "challenger"
    assert _alias(tracking, "champion") == "1"
    assert _alias(tracking, "challenger") == "3"
    decision = _register(0.50)
    assert decision["alias"] == "champion"
    assert _alias(tracking, "champion") == "4"
    assert decision["champion_value"] == pytest.approx(0.40)


def test_decision_names_the_run_and_metric(tracking):
    model_uri, run_id = _run(0.42)
    decision = register_version(model_uri, NAME, run_id, METRIC, 0.42)
    assert decision["run_id"] == run_id
    assert decision["metric"] == METRIC
    assert decision["new_value"] == 0.42
    assert tracking.get_model_version(NAME, decision["version"]).run_id == run_id
