"""The audit store under concurrent writers, and `customs-risk audit` exports by date range."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pandas as pd
import pytest
from typer.testing import CliRunner

import serving.audit as audit
from serving.audit import AuditStore, export
from serving.cli import app


def _results(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "declaration_id": ids,
            "risk_score": 0.5,
            "critical_score": 0.1,
            "lane": "yellow",
            "selected_by": "model",
            "reasons": [
                [{"feature": "tax_rate", "value": 8.0, "contribution": 0.2, "text": "tax rate 8%"}] for _ in ids
            ],
        }
    )


def _decide(store: AuditStore, ids: list[str], monkeypatch, when: str) -> None:
    monkeypatch.setattr(audit, "now", lambda: when)
    store.record_decisions([{"declaration_id": i} for i in ids], _results(ids), "7")


@pytest.fixture
def filled(store_location, monkeypatch):
    """Decisions on three days, and outcomes for two of them, on either kind of store."""
    store = AuditStore(store_location)
    _decide(store, ["A1", "A2"], monkeypatch, "2021-04-01T23:59:59.999+00:00")
    _decide(store, ["B1"], monkeypatch, "2021-04-02T00:00:00.000+00:00")
    _decide(store, ["C1"], monkeypatch, "2021-04-03T12:00:00.000+00:00")
    monkeypatch.setattr(audit, "now", lambda: "2021-04-05T08:00:00.000+00:00")
    store.record_outcomes([{"declaration_id": "B1", "inspected_on": "2021-04-04", "result": "fraud", "notes": "short"}])
    store.record_outcomes([{"declaration_id": "C1", "inspected_on": "2021-04-04", "result": "clean"}])
    store.close()
    return store_location


def test_export_takes_whole_days_and_joins_the_outcome(filled):
    first = export(filled, "decisions", dt.date(2021, 4, 1), dt.date(2021, 4, 1))
    assert first["declaration_id"].tolist() == ["A1", "A2"]
    assert first["outcome_result"].isna().all()
    two = export(filled, "decisions", dt.date(2021, 4, 2), dt.date(2021, 4, 3))
    assert two["declaration_id"].tolist() == ["B1", "C1"]
    assert two["outcome_result"].tolist() == ["fraud", "clean"]
    assert two["outcome_notes"].tolist()[0] == "short"
    assert json.loads(two["reasons"][0])[0]["text"] == "tax rate 8%"
    assert set(two.columns) >= {
        "record",
        "risk_score",
        "critical_score",
        "lane",
        "selected_by",
        "model_version",
        "scored_at",
    }
    outcomes = export(filled, "outcomes", dt.date(2021, 4, 5), dt.date(2021, 4, 5))
    assert outcomes["declaration_id"].tolist() == ["B1", "C1"]
    assert export(filled, "outcomes", dt.date(2021, 4, 1), dt.date(2021, 4, 4)).empty


def test_export_refuses_a_reversed_range_an_unknown_table_and_a_missing_store(filled, tmp_path):
    with pytest.raises(ValueError, match="before"):
        export(filled, "decisions", dt.date(2021, 4, 3), dt.date(2021, 4, 1))
    with pytest.raises(ValueError, match="unknown export"):
        export(filled, "records", dt.date(2021, 4, 1), dt.date(2021, 4, 1))
    with pytest.raises(FileNotFoundError):
        export(tmp_path / "none.db", "decisions", dt.date(2021, 4, 1), dt.date(2021, 4, 1))
    assert not (tmp_path / "none.db").exists()


def test_cli_audit_writes_the_range(filled, tmp_path):
    output = tmp_path / "out" / "april.csv"
    result = CliRunner().invoke(
        app, ["audit", "--since", "2021-04-01", "--until", "2021-04-02", "--output", str(output), "--db", str(filled)]
    )
    assert result.exit_code == 0, result.output
    written = pd.read_csv(output, dtype={"declaration_id": str})
    assert written["declaration_id"].tolist() == ["A1", "A2", "B1"]
    parquet = tmp_path / "outcomes.parquet"
    result = CliRunner().invoke(
        app,
        [
            "audit",
            "--since",
            "2021-04-05",
            "--until",
            "2021-04-05",
            "--output",
            str(parquet),
            "--db",
            str(filled),
            "--table",
            "outcomes",
        ],
    )
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(parquet)["result"].tolist() == ["fraud", "clean"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--since", "April", "--until", "2021-04-02"], "expected a date YYYY-MM-DD"),
        (["--since", "2021-04-03", "--until", "2021-04-02"], "is before"),
        (["--since", "2021-04-01", "--until", "2021-04-02", "--table", "records"], "unknown export"),
    ],
)
def test_cli_audit_explains_a_bad_request(filled, tmp_path, arguments, message):
    result = CliRunner().invoke(app, ["audit", *arguments, "--output", str(tmp_path / "x.csv"), "--db", str(filled)])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "x.csv").exists()


def test_concurrent_decision_batches_are_never_interleaved(tmp_path):
    """Twenty writers, half sharing one store (threads of a worker) and half with their own
    (other workers): each request's decisions land as one contiguous block, none lost. (SQLite
    has one writer at a time; PostgreSQL numbers concurrent batches' rows as they come, in order
    but interleaved, which the window of the newest decisions does not need.)"""
    path = tmp_path / "audit.db"
    shared = AuditStore(path)
    failures = []

    def writer(n: int) -> None:
        try:
            ids = [f"W{n}-{i}" for i in range(25)]
            (shared if n % 2 else AuditStore(path)).record_decisions(
                [{"declaration_id": i} for i in ids], _results(ids), "7"
            )
        except Exception as err:  # noqa: BLE001 - surfaced below: a thread's exception would otherwise vanish
            failures.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    decisions = shared.read("decisions")
    assert len(decisions) == 500
    for _, batch in decisions.groupby(decisions["declaration_id"].str.split("-").str[0]):
        assert batch["id"].max() - batch["id"].min() == len(batch) - 1
