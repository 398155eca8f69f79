"""`make bench`: how fast and how big, each figure beside what a user would pick instead.

Every figure is the median of several runs, and each baseline is measured in the same run as
what it is compared with, interleaved, so the ratio holds on a noisy shared machine. Writes
bench/results.json and prints a markdown table.

    python -m bench.run [--quick] [--only pipeline,serving,store,batch]

`make scale` measures the pipeline's stages on synthetic histories (bench/scale.py).

This module holds the four measurements and the command line; the plan (bench/plan.py), the
workspace and measured children (bench/workspace.py), the servers (bench/servers.py) and the
report (bench/report.py) are modules of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import psutil

from bench.load import as_sent, latency, probe, throughput
from bench.plan import FULL, HTTP_BATCH_ROWS, QUICK, SCORING_BATCH_ROWS, SECTIONS, SINGLE_RATE, STAGES, Plan
from bench.report import machine, markdown, targets
from bench.servers import (
    PYTHON,
    REPO,
    Server,
    bentoml_serve,
    minimal_fastapi,
    mlflow_serve,
    server_env,
    stop_servers,
    wait_ready,
)
from bench.store import RUNS as STORE_RUNS
from bench.store import bench_store
from bench.workspace import (
    VALIDATED,
    Workspace,
    batch_input,
    declaration_pool,
    dvc,
    make_workspace,
    run_child,
    worker,
)
from features.schema import DECLARATION_FIELDS


def median(values) -> float:
    return float(statistics.median(values))


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("inf")


# --- 0. scoring at the speed of the model (issue 14), on make run's champion -------------------


def tree_rss_bytes(server: Server) -> int:
    """RSS of a server and every process under it (BentoML's workers are children)."""
    leader = psutil.Process(server.process.pid)
    return sum(p.memory_info().rss for p in [leader, *leader.children(recursive=True)])


def bench_scoring(plan: Plan, tmp: Path) -> dict:
    """The checkout's code on the champion `make run` left (data/model/bundle, the BentoML store's
    packaged model, the MLflow registry): in process, one declaration against a raw predict and
    a batch against features + both predicts; over HTTP, our service (one worker, served from
    the checkout, a scratch audit store) against its own GET /healthz and against `mlflow models
    serve` of the registered champion, interleaved run by run."""
    # the store `make` names (BENTOML_HOME: the checkout's .bentoml unless given), where make run packaged the champion
    store = Path(os.environ.get("BENTOML_HOME") or REPO / ".bentoml")
    env = server_env(store, tmp / "audit.db", mlflow_db=REPO / "mlflow.db", pythonpath=str(REPO))
    in_process, _ = worker(
        [
            "scoring",
            "--bundle",
            str(REPO / "data/model/bundle"),
            "--validated",
            str(REPO / VALIDATED),
            "--batch-rows",
            str(SCORING_BATCH_ROWS),
            "--single-calls",
            str(plan.single_calls),
            "--repeats",
            "5",
            "--audit-db",
            str(tmp / "in-process-audit.db"),
        ],
        REPO,
        env,
    )
    print(
        f"  in process: one declaration p50 {in_process['single']['p50_ms']:.2f} ms "
        f"({in_process['single']['p50_over_raw_predict']:.0f}x a raw predict); {SCORING_BATCH_ROWS:,} declarations "
        f"{in_process['batch']['over_baseline']:.1f}x features + both predicts",
        flush=True,
    )
    history = pd.read_parquet(REPO / VALIDATED, columns=DECLARATION_FIELDS).sort_values("declaration_date")
    pool = as_sent(history.tail(5_000))
    ours = bentoml_serve("serving.service:CustomsRisk", REPO, env, tmp / "customs-risk.log")
    mlflow = mlflow_serve(REPO, env, tmp / "mlflow.log")
    health = probe("GET /healthz", f"{ours.base}/healthz")
    # the same requests asking for no reasons: the service without the contributions
    unexplained = replace(ours.target, body=lambda d: {"declarations": d, "reasons": "none"})
    runs = []
    try:
        for server in (ours, mlflow):
            wait_ready(server)
            throughput(server.target, pool, HTTP_BATCH_ROWS, 1, 2)  # warm-up
        idle_rss = tree_rss_bytes(ours)
        for run in range(plan.scoring_runs):
            seconds = plan.scoring_seconds
            measured = {
                "healthz": latency(health, pool, SINGLE_RATE, seconds),
                "single": latency(ours.target, pool, SINGLE_RATE, seconds),
                "batch": throughput(ours.target, pool, HTTP_BATCH_ROWS, 1, seconds),
                "batch_no_reasons": throughput(unexplained, pool, HTTP_BATCH_ROWS, 1, seconds),
                "mlflow_batch": throughput(mlflow.target, pool, HTTP_BATCH_ROWS, 1, seconds),
                "rss_bytes": tree_rss_bytes(ours),
            }
            runs.append(measured)
            print(
                f"  scoring run {run + 1}: single p50 {measured['single']['p50_ms']:.1f} ms, p99 "
                f"{measured['single']['p99_ms']:.1f} ms, /healthz p50 {measured['healthz']['p50_ms']:.1f} ms; batches of "
                f"{HTTP_BATCH_ROWS}: {measured['batch']['declarations_per_second']:.0f} declarations/s, mlflow "
                f"{measured['mlflow_batch']['declarations_per_second']:.0f}",
                flush=True,
            )
    finally:
        stop_servers([ours, mlflow])
    http = {
        "single_p50_ms": median(r["single"]["p50_ms"] for r in runs),
        "single_p99_ms": median(r["single"]["p99_ms"] for r in runs),
        "healthz_p50_ms": median(r["healthz"]["p50_ms"] for r in runs),
        "single_p50_over_healthz_p50": median(r["single"]["p50_ms"] / r["healthz"]["p50_ms"] for r in runs),
        "batch_per_second": median(r["batch"]["declarations_per_second"] for r in runs),
        "batch_no_reasons_per_second": median(r["batch_no_reasons"]["declarations_per_second"] for r in runs),
        "mlflow_batch_per_second": median(r["mlflow_batch"]["declarations_per_second"] for r in runs),
        "batch_over_mlflow": median(
            ratio(r["batch"]["declarations_per_second"], r["mlflow_batch"]["declarations_per_second"]) for r in runs
        ),
        "idle_rss_bytes": idle_rss,
        "peak_rss_bytes": max(r["rss_bytes"] for r in runs),
        "failed_requests": sum(
            r[k]["errors"] for r in runs for k in ("healthz", "single", "batch", "batch_no_reasons", "mlflow_batch")
        ),
        "single_rate": SINGLE_RATE,
        "batch_rows": HTTP_BATCH_ROWS,
        "seconds": plan.scoring_seconds,
    }
    return {"in_process": in_process, "http": http, "runs": runs}


# --- 1. the pipeline, stage by stage, against a bare LightGBM fit -----------------------------


def bench_pipeline(ws: Workspace, plan: Plan) -> dict:
    runs = []
    for run in range(plan.pipeline_runs):
        stages = {}
        for stage in STAGES:
            child = dvc(ws, "repro", "--force", "--single-item", stage)
            stages[stage] = {"seconds": child.seconds, "peak_rss_bytes": child.peak_rss_bytes}
        bare, _ = worker(["bare-fit", "--workspace", str(ws.root)], ws.root, ws.env)
        runs.append({"stages": stages, "total_seconds": sum(s["seconds"] for s in stages.values()), "bare_fit": bare})
        print(
            f"  pipeline run {run + 1}: {runs[-1]['total_seconds']:.1f}s, bare fit {bare['seconds']:.1f}s", flush=True
        )
    result = {
        "rows": runs[0]["bare_fit"]["rows"],
        "runs": runs,
        "stage_seconds": {s: median(r["stages"][s]["seconds"] for r in runs) for s in STAGES},
        "stage_peak_rss_bytes": {s: max(r["stages"][s]["peak_rss_bytes"] for r in runs) for s in STAGES},
        "total_seconds": median(r["total_seconds"] for r in runs),
        "bare_fit_seconds": median(r["bare_fit"]["seconds"] for r in runs),
        "bare_fit_rounds": runs[-1]["bare_fit"]["rounds"],
    }
    result["train_over_bare_fit"] = median(r["stages"]["train"]["seconds"] / r["bare_fit"]["seconds"] for r in runs)
    result["total_over_bare_fit"] = median(r["total_seconds"] / r["bare_fit"]["seconds"] for r in runs)
    return result


# --- 2. serving over HTTP: ours, a minimal FastAPI endpoint, `mlflow models serve` -----------


def start_servers(ws: Workspace) -> list[Server]:
    return [
        bentoml_serve("customs-risk-service:latest", ws.root, ws.env, ws.root / "customs-risk.log"),
        minimal_fastapi(ws.root, ws.env),
        mlflow_serve(ws.root, ws.env),
    ]


def bench_serving(ws: Workspace, plan: Plan) -> dict:
    pool = declaration_pool(ws, 5_000)
    servers = start_servers(ws)
    try:
        capacity = {}
        for server in servers:
            wait_ready(server)
            # one request at a time: the rate each server sustains, and a warm-up
            capacity[server.target.name] = throughput(server.target, pool, 1, 1, 5)["declarations_per_second"]
        rate = plan.load_share * min(capacity.values())
        print(f"  single-declaration capacity (req/s): {capacity}; latency measured at {rate:.1f} req/s", flush=True)
        runs = {server.target.name: [] for server in servers}
        for run in range(plan.serving_runs):
            for server in servers:  # interleaved: each run measures all three under the same noise
                measured = {"latency": latency(server.target, pool, rate, plan.serving_seconds)}
                for batch in (100, 1000):
                    measured[f"batch_{batch}"] = throughput(
                        server.target, pool, batch, plan.concurrency, plan.serving_seconds
                    )
                runs[server.target.name].append(measured)
                print(
                    f"  serving run {run + 1} {server.target.name}: p99 {measured['latency']['p99_ms']:.1f} ms, "
                    f"{measured['batch_100']['declarations_per_second']:.0f} / "
                    f"{measured['batch_1000']['declarations_per_second']:.0f} declarations/s",
                    flush=True,
                )
    finally:
        stop_servers(servers)
    summary = {}
    for name, measured in runs.items():
        summary[name] = {
            "sequential_requests_per_second": capacity[name],
            **{k: median(m["latency"][k] for m in measured) for k in ("p50_ms", "p95_ms", "p99_ms")},
            **{
                f"batch_{b}_per_second": median(m[f"batch_{b}"]["declarations_per_second"] for m in measured)
                for b in (100, 1000)
            },
            "failed_requests": sum(
                m["latency"]["errors"] + m["batch_100"]["errors"] + m["batch_1000"]["errors"] for m in measured
            ),
            "first_error": next(
                (
                    e
                    for m in measured
                    for e in (
                        m["latency"]["first_error"],
                        m["batch_100"]["first_error"],
                        m["batch_1000"]["first_error"],
                    )
                    if e
                ),
                None,
            ),
        }
    ours, minimal, mlflow_serve = (runs[s.target.name] for s in servers)
    ratios = {
        "p99_over_minimal": median(
            ratio(o["latency"]["p99_ms"], m["latency"]["p99_ms"]) for o, m in zip(ours, minimal)
        ),
        "p50_over_minimal": median(
            ratio(o["latency"]["p50_ms"], m["latency"]["p50_ms"]) for o, m in zip(ours, minimal)
        ),
    }
    for batch in (100, 1000):
        key = f"batch_{batch}"
        ratios[f"{key}_throughput_over_mlflow"] = median(
            ratio(o[key]["declarations_per_second"], f[key]["declarations_per_second"])
            for o, f in zip(ours, mlflow_serve)
        )
        ratios[f"{key}_throughput_over_minimal"] = median(
            ratio(o[key]["declarations_per_second"], m[key]["declarations_per_second"]) for o, m in zip(ours, minimal)
        )
    return {
        "request_rate": rate,
        "seconds": plan.serving_seconds,
        "concurrency": plan.concurrency,
        "servers": summary,
        "ratios": ratios,
        "runs": runs,
    }


# --- 3. batch scoring: `customs-risk score` against features + booster.predict ---------------


def bench_batch(ws: Workspace, plan: Plan, tmp: Path) -> dict:
    source, scored = tmp / "batch.parquet", tmp / "scored.parquet"
    batch_input(ws, plan.batch_rows, source)
    runs = []
    for run in range(plan.batch_runs):
        ours = run_child(
            [PYTHON, "-m", "serving.cli", "score", "--input", str(source), "--output", str(scored)], ws.root, ws.env
        )
        assert len(pd.read_parquet(scored, columns=["declaration_id"])) == plan.batch_rows
        baseline, _ = worker(
            [
                "batch-baseline",
                "--bundle",
                str(ws.root / "data/model/bundle"),
                "--input",
                str(source),
                "--breakdown-rows",
                str(plan.breakdown_rows),
            ],
            ws.root,
            ws.env,
        )
        runs.append({"cli_seconds": ours.seconds, "cli_peak_rss_bytes": ours.peak_rss_bytes, "baseline": baseline})
        print(
            f"  batch run {run + 1}: customs-risk score {ours.seconds:.1f}s, features + predict {baseline['seconds']:.1f}s",
            flush=True,
        )
    breakdown = runs[-1]["baseline"]["breakdown"]
    return {
        "rows": plan.batch_rows,
        "cli_seconds": median(r["cli_seconds"] for r in runs),
        "cli_peak_rss_bytes": max(r["cli_peak_rss_bytes"] for r in runs),
        "baseline_seconds": median(r["baseline"]["seconds"] for r in runs),
        "baseline_features_seconds": median(r["baseline"]["features_seconds"] for r in runs),
        "baseline_predict_seconds": median(r["baseline"]["predict_seconds"] for r in runs),
        "cli_over_baseline": median(r["cli_seconds"] / r["baseline"]["seconds"] for r in runs),
        "breakdown_rows": breakdown["rows"],
        "breakdown_seconds": breakdown["seconds"],
        "single": runs[-1]["baseline"]["single"],
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each: a few minutes")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    sections = [s for s in SECTIONS if s in args.only.split(",")]
    results: dict = {
        "mode": plan.mode,
        "plan": asdict(plan),
        "machine": machine(),
        "runs": f"{plan.pipeline_runs} (pipeline), {plan.serving_runs} (serving), {STORE_RUNS[plan.mode]} (store), "
        f"{plan.batch_runs} (batch)",
    }
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="customs-risk-bench-"))

    def save(section: str, value: dict) -> None:
        """After each section, so a long run that is stopped still leaves what it measured."""
        results[section] = value
        results["machine"]["load_average_at_end"] = os.getloadavg()
        results["seconds"] = time.perf_counter() - started
        results["targets"] = targets(results)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1, default=str) + "\n")

    try:
        if "scoring" in sections:  # first: it needs no workspace, only what `make run` left
            save("scoring", bench_scoring(plan, tmp))
        if {"pipeline", "serving", "store", "batch"} & set(sections):
            print(f"workspace {tmp / 'workspace'}", flush=True)
            # the store's figures are the store's: a sample of the history serves them as well as the whole
            sampled = {"pipeline", "serving", "batch"} & set(sections) or plan.kcs_rows
            ws = make_workspace(tmp / "workspace", plan if sampled else replace(plan, kcs_rows=QUICK.kcs_rows))
            if "pipeline" in sections:
                save("pipeline", bench_pipeline(ws, plan))
            else:
                dvc(ws, "repro")
            if "serving" in sections:
                save("serving", bench_serving(ws, plan))
            if "store" in sections:
                save("store", bench_store(ws, plan, tmp))
        if "batch" in sections:  # last: the slowest, one scoring of 1M rows takes many minutes
            save("batch", bench_batch(ws, plan, tmp))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(markdown(results))
    print(f"\n{plan.mode} bench: {results['seconds'] / 60:.1f} min -> {args.output}")


if __name__ == "__main__":
    main()
