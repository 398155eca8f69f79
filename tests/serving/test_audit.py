"""The audit and outcomes store: durable (WAL, on disk before the answer), replace-on-repost,
and safe under concurrent writers (docs/design.md invariant 6)."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime

import pandas as pd
import pytest

from models.bundle import RESULT_COLUMNS
from serving.audit import AuditStore, AuditStoreUnavailable


@pytest.fixture
def store(tmp_path) -> AuditStore:
    return AuditStore(tmp_path / "serving" / "audit.db")


def _fresh(store: AuditStore) -> sqlite3.Connection:
    """Another connection, as another process would open the file."""
    return sqlite3.connect(store.path)


def _outcome(i: int, result: str = "fraud", notes: str | None = None) -> dict:
    return {"declaration_id": f"D{i:06d}", "inspected_on": "2021-03-02", "result": result, "notes": notes}


def test_creates_its_folder_and_uses_wal(store):
    assert store.path.exists()
    with _fresh(store) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_decisions_are_recorded_with_every_field(store):
    records = [
        {"declaration_id": "97061800", "hs6_code": "854442", "item_price": 2547.36, "seller_id": None},
        {"declaration_id": "00012345", "hs6_code": "010121", "item_price": 10.0, "seller_id": "K76UOWY"},
    ]
    reasons = [
        [{"feature": "importer_fraud_rate", "value": 0.41, "contribution": 1.73, "text": "importer X: 41%"}],
        [],
    ]
    results = pd.DataFrame(
        {
            "declaration_id": ["97061800", "00012345"],
            "risk_score": [0.93, 0.02],
            "critical_score": [0.04, 0.001],
            "duty_at_risk": [1840000.0, 0.2],
            "lane": ["red", "red"],
            "selected_by": ["model", "random"],
            "reasons": reasons,
        }
    )[RESULT_COLUMNS]
    before = datetime.now(UTC)
    store.record_decisions(records, results, model_version="3")
    after = datetime.now(UTC)

    with _fresh(store) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(row) for row in db.execute("SELECT * FROM decisions ORDER BY id")]
    assert len(rows) == 2
    for row, record, result in zip(rows, records, results.itertuples(index=False)):
        assert row["declaration_id"] == result.declaration_id
        assert row["model_version"] == "3"
        assert json.loads(row["record"]) == record
        assert row["risk_score"] == result.risk_score
        assert row["critical_score"] == result.critical_score
        assert row["lane"] == result.lane
        assert row["selected_by"] == result.selected_by
        assert json.loads(row["reasons"]) == result.reasons
        scored_at = datetime.fromisoformat(row["scored_at"])
        assert scored_at.tzinfo is not None
        assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= scored_at <= after
    # leading zeros survive
    assert rows[1]["declaration_id"] == "00012345"
    assert list(store.read("decisions")["declaration_id"]) == ["97061800", "00012345"]


def test_every_scoring_is_kept(store):
    results = pd.DataFrame(
        {
            "declaration_id": ["1"],
            "risk_score": [0.5],
            "critical_score": [0.1],
            "lane": ["green"],
            "selected_by": ["model"],
            "reasons": [[]],
        }
    )
    store.record_decisions([{"declaration_id": "1"}], results, "1")
    store.record_decisions([{"declaration_id": "1"}], results.assign(risk_score=0.6), "2")
    decisions = store.read("decisions")
    assert decisions["risk_score"].tolist() == [0.5, 0.6]
    assert decisions["model_version"].tolist() == ["1", "2"]


def test_outcomes_are_stored_durably(store):
    assert store.record_outcomes([_outcome(1, notes="undervalued"), _outcome(2, "clean")]) == 2
    with _fresh(store) as db:
        rows = db.execute("SELECT declaration_id, inspected_on, result, notes FROM outcomes ORDER BY 1").fetchall()
    assert rows == [("D000001", "2021-03-02", "fraud", "undervalued"), ("D000002", "2021-03-02", "clean", None)]


def test_posting_the_same_outcome_again_replaces_it(store):
    store.record_outcomes([_outcome(7, "clean", notes="first look")])
    first = store.read("outcomes")
    store.record_outcomes([{"declaration_id": "D000007", "inspected_on": "2021-03-09", "result": "critical"}])
    outcomes = store.read("outcomes")
    assert len(outcomes) == 1
    row = outcomes.iloc[0]
    assert (row["declaration_id"], row["inspected_on"], row["result"]) == ("D000007", "2021-03-09", "critical")
    assert row["notes"] is None  # replaced, not merged
    assert row["received_at"] >= first.iloc[0]["received_at"]


def test_a_failed_batch_writes_nothing(store):
    store.record_outcomes([_outcome(1)])
    with pytest.raises(KeyError):
        store.record_outcomes([_outcome(2), {"declaration_id": "D000003"}])
    assert store.read("outcomes")["declaration_id"].tolist() == ["D000001"]


def test_read_refuses_other_tables(store):
    with pytest.raises(ValueError):
        store.read("sqlite_master")


def test_twenty_threads_posting_concurrently_lose_nothing(store):
    threads, per_thread = 20, 25
    barrier = threading.Barrier(threads)
    failures = []

    def post(t: int) -> None:
        try:
            barrier.wait()
            for k in range(per_thread):
                store.record_outcomes([_outcome(t * 1000 + k, notes=f"thread {t}")])
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    workers = [threading.Thread(target=post, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    with _fresh(store) as db:
        assert db.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0] == threads * per_thread
        ids = {row[0] for row in db.execute("SELECT declaration_id FROM outcomes")}
    assert ids == {f"D{t * 1000 + k:06d}" for t in range(threads) for k in range(per_thread)}


def test_separate_stores_on_one_file_lose_nothing(tmp_path):
    """Several service workers each open their own store on the same file."""
    path = tmp_path / "audit.db"
    stores = [AuditStore(path) for _ in range(4)]
    failures = []

    def post(t: int) -> None:
        try:
            for k in range(20):
                stores[t % 4].record_outcomes([_outcome(t * 100 + k), _outcome(99_000)])
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    workers = [threading.Thread(target=post, args=(t,)) for t in range(20)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    outcomes = AuditStore(path).read("outcomes")
    assert len(outcomes) == 20 * 20 + 1
    assert outcomes["declaration_id"].is_unique


def test_a_store_that_cannot_write_refuses_the_whole_batch_and_recovers(store):
    """A full disk, as SQLite reports it: the batch is refused with the cause and nothing of it
    is kept; once there is room again, writes go on."""
    store.record_outcomes([_outcome(1)])
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(AuditStoreUnavailable, match="cannot write: database or disk is full"):
        store.record_outcomes([_outcome(i, notes="x" * 3000) for i in range(2, 50)])
    assert store.read("outcomes")["declaration_id"].tolist() == ["D000001"]
    store._db.execute("PRAGMA max_page_count = 1073741823")
    assert store.record_outcomes([_outcome(2)]) == 1
    assert store.read("outcomes")["declaration_id"].tolist() == ["D000001", "D000002"]
