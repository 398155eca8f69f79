"""Targeting performance of a period's decisions and the outcomes reported for them (CONTRACT
section 4, kpis.json): per lane and per selection source, the hit rate of random picks against
the rest, and drift against the champion's validation window. The report (serving.report) and
the live gauges of GET /metrics (serving.live_metrics) compute them with these functions.

Drift is the population stability index (PSI) of the period against the champion's validation
window: the reference's 10 quantile bins (fewer where values repeat: a 0/1 feature has two), a
bin of its own for missing values (an unseen category), and a floor of 1e-4 for the share of an
empty bin so the logarithm stays finite. PSI >= 0.25 is flagged."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from models import lanes as lane_policy
from models.lanes import SOURCES  # a decision's `selected_by`, as kpis.json lists them
from serving.settings import CHECKOUT_VALIDATION_SCORES

LANES = lane_policy.LANES[::-1]  # as kpis.json lists them: most scrutiny first
HITS = ("fraud", "critical")  # outcome results that count as a hit
PSI_BINS = 10
PSI_FLOOR = 1e-4
PSI_FLAG = 0.25


@dataclass
class Reference:
    """The champion the period is compared with: its lane settings and its validation window."""

    name: str
    version: str | None
    lanes: object | None = None  # models.lanes.LanePolicy
    state: object | None = None  # features.history.FeatureState
    scores: np.ndarray | None = None  # validation window risk scores
    features: pd.DataFrame | None = None  # validation window features, as models read them
    # who put the version into service and when (approved_by, approved_at, approval_note), as
    # packaged with it; empty for a bento packaged before approvals were recorded
    approval: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def is_hit(outcome: pd.Series) -> pd.Series:
    return outcome.isin(HITS)


def _rate(hits: int, outcomes: int) -> float | None:
    return hits / outcomes if outcomes else None


def _group(rows: pd.DataFrame) -> dict:
    reported = rows["outcome"].notna()
    outcomes = int(reported.sum())
    return {
        "decisions": len(rows),
        "outcomes": outcomes,
        "hit_rate": _rate(int(is_hit(rows["outcome"]).sum()), outcomes),
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
    if "additional_duty" not in rows:
        return None
    reported = pd.to_numeric(rows["additional_duty"], errors="coerce").dropna()
    return float(reported.sum()) if len(reported) else None


def random_vs_targeted(rows: pd.DataFrame) -> float | None:
    """Hit rate of every decision not selected at random over that of the random picks; null
    without random outcomes (or when they found nothing, as a ratio to zero is no number)."""
    random = rows["selected_by"] == "random"
    targeted, picks = _group(rows[~random]), _group(rows[random])
    if not picks["hit_rate"] or targeted["hit_rate"] is None:
        return None
    return targeted["hit_rate"] / picks["hit_rate"]


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


def kpis(rows: pd.DataFrame, since: dt.date, until: dt.date, reference: Reference, drifted: dict) -> dict:
    return {
        "period": {"since": since.isoformat(), "until": until.isoformat()},
        "model": {"name": reference.name, "version": reference.version, **reference.approval},
        "decisions": len(rows),
        "lanes": lane_figures(rows, reference.lanes),
        "selected_by": {source: _group(rows[rows["selected_by"] == source]) for source in SOURCES},
        "random_vs_targeted_hit_ratio": random_vs_targeted(rows),
        "drift": drifted,
    }


def validation_scores(checkout: Path | None) -> tuple[np.ndarray | None, str | None]:
    """The risk scores of the champion's validation window as the train stage left them in the
    checkout, or None and why not: the one reference of the report's and the service's drift."""
    if checkout is None:
        return None, "not run in a checkout: no validation window to compare with, risk score drift not computed"
    path = Path(checkout) / CHECKOUT_VALIDATION_SCORES
    if not path.exists():
        return None, f"{path} is missing (run `make run`): risk score drift not computed"
    return pd.read_parquet(path, columns=["risk_score"])["risk_score"].to_numpy(dtype="float64"), None
