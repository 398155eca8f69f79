"""MLflow tracking and registry: where runs go, and which version is champion."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT = "customs-risk"


def configure_tracking() -> str:
    """The embedded sqlite store unless MLFLOW_TRACKING_URI points at a team server."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def use_experiment(name: str = EXPERIMENT) -> str:
    """Create the experiment on first use; with the embedded store, artifacts go to ./mlartifacts
    (not ./mlruns, whose file store is deprecated)."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if mlflow.get_tracking_uri().startswith("sqlite:"):
            location = Path("mlartifacts").resolve().as_uri()
        experiment_id = client.create_experiment(name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def champion(name: str):
    """The current champion version, or None when no version holds the alias yet."""
    try:
        return MlflowClient().get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None


def register_version(
    model_uri: str, name: str, run_id: str, metric: str, value: float, model_card: str = ""
) -> dict:
    """A new version; `champion` moves to it when it is at least as good as the current champion
    on `metric` over the same validation window, else it becomes `challenger`."""
    client = MlflowClient()
    current = champion(name)
    version = mlflow.register_model(model_uri, name)
    decision = {"name": name, "version": str(version.version), "run_id": run_id, "metric": metric}
    decision["new_value"] = value
    if current is None:
        decision.update(alias="champion", champion_value=None, reason="no champion yet")
    else:
        champion_run = client.get_run(current.run_id)
        champion_value = champion_run.data.metrics.get(metric)
        same_window = champion_run.data.tags.get("validation_window") == client.get_run(
            run_id
        ).data.tags.get("validation_window")
        decision["champion_value"] = champion_value
        decision["previous_champion"] = str(current.version)
        if champion_value is None or not same_window:
            decision.update(alias="champion", reason="champion was measured on another window")
        elif value >= champion_value:
            decision.update(alias="champion", reason=f"{metric} {value:.4f} >= {champion_value:.4f}")
        else:
            decision.update(alias="challenger", reason=f"{metric} {value:.4f} < {champion_value:.4f}")
    client.set_registered_model_alias(name, decision["alias"], version.version)
    for key in ("alias", "reason"):
        client.set_model_version_tag(name, version.version, f"registration_{key}", decision[key])
    if model_card:
        client.update_model_version(name, version.version, description=model_card)
    # the run says what became of it, so the compare view shows the decision beside the metrics
    client.set_tag(run_id, "registration", f"{name} v{version.version}: {decision['alias']} ({decision['reason']})")
    if decision.get("champion_value") is not None:
        client.log_metric(run_id, f"champion_{metric}", decision["champion_value"])
    return decision
