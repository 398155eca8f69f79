"""The outcomes loop end to end: declarations scored by the real service, what their inspections
found posted to /outcomes, `customs-risk export-feedback` of every scored declaration (null
labels where nobody inspected), then `dvc repro` on a copy of the workspace (the shared one stays
as the other e2e modules expect) counts the fed-back rows and learns from the inspected ones. The
service and the export run on a SQLite store and on a PostgreSQL one (issue 31)."""

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
from tests.e2e.stack import BIN, _run, contract_example, keyed_service
from tests.postgres import STORE_KINDS, new_store

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


def _feed_back(client, store: Path | str, sent: dict, output: Path, copy: Path, env: dict) -> dict:
    """The loop's declarations scored by a service on `store`, their inspections posted, and
    `customs-risk export-feedback` of that store to `output`."""
    scored = client.post(
        "/score", json={"declarations": [*sent["new"], *sent["released"], sent["relabelled"], sent["query"]]}
    )
    assert scored.status_code == 200, scored.text
    outcomes = [
        {
            "declaration_id": r["declaration_id"],
            "inspected_on": "2020-12-15",
            "result": "critical" if i % 10 == 0 else "fraud",
            "notes": "undervalued",
        }
        for i, r in enumerate(sent["new"])
    ]
    outcomes += [
        {"declaration_id": sent["relabelled"]["declaration_id"], "inspected_on": "2021-01-10", "result": "critical"},
        {"declaration_id": "NEVER-SCORED", "inspected_on": "2021-01-10", "result": "fraud"},
    ]
    stored = client.post("/outcomes", json={"outcomes": outcomes})
    assert stored.status_code == 200 and stored.json() == {"stored": NEW + 2}
    command = [str(BIN / "customs-risk"), "export-feedback", "--audit-db", str(store), "--output", str(output)]
    return {"served": scored.json()["results"][-1], "exported": _run(command, copy, env), "feedback": output}


@pytest.fixture(scope="module")
def loop(request, workspace, service, tmp_path_factory) -> dict:
    """The loop run on both stores (issue 31): on the session's service and its SQLite store, and
    on a service of a new PostgreSQL database. The stores matter up to the exported file, which
    a test finds the same from both, so the pipeline retrains once, on the PostgreSQL store's."""
    root, folder = workspace["root"], tmp_path_factory.mktemp("loop")
    sent = {
        "new": [
            dict(
                contract_example(),
                declaration_id=f"LOOP-{i:03d}",
                importer_id=IMPORTER,
                declaration_date=f"2020-11-{i % 28 + 1:02d}",
                item_price=1000.0 + i,
            )
            for i in range(NEW)
        ],
        "released": [
            dict(
                contract_example(),
                declaration_id=f"LOOP-RELEASED-{i}",
                importer_id=IMPORTER,
                declaration_date=f"2020-12-{i + 1:02d}",
            )
            for i in range(RELEASED)
        ],
        "relabelled": _history_declaration(root),
        "query": dict(
            contract_example(), declaration_id="LOOP-QUERY", importer_id=IMPORTER, declaration_date="2021-03-31"
        ),
    }
    copy = folder / "workspace"
    shutil.copytree(root, copy, ignore=lambda where, names: ["serving"] if Path(where) == root / "data" else [])
    env = {
        **workspace["env"],
        "MLFLOW_TRACKING_URI": f"sqlite:///{copy / 'mlflow.db'}",
        "BENTOML_HOME": str(copy / ".bentoml"),
    }
    fed_back = {
        "sqlite": _feed_back(
            service["client"], workspace["env"]["RISK_AUDIT_DB"], sent, folder / "sqlite.parquet", copy, env
        )
    }
    with (
        new_store("postgresql", folder, request) as url,
        keyed_service(workspace, folder / "serve.log", audit=url) as served,
    ):
        fed_back["postgresql"] = _feed_back(served["client"], url, sent, copy / FEEDBACK, copy, env)
    repro = _run([str(BIN / "dvc"), "repro"], copy, env, timeout=900)
    return {
        **sent,
        "copy": copy,
        "env": env,
        "fed_back": fed_back,
        "served": fed_back["postgresql"]["served"],
        "repro": repro,
    }


@pytest.mark.parametrize("store", STORE_KINDS)
def test_export_writes_every_scored_declaration_labelled_where_inspected(loop, store):
    scored, fed_back = NEW + RELEASED + 2, loop["fed_back"][store]
    assert (
        f"{scored} scored declarations, {NEW + 1} with an outcome (critical 4, fraud 27)" in fed_back["exported"].stdout
    )
    assert "1 outcomes left out" in fed_back["exported"].stderr
    feedback = pd.read_parquet(fed_back["feedback"]).set_index("declaration_id")
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


def test_both_stores_export_the_same_rows(loop):
    """What the pipeline learns from does not depend on the store: the same rows, values and
    decisions, but for when each store received the outcomes."""
    exported = {
        store: pd.read_parquet(fed_back["feedback"]).sort_values("declaration_id", ignore_index=True)
        for store, fed_back in loop["fed_back"].items()
    }
    for frame in exported.values():
        assert frame["outcome_received_at"].notna().sum() == NEW + 1
    pd.testing.assert_frame_equal(*(frame.drop(columns="outcome_received_at") for frame in exported.values()))


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
