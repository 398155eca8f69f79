"""The scoring service as a targeting center runs it, called over HTTP: every status code and field
of docs/api.md, analyst risk profiles, exploration, keys, limits, the audit store under
concurrent clients, and refusal to start on a champion that is not what the registry holds.
Every test of the running service runs twice, on a SQLite store and on a PostgreSQL one (issue
31: one suite, either store); the pipeline runs once.

The workspace's history stops before a held-back month of the embedded data. The served model is
refit on all of its history, so only declarations after it are out of sample for it: lane shares
are measured on that month, never on the validation window the model has already learned.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from bench.workspace import copy_project
from features.adapters import KCS, read_source
from features.schema import DECLARATION_FIELDS, RECORD, check_declarations
from serving.settings import DEFAULT_MAX_BODY_BYTES
from tests.conftest import REPO
from tests.e2e.stack import BIN, _free_port, _run, contract_example, serve_bento
from tests.postgres import STORE_KINDS, new_store, rows

pytestmark = pytest.mark.e2e

WINDOWS = {"train_start": "2020-01-01", "valid_start": "2020-12-01", "valid_end": "2021-02-28"}
HELD_BACK_FROM = "2021-03-01"  # the month after the history: what the service is measured on
TRAIN_ROWS, VALID_ROWS = 3000, 3000
FAST_TRAINING = {"learning_rate": 0.1, "max_rounds": 400, "early_stopping_rounds": 40}
BODY_TIMEOUT_SECONDS = 2
KEYS = ("e2e-key-one", "e2e-key-two")
WATCHED_IMPORTER = "E2EWATCH1"
RULES = f"""
rules:
  - name: watched-timber
    lane: red
    reason: "timber for importer {WATCHED_IMPORTER}, on the intelligence unit's watch list"
    when:
      importer_id: {{in: ["{WATCHED_IMPORTER}"]}}
      hs6_code: {{prefix: ["4408"]}}
      origin_country: {{in: ["BE", "NL"]}}
"""


def _kcs_split(root: Path) -> Path:
    """History in the KCS layout: a sample before the validation window, a sample of it, and the
    held-back month kept aside in full. Returns the held-back file."""
    frames = [
        pd.read_csv(REPO / "data/raw" / name, dtype=str, keep_default_na=False)
        for name in ("df_syn_train_eng.csv", "df_syn_valid_eng.csv")
    ]
    kcs = pd.concat(frames, ignore_index=True)
    early = kcs[kcs["Date"] < WINDOWS["valid_start"]]
    recent = kcs[kcs["Date"].between(WINDOWS["valid_start"], WINDOWS["valid_end"])]
    example = early[early["Declaration ID"] == "97061800"]
    train = pd.concat([example, early.drop(example.index).sample(n=TRAIN_ROWS - len(example), random_state=5)])
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    train.sort_values("Date", kind="stable").to_csv(raw / "df_syn_train_eng.csv", index=False)
    recent.sample(n=VALID_ROWS, random_state=5).sort_values("Date", kind="stable").to_csv(
        raw / "df_syn_valid_eng.csv", index=False
    )
    held_back = root / "held_back.csv"
    kcs[kcs["Date"] >= HELD_BACK_FROM].to_csv(held_back, index=False)
    return held_back


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, _migrated_mlflow_db) -> dict:
    root = tmp_path_factory.mktemp("contract-workspace")
    copy_project(root)  # what `dvc repro` runs, as make bench copies it (requirements.lock among it)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["windows"].update(WINDOWS)
    params["train"].update(FAST_TRAINING)
    params["serving"]["body_timeout_seconds"] = BODY_TIMEOUT_SECONDS
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    held_back = _kcs_split(root)
    shutil.copy(_migrated_mlflow_db, root / "mlflow.db")
    (root / "risk_profiles.yaml").write_text(RULES)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "BENTOML_HOME": str(root / ".bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "RISK_AUDIT_DB": str(root / "audit" / "audit.db"),
        "RISK_PROFILES": str(root / "risk_profiles.yaml"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("RISK_API_KEYS", None)
    env.pop("RISK_MODEL_TAG", None)
    _run([str(BIN / "dvc"), "init", "--no-scm", "-q"], root, env)
    _run([str(BIN / "dvc"), "repro"], root, env)
    return {"root": root, "env": env, "held_back": held_back, "params": params}


@pytest.fixture(scope="module", params=STORE_KINDS)
def service(request, workspace, tmp_path_factory):
    """Two workers (two processes writing one audit store), two keys, the analysts' rules; on a
    new store of each kind, so each starts from the packaged scores as a new center does."""
    folder = tmp_path_factory.mktemp(f"contract-{request.param}")
    log = folder / "serve.log"
    with new_store(request.param, folder, request) as store:
        env = {**workspace["env"], "RISK_AUDIT_DB": str(store), "RISK_API_KEYS": ",".join(KEYS), "RISK_WORKERS": "2"}
        with (
            serve_bento(workspace["root"], env, log) as served,
            httpx.Client(base_url=served.base, headers={"Authorization": f"Bearer {KEYS[0]}"}, timeout=60) as client,
        ):
            yield {"client": client, "base": served.base, "log": log, "store": store, "env": env}


@pytest.fixture(scope="module")
def held_back(workspace) -> list[dict]:
    """The held-back month as a client sends it: canonical fields, JSON values."""
    records = read_source(workspace["held_back"], KCS)[DECLARATION_FIELDS].reset_index(drop=True)
    records = records.drop(index=check_declarations(records, RECORD).failures["index"].unique())
    records = records.astype(object).where(records.notna(), None)
    for column in ("tax_rate", "net_mass_kg", "item_price"):
        records[column] = records[column].astype(float)
    return records.to_dict(orient="records")


@pytest.fixture(scope="module")
def held_back_results(service, held_back) -> list[dict]:
    results = []
    for start in range(0, len(held_back), 1000):
        response = service["client"].post("/score", json={"declarations": held_back[start : start + 1000]})
        assert response.status_code == 200, response.text
        results += response.json()["results"]
    return results


def _registered(workspace) -> dict:
    """The champion the last registration left in service: what the package stage served (a
    retrain earlier in the session waits for approval as `challenger`)."""
    return json.loads((workspace["root"] / "data/model/registration.json").read_text())["champion"]


def _audit_export(workspace, service, table: str, output: Path) -> pd.DataFrame:
    """`customs-risk audit` of today's rows of the service's store, as RISK_AUDIT_DB names it."""
    today = datetime.now(UTC).date().isoformat()
    _run(
        [
            str(BIN / "customs-risk"),
            "audit",
            "--since",
            today,
            "--until",
            today,
            "--table",
            table,
            "--output",
            str(output),
        ],
        workspace["root"],
        service["env"],
    )
    return pd.read_csv(output, dtype={"declaration_id": str, "model_version": str}, keep_default_na=False)


# --- /metadata and /score: every field ----------------------------------------------------------


def test_metadata_names_the_registered_champion_and_its_settings(service, workspace):
    response = service["client"].post("/metadata", json={})
    assert response.status_code == 200
    body = response.json()
    registration = _registered(workspace)
    assert (body["name"], body["version"], body["run_id"]) == (
        "customs-risk",
        registration["version"],
        registration["run_id"],
    )
    registry = MlflowClient(tracking_uri=workspace["env"]["MLFLOW_TRACKING_URI"])
    assert (
        body["files_sha256"] == registry.get_model_version("customs-risk", registration["version"]).tags["files_sha256"]
    )
    assert body["training_window"] == f"{WINDOWS['train_start']}..{WINDOWS['valid_end']}"
    assert body["validation_window"] == f"{WINDOWS['valid_start']}..{WINDOWS['valid_end']}"
    metrics = json.loads((workspace["root"] / "metrics/targeting.json").read_text())
    assert body["validation_metrics"]["precision_at_5"] == pytest.approx(metrics["precision_at_5"])
    serving = workspace["params"]["serving"]
    lanes = body["lanes"]
    shares = (
        "red_risk_share",
        "red_value_share",
        "red_critical_share",
        "yellow_share",
        "yellow_critical_share",
        "exploration_share",
    )
    assert {name: lanes[name] for name in shares} == {name: serving[name] for name in shares}
    assert lanes["red_share"] == pytest.approx(
        serving["red_risk_share"] + serving["red_value_share"] + serving["red_critical_share"]
    )
    assert lanes["order"] == {"red": ["critical", "value", "model"], "yellow": ["critical", "model"]}
    if serving["yellow_share"] > serving["yellow_critical_share"]:
        assert 0 < lanes["yellow_threshold"] <= lanes["red_threshold"] < 1
    else:  # all of yellow goes by critical score: fraud risk picks none for it
        assert lanes["yellow_threshold"] is None and 0 < lanes["red_threshold"] < 1
    assert lanes["yellow_critical_threshold"] <= lanes["red_critical_threshold"]
    assert "exploration_key" not in json.dumps(body)
    assert {"importer_fraud_rate", "log_value_per_kg", "hs_chapter"} <= set(body["features"])
    assert body["risk_profiles"]["rules"] == [
        {
            "name": "watched-timber",
            "lane": "red",
            "reason": f"timber for importer {WATCHED_IMPORTER}, on the intelligence unit's watch list",
        }
    ]


def test_score_answers_every_contract_field(service, workspace, held_back):
    response = service["client"].post("/score", json={"declarations": held_back[:50]})
    assert response.status_code == 200
    body = response.json()
    registration = _registered(workspace)
    assert body["model"] == {
        "name": "customs-risk",
        "version": registration["version"],
        "run_id": registration["run_id"],
    }
    assert [r["declaration_id"] for r in body["results"]] == [d["declaration_id"] for d in held_back[:50]]
    for result, sent in zip(body["results"], held_back[:50]):
        assert set(result) == {
            "declaration_id",
            "risk_score",
            "critical_score",
            "duty_at_risk",
            "lane",
            "selected_by",
            "reasons",
        }
        assert 0 <= result["risk_score"] <= 1 and 0 <= result["critical_score"] <= 1
        declared_duty = float(sent["item_price"]) * float(sent["tax_rate"]) / 100
        assert result["duty_at_risk"] == pytest.approx(result["risk_score"] * declared_duty, rel=1e-9, abs=1e-9)
        assert result["lane"] in {"red", "yellow", "green"}
        # no held-back declaration meets the rule
        assert result["selected_by"] in {"model", "value", "critical", "random"}
        assert len(result["reasons"]) <= workspace["params"]["serving"]["max_reasons"]
        model_reasons = result["reasons"][result["selected_by"] in ("value", "critical") :]  # the policy's first
        assert [r["contribution"] for r in model_reasons] == sorted(
            (r["contribution"] for r in model_reasons), reverse=True
        )
        for reason in result["reasons"]:
            assert set(reason) == {"feature", "value", "contribution", "support", "text"} and reason["text"]


def test_reasons_go_to_red_and_yellow_unless_the_request_asks_for_all_or_none(service, held_back):
    """CONTRACT section 3: by default only red and yellow declarations carry reasons; a request
    may ask for "all" or "none" beside "declarations"; the scores never depend on it."""
    batch = held_back[:200]
    answers = {}
    for choice in (None, "selected", "all", "none"):
        body = {"declarations": batch} if choice is None else {"declarations": batch, "reasons": choice}
        response = service["client"].post("/score", json=body)
        assert response.status_code == 200, response.text
        answers[choice] = response.json()["results"]
    default, every, none = answers[None], answers["all"], answers["none"]

    def scores(results: list[dict]) -> list[tuple]:
        return [(r["declaration_id"], r["risk_score"], r["critical_score"], r["duty_at_risk"]) for r in results]

    # the scores never depend on it; lanes may move between the four requests, since thresholds
    # follow the traffic and each request adds 200 declarations to the window (issue 28)
    assert scores(answers["selected"]) == scores(default) == scores(every) == scores(none)
    for answer in (default, answers["selected"]):
        carried = [r["lane"] != "green" for r in answer]
        assert any(carried) and not all(carried)
        assert all(r["reasons"] == [] for r, has in zip(answer, carried) if not has)  # green: none
        assert any(r["reasons"] for r, has in zip(answer, carried) if has)
    assert all(r["reasons"] == [] for r in none)  # no held-back declaration meets the rule
    assert sum(bool(r["reasons"]) for r in every) > sum(bool(r["reasons"]) for r in default)
    refused = service["client"].post("/score", json={"declarations": batch[:1], "reasons": "some"})
    assert refused.status_code in (400, 422), refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["reasons"]


def test_lane_shares_on_the_held_back_month_are_the_settings(held_back_results, workspace):
    """Thresholds follow the last declarations scored (issue 28), so once the window holds a month
    the served model never saw, its lanes keep to the shares set. Shares are of lanes the model
    chose (not rules, not random). Before that, the window is the packaged validation scores, and
    this month outscores them: it lies inside the history the served state was fitted on, so its
    entities' records include outcomes from after each declaration (red 12.9% over the month's
    first sixth, 7.4% over the whole month, at 1b9111d)."""
    window = workspace["params"]["serving"]["follow_window"]
    lanes = pd.DataFrame(held_back_results).iloc[window:]
    assert len(lanes) >= 2 * window  # the month outlasts its first window twice
    by_score = lanes[lanes["selected_by"].isin(["model", "value", "critical"])]["lane"]
    red = (by_score == "red").sum() / len(lanes)
    yellow = (lanes["lane"] == "yellow").mean()
    serving = workspace["params"]["serving"]
    measured = f"{len(lanes)} held-back declarations after the first {window}: red {red:.2%} yellow {yellow:.2%}"
    red_share = serving["red_risk_share"] + serving["red_value_share"] + serving["red_critical_share"]
    assert abs(red - red_share) <= 0.01, measured
    assert abs(yellow - serving["yellow_share"]) <= 0.01, measured


@pytest.mark.xfail(
    reason="with lane thresholds following traffic (the default since issue 28), 10,000 identical declarations fill "
    "the window and, ties included, every copy is then picked by score: a known limit of following, noted on "
    "issue 28 (real declarations differ at least in their dates and days since the last one)",
    strict=False,
)
def test_exploration_share_over_10000_ids(service, held_back_results, held_back, workspace):
    """10,000 copies of the month's lowest-risk declaration, differing only in ID: every one is
    green for the model, so the share sent red at random is the exploration share."""
    lowest = min(range(len(held_back_results)), key=lambda i: held_back_results[i]["risk_score"])
    copies = [dict(held_back[lowest], declaration_id=f"EXPLORE-{i:05d}") for i in range(10_000)]
    results = []
    for start in range(0, len(copies), 1000):
        response = service["client"].post("/score", json={"declarations": copies[start : start + 1000]})
        assert response.status_code == 200
        results += response.json()["results"]
    picked = [r["selected_by"] == "random" for r in results]
    assert all(r["lane"] == ("red" if p else "green") for r, p in zip(results, picked))
    share = sum(picked) / len(picked)
    assert abs(share - workspace["params"]["serving"]["exploration_share"]) <= 0.003, f"exploration share {share:.2%}"
    again = service["client"].post("/score", json={"declarations": copies[:1000]}).json()["results"]
    assert [r["selected_by"] for r in again] == [r["selected_by"] for r in results[:1000]]


# --- analyst risk profiles -------------------------------------------------------------------------


def _watched(**changes) -> dict:
    record = dict(
        contract_example(),
        declaration_id="RULE-1",
        importer_id=WATCHED_IMPORTER,
        hs6_code="440890",
        origin_country="BE",
    )
    return {**record, **changes}


def test_a_rule_hit_sets_lane_selected_by_and_first_reason(service):
    hit, miss = _watched(), _watched(declaration_id="RULE-2", origin_country="FR")
    results = service["client"].post("/score", json={"declarations": [hit, miss]}).json()["results"]
    assert (results[0]["lane"], results[0]["selected_by"]) == ("red", "rule")
    assert results[0]["reasons"][0] == {
        "feature": "risk_profile",
        "value": "watched-timber",
        "contribution": None,
        "support": None,
        "text": f"timber for importer {WATCHED_IMPORTER}, on the intelligence unit's watch list",
    }
    assert results[1]["selected_by"] != "rule"
    assert all(reason["feature"] != "risk_profile" for reason in results[1]["reasons"])
    # a rule's reason is stated whichever reasons are asked for
    bare = service["client"].post("/score", json={"declarations": [hit], "reasons": "none"}).json()["results"]
    assert bare[0]["reasons"] == results[0]["reasons"][:1]


def _every_worker(client, record: dict, expected: str) -> bool:
    """Whether enough requests to reach both workers all answer `expected` as selected_by."""
    answers = {
        client.post("/score", json={"declarations": [record]}).json()["results"][0]["selected_by"] for _ in range(8)
    }
    return answers == {expected}


def test_rules_reload_without_a_restart_and_a_bad_edit_keeps_the_rules_in_force(service, workspace):
    path = Path(workspace["env"]["RISK_PROFILES"])
    cheap = dict(contract_example(), declaration_id="RULE-3", item_price=10.0, net_mass_kg=1000.0)
    client = service["client"]
    before = client.post("/score", json={"declarations": [cheap]}).json()["results"][0]["selected_by"]
    assert before != "rule" and _every_worker(client, cheap, before)
    added = (
        RULES
        + """  - name: far-below-cost
    lane: yellow
    reason: "declared at 0.01 per kg, far below any plausible cost"
    when:
      value_per_kg: {below: 0.05}
"""
    )
    try:
        path.write_text(added)
        assert _every_worker(client, cheap, "rule")
        path.write_text(added.replace("lane: yellow", "lane: amber"))
        assert _every_worker(client, cheap, "rule")
        metadata = client.post("/metadata", json={}).json()["risk_profiles"]
        assert "lane: expected one of yellow, red, got 'amber'" in metadata["reload_error"]
        assert [rule["name"] for rule in metadata["rules"]] == ["watched-timber", "far-below-cost"]
    finally:
        path.write_text(RULES)
    assert _every_worker(client, cheap, before)


# --- errors and limits -----------------------------------------------------------------------------


def test_invalid_and_malformed_requests_get_field_errors_and_store_nothing(service):
    client = service["client"]

    def decisions() -> int:
        return rows(service["store"], "SELECT COUNT(*) FROM decisions")[0][0]

    before = decisions()
    invalid = client.post(
        "/score", json={"declarations": [contract_example(), dict(contract_example(), net_mass_kg=-1, hs6_code="44")]}
    )
    assert invalid.status_code == 422
    assert {(e["index"], e["field"]) for e in invalid.json()["errors"]} == {(1, "net_mass_kg"), (1, "hs6_code")}
    malformed = client.post("/score", content=b'{"declarations": [', headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert set(malformed.json()["errors"][0]) == {"index", "field", "message"}
    assert client.post("/score", json={"declarations": []}).status_code == 422
    over = client.post("/score", json={"declarations": [contract_example()] * 1001})
    assert over.status_code == 422
    assert over.json()["errors"] == [
        {"index": None, "field": "declarations", "message": "must hold 1 to 1000 items, got 1001"}
    ]
    bad_outcome = client.post(
        "/outcomes", json={"outcomes": [{"declaration_id": "X", "inspected_on": "04/02/2021", "result": "clean"}]}
    )
    assert bad_outcome.status_code == 422 and bad_outcome.json()["errors"][0]["field"] == "inspected_on"
    assert decisions() == before


def test_a_body_over_the_limit_gets_413(service, workspace):
    limit = DEFAULT_MAX_BODY_BYTES  # RISK_MAX_BODY_BYTES is not set for this service
    body = json.dumps(
        {"declarations": [dict(contract_example(), declaration_id=f"BIG-{i}") for i in range(limit // 400)]}
    )
    assert len(body) > limit
    response = service["client"].post("/score", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["errors"][0]["field"] == "body"


def test_a_body_that_never_arrives_gets_408(service):
    host, port = service["base"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=BODY_TIMEOUT_SECONDS + 30) as sock:
        sock.sendall(
            f"POST /score HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEYS[1]}\r\n"
            'Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"declarations": ['.encode()
        )
        answer = b""
        while b"not received within" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"field": "body"' in answer


def test_keys_missing_wrong_and_right(service):
    base = service["base"]
    for path, body in (
        ("/score", {"declarations": [contract_example()]}),
        ("/outcomes", {"outcomes": []}),
        ("/metadata", {}),
    ):
        assert httpx.post(f"{base}{path}", json=body).status_code == 401
        assert httpx.post(f"{base}{path}", json=body, headers={"Authorization": "Bearer not-a-key"}).status_code == 401
        assert httpx.post(f"{base}{path}", json=body, headers={"Authorization": f"Basic {KEYS[0]}"}).status_code == 401
    assert httpx.post(f"{base}/metadata", json={}).json()["errors"][0]["field"] == "authorization"
    for key in KEYS:
        assert httpx.post(f"{base}/metadata", json={}, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    for probe in ("/healthz", "/readyz"):
        assert httpx.get(f"{base}{probe}").status_code == 200
    metrics = httpx.get(f"{base}/metrics")
    assert metrics.status_code == 200 and "# TYPE" in metrics.text
    log = service["log"].read_text()
    assert not any(key in log for key in KEYS)


# --- the audit store -------------------------------------------------------------------------------


def test_20_concurrent_clients_post_outcomes_and_none_is_lost(service, workspace, tmp_path):
    """Each client posts its outcomes one request at a time, then posts its first one again with
    another result: the later outcome replaces the earlier, and nothing is lost."""
    failures = []

    def client(n: int) -> None:
        with httpx.Client(
            base_url=service["base"], headers={"Authorization": f"Bearer {KEYS[n % 2]}"}, timeout=60
        ) as http:
            for i in range(25):
                outcome = {
                    "declaration_id": f"OUT-{n:02d}-{i:02d}",
                    "inspected_on": "2021-04-02",
                    "result": "clean",
                    "notes": f"client {n}",
                }
                response = http.post("/outcomes", json={"outcomes": [outcome]})
                if response.status_code != 200 or response.json() != {"stored": 1}:
                    failures.append(response.text)
            again = {"declaration_id": f"OUT-{n:02d}-00", "inspected_on": "2021-04-03", "result": "fraud"}
            if http.post("/outcomes", json={"outcomes": [again]}).json() != {"stored": 1}:
                failures.append("repost")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    outcomes = _audit_export(workspace, service, "outcomes", tmp_path / "outcomes.csv")
    posted = outcomes[outcomes["declaration_id"].str.startswith("OUT-")].set_index("declaration_id")
    assert len(posted) == 500
    assert (posted["result"] == "fraud").sum() == 20
    assert posted.loc["OUT-07-00", ["inspected_on", "result"]].tolist() == ["2021-04-03", "fraud"]
    assert posted.loc["OUT-07-01", ["result", "notes"]].tolist() == ["clean", "client 7"]


def test_the_audit_export_holds_each_decision_with_its_outcome(service, workspace, tmp_path):
    scored = service["client"].post("/score", json={"declarations": [_watched(declaration_id="AUDIT-1")]}).json()
    stored = service["client"].post(
        "/outcomes",
        json={"outcomes": [{"declaration_id": "AUDIT-1", "inspected_on": "2021-04-05", "result": "critical"}]},
    )
    assert stored.json() == {"stored": 1}
    decisions = _audit_export(workspace, service, "decisions", tmp_path / "decisions.csv")
    row = decisions[decisions["declaration_id"] == "AUDIT-1"].iloc[-1]
    assert (row["lane"], row["selected_by"], row["model_version"]) == ("red", "rule", scored["model"]["version"])
    assert json.loads(row["reasons"]) == scored["results"][0]["reasons"]
    assert json.loads(row["record"])["importer_id"] == WATCHED_IMPORTER
    assert row["risk_score"] == pytest.approx(scored["results"][0]["risk_score"])
    assert (row["outcome_result"], row["outcome_inspected_on"]) == ("critical", "2021-04-05")


# --- start-up refusals -----------------------------------------------------------------------------


def _refused(workspace, tmp_path, env_changes: dict, tamper=None) -> str:
    """Output of `bentoml serve` on a copy of the workspace's BentoML store; it must exit."""
    home = tmp_path / "bentoml"
    shutil.copytree(workspace["root"] / ".bentoml", home)
    if tamper:
        tamper(home)
    env = {**workspace["env"], "BENTOML_HOME": str(home), **env_changes}
    env = {key: value for key, value in env.items() if value is not None}
    result = subprocess.run(
        [
            str(BIN / "bentoml"),
            "serve",
            "customs-risk-service:latest",
            "--host",
            "127.0.0.1",
            "--port",
            str(_free_port()),
        ],
        cwd=workspace["root"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    return result.stdout + result.stderr


def test_start_is_refused_when_the_champion_files_differ_from_the_registry(workspace, tmp_path):
    version = _registered(workspace)["version"]

    def tamper(home: Path) -> None:
        [booster] = home.glob(f"models/customs-risk/v{version}/mlflow_model/artifacts/bundle/fraud.txt")
        booster.write_text(booster.read_text().replace("tree", "Tree", 1))

    output = _refused(workspace, tmp_path, {}, tamper)
    assert f"champion customs-risk:v{version} does not match registry version {version}" in output
    assert "changed: artifacts/bundle/fraud.txt" in output


def test_start_is_refused_when_a_champion_file_is_missing_or_cut_short(workspace, tmp_path):
    version = _registered(workspace)["version"]
    model = f"models/customs-risk/v{version}/mlflow_model/artifacts/bundle"

    def remove_state(home: Path) -> None:
        [totals] = home.glob(f"{model}/state/entity_totals.parquet")
        totals.unlink()

    output = _refused(workspace, tmp_path / "missing", {}, remove_state)
    assert "missing: artifacts/bundle/state/entity_totals.parquet" in output

    def truncate_booster(home: Path) -> None:
        [booster] = home.glob(f"{model}/critical.txt")
        booster.write_bytes(booster.read_bytes()[:1000])

    output = _refused(workspace, tmp_path / "cut", {}, truncate_booster)
    assert "changed: artifacts/bundle/critical.txt" in output


def test_start_is_refused_without_an_audit_store_or_with_a_bad_rules_file(workspace, tmp_path):
    output = _refused(workspace, tmp_path / "a", {"RISK_AUDIT_DB": None})
    assert "RISK_AUDIT_DB must be the absolute path of the audit store" in output
    bad = tmp_path / "bad.yaml"
    bad.write_text(RULES.replace('"NL"', '"XX"'))
    output = _refused(workspace, tmp_path / "b", {"RISK_PROFILES": str(bad)})
    assert "'XX' is not an ISO 3166-1 alpha-2 country code" in output
