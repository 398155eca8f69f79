"""`customs-risk report`: targeting performance of a period read back from the audit store
(docs/report.md, CONTRACT section 4).

The store is opened read-only (`mode=ro`): the report never writes to it, and reading it beside
a running service neither blocks the service nor changes the file. A period selects decisions
by their declaration's `declaration_date` (both days included); where a declaration was scored
more than once its latest decision (the highest row id) counts.

Drift is the population stability index (PSI) of the period against the champion's validation
window: the reference's 10 quantile bins (fewer where values repeat: a 0/1 feature has two), a
bin of its own for missing values (an unseen category), and a floor of 1e-4 for the share of an
empty bin so the logarithm stays finite. PSI >= 0.25 is flagged."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import html
import io
import json
import logging
import math
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from serving.audit import read_only, table_columns

logger = logging.getLogger("customs_risk.report")

LANES = ("red", "yellow", "green")
SOURCES = ("model", "value", "critical", "rule", "alert", "random")
HITS = ("fraud", "critical")  # outcome results that count as a hit
PSI_BINS = 10
PSI_FLOOR = 1e-4
PSI_FLAG = 0.25
FEW_OUTCOMES = 30  # below this many outcomes a hit rate is shown as too few to mean anything
LOCK_TIMEOUT_SECONDS = 5.0
MODEL_NAME = "customs-risk"

# what the report reads of each table; a store without one of them is from an older release
REQUIRED_COLUMNS = {
    "decisions": ("id", "declaration_id", "scored_at", "model_version", "record", "risk_score", "lane", "selected_by"),
    "outcomes": ("declaration_id", "inspected_on", "result", "received_at"),
}

PERIOD_DECISIONS = """
SELECT d.id, d.declaration_id, d.scored_at, d.model_version, d.record, d.risk_score, d.lane, d.selected_by,
       substr(json_extract(d.record, '$.declaration_date'), 1, 10) AS declaration_date,
       o.result AS outcome, o.inspected_on, o.received_at, {duty} AS additional_duty
FROM decisions d
JOIN (SELECT declaration_id, MAX(id) AS id FROM decisions GROUP BY declaration_id) latest ON latest.id = d.id
LEFT JOIN outcomes o ON o.declaration_id = d.declaration_id
WHERE substr(json_extract(d.record, '$.declaration_date'), 1, 10) BETWEEN ? AND ?
ORDER BY d.id
"""
DATE_RANGE = (
    "SELECT MIN(substr(json_extract(record, '$.declaration_date'), 1, 10)), "
    "MAX(substr(json_extract(record, '$.declaration_date'), 1, 10)), COUNT(*) FROM decisions"
)


class ReportError(RuntimeError):
    """The report cannot be made: a message for a person, no traceback."""


@dataclass
class Reference:
    """The champion the period is compared with: its lane settings and its validation window."""

    name: str
    version: str | None
    lanes: object | None = None  # models.lanes.LanePolicy
    state: object | None = None  # features.history.FeatureState
    scores: np.ndarray | None = None  # validation window risk scores
    features: pd.DataFrame | None = None  # validation window features, as models read them
    notes: list[str] = field(default_factory=list)


# --- reading the store -------------------------------------------------------------------------


def _connect(path: Path, timeout: float) -> sqlite3.Connection:
    path = Path(path)
    try:
        db = read_only(path, timeout=timeout)
    except FileNotFoundError:
        raise ReportError(f"no audit store at {path}: set RISK_AUDIT_DB or pass --db") from None
    except sqlite3.Error as failed:
        raise ReportError(f"the audit store {path} cannot be opened: {failed}") from None
    return db


def _explain(path: Path, failed: sqlite3.Error) -> ReportError:
    text = str(failed)
    if "locked" in text or "busy" in text:
        return ReportError(
            f"the audit store {path} is locked by another process ({text}); nothing was read, try again later"
        )
    if "not a database" in text or "malformed" in text:
        return ReportError(f"{path} is not a readable audit store: {text}")
    return ReportError(f"the audit store {path} cannot be read: {text}")


def read_period(path: Path, since: dt.date, until: dt.date, timeout: float = LOCK_TIMEOUT_SECONDS) -> pd.DataFrame:
    """The latest decision of every declaration dated in the period, with its outcome (if any)."""
    if until < since:
        raise ReportError(f"--until {until} is before --since {since}")
    db = _connect(path, timeout)
    try:
        for table, needed in REQUIRED_COLUMNS.items():
            columns = table_columns(db, table)
            missing = [column for column in needed if column not in columns]
            if missing:
                what = f"has no {table} table" if not columns else f"its {table} lack {', '.join(missing)}"
                raise ReportError(
                    f"the audit store {path} is from an older or another version: {what}. Open it once with "
                    "the current service to bring it up to date (the report only reads it)"
                )
        # a store of the layout before version 2, not opened for writing since: no duty was reported
        duty = "o.additional_duty" if "additional_duty" in table_columns(db, "outcomes") else "NULL"
        rows = pd.read_sql_query(PERIOD_DECISIONS.format(duty=duty), db, params=(since.isoformat(), until.isoformat()))
        if rows.empty:
            first, last, count = db.execute(DATE_RANGE).fetchone()
            held = f"its {count:,} decisions are dated {first} to {last}" if count else "it holds no decisions"
            raise ReportError(f"no decision in the audit store {path} is dated {since} to {until}; {held}")
    except sqlite3.Error as failed:
        raise _explain(path, failed) from None
    except pd.errors.DatabaseError as failed:  # pandas wraps sqlite's errors
        raise _explain(path, sqlite3.Error(str(failed))) from None
    finally:
        db.close()
    return rows


# --- figures -----------------------------------------------------------------------------------


def _is_hit(outcome: pd.Series) -> pd.Series:
    return outcome.isin(HITS)


def _rate(hits: int, outcomes: int) -> float | None:
    return hits / outcomes if outcomes else None


def _group(rows: pd.DataFrame) -> dict:
    reported = rows["outcome"].notna()
    outcomes = int(reported.sum())
    return {
        "decisions": len(rows),
        "outcomes": outcomes,
        "hit_rate": _rate(int(_is_hit(rows["outcome"]).sum()), outcomes),
    }


def share_settings(lanes) -> dict[str, float | None]:
    """The lane shares the champion's params set: red and yellow as given, green the rest."""
    if lanes is None:
        return dict.fromkeys(LANES)
    red, yellow = float(lanes.red_share), float(lanes.yellow_share)
    return {"red": red, "yellow": yellow, "green": 1.0 - red - yellow}


def lane_figures(rows: pd.DataFrame, lanes=None) -> dict:
    total = len(rows)
    settings = share_settings(lanes)
    figures = {}
    for lane in LANES:
        part = rows[rows["lane"] == lane]
        group = _group(part)
        figures[lane] = {
            "decisions": group["decisions"],
            "share": group["decisions"] / total if total else None,
            "share_setting": settings[lane],
            "outcomes": group["outcomes"],
            "hit_rate": group["hit_rate"],
            "critical_found": int((part["outcome"] == "critical").sum()),
            "additional_duty": additional_duty(part),
        }
    return figures


def additional_duty(rows: pd.DataFrame) -> float | None:
    """The duty the rows' inspections assessed beyond the declared duty, as reported with their
    outcomes; null when no outcome reported one (not zero: an unreported duty is unknown)."""
    reported = pd.to_numeric(rows["additional_duty"], errors="coerce").dropna() if "additional_duty" in rows else ()
    return float(reported.sum()) if len(reported) else None


def random_vs_targeted(rows: pd.DataFrame) -> float | None:
    """Hit rate of every decision not selected at random over that of the random picks; null
    without random outcomes (or when they found nothing, as a ratio to zero is no number)."""
    random = rows["selected_by"] == "random"
    targeted, picks = _group(rows[~random]), _group(rows[random])
    if not picks["hit_rate"] or targeted["hit_rate"] is None:
        return None
    return targeted["hit_rate"] / picks["hit_rate"]


# --- drift -------------------------------------------------------------------------------------


def psi(reference, actual, bins: int = PSI_BINS, floor: float = PSI_FLOOR) -> float | None:
    """Population stability index of `actual` against `reference`: bins at the reference's
    deciles (fewer where values repeat), missing values in a bin of their own, shares floored."""
    reference = np.asarray(reference, dtype="float64")
    actual = np.asarray(actual, dtype="float64")
    if not len(reference) or not len(actual):
        return None
    known = reference[~np.isnan(reference)]
    edges = np.unique(np.quantile(known, np.arange(1, bins) / bins)) if len(known) else np.array([])

    def shares(values: np.ndarray) -> np.ndarray:
        missing = np.isnan(values)
        counts = np.bincount(np.searchsorted(edges, values[~missing], side="left"), minlength=len(edges) + 1)
        counts = np.append(counts, missing.sum())
        return np.maximum(counts / len(values), floor)

    expected, found = shares(reference), shares(actual)
    return float(np.sum((found - expected) * np.log(found / expected)))


def period_features(rows: pd.DataFrame, state) -> tuple[pd.DataFrame, int]:
    """The period's declarations as the model read them (`serving_inputs` with the champion's
    state, so encoded as the validation matrix is); also how many records could not be typed."""
    from features.matrix import FEATURE_NAMES, serving_inputs
    from features.schema import RECORD, check_declarations

    records = pd.DataFrame([json.loads(record) for record in rows["record"]])
    typed = check_declarations(records, RECORD).valid.reset_index(drop=True)
    if typed.empty:
        return pd.DataFrame(columns=FEATURE_NAMES, dtype="float64"), len(records)
    matrix = serving_inputs(typed, state).matrix
    return pd.DataFrame(matrix, columns=FEATURE_NAMES), len(records) - len(typed)


def drift(reference_scores, scores, reference_features: pd.DataFrame | None, features: pd.DataFrame | None) -> dict:
    risk = psi(reference_scores, scores) if reference_scores is not None else None
    by_feature = {}
    if reference_features is not None and features is not None:
        for name in reference_features.columns:
            if name in features.columns:
                by_feature[name] = {"psi": psi(reference_features[name], features[name])}
    flagged = [name for name, value in by_feature.items() if value["psi"] is not None and value["psi"] >= PSI_FLAG]
    if risk is not None and risk >= PSI_FLAG:
        flagged.insert(0, "risk_score")
    return {"risk_score": {"psi": risk}, "features": by_feature, "flagged": flagged}


# --- the report --------------------------------------------------------------------------------


def kpis(rows: pd.DataFrame, since: dt.date, until: dt.date, reference: Reference, drifted: dict) -> dict:
    return {
        "period": {"since": since.isoformat(), "until": until.isoformat()},
        "model": {"name": reference.name, "version": reference.version},
        "decisions": len(rows),
        "lanes": lane_figures(rows, reference.lanes),
        "selected_by": {source: _group(rows[rows["selected_by"] == source]) for source in SOURCES},
        "random_vs_targeted_hit_ratio": random_vs_targeted(rows),
        "drift": drifted,
    }


def make_report(
    store: Path,
    since: dt.date,
    until: dt.date,
    output: Path,
    reference: Reference,
    timeout: float | None = None,
) -> dict:
    """Write OUTPUT/kpis.json and OUTPUT/index.html; returns the KPIs. Raises ReportError when
    nothing could be reported (see `outcomes_reported` for a period without outcomes)."""
    rows = read_period(store, since, until, LOCK_TIMEOUT_SECONDS if timeout is None else timeout)
    notes = list(reference.notes)
    features = None
    if reference.state is not None and reference.features is not None:
        features, untyped = period_features(rows, reference.state)
        if untyped:
            notes.append(
                f"{untyped:,} stored declaration(s) could not be read back as records: left out of feature drift"
            )
    drifted = drift(reference.scores, rows["risk_score"].to_numpy(dtype="float64"), reference.features, features)
    figures = kpis(rows, since, until, reference, drifted)
    output.mkdir(parents=True, exist_ok=True)
    (output / "kpis.json").write_text(json.dumps(figures, indent=1) + "\n")
    (output / "index.html").write_text(render_html(figures, rows, reference, features, notes))
    return figures


def outcomes_reported(figures: dict) -> int:
    """How many of the period's decisions have an outcome (0: every hit rate is null)."""
    return sum(lane["outcomes"] for lane in figures["lanes"].values())


VALIDATION_SCORES = Path("data/model/validation_scores.parquet")


def validation_scores(checkout: Path | None) -> tuple[np.ndarray | None, str | None]:
    """The risk scores of the champion's validation window as the train stage left them in the
    checkout, or None and why not: the one reference of the report's and the service's drift."""
    if checkout is None:
        return None, "not run in a checkout: no validation window to compare with, risk score drift not computed"
    path = Path(checkout) / VALIDATION_SCORES
    if not path.exists():
        return None, f"{path} is missing (run `make run`): risk score drift not computed"
    return pd.read_parquet(path, columns=["risk_score"])["risk_score"].to_numpy(dtype="float64"), None


def load_reference(settings) -> Reference:
    """The packaged champion (as `customs-risk score` finds it) and the checkout's validation
    window: data/model/validation_scores.parquet and the window's rows of the feature matrix."""
    import yaml

    from features.matrix import FEATURE_NAMES
    from serving.loading import ChampionUnavailable, load_packaged, model_tag, packaged_champion

    try:
        bento_model = packaged_champion(model_tag(settings))
        model = load_packaged(bento_model)
    except ChampionUnavailable as problem:
        raise ReportError(str(problem)) from None
    metadata = dict(bento_model.info.metadata)
    reference = Reference(
        name=getattr(getattr(bento_model, "tag", None), "name", MODEL_NAME),
        version=str(metadata["version"]) if metadata.get("version") is not None else None,
        lanes=model.lanes,
        state=model.state,
    )
    root = settings.checkout
    if root is None:
        reference.notes.append("not run in a checkout: no validation window to compare with, drift not computed")
        return reference
    reference.scores, missing = validation_scores(root)
    if missing:
        reference.notes.append(missing)
    matrix = root / "data/features/matrix.parquet"
    if matrix.exists():
        windows = yaml.safe_load((root / "params.yaml").read_text())["windows"]
        window = [
            ("declaration_date", ">=", pd.Timestamp(windows["valid_start"])),
            ("declaration_date", "<=", pd.Timestamp(windows["valid_end"])),
        ]
        reference.features = pd.read_parquet(matrix, columns=FEATURE_NAMES, filters=window).astype("float64")
    else:
        reference.notes.append(f"{matrix} is missing (run `make run`): feature drift not computed")
    return reference


# --- the same figures for live dashboards (GET /metrics) --------------------------------------


PSI_HELP = (
    "Population stability index of the risk score of the last serving.drift_window decisions against the "
    "champion's validation window (NaN: no reference or no decision)"
)
PSI_DECLARATIONS_HELP = "How many decisions customs_risk_score_psi and customs_risk_lane_share were computed on"
LANE_SHARE_HELP = "Share of the last serving.drift_window decisions in each lane"
LANE_SETTING_HELP = (
    "Share of declarations the packaged lane policy sets for each lane (red: by score; the random "
    "exploration picks come on top)"
)


@functools.cache
def _instruments() -> dict:
    """The service's Prometheus counters, made once per process, on first use: a BentoML worker
    has PROMETHEUS_MULTIPROC_DIR set by then, so each worker writes its own file and BentoML's
    /metrics adds them up across workers (BentoML documents prometheus_client for custom metrics;
    it must not be imported before the worker starts). The gauges are not among them: they
    are computed when collected (`LiveMetrics.exposition`, `_latest_live`)."""
    import prometheus_client as prometheus

    return {
        "decisions": prometheus.Counter(
            "customs_risk_decisions",
            "Decisions answered by /score, by lane and selection source",
            ["lane", "selected_by"],
        ),
        "outcomes": prometheus.Counter("customs_risk_outcomes", "Outcomes stored by /outcomes, by result", ["result"]),
    }


@dataclass(frozen=True)
class RecentDecisions:
    """What the live gauges show of the store's last decisions."""

    psi: float | None  # None: no reference or no decision
    count: int
    lane_shares: dict[str, float]  # empty without decisions


class _RecentCollector:
    """customs_risk_score_psi, customs_risk_score_psi_declarations, customs_risk_lane_share and
    customs_risk_lane_share_setting, computed each time they are collected from the LiveMetrics
    that `live()` gives (None: nothing to show)."""

    def __init__(self, live):
        self.live = live

    def describe(self):
        return self._families(None, {})

    def collect(self):
        live = self.live()
        return self._families(live.recent(), live.settings) if live is not None else []

    @staticmethod
    def _families(recent: RecentDecisions | None, settings: dict[str, float | None]):
        from prometheus_client.core import GaugeMetricFamily

        psi_family = GaugeMetricFamily("customs_risk_score_psi", PSI_HELP)
        count_family = GaugeMetricFamily("customs_risk_score_psi_declarations", PSI_DECLARATIONS_HELP)
        share_family = GaugeMetricFamily("customs_risk_lane_share", LANE_SHARE_HELP, labels=["lane"])
        setting_family = GaugeMetricFamily("customs_risk_lane_share_setting", LANE_SETTING_HELP, labels=["lane"])
        if recent is not None:
            psi_family.add_metric([], math.nan if recent.psi is None else recent.psi)
            count_family.add_metric([], recent.count)
            for lane, share in recent.lane_shares.items():
                share_family.add_metric([lane], share)
        for lane, setting in settings.items():
            if setting is not None:
                setting_family.add_metric([lane], setting)
        return [psi_family, count_family, share_family, setting_family]


@functools.cache
def _latest_live() -> dict:
    """Prometheus' default registry shows the gauges of the LiveMetrics made last in the process
    (a process without PROMETHEUS_MULTIPROC_DIR, where the counters are in that registry too)."""
    from prometheus_client import REGISTRY

    latest: dict = {"live": None}
    REGISTRY.register(_RecentCollector(lambda: latest["live"]))
    return latest


class LiveMetrics:
    """Counters of decisions by lane and `selected_by` and of outcomes by result; over the last
    `window` decisions of the audit store (all workers' and all restarts', so every worker
    computes the same value), the risk score's PSI against the validation window (the report's
    `psi`) and each lane's share beside the share the packaged policy (`lanes`) sets: thresholds
    fixed at packaging let the shares move with the traffic, and a center alerts on it. These
    are computed when /metrics is scraped (one indexed query, about 2 ms), not after every
    /score: BentoML's multiprocess /metrics reads only the workers' files, so the service
    appends `exposition()` to the page it renders (serving.service)."""

    def __init__(self, audit, reference_scores: np.ndarray | None, window: int, lanes=None):
        self.audit = audit
        self.reference = reference_scores
        self.window = int(window)
        self.settings = share_settings(lanes)
        self.instruments = _instruments()
        self._last = RecentDecisions(None, 0, {})  # shown when the store cannot be read
        from prometheus_client import CollectorRegistry

        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_RecentCollector(lambda: self))
        _latest_live()["live"] = self

    def decided(self, results: pd.DataFrame) -> None:
        for (lane, source), count in Counter(zip(results["lane"], results["selected_by"])).items():
            self.instruments["decisions"].labels(lane=lane, selected_by=source).inc(count)

    def reported(self, outcomes: list[dict]) -> None:
        for result, count in Counter(o["result"] for o in outcomes).items():
            self.instruments["outcomes"].labels(result=result).inc(count)

    def recent(self) -> RecentDecisions:
        """The PSI and the lane shares of the store's last `window` decisions."""
        try:
            decisions = self.audit.recent_decisions(self.window)
        except sqlite3.Error as failed:  # a scrape never fails for it: the last figures stay
            logger.warning("the drift and lane share gauges were not updated: %s", failed)
            return self._last
        scores = [score for score, _ in decisions]
        lanes = Counter(lane for _, lane in decisions)
        self._last = RecentDecisions(
            psi(self.reference, scores) if self.reference is not None and scores else None,
            len(decisions),
            {lane: lanes[lane] / len(decisions) for lane in LANES} if decisions else {},
        )
        return self._last

    def exposition(self, page: str = "") -> str:
        """The gauges (drift, lane shares) in Prometheus' text format, to append to a /metrics `page` that does
        not hold them already (BentoML's, rendered from the workers' multiprocess files)."""
        if "# TYPE customs_risk_score_psi gauge" in page:
            return ""
        from prometheus_client import generate_latest

        return generate_latest(self._registry).decode()


# --- the page ----------------------------------------------------------------------------------


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _figure(width: float = 8, height: float = 3):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _number(value, kind: str = "rate") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "rate":
        return f"{value:.1%}"
    if kind == "psi":
        return f"{value:.3f}"
    return f"{value:,}"


def _table(header: list[str], body: list[list[str]], caption: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in body)
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"


def _duty_cell(value) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _hit_cell(rate, outcomes: int) -> str:
    text = _number(rate)
    if outcomes == 0:
        return f'{text} <span class="few">(no outcomes)</span>'
    if outcomes < FEW_OUTCOMES:
        text += f' <span class="few">(only {outcomes} outcome{"s" if outcomes != 1 else ""}: too few)</span>'
    return text


def _weekly(rows: pd.DataFrame, column: str, values: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hit rates and outcome counts by week (starting Monday) of declaration date."""
    reported = rows[rows["outcome"].notna()].copy()
    reported["week"] = pd.to_datetime(reported["declaration_date"]).dt.to_period("W-SUN").dt.start_time
    reported["hit"] = _is_hit(reported["outcome"])
    grouped = reported[reported[column].isin(values)].groupby(["week", column])["hit"]
    return grouped.mean().unstack(column), grouped.size().unstack(column).fillna(0).astype(int)


def _weekly_section(rows: pd.DataFrame, column: str, values: tuple[str, ...], title: str) -> str:
    rates, counts = _weekly(rows, column, values)
    if rates.empty:
        return f"<h3>{title}</h3><p>No outcome is reported for this period yet.</p>"
    figure, axes = _figure()
    for value in rates.columns:
        style = {"color": "black", "linestyle": "--", "linewidth": 2} if value == "random" else {}
        axes.plot(rates.index, rates[value], marker="o", label=value, **style)
    axes.set_ylabel("hit rate")
    axes.set_ylim(0, 1)
    axes.legend()
    axes.set_title(title)
    figure.autofmt_xdate()
    body = []
    for week in rates.index:
        cells = [week.strftime("%Y-%m-%d")]
        for value in rates.columns:
            n = int(counts.loc[week, value])
            rate = None if n == 0 else float(rates.loc[week, value])
            cells.append(_hit_cell(rate, n) if n else "–")
        body.append(cells)
    return f"<h3>{title}</h3>{_png(figure)}" + _table(["week of", *map(str, rates.columns)], body)


CSS = """
body{font-family:sans-serif;max-width:60em;margin:1em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #bbb;padding:.2em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
.few{color:#a60}.flag{color:#b00;font-weight:bold}caption{text-align:left;font-style:italic}
"""


def render_html(figures: dict, rows: pd.DataFrame, reference: Reference, features, notes: list[str]) -> str:
    period = figures["period"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Targeting report {period['since']} to {period['until']}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Targeting report, {period['since']} to {period['until']}</h1>",
        f"<p>{figures['decisions']:,} declarations dated in the period (the latest decision of each), "
        f"model {html.escape(str(figures['model']['name']))} version {html.escape(str(figures['model']['version']))}. "
        f"A hit is an inspection outcome of fraud or critical; cells with fewer than {FEW_OUTCOMES} outcomes are "
        "marked: too few to mean anything.</p>",
    ]
    parts += [f'<p class="few">{html.escape(note)}</p>' for note in notes]

    # decisions per day
    per_day = rows.groupby(["declaration_date", "lane"]).size().unstack("lane").reindex(columns=list(LANES)).fillna(0)
    figure, axes = _figure()
    bottom = np.zeros(len(per_day))
    colours = {"red": "#c33", "yellow": "#db3", "green": "#4a4"}
    for lane in LANES:
        axes.bar(pd.to_datetime(per_day.index), per_day[lane], bottom=bottom, color=colours[lane], label=lane)
        bottom += per_day[lane].to_numpy()
    axes.set_ylabel("decisions")
    axes.legend()
    axes.set_title("Decisions per day, by lane")
    figure.autofmt_xdate()
    parts.append(f"<h2>Decisions per day</h2>{_png(figure)}")

    # lanes
    ratio = figures["random_vs_targeted_hit_ratio"]
    lanes = figures["lanes"]
    body = [
        [
            lane,
            _number(v["decisions"], "count"),
            _number(v["share"]),
            _number(v["share_setting"]),
            _number(v["outcomes"], "count"),
            _hit_cell(v["hit_rate"], v["outcomes"]),
            _number(v["critical_found"], "count"),
            _duty_cell(v["additional_duty"]),
        ]
        for lane, v in lanes.items()
    ]
    parts.append(
        "<h2>Lanes</h2>"
        + _table(
            [
                "lane",
                "decisions",
                "share",
                "share setting",
                "outcomes",
                "hit rate",
                "critical frauds found",
                "additional duty",
            ],
            body,
            "share setting: the shares the champion's params set (random picks and analysts' rules add to red); "
            "additional duty: the sum of what the outcomes reported, – where none reported it",
        )
    )
    figure, axes = _figure(6, 2.5)
    x = np.arange(len(LANES))
    axes.bar(x - 0.2, [lanes[lane]["share"] or 0 for lane in LANES], 0.4, label="share")
    axes.bar(x + 0.2, [lanes[lane]["share_setting"] or 0 for lane in LANES], 0.4, label="setting")
    axes.set_xticks(x, LANES)
    axes.legend()
    axes.set_title("Lane shares against the settings")
    parts.append(_png(figure))

    # sources
    sources = figures["selected_by"]
    body = [
        [
            source,
            _number(v["decisions"], "count"),
            _number(v["outcomes"], "count"),
            _hit_cell(v["hit_rate"], v["outcomes"]),
        ]
        for source, v in sources.items()
    ]
    parts.append("<h2>Selection sources</h2>" + _table(["selected by", "decisions", "outcomes", "hit rate"], body))
    random_outcomes = sources["random"]["outcomes"]
    yardstick = (
        "no random pick has an outcome yet, so there is no yardstick"
        if ratio is None
        else (f"declarations not picked at random find fraud {ratio:.2f} times as often as the random picks")
    )
    if ratio is not None and random_outcomes < FEW_OUTCOMES:
        yardstick += f' <span class="few">(only {random_outcomes} random outcomes: too few to mean anything)</span>'
    parts.append(f"<p><b>Targeted against random:</b> {yardstick}.</p>")
    parts.append("<h2>Hit rate by week</h2><p>Random picks (dashed) are the unbiased yardstick.</p>")
    parts.append(_weekly_section(rows, "lane", LANES, "Hit rate per lane"))
    parts.append(_weekly_section(rows, "selected_by", SOURCES, "Hit rate per selection source"))

    # coverage
    body = []
    for lane in ("red", "yellow"):
        part = rows[rows["lane"] == lane]
        reported = part[part["outcome"].notna()]
        days = (
            pd.to_datetime(reported["received_at"], utc=True, format="ISO8601")
            - pd.to_datetime(reported["scored_at"], utc=True, format="ISO8601")
        ).dt.total_seconds() / 86400
        body.append(
            [
                lane,
                _number(len(part), "count"),
                _number(len(reported), "count"),
                _number(len(reported) / len(part) if len(part) else None),
                f"{days.median():.1f}" if len(days) else "–",
            ]
        )
    parts.append(
        "<h2>Outcome coverage</h2>"
        + _table(["lane", "decisions", "with an outcome", "coverage", "median days from decision to outcome"], body)
    )

    # drift
    drifted = figures["drift"]
    flagged = set(drifted["flagged"])
    items = [("risk_score", drifted["risk_score"]["psi"])] + [(n, v["psi"]) for n, v in drifted["features"].items()]
    ordered = sorted(items, key=lambda item: -1 if item[1] is None else item[1], reverse=True)
    body = [
        [html.escape(name), _number(value, "psi"), '<span class="flag">drifted</span>' if name in flagged else ""]
        for name, value in ordered
    ]
    parts.append(
        f"<h2>Drift against the validation window</h2><p>Population stability index; {PSI_FLAG} or more is "
        "flagged.</p>" + _table(["", "PSI", ""], body)
    )
    shown = [(name, value) for name, value in ordered if value is not None][:10]
    if shown:
        figure, axes = _figure(8, 0.3 * len(shown) + 1)
        axes.barh([name for name, _ in shown][::-1], [value for _, value in shown][::-1], color="#557")
        axes.axvline(PSI_FLAG, color="#b00", linestyle="--")
        axes.set_xlabel("PSI")
        axes.set_title("Most drifted")
        parts.append(_png(figure))
    parts.append("</body></html>")
    return "\n".join(parts)
