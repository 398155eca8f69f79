"""Stage train: fraud and critical-fraud boosters, early-stopped on the validation window,
calibrated on it, then refit on all of history; logged to MLflow as one deployable model."""

from __future__ import annotations

import time

import mlflow
import pandas as pd
from mlflow.models import infer_signature

from features.cluster import connect
from features.history import FeatureState
from features.matrix import FEATURE_NAMES
from features.schema import DECLARATION_FIELDS, RECOVERED_DUTY
from models.bundle import RiskModel, RiskPyfunc
from models.cluster import ClusterTrainer
from models.lanes import LanePolicy, LaneShares
from models.registry import configure_tracking, model_requirements, use_experiment
from models.training import LOCAL, FeatureMatrix, fit_duty, fit_target, window_masks
from pipelines.common import data_version, git_commit, load_params, read_json, staged_output, write_json
from pipelines.paths import BUNDLE, MATRIX, RUN, STATE, TRIALS, TUNED, VALIDATED, VALIDATION_REPORT, VALIDATION_SCORES


def input_example(windows: dict) -> pd.DataFrame:
    """Real declarations from the validation window, as a client would send them."""
    history = pd.read_parquet(
        VALIDATED,
        columns=DECLARATION_FIELDS,
        filters=[("declaration_date", ">=", pd.Timestamp(windows["valid_start"]))],
    )
    recent = history.head(3).copy()
    recent["declaration_date"] = recent["declaration_date"].dt.strftime("%Y-%m-%d")
    return recent.reset_index(drop=True)


def main() -> None:
    params = load_params()
    windows, serving = params["windows"], params["serving"]
    tuned = read_json(TUNED)
    train_params = tuned["params"]
    target_params = {"fraud": train_params, "critical_fraud": tuned.get("critical_params", train_params)}
    matrix = FeatureMatrix(MATRIX)
    is_train, is_valid = window_masks(matrix.column("declaration_date"), windows)
    print(f"train: {is_train.sum():,} training rows, {is_valid.sum():,} validation rows")

    client = connect()
    trainer = ClusterTrainer(client) if client else LOCAL
    started = time.perf_counter()
    x = matrix.rows_between(0, matrix.rows)
    fraud, critical = (
        fit_target(x, matrix.column(label), is_train, is_valid, target_params[label], trainer)
        for label in ("fraud", "critical_fraud")
    )
    # in-process on every trainer: one booster on the few frauds whose outcome reported a duty
    duty = fit_duty(
        x,
        matrix.column(RECOVERED_DUTY),
        matrix.column("fraud"),
        is_train,
        is_valid,
        train_params,
        params["duty_model"]["min_rows"],
    )
    first_valid = int(is_valid.argmax())
    scores = matrix.frame(
        first_valid,
        first_valid + int(is_valid.sum()),
        ["declaration_id", "declaration_date", "fraud", "critical_fraud", "duty_exposure"],
    )
    expected_duty = scores["duty_exposure"].to_numpy() if duty is None else duty.validation_estimates
    scores = scores.assign(
        risk_score=fraud.validation_scores,
        critical_score=critical.validation_scores,
        duty_at_risk=fraud.validation_scores * expected_duty,
    )
    # thresholds from out-of-sample scores, so served shares match the capacity set
    lanes = LanePolicy.fit(
        LaneShares.from_params(serving),
        serving["exploration_key"],
        scores["risk_score"],
        scores["critical_score"],
        scores["duty_at_risk"],
    )
    scores["lane"], scores["selected_by"] = lanes.assign(
        scores["risk_score"],
        scores["critical_score"],
        scores["duty_at_risk"],
        scores["declaration_id"].astype(str).tolist(),
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
            "duty_estimate": "declared" if duty is None else "learned",
        },
        duty_booster=None if duty is None else duty.booster,
    )
    with staged_output(BUNDLE) as bundle:
        model.save(bundle)
    with staged_output(VALIDATION_SCORES) as path:
        scores.to_parquet(path, index=False)
    elapsed = time.perf_counter() - started
    if duty is None:
        print(
            f"train: duty at risk = risk x declared duty (fewer than {params['duty_model']['min_rows']:,} "
            "frauds with a reported additional_duty in a window)"
        )
    else:
        print(f"train: duty at risk = risk x learned recovered duty ({duty.train_rows:,} + {duty.valid_rows:,} frauds)")
    print(
        f"train: fraud best iteration {fraud.best_iteration} -> refit {fraud.refit_rounds} rounds; "
        f"critical {critical.best_iteration} -> {critical.refit_rounds}; {elapsed:.1f}s"
    )

    configure_tracking()
    use_experiment()
    example = input_example(windows)
    run_name = (
        f"lgbm-{train_params['num_leaves']}leaves-lr{train_params['learning_rate']:.3g}"
        f"-data-{data_version()[:8]}-{validation_window}"
    )
    with mlflow.start_run(run_name=run_name) as run:
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
        mlflow.log_params({f"train.critical.{k}": v for k, v in target_params["critical_fraud"].items()})
        mlflow.log_params({f"tune.{k}": v for k, v in params["tune"].items()})
        if TRIALS.stat().st_size:
            mlflow.log_artifact(str(TRIALS), "tuning")
        mlflow.log_params({f"features.{k}": v for k, v in params["features"].items()})
        mlflow.log_params({f"serving.{k}": v for k, v in serving.items() if k != "exploration_key"})
        mlflow.log_params(
            {
                "fraud_best_iteration": fraud.best_iteration,
                "fraud_refit_rounds": fraud.refit_rounds,
                "critical_best_iteration": critical.best_iteration,
                "critical_refit_rounds": critical.refit_rounds,
            }
        )
        mlflow.log_metric("train_seconds", elapsed)
        mlflow.log_params(
            {
                "duty_estimate": model.info["duty_estimate"],
                **{f"duty_model.{k}": v for k, v in params["duty_model"].items()},
            }
        )
        mlflow.log_artifact(str(VALIDATION_REPORT))  # what validate let through and held back
        output = model.score(example.assign(declaration_date=pd.to_datetime(example["declaration_date"])))
        output["reasons"] = output["reasons"].map(str)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=RiskPyfunc(),
            artifacts={"bundle": str(BUNDLE)},
            code_paths=["features", "models"],
            pip_requirements=model_requirements(),
            signature=infer_signature(example, output),
            input_example=example,
        )
        write_json(RUN, {"run_id": run.info.run_id, "model_uri": info.model_uri})
    print(f"train: MLflow run {run.info.run_id}, model {info.model_uri}")


if __name__ == "__main__":
    main()
