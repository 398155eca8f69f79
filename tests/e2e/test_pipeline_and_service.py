"""End to end on a small sample: the real DVC pipeline into a temporary MLflow store and BentoML
home, then the real service started with `bentoml serve` and called over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import REPO

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
TRAIN_ROWS, VALID_ROWS = 3000, 1000
API_KEY = "e2e-test-key"


def _run(command: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def _sample_kcs(source: Path, target: Path, rows: int) -> None:
    """A time-ordered random sample of a KCS file, in the KCS layout, plus the CONTRACT example."""
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    sample = frame.sample(n=rows, random_state=11)
    if "97061800" in set(frame["Declaration ID"]) and "97061800" not in set(sample["Declaration ID"]):
        sample = pd.concat([frame[frame["Declaration ID"] == "97061800"], sample.iloc[1:]])
    sample.sort_values("Date", kind="stable").to_csv(target, index=False)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, _migrated_mlflow_db) -> dict:
    """A copy of the project with a small history, and the pipeline run in it by `dvc repro`."""
    root = tmp_path_factory.mktemp("workspace")
    for name in ("features", "models", "serving", "pipelines"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    _sample_kcs(REPO / "data/raw/df_syn_train_eng.csv", raw / "df_syn_train_eng.csv", TRAIN_ROWS)
    _sample_kcs(REPO / "data/raw/df_syn_valid_eng.csv", raw / "df_syn_valid_eng.csv", VALID_ROWS)
    shutil.copy(_migrated_mlflow_db, root / "mlflow.db")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "BENTOML_HOME": str(root / ".bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "RISK_AUDIT_DB": str(root / "data/serving/audit.db"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("RISK_API_KEYS", None)
    _run([str(BIN / "dvc"), "init", "--no-scm", "-q"], root, env)
    started = time.perf_counter()
    repro = _run([str(BIN / "dvc"), "repro"], root, env)
    return {"root": root, "env": env, "repro": repro, "seconds": time.perf_counter() - started}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_bento(root: Path, env: dict, log: Path):
    """`bentoml serve` of the workspace's bento on a free loopback port; yields the base URL once
    /readyz answers, and stops the server after."""
    port = _free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "bentoml"), "serve", "customs-risk-service:latest", "--host", "127.0.0.1", "--port", str(port)],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, log.read_text()[-4000:]
                assert time.monotonic() < deadline, "service not ready in 120 s:\n" + log.read_text()[-4000:]
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            yield base
        finally:
            os.killpg(process.pid, 15)
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def service(workspace):
    """The built bento served with an API key."""
    env = {**workspace["env"], "RISK_API_KEYS": API_KEY}
    with serve_bento(workspace["root"], env, workspace["root"] / "serve.log") as base:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as client:
            yield {"client": client, "base": base}


def contract_example() -> dict:
    """Declaration 97061800, the example of CONTRACT.md section 3, as a client sends it."""
    return {
        "declaration_id": "97061800", "declaration_date": "2020-01-01", "office_id": "30",
        "process_type": "B", "import_type": "11", "import_use": "21", "payment_type": "11",
        "transport_mode": "10", "declarant_id": "ZZR1LT6", "importer_id": "QLRUBN9",
        "seller_id": "0VKY2BR", "courier_id": None, "hs6_code": "440890",
        "departure_country": "BE", "origin_country": "BE", "tax_rate": 0.0, "tax_type": "FEU1",
        "origin_indicator": "G", "net_mass_kg": 108.0, "item_price": 372254.4,
    }


def test_pipeline_writes_metrics_and_a_lock(workspace):
    root = workspace["root"]
    metrics = json.loads((root / "metrics/targeting.json").read_text())
    for rate in (1, 2, 5, 10):
        for name in ("precision", "recall", "duty_recovered", "critical_recall"):
            assert 0 <= metrics[f"{name}_at_{rate}"] <= 1
    assert 0.5 < metrics["roc_auc"] <= 1
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"ingest", "validate", "featurize", "tune", "train", "evaluate", "register", "package"}
    validation = json.loads((root / "metrics/validation.json").read_text())
    assert validation["rows_in"] == TRAIN_ROWS + VALID_ROWS
    assert validation["rows_valid"] + validation["rows_rejected"] + validation["duplicates_dropped"] == validation["rows_in"]


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
    expected = {"targeting_curve.png", "roc.png", "precision_recall.png", "reliability.png",
                "importance_gain.png", "contributions.png", "model_card.md"}
    assert {f"reports/{name}" for name in expected} <= artifacts
    assert version.description.startswith("# Model card")
    assert "registration" in client.get_run(version.run_id).data.tags
    assert client.get_run(version.run_id).info.run_name.startswith("lgbm-")


def test_score_answers_the_contract_example(service, workspace):
    response = service["client"].post("/score", json={"declarations": [contract_example()]})
    assert response.status_code == 200, response.text
    body = response.json()
    registration = json.loads((workspace["root"] / "data/model/registration.json").read_text())
    assert body["model"] == {"name": "customs-risk", "version": registration["version"], "run_id": registration["run_id"]}
    [result] = body["results"]
    assert result["declaration_id"] == "97061800"
    assert 0 <= result["risk_score"] <= 1 and 0 <= result["critical_score"] <= 1
    assert result["lane"] in {"red", "yellow", "green"}
    assert result["selected_by"] in {"model", "rule", "random"}
    assert 1 <= len(result["reasons"]) <= 3
    contributions = [reason["contribution"] for reason in result["reasons"]]
    assert contributions == sorted(contributions, reverse=True)
    for reason in result["reasons"]:
        assert set(reason) == {"feature", "value", "contribution", "text"}
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
    assert (body["name"], body["version"], body["run_id"]) == ("customs-risk", registration["version"], registration["run_id"])
    metrics = json.loads((workspace["root"] / "metrics/targeting.json").read_text())
    assert body["validation_metrics"]["precision_at_5"] == pytest.approx(metrics["precision_at_5"])
    assert body["lanes"]["red_share"] == 0.05 and body["lanes"]["yellow_share"] == 0.10
    assert "importer_fraud_rate" in body["features"]


def test_outcomes_are_stored_durably(service, workspace):
    outcome = {"declaration_id": "97061800", "inspected_on": "2021-04-02", "result": "fraud", "notes": "undervalued"}
    response = service["client"].post("/outcomes", json={"outcomes": [outcome]})
    assert response.status_code == 200 and response.json() == {"stored": 1}
    bad = service["client"].post("/outcomes", json={"outcomes": [dict(outcome, result="maybe")]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "result"
    import sqlite3

    with sqlite3.connect(workspace["env"]["RISK_AUDIT_DB"]) as db:
        rows = db.execute("SELECT result, notes FROM outcomes WHERE declaration_id = '97061800'").fetchall()
    assert rows == [("fraud", "undervalued")]


def test_cli_scores_like_the_service(service, workspace, tmp_path):
    records = [dict(contract_example(), declaration_id=f"CLI-{i}", importer_id=f"IMP{i % 3}") for i in range(5)]
    source = tmp_path / "in.csv"
    pd.DataFrame(records).to_csv(source, index=False)
    output = tmp_path / "out.csv"
    _run([str(BIN / "customs-risk"), "score", "--input", str(source), "--output", str(output)], workspace["root"], workspace["env"])
    scored = pd.read_csv(output, dtype={"declaration_id": str})
    served = service["client"].post("/score", json={"declarations": records}).json()["results"]
    assert scored["declaration_id"].tolist() == [r["declaration_id"] for r in served]
    assert scored["risk_score"].tolist() == pytest.approx([r["risk_score"] for r in served], abs=1e-12)
    assert scored["lane"].tolist() == [r["lane"] for r in served]
    assert [json.loads(r) for r in scored["reasons"]] == [r["reasons"] for r in served]


def test_forced_rerun_gives_identical_metrics_and_models(workspace):
    """Same data, params and code: `dvc repro --force` retrains to the same metrics and boosters."""
    root = workspace["root"]
    before = (root / "metrics/targeting.json").read_text()
    boosters = {name: (root / "data/model/bundle" / name).read_bytes() for name in ("fraud.txt", "critical.txt")}
    tuned = (root / "data/model/tuned_params.json").read_text()
    _run([str(BIN / "dvc"), "repro", "--force"], root, workspace["env"])
    assert (root / "metrics/targeting.json").read_text() == before
    assert (root / "data/model/tuned_params.json").read_text() == tuned
    for name, content in boosters.items():
        assert (root / "data/model/bundle" / name).read_bytes() == content, name
    registration = json.loads((root / "data/model/registration.json").read_text())
    assert registration["alias"] == "champion"  # as good as the champion: it moves
    assert registration["champion_value"] == registration["new_value"]
