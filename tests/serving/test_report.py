"""`customs-risk report` (issue 16): kpis.json against figures computed here from the same
declarations and labels, drift, bad input, and the page's structure."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import shutil
import sqlite3
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.matrix import FEATURE_NAMES, model_input, serving_inputs, training_features
from features.schema import DECLARATION_FIELDS
from models.bundle import RiskModel, validated_declarations
from models.lanes import LanePolicy, LaneShares
from models.training import fit_target
from serving import kpis
from serving import report as reporting
from serving.audit import DECISIONS, OUTCOMES, AuditStore, AuditStoreUnavailable
from serving.cli import app
from serving.live_metrics import LiveMetrics
from tests.models.test_training_and_bundle import TRAIN_PARAMS
from tests.postgres import fresh_database

SINCE, UNTIL = dt.date(2021, 2, 1), dt.date(2021, 4, 30)


@pytest.fixture(scope="module")
def trained(history):
    """The train stage at toy size; random picks raised to 20% so the yardstick has outcomes."""
    matrix, state = training_features(history, 10)
    dates = history["declaration_date"]
    days = np.sort(dates.unique())
    is_valid = (dates >= days[int(len(days) * 0.8)]).to_numpy()
    fitted = {
        label: fit_target(matrix, history[label].to_numpy(), ~is_valid, is_valid, TRAIN_PARAMS)
        for label in ("fraud", "critical_fraud")
    }
    risk, critical = fitted["fraud"].validation_scores, fitted["critical_fraud"].validation_scores
    shares = LaneShares(0.03, 0.01, 0.01, 0.10, 0.03, 0.2)
    lanes = LanePolicy.fit(
        shares, "report-test", risk, critical, risk * matrix.loc[is_valid, "duty_exposure"].to_numpy()
    )
    model = RiskModel(
        fitted["fraud"].booster,
        fitted["critical_fraud"].booster,
        fitted["fraud"].calibration,
        fitted["critical_fraud"].calibration,
        lanes,
        state,
    )
    reference = kpis.Reference(
        name="customs-risk",
        version="7",
        lanes=lanes,
        state=state,
        scores=fitted["fraud"].validation_scores,
        features=model_input(matrix)[is_valid].reset_index(drop=True),
    )
    return model, reference


def _as_sent(frame: pd.DataFrame) -> list[dict]:
    """Declarations as a client sends them: the date a string, no NaN."""
    sent = frame[DECLARATION_FIELDS].copy()
    sent["declaration_date"] = sent["declaration_date"].dt.strftime("%Y-%m-%d")
    return [
        {k: v for k, v in row.items() if not (isinstance(v, float) and np.isnan(v))}
        for row in sent.to_dict(orient="records")
    ]


def _score(store: AuditStore, model: RiskModel, declarations: list[dict], sources: dict | None = None) -> pd.DataFrame:
    """What the service does for /score: validate, score, store the decisions as sent."""
    results = model.score(validated_declarations(pd.DataFrame(declarations)), max_reasons=1)
    for position, source in (sources or {}).items():  # as analysts' rules and alerts route
        results.loc[position, ["lane", "selected_by"]] = ["red", source]
    store.record_decisions(declarations, results, model_version="7")
    return results


def _truth(row) -> str:
    return "critical" if row.critical_fraud else "fraud" if row.fraud else "clean"


@pytest.fixture(scope="module")
def scored_store(trained, history, tmp_path_factory):
    """A store as the service leaves it: the last 1,500 declarations scored (some of them
    first with another decision), true outcomes posted for the inspected ones but a few."""
    model, _ = trained
    store = AuditStore(tmp_path_factory.mktemp("report") / "audit.db")
    sample = history.iloc[-1500:].reset_index(drop=True)
    sent = _as_sent(sample)
    stale = model.score(validated_declarations(pd.DataFrame(sent[:200])), max_reasons=0)
    stale["lane"], stale["selected_by"] = "yellow", "value"  # overtaken by the later decision below
    store.record_decisions(sent[:200], stale, model_version="6")
    sources = {3: "rule", 5: "alert", 8: "value", 13: "critical"}
    results = _score(store, model, sent, sources)
    truth = sample.assign(lane=results["lane"], selected_by=results["selected_by"], outcome=None)
    inspected = truth["lane"].ne("green") & (truth.index % 10 != 0)  # one in ten never reported
    truth.loc[inspected, "outcome"] = [_truth(row) for row in truth[inspected].itertuples()]
    # the duty assessed, reported with a third of the frauds; a clean one found none (0)
    truth["additional_duty"] = pd.Series(
        [
            (round(row.item_price * 0.08, 2) if row.outcome != "clean" else 0.0)
            if inspected[i] and i % 3 == 0
            else None
            for i, row in enumerate(truth.itertuples())
        ],
        dtype=object,
    )
    store.record_outcomes(
        [
            {
                "declaration_id": row.declaration_id,
                "inspected_on": "2021-05-01",
                "result": row.outcome,
                **({} if row.additional_duty is None else {"additional_duty": row.additional_duty}),
            }
            for row in truth[inspected].itertuples()
        ]
    )
    in_period = truth["declaration_date"].between(pd.Timestamp(SINCE), pd.Timestamp(UNTIL))
    assert 0 < in_period.sum() < len(truth)  # the period leaves some out
    store.close()  # not left to garbage collection: test_a_locked_store_is_explained takes the lock
    return store.path, truth[in_period].reset_index(drop=True)


def _rate(rows: pd.DataFrame):
    reported = rows["outcome"].dropna()
    return reported.isin(["fraud", "critical"]).mean() if len(reported) else None


def _run(tmp_path, store, reference, output="out", since=SINCE, until=UNTIL):
    return reporting.make_report(store, since, until, tmp_path / output, reference)


def test_every_count_share_and_hit_rate_matches_the_declarations(trained, scored_store, tmp_path):
    _, reference = trained
    path, truth = scored_store
    _run(tmp_path, path, reference)
    kpis = json.loads((tmp_path / "out" / "kpis.json").read_text())
    assert set(kpis) == {
        "period",
        "model",
        "decisions",
        "lanes",
        "selected_by",
        "random_vs_targeted_hit_ratio",
        "drift",
    }
    assert kpis["period"] == {"since": SINCE.isoformat(), "until": UNTIL.isoformat()}
    assert kpis["model"] == {"name": "customs-risk", "version": "7"}
    assert kpis["decisions"] == len(truth)  # the stale decisions do not count twice
    settings = {"red": 0.05, "yellow": 0.10, "green": 0.85}
    for lane in ("red", "yellow", "green"):
        rows = truth[truth["lane"] == lane]
        got = kpis["lanes"][lane]
        assert set(got) == {
            "decisions",
            "share",
            "share_setting",
            "outcomes",
            "hit_rate",
            "critical_found",
            "additional_duty",
        }
        assert got["decisions"] == len(rows)
        assert got["share"] == pytest.approx(len(rows) / len(truth))
        assert got["share_setting"] == pytest.approx(settings[lane])
        assert got["outcomes"] == rows["outcome"].notna().sum()
        assert got["hit_rate"] == pytest.approx(_rate(rows))
        assert got["critical_found"] == (rows["outcome"] == "critical").sum()
        duties = [duty for duty in rows["additional_duty"] if duty is not None]
        assert got["additional_duty"] == (pytest.approx(sum(duties)) if duties else None)
    assert kpis["lanes"]["red"]["additional_duty"] > 0
    assert kpis["lanes"]["green"]["hit_rate"] is None  # no green declaration was inspected
    assert kpis["lanes"]["green"]["additional_duty"] is None  # nothing reported: unknown, not 0
    assert set(kpis["selected_by"]) == {"model", "value", "critical", "rule", "alert", "random"}
    for source, got in kpis["selected_by"].items():
        rows = truth[truth["selected_by"] == source]
        assert got == {
            "decisions": len(rows),
            "outcomes": rows["outcome"].notna().sum(),
            "hit_rate": pytest.approx(_rate(rows)) if _rate(rows) is not None else None,
        }
    # the 200 stale "value" decisions were overtaken: only the policy's own value picks count
    assert kpis["selected_by"]["value"]["decisions"] == (truth["selected_by"] == "value").sum() < 200
    random = truth["selected_by"] == "random"
    assert kpis["selected_by"]["random"]["outcomes"] > 0
    assert kpis["random_vs_targeted_hit_ratio"] == pytest.approx(_rate(truth[~random]) / _rate(truth[random]))
    assert set(kpis["drift"]) == {"risk_score", "features", "flagged"}
    assert set(kpis["drift"]["features"]) == set(FEATURE_NAMES)


def test_a_postgresql_store_reports_the_same_rows(scored_store, postgres_server):
    """The decisions and outcomes copied as they are into a PostgreSQL store: the report reads the
    same period there (its JSON and date expressions are the dialect's own), so the same figures."""
    path, _ = scored_store
    sqlite = AuditStore(path)
    with fresh_database(postgres_server) as uri:
        server = AuditStore(uri)
        with server.engine.begin() as connection:
            for table in (DECISIONS, OUTCOMES):
                rows = sqlite.read(table.name).astype(object)
                connection.execute(table.insert(), rows.where(rows.notna(), None).to_dict("records"))
        sqlite.close()
        on_server = reporting.read_period(uri, SINCE, UNTIL)
        server.close()
    pd.testing.assert_frame_equal(on_server, reporting.read_period(path, SINCE, UNTIL), check_dtype=False)


def test_the_latest_decision_counts(trained, tmp_path, history):
    model, reference = trained
    store = AuditStore(tmp_path / "audit.db")
    sent = _as_sent(history.iloc[-20:])
    first = _score(store, model, sent)
    first_lanes = dict(zip(first["declaration_id"], first["lane"]))
    _score(store, model, sent[:5], {0: "alert", 1: "alert", 2: "alert", 3: "alert", 4: "alert"})
    kpis = _run(tmp_path, store.path, reference, since=dt.date(2020, 1, 1), until=dt.date(2022, 1, 1))
    assert kpis["decisions"] == 20
    assert kpis["selected_by"]["alert"]["decisions"] == 5
    later = {d["declaration_id"] for d in sent[:5]}
    red = sum(1 for i, lane in first_lanes.items() if i in later or lane == "red")
    assert kpis["lanes"]["red"]["decisions"] == red


def test_random_vs_targeted_is_null_without_random_outcomes(trained, tmp_path, history):
    model, reference = trained
    store = AuditStore(tmp_path / "audit.db")
    sample = history.iloc[-300:].reset_index(drop=True)
    results = _score(store, model, _as_sent(sample))
    store.record_outcomes(
        [
            {"declaration_id": d, "inspected_on": "2021-05-01", "result": "fraud"}
            for d, source, lane in zip(results["declaration_id"], results["selected_by"], results["lane"])
            if source != "random" and lane != "green"
        ]
    )
    kpis = _run(tmp_path, store.path, reference, since=dt.date(2020, 1, 1), until=dt.date(2022, 1, 1))
    assert kpis["selected_by"]["random"]["hit_rate"] is None
    assert kpis["random_vs_targeted_hit_ratio"] is None
    assert kpis["lanes"]["red"]["hit_rate"] == 1.0


# --- drift -------------------------------------------------------------------------------------


def test_psi_is_zero_for_the_same_sample_and_large_for_a_shift():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=5000)
    assert kpis.psi(reference, reference) == pytest.approx(0.0)
    assert kpis.psi(reference, rng.normal(size=5000)) < 0.05
    assert kpis.psi(reference, rng.normal(loc=2, size=5000)) > 1.0
    # repeated values: bins collapse, and a value the reference never had still counts
    flags = np.array([0.0] * 700 + [1.0] * 300)
    assert kpis.psi(flags, flags) == pytest.approx(0.0)
    assert kpis.psi(flags, np.array([0.0] * 300 + [1.0] * 700)) > 0.25
    # missing values (unseen categories) are a bin of their own; empty bins are floored
    with_missing = np.append(flags, [np.nan] * 500)
    assert np.isfinite(kpis.psi(flags, with_missing)) and kpis.psi(flags, with_missing) > 0.25
    assert kpis.psi(reference, []) is None


def _halves(history):
    shuffled = history.sample(frac=1, random_state=11).reset_index(drop=True)
    return shuffled.iloc[:2000], shuffled.iloc[2000:]


@pytest.fixture(scope="module")
def drift_reference(trained, history):
    """A reference window of half the declarations, in the serving encoding."""
    model, reference = trained
    half, _ = _halves(history)
    typed = validated_declarations(pd.DataFrame(_as_sent(half)))
    features = pd.DataFrame(serving_inputs(typed, model.state).matrix, columns=FEATURE_NAMES)
    return dataclasses.replace(reference, scores=model.assess(typed).risk, features=features)


@pytest.mark.parametrize("price_factor", [1, 10])
def test_prices_times_ten_flag_the_price_features(trained, drift_reference, history, tmp_path, price_factor):
    """The report flags the inputs that moved and no other. Whether the risk score moves with
    them is the model's business (this one follows goods, route and tax more than prices: PSI
    0.01 at prices x10 here); the report's figure for it is the PSI of the stored scores,
    flagged only past the flag."""
    model, _ = trained
    _, other = _halves(history)
    store = AuditStore(tmp_path / "audit.db")
    scored = _score(store, model, _as_sent(other.assign(item_price=other["item_price"] * price_factor)))
    drift = _run(tmp_path, store.path, drift_reference, since=dt.date(2020, 1, 1), until=dt.date(2022, 1, 1))["drift"]
    flagged = drift["flagged"]
    score_psi = kpis.psi(drift_reference.scores, scored["risk_score"].to_numpy())
    assert drift["risk_score"]["psi"] == pytest.approx(score_psi)
    assert ("risk_score" in flagged) == (score_psi >= kpis.PSI_FLAG)
    if price_factor == 1:
        assert flagged == []
        assert max(v["psi"] for v in drift["features"].values()) < 0.1
    else:
        assert {"item_price", "log_value_per_kg"} <= set(flagged)
        assert any(name.startswith("value_vs_") for name in flagged)
        assert not {"tax_rate", "net_mass_kg", "importer_fraud_rate"} & set(flagged)


# --- the command -------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, trained):
    """`customs-risk report` with the test's champion in place of the packaged one."""
    import serving.cli

    _, reference = trained
    monkeypatch.setattr(serving.cli, "use_stores", lambda settings: {})
    monkeypatch.setattr(reporting, "load_reference", lambda settings: reference)
    monkeypatch.setattr(reporting, "LOCK_TIMEOUT_SECONDS", 0.2)

    def run(store: Path, output: Path, since: str = "2021-02-01", until: str = "2021-04-30"):
        return CliRunner().invoke(
            app,
            ["report", "--since", since, "--until", until, "--output", str(output), "--db", str(store)],
            env={"COLUMNS": "300"},
        )

    return run


def _fingerprint(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def test_the_command_writes_the_report_and_leaves_the_store_alone(cli, scored_store, tmp_path):
    path, _ = scored_store
    before = _fingerprint(path)
    result = cli(path, tmp_path / "weekly")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    assert (tmp_path / "weekly" / "kpis.json").is_file() and (tmp_path / "weekly" / "index.html").is_file()
    assert _fingerprint(path) == before


def test_an_empty_period_says_which_dates_the_store_holds(cli, scored_store, tmp_path):
    path, _ = scored_store
    before = _fingerprint(path)
    result = cli(path, tmp_path / "out", since="2019-01-01", until="2019-01-31")
    assert result.exit_code == 2
    assert "no decision" in result.output and "dated" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    assert _fingerprint(path) == before


def test_a_period_without_outcomes_is_written_with_null_hit_rates(cli, trained, history, tmp_path):
    model, _ = trained
    store = AuditStore(tmp_path / "audit.db")
    _score(store, model, _as_sent(history.iloc[-100:]))
    store.close()
    before = _fingerprint(store.path)
    result = cli(store.path, tmp_path / "out", since="2020-01-01", until="2022-01-01")
    assert result.exit_code == 2
    assert "no outcome" in result.output
    kpis = json.loads((tmp_path / "out" / "kpis.json").read_text())
    assert kpis["decisions"] == 100
    assert all(lane["hit_rate"] is None for lane in kpis["lanes"].values())
    assert kpis["random_vs_targeted_hit_ratio"] is None
    assert _fingerprint(store.path) == before


def test_a_missing_store_is_named_and_not_created(cli, tmp_path):
    result = cli(tmp_path / "none.db", tmp_path / "out")
    assert result.exit_code == 2
    assert "no audit store" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "none.db").exists()


def test_a_store_of_an_older_version_is_explained(cli, tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE decisions (id INTEGER PRIMARY KEY, declaration_id TEXT, scored_at TEXT, record TEXT,"
            " risk_score REAL, lane TEXT)"
        )
        db.execute("CREATE TABLE outcomes (declaration_id TEXT, inspected_on TEXT, result TEXT, received_at TEXT)")
    before = _fingerprint(path)
    result = cli(path, tmp_path / "out")
    assert result.exit_code == 2
    assert "older" in result.output and "model_version" in result.output and "selected_by" in result.output
    assert _fingerprint(path) == before


def test_a_file_that_is_no_store_is_explained(cli, tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("not a database\n" * 100)
    result = cli(path, tmp_path / "out")
    assert result.exit_code == 2
    assert "not a readable audit store" in result.output or "older" in result.output
    assert "Traceback" not in result.output


def test_a_locked_store_is_explained(cli, scored_store, tmp_path):
    path, _ = scored_store
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("PRAGMA locking_mode=EXCLUSIVE")
        locker.execute("BEGIN EXCLUSIVE")
        result = cli(path, tmp_path / "out")
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert result.exit_code == 2
    assert "locked" in result.output and "Traceback" not in result.output


# --- the page ----------------------------------------------------------------------------------


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(tag, name, value) for name, value in attrs]

    def handle_data(self, data):
        self.text.append(data)


def test_the_page_is_self_contained_with_its_tables_and_plots(trained, scored_store, tmp_path):
    _, reference = trained
    path, _ = scored_store
    _run(tmp_path, path, reference)
    page = _Page()
    page.feed((tmp_path / "out" / "index.html").read_text())
    assert page.tags.count("table") >= 5  # lanes, sources, weekly hit rates x2, coverage, drift
    images = [value for tag, name, value in page.attributes if tag == "img" and name == "src"]
    assert len(images) >= 5
    assert all(value.startswith("data:image/png;base64,") for value in images)
    assert "script" not in page.tags and "link" not in page.tags
    urls = [value for _, name, value in page.attributes if name in ("src", "href") and value]
    assert not [url for url in urls if not url.startswith("data:")]
    text = " ".join(page.text)
    for heading in (
        "Decisions per day",
        "Lanes",
        "Selection sources",
        "Hit rate per lane",
        "Outcome coverage",
        "Drift",
    ):
        assert heading in text
    assert "too few" in text  # the small sources have fewer than 30 outcomes


def test_the_page_shows_each_weeks_lane_shares_against_the_settings_and_the_thresholds_mode(trained, history, tmp_path):
    """Two weeks' decisions, the first made with fixed thresholds, the second following traffic:
    each week's shares beside the settings, and how its thresholds were set, as stored."""
    model, reference = trained
    store = AuditStore(tmp_path / "audit.db")
    sample = _as_sent(history.iloc[-6:])
    for i, sent in enumerate(sample):
        sent["declaration_date"] = "2021-03-01" if i < 4 else "2021-03-08"  # a Monday each
    results = model.score(validated_declarations(pd.DataFrame(sample)), max_reasons=0)
    results["lane"] = ["red", "green", "green", "yellow", "red", "green"]
    store.record_decisions(sample[:4], results.iloc[:4], model_version="7", lane_thresholds="fixed")
    store.record_decisions(sample[4:], results.iloc[4:], model_version="7", lane_thresholds="follow")
    _run(tmp_path, store.path, reference, since=dt.date(2021, 3, 1), until=dt.date(2021, 3, 14))
    page = _Page()
    page.feed((tmp_path / "out" / "index.html").read_text())
    text = " ".join(" ".join(page.text).split())
    assert "Lane shares by week" in text
    assert "2021-03-01 4 25.0% 25.0% 50.0% fixed" in text  # red, yellow, green
    assert "2021-03-08 2 50.0% 0.0% 50.0% follow" in text
    settings = kpis.share_settings(reference.lanes)
    assert f"setting {settings['red']:.1%} {settings['yellow']:.1%} {settings['green']:.1%}" in text


def test_the_page_and_kpis_name_who_approved_the_model_and_when(trained, scored_store, tmp_path):
    _, reference = trained
    path, _ = scored_store
    approval = {"approved_by": "A. Reviewer", "approved_at": "2026-12-06T10:00:00Z", "approval_note": "better on March"}
    _run(tmp_path, path, dataclasses.replace(reference, approval=approval))
    assert (
        "version 7, approved by A. Reviewer at 2026-12-06T10:00:00Z." in (tmp_path / "out" / "index.html").read_text()
    )
    model = json.loads((tmp_path / "out" / "kpis.json").read_text())["model"]
    assert model == {"name": "customs-risk", "version": "7", **approval}


BROWSER = next(
    (
        path
        for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
        if (path := shutil.which(name))
    ),
    None,
)


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium or Chrome installed; the page is parsed above")
def test_the_page_renders_in_a_headless_browser_without_console_messages(trained, scored_store, tmp_path):
    """What a head of targeting opens: the page as a browser builds it, with JavaScript (the page
    has none: an error or warning logged to the console would be one)."""
    _, reference = trained
    path, _ = scored_store
    _run(tmp_path, path, reference)
    page = (tmp_path / "out" / "index.html").resolve().as_uri()
    rendered = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert ":CONSOLE" not in rendered.stderr, rendered.stderr[-2000:]
    dom = _Page()
    dom.feed(rendered.stdout)
    assert dom.tags.count("table") >= 5 and dom.tags.count("img") >= 5
    assert "Targeting report, 2021-02-01 to 2021-04-30" in " ".join(dom.text)


# --- GET /metrics: the same figures live --------------------------------------------------------


def _sample(name: str, **labels) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_live_metrics_count_decisions_and_outcomes_and_gauge_the_last_n_scores(trained, history, tmp_path):
    """The service's instruments, fed as its /score and /outcomes feed them: the gauges are the
    report's PSI of the store's last `window` risk scores and those decisions' lane shares,
    whoever wrote them, beside the shares the packaged policy sets."""
    model, reference = trained
    store = AuditStore(tmp_path / "audit.db")
    live = LiveMetrics(store, reference.scores, window=150, lanes=model.lanes)
    assert math.isnan(_sample("customs_risk_score_psi")) and _sample("customs_risk_score_psi_declarations") == 0
    assert _sample("customs_risk_lane_share_setting", lane="red") == pytest.approx(model.lanes.red_share)
    assert _sample("customs_risk_lane_share_setting", lane="yellow") == pytest.approx(model.lanes.yellow_share)
    assert _sample("customs_risk_lane_share_setting", lane="green") == pytest.approx(
        1 - model.lanes.red_share - model.lanes.yellow_share
    )
    before = {
        (lane, source): _sample("customs_risk_decisions_total", lane=lane, selected_by=source)
        for lane in kpis.LANES
        for source in kpis.SOURCES
    }
    sent = _as_sent(history.iloc[-400:])
    first = _score(store, model, sent[:300], {0: "alert", 1: "rule"})
    live.decided(first)
    other_worker = AuditStore(store.path)  # another process's decisions count in the window too
    second = _score(other_worker, model, sent[300:])
    live.decided(second)
    both = pd.concat([first, second])
    for (lane, source), was in before.items():
        made = int(((both["lane"] == lane) & (both["selected_by"] == source)).sum())
        assert _sample("customs_risk_decisions_total", lane=lane, selected_by=source) - was == made
    assert _sample("customs_risk_decisions_total", lane="red", selected_by="alert") - before["red", "alert"] == 1
    last = both["risk_score"].to_numpy()[-150:]
    assert _sample("customs_risk_score_psi") == pytest.approx(kpis.psi(reference.scores, last))
    assert _sample("customs_risk_score_psi_declarations") == 150
    last_lanes = both["lane"].to_numpy()[-150:]
    assert {"red", "green"} <= set(last_lanes)  # the shares below are not all zero or one
    for lane in kpis.LANES:
        assert _sample("customs_risk_lane_share", lane=lane) == pytest.approx((last_lanes == lane).mean())

    frauds = _sample("customs_risk_outcomes_total", result="fraud")
    live.reported(
        [
            {"declaration_id": "A", "result": "fraud"},
            {"declaration_id": "B", "result": "fraud"},
            {"declaration_id": "C", "result": "clean"},
        ]
    )
    assert _sample("customs_risk_outcomes_total", result="fraud") - frauds == 2

    # traffic that turned to what was found fraud drives the gauge over the flag; a service
    # without a reference says NaN
    live.decided(_score(store, model, _as_sent(history[history["fraud"].eq(1)].iloc[:150])))
    assert _sample("customs_risk_score_psi") >= kpis.PSI_FLAG
    LiveMetrics(store, None, window=150)
    assert math.isnan(_sample("customs_risk_score_psi")) and _sample("customs_risk_score_psi_declarations") == 150


def test_the_drift_gauge_is_computed_when_scraped_not_after_each_score(trained, history, tmp_path):
    """/score no longer pays for the PSI (about 2 ms); the page the service appends to BentoML's
    /metrics holds the store's figure at scrape time, once, and keeps the last figure when the
    store cannot be read."""
    from prometheus_client.parser import text_string_to_metric_families

    model, reference = trained
    store = AuditStore(tmp_path / "audit.db")
    live = LiveMetrics(store, reference.scores, window=150)
    reads = []
    read = store.recent_decisions
    store.recent_decisions = lambda count: reads.append(count) or read(count)
    live.decided(_score(store, model, _as_sent(history.iloc[-200:])))
    assert reads == []
    page = live.exposition()
    assert reads == [150]
    shown = {
        (sample.name, sample.labels.get("lane")): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }
    scores, lanes = zip(*read(150))
    assert shown == {
        ("customs_risk_score_psi", None): pytest.approx(kpis.psi(reference.scores, list(scores))),
        ("customs_risk_score_psi_declarations", None): 150,
        # no packaged policy given: no setting to show
        **{("customs_risk_lane_share", lane): pytest.approx(lanes.count(lane) / 150) for lane in kpis.LANES},
    }
    assert live.exposition(page) == ""  # a page that has the gauges already (no multiprocess dir) gets no copy

    def unreadable(count):
        raise AuditStoreUnavailable("the audit store cannot be read: database is locked")

    store.recent_decisions = unreadable
    assert live.exposition() == page
