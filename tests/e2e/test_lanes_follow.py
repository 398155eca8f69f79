"""Lanes that follow traffic (issue 28), end to end on the packaged bento: the service's thresholds
follow the last declarations it scored, kept in its audit store, so `customs-risk score` over a
file (from the packaged validation scores, or continuing the store's window with --audit-db)
gives the lanes the service gives the same rows sent in the same order, one by one or in
batches, before and after the service restarts; every decision stores its thresholds and mode,
and /metadata shows them. All of it on a SQLite store and on a PostgreSQL one (issue 31)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from bench.load import as_sent
from features.adapters import KCS, read_source
from features.schema import DECLARATION_FIELDS, RECORD, check_declarations
from models.lanes import THRESHOLDS
from tests.conftest import REPO
from tests.e2e.stack import BIN, _run, keyed_service
from tests.postgres import STORE_KINDS, new_store, records

pytestmark = pytest.mark.e2e

ONE_BY_ONE, IN_BATCHES, AFTER_RESTART = 120, 200, 60  # declarations of each part of the stream
BATCH = 64
COMPARED = ["declaration_id", "lane", "selected_by"]


def _stream() -> pd.DataFrame:
    """Valid declarations of the embedded history in date order, as a center receives them."""
    kcs = read_source(REPO / "data/raw/df_syn_valid_eng.csv", KCS)
    valid = check_declarations(kcs[DECLARATION_FIELDS], RECORD).valid
    valid = valid.sort_values("declaration_date", kind="stable").reset_index(drop=True)
    return valid.iloc[-(ONE_BY_ONE + IN_BATCHES + AFTER_RESTART) :].reset_index(drop=True)


def _cli(workspace: dict, records: pd.DataFrame, folder: Path, *options: str) -> pd.DataFrame:
    source, output = folder / "in.parquet", folder / "out.parquet"
    records.to_parquet(source, index=False)
    _run(
        [str(BIN / "customs-risk"), "score", "--input", str(source), "--output", str(output), *options],
        workspace["root"],
        workspace["env"],
    )
    return pd.read_parquet(output)


def _served(client, records: pd.DataFrame, batch: int) -> pd.DataFrame:
    sent, results = as_sent(records), []
    for start in range(0, len(sent), batch):
        response = client.post("/score", json={"declarations": sent[start : start + batch]})
        assert response.status_code == 200, response.text
        results += response.json()["results"]
    return pd.DataFrame(results)


@pytest.fixture(scope="module")
def packaged(workspace, tmp_path_factory) -> dict:
    """The stream scored by the CLI from the packaged scores alone, as a whole and its first part:
    no store is read, so once for both kinds of store."""
    folder, stream = tmp_path_factory.mktemp("lanes-packaged"), _stream()
    return {
        "stream": stream,
        "whole": _cli(workspace, stream, folder),
        "one_by_one": _cli(workspace, stream.iloc[:ONE_BY_ONE], folder),
    }


@pytest.fixture(scope="module", params=STORE_KINDS)
def followed(request, workspace, packaged, tmp_path_factory) -> Iterator[dict]:
    """One stream: its first part scored by the CLI from the packaged scores and sent to a
    service with a new store one declaration at a time; the second by the CLI continuing that
    store (--audit-db), then sent in batches; the service restarted on the same store; the third
    part the same way. Before the CLI reads the store, the service has answered everything."""
    folder = tmp_path_factory.mktemp("lanes-follow")
    with new_store(request.param, folder, request) as audit:
        yield _follow(workspace, packaged, folder, audit)


def _follow(workspace: dict, packaged: dict, folder: Path, audit: Path | str) -> dict:
    stream = packaged["stream"]
    parts = {
        "one_by_one": stream.iloc[:ONE_BY_ONE],
        "in_batches": stream.iloc[ONE_BY_ONE : ONE_BY_ONE + IN_BATCHES],
        "after_restart": stream.iloc[ONE_BY_ONE + IN_BATCHES :],
    }
    runs: dict = {"stream": stream, "audit": audit, ("cli", "one_by_one"): packaged["one_by_one"]}
    with keyed_service(workspace, folder / "serve-1.log", audit=audit) as service:
        client = service["client"]
        runs["metadata_fresh"] = client.post("/metadata", json={}).json()
        runs["service", "one_by_one"] = _served(client, parts["one_by_one"], 1)
        runs["cli", "in_batches"] = _cli(workspace, parts["in_batches"], folder, "--audit-db", str(audit))
        runs["service", "in_batches"] = _served(client, parts["in_batches"], BATCH)
        runs["metadata_before"] = client.post("/metadata", json={}).json()
        runs["metrics"] = client.get("/metrics").text
    with keyed_service(workspace, folder / "serve-2.log", audit=audit) as service:
        client = service["client"]
        runs["metadata_after"] = client.post("/metadata", json={}).json()
        runs["cli", "after_restart"] = _cli(workspace, parts["after_restart"], folder, "--audit-db", str(audit))
        runs["service", "after_restart"] = _served(client, parts["after_restart"], BATCH)
    return runs


@pytest.mark.parametrize("part", ["one_by_one", "in_batches", "after_restart"])
def test_the_cli_and_the_service_give_the_same_rows_the_same_lanes(followed, part):
    cli, served = followed["cli", part], followed["service", part]
    pd.testing.assert_frame_equal(cli[COMPARED], served[COMPARED])
    assert cli["risk_score"].tolist() == pytest.approx(served["risk_score"].tolist(), abs=1e-12)


def test_the_stream_is_decided_as_one_whatever_its_requests(followed, packaged):
    """The whole stream scored as one file from the packaged scores: the lanes the service gave
    it in three parts, one by one, in batches, and across a restart."""
    whole = packaged["whole"]
    served = pd.concat(
        [followed["service", part] for part in ("one_by_one", "in_batches", "after_restart")], ignore_index=True
    )
    pd.testing.assert_frame_equal(whole[COMPARED], served[COMPARED])


def test_a_restarted_service_keeps_the_window(followed):
    before, after = followed["metadata_before"]["lanes"], followed["metadata_after"]["lanes"]
    assert after == before
    assert before["window"]["decisions"] == ONE_BY_ONE + IN_BATCHES
    fresh = followed["metadata_fresh"]["lanes"]
    assert fresh["window"] == {"size": 1000, "decisions": 0, "shares": {"green": None, "yellow": None, "red": None}}
    # a new service starts from the packaged scores (here all of the validation window's, fewer
    # than the window holds): the thresholds fitted on them
    assert {name: fresh[name] for name in THRESHOLDS} == fresh["packaged_thresholds"]
    assert {name: before[name] for name in THRESHOLDS} != fresh["packaged_thresholds"]  # the traffic moved them


def test_every_decision_stores_the_thresholds_it_was_made_with(followed):
    rows = pd.DataFrame(records(followed["audit"], "SELECT * FROM decisions ORDER BY id"))
    assert len(rows) == len(followed["stream"])
    assert set(rows["lane_thresholds"]) == {"follow"}
    assert rows["duty_at_risk"].notna().all()
    packaged = followed["metadata_fresh"]["lanes"]["packaged_thresholds"]
    for name in THRESHOLDS:  # a source given no share picks nothing: its threshold is null
        assert rows[name].isna().all() == (packaged[name] is None), name
    # the first declaration was decided by the packaged scores alone: the e2e validation window
    # holds fewer declarations than the window, so those are the scores the policy was fitted on
    first = rows.iloc[0]
    assert {name: None if pd.isna(first[name]) else float(first[name]) for name in THRESHOLDS} == packaged
    assert rows[[name for name in THRESHOLDS if packaged[name] is not None]].nunique().max() > 1  # they moved


def test_metadata_shows_the_mode_the_window_and_its_shares(followed):
    body = followed["metadata_before"]
    lanes = body["lanes"]
    assert lanes["mode"] == "follow"
    served = pd.concat([followed["service", part] for part in ("one_by_one", "in_batches")])
    counts = served["lane"].value_counts()
    shares = {lane: counts.get(lane, 0) / len(served) for lane in ("green", "yellow", "red")}
    assert lanes["window"]["shares"] == pytest.approx(shares)
    assert "exploration_key" not in json.dumps(body)


def test_metrics_keep_the_lane_share_gauges(followed):
    for lane in ("red", "yellow", "green"):
        assert f'customs_risk_lane_share{{lane="{lane}"}}' in followed["metrics"]
        assert f'customs_risk_lane_share_setting{{lane="{lane}"}}' in followed["metrics"]
