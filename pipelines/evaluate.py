"""Stage evaluate: targeting metrics, plots and the model card, for DVC and the MLflow run."""

from __future__ import annotations

import mlflow
import pandas as pd

from features.matrix import FEATURE_NAMES
from features.record import SELECTED_BY
from models.bundle import RiskModel, reason_quality
from models.lanes import FOLLOW, SCORES_ARTIFACTS, threshold_mode
from models.metrics import unlabelled_window_figures, window_figures
from models.registry import configure_tracking
from models.reports import (
    lane_frontier,
    model_card,
    plot_bars,
    plot_lane_frontier,
    plot_reliability,
    plot_roc_pr,
    plot_targeting_curve,
    plot_yellow_frontier,
    targeting_curve,
    yellow_frontier,
)
from pipelines.common import load_params, read_json, staged_output, write_json
from pipelines.paths import BUNDLE, MATRIX, MODEL_CARD, PLOTS, RUN, TUNED, VALIDATED
from pipelines.paths import TARGETING_METRICS as METRICS
from pipelines.paths import VALIDATION_SCORES as SCORES

CURVE = PLOTS / "targeting_curve.csv"
FRONTIER = PLOTS / "lane_frontier.csv"
YELLOW_FRONTIER = PLOTS / "yellow_frontier.csv"


def main() -> None:
    params = load_params()
    rates = params["evaluate"]["inspection_rates"]
    every = pd.read_parquet(SCORES)
    # figures need a label: they are over the inspected validation rows, and say how many those are
    scores = every[every["fraud"].notna()].reset_index(drop=True)
    fraud, critical = scores["fraud"].to_numpy(), scores["critical_fraud"].to_numpy()
    risk, critical_risk = scores["risk_score"].to_numpy(), scores["critical_score"].to_numpy()
    # as register measures the champion on a challenger's window
    metrics: dict[str, float | None] = dict(window_figures(every, rates))
    valid_start = pd.Timestamp(params["windows"]["valid_start"])
    # what selected each declaration when it was decided (history's provenance, not the lanes this
    # model would give it, which the scores' own `selected_by` holds)
    decided = pd.read_parquet(
        VALIDATED, columns=["declaration_id", SELECTED_BY], filters=[("declaration_date", ">=", valid_start)]
    ).set_index("declaration_id")[SELECTED_BY]
    metrics.update(
        unlabelled_window_figures(
            every, every["declaration_id"].map(decided), rates, float(params["serving"]["exploration_share"])
        )
    )

    curve = targeting_curve(fraud, scores["duty_exposure"].to_numpy(), risk)
    PLOTS.mkdir(exist_ok=True)
    with staged_output(CURVE) as path:
        curve.to_csv(path, index=False)
    model = RiskModel.load(BUNDLE)
    frontier = lane_frontier(model.lanes, scores)
    with staged_output(FRONTIER) as path:
        frontier.to_csv(path, index=False)
    yellow = yellow_frontier(model.lanes, scores)
    with staged_output(YELLOW_FRONTIER) as path:
        yellow.to_csv(path, index=False)
    valid_rows = (
        pd.read_parquet(
            MATRIX, columns=["declaration_id", *FEATURE_NAMES], filters=[("declaration_date", ">=", valid_start)]
        )
        .set_index("declaration_id")
        .loc[scores["declaration_id"], FEATURE_NAMES]
    )
    metrics.update(reason_quality(model, valid_rows, scores))  # the red and yellow rows' reasons (docs/api.md)
    write_json(METRICS, metrics)
    # a fixed sample is enough for a mean per feature; the served reasons' contributions
    sample = valid_rows.sample(n=min(2000, len(valid_rows)), random_state=0)
    contributions = model.contributions(sample)[:, :-1]
    images = [
        plot_targeting_curve(curve, PLOTS / "targeting_curve.png"),
        plot_lane_frontier(frontier, model.lanes, PLOTS / "lane_frontier.png"),
        plot_yellow_frontier(yellow, model.lanes, PLOTS / "yellow_frontier.png"),
        *plot_roc_pr(fraud, risk, PLOTS / "roc.png", PLOTS / "precision_recall.png"),
        plot_reliability(
            {"fraud": (fraud, risk), "critical fraud": (critical, critical_risk)}, PLOTS / "reliability.png"
        ),
        plot_bars(
            pd.Series(model.fraud_booster.feature_importance("gain"), index=FEATURE_NAMES),
            "Fraud model: feature importance (total gain)",
            "gain",
            PLOTS / "importance_gain.png",
        ),
        plot_bars(
            pd.Series(abs(contributions).mean(axis=0), index=FEATURE_NAMES),
            "Fraud model: mean |contribution| on the validation window",
            "log-odds",
            PLOTS / "contributions.png",
        ),
    ]

    configure_tracking()
    run_id = read_json(RUN)["run_id"]
    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    identity = {"run_id": run_id, "data_version": tags.get("data_version"), "git_commit": tags.get("git_commit")}
    duty_estimate = "risk x expected recovered duty, learned" if model.duty_booster else "risk x declared duty"
    serving = params["serving"]
    card = model_card(
        identity,
        params["windows"],
        metrics,
        model.lanes.describe(),
        read_json(TUNED),
        rates,
        duty_estimate,
        int(serving["follow_window"]) if threshold_mode(serving["lane_thresholds"]) == FOLLOW else None,
    )
    with staged_output(MODEL_CARD) as path:
        path.write_text(card)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({name: value for name, value in metrics.items() if value is not None})
        for path in [*images, CURVE, FRONTIER, YELLOW_FRONTIER, MODEL_CARD]:
            mlflow.log_artifact(str(path), "reports")
        mlflow.log_artifact(str(SCORES), SCORES_ARTIFACTS)  # a packaged window that follows traffic starts there
    shown = ", ".join(
        f"{k}={metrics[k]:.3f}"
        for k in ("precision_at_5", "roc_auc", "lane_red_hit_rate", "lane_red_duty_share", "lane_red_critical_share")
    )
    print(
        f"evaluate: {shown} -> {METRICS}, plots in {PLOTS}/, model card {MODEL_CARD} "
        f"(lane thresholds packaged: {serving['lane_thresholds']})"
    )


if __name__ == "__main__":
    main()
