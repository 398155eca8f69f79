"""Stage train: fraud and critical-fraud boosters, early-stopped on the validation window,
calibrated on it, then refit on all of history; logged to MLflow as one deployable model."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature

from features.history import FeatureState
from features.matrix import FEATURE_NAMES
from features.schema import DECLARATION_FIELDS
from models.bundle import RiskModel, RiskPyfunc
from models.lanes import LanePolicy
from models.registry import configure_tracking, use_experiment
from models.training import fit_target
from pipelines.common import data_version, git_commit, load_params, write_json

MATRIX = Path("data/features/matrix.parquet")
STATE = Path("data/features/state")
HISTORY = Path("data/validated/declarations.parquet")
BUNDLE = Path("data/model/bundle")
VALIDATION_SCORES = Path("data/model/validation_scores.parquet")
RUN = Path("data/model/run.json")


def input_example(windows: dict) -> pd.DataFrame:
    """Real declarations from the validation window, as a client would send them."""
    history = pd.read_parquet(HISTORY, columns=DECLARATION_FIELDS)
    recent = history[history["declaration_date"] >= windows["valid_start"]].head(3).copy()
    recent["declaration_date"] = recent["declaration_date"].dt.strftime("%Y-%m-%d")
    return recent.reset_index(drop=True)


def main() -> None:
    params = load_params()
    windows, train_params, serving = params["windows"], params["train"], params["serving"]
    matrix = pd.read_parquet(MATRIX)
    dates = matrix["declaration_date"]
    is_train = (dates < windows["valid_start"]).to_numpy()
    is_valid = dates.between(windows["valid_start"], windows["valid_end"]).to_numpy()
    print(f"train: {is_train.sum():,} training rows, {is_valid.sum():,} validation rows")

    started = time.perf_counter()
    x = matrix[FEATURE_NAMES]
    fraud, critical = (
        fit_target(x, matrix[label].to_numpy(), is_train, is_valid, train_params)
        for label in ("fraud", "critical_fraud")
    )
    lanes = LanePolicy.from_shares(
        fraud.validation_scores,
        serving["red_share"],
        serving["yellow_share"],
        serving["exploration_share"],
        serving["exploration_key"],
    )
    training_window = f"{windows['train_start']}..{windows['valid_end']}"
    validation_window = f"{windows['valid_start']}..{windows['valid_end']}"
    model = RiskModel(
        fraud.booster,
        critical.booster,
        fraud.calibration,
        critical.calibration,
        lanes,
        FeatureState.load(STATE),
        info={
            "training_window": training_window,
            "validation_window": validation_window,
            "features": FEATURE_NAMES,
            "fraud_rounds": fraud.refit_rounds,
            "critical_rounds": critical.refit_rounds,
        },
    )
    shutil.rmtree(BUNDLE, ignore_errors=True)
    model.save(BUNDLE)
    scores = matrix.loc[is_valid, ["declaration_id", "declaration_date", "fraud", "critical_fraud", "duty_exposure"]]
    scores = scores.assign(risk_score=fraud.validation_scores, critical_score=critical.validation_scores)
    scores.to_parquet(VALIDATION_SCORES, index=False)
    elapsed = time.perf_counter() - started
    print(
        f"train: fraud best iteration {fraud.best_iteration} -> refit {fraud.refit_rounds} rounds; "
        f"critical {critical.best_iteration} -> {critical.refit_rounds}; {elapsed:.1f}s"
    )

    configure_tracking()
    use_experiment()
    example = input_example(windows)
    with mlflow.start_run(run_name=f"lgbm-{train_params['num_leaves']}leaves-{validation_window}") as run:
        mlflow.set_tags(
            {
                "git_commit": git_commit(),
                "data_version": data_version(),
                "training_window": training_window,
                "validation_window": validation_window,
                "feature_state_version": model.state.version,
            }
        )
        mlflow.log_params({f"train.{k}": v for k, v in train_params.items()})
        mlflow.log_params({f"features.{k}": v for k, v in params["features"].items()})
        mlflow.log_params({f"serving.{k}": v for k, v in serving.items() if k != "exploration_key"})
        mlflow.log_params(
            {"fraud_best_iteration": fraud.best_iteration, "fraud_refit_rounds": fraud.refit_rounds,
             "critical_best_iteration": critical.best_iteration, "critical_refit_rounds": critical.refit_rounds}
        )
        mlflow.log_metric("train_seconds", elapsed)
        output = model.score(example.assign(declaration_date=pd.to_datetime(example["declaration_date"])))
        output["reasons"] = output["reasons"].map(str)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=RiskPyfunc(),
            artifacts={"bundle": str(BUNDLE)},
            code_paths=["features", "models"],
            signature=infer_signature(example, output),
            input_example=example,
        )
        write_json(RUN, {"run_id": run.info.run_id, "model_uri": info.model_uri})
    print(f"train: MLflow run {run.info.run_id}, model {info.model_uri}")


if __name__ == "__main__":
    main()
