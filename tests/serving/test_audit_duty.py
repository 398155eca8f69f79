"""Each outcome's `additional_duty` in the audit store (CONTRACT section 3, POST /outcomes):
stored as posted, null when not reported, replaced with the outcome, added to a store of the
previous layout (version 1) without losing what it holds, and exported by `customs-risk audit`."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pandas as pd
import pytest

from serving.audit import SCHEMA_VERSION, AuditStore, export

TODAY = dt.datetime.now(dt.UTC).date()

# The store as version 1 left it: decisions with their identifiers, outcomes without a duty.
VERSION_1 = """
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, declaration_id TEXT NOT NULL, scored_at TEXT NOT NULL,
    model_version TEXT NOT NULL, record TEXT NOT NULL, risk_score REAL NOT NULL, critical_score REAL NOT NULL,
    lane TEXT NOT NULL, selected_by TEXT NOT NULL, reasons TEXT NOT NULL, container_number TEXT, bill_of_lading TEXT
);
CREATE TABLE outcomes (
    declaration_id TEXT PRIMARY KEY, inspected_on TEXT NOT NULL, result TEXT NOT NULL, notes TEXT,
    received_at TEXT NOT NULL
);
INSERT INTO decisions (declaration_id, scored_at, model_version, record, risk_score, critical_score, lane,
                       selected_by, reasons, container_number, bill_of_lading)
VALUES ('V1', '2021-04-01T10:00:00.000+00:00', '2', '{"declaration_id": "V1"}', 0.9, 0.01, 'red', 'model', '[]',
        'CSQU3054383', NULL);
INSERT INTO outcomes VALUES ('V1', '2021-04-02', 'fraud', 'undervalued', '2021-04-03T08:00:00.000+00:00');
PRAGMA user_version = 1;
"""


def _outcome(declaration_id: str, **fields) -> dict:
    return {"declaration_id": declaration_id, "inspected_on": "2021-04-02", "result": "fraud", **fields}


def _duties(store: AuditStore) -> dict:
    rows = store.read("outcomes")
    return dict(
        zip(rows["declaration_id"], rows["additional_duty"].astype(object).where(rows["additional_duty"].notna(), None))
    )


def test_the_duty_is_stored_as_posted_and_null_when_not_reported(tmp_path):
    store = AuditStore(tmp_path / "audit.db")
    store.record_outcomes(
        [
            _outcome("A", additional_duty=1840000.5),
            _outcome("B", additional_duty=0),
            _outcome("C"),
            _outcome("D", additional_duty=None),
            _outcome("E", additional_duty=10**300),
        ]
    )
    assert _duties(store) == {"A": 1840000.5, "B": 0.0, "C": None, "D": None, "E": 1e300}


def test_a_reposted_outcome_replaces_its_duty_too(tmp_path):
    store = AuditStore(tmp_path / "audit.db")
    store.record_outcomes([_outcome("A", additional_duty=500.0)])
    store.record_outcomes([_outcome("A", result="clean")])
    assert _duties(store) == {"A": None}
    store.record_outcomes([_outcome("A", additional_duty=75.25)])
    assert _duties(store) == {"A": 75.25}


def test_a_store_of_version_1_gains_the_column_and_keeps_its_rows(tmp_path):
    path = tmp_path / "audit.db"
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_1)
    store = AuditStore(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM store_version").fetchone()[0] == SCHEMA_VERSION
        assert [row[1] for row in db.execute("PRAGMA table_info(outcomes)")][-1] == "additional_duty"
    old = store.read("outcomes").iloc[0]
    assert (old["declaration_id"], old["result"], old["notes"]) == ("V1", "fraud", "undervalued")
    assert pd.isna(old["additional_duty"])
    store.record_outcomes([_outcome("N", additional_duty=12.5)])
    assert _duties(store) == {"V1": None, "N": 12.5}
    assert store.read("decisions")["container_number"].tolist() == ["CSQU3054383"]
    AuditStore(path)  # opening it again changes nothing
    assert _duties(AuditStore(path)) == {"V1": None, "N": 12.5}


def test_the_audit_export_carries_the_duty(tmp_path):
    store = AuditStore(tmp_path / "audit.db")
    results = pd.DataFrame(
        {
            "declaration_id": ["A", "B"],
            "risk_score": 0.5,
            "critical_score": 0.1,
            "lane": "red",
            "selected_by": "model",
            "reasons": [[], []],
        }
    )
    store.record_decisions([{"declaration_id": "A"}, {"declaration_id": "B"}], results, "3")
    store.record_outcomes([_outcome("A", additional_duty=99.5), _outcome("B")])
    decisions = export(store.path, "decisions", TODAY, TODAY)
    assert decisions["outcome_additional_duty"].tolist()[0] == 99.5 and pd.isna(decisions["outcome_additional_duty"][1])
    outcomes = export(store.path, "outcomes", TODAY, TODAY)
    assert outcomes.set_index("declaration_id")["additional_duty"].to_dict()["A"] == 99.5


@pytest.mark.parametrize("table", ["decisions", "outcomes"])
def test_a_version_1_store_not_yet_opened_for_writing_exports_the_duty_empty(tmp_path, table):
    path = tmp_path / "audit.db"
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_1)
    rows = export(path, table, dt.date(2021, 4, 1), dt.date(2021, 4, 3))
    column = "outcome_additional_duty" if table == "decisions" else "additional_duty"
    assert rows["declaration_id"].tolist() == ["V1"] and rows[column].isna().all()
    with sqlite3.connect(path) as db:  # export reads; it never changes the store
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
