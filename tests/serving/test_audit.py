"""The audit and outcomes store: durable (committed before the answer), replace-on-repost, and
safe under concurrent writers (docs/design.md invariant 6), on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from models.bundle import RESULT_COLUMNS
from serving.audit import SCHEMA_VERSION, AuditStore, AuditStoreUnavailable
from tests.postgres import records, rows, start_again, start_server, stop


@pytest.fixture
def store(store_location) -> AuditStore:
    return AuditStore(store_location)


def _outcome(i: int, result: str = "fraud", notes: str | None = None) -> dict:
    return {"declaration_id": f"D{i:06d}", "inspected_on": "2021-03-02", "result": result, "notes": notes}


def test_a_sqlite_store_creates_its_folder_and_uses_wal_synced_at_each_commit(tmp_path):
    store = AuditStore(tmp_path / "serving" / "audit.db")
    assert store.path.exists()
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_decisions_are_recorded_with_every_field(store):
    sent = [
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
    store.record_decisions(sent, results, model_version="3")
    after = datetime.now(UTC)

    stored = records(store.location, "SELECT * FROM decisions ORDER BY id")
    assert len(stored) == 2
    for row, record, result in zip(stored, sent, results.itertuples(index=False)):
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
    assert stored[1]["declaration_id"] == "00012345"
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
    stored = rows(store.location, "SELECT declaration_id, inspected_on, result, notes FROM outcomes ORDER BY 1")
    assert stored == [("D000001", "2021-03-02", "fraud", "undervalued"), ("D000002", "2021-03-02", "clean", None)]


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
    ids = [declaration_id for (declaration_id,) in rows(store.location, "SELECT declaration_id FROM outcomes")]
    assert len(ids) == threads * per_thread
    assert set(ids) == {f"D{t * 1000 + k:06d}" for t in range(threads) for k in range(per_thread)}


def test_separate_stores_on_one_location_lose_nothing(store_location):
    """Several service workers or replicas each open their own store on the same file or server."""
    stores = [AuditStore(store_location) for _ in range(4)]
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
    outcomes = AuditStore(store_location).read("outcomes")
    assert len(outcomes) == 20 * 20 + 1
    assert outcomes["declaration_id"].is_unique


def test_a_store_that_cannot_write_refuses_the_whole_batch_and_recovers(tmp_path):
    """A full disk, as SQLite reports it: the batch is refused with the cause and nothing of it
    is kept; once there is room again, writes go on."""
    store = AuditStore(tmp_path / "audit.db")
    store.record_outcomes([_outcome(1)])
    with store.engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar()

    def full(connection, _record) -> None:
        connection.execute(f"PRAGMA max_page_count = {pages}")

    sa.event.listen(store.engine, "connect", full)
    store.engine.dispose()  # every connection from now on sees the disk full
    with pytest.raises(AuditStoreUnavailable, match="cannot write: database or disk is full"):
        store.record_outcomes([_outcome(i, notes="x" * 3000) for i in range(2, 50)])
    assert store.read("outcomes")["declaration_id"].tolist() == ["D000001"]
    sa.event.remove(store.engine, "connect", full)
    store.engine.dispose()
    assert store.record_outcomes([_outcome(2)]) == 1
    assert store.read("outcomes")["declaration_id"].tolist() == ["D000001", "D000002"]


def test_a_stopped_server_refuses_writes_and_is_reconnected_when_it_returns(tmp_path_factory):
    """PostgreSQL going away: a write is refused with the reason (and no password), the store is
    not ready; started again, the same store writes again without being reopened."""
    server = start_server(tmp_path_factory.mktemp("stopped") / "postgres")
    store = AuditStore(server.get_uri().replace("postgres:@", "postgres:s3cret@"))
    store.record_outcomes([_outcome(1)])
    assert store.ready()
    stop(server)
    try:
        with pytest.raises(AuditStoreUnavailable, match="cannot write") as refused:
            store.record_outcomes([_outcome(2)])
        assert "s3cret" not in str(refused.value)
        store._ready = (0.0, True)  # the readiness answer is reused for a second: look again now
        assert not store.ready()
    finally:
        start_again(server)
    assert store.record_outcomes([_outcome(3)]) == 1
    assert store.read("outcomes")["declaration_id"].tolist() == ["D000001", "D000003"]


def open_at_once(location, count: int = 4) -> tuple[list[AuditStore], list[Exception]]:
    """`count` stores opened on one location at the same moment, each with its own connection as
    each service worker has; and what any of them raised."""
    opened: list[AuditStore] = []
    failures: list[Exception] = []
    barrier = threading.Barrier(count)

    def start() -> None:
        try:
            barrier.wait()
            opened.append(AuditStore(location))
        except Exception as exc:  # noqa: BLE001 - returned to the test
            failures.append(exc)

    workers = [threading.Thread(target=start) for _ in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return opened, failures


def test_processes_opening_a_new_store_at_once_lay_it_out_once(store_location):
    """Replicas starting together: each opens the store while the others do; one lays out the
    tables (BEGIN IMMEDIATE on SQLite, an advisory lock on PostgreSQL), the others wait and find
    it done."""
    opened, failures = open_at_once(store_location)
    assert failures == []
    assert rows(opened[0].location, "SELECT version FROM store_version") == [(SCHEMA_VERSION,)]
    for store in opened:
        store.close()
