"""MLflow tracking and registry: where runs go, and which version is champion."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT = "customs-risk"
# What a logged model's code (its code_paths, features/ and models/, as models.bundle loads and
# scores them) imports from outside the standard library. Written out rather than inferred: MLflow
# infers them by loading the model in a subprocess, 13 s of every log_model.
MODEL_PACKAGES = ("lightgbm", "mlflow", "numpy", "pandas", "pandera", "pyarrow", "pycountry", "scikit-learn", "scipy")


def model_requirements() -> list[str]:
    """The logged model's pip requirements: MODEL_PACKAGES at the versions this process runs."""
    return [f"{name}=={metadata.version(name)}" for name in MODEL_PACKAGES]


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


@dataclass(frozen=True)
class ChampionRule:
    """When a new version may replace the champion (params.yaml `register`, README "Champion
    rule"): at least as good on `metric`, and no worse on any guard metric by more than
    `tolerance`. The guards are what a center buys with red capacity besides hits (duty held,
    critical frauds held): a challenger that keeps precision by giving them up must not win."""

    metric: str
    guards: tuple[str, ...] = ()
    tolerance: float = 0.0

    def judge(self, new: dict[str, float], old: dict[str, float]) -> tuple[bool, str]:
        """(whether `new` may replace `old`, why), both measured on the same window."""
        value, current = new[self.metric], old[self.metric]
        if value < current:
            return False, f"{self.metric} {value:.4f} < {current:.4f}"
        lost = [
            f"{guard} {new.get(guard, float('-inf')):.4f} < {old[guard]:.4f} - {self.tolerance:g}"
            for guard in self.guards
            if guard in old and not new.get(guard, float("-inf")) >= old[guard] - self.tolerance
        ]
        if lost:
            return False, f"{self.metric} {value:.4f} >= {current:.4f} but it loses " + "; ".join(lost)
        kept = f", no guard lost more than {self.tolerance:g}" if self.guards else ""
        return True, f"{self.metric} {value:.4f} >= {current:.4f}{kept}"


def register_version(
    model_uri: str, name: str, run_id: str, metrics: dict[str, float], rule: ChampionRule, model_card: str = ""
) -> dict:
    """A new version; `champion` moves to it when the rule prefers it to the current champion
    over the same validation window, else it becomes `challenger`."""
    client = MlflowClient()
    current = champion(name)
    version = mlflow.register_model(model_uri, name)
    metric, value = rule.metric, metrics[rule.metric]
    decision: dict[str, Any] = {"name": name, "version": str(version.version), "run_id": run_id, "metric": metric}
    decision["new_value"] = value
    if current is None:
        decision.update(alias="champion", champion_value=None, reason="no champion yet")
    else:
        champion_run = client.get_run(current.run_id)
        champion_metrics = champion_run.data.metrics
        champion_value = champion_metrics.get(metric)
        same_window = champion_run.data.tags.get("validation_window") == client.get_run(run_id).data.tags.get(
            "validation_window"
        )
        decision["champion_value"] = champion_value
        decision["previous_champion"] = str(current.version)
        if champion_value is None or not same_window:
            decision.update(alias="champion", reason="champion was measured on another window")
        else:
            wins, reason = rule.judge(metrics, champion_metrics)
            decision.update(alias="champion" if wins else "challenger", reason=reason)
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
