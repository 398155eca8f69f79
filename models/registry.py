"""MLflow tracking and registry: where runs go, and how a new version is judged against the
champion (the champion rule, on evidence both sides are measured on alike). Who then puts a
version into service is models.governance."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from models.governance import (
    APPROVAL,
    AUTO,
    BOOTSTRAP,
    CHALLENGER,
    CHAMPION,
    RECOMMENDATION,
    RECOMMENDED,
    Approval,
    alias_version,
    put_in_service,
    recorded_champion,
)

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


def run_parquet(run_id: str, artifact: str, columns: list[str]) -> pd.DataFrame:
    """A Parquet artifact of a run, read from the run rather than the checkout: the champion is
    often an earlier run than the one trained last. MlflowException where the run lacks it."""
    with tempfile.TemporaryDirectory() as scratch:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=scratch)
        return pd.read_parquet(path, columns=columns)


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


# Besides the rule's own figures, what the comparison table shows a reviewer (comparison.json holds
# every figure both sides have): precision at the top, what red holds, the ranking as a whole.
CONTEXT_FIGURES = (
    "precision_at_1",
    "recall_at_5",
    "duty_recovered_at_5",
    "critical_recall_at_5",
    "roc_auc",
    "lane_red_share",
    "lane_red_hit_rate",
    "lane_red_fraud_share",
)
# A version's description is a 5,000-character column in the registry's SQL schema (PostgreSQL
# enforces it), and holds the comparison and then the model card.
DESCRIPTION_LIMIT = 5000


@dataclass(frozen=True)
class Comparison:
    """The evidence the champion rule judges: a challenger's and the champion's figures over the
    same labelled declarations, both from the evaluate stage's code (models.metrics.window_figures),
    and how they were had (`basis`, one sentence). `champion` is None where the champion could not
    be measured on declarations it has not learned from: then nothing shows the challenger is as
    good, and the rule does not recommend it."""

    champion_version: str
    basis: str
    rows: int
    challenger: dict[str, float]
    champion: dict[str, float] | None

    def judge(self, rule: ChampionRule) -> tuple[bool, str]:
        if self.champion is None:
            return False, f"no evidence to judge it on: {self.basis}"
        return rule.judge(self.challenger, self.champion)

    def report(self, rule: ChampionRule, version: str) -> dict[str, Any]:
        """The comparison as comparison.json holds it: the verdict, the rule, and a row per
        figure (the rule's first), from which `comparison_markdown` writes the table."""
        recommended, reason = self.judge(rule)
        roles = {
            rule.metric: "at least as good",
            **dict.fromkeys(rule.guards, f"guard: lose at most {rule.tolerance:g}"),
        }
        champion = self.champion or {}
        shown = [*roles, *(name for name in CONTEXT_FIGURES if name not in roles)]
        rest = sorted((self.challenger.keys() & champion.keys()) - set(shown)) if champion else []
        rows = [
            {
                "figure": name,
                "role": roles.get(name, ""),
                "shown": name in shown,
                "champion": champion.get(name),
                "challenger": self.challenger.get(name),
            }
            for name in [*shown, *rest]
            if name in self.challenger or name in champion
        ]
        return {
            "champion_version": self.champion_version,
            "challenger_version": version,
            "basis": self.basis,
            "rows": self.rows,
            "rule": {"metric": rule.metric, "guards": list(rule.guards), "tolerance": rule.tolerance},
            "recommended": recommended,
            "reason": reason,
            "figures": rows,
        }


def comparison_markdown(report: dict[str, Any]) -> str:
    """The comparison table a reviewer reads (the run's comparison.md, the version's description,
    `customs-risk metrics`), written from comparison.json alone so every place shows the same."""
    champion, challenger = report["champion_version"], report["challenger_version"]

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [
        f"## Champion rule: version {challenger} against champion version {champion}",
        "",
        f"{report['basis'][:1].upper()}{report['basis'][1:]}.",
        "",
        f"| figure | rule | champion v{champion} | challenger v{challenger} | difference |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in report["figures"]:
        if not row["shown"]:
            continue
        old, new = row["champion"], row["challenger"]
        difference = "-" if old is None or new is None else f"{new - old:+.4f}"
        lines.append(f"| {row['figure']} | {row['role']} | {cell(old)} | {cell(new)} | {difference} |")
    verdict = "Recommended" if report["recommended"] else "Not recommended"
    lines += ["", f"**{verdict}**: {report['reason']}."]
    return "\n".join(lines) + "\n"


def version_description(comparison: str, model_card: str) -> str:
    """The comparison, then the model card, within what the registry holds."""
    text = "\n\n".join(part.strip() for part in (comparison, model_card) if part.strip())
    if len(text) <= DESCRIPTION_LIMIT:
        return text
    cut = "\n\n(cut: the whole model card is the run's reports/model_card.md)"
    return text[: DESCRIPTION_LIMIT - len(cut)] + cut


def register_version(
    model_uri: str,
    name: str,
    run_id: str,
    metrics: dict[str, float],
    rule: ChampionRule,
    measure: Callable[[ModelVersion], Comparison],
    promotion: str = APPROVAL,
    model_card: str = "",
) -> dict[str, Any]:
    """The run's registry version, judged against the champion on the evidence `measure` gives
    (the champion's figures beside the run's, on the same declarations). The registry's first
    version is put in service as `bootstrap`. A version the rule recommends becomes `challenger`
    and waits for `customs-risk approve` (promotion `approval`), or becomes champion (`auto`); one
    it rejects gets no alias. Either way the verdict and why are tags on the version, and the
    comparison is in its run and its description.

    A run is registered once: the stage rerun by a change of code it runs (the decision's code
    scores the champion) judges the same version again rather than adding a copy of it."""
    client = MlflowClient()
    current = recorded_champion(client, name, "the register stage")
    known = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    version = str(max(int(v.version) for v in known)) if known else None
    serving_already = current is not None and str(current.version) == version
    comparison = None if current is None or serving_already else measure(current)
    if version is None:
        version = str(mlflow.register_model(model_uri, name).version)
    decision: dict[str, Any] = {
        "name": name,
        "version": version,
        "run_id": run_id,
        "metric": rule.metric,
        "promotion": promotion,
        "new_value": metrics[rule.metric],
        "champion_value": None,
        "previous_champion": None,
        "comparison": None,
    }
    alias: str | None = CHAMPION
    recommended: bool | None = None
    shown = ""  # the comparison table, first in the version's description
    if current is None:
        reason = "the registry's first version: no champion to compare it with"
        put_in_service(client, name, version, Approval(BOOTSTRAP, reason))
    elif comparison is None:
        reason = f"this run is version {version}, the champion already"
    else:
        report = comparison.report(rule, version)
        recommended, reason = report["recommended"], report["reason"]
        decision.update(
            comparison=report,
            previous_champion=comparison.champion_version,
            new_value=comparison.challenger[rule.metric],
            champion_value=(comparison.champion or {}).get(rule.metric),
        )
        client.set_model_version_tag(name, version, RECOMMENDED, str(recommended).lower())
        if recommended and promotion == AUTO:
            put_in_service(client, name, version, Approval(AUTO, f"governance.promotion: auto; the rule: {reason}"))
        elif recommended:
            alias = CHALLENGER
            client.set_registered_model_alias(name, CHALLENGER, version)
        else:
            alias = None
            waiting = alias_version(client, name, CHALLENGER)
            if waiting is not None and str(waiting.version) == version:  # judged again, and now rejected
                client.delete_registered_model_alias(name, CHALLENGER)
        shown = comparison_markdown(report)
        client.log_dict(run_id, report, "comparison.json")
        client.log_text(run_id, shown, "comparison.md")
    client.set_model_version_tag(name, version, RECOMMENDATION, reason)
    description = version_description(shown, model_card)
    if description:
        client.update_model_version(name, version, description=description)
    served = recorded_champion(client, name, "the register stage")
    decision.update(alias=alias, recommended=recommended, reason=reason, champion=_served(served))
    # the run says what became of it, so the compare view shows the verdict beside the metrics
    client.set_tag(run_id, "registration", f"{name} v{version}: {alias or 'no alias'} ({reason})")
    if decision["champion_value"] is not None:
        client.log_metric(run_id, f"champion_{rule.metric}", decision["champion_value"])
    return decision


def _served(version: ModelVersion | None) -> dict[str, str] | None:
    """The champion after a registration, as registration.json names it: what package serves."""
    if version is None:
        return None
    approval = Approval.of(version)
    return {"version": str(version.version), "run_id": version.run_id, **(approval.tags() if approval else {})}
