"""What reviewers look at before approving a champion: plots and a model card."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from models.lanes import LanePolicy, LaneShares
from models.metrics import LANE_FIGURES, lane_metrics, top_share


def targeting_curve(fraud: np.ndarray, duty: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Precision, recall and duty recovered when inspecting the top 0.5%..30% by risk score."""
    fraud = np.asarray(fraud, dtype=float)
    duty_on_fraud = np.asarray(duty, dtype=float) * fraud
    rows = []
    for rate in np.arange(0.5, 30.5, 0.5):
        top = top_share(scores, rate)
        rows.append(
            {
                "inspection_rate": float(rate),
                "precision": float(fraud[top].mean()),
                "recall": float(fraud[top].sum() / max(fraud.sum(), 1)),
                "duty_recovered": float(duty_on_fraud[top].sum() / max(duty_on_fraud.sum(), 1e-12)),
            }
        )
    return pd.DataFrame(rows)


def _refitted_lanes(policy: LanePolicy, scores: pd.DataFrame, ids: list[str], **shares: float) -> dict[str, float]:
    """The lane figures of the packaged policy with some shares changed, its thresholds refitted
    on the same (out-of-sample) scores."""
    changed = LaneShares(**{**{name: getattr(policy, name) for name in LaneShares.__dataclass_fields__}, **shares})
    candidate = LanePolicy.fit(
        changed, policy.exploration_key, scores["risk_score"], scores["critical_score"], scores["duty_at_risk"]
    )
    lane, _ = candidate.assign(scores["risk_score"], scores["critical_score"], scores["duty_at_risk"], ids)
    return lane_metrics(lane, scores["fraud"], scores["critical_fraud"], scores["duty_exposure"])


def lane_frontier(policy: LanePolicy, scores: pd.DataFrame, step: float = 0.005) -> pd.DataFrame:
    """The same red capacity split every way on a grid of `step`: for each split of the policy's
    red share between value and critical picks (fraud risk takes the rest), the red lane's hit
    rate and the shares of the duty at risk and of critical frauds it holds. Yellow and
    exploration stay as packaged. `scores` are the validation window's (out-of-sample)."""
    red = policy.red_share
    ids = scores["declaration_id"].astype(str).tolist()
    grid = np.round(np.arange(0, red + step / 2, step), 6)
    rows = []
    for value in grid:
        for critical in grid[grid <= red - value + 1e-9]:
            risk = round(red - value - critical, 6)
            figures = _refitted_lanes(
                policy, scores, ids, red_risk_share=risk, red_value_share=value, red_critical_share=critical
            )
            rows.append(
                {
                    "setting_risk": risk,
                    "setting_value": value,
                    "setting_critical": critical,
                    **{f"red_{name}": figures[f"lane_red_{name}"] for name in LANE_FIGURES},
                    "red_yellow_critical_share": figures["lane_red_yellow_critical_share"],
                }
            )
    return pd.DataFrame(rows)


def yellow_frontier(policy: LanePolicy, scores: pd.DataFrame, step: float = 0.01) -> pd.DataFrame:
    """Yellow's capacity split every way between critical score and fraud risk (red as
    packaged): what yellow finds of the frauds against what red and yellow together hold of the
    critical frauds. A document check is where safety certificates are verified, so a center may
    give yellow to dangerous goods; this is what it costs in frauds found."""
    ids = scores["declaration_id"].astype(str).tolist()
    rows = []
    for critical in np.round(np.arange(0, policy.yellow_share + step / 2, step), 6):
        critical = min(float(critical), policy.yellow_share)
        figures = _refitted_lanes(policy, scores, ids, yellow_critical_share=critical)
        rows.append(
            {
                "setting_yellow_critical": critical,
                **{f"yellow_{name}": figures[f"lane_yellow_{name}"] for name in LANE_FIGURES},
                "red_yellow_critical_share": figures["lane_red_yellow_critical_share"],
            }
        )
    return pd.DataFrame(rows)


def plot_lane_frontier(frontier: pd.DataFrame, policy: LanePolicy, path: Path) -> Path:
    """Duty share against critical share over the splits, coloured by hit rate: the center
    picks its point; the packaged one is ringed."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    points = ax.scatter(
        frontier["red_critical_share"],
        frontier["red_duty_share"],
        c=frontier["red_hit_rate"],
        cmap="viridis",
        s=40 + 400 * frontier["setting_value"],
    )
    fig.colorbar(points, ax=ax, label="red hit rate (share of fraud)")
    chosen = frontier[
        np.isclose(frontier["setting_value"], policy.red_value_share)
        & np.isclose(frontier["setting_critical"], policy.red_critical_share)
    ]
    ax.scatter(
        chosen["red_critical_share"],
        chosen["red_duty_share"],
        s=260,
        facecolors="none",
        edgecolors="red",
        linewidths=2,
        label="packaged split",
    )
    ax.set(
        xlabel="share of critical frauds held by red",
        ylabel="share of duty at risk (frauds) held by red",
        xlim=(-0.02, 1.02),
        ylim=(-0.02, 1.02),
    )
    ax.set_title(f"Splits of the same red capacity ({policy.red_share:.1%} by score; marker size: value share)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_yellow_frontier(frontier: pd.DataFrame, policy: LanePolicy, path: Path) -> Path:
    """Yellow's split: dangerous goods held by red and yellow against frauds found by yellow."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    x = frontier["setting_yellow_critical"]
    ax.plot(x, frontier["red_yellow_critical_share"], marker="o", label="critical frauds held by red + yellow")
    ax.plot(x, frontier["yellow_hit_rate"], marker="o", label="yellow hit rate (share of fraud)")
    ax.plot(x, frontier["yellow_fraud_share"], marker="o", label="frauds held by yellow")
    ax.axvline(policy.yellow_critical_share, color="red", linestyle="--", label="packaged split")
    ax.set(
        xlabel=f"part of yellow ({policy.yellow_share:.0%} of declarations) taken by critical score", ylim=(-0.02, 1.02)
    )
    ax.set_title("Splits of the same yellow capacity (red as packaged)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", fontsize="small")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_targeting_curve(curve: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for column in ("precision", "recall", "duty_recovered"):
        ax.plot(curve["inspection_rate"], curve[column], label=column.replace("_", " "))
    ax.set(xlabel="share of declarations inspected (%)", ylim=(0, 1.02))
    ax.set_title("Validation window: what inspecting the top n% finds")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_roc_pr(fraud: np.ndarray, scores: np.ndarray, roc_path: Path, pr_path: Path) -> list[Path]:
    fpr, tpr, _ = roc_curve(fraud, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, validation window")
    ax.grid(alpha=0.3)
    paths = [_save(fig, roc_path)]
    precision, recall, _ = precision_recall_curve(fraud, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(recall, precision)
    ax.axhline(np.mean(fraud), linestyle="--", color="grey", label="fraud rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, validation window")
    ax.grid(alpha=0.3)
    ax.legend()
    return paths + [_save(fig, pr_path)]


def plot_reliability(labels: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Predicted probability against the observed rate, per score, in quantile bins."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (y, p) in labels.items():
        if 0 < np.sum(y) < len(y):
            observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
            ax.plot(predicted, observed, marker="o", label=name)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.set(xlabel="predicted probability", ylabel="observed rate", title="Reliability, validation window")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_bars(values: pd.Series, title: str, xlabel: str, path: Path, top: int = 20) -> Path:
    shown = values.sort_values(ascending=False).head(top)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(shown) + 1.2))
    ax.barh(shown.index, shown.to_numpy())
    ax.set(title=title, xlabel=xlabel)
    return _save(fig, path)


def _tuning_sample(tuning: dict) -> str:
    if not tuning.get("trials"):
        return "Not searched: params.yaml `train` as written (`tune.trials: 0`)."
    sampled, rows = tuning.get("train_rows_sampled"), tuning.get("train_rows")
    if sampled is None or sampled >= rows:
        return f"Searched in {tuning['trials']} trials on every training row."
    return (
        f"Searched in {tuning['trials']} trials on a sample: the {sampled:,} most recent of the "
        f"{rows:,} training rows (`tune.max_train_rows`); the final boosters train on every row."
    )


def _labelled_rows(metrics: dict, rates: list[float]) -> str:
    """Precision over inspected rows alone describes what was chosen for inspection; where some
    rows were not inspected, the card sets the unbiased figures beside it (docs/loop.md)."""
    labelled, rows = int(metrics["validation_rows_labelled"]), int(metrics["validation_rows"])
    counted = (
        f"Every figure above counts the labelled (inspected) declarations only: {labelled:,} of the window's {rows:,}."
    )
    if labelled == rows:
        return counted
    hit_rate, picks = metrics["random_pick_hit_rate"], int(metrics["random_picks"])
    random = (
        "no random pick was inspected (no random-pick hit rate)"
        if hit_rate is None
        else f"the {picks:,} inspected random picks' hit rate {hit_rate:.3f}"
    )
    estimates = ", ".join(f"top {rate:g}% {metrics[f'ipw_precision_at_{rate:g}']:.3f}" for rate in rates)
    return (
        f"{counted} Beside them: {random}; and an inverse-propensity (Horvitz-Thompson) estimate of precision "
        f"over all {rows:,}, each inspected declaration weighed by 1 / its chance of inspection (a random pick "
        f"stands for the uninspected ones like it): {estimates} (`ipw_precision_at_<n>`)."
    )


def _packaged_thresholds(follow_window: int | None) -> str:
    if follow_window is not None:
        return (
            "Packaged with thresholds that follow traffic (`serving.lane_thresholds: follow`): each declaration's "
            f"are the quantiles, at the shares below, of the scores of the last {follow_window:,} declarations the "
            "center scored with this model, starting from the validation window's. The table is the validation "
            "window decided by the thresholds fitted on it, where a new service starts."
        )
    return (
        "Packaged with thresholds fixed as fitted on the validation window's scores (`serving.lane_thresholds: "
        "fixed`): the table below. On later traffic the shares move with the scores (docs/lanes.md, Backtest)."
    )


def model_card(
    identity: dict,
    windows: dict,
    metrics: dict,
    lanes: dict,
    tuning: dict,
    rates: list[float],
    duty_estimate: str = "risk x declared duty",
    follow_window: int | None = None,
) -> str:
    """Markdown for the registry version: what it was trained on, how it did, where it is weak.
    `tuning` is the tune stage's outcome: the parameters, and the training rows it searched on;
    `follow_window` how many declarations its packaged lane thresholds follow (None: they are
    fixed), since the validation window's lane shares hold on later traffic only if they do."""
    params = tuning["params"]
    rows = "\n".join(
        f"| top {rate:g}% | {metrics[f'precision_at_{rate:g}']:.3f} | {metrics[f'recall_at_{rate:g}']:.3f} "
        f"| {metrics[f'duty_recovered_at_{rate:g}']:.3f} | {metrics[f'critical_recall_at_{rate:g}']:.3f} |"
        for rate in rates
    )
    shown_params = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    critical_params = tuning.get("critical_params", params)
    shown_critical = (
        "the same" if critical_params == params else ", ".join(f"{k}={v}" for k, v in sorted(critical_params.items()))
    )
    lane_rows = "\n".join(
        f"| {lane} | {metrics[f'lane_{lane}_share']:.3f} | {metrics[f'lane_{lane}_hit_rate']:.3f} "
        f"| {metrics[f'lane_{lane}_fraud_share']:.3f} | {metrics[f'lane_{lane}_duty_share']:.3f} "
        f"| {metrics[f'lane_{lane}_critical_share']:.3f} |"
        for lane in ("red", "yellow", "green")
    )
    return f"""# Model card: customs-risk (run {identity["run_id"]})

Classifies import declarations by the probability that inspection finds fraud (`risk_score`) or
critical fraud (`critical_score`), and routes them to inspection lanes.

## Data
- History: {windows["train_start"]} .. {windows["valid_end"]} (KCS format; data version `{identity["data_version"]}`).
- Validation window: {windows["valid_start"]} .. {windows["valid_end"]} ({int(metrics["validation_rows"]):,} declarations).
- Code version: `{identity["git_commit"]}`.

## Validation-window targeting metrics
| inspected | precision | recall | duty recovered | critical recall |
| --- | --- | --- | --- | --- |
{rows}

{_labelled_rows(metrics, rates)}

ROC AUC {metrics.get("roc_auc", float("nan")):.3f}, PR AUC {metrics.get("pr_auc", float("nan")):.3f},
Brier {metrics["brier"]:.4f}; critical ROC AUC {metrics.get("critical_roc_auc", float("nan")):.3f},
critical Brier {metrics["critical_brier"]:.4f}.

## Lanes
{_packaged_thresholds(follow_window)}

Red by score {lanes["red_share"]:.1%}: critical score {lanes["red_critical_share"]:.1%}, then duty at risk
{lanes["red_value_share"]:.1%} ({duty_estimate}), then fraud risk {lanes["red_risk_share"]:.1%};
{lanes["exploration_share"]:.1%} of would-be-green declarations are inspected at random. Yellow
{lanes["yellow_share"]:.1%}: critical score {lanes["yellow_critical_share"]:.1%}, then fraud risk.

| lane | share | hit rate | frauds held | duty at risk held | critical frauds held |
| --- | --- | --- | --- | --- | --- |
{lane_rows}

Red and yellow together hold {metrics["lane_red_yellow_critical_share"]:.1%} of critical frauds.

## Parameters
Fraud model: {shown_params}

Critical model (searched on its own, by PR AUC): {shown_critical}

{_tuning_sample(tuning)}

## Known limits
- The validation window chose the number of trees, the hyperparameters and the calibration, and
  is also where these metrics are measured: they are optimistic. A later window judges the model.
- The served model is refit on all history including the validation window; its own metrics on
  data it has not seen exist only once inspections of new declarations come back (`/outcomes`).
- Features are point-in-time in training; in serving they come from history as of its last day,
  so entity histories go stale until the next retrain.
- Only inspected declarations are labelled: rates learned from them describe what was selected
  for inspection, not all traffic. The random exploration share is what corrects for this over time.
- The KCS data are synthetic (CTGAN); figures on real traffic will differ.
"""
