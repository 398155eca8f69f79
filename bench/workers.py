"""Measurements that run in a child process of `bench.run`, one process per measurement, so each
starts cold and its peak memory is its own. Each prints one JSON object on its last line."""

from __future__ import annotations

# models first: it sets OMP_WAIT_POLICY, which OpenMP reads once, when LightGBM loads it
import models  # noqa: F401

# isort: split
import argparse
import json
import resource
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import yaml

from features.matrix import FEATURE_NAMES, serving_features, serving_inputs
from features.schema import RECORD, check_declarations
from models.bundle import RiskModel, reason_rows, reasons_for, score_declarations
from models.training import booster_params

SINGLE_CALLS = 100  # single-declaration calls, as the service sees them one request at a time


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bare_fit(workspace: Path) -> dict:
    """The lower bound of the train stage: one LightGBM fit on the featurize stage's matrix, with
    the stage's parameters and the final fraud model's number of rounds, nothing else."""
    train_params = yaml.safe_load((workspace / "params.yaml").read_text())["train"]
    rounds = json.loads((workspace / "data/model/bundle/model.json").read_text())["info"]["fraud_rounds"]
    matrix = pd.read_parquet(workspace / "data/features/matrix.parquet")
    started = time.perf_counter()
    dataset = lgb.Dataset(matrix[FEATURE_NAMES], matrix["fraud"].to_numpy())
    lgb.train(booster_params(train_params), dataset, num_boost_round=rounds)
    return {"seconds": time.perf_counter() - started, "rounds": rounds, "rows": len(matrix)}


def batch_baseline(bundle: Path, input_path: Path, breakdown_rows: int, max_reasons: int) -> dict:
    """What `customs-risk score` cannot do with less: the features and the two boosters'
    predictions for every row. Then the cost of each step the scorer adds, on a slice."""
    model = RiskModel.load(bundle)
    records = pd.read_parquet(input_path)
    typed = check_declarations(records, RECORD).valid
    started = time.perf_counter()
    x, _counts = serving_features(typed, model.state)
    featured = time.perf_counter()
    model.fraud_booster.predict(x)
    model.critical_booster.predict(x)
    predicted = time.perf_counter()
    inputs = serving_inputs(typed, model.state)
    prepared = time.perf_counter()
    model.fraud_booster.predict(inputs.matrix, raw_score=True)
    model.critical_booster.predict(inputs.matrix, raw_score=True)
    lean_predicted = time.perf_counter()
    result = {
        "rows": len(records),
        "features_seconds": featured - started,
        "predict_seconds": predicted - featured,
        "seconds": predicted - started,
        # the same on the arrays the scorer now uses: serving_inputs + both raw predicts
        "lean_features_seconds": prepared - predicted,
        "lean_predict_seconds": lean_predicted - prepared,
        "lean_seconds": lean_predicted - predicted,
    }
    as_sent = records.head(max(breakdown_rows, SINGLE_CALLS)).reset_index(drop=True)
    as_sent["declaration_date"] = as_sent["declaration_date"].dt.strftime("%Y-%m-%d")
    result["breakdown"] = score_breakdown(model, as_sent.head(breakdown_rows), max_reasons)
    single: dict[str, float] = {}
    for i in range(SINGLE_CALLS):
        one = as_sent.iloc[[i]].reset_index(drop=True)
        for step, seconds in score_breakdown(model, one, max_reasons)["seconds"].items():
            single[step] = single.get(step, 0.0) + seconds
    result["single"] = {"calls": SINGLE_CALLS, "seconds": single}
    return result


def score_breakdown(model: RiskModel, records: pd.DataFrame, max_reasons: int, reasons: str = "selected") -> dict:
    """Seconds per step of `score_declarations` + `RiskModel.score`, called step by step."""
    steps = {}

    def timed(name, call):
        started = time.perf_counter()
        value = call()
        steps[name] = steps.get(name, 0.0) + time.perf_counter() - started
        return value

    typed = timed("check_declarations (pandera, one pass)", lambda: check_declarations(records, RECORD).valid)
    inputs = timed("serving_inputs (indexed lookups, arrays)", lambda: serving_inputs(typed, model.state))
    margin = timed("fraud predict (raw score)", lambda: model.fraud_booster.predict(inputs.matrix, raw_score=True))
    critical_margin = timed(
        "critical predict (raw score)", lambda: model.critical_booster.predict(inputs.matrix, raw_score=True)
    )
    risk = model.fraud_calibration(margin)
    critical = model.critical_calibration(critical_margin)
    ids = typed["declaration_id"].astype(str).tolist()
    lane, _ = timed("lanes (keyed hash per ID)", lambda: model.lanes.assign(risk, ids, critical))
    rows = reason_rows(lane, reasons)
    contributions = timed(
        f"fraud pred_contrib (SHAP), rows with reasons ({reasons})",
        lambda: model.fraud_booster.predict(inputs.matrix[rows], pred_contrib=True)[:, :-1]
        if len(rows)
        else np.zeros((0, len(FEATURE_NAMES))),  # LightGBM refuses an empty matrix; the scorer skips it
    )
    found = timed(
        "reasons (from arrays, rows with reasons)",
        lambda: reasons_for(inputs, model.state, rows, contributions, max_reasons),
    )
    timed("JSON encode of reasons", lambda: [json.dumps(r) for r in found])
    timed(
        "= score_declarations, end to end",
        lambda: score_declarations(model, records, max_reasons, reasons),
    )
    return {"rows": len(records), "rows_with_reasons": len(rows), "seconds": steps}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="task", required=True)
    sub.add_parser("bare-fit").add_argument("--workspace", type=Path, required=True)
    batch_args = sub.add_parser("batch-baseline")
    batch_args.add_argument("--bundle", type=Path, required=True)
    batch_args.add_argument("--input", type=Path, required=True)
    batch_args.add_argument("--breakdown-rows", type=int, required=True)
    batch_args.add_argument("--max-reasons", type=int, default=3)
    args = parser.parse_args()
    result = (
        bare_fit(args.workspace) if args.task == "bare-fit"
        else batch_baseline(args.bundle, args.input, args.breakdown_rows, args.max_reasons)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
