"""Each decision's container number and bill of lading in the audit store (issue 15): stored,
exported by `customs-risk audit`, and added to a store an earlier release wrote."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pandas as pd
from typer.testing import CliRunner

from serving.audit import SCHEMA_VERSION, AuditStore, export
from serving.cli import app
from tests.serving.test_audit import open_at_once

# The decisions table as the release before issue 15 created it, without a layout version.
FIRST_LAYOUT = """
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    declaration_id TEXT NOT NULL,
    scored_at TEXT NOT NULL,
    model_version TEXT NOT NULL,
    record TEXT NOT NULL,
    risk_score REAL NOT NULL,
    critical_score REAL NOT NULL,
    lane TEXT NOT NULL,
    selected_by TEXT NOT NULL,
    reasons TEXT NOT NULL
);
CREATE TABLE outcomes (
    declaration_id TEXT PRIMARY KEY,
    inspected_on TEXT NOT NULL,
    result TEXT NOT NULL,
    notes TEXT,
    received_at TEXT NOT NULL
);
INSERT INTO decisions (declaration_id, scored_at, model_version, record, risk_score, critical_score, lane,
                       selected_by, reasons)
VALUES ('OLD1', '2021-04-01T10:00:00.000+00:00', '2', '{"declaration_id": "OLD1"}', 0.2, 0.01, 'green', 'model', '[]');
"""
TODAY = dt.datetime.now(dt.UTC).date()


def _results(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "declaration_id": ids,
            "risk_score": 0.5,
            "critical_score": 0.1,
            "lane": "red",
            "selected_by": "model",
            "reasons": [[] for _ in ids],
        }
    )


def _decide(store: AuditStore) -> None:
    records = [
        {"declaration_id": "C1", "container_number": "CSQU3054383", "bill_of_lading": "MEDUKR123456"},
        {"declaration_id": "C2", "container_number": None, "bill_of_lading": None},
        {"declaration_id": "C3"},  # neither sent
    ]
    store.record_decisions(records, _results(["C1", "C2", "C3"]), "3")


def _identifiers(rows: pd.DataFrame) -> list[list]:
    """declaration_id, container_number, bill_of_lading of each row, None for null."""
    picked = rows[["declaration_id", "container_number", "bill_of_lading"]].astype(object)
    return picked.where(picked.notna(), None).values.tolist()


def _old_store(path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_LAYOUT)


def test_decisions_hold_their_container_number_and_bill_of_lading(tmp_path):
    store = AuditStore(tmp_path / "audit.db")
    _decide(store)
    assert _identifiers(store.read("decisions")) == [
        ["C1", "CSQU3054383", "MEDUKR123456"],
        ["C2", None, None],
        ["C3", None, None],
    ]
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT version FROM store_version").fetchone()[0] == SCHEMA_VERSION


def test_customs_risk_audit_exports_them(tmp_path):
    store = AuditStore(tmp_path / "audit.db")
    _decide(store)
    output = tmp_path / "decisions.csv"
    day = TODAY.isoformat()
    result = CliRunner().invoke(
        app, ["audit", "--since", day, "--until", day, "--output", str(output), "--db", str(store.path)]
    )
    assert result.exit_code == 0, result.output
    exported = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert exported[["declaration_id", "container_number", "bill_of_lading"]].values.tolist() == [
        ["C1", "CSQU3054383", "MEDUKR123456"],
        ["C2", "", ""],
        ["C3", "", ""],
    ]


def test_a_store_of_the_first_layout_is_migrated_when_opened(tmp_path):
    path = tmp_path / "audit.db"
    _old_store(path)
    store = AuditStore(path)
    _decide(store)
    rows = store.read("decisions")
    assert _identifiers(rows) == [
        ["OLD1", None, None],
        ["C1", "CSQU3054383", "MEDUKR123456"],
        ["C2", None, None],
        ["C3", None, None],
    ]
    assert list(rows.columns) == list(AuditStore(tmp_path / "new.db").read("decisions").columns)  # one layout
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM store_version").fetchone()[0] == SCHEMA_VERSION
    AuditStore(path)  # opening a migrated store again changes nothing
    assert store.read("decisions").equals(rows)


def test_processes_opening_an_old_store_together_migrate_it_once(tmp_path):
    path = tmp_path / "audit.db"
    _old_store(path)
    opened, errors = open_at_once(path)
    assert errors == []
    for store in opened:
        store.close()
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(decisions)")]
    assert columns.count("container_number") == 1 and columns.count("bill_of_lading") == 1


def test_an_old_store_not_yet_opened_for_writing_exports_the_columns_empty(tmp_path):
    path = tmp_path / "audit.db"
    _old_store(path)
    rows = export(path, "decisions", dt.date(2021, 4, 1), dt.date(2021, 4, 1))
    assert rows["declaration_id"].tolist() == ["OLD1"]
    assert rows[["container_number", "bill_of_lading"]].isna().all().all()
    reasons = list(rows.columns).index("reasons")
    assert list(rows.columns[reasons + 1 : reasons + 3]) == ["container_number", "bill_of_lading"]
    with sqlite3.connect(path) as db:  # export reads; it never changes the store
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
