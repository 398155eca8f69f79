"""The registry judges each new version against the champion on the same evidence (docs/design.md
invariant 4, README "The champion rule"); who then puts it in service is tests/models/test_governance.py."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient

from models.governance import AUTO, alias_version
from models.registry import (
    DESCRIPTION_LIMIT,
    ChampionRule,
    Comparison,
    comparison_markdown,
    configure_tracking,
    register_version,
    use_experiment,
    version_description,
)

NAME = "customs-risk"
METRIC = "precision_at_5"
GUARDS = ("lane_red_duty_share", "lane_red_critical_share")
RULE = ChampionRule(METRIC, GUARDS, 0.01)
KEPT = {"lane_red_duty_share": 0.90, "lane_red_critical_share": 0.60}

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


def _run() -> tuple[str, str]:
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
    return info.model_uri, run.info.run_id


class Evidence:
    """A `measure` for register_version: the champion at `old`, the new version at `new` (each the
    rule's metric, then the guards), and which champion it was asked about."""

    def __init__(self, new: float | None = None, old: float | None = None, guards: dict | None = None, rows: int = 500):
        self.new, self.old, self.guards, self.rows = new, old, guards or {}, rows
        self.asked: list[str] = []

    def __call__(self, champion) -> Comparison:
        self.asked.append(str(champion.version))
        challenger = {METRIC: self.new, **KEPT, **self.guards}
        old = None if self.old is None else {METRIC: self.old, **KEPT}
        return Comparison(str(champion.version), "both on the same 500 declarations", self.rows, challenger, old)


def _register(measure: Evidence | None = None, promotion: str = "approval", run: tuple[str, str] | None = None):
    model_uri, run_id = run or _run()
    return register_version(
        model_uri, NAME, run_id, {METRIC: 0.4, **KEPT}, RULE, measure or Evidence(0.4, 0.4), promotion, "# Model card"
    )


def _alias(client: MlflowClient, alias: str) -> str | None:
    found = alias_version(client, NAME, alias)
    return None if found is None else str(found.version)


def test_experiment_artifacts_are_not_in_mlruns(tracking):
    experiment = tracking.get_experiment_by_name("customs-risk")
    assert experiment is not None
    assert "mlartifacts" in experiment.artifact_location
    assert "mlruns" not in experiment.artifact_location


def test_the_first_version_is_put_in_service_as_bootstrap_without_a_comparison(tracking):
    measure = Evidence(0.4, 0.4)
    decision = _register(measure)
    assert measure.asked == []  # nothing to compare with
    assert (decision["version"], decision["alias"], decision["comparison"]) == ("1", "champion", None)
    assert _alias(tracking, "champion") == "1"
    tags = tracking.get_model_version(NAME, "1").tags
    assert tags["approved_by"] == "bootstrap" and tags["approved_at"].endswith("Z")
    assert "no champion" in tags["approval_note"] and "no champion" in tags["recommendation"]
    assert decision["champion"]["version"] == "1" and decision["champion"]["approved_by"] == "bootstrap"
    assert tracking.get_model_version(NAME, "1").description == "# Model card"


def test_a_better_version_waits_as_recommended_challenger_until_approved(tracking):
    _register()
    measure = Evidence(0.45, 0.40)
    model_uri, run_id = _run()
    decision = register_version(model_uri, NAME, run_id, {METRIC: 0.9}, RULE, measure, "approval", "# Model card")
    assert measure.asked == ["1"]
    assert (decision["alias"], decision["recommended"]) == ("challenger", True)
    assert (decision["new_value"], decision["champion_value"]) == (0.45, 0.40)  # as judged, not the run's 0.9
    assert decision["champion"]["version"] == "1"  # what is served is unchanged
    assert (_alias(tracking, "champion"), _alias(tracking, "challenger")) == ("1", "2")
    version = tracking.get_model_version(NAME, "2")
    assert version.tags["recommended"] == "true"
    assert version.tags["recommendation"] == "precision_at_5 0.4500 >= 0.4000, no guard lost more than 0.01"
    assert "approved_by" not in version.tags
    assert version.description.startswith("## Champion rule: version 2 against champion version 1")
    assert version.description.endswith("# Model card")
    logged = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/comparison.json"))
    assert logged == decision["comparison"]
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/comparison.md") == comparison_markdown(logged)
    run = tracking.get_run(run_id)
    assert run.data.tags["registration"].startswith("customs-risk v2: challenger (precision_at_5 0.4500 >= ")
    assert run.data.metrics["champion_precision_at_5"] == 0.40


def test_a_worse_version_gets_no_alias_and_says_why(tracking):
    _register()
    decision = _register(Evidence(0.35, 0.40))
    assert (decision["alias"], decision["recommended"]) == (None, False)
    assert (_alias(tracking, "champion"), _alias(tracking, "challenger")) == ("1", None)
    version = tracking.get_model_version(NAME, "2")
    assert version.tags["recommended"] == "false"
    assert version.tags["recommendation"] == "precision_at_5 0.3500 < 0.4000"
    assert "Not recommended" in version.description


def test_with_auto_promotion_a_better_version_is_put_in_service_by_the_rule(tracking):
    _register()
    decision = _register(Evidence(0.45, 0.40), promotion=AUTO)
    assert decision["alias"] == "champion" and decision["champion"]["version"] == "2"
    assert _alias(tracking, "champion") == "2"
    tags = tracking.get_model_version(NAME, "2").tags
    assert tags["approved_by"] == "auto" and "precision_at_5 0.4500 >= 0.4000" in tags["approval_note"]
    retired = tracking.get_model_version(NAME, "1").tags
    assert (retired["retired_for"], retired["retired_at"]) == ("2", tags["approved_at"])
    assert _register(Evidence(0.30, 0.45), promotion=AUTO)["alias"] is None  # auto promotes only what the rule prefers


@pytest.mark.parametrize("guard", GUARDS)
def test_a_challenger_that_keeps_precision_but_loses_a_guard_is_not_recommended(tracking, guard):
    _register()
    decision = _register(Evidence(0.45, 0.40, {guard: KEPT[guard] - 0.05}))
    assert decision["recommended"] is False and decision["alias"] is None
    assert guard in decision["reason"] and "loses" in decision["reason"]


def test_a_guard_within_the_tolerance_does_not_block_the_recommendation(tracking):
    _register()
    decision = _register(Evidence(0.40, 0.40, {"lane_red_critical_share": KEPT["lane_red_critical_share"] - 0.009}))
    assert decision["recommended"] is True and decision["alias"] == "challenger"


def test_without_evidence_on_declarations_the_champion_has_not_seen_nothing_is_recommended(tracking):
    _register()
    decision = _register(Evidence(0.9, None, rows=0))
    assert decision["recommended"] is False
    assert decision["reason"] == "no evidence to judge it on: both on the same 500 declarations"
    assert decision["champion_value"] is None


def test_the_challenger_is_judged_against_the_champion_not_the_latest_version(tracking):
    _register()  # 1: champion
    _register(Evidence(0.30, 0.40))  # 2: rejected
    measure = Evidence(0.45, 0.40)
    assert _register(measure)["alias"] == "challenger"  # 3
    assert measure.asked == ["1"]
    _register(Evidence(0.50, 0.40))  # 4: recommended too, so it is the challenger now
    assert (_alias(tracking, "champion"), _alias(tracking, "challenger")) == ("1", "4")


def test_a_run_registered_again_is_judged_again_not_copied(tracking):
    _register()
    run = _run()
    assert _register(Evidence(0.45, 0.40), run=run)["version"] == "2"
    assert _alias(tracking, "challenger") == "2"
    again = _register(Evidence(0.35, 0.40), run=run)  # e.g. the decision's code changed, and scores the champion anew
    assert (again["version"], again["alias"]) == ("2", None)
    assert len(tracking.search_model_versions(f"name = '{NAME}'")) == 2
    assert _alias(tracking, "challenger") is None
    assert tracking.get_model_version(NAME, "2").tags["recommended"] == "false"


def test_the_champions_own_run_registered_again_is_not_judged_against_itself(tracking):
    run = _run()
    _register(run=run)
    measure = Evidence(0.1, 0.9)
    decision = _register(measure, run=run)
    assert measure.asked == []
    assert (decision["version"], decision["alias"]) == ("1", "champion")
    assert decision["reason"] == "this run is version 1, the champion already"


def test_the_champion_rule_judges_the_metric_first_and_every_guard():
    old = {METRIC: 0.9, **KEPT}
    assert RULE.judge({METRIC: 0.89, "lane_red_duty_share": 1.0, "lane_red_critical_share": 1.0}, old)[0] is False
    assert RULE.judge({METRIC: 0.9, **KEPT}, old)[0] is True
    # a guard the new run does not report counts as lost; one the champion never had is skipped
    assert RULE.judge({METRIC: 0.95, "lane_red_duty_share": 0.9}, old)[0] is False
    assert RULE.judge({METRIC: 0.95}, {METRIC: 0.9})[0] is True


def test_the_comparison_table_shows_the_rules_figures_first_then_the_context():
    champion = {METRIC: 0.6, **KEPT, "roc_auc": 0.8, "brier": 0.1}
    challenger = {METRIC: 0.65, "lane_red_duty_share": 0.95, "lane_red_critical_share": 0.55, "roc_auc": 0.85}
    report = Comparison("3", "on the same 400 declarations", 400, challenger, champion).report(RULE, "5")
    assert [row["figure"] for row in report["figures"]] == [
        METRIC,
        *GUARDS,
        "roc_auc",
    ]  # brier: the challenger lacks it
    assert report["recommended"] is False and "lane_red_critical_share 0.5500 < 0.6000 - 0.01" in report["reason"]
    table = comparison_markdown(report)
    assert table.splitlines()[:5] == [
        "## Champion rule: version 5 against champion version 3",
        "",
        "On the same 400 declarations.",
        "",
        "| figure | rule | champion v3 | challenger v5 | difference |",
    ]
    assert "| precision_at_5 | at least as good | 0.6000 | 0.6500 | +0.0500 |" in table
    assert "| lane_red_critical_share | guard: lose at most 0.01 | 0.6000 | 0.5500 | -0.0500 |" in table
    assert "| roc_auc |  | 0.8000 | 0.8500 | +0.0500 |" in table
    assert table.endswith("**Not recommended**: " + report["reason"] + ".\n")
    unmeasured = Comparison("3", "it could not be scored", 0, challenger, None).report(RULE, "5")
    assert "| precision_at_5 | at least as good | - | 0.6500 | - |" in comparison_markdown(unmeasured)


def test_a_description_longer_than_the_registry_holds_is_cut_at_the_model_card():
    text = version_description("## Champion rule\n", "# Model card\n" + "x" * DESCRIPTION_LIMIT)
    assert len(text) == DESCRIPTION_LIMIT
    assert text.startswith("## Champion rule\n\n# Model card")
    assert text.endswith("(cut: the whole model card is the run's reports/model_card.md)")
    assert version_description("", "# Model card\n") == "# Model card"
