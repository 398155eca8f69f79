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
from functools import partial
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import sqlalchemy as sa
import yaml

from bench.load import as_sent
from features.matrix import FEATURE_NAMES, serving_features, serving_inputs
from features.schema import DECLARATION_FIELDS, RECORD, check_declarations, check_requests
from models.bundle import RiskModel, reason_rows, reasons_for, score_declarations
from models.training import booster_params
from serving.audit import AuditStore

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
    given = records.head(breakdown_rows).reset_index(drop=True)  # a frame, as the batch scorer has them
    given["declaration_date"] = given["declaration_date"].dt.strftime("%Y-%m-%d")
    result["breakdown"] = score_breakdown(model, given, max_reasons)
    sent = as_sent(typed.head(SINGLE_CALLS))  # JSON objects, as the service receives them
    single: dict[str, float] = {}
    for i in range(SINGLE_CALLS):
        for step, seconds in score_breakdown(model, sent[i : i + 1], max_reasons)["seconds"].items():
            single[step] = single.get(step, 0.0) + seconds
    result["single"] = {"calls": SINGLE_CALLS, "seconds": single}
    return result


def score_breakdown(
    model: RiskModel, records: pd.DataFrame | list[dict], max_reasons: int, reasons: str = "selected"
) -> dict:
    """Seconds per step of `score_declarations` + `RiskModel.score`, called step by step."""
    steps = {}

    def timed(name, call):
        started = time.perf_counter()
        value = call()
        steps[name] = steps.get(name, 0.0) + time.perf_counter() - started
        return value

    typed = timed("check_requests (the contract's rules, online)", lambda: check_requests(records).declarations)
    inputs = timed("serving_inputs (indexed lookups, arrays)", lambda: serving_inputs(typed, model.state))
    timed("fraud predict (raw score)", lambda: model.fraud_booster.predict(inputs.matrix, raw_score=True))
    timed("critical predict (raw score)", lambda: model.critical_booster.predict(inputs.matrix, raw_score=True))
    assessed = timed("assess: the three steps above, calibration and lanes", lambda: model.assess(typed))
    rows = reason_rows(assessed.lane, reasons)
    contributions = timed(
        f"fraud contributions (leaf indices + leaf table), rows with reasons ({reasons})",
        lambda: model.contributions(inputs.matrix[rows])[:, :-1],
    )
    found = timed(
        "reasons_for (sentences, rows with reasons)",
        lambda: reasons_for(inputs, model.state, rows, contributions, max_reasons),
    )
    timed("JSON encode of reasons", lambda: [json.dumps(r) for r in found])
    timed(
        "= score_declarations, end to end",
        lambda: score_declarations(model, records, max_reasons, reasons),
    )
    timed(  # what the reasons cost before issue 14's path attribution (LightGBM refuses no rows)
        "not served, for comparison: TreeSHAP (pred_contrib) of the same rows",
        lambda: model.fraud_booster.predict(inputs.matrix[rows], pred_contrib=True) if len(rows) else None,
    )
    return {"rows": len(records), "rows_with_reasons": len(rows), "seconds": steps}


def fastest_steps(model: RiskModel, records: pd.DataFrame | list[dict], max_reasons: int, repeats: int) -> dict:
    """`score_breakdown`, each step's fastest of `repeats` passes."""
    runs = [score_breakdown(model, records, max_reasons) for _ in range(repeats)]
    return {**runs[0], "seconds": {step: min(run["seconds"][step] for run in runs) for step in runs[0]["seconds"]}}


def fastest_seconds(call, repeats: int) -> float:
    """The fastest of `repeats` calls after one warm-up: the call's own cost, not a neighbour's."""
    call()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def audit_writes(audit_db: Path, sent: list[dict], results: pd.DataFrame, repeats: int) -> dict:
    """Milliseconds the service's durable write of its decisions takes, for one declaration and
    for the batch, as the store is (WAL, synchronous=FULL: the WAL is synced at each commit) and,
    for comparison only, with synchronous=NORMAL (WAL synced at checkpoints: a process crash
    loses nothing, a power cut may lose the last commits)."""
    out = {}
    for synchronous in ("FULL", "NORMAL"):
        store = AuditStore(audit_db)
        if synchronous == "NORMAL":  # the bench's own connections, after the store's FULL
            sa.event.listen(
                store.engine, "connect", lambda connection, _: connection.execute("PRAGMA synchronous=NORMAL")
            )
            store.engine.dispose()
        for name, rows in (("single", 1), ("batch", len(sent))):
            write = partial(store.record_decisions, sent[:rows], results.head(rows), "bench")
            out[f"{name}_{synchronous.lower()}_ms"] = fastest_seconds(write, repeats) * 1e3
        store.close()
    return out


def scoring(
    bundle: Path, validated: Path, batch_rows: int, single_calls: int, repeats: int, max_reasons: int, audit_db: Path
) -> dict:
    """Issue 14, in one process: one declaration as the service scores it (the JSON object it
    received, `score_declarations`) against the raw predict of one prepared row, and a batch with
    default reasons against features + both predicts, with the steps between and the audit
    store's write the service adds."""
    model = RiskModel.load(bundle)
    history = pd.read_parquet(validated, columns=DECLARATION_FIELDS).sort_values("declaration_date")
    pool = as_sent(history.tail(max(batch_rows, single_calls)))
    one_row = serving_inputs(check_requests(pool[:1]).declarations, model.state).matrix
    raw_predict = fastest_seconds(lambda: model.fraud_booster.predict(one_row, raw_score=True), 200)

    single = []
    for declaration in pool[:single_calls]:  # each timed once, as requests come: green and red alike
        started = time.perf_counter()
        score_declarations(model, [declaration], max_reasons)
        single.append(time.perf_counter() - started)
    single_ms = np.array(single) * 1e3

    sent = pool[:batch_rows]
    typed = check_requests(sent).declarations

    def features_and_predicts() -> None:
        matrix = serving_inputs(typed, model.state).matrix
        model.fraud_booster.predict(matrix, raw_score=True)
        model.critical_booster.predict(matrix, raw_score=True)

    baseline = fastest_seconds(features_and_predicts, repeats)
    batch = fastest_seconds(lambda: score_declarations(model, sent, max_reasons), repeats)
    return {
        "raw_predict_ms": raw_predict * 1e3,
        "single": {
            "calls": single_calls,
            "p50_ms": float(np.percentile(single_ms, 50)),
            "p99_ms": float(np.percentile(single_ms, 99)),
            "mean_ms": float(single_ms.mean()),
            "p50_over_raw_predict": float(np.percentile(single_ms, 50)) / (raw_predict * 1e3),
            "steps": fastest_steps(model, pool[:1], max_reasons, repeats)["seconds"],
        },
        "batch": {
            "rows": batch_rows,
            "baseline_seconds": baseline,
            "seconds": batch,
            "over_baseline": batch / baseline,
            "declarations_per_second": batch_rows / batch,
            "breakdown": fastest_steps(model, sent, max_reasons, repeats),
        },
        # the online checker beside the pandera pass it replaced, on the same records
        "validation_ms": {
            "online_single": fastest_seconds(lambda: check_requests(pool[:1]), repeats) * 1e3,
            "pandera_single": fastest_seconds(lambda: check_declarations(pd.DataFrame(pool[:1]), RECORD), repeats)
            * 1e3,
            "online_batch": fastest_seconds(lambda: check_requests(sent), repeats) * 1e3,
            "pandera_batch": fastest_seconds(lambda: check_declarations(pd.DataFrame(sent), RECORD), repeats) * 1e3,
        },
        "audit_store": audit_writes(audit_db, sent, score_declarations(model, sent, max_reasons), repeats),
        "peak_rss_bytes": _peak_rss_bytes(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="task", required=True)
    sub.add_parser("bare-fit").add_argument("--workspace", type=Path, required=True)
    batch_args = sub.add_parser("batch-baseline")
    batch_args.add_argument("--bundle", type=Path, required=True)
    batch_args.add_argument("--input", type=Path, required=True)
    batch_args.add_argument("--breakdown-rows", type=int, required=True)
    batch_args.add_argument("--max-reasons", type=int, default=3)
    scoring_args = sub.add_parser("scoring")
    scoring_args.add_argument("--bundle", type=Path, required=True)
    scoring_args.add_argument("--validated", type=Path, required=True)
    scoring_args.add_argument("--batch-rows", type=int, required=True)
    scoring_args.add_argument("--single-calls", type=int, required=True)
    scoring_args.add_argument("--repeats", type=int, required=True)
    scoring_args.add_argument("--max-reasons", type=int, default=3)
    scoring_args.add_argument("--audit-db", type=Path, required=True)
    args = parser.parse_args()
    if args.task == "bare-fit":
        result = bare_fit(args.workspace)
    elif args.task == "scoring":
        result = scoring(
            args.bundle,
            args.validated,
            args.batch_rows,
            args.single_calls,
            args.repeats,
            args.max_reasons,
            args.audit_db,
        )
    else:
        result = batch_baseline(args.bundle, args.input, args.breakdown_rows, args.max_reasons)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
