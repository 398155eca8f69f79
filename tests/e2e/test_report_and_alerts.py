"""Issues 16 and 17 over HTTP, on one served service (two workers, its own audit store, a partner's
key): a held-back month scored and its true outcomes posted, then `customs-risk report` checked
against figures computed here from the same declarations and labels; partner alerts imported with
`customs-risk alerts import` while the service runs, and what they do to lanes; `/metadata`'s
alerts in force; and `GET /metrics` against every answer the session got. All of it twice: on a
SQLite store and on a PostgreSQL one (issue 31: one suite, either store).

The held-back month is February 2021 of the embedded KCS history without the declarations the
workspace's sample trained on (the workspace holds a sample of the history only)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from features.adapters import KCS, read_source
from features.schema import DECLARATION_FIELDS, RECORD, check_declarations
from serving import kpis as reporting
from tests.conftest import REPO
from tests.e2e.stack import API_KEY, BIN, contract_example, serve_bento, until
from tests.postgres import STORE_KINDS, new_store, rows

pytestmark = pytest.mark.e2e

MONTH = (dt.date(2021, 2, 1), dt.date(2021, 2, 28))
BATCH = 300
HITS = {"fraud", "critical"}
KZ_KEY = "e2e-kz-shared-key-5b1c"  # the key KZ and this center share (RISK_PARTNER_KEYS)
TODAY = dt.datetime.now(dt.UTC).date()
ALERTED = "E2E-ALERT-IMP"  # an importer KZ warns about (plain alert, May 2021 only)
HASHED = "E2E-KZ-HASHED"  # an importer KZ warns about with a hashed alert, under the shared key
WRONG_KEY = "E2E-KZ-WRONGKEY"  # hashed by KZ under another key: must not match


def _hmac(key: str, identifier: str) -> str:
    return hmac.new(key.encode(), identifier.encode(), hashlib.sha256).hexdigest()


ALERTS = [
    {
        "alert_id": "KZ-E2E-1",
        "issued_by": "KZ",
        "issued_on": "2021-05-01",
        "valid_until": "2021-05-31",
        "target": "importer_id",
        "value": ALERTED,
        "lane": "red",
        "reason": "cocaine found in a consignment of this importer",
        "hashed": False,
    },
    {
        "alert_id": "KZ-E2E-2",
        "issued_by": "KZ",
        "issued_on": (TODAY - dt.timedelta(days=30)).isoformat(),
        "valid_until": (TODAY + dt.timedelta(days=60)).isoformat(),
        "target": "importer_id",
        "value": _hmac(KZ_KEY, HASHED),
        "lane": "red",
        "reason": "undervalued timber",
        "hashed": True,
    },
    {
        "alert_id": "KZ-E2E-3",
        "issued_by": "KZ",
        "issued_on": (TODAY - dt.timedelta(days=30)).isoformat(),
        "valid_until": (TODAY + dt.timedelta(days=60)).isoformat(),
        "target": "importer_id",
        "value": _hmac("not-the-shared-key", WRONG_KEY),
        "lane": "red",
        "reason": "hashed under another key",
        "hashed": True,
    },
    {
        "alert_id": "BE-E2E-1",
        "issued_by": "BE",
        "issued_on": (TODAY - dt.timedelta(days=5)).isoformat(),
        "valid_until": (TODAY + dt.timedelta(days=30)).isoformat(),
        "target": "seller_id",
        "value": "E2E-BE-SELLER",
        "lane": "yellow",
        "reason": "false origin declared before",
        "hashed": False,
    },
]
# the declarations the alerts are about: (id, importer, date); scored before and after the import
ALERT_CASES = {
    "in_window": ("E2E-ALERT-IN", ALERTED, "2021-05-10"),
    "after_valid_until": ("E2E-ALERT-AFTER", ALERTED, "2021-06-15"),
    "hashed_right_key": ("E2E-HASHED-RIGHT", HASHED, TODAY.isoformat()),
    "hashed_wrong_key": ("E2E-HASHED-WRONG", WRONG_KEY, TODAY.isoformat()),
}


def _held_back_month(root: Path) -> pd.DataFrame:
    """February 2021 of the embedded history, less the declarations in the workspace's sample and
    any the schema refuses, with their labels."""
    full = read_source(REPO / "data/raw/df_syn_valid_eng.csv", KCS)
    sampled = set(read_source(root / "data/raw/df_syn_valid_eng.csv", KCS)["declaration_id"])
    month = full[
        full["declaration_date"].between(*(day.isoformat() for day in MONTH)) & ~full["declaration_id"].isin(sampled)
    ].drop_duplicates("declaration_id")
    month = month.reset_index(drop=True)
    return month.drop(index=check_declarations(month[DECLARATION_FIELDS], RECORD).failures["index"].unique())


def _as_sent(frame: pd.DataFrame) -> list[dict]:
    records = frame[DECLARATION_FIELDS].astype(object)
    records = records.where(records.notna(), None)
    for column in ("tax_rate", "net_mass_kg", "item_price"):
        records[column] = records[column].astype(float)
    return records.to_dict(orient="records")


def _alert_declaration(declaration_id: str, importer: str, day: str) -> dict:
    return dict(contract_example(), declaration_id=declaration_id, importer_id=importer, declaration_date=day)


def _metrics(text: str) -> dict:
    """Every sample of a Prometheus text page: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _cli(arguments: list[str], root: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "customs-risk"), *arguments], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )


def _fingerprint(store: Path | str) -> tuple:
    """What would change if anything wrote to the store: a SQLite file's bytes and time, a
    PostgreSQL store's row counts and last ids."""
    if isinstance(store, Path):
        return (store.read_bytes(), store.stat().st_mtime_ns)
    return tuple(
        rows(
            store,
            "SELECT (SELECT count(*) FROM decisions), (SELECT max(id) FROM decisions),"
            " (SELECT count(*) FROM outcomes), (SELECT max(received_at) FROM outcomes), (SELECT count(*) FROM alerts)",
        )
    )


@pytest.fixture(scope="module", params=STORE_KINDS)
def session(request, workspace, tmp_path_factory):
    """One served session: every request of this module, and what each answered, on a SQLite
    store and then on a PostgreSQL one."""
    folder = tmp_path_factory.mktemp("report-alerts")
    with new_store(request.param, folder, request) as store:
        yield _session(workspace, folder, store)


def _session(workspace, folder: Path, store: Path | str) -> dict:
    """The workspace is copied into a checkout of its own (with pyproject.toml, so the service and
    the commands find the validation window there, as they do in a clone after `make run`),
    leaving the shared one as the other modules expect it."""
    root = folder / "checkout"
    shutil.copytree(
        workspace["root"],
        root,
        ignore=lambda where, names: ["serving"] if Path(where) == workspace["root"] / "data" else [],
    )
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (folder / "kz.key").write_text(KZ_KEY + "\n")
    (folder / "partners.json").write_text(json.dumps({"KZ": str(folder / "kz.key")}))
    env = {
        **workspace["env"],
        "BENTOML_HOME": str(root / ".bentoml"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "RISK_API_KEYS": API_KEY,
        "RISK_AUDIT_DB": str(store),
        "RISK_PARTNER_KEYS": str(folder / "partners.json"),
        "RISK_WORKERS": "2",
    }
    cli_env = {**env, "PYTHONPATH": str(root)}  # the commands run the workspace's code, as the bento does
    month = _held_back_month(root)
    sent = _as_sent(month)
    alert_declarations = [_alert_declaration(*case) for case in ALERT_CASES.values()]
    answered: list[dict] = []  # every /score result of the session, in the order the store got them
    posted: list[dict] = []
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "Connection": "close",
    }  # a new connection each: both workers answer
    with (
        serve_bento(root, env, folder / "serve.log") as served,
        httpx.Client(base_url=served.base, headers=headers, timeout=600) as client,
    ):

        def score(declarations: list[dict], reasons: str) -> list[dict]:
            response = client.post("/score", json={"declarations": declarations, "reasons": reasons})
            assert response.status_code == 200, response.text
            answered.extend(response.json()["results"])
            return response.json()["results"]

        def post(outcomes: list[dict]) -> None:
            for start in range(0, len(outcomes), 1000):
                response = client.post("/outcomes", json={"outcomes": outcomes[start : start + 1000]})
                assert response.status_code == 200, response.text
            posted.extend(outcomes)

        # /readyz answers once one worker is up: the session's requests are spread over both
        log, started = folder / "serve.log", "Service customs-risk initialized"
        until(lambda: log.read_text().count(started) >= 2, f"both workers initialized (see {log})", timeout=120)
        metrics_before = _metrics(httpx.get(f"{served.base}/metrics", timeout=30).text)
        results = [
            result for start in range(0, len(sent), BATCH) for result in score(sent[start : start + BATCH], "none")
        ]
        before = score(alert_declarations, "selected")
        imported = _cli(["alerts", "import", str(_alert_file(folder))], root, cli_env)
        after = score(alert_declarations, "selected")  # the same service, no restart

        truth = month[["declaration_id", "fraud", "critical_fraud", "item_price", "tax_rate"]].reset_index(drop=True)
        truth = truth.assign(lane=[r["lane"] for r in results], selected_by=[r["selected_by"] for r in results])
        outcomes, found, duties = [], [None] * len(truth), [None] * len(truth)
        for i, row in enumerate(truth.itertuples()):
            if row.lane == "green" or i % 7 == 0:  # green is not inspected; some inspections are not reported yet
                continue
            found[i] = "critical" if row.critical_fraud == "1" else "fraud" if row.fraud == "1" else "clean"
            outcome = {"declaration_id": row.declaration_id, "inspected_on": "2021-03-05", "result": found[i]}
            if i % 3 == 0:  # a third report the duty assessed: what the declared duty missed, none when clean
                duties[i] = 0.0 if found[i] == "clean" else round(float(row.item_price) * 0.07 + 250.5, 2)
                outcome["additional_duty"] = duties[i]
            outcomes.append(outcome)
        truth["outcome"], truth["additional_duty"] = pd.Series(found, dtype=object), pd.Series(duties, dtype=object)
        post(outcomes)
        post(
            [
                {
                    "declaration_id": ALERT_CASES["in_window"][0],
                    "inspected_on": "2021-05-12",
                    "result": "fraud",
                    "additional_duty": 1200.0,
                    "notes": "cocaine in the second container",
                }
            ]
        )
        metadata = client.post("/metadata", json={}).json()
        metrics_after = _metrics(httpx.get(f"{served.base}/metrics", timeout=30).text)
        worker_files = sorted((root / ".bentoml" / "prometheus_multiproc_dir").glob("counter_*.db"))
        per_worker = {
            path.name: sum(
                sample.value
                for metric in MultiProcessCollector.merge([str(path)])
                if metric.name == "customs_risk_decisions"
                for sample in metric.samples
                if sample.name.endswith("_total")
            )
            for path in worker_files
        }
    untouched = _fingerprint(store)
    reports = {}
    for name, (since, last) in {"month": MONTH, "alerts": (dt.date(2021, 5, 1), dt.date(2021, 5, 31))}.items():
        command = _cli(
            ["report", "--since", since.isoformat(), "--until", last.isoformat(), "--output", str(folder / name)],
            root,
            cli_env,
        )
        reports[name] = {
            "command": command,
            "kpis": json.loads((folder / name / "kpis.json").read_text())
            if (folder / name / "kpis.json").exists()
            else None,
        }
    params = yaml.safe_load((root / "params.yaml").read_text())
    return {
        "root": root,
        "folder": folder,
        "truth": truth,
        "answered": answered,
        "posted": posted,
        "before": dict(zip(ALERT_CASES, before)),
        "after": dict(zip(ALERT_CASES, after)),
        "imported": imported,
        "metadata": metadata,
        "metrics_before": metrics_before,
        "metrics_after": metrics_after,
        "per_worker": per_worker,
        "reports": reports,
        "params": params,
        "audit": store,
        "store_unchanged": _fingerprint(store) == untouched,
    }


def _alert_file(folder: Path) -> Path:
    path = folder / "kz-alerts.jsonl"
    path.write_text("".join(json.dumps(alert) + "\n" for alert in ALERTS))
    return path


# --- issue 16: the report of a held-back month ---------------------------------------------------


def _hit_rate(rows: pd.DataFrame) -> float | None:
    reported = [outcome for outcome in rows["outcome"] if outcome is not None]
    return sum(outcome in HITS for outcome in reported) / len(reported) if reported else None


def _approx(value):
    return None if value is None else pytest.approx(value)


def test_the_report_runs_on_the_month_and_leaves_the_store_alone(session):
    command = session["reports"]["month"]["command"]
    assert command.returncode == 0, command.stdout + command.stderr
    assert "Traceback" not in command.stderr
    assert len(session["truth"]) > 1500  # a month, not a handful
    assert session["store_unchanged"]  # two reports read it; not a byte or a timestamp changed


def test_every_count_share_and_hit_rate_of_the_month_is_the_declarations(session):
    kpis, truth, serving = session["reports"]["month"]["kpis"], session["truth"], session["params"]["serving"]
    assert kpis["period"] == {"since": "2021-02-01", "until": "2021-02-28"}
    served = session["metadata"]
    approval = {key: served[key] for key in ("approved_by", "approved_at", "approval_note")}
    assert kpis["model"] == {"name": "customs-risk", "version": served["version"], **approval}
    assert kpis["decisions"] == len(truth)
    red = serving["red_risk_share"] + serving["red_value_share"] + serving["red_critical_share"]
    settings = {"red": red, "yellow": serving["yellow_share"], "green": 1 - red - serving["yellow_share"]}
    for lane in ("red", "yellow", "green"):
        rows = truth[truth["lane"] == lane]
        duties = [duty for duty in rows["additional_duty"] if duty is not None]
        assert kpis["lanes"][lane] == {
            "decisions": len(rows),
            "share": _approx(len(rows) / len(truth)),
            "share_setting": _approx(settings[lane]),
            "outcomes": sum(outcome is not None for outcome in rows["outcome"]),
            "hit_rate": _approx(_hit_rate(rows)),
            "critical_found": sum(outcome == "critical" for outcome in rows["outcome"]),
            "additional_duty": _approx(sum(duties)) if duties else None,
        }, lane
    assert kpis["lanes"]["red"]["outcomes"] > 50 and kpis["lanes"]["red"]["additional_duty"] > 0
    for source in ("model", "value", "critical", "rule", "alert", "random"):
        rows = truth[truth["selected_by"] == source]
        assert kpis["selected_by"][source] == {
            "decisions": len(rows),
            "outcomes": sum(outcome is not None for outcome in rows["outcome"]),
            "hit_rate": _approx(_hit_rate(rows)),
        }, source
    assert kpis["selected_by"]["random"]["outcomes"] > 0  # the exploration share picked some of the month


def test_the_random_versus_targeted_ratio_is_the_declarations(session):
    kpis, truth = session["reports"]["month"]["kpis"], session["truth"]
    random = truth["selected_by"] == "random"
    targeted, picks = _hit_rate(truth[~random]), _hit_rate(truth[random])
    expected = targeted / picks if picks else None
    assert kpis["random_vs_targeted_hit_ratio"] == _approx(expected)
    assert expected is not None  # this month's random picks did find fraud: the ratio was checked


def test_the_months_drift_is_computed_against_the_validation_window(session):
    drift = session["reports"]["month"]["kpis"]["drift"]
    assert drift["risk_score"]["psi"] is not None and drift["risk_score"]["psi"] >= 0
    assert {"item_price", "importer_fraud_rate"} <= set(drift["features"])
    assert all(value["psi"] is not None for value in drift["features"].values())


@pytest.mark.xfail(
    reason="the e2e sample's month drifts past the flag (risk score PSI 0.29 against 0.25 in the CI run of 8375b09): "
    "the month lies inside the history the served state was fitted on, so its entities' records include outcomes "
    "from after each declaration and it outscores the validation window (its red share runs at 12.9% over its "
    "first sixth: test_service_contract.py's lane-share test); a month after the workspace's history would not",
    strict=False,
)
def test_a_month_of_the_same_history_keeps_its_risk_score_below_the_drift_flag(session):
    assert "risk_score" not in session["reports"]["month"]["kpis"]["drift"]["flagged"]
    assert session["metrics_after"][("customs_risk_score_psi", ())] < reporting.PSI_FLAG


def test_the_page_renders_its_tables_and_plots(session):
    page = (session["folder"] / "month" / "index.html").read_text()
    served = session["metadata"]
    assert f"version {served['version']}, approved by {served['approved_by']} at {served['approved_at']}." in page
    assert page.count("<table>") >= 5 and page.count('src="data:image/png;base64,') >= 5
    assert "<script" not in page and "http://" not in page and "https://" not in page


# --- issue 17: partner alerts over HTTP ------------------------------------------------------------


def test_the_import_ran_against_the_live_store(session):
    imported = session["imported"]
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "4 new" in imported.stderr
    assert KZ_KEY not in imported.stdout + imported.stderr


def test_an_alert_on_an_importer_sends_its_declaration_red_with_the_alerts_reason_first(session):
    before, after = session["before"]["in_window"], session["after"]["in_window"]
    assert before["selected_by"] != "alert"
    assert (after["lane"], after["selected_by"]) == ("red", "alert")
    first = after["reasons"][0]
    assert (first["feature"], first["value"]) == ("alert", "KZ-E2E-1")
    assert "KZ" in first["text"] and "cocaine found in a consignment of this importer" in first["text"]
    assert after["risk_score"] == pytest.approx(before["risk_score"])  # the alert moves the lane, not the score


def test_after_valid_until_the_model_decides_again(session):
    before, after = session["before"]["after_valid_until"], session["after"]["after_valid_until"]
    assert (after["lane"], after["selected_by"]) == (before["lane"], before["selected_by"])
    assert after["selected_by"] != "alert"
    assert not any(reason["feature"] == "alert" for reason in after["reasons"])


def test_a_hashed_alert_matches_only_under_the_shared_key(session):
    right, wrong = session["after"]["hashed_right_key"], session["after"]["hashed_wrong_key"]
    assert (right["lane"], right["selected_by"], right["reasons"][0]["value"]) == ("red", "alert", "KZ-E2E-2")
    before = session["before"]["hashed_wrong_key"]
    assert (wrong["lane"], wrong["selected_by"]) == (before["lane"], before["selected_by"])
    assert not any(reason["feature"] == "alert" for reason in wrong["reasons"])


def test_the_audit_store_records_which_alert_fired(session):
    declaration_id = ALERT_CASES["in_window"][0]  # the test's own constant
    (selected_by, reasons), *_ = rows(
        session["audit"],
        f"SELECT selected_by, reasons FROM decisions WHERE declaration_id = '{declaration_id}' ORDER BY id DESC",  # noqa: S608
    )
    assert selected_by == "alert" and json.loads(reasons)[0]["value"] == "KZ-E2E-1"


def test_metadata_lists_the_alerts_in_force_today_per_issuer(session):
    alerts = session["metadata"]["alerts"]
    # KZ-E2E-1 ended in 2021; both hashed KZ alerts and BE's are in force (a wrong hash is still an alert)
    assert alerts == {"on": TODAY.isoformat(), "active_by_issuer": {"BE": 1, "KZ": 2}, "stored": 4}


def test_the_report_counts_alert_decisions_like_any_source(session):
    report = session["reports"]["alerts"]
    assert report["command"].returncode == 0, report["command"].stdout + report["command"].stderr
    kpis = report["kpis"]
    assert kpis["decisions"] == 1  # the May declaration, by its latest decision (the alert's)
    assert kpis["selected_by"]["alert"] == {"decisions": 1, "outcomes": 1, "hit_rate": 1.0}
    assert kpis["lanes"]["red"]["additional_duty"] == 1200.0


# --- issue 16: GET /metrics -----------------------------------------------------------------------


def _delta(session, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return session["metrics_after"].get(key, 0.0) - session["metrics_before"].get(key, 0.0)


def test_metrics_count_every_decision_by_lane_and_source_across_workers(session):
    made = Counter((result["lane"], result["selected_by"]) for result in session["answered"])
    assert made[("red", "alert")] == 2
    for lane in ("red", "yellow", "green"):
        for source in ("model", "value", "critical", "rule", "alert", "random"):
            assert (
                _delta(session, "customs_risk_decisions_total", lane=lane, selected_by=source) == made[(lane, source)]
            )
    # each worker's file holds its own count; /metrics is their sum (a new connection per request
    # spreads a dozen requests over both workers: 1,204 and 906 decisions when measured)
    assert sum(session["per_worker"].values()) == len(session["answered"])
    assert sum(1 for count in session["per_worker"].values() if count) == 2


def test_metrics_count_every_outcome_by_result(session):
    posted = Counter(outcome["result"] for outcome in session["posted"])
    for result in ("clean", "fraud", "critical"):
        assert _delta(session, "customs_risk_outcomes_total", result=result) == posted[result]
    assert sum(posted.values()) > 100


def test_the_drift_gauge_is_the_psi_of_the_last_n_scores_against_the_validation_window(session):
    window = session["params"]["serving"]["drift_window"]
    reference = pd.read_parquet(session["root"] / "data/model/validation_scores.parquet")["risk_score"].to_numpy()
    last = np.array([result["risk_score"] for result in session["answered"]][-window:])
    gauge = session["metrics_after"][("customs_risk_score_psi", ())]
    assert gauge == pytest.approx(reporting.psi(reference, last))
    assert session["metrics_after"][("customs_risk_score_psi_declarations", ())] == min(
        window, len(session["answered"])
    )
    assert gauge >= 0


def test_the_lane_share_gauges_are_the_last_n_decisions_beside_the_packaged_settings(session):
    """A center alerts when a lane takes more than its capacity: thresholds fixed at packaging
    let the shares move with the traffic (README, Backtest)."""
    serving = session["params"]["serving"]
    last = [result["lane"] for result in session["answered"]][-serving["drift_window"] :]
    red = serving["red_risk_share"] + serving["red_value_share"] + serving["red_critical_share"]
    settings = {"red": red, "yellow": serving["yellow_share"], "green": 1 - red - serving["yellow_share"]}
    assert {"red", "yellow", "green"} <= set(last)
    for lane, setting in settings.items():
        labels = (("lane", lane),)
        assert session["metrics_after"][("customs_risk_lane_share", labels)] == pytest.approx(
            last.count(lane) / len(last)
        )
        assert session["metrics_after"][("customs_risk_lane_share_setting", labels)] == pytest.approx(setting)
