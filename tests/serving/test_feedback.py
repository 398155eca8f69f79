"""`customs-risk export-feedback`: every declaration as last scored, with its decision, labelled
by the outcome where one was posted and null otherwise, merged into the feedback file (newest
outcome wins, none is lost), and readable by ingest."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.adapters import FEEDBACK_FIELDS, read_feedback
from features.record import SELECTED_BY
from features.schema import DECLARATION_FIELDS, LABELLED, check_declarations
from models.lanes import SOURCES
from pipelines.validate import validate
from serving.audit import AuditStore
from serving.cli import app
from serving.feedback import EXPORT_FIELDS, export_feedback


def _score(store: AuditStore, records: list[dict]) -> None:
    results = pd.DataFrame(
        {
            "declaration_id": [r["declaration_id"] for r in records],
            "risk_score": 0.5,
            "critical_score": 0.1,
            "lane": "green",
            "selected_by": "model",
            "reasons": [[] for _ in records],
        }
    )
    store.record_decisions(records, results, model_version="1")


@pytest.fixture
def client_records(declarations) -> list[dict]:
    """Five declarations as a client sends them (numbers as JSON numbers, nulls as None)."""
    records = declarations.astype(object).where(declarations.notna(), None).to_dict("records")
    for i, record in enumerate(records):
        record["declaration_id"] = f"D{i}"
        record["tax_rate"], record["net_mass_kg"] = float(record["tax_rate"]), float(record["net_mass_kg"])
    return records


@pytest.fixture
def store(store_location, client_records) -> AuditStore:
    """A store of either kind the service wrote to: the export reads both alike."""
    store = AuditStore(store_location)
    _score(store, client_records)  # D3 and D4 are released uninspected
    _score(store, [dict(client_records[0], item_price=123.25)])  # D0 scored again, corrected
    store.record_outcomes(
        [
            {
                "declaration_id": "D0",
                "inspected_on": "2021-04-01",
                "result": "fraud",
                "notes": "undervalued",
                "additional_duty": 1840000.5,
            },
            {"declaration_id": "D1", "inspected_on": "2021-04-01", "result": "critical"},
            {"declaration_id": "D2", "inspected_on": "2021-04-02", "result": "clean"},
            {"declaration_id": "NEVER-SCORED", "inspected_on": "2021-04-02", "result": "fraud"},
        ]
    )
    return store


def test_every_scored_declaration_is_exported_as_last_scored_labelled_where_inspected(store, client_records, tmp_path):
    output = tmp_path / "feedback" / "outcomes.parquet"
    summary = export_feedback(store.location, output)
    assert summary == {
        "scored": 5,
        "inspected": 3,
        "unscored": 1,
        "in_file": 5,
        "by_result": {"fraud": 1, "critical": 1, "clean": 1},
    }
    feedback = pd.read_parquet(output).set_index("declaration_id")
    assert list(feedback.reset_index().columns) == EXPORT_FIELDS and "additional_duty" in FEEDBACK_FIELDS
    uninspected = feedback.loc[["D3", "D4"]]
    assert uninspected[["fraud", "critical_fraud", "inspected_on", "additional_duty"]].isna().all().all()
    assert feedback["lane"].eq("green").all() and feedback["selected_by"].eq("model").all()
    assert feedback["risk_score"].eq("0.5").all()
    assert feedback.loc["D0", "additional_duty"] == "1840000.5"  # text, as every value of a source
    assert feedback.loc[["D1", "D2"], "additional_duty"].isna().all()  # not reported: null
    assert feedback.loc[["D0", "D1", "D2"], ["fraud", "critical_fraud"]].values.tolist() == [
        ["1", "0"],
        ["1", "1"],
        ["0", "0"],
    ]
    assert feedback.loc["D0", "item_price"] == "123.25"  # the corrected record, as received
    assert feedback.loc["D1", "tax_rate"] == str(client_records[1]["tax_rate"])
    assert feedback.loc["D2", "hs6_code"] == client_records[2]["hs6_code"]
    assert feedback.loc["D0", "inspected_on"] == "2021-04-01"
    assert not list(tmp_path.glob("feedback/*.partial"))


def test_exporting_again_merges_and_the_newest_outcome_wins(store, client_records, tmp_path):
    output = tmp_path / "outcomes.parquet"
    export_feedback(store.location, output)
    store.record_outcomes([{"declaration_id": "D0", "inspected_on": "2021-04-03", "result": "clean"}])
    other = AuditStore(tmp_path / "replica.db")  # another replica knew D1 from an older inspection
    _score(other, [{"declaration_id": "D1", **{f: "x" for f in DECLARATION_FIELDS if f != "declaration_id"}}])
    other.record_outcomes([{"declaration_id": "D1", "inspected_on": "2021-03-01", "result": "clean"}])

    export_feedback(store.location, output)
    summary = export_feedback(other.location, output)

    assert summary["in_file"] == 5
    feedback = pd.read_parquet(output).set_index("declaration_id")
    assert feedback.loc["D0", ["fraud", "inspected_on"]].tolist() == ["0", "2021-04-03"]
    # D1 as the first service scored it and its newer inspection, not the replica's older one
    assert feedback.loc["D1", ["fraud", "critical_fraud", "tax_type"]].tolist() == [
        "1",
        "1",
        client_records[1]["tax_type"],
    ]


def test_an_outcome_is_never_lost_to_a_later_export_without_it(store, tmp_path):
    """A reset store scores D0 again and hears nothing of its inspection: the file keeps it."""
    output = tmp_path / "outcomes.parquet"
    export_feedback(store.location, output)
    reset = AuditStore(tmp_path / "reset.db")
    _score(reset, [{"declaration_id": "D0", **{f: "y" for f in DECLARATION_FIELDS if f != "declaration_id"}}])
    summary = export_feedback(reset.location, output)
    assert summary["in_file"] == 5
    feedback = pd.read_parquet(output).set_index("declaration_id")
    assert feedback.loc["D0", ["fraud", "inspected_on", "item_price"]].tolist() == ["1", "2021-04-01", "123.25"]


def test_the_exported_file_validates_into_typed_history(store, client_records, tmp_path):
    export_feedback(store.location, tmp_path / "outcomes.parquet")
    records = read_feedback(tmp_path).drop(columns=["outcome_received_at"])
    valid, rejected, report = validate(records)
    assert rejected.empty and report["rows_valid"] == 5
    sent = pd.DataFrame([dict(client_records[0], item_price=123.25), *client_records[1:]])
    labelled = sent.assign(
        fraud=[1, 1, 0, None, None],
        critical_fraud=[0, 1, 0, None, None],
        inspected_on=pd.to_datetime(["2021-04-01", "2021-04-01", "2021-04-02", None, None]),
        additional_duty=[1840000.5, None, None, None, None],
    )
    expected = check_declarations(labelled, LABELLED).valid
    pd.testing.assert_frame_equal(valid.drop(columns=SELECTED_BY).reset_index(drop=True), expected)
    assert valid[SELECTED_BY].isin(SOURCES).all()  # what selected each, for evaluate to weigh its label by
    # the duty an inspection assessed reaches history typed, for the duty model to learn from
    assert valid["additional_duty"].tolist()[0] == 1840000.5 and valid["additional_duty"].isna().sum() == 4
    assert records["source_file"].eq(str(tmp_path / "outcomes.parquet")).all()


def test_cli_exports_and_names_what_it_left_out(store, tmp_path):
    output = tmp_path / "feedback" / "outcomes.parquet"
    result = CliRunner().invoke(app, ["export-feedback", "--audit-db", str(store.location), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "5 scored declarations, 3 with an outcome (clean 1, critical 1, fraud 1)" in result.stdout
    assert "1 outcomes left out" in result.stderr
    assert len(pd.read_parquet(output)) == 5


def test_cli_without_an_audit_store_says_so(tmp_path):
    result = CliRunner().invoke(app, ["export-feedback", "--audit-db", str(tmp_path / "none.db")])
    assert result.exit_code == 2
    assert "no audit store at" in result.stderr


def test_a_file_exported_before_the_duty_merges_with_the_duty_null(store, tmp_path):
    output = tmp_path / "outcomes.parquet"
    export_feedback(store.location, output)
    # as the release before additional_duty wrote it
    older = pd.read_parquet(output)[[f for f in FEEDBACK_FIELDS if f != "additional_duty"]]  # nor the decision
    older.loc[older["declaration_id"] == "D2", "inspected_on"] = "2021-05-01"  # a later inspection of D2 elsewhere
    older.to_parquet(output, index=False)
    export_feedback(store.location, output)
    feedback = pd.read_parquet(output).set_index("declaration_id")
    assert list(feedback.reset_index().columns) == EXPORT_FIELDS
    assert feedback.loc["D0", "additional_duty"] == "1840000.5"
    assert feedback.loc["D2", "inspected_on"] == "2021-05-01" and pd.isna(feedback.loc["D2", "additional_duty"])


def test_a_store_of_the_layout_before_the_duty_exports_it_null(tmp_path, client_records):
    import sqlite3

    path = tmp_path / "audit.db"
    store = AuditStore(path)
    _score(store, client_records[:1])
    store.record_outcomes([{"declaration_id": "D0", "inspected_on": "2021-04-01", "result": "fraud"}])
    store.close()
    with sqlite3.connect(path) as db:  # the outcomes table as version 1 had it
        db.execute("ALTER TABLE outcomes DROP COLUMN additional_duty")
        db.execute("PRAGMA user_version = 1")
    export_feedback(path, tmp_path / "outcomes.parquet")
    feedback = pd.read_parquet(tmp_path / "outcomes.parquet")
    assert feedback["declaration_id"].tolist() == ["D0"] and feedback["additional_duty"].isna().all()
    with sqlite3.connect(path) as db:  # read only: the store is not migrated by an export
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
