"""The registry decides the champion (docs/design.md invariant 4)."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from models.registry import ChampionRule, champion, configure_tracking, register_version, use_experiment

NAME = "customs-risk"
METRIC = "precision_at_5"
WINDOW = "2021-01-01..2021-03-31"
GUARDS = ("lane_red_duty_share", "lane_red_critical_share")
RULE = ChampionRule(METRIC, GUARDS, 0.01)

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


def _run(value: float, window: str = WINDOW, guards: dict | None = None) -> tuple[str, str]:
    """A real run: the validation window tag, the champion metric, the guards and a logged model."""
    with mlflow.start_run() as run:
        mlflow.set_tag("validation_window", window)
        mlflow.log_metrics({METRIC: value, **(guards or {})})
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
    return info.model_uri, run.info.run_id


def _register(value: float, window: str = WINDOW, guards: dict | None = None) -> dict:
    model_uri, run_id = _run(value, window, guards)
    return register_version(model_uri, NAME, run_id, {METRIC: value, **(guards or {})}, RULE)


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
    decision = register_version(model_uri, NAME, run_id, {METRIC: 0.35}, RULE)
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
    decision = register_version(model_uri, NAME, run_id, {METRIC: 0.42}, RULE)
    assert decision["run_id"] == run_id
    assert decision["metric"] == METRIC
    assert decision["new_value"] == 0.42
    assert tracking.get_model_version(NAME, decision["version"]).run_id == run_id


KEPT = {"lane_red_duty_share": 0.90, "lane_red_critical_share": 0.60}


@pytest.mark.parametrize("guard", GUARDS)
def test_a_challenger_that_keeps_precision_but_loses_a_guard_stays_challenger(tracking, guard):
    _register(0.40, guards=KEPT)
    decision = _register(0.45, guards={**KEPT, guard: KEPT[guard] - 0.05})
    assert decision["alias"] == "challenger"
    assert _alias(tracking, "champion") == "1"
    assert guard in decision["reason"] and "loses" in decision["reason"]


def test_a_guard_within_the_tolerance_does_not_block_the_champion(tracking):
    _register(0.40, guards=KEPT)
    decision = _register(0.40, guards={**KEPT, "lane_red_critical_share": KEPT["lane_red_critical_share"] - 0.009})
    assert decision["alias"] == "champion"
    assert _alias(tracking, "champion") == "2"


def test_champion_rule_judges_precision_first_and_every_guard():
    old = {METRIC: 0.9, **KEPT}
    assert RULE.judge({METRIC: 0.89, "lane_red_duty_share": 1.0, "lane_red_critical_share": 1.0}, old)[0] is False
    assert RULE.judge({METRIC: 0.9, **KEPT}, old)[0] is True
    # a guard the new run does not report counts as lost; one the champion never had is skipped
    assert RULE.judge({METRIC: 0.95, "lane_red_duty_share": 0.9}, old)[0] is False
    assert RULE.judge({METRIC: 0.95}, {METRIC: 0.9})[0] is True
