"""`customs-risk approve` and the comparison `customs-risk metrics` prints, on a registry of
stand-in models (tests/e2e/test_approval_flow.py runs them on real ones, with the packaging)."""

from __future__ import annotations

import json
import re

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from models.registry import configure_tracking, use_experiment
from pipelines import paths
from serving.approval import REGISTRATION
from serving.cli import app
from tests.models.test_governance import NAME, register_constant

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def registry(mlflow_store) -> MlflowClient:
    """Version 1 in service, 2 rejected by the rule; the working directory is no checkout."""
    configure_tracking()
    use_experiment()
    register_constant(0.4)
    register_constant(0.3)
    return MlflowClient()


def _approve(*arguments: str):
    return CliRunner().invoke(app, ["approve", *arguments], env={"COLUMNS": "400"})


def _plain(text: str) -> str:
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())


def test_a_refused_approval_exits_2_and_changes_nothing(registry):
    result = _approve("2", "--by", "A. Reviewer")
    assert result.exit_code == 2, result.output
    assert "not approved: the champion rule rejected customs-risk version 2" in _plain(result.output)
    assert str(registry.get_model_version_by_alias(NAME, "champion").version) == "1"


def test_an_approval_moves_the_champion_and_says_how_to_serve_it(registry):
    result = _approve("2", "--by", "A. Reviewer", "--note", "relabelled April", "--override")
    assert result.exit_code == 0, result.output
    tags = registry.get_model_version(NAME, "2").tags
    shown = _plain(result.output)
    assert (
        f"customs-risk version 2 is the champion, replacing version 1: approved by A. Reviewer at {tags['approved_at']}; "
        "the rule's verdict set aside: precision_at_5 0.3000 < 0.4000"
    ) in shown
    assert "not packaged: no dvc.yaml here" in shown  # the bento is built where the pipeline runs
    assert str(registry.get_model_version_by_alias(NAME, "champion").version) == "2"


def test_metrics_prints_the_last_registrations_comparison(registry, tmp_path):
    metrics = tmp_path / "targeting.json"
    figures = {f"{name}_at_5": 0.3 for name in ("precision", "recall", "duty_recovered", "critical_recall")}
    metrics.write_text(json.dumps({"validation_rows": 100, "brier": 0.1, **figures}))
    registration = tmp_path / "registration.json"
    registration.write_text(json.dumps(register_constant(0.5)))
    result = CliRunner().invoke(
        app, ["metrics", "--path", str(metrics), "--registration", str(registration)], env={"COLUMNS": "160"}
    )
    assert result.exit_code == 0, result.output
    shown = _plain(result.stdout)
    assert "Champion rule: version 3 against champion version 1" in shown
    assert "precision_at_5 at least as good 0.4000 0.5000 +0.1000" in shown
    assert "Recommended: precision_at_5 0.5000 >= 0.4000." in shown


def test_metrics_reads_the_decision_the_register_stage_writes():
    assert REGISTRATION == paths.REGISTRATION
