"""The outcomes loop end to end: declarations scored by the real service, what their inspections
found posted to /outcomes, `customs-risk export-feedback` of every scored declaration (null
labels where nobody inspected), then `dvc repro` on a copy of the workspace (the shared one stays
as the other e2e modules expect) counts the fed-back rows and learns from the inspected ones."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from features.adapters import KCS, read_source
from features.history import with_derived_fields
from features.schema import DECLARATION_FIELDS, NUMERIC_FIELDS
from models.bundle import RiskModel, score_declarations
from tests.e2e.stack import BIN, _run, contract_example

pytestmark = pytest.mark.e2e

IMPORTER = "LOOP-IMPORTER"  # an importer the history has never seen
NEW = 30  # its declarations, all found to be fraud
RELEASED = 5  # its declarations released uninspected: history holds them with null labels
FEEDBACK = "data/feedback/outcomes.parquet"


def _training_rows(repro_stdout: str) -> int:
    return int(re.search(r"train: ([\d,]+) training rows", repro_stdout).group(1).replace(",", ""))


def _validation(root: Path) -> dict:
    return json.loads((root / "metrics/validation.json").read_text())


def _history_declaration(root: Path) -> dict:
    """A clean declaration of the workspace's history, as a client would send it."""
    history = read_source(root / "data/raw/df_syn_train_eng.csv", KCS)
    clean = history[
        history["fraud"].eq("0")
        & history["declaration_id"].ne("97061800")
        & history["origin_country"].ne("ZZ")
        & history["departure_country"].ne("ZZ")
    ]
    record = clean.iloc[0][DECLARATION_FIELDS]
    record = record.astype(object).where(record.notna(), None).to_dict()
    return {**record, **{field: float(record[field]) for field in NUMERIC_FIELDS}}  # JSON numbers


@pytest.fixture(scope="module")
def loop(workspace, service, tmp_path_factory) -> dict:
    root, client = workspace["root"], service["client"]
    new = [
        dict(
            contract_example(),
            declaration_id=f"LOOP-{i:03d}",
            importer_id=IMPORTER,
            declaration_date=f"2020-11-{i % 28 + 1:02d}",
            item_price=1000.0 + i,
        )
        for i in range(NEW)
    ]
    released = [
        dict(
            contract_example(),
            declaration_id=f"LOOP-RELEASED-{i}",
            importer_id=IMPORTER,
            declaration_date=f"2020-12-{i + 1:02d}",
        )
        for i in range(RELEASED)
    ]
    relabelled = _history_declaration(root)
    query = dict(contract_example(), declaration_id="LOOP-QUERY", importer_id=IMPORTER, declaration_date="2021-03-31")
    scored = client.post("/score", json={"declarations": [*new, *released, relabelled, query]})
    assert scored.status_code == 200, scored.text
    outcomes = [
        {
            "declaration_id": r["declaration_id"],
            "inspected_on": "2020-12-15",
            "result": "critical" if i % 10 == 0 else "fraud",
            "notes": "undervalued",
        }
        for i, r in enumerate(new)
    ]
    outcomes += [
        {"declaration_id": relabelled["declaration_id"], "inspected_on": "2021-01-10", "result": "critical"},
        {"declaration_id": "NEVER-SCORED", "inspected_on": "2021-01-10", "result": "fraud"},
    ]
    stored = client.post("/outcomes", json={"outcomes": outcomes})
    assert stored.status_code == 200 and stored.json() == {"stored": NEW + 2}

    copy = tmp_path_factory.mktemp("loop") / "workspace"
    shutil.copytree(root, copy, ignore=lambda folder, names: ["serving"] if Path(folder) == root / "data" else [])
    env = {
        **workspace["env"],
        "MLFLOW_TRACKING_URI": f"sqlite:///{copy / 'mlflow.db'}",
        "BENTOML_HOME": str(copy / ".bentoml"),
    }
    exported = _run([str(BIN / "customs-risk"), "export-feedback", "--output", FEEDBACK], copy, env)
    repro = _run([str(BIN / "dvc"), "repro"], copy, env, timeout=900)
    return {
        "copy": copy,
        "env": env,
        "new": new,
        "released": released,
        "relabelled": relabelled,
        "query": query,
        "served": scored.json()["results"][-1],
        "exported": exported,
        "repro": repro,
    }


def test_export_writes_every_scored_declaration_labelled_where_inspected(loop):
    scored = NEW + RELEASED + 2
    assert f"{scored} scored declarations, {NEW + 1} with an outcome (critical 4, fraud 27)" in loop["exported"].stdout
    assert "1 outcomes left out" in loop["exported"].stderr
    feedback = pd.read_parquet(loop["copy"] / FEEDBACK).set_index("declaration_id")
    assert len(feedback) == scored
    nobody_looked = feedback.loc[[r["declaration_id"] for r in loop["released"]] + ["LOOP-QUERY"]]
    assert nobody_looked[["fraud", "critical_fraud", "inspected_on"]].isna().all().all()
    assert nobody_looked["lane"].notna().all() and nobody_looked["risk_score"].notna().all()
    assert feedback.loc["LOOP-007", ["importer_id", "item_price", "fraud", "critical_fraud"]].tolist() == [
        IMPORTER,
        "1007.0",
        "1",
        "0",
    ]
    assert feedback.loc["LOOP-010", "critical_fraud"] == "1"
    assert feedback.loc[loop["relabelled"]["declaration_id"], ["fraud", "critical_fraud"]].tolist() == ["1", "1"]


def test_the_next_run_counts_the_fed_back_rows(loop, workspace):
    before, after = _validation(workspace["root"]), _validation(loop["copy"])
    assert "Running stage 'ingest'" in loop["repro"].stdout
    # the relabelled row replaced its old one; the released ones and the query are new rows
    assert after["rows_in"] == before["rows_in"] + NEW + RELEASED + 1
    assert after["rows_in_by_source"][FEEDBACK] == NEW + RELEASED + 2
    assert after["rows_rejected"] == before["rows_rejected"]
    assert _training_rows(loop["repro"].stdout) == _training_rows(workspace["repro"].stdout) + NEW + RELEASED

    history = pd.read_parquet(loop["copy"] / "data/validated/declarations.parquet").set_index("declaration_id")
    fed_back = history.loc[[r["declaration_id"] for r in loop["new"]]]
    assert fed_back["fraud"].eq(1).all() and fed_back["critical_fraud"].sum() == 3
    released = history.loc[[r["declaration_id"] for r in loop["released"]]]
    assert released["fraud"].isna().all() and released["critical_fraud"].isna().all()
    assert history.loc[loop["relabelled"]["declaration_id"], ["fraud", "critical_fraud"]].tolist() == [1, 1]


def test_the_mlflow_run_logs_the_validation_report(loop):
    client = MlflowClient(tracking_uri=loop["env"]["MLFLOW_TRACKING_URI"])
    run_id = json.loads((loop["copy"] / "data/model/run.json").read_text())["run_id"]
    logged = json.loads(Path(client.download_artifacts(run_id, "validation.json")).read_text())
    assert logged == _validation(loop["copy"])


def test_the_retrained_model_learned_what_was_fed_back(loop):
    """The fed-back outcomes reach the retrained model as the importer's record (its inspected
    declarations and their frauds; the released ones count as declarations only) and raise the
    query's score above the served one, which knew nothing of the importer. Which features carry
    what was learned is the model's to find: in this history fraud follows what is declared, from
    where and taxed how, not who imports it (docs/loop.md), so the 30 frauds raise the record of
    their goods and route as much as the importer's."""
    model = RiskModel.load(loop["copy"] / "data/model/bundle")
    counts = model.state.counts_for(with_derived_fields(pd.DataFrame([loop["query"]]))).iloc[0]
    assert counts["importer__declarations"] == NEW + RELEASED + 1  # the query itself was exported too
    assert counts["importer__inspected_count"] == NEW and counts["importer__fraud_count"] == NEW
    (retrained,) = score_declarations(model, pd.DataFrame([loop["query"]]), 3).to_dict("records")
    assert retrained["risk_score"] > loop["served"]["risk_score"]
    assert not any(IMPORTER in reason["text"] for reason in loop["served"]["reasons"])


def test_evaluate_sets_the_estimates_beside_the_labelled_figures(loop):
    """The query, dated in the validation window, was scored and never inspected: evaluate counts
    it among the window's rows and not its labelled ones, and sets the random picks' hit rate and
    the inverse-propensity estimate beside the labelled figures. What selected each fed-back
    declaration reaches the validated history for it; the files' rows do not say."""
    metrics = json.loads((loop["copy"] / "metrics/targeting.json").read_text())
    assert metrics["validation_rows"] == metrics["validation_rows_labelled"] + 1
    assert metrics["random_picks"] == 0 and metrics["random_pick_hit_rate"] is None  # only the query is fed back there
    assert 0 < metrics["ipw_precision_at_10"] <= 1 and "precision_at_10" in metrics
    card = " ".join((loop["copy"] / "data/model/model_card.md").read_text().split())
    labelled, rows = metrics["validation_rows_labelled"], metrics["validation_rows"]
    assert f"labelled (inspected) declarations only: {labelled:,} of the window's {rows:,}." in card
    assert f"top 10% {metrics['ipw_precision_at_10']:.3f}" in card

    feedback = pd.read_parquet(loop["copy"] / FEEDBACK).set_index("declaration_id")["selected_by"]
    history = pd.read_parquet(loop["copy"] / "data/validated/declarations.parquet").set_index("declaration_id")
    assert history.loc[feedback.index, "selected_by"].tolist() == feedback.tolist()
    assert history.drop(feedback.index)["selected_by"].isna().all()
