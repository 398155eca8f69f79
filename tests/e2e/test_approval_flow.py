"""Champions chosen on the same evidence, and approved by a person (issue 29), end to end: the real
pipeline retrained on a history extended by a month at a time, in a workspace of its own (the
session workspace's registry already holds a champion that has seen every month of the sample, so
nothing would be new to it), the real `customs-risk approve`, and the packaged service restarted.

1. January: an honest model, the registry's first version, is put in service as `bootstrap`.
2. February: a deliberately worse model (its training labels shuffled; the validation window's
   left true, so both sides are judged on what inspections found) is judged against the champion
   scored as served on February, the month the champion never saw: rejected, nothing served
   changes. Approving it needs --override and a note; with them, it is served.
3. March: an honest model against that poor champion, scored on March: recommended, and left as
   `challenger`; the service still serves February's model until a reviewer approves March's.
   The comparison's champion figures are those of `customs-risk score` on the same declarations.
4. Approval, then the rollback to January's model, each change /metadata after a restart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from bench.workspace import RAW_FILES, copy_project, workspace_env
from features.schema import DECLARATION_FIELDS
from models.metrics import window_figures
from models.registry import ChampionRule
from tests.conftest import REPO
from tests.e2e.stack import BIN, _run, serve_bento

pytestmark = pytest.mark.e2e

NAME = "customs-risk"
TRAIN_ROWS = 4000  # of 2020, drawn at random; every declaration of 2021 is kept: the months judged on
# (history ends, validation window) of each retrain: the window moves with the history
MONTHS = {
    "january": ("2021-01-31", "2020-11-01"),
    "february": ("2021-02-28", "2020-12-01"),
    "march": ("2021-03-31", "2021-01-01"),
}


def _kcs(name: str) -> pd.DataFrame:
    return pd.read_csv(REPO / "data/raw" / name, dtype=str, keep_default_na=False)


def _history(root: Path, until: str, shuffled_before: str | None = None) -> None:
    """The workspace's raw history up to `until`; labels of the declarations dated before
    `shuffled_before` permuted among them (fraud and critical together), so a model learns nothing."""
    train, valid = _kcs(RAW_FILES[0]).sample(n=TRAIN_ROWS, random_state=11), _kcs(RAW_FILES[1])
    for name, frame in zip(RAW_FILES, (train, valid)):
        frame = frame[frame["Date"] <= until].sort_values("Date", kind="stable").reset_index(drop=True)
        if shuffled_before is not None:
            rows = np.flatnonzero(frame["Date"] < shuffled_before)
            labels = frame.loc[rows, ["Fraud", "Critical Fraud"]].to_numpy()
            frame.loc[rows, ["Fraud", "Critical Fraud"]] = labels[np.random.default_rng(0).permutation(len(rows))]
        frame.to_csv(root / "data/raw" / name, index=False)


def _retrain(ws: dict, month: str, shuffled_before: str | None = None) -> dict:
    """`dvc repro` on the history to the end of `month`, the validation window ending with it."""
    until, valid_start = MONTHS[month]
    _history(ws["root"], until, shuffled_before)
    params_file = ws["root"] / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["windows"].update(valid_start=valid_start, valid_end=until)
    params["tune"]["trials"] = 0  # `train` as written: the search is not what is tested
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    repro = _run([str(BIN / "dvc"), "repro"], ws["root"], ws["env"], timeout=1200)
    registration = json.loads((ws["root"] / "data/model/registration.json").read_text())
    return {"registration": registration, "stdout": repro.stdout}


def _approve(ws: dict, *arguments: str) -> subprocess.CompletedProcess:
    return _run([str(BIN / "customs-risk"), "approve", *arguments], ws["root"], ws["env"], timeout=600)


def _refused(ws: dict, *arguments: str) -> str:
    result = subprocess.run(
        [str(BIN / "customs-risk"), "approve", *arguments],
        cwd=ws["root"],
        env={**ws["env"], "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    return " ".join(result.stderr.split())


def _metadata(ws: dict, log: str) -> dict:
    """/metadata of the workspace's latest bento, started as `make serve` starts it, then stopped."""
    with serve_bento(ws["root"], ws["env"], ws["root"] / log) as served:
        return httpx.post(f"{served.base}/metadata", json={}, timeout=60).json()


def _evidence(ws: dict, trained_until: str) -> pd.DataFrame:
    """The validation scores the last retrain's comparison was judged on: its window's
    declarations dated after the champion's history, in the scores' order."""
    scores = pd.read_parquet(ws["root"] / "data/model/validation_scores.parquet")
    return scores[scores["declaration_date"] > pd.Timestamp(trained_until)].reset_index(drop=True)


def _scored_by_the_cli(ws: dict, evidence: pd.DataFrame) -> pd.DataFrame:
    """`customs-risk score` of the evidence's declarations, as a center would send them."""
    history = pd.read_parquet(ws["root"] / "data/validated/declarations.parquet", columns=DECLARATION_FIELDS)
    records = history.set_index("declaration_id").loc[evidence["declaration_id"]].reset_index()[DECLARATION_FIELDS]
    source, output = ws["root"] / "evidence.parquet", ws["root"] / "scored.parquet"
    records.to_parquet(source, index=False)
    _run([str(BIN / "customs-risk"), "score", "--input", str(source), "--output", str(output)], ws["root"], ws["env"])
    return pd.read_parquet(output)


@pytest.fixture(scope="module")
def story(tmp_path_factory, _migrated_mlflow_db) -> dict:
    root = tmp_path_factory.mktemp("approval") / "workspace"
    copy_project(root)
    (root / "data/raw").mkdir(parents=True)
    shutil.copy(_migrated_mlflow_db, root / "mlflow.db")
    ws = {"root": root, "env": workspace_env(root)}
    _run([str(BIN / "dvc"), "init", "--no-scm", "-q"], root, ws["env"])
    client = MlflowClient(tracking_uri=ws["env"]["MLFLOW_TRACKING_URI"])
    told: dict = {"ws": ws, "client": client}

    told["january"] = _retrain(ws, "january")
    told["february"] = _retrain(ws, "february", shuffled_before=MONTHS["february"][1])
    told["february_bento"] = json.loads((root / "data/model/package.json").read_text())
    told["refused"] = _refused(ws, "2", "--by", "A. Reviewer")
    told["refused_without_note"] = _refused(ws, "2", "--by", "A. Reviewer", "--override")
    told["override"] = _approve(ws, "2", "--by", "B. Head", "--note", "audit unit vouches for it", "--override")
    told["march"] = _retrain(ws, "march")
    told["served_after_march"] = _metadata(ws, "serve-march.log")
    evidence = _evidence(ws, MONTHS["february"][0])
    told["cli"] = evidence.assign(**_scored_by_the_cli(ws, evidence)[["risk_score", "critical_score", "lane"]])
    told["approved"] = _approve(ws, "3", "--by", "A. Reviewer", "--note", "better on March, keeps duty and critical")
    told["served_after_approval"] = _metadata(ws, "serve-approved.log")
    told["rollback"] = _approve(ws, "1", "--by", "C. Duty Officer", "--note", "March's model sends too many reds")
    told["served_after_rollback"] = _metadata(ws, "serve-rollback.log")
    told["params"] = yaml.safe_load((root / "params.yaml").read_text())
    return told


def _rule(params: dict) -> ChampionRule:
    register = params["register"]
    return ChampionRule(register["champion_metric"], tuple(register["guard_metrics"]), register["guard_tolerance"])


def _figures(registration: dict, side: str) -> dict:
    return {row["figure"]: row[side] for row in registration["comparison"]["figures"]}


def test_the_first_version_is_put_in_service_as_bootstrap(story):
    registration = story["january"]["registration"]
    assert (registration["version"], registration["alias"], registration["comparison"]) == ("1", "champion", None)
    assert registration["champion"]["approved_by"] == "bootstrap"


def test_a_worse_challenger_is_judged_on_the_month_the_champion_never_saw_and_rejected(story):
    registration = story["february"]["registration"]
    comparison = registration["comparison"]
    assert (registration["version"], registration["alias"], registration["recommended"]) == ("2", None, False)
    assert comparison["champion_version"] == "1"
    assert "dated after the champion's history (2021-02-01..2021-02-28)" in comparison["basis"]
    assert comparison["rows"] > 1000
    # the decision is the rule's, on the two columns of figures side by side
    rule = _rule(story["params"])
    champion, challenger = _figures(registration, "champion"), _figures(registration, "challenger")
    assert rule.judge(challenger, champion) == (False, registration["reason"])
    assert challenger[rule.metric] < champion[rule.metric]
    assert registration["champion"]["version"] == "1"
    assert story["february_bento"]["model"] == f"{NAME}:v1"  # the bento built after it still serves January's
    client = story["client"]
    assert client.get_model_version(NAME, "2").tags["recommended"] == "false"
    artifacts = {a.path for a in client.list_artifacts(registration["run_id"])}
    assert {"comparison.json", "comparison.md"} <= artifacts
    assert client.get_model_version(NAME, "2").description.startswith("## Champion rule: version 2 against champion")


def test_a_rejected_version_is_approved_only_with_an_override_and_a_reason(story):
    assert "the champion rule rejected customs-risk version 2" in story["refused"]
    assert "--override needs a --note" in story["refused_without_note"]
    tags = story["client"].get_model_version(NAME, "2").tags
    assert tags["approved_by"] == "B. Head" and tags["approval_note"] == "audit unit vouches for it"
    assert tags["approval_override"] == story["february"]["registration"]["reason"]
    assert "customs-risk version 2 is the champion, replacing version 1" in " ".join(story["override"].stderr.split())


def test_a_better_challenger_waits_for_approval_and_nothing_served_changes(story):
    registration = story["march"]["registration"]
    comparison = registration["comparison"]
    assert (registration["version"], registration["alias"], registration["recommended"]) == ("3", "challenger", True)
    assert comparison["champion_version"] == "2"
    assert "dated after the champion's history (2021-03-01..2021-03-31)" in comparison["basis"]
    rule = _rule(story["params"])
    champion, challenger = _figures(registration, "champion"), _figures(registration, "challenger")
    assert rule.judge(challenger, champion) == (True, registration["reason"])
    assert "customs-risk approve 3 --by NAME" in story["march"]["stdout"]
    served = story["served_after_march"]
    assert (served["version"], served["approved_by"]) == ("2", "B. Head")


def test_the_comparisons_champion_figures_are_those_of_customs_risk_score(story):
    rates = story["params"]["evaluate"]["inspection_rates"]
    by_the_cli = window_figures(story["cli"], rates)
    compared = _figures(story["march"]["registration"], "champion")
    assert compared == pytest.approx({name: by_the_cli[name] for name in compared}, rel=1e-12, abs=1e-12)


def test_approval_and_rollback_change_what_is_served_after_a_restart(story):
    client = story["client"]
    approved, rolled_back = story["served_after_approval"], story["served_after_rollback"]
    tags = client.get_model_version(NAME, "3").tags
    assert (approved["version"], approved["approved_by"], approved["approved_at"]) == (
        "3",
        "A. Reviewer",
        tags["approved_at"],
    )
    assert approved["approval_note"] == "better on March, keeps duty and critical"
    first = client.get_model_version(NAME, "1").tags
    assert (rolled_back["version"], rolled_back["approved_by"]) == ("1", "C. Duty Officer")
    assert rolled_back["approved_at"] == first["approved_at"] >= approved["approved_at"]
    assert [entry["approved_by"] for entry in json.loads(first["earlier_approvals"])] == ["bootstrap"]
    assert tags["retired_for"] == "1" and tags["retired_at"] == first["approved_at"]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
