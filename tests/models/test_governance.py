"""Who put a model into service, when, and on what evidence: `customs-risk approve`'s registry
side (models.governance), the rollback, and an alias moved in the MLflow UI."""

from __future__ import annotations

import json
import re

import mlflow
import pytest
from mlflow import MlflowClient

from models.governance import (
    CHAMPION_VERSION,
    ApprovalRefused,
    alias_version,
    approve,
    promotion,
    recorded_champion,
)
from models.registry import ChampionRule, Comparison, configure_tracking, register_version, use_experiment

NAME = "customs-risk"
RULE = ChampionRule("precision_at_5")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[float]:
        return [0.5] * len(model_input)


@pytest.fixture
def client(mlflow_store) -> MlflowClient:
    configure_tracking()
    use_experiment()
    return MlflowClient()


def register_constant(new: float = 0.4, old: float = 0.4) -> dict:
    """A version whose precision@5 is `new` beside the champion's `old` on the same rows (and a
    ROC AUC the rule does not judge: 0.9 beside 0.8)."""
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])

    def measure(champion) -> Comparison:
        figures = {"precision_at_5": old, "roc_auc": 0.8}
        return Comparison(
            str(champion.version), "on the same rows", 100, {"precision_at_5": new, "roc_auc": 0.9}, figures
        )

    return register_version(info.model_uri, NAME, run.info.run_id, {"precision_at_5": new}, RULE, measure)


@pytest.fixture
def registry(client) -> MlflowClient:
    """Version 1 in service (bootstrap), 2 recommended and waiting, 3 rejected by the rule."""
    register_constant()
    assert register_constant(0.5, 0.4)["alias"] == "challenger"
    assert register_constant(0.3, 0.4)["alias"] is None
    return client


def _champion(client: MlflowClient) -> str:
    return str(alias_version(client, NAME, "champion").version)


def _tags(client: MlflowClient, version: str) -> dict:
    return client.get_model_version(NAME, version).tags


def test_approving_the_recommended_challenger_puts_it_in_service_with_who_when_and_why(registry):
    recorded = approve(NAME, "2", "A. Reviewer", "holds the duty, more critical frauds")
    assert _champion(registry) == "2"
    assert alias_version(registry, NAME, "challenger") is None  # it waits for nobody now
    tags = _tags(registry, "2")
    assert (tags["approved_by"], tags["approval_note"]) == ("A. Reviewer", "holds the duty, more critical frauds")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", tags["approved_at"])
    assert "approval_override" not in tags
    assert recorded == {
        "name": NAME,
        "version": "2",
        "previous": "1",
        "overridden": None,
        "approved_by": "A. Reviewer",
        "approved_at": tags["approved_at"],
        "approval_note": "holds the duty, more critical frauds",
    }
    retired = _tags(registry, "1")
    assert (retired["retired_for"], retired["retired_at"]) == ("2", tags["approved_at"])
    assert registry.get_registered_model(NAME).tags[CHAMPION_VERSION] == "2"


def test_a_version_the_rule_rejected_needs_an_override_and_a_reason(registry):
    with pytest.raises(ApprovalRefused, match=r"rejected customs-risk version 3 \(precision_at_5 0.3000 < 0.4000\)"):
        approve(NAME, "3", "A. Reviewer", "looks fine")
    with pytest.raises(ApprovalRefused, match="--override needs a --note"):
        approve(NAME, "3", "A. Reviewer", override=True)
    assert _champion(registry) == "1" and "approved_by" not in _tags(registry, "3")  # nothing changed
    approve(NAME, "3", "B. Head", "the April rows were mislabelled; confirmed by the audit unit", override=True)
    assert _champion(registry) == "3"
    tags = _tags(registry, "3")
    assert tags["approval_override"] == "precision_at_5 0.3000 < 0.4000"
    assert tags["approval_note"] == "the April rows were mislabelled; confirmed by the audit unit"


def test_approving_an_earlier_version_is_the_rollback_and_keeps_its_history(registry):
    bootstrap = _tags(registry, "1")
    approve(NAME, "2", "A. Reviewer")
    approve(NAME, "1", "B. Head", "version 2 sends too many reds")
    assert _champion(registry) == "1"
    tags = _tags(registry, "1")
    assert (tags["approved_by"], tags["approval_note"]) == ("B. Head", "version 2 sends too many reds")
    assert "retired_at" not in tags and "retired_for" not in tags  # in service again
    [earlier] = json.loads(tags["earlier_approvals"])
    assert earlier == {
        "approved_by": "bootstrap",
        "approval_note": bootstrap["approval_note"],
        "approved_at": bootstrap["approved_at"],
        "retired_at": _tags(registry, "2")["approved_at"],
    }
    assert _tags(registry, "2")["retired_for"] == "1"


def test_an_alias_moved_in_the_mlflow_ui_is_recorded_by_the_next_command(registry):
    registry.set_registered_model_alias(NAME, "champion", "3")  # what the UI's alias editor does
    assert "approved_by" not in _tags(registry, "3")
    noticed = recorded_champion(registry, NAME, "the package stage")
    assert str(noticed.version) == "3"
    tags = _tags(registry, "3")
    assert tags["approved_by"] == "unrecorded"
    assert "outside `customs-risk approve`" in tags["approval_note"] and "the package stage" in tags["approval_note"]
    assert tags["approval_override"] == "precision_at_5 0.3000 < 0.4000"  # the rule had rejected it
    assert _tags(registry, "1")["retired_for"] == "3"
    assert registry.get_registered_model(NAME).tags[CHAMPION_VERSION] == "3"
    recorded_champion(registry, NAME, "the register stage")  # recorded once
    assert "the package stage" in _tags(registry, "3")["approval_note"]


def test_a_reviewer_approving_the_version_set_in_the_ui_replaces_the_unrecorded_approval(registry):
    registry.set_registered_model_alias(NAME, "champion", "2")
    approve(NAME, "2", "A. Reviewer", "set in the UI on Monday")
    tags = _tags(registry, "2")
    assert tags["approved_by"] == "A. Reviewer"
    assert [entry["approved_by"] for entry in json.loads(tags["earlier_approvals"])] == ["unrecorded"]


@pytest.mark.parametrize(
    ("version", "by", "message"),
    [("9", "A. Reviewer", "no customs-risk version 9"), ("2", " ", "--by must name the reviewer")],
)
def test_an_approval_without_a_version_or_a_reviewer_is_refused(registry, version, by, message):
    with pytest.raises(ApprovalRefused, match=message):
        approve(NAME, version, by)
    assert _champion(registry) == "1"


def test_promotion_is_approval_or_auto():
    assert promotion("approval") == "approval" and promotion("auto") == "auto"
    with pytest.raises(ValueError, match=r"governance\.promotion must be one of approval, auto, got .manual."):
        promotion("manual")
