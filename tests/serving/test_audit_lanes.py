"""What the audit store keeps of the lanes (issue 28): each decision's duty at risk, the
thresholds it was made with and their mode; the window thresholds that follow traffic read back,
the same after a restart; and a store of the layout before, brought up to date losing nothing."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from features.schema import DECLARATION_FIELDS
from models.bundle import validated_declarations
from models.lanes import SCORES, THRESHOLDS, LanePolicy
from serving.audit import SCHEMA_VERSION, AuditStore, AuditStoreUnavailable
from serving.decide import decide
from serving.loading import LANE_WINDOW, PackagedLanes
from tests.serving.test_decide import SHARES, TrafficModel

INF = float("inf")
# The store as version 2 left it (issue 15's identifiers, an outcome's additional_duty).
VERSION_2 = """
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
    reasons TEXT NOT NULL,
    container_number TEXT,
    bill_of_lading TEXT
);
CREATE TABLE outcomes (
    declaration_id TEXT PRIMARY KEY,
    inspected_on TEXT NOT NULL,
    result TEXT NOT NULL,
    notes TEXT,
    received_at TEXT NOT NULL,
    additional_duty REAL
);
INSERT INTO decisions (declaration_id, scored_at, model_version, record, risk_score, critical_score, lane,
                       selected_by, reasons, container_number, bill_of_lading)
VALUES ('OLD1', '2021-04-01T10:00:00.000+00:00', '3', '{"declaration_id": "OLD1"}', 0.2, 0.01, 'green', 'model', '[]',
        'CSQU3054383', NULL);
INSERT INTO outcomes VALUES ('OLD1', '2021-04-03', 'fraud', 'undervalued', '2021-04-03T09:00:00.000+00:00', 120.5);
PRAGMA user_version = 2;
"""


def _decided(ids: list[str], risk: list[float], thresholds: list[float]) -> pd.DataFrame:
    """Results as serving.decide gives them: the /score fields, then the thresholds used."""
    results = pd.DataFrame(
        {
            "declaration_id": ids,
            "risk_score": risk,
            "critical_score": 0.01,
            "duty_at_risk": [10.0 * r for r in risk],
            "lane": "green",
            "selected_by": "model",
            "reasons": [[] for _ in ids],
        }
    )
    return results.assign(**dict(zip(THRESHOLDS, thresholds)))


def _record(store: AuditStore, ids: list[str], version: str = "3", mode: str | None = "follow") -> None:
    risk = [0.1 * (i + 1) for i in range(len(ids))]
    store.record_decisions(
        [{"declaration_id": i} for i in ids], _decided(ids, risk, [0.5, INF, 0.7, 0.2, 0.3]), version, mode
    )


def test_each_decision_keeps_its_duty_at_risk_the_thresholds_it_used_and_their_mode(tmp_path):
    store = AuditStore(tmp_path / "audit.db")
    _record(store, ["A", "B"])
    rows = store.read("decisions")
    assert rows["duty_at_risk"].tolist() == pytest.approx([1.0, 2.0])
    stored = rows[list(THRESHOLDS)].astype(object)
    assert stored.where(stored.notna(), None).values.tolist() == [[0.5, None, 0.7, 0.2, 0.3]] * 2  # no share: null
    assert rows["lane_thresholds"].tolist() == ["follow", "follow"]


def test_the_window_is_the_models_last_decisions_oldest_first(tmp_path):
    store = AuditStore(tmp_path / "audit.db")
    _record(store, ["A", "B", "C"])
    _record(store, ["X"], version="4")  # another model's scores are not this one's
    without = pd.DataFrame({"declaration_id": ["N"], "risk_score": 0.9, "critical_score": 0.1})
    store.record_decisions(
        [{"declaration_id": "N"}], without.assign(lane="red", selected_by="model", reasons=[[]]), "3"
    )
    _record(store, ["D", "E"])
    recent = store.recent_scores(4, "3")
    assert list(recent.columns) == [*SCORES, "lane"]
    # A, B, C then D, E (risk 0.1, 0.2 each time); N stored no duty at risk, so it is no window's
    assert recent["risk_score"].tolist() == pytest.approx([0.2, 0.3, 0.1, 0.2])
    assert recent["duty_at_risk"].tolist() == pytest.approx([2.0, 3.0, 1.0, 2.0])
    assert store.read("decisions")["duty_at_risk"].isna().tolist() == [False] * 4 + [True] + [False] * 2
    assert store.recent_scores(10, "5").empty


def test_a_store_that_cannot_be_read_says_so(tmp_path):
    store = AuditStore(tmp_path / "audit.db")
    store.close()
    (tmp_path / "audit.db").write_bytes(b"not a database, overwritten by mistake" * 100)
    with pytest.raises(AuditStoreUnavailable, match="cannot be read"):
        store.recent_scores(10, "3")


def test_a_store_of_version_2_gains_the_columns_in_place_and_loses_nothing(tmp_path):
    path = tmp_path / "audit.db"
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_2)
    store = AuditStore(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM store_version").fetchone()[0] == SCHEMA_VERSION == 4
    old = store.read("decisions").iloc[0]
    assert (old["declaration_id"], old["risk_score"], old["lane"], old["container_number"]) == (
        "OLD1",
        0.2,
        "green",
        "CSQU3054383",
    )
    assert old[["duty_at_risk", *THRESHOLDS, "lane_thresholds"]].isna().all()  # unknown, not invented
    outcome = store.read("outcomes").iloc[0]
    assert (outcome["result"], outcome["notes"], outcome["additional_duty"]) == ("fraud", "undervalued", 120.5)
    assert store.recent_scores(10, "3").empty  # its score without a duty at risk joins no window
    _record(store, ["NEW"])
    assert store.read("decisions")["declaration_id"].tolist() == ["OLD1", "NEW"]
    assert list(store.read("decisions").columns) == list(AuditStore(tmp_path / "new.db").read("decisions").columns)


def _packaged(policy: LanePolicy, size: int, scores: np.ndarray) -> PackagedLanes:
    """The champion's lanes as the service reads them from a bento model following traffic."""
    bento_model = SimpleNamespace(
        info=SimpleNamespace(metadata={"serving": {"lane_thresholds": "follow", "follow_window": size}}),
        custom_objects={LANE_WINDOW: {name: scores[:, k] for k, name in enumerate(SCORES)}},
    )
    return PackagedLanes.of(bento_model, policy)


def test_a_restarted_service_continues_the_window_it_left(tmp_path, history):
    """Decisions in small requests, the service stopped, a new one on the same store: the
    declarations after the restart get the lanes and thresholds one uninterrupted stream gives."""
    model = TrafficModel()
    stream = history[DECLARATION_FIELDS].iloc[:260].reset_index(drop=True)
    validation = model.scores(validated_declarations(stream.iloc[:100]))
    lanes = _packaged(LanePolicy.fit(SHARES, "key", *validation.T), 60, validation)
    model.lanes = lanes.policy
    sent = validated_declarations(stream.iloc[100:].reset_index(drop=True))
    uninterrupted = decide(model, sent, window=lanes.window(), reasons="none")

    path = tmp_path / "audit.db"
    store = AuditStore(path)
    for start in range(0, 90, 9):
        batch = sent.take(np.arange(start, start + 9))
        decided = decide(model, batch, window=lanes.window(store.recent_scores(lanes.size, "3")), reasons="none")
        store.record_decisions([{"declaration_id": i} for i in decided["declaration_id"]], decided, "3", lanes.mode)
    store.close()
    restarted = AuditStore(path)
    window = lanes.window(restarted.recent_scores(lanes.size, "3"))
    after = decide(model, sent.take(np.arange(90, sent.rows)), window=window, reasons="none")
    pd.testing.assert_frame_equal(after, uninterrupted.iloc[90:].reset_index(drop=True))
    assert not (after[list(THRESHOLDS)].to_numpy() == lanes.policy.thresholds()).all()  # they moved
    assert lanes.describe(restarted.recent_scores(lanes.size, "3"))["window"]["decisions"] == 60
