"""Stage evaluate: targeting metrics and plots on the validation window, for DVC and MLflow."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from models.metrics import targeting_metrics, top_share  # noqa: E402
from models.registry import configure_tracking  # noqa: E402
from pipelines.common import load_params, read_json, write_json  # noqa: E402

SCORES = Path("data/model/validation_scores.parquet")
RUN = Path("data/model/run.json")
METRICS = Path("metrics/targeting.json")
CURVE = Path("plots/targeting_curve.csv")
CURVE_PNG = Path("plots/targeting_curve.png")


def targeting_curve(scores: pd.DataFrame) -> pd.DataFrame:
    """Precision, recall and duty recovered when inspecting the top 0.5%..30% by risk score."""
    fraud = scores["fraud"].to_numpy(dtype=float)
    duty = scores["duty_exposure"].to_numpy(dtype=float) * fraud
    rows = []
    for rate in np.arange(0.5, 30.5, 0.5):
        top = top_share(scores["risk_score"].to_numpy(), rate)
        rows.append(
            {
                "inspection_rate": float(rate),
                "precision": float(fraud[top].mean()),
                "recall": float(fraud[top].sum() / max(fraud.sum(), 1)),
                "duty_recovered": float(duty[top].sum() / max(duty.sum(), 1e-12)),
            }
        )
    return pd.DataFrame(rows)


def plot_curve(curve: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for column in ("precision", "recall", "duty_recovered"):
        ax.plot(curve["inspection_rate"], curve[column], label=column.replace("_", " "))
    ax.set_xlabel("share of declarations inspected (%)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Validation window: what inspecting the top n% finds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    params = load_params()
    scores = pd.read_parquet(SCORES)
    metrics = targeting_metrics(
        scores["fraud"].to_numpy(),
        scores["critical_fraud"].to_numpy(),
        scores["duty_exposure"].to_numpy(),
        scores["risk_score"].to_numpy(),
        scores["critical_score"].to_numpy(),
        params["evaluate"]["inspection_rates"],
    )
    write_json(METRICS, metrics)
    curve = targeting_curve(scores)
    CURVE.parent.mkdir(parents=True, exist_ok=True)
    curve.to_csv(CURVE, index=False)
    plot_curve(curve, CURVE_PNG)
    configure_tracking()
    with mlflow.start_run(run_id=read_json(RUN)["run_id"]):
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(CURVE_PNG), "plots")
        mlflow.log_artifact(str(CURVE), "plots")
    shown = ", ".join(f"{k}={metrics[k]:.3f}" for k in ("precision_at_5", "precision_at_10", "roc_auc"))
    print(f"evaluate: {shown} -> {METRICS}")


if __name__ == "__main__":
    main()
