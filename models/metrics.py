"""Targeting metrics: what a center inspecting the top n% by score would have found."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from models.lanes import RANDOM_PICK


def top_share(scores: np.ndarray, rate_percent: float) -> np.ndarray:
    """Indices of the top `rate_percent`% by score; ties broken by position, so results repeat."""
    count = int(np.ceil(len(scores) * rate_percent / 100))
    return np.argsort(-np.asarray(scores), kind="stable")[:count]


def _share(amounts: np.ndarray, caught: np.ndarray) -> float:
    """Share of the total caught; summed in the same order both times so it never exceeds 1."""
    total = amounts.sum()
    return float(min(1.0, np.where(caught, amounts, 0.0).sum() / total)) if total > 0 else 0.0


def targeting_metrics(
    fraud: np.ndarray,
    critical: np.ndarray,
    duty: np.ndarray,
    risk_score: np.ndarray,
    critical_score: np.ndarray,
    rates: list[float],
) -> dict[str, float]:
    fraud = np.asarray(fraud, dtype=float)
    critical = np.asarray(critical, dtype=float)
    duty_on_fraud = np.asarray(duty, dtype=float) * fraud
    metrics: dict[str, float] = {}
    for rate in rates:
        top = top_share(risk_score, rate)
        caught = np.zeros(len(fraud), dtype=bool)
        caught[top] = True
        tag = f"{rate:g}"
        metrics[f"precision_at_{tag}"] = float(fraud[top].mean()) if len(top) else 0.0
        metrics[f"recall_at_{tag}"] = _share(fraud, caught)
        metrics[f"duty_recovered_at_{tag}"] = _share(duty_on_fraud, caught)
        metrics[f"critical_recall_at_{tag}"] = _share(critical, caught)
    if 0 < fraud.sum() < len(fraud):
        metrics["roc_auc"] = float(roc_auc_score(fraud, risk_score))
        metrics["pr_auc"] = float(average_precision_score(fraud, risk_score))
    metrics["brier"] = float(brier_score_loss(fraud, risk_score))
    if 0 < critical.sum() < len(critical):
        metrics["critical_roc_auc"] = float(roc_auc_score(critical, critical_score))
        metrics["critical_pr_auc"] = float(average_precision_score(critical, critical_score))
    metrics["critical_brier"] = float(brier_score_loss(critical, critical_score))
    metrics["validation_rows"] = float(len(fraud))
    return metrics


LANE_FIGURES = ("share", "hit_rate", "fraud_share", "duty_share", "critical_share")


def lane_metrics(lane: np.ndarray, fraud: np.ndarray, critical: np.ndarray, duty: np.ndarray) -> dict[str, float]:
    """The lane policy as packaged, per lane: its share of declarations, its hit rate (share of
    fraud), and the shares of all frauds, of the duty at risk on frauds and of critical frauds
    it holds. Keys `lane_<lane>_<figure>`, and `lane_red_yellow_critical_share`."""
    lane = np.asarray(lane, dtype=object)
    fraud = np.asarray(fraud, dtype=float)
    critical = np.asarray(critical, dtype=float)
    duty_on_fraud = np.asarray(duty, dtype=float) * fraud
    metrics: dict[str, float] = {}
    for name in ("red", "yellow", "green"):
        held = lane == name
        metrics[f"lane_{name}_share"] = float(held.mean()) if len(lane) else 0.0
        metrics[f"lane_{name}_hit_rate"] = float(fraud[held].mean()) if held.any() else 0.0
        metrics[f"lane_{name}_fraud_share"] = _share(fraud, held)
        metrics[f"lane_{name}_duty_share"] = _share(duty_on_fraud, held)
        metrics[f"lane_{name}_critical_share"] = _share(critical, held)
    metrics["lane_red_yellow_critical_share"] = _share(critical, lane != "green")
    return metrics


def window_figures(scored: pd.DataFrame, rates: list[float]) -> dict[str, float]:
    """The evaluate stage's figures for a model's scores and lanes on a window (columns `fraud`,
    `critical_fraud`, `duty_exposure`, `risk_score`, `critical_score`, `lane`), over its labelled
    rows: an uninspected declaration says nothing about what inspecting it would find. Register
    judges a challenger and the champion with it, so both are measured as evaluate measures."""
    labelled = scored[scored["fraud"].notna()]
    fraud, critical, duty = (labelled[c].to_numpy(dtype=float) for c in ("fraud", "critical_fraud", "duty_exposure"))
    figures = targeting_metrics(
        fraud, critical, duty, labelled["risk_score"].to_numpy(), labelled["critical_score"].to_numpy(), rates
    )
    figures.update(lane_metrics(labelled["lane"].to_numpy(), fraud, critical, duty))
    figures.update(validation_rows=len(scored), validation_rows_labelled=len(labelled))
    return figures


def unlabelled_window_figures(
    scored: pd.DataFrame, selected_by: pd.Series, rates: list[float], exploration_share: float
) -> dict[str, float | None]:
    """Where some of a window's declarations were never inspected, the labelled figures say how
    the model ranks what was chosen for inspection, not what inspecting its top n% would find.
    Two figures that do, beside them: the random picks' hit rate (`selected_by` random: the one
    sample drawn blind to risk; null without any) and, per rate, a Horvitz-Thompson estimate of
    precision at the top n% by risk over every row (`ipw_precision_at_<n>`). An inspected row
    stands for 1/p rows, p its chance of inspection: 1 where anything but the exploration share
    selected it (or the source does not say), the exploration share for a random pick; the
    estimate is the top's weighted frauds over the top's row count. Empty where every row is
    labelled: the labelled figures are then the whole story."""
    fraud = scored["fraud"].to_numpy(dtype=float, na_value=np.nan)
    labelled = ~np.isnan(fraud)
    if labelled.all():
        return {}
    random_pick = labelled & (selected_by == RANDOM_PICK).to_numpy(dtype=bool, na_value=False)
    propensity = np.where(random_pick, exploration_share, 1.0)
    weighted_fraud = np.where(labelled, fraud, 0.0) / propensity
    figures: dict[str, float | None] = {
        "random_picks": float(random_pick.sum()),
        "random_pick_hit_rate": float(fraud[random_pick].mean()) if random_pick.any() else None,
    }
    for rate in rates:
        top = top_share(scored["risk_score"].to_numpy(), rate)
        figures[f"ipw_precision_at_{rate:g}"] = float(weighted_fraud[top].sum() / len(top)) if len(top) else 0.0
    return figures
