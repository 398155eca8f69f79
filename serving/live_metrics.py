"""The live gauges and counters of GET /metrics: decisions and outcomes counted as the service
answers, and over the audit store's last decisions the risk score's drift and the lane shares,
computed as the report computes them (serving.kpis)."""

from __future__ import annotations

import functools
import logging
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from serving.audit import AuditStoreUnavailable
from serving.kpis import LANES, psi, share_settings

logger = logging.getLogger("customs_risk.live_metrics")

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
        except AuditStoreUnavailable as failed:  # a scrape never fails for it: the last figures stay
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
