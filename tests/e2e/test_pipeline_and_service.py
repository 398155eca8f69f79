"""End to end on a small sample: the real DVC pipeline into a temporary MLflow store and BentoML
home, then the real service started with `bentoml serve` and called over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from tests.e2e.stack import BIN, TRAIN_ROWS, VALID_ROWS, _run, contract_example
from tests.postgres import rows

pytestmark = pytest.mark.e2e


def test_pipeline_writes_metrics_and_a_lock(workspace):
    root = workspace["root"]
    metrics = json.loads((root / "metrics/targeting.json").read_text())
    for rate in (1, 2, 5, 10):
        for name in ("precision", "recall", "duty_recovered", "critical_recall"):
            assert 0 <= metrics[f"{name}_at_{rate}"] <= 1
    assert 0.5 < metrics["roc_auc"] <= 1
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) == {
        "ingest",
        "validate",
        "featurize",
        "tune",
        "train",
        "evaluate",
        "register",
        "package",
    }
    validation = json.loads((root / "metrics/validation.json").read_text())
    assert validation["rows_in"] == TRAIN_ROWS + VALID_ROWS
    assert (
        validation["rows_valid"] + validation["rows_rejected"] + validation["duplicates_dropped"]
        == validation["rows_in"]
    )


def test_repro_again_does_nothing(workspace):
    again = _run([str(BIN / "dvc"), "repro"], workspace["root"], workspace["env"])
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout


def test_champion_is_registered_with_its_run(workspace):
    client = MlflowClient(tracking_uri=workspace["env"]["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias("customs-risk", "champion")
    run = client.get_run(version.run_id)
    assert {"git_commit", "data_version", "validation_window"} <= set(run.data.tags)
    assert run.data.tags["data_version"] != "unknown"
    assert "precision_at_5" in run.data.metrics
    registration = json.loads((workspace["root"] / "data/model/registration.json").read_text())
    assert registration["version"] == str(version.version) and registration["alias"] == "champion"


def test_reviewers_find_plots_and_the_model_card_in_mlflow(workspace):
    client = MlflowClient(tracking_uri=workspace["env"]["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias("customs-risk", "champion")
    artifacts = {artifact.path for artifact in client.list_artifacts(version.run_id, "reports")}
    expected = {
        "targeting_curve.png",
        "roc.png",
        "precision_recall.png",
        "reliability.png",
        "importance_gain.png",
        "contributions.png",
        "model_card.md",
    }
    assert {f"reports/{name}" for name in expected} <= artifacts
    assert version.description.startswith("# Model card")
    assert "registration" in client.get_run(version.run_id).data.tags
    assert client.get_run(version.run_id).info.run_name.startswith("lgbm-")


def test_score_answers_the_contract_example(service, workspace):
    response = service["client"].post("/score", json={"declarations": [contract_example()], "reasons": "all"})
    assert response.status_code == 200, response.text
    body = response.json()
    registration = json.loads((workspace["root"] / "data/model/registration.json").read_text())
    assert body["model"] == {
        "name": "customs-risk",
        "version": registration["version"],
        "run_id": registration["run_id"],
    }
    [result] = body["results"]
    assert result["declaration_id"] == "97061800"
    assert 0 <= result["risk_score"] <= 1 and 0 <= result["critical_score"] <= 1
    assert result["lane"] in {"red", "yellow", "green"}
    assert result["selected_by"] in {"model", "value", "critical", "rule", "random"}
    assert 1 <= len(result["reasons"]) <= 3
    contributions = [
        r["contribution"] for r in result["reasons"] if r["feature"] not in ("duty_at_risk", "critical_score")
    ]
    assert contributions == sorted(contributions, reverse=True)
    for reason in result["reasons"]:
        assert set(reason) == {"feature", "value", "contribution", "support", "text"}
        assert reason["text"]


def test_results_keep_request_order(service):
    records = [dict(contract_example(), declaration_id=f"ORDER-{i}", item_price=1000.0 * (i + 1)) for i in range(7)]
    response = service["client"].post("/score", json={"declarations": records})
    assert response.status_code == 200
    assert [r["declaration_id"] for r in response.json()["results"]] == [r["declaration_id"] for r in records]


def test_invalid_record_is_rejected_with_field_messages(service):
    bad = dict(contract_example(), declaration_id="BAD-1", hs6_code="4408", origin_country="XX")
    response = service["client"].post("/score", json={"declarations": [contract_example(), bad]})
    assert response.status_code in (400, 422)
    errors = response.json()["errors"]
    assert {(e["index"], e["field"]) for e in errors} == {(1, "hs6_code"), (1, "origin_country")}
    assert all(e["message"] for e in errors)


def test_malformed_body_and_extra_field_get_contract_errors(service):
    client = service["client"]
    not_a_list = client.post("/score", json={"declarations": "nope"})
    assert not_a_list.status_code == 400
    assert not_a_list.json()["errors"][0]["field"] == "declarations"
    extra = client.post("/score", json={"declarations": [dict(contract_example(), colour="red")]})
    assert extra.status_code == 422
    assert {"index": 0, "field": "colour", "message": "is not a declaration field"} in extra.json()["errors"]


def test_keys_are_required(service):
    base = service["base"]
    assert httpx.post(f"{base}/score", json={"declarations": [contract_example()]}).status_code == 401
    wrong = httpx.post(f"{base}/metadata", json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert httpx.get(f"{base}/healthz").status_code == 200


def test_metadata_names_the_served_version(service, workspace):
    response = service["client"].post("/metadata", json={})
    assert response.status_code == 200
    body = response.json()
    registration = json.loads((workspace["root"] / "data/model/registration.json").read_text())
    assert (body["name"], body["version"], body["run_id"]) == (
        "customs-risk",
        registration["version"],
        registration["run_id"],
    )
    metrics = json.loads((workspace["root"] / "metrics/targeting.json").read_text())
    assert body["validation_metrics"]["precision_at_5"] == pytest.approx(metrics["precision_at_5"])
    assert body["lanes"]["red_share"] == pytest.approx(0.06) and body["lanes"]["yellow_share"] == 0.10
    assert "importer_fraud_rate" in body["features"]


def test_outcomes_are_stored_durably(service, workspace):
    outcome = {"declaration_id": "97061800", "inspected_on": "2021-04-02", "result": "fraud", "notes": "undervalued"}
    response = service["client"].post("/outcomes", json={"outcomes": [outcome]})
    assert response.status_code == 200 and response.json() == {"stored": 1}
    bad = service["client"].post("/outcomes", json={"outcomes": [dict(outcome, result="maybe")]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "result"
    stored = rows(
        workspace["env"]["RISK_AUDIT_DB"], "SELECT result, notes FROM outcomes WHERE declaration_id = '97061800'"
    )
    assert stored == [("fraud", "undervalued")]


def test_cli_scores_like_the_service(service, workspace, tmp_path):
    records = [dict(contract_example(), declaration_id=f"CLI-{i}", importer_id=f"IMP{i % 3}") for i in range(5)]
    source = tmp_path / "in.csv"
    pd.DataFrame(records).to_csv(source, index=False)
    output = tmp_path / "out.csv"
    _run(
        [str(BIN / "customs-risk"), "score", "--input", str(source), "--output", str(output)],
        workspace["root"],
        workspace["env"],
    )
    scored = pd.read_csv(output, dtype={"declaration_id": str})
    served = service["client"].post("/score", json={"declarations": records}).json()["results"]
    assert scored["declaration_id"].tolist() == [r["declaration_id"] for r in served]
    assert scored["risk_score"].tolist() == pytest.approx([r["risk_score"] for r in served], abs=1e-12)
    assert scored["lane"].tolist() == [r["lane"] for r in served]
    assert [json.loads(r) for r in scored["reasons"]] == [r["reasons"] for r in served]


def test_forced_rerun_gives_identical_metrics_and_models(workspace):
    """Same data, params and code: `dvc repro --force` retrains to the same metrics and model
    files, byte for byte."""
    root = workspace["root"]
    before = (root / "metrics/targeting.json").read_text()
    files = _model_files(root)
    tuned = (root / "data/model/tuned_params.json").read_text()
    _run([str(BIN / "dvc"), "repro", "--force"], root, workspace["env"])
    assert (root / "metrics/targeting.json").read_text() == before
    assert (root / "data/model/tuned_params.json").read_text() == tuned
    assert _model_files(root) == files  # boosters, calibration, lanes and feature state
    registration = json.loads((root / "data/model/registration.json").read_text())
    # as good as the champion on the same window: recommended, and waiting for a reviewer's approval
    assert (registration["alias"], registration["recommended"]) == ("challenger", True)
    assert registration["champion_value"] == registration["new_value"]
    assert registration["champion"]["version"] == registration["previous_champion"]


def _model_files(root) -> dict[str, bytes]:
    """Every file of the trained model bundle (boosters, calibration, lanes, feature state)."""
    bundle = root / "data/model/bundle"
    return {str(path.relative_to(bundle)): path.read_bytes() for path in sorted(bundle.rglob("*")) if path.is_file()}


def test_repro_killed_in_the_middle_of_train_completes_when_rerun(workspace):
    """kill -9 of `dvc repro --force -s train` (and the training under it) mid-training; the same
    command again trains to the end, `dvc repro` runs the stages after it, the pipeline is up
    to date, and the model files and metrics are the uninterrupted run's, byte for byte. (A
    plain `dvc repro` after the kill restores train's outputs from DVC's run cache instead.)"""
    root, env = workspace["root"], workspace["env"]
    metrics = (root / "metrics/targeting.json").read_text()
    files = _model_files(root)
    interrupted = subprocess.Popen(
        [str(BIN / "dvc"), "repro", "--force", "--single-item", "train"],
        cwd=root,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = []
    for line in interrupted.stdout:
        output.append(line)
        if line.startswith("train: ") and "training rows" in line:  # the stage is at work
            break
    time.sleep(2)  # into fitting
    assert interrupted.poll() is None, "".join(output)
    os.killpg(interrupted.pid, signal.SIGKILL)
    assert interrupted.wait(timeout=30) == -signal.SIGKILL
    again = _run([str(BIN / "dvc"), "repro", "--force", "--single-item", "train"], root, env)  # the same command
    assert "Running stage 'train'" in again.stdout, again.stdout
    _run([str(BIN / "dvc"), "repro"], root, env)  # the stages after train
    status = _run([str(BIN / "dvc"), "status"], root, env)
    assert "up to date" in status.stdout, status.stdout
    assert (root / "metrics/targeting.json").read_text() == metrics
    assert _model_files(root) == files
