"""The report of `make bench`: the machine it ran on, the targets met or not, and the markdown
tables (printed, and pasted into the README's Benchmarks section) from bench/results.json's
results."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import models
from bench.plan import STAGES


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kib = int(
        next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    )
    versions = {}
    for package in ("lightgbm", "pandas", "numpy", "pandera", "bentoml", "mlflow", "fastapi", "uvicorn", "dvc"):
        try:
            versions[package] = __import__("importlib.metadata").metadata.version(package)
        except Exception:  # noqa: BLE001 - a missing package is reported as such
            versions[package] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
        "load_average_at_start": os.getloadavg(),
        "omp_wait_policy": models.OMP_WAIT_POLICY,
    }


def _gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB"


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def scoring_table(s: dict) -> list[str]:
    """Issue 14's figures: each beside the baseline it is a ratio of, measured in the same run."""
    inproc, http = s["in_process"], s["http"]
    single, batch, audit, checks = inproc["single"], inproc["batch"], inproc["audit_store"], inproc["validation_ms"]
    lines = [
        "",
        "**0. Scoring at the speed of the model** (issue 14; the champion of `make run`, the checkout's code)",
        "",
        "| what | measured | baseline | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| one declaration in process, p50 of {single['calls']:,} (p99 {single['p99_ms']:.1f} ms) | "
        f"{single['p50_ms']:.2f} ms | raw fraud predict, one prepared row: {inproc['raw_predict_ms']:.3f} ms | "
        f"{single['p50_over_raw_predict']:.0f}x |",
        f"| {batch['rows']:,} declarations in process, default reasons ({batch['breakdown']['rows_with_reasons']} "
        f"carry them) | {batch['seconds']:.3f} s ({batch['declarations_per_second']:,.0f}/s) | features + both "
        f"predicts: {batch['baseline_seconds']:.3f} s | {batch['over_baseline']:.1f}x |",
        f"| HTTP, one declaration a request at {http['single_rate']:.0f}/s: p50 (p99 {http['single_p99_ms']:.1f} ms) | "
        f"{http['single_p50_ms']:.1f} ms | GET /healthz p50, same server: {http['healthz_p50_ms']:.1f} ms | "
        f"{http['single_p50_over_healthz_p50']:.1f}x |",
        f"| HTTP, batches of {http['batch_rows']}, one in flight | {http['batch_per_second']:,.0f} declarations/s | "
        f"`mlflow models serve`: {http['mlflow_batch_per_second']:,.0f}/s | {http['batch_over_mlflow']:.1f}x |",
        f'| HTTP, batches of {http["batch_rows"]}, `"reasons": "none"` (no contributions) | '
        f"{http['batch_no_reasons_per_second']:,.0f} declarations/s | | |",
        f"| service RSS (process tree), idle / after the load | {_gib(http['idle_rss_bytes'])} / "
        f"{_gib(http['peak_rss_bytes'])} | | |",
        f"| `check_requests`, one declaration / {batch['rows']:,} | {checks['online_single']:.2f} / "
        f"{checks['online_batch']:.1f} ms | pandera (`check_declarations`): {checks['pandera_single']:.1f} / "
        f"{checks['pandera_batch']:.1f} ms | {checks['pandera_single'] / checks['online_single']:.0f}x / "
        f"{checks['pandera_batch'] / checks['online_batch']:.1f}x faster |",
        f"| audit store write (WAL, synchronous=FULL), one declaration / {batch['rows']:,} | "
        f"{audit['single_full_ms']:.2f} / {audit['batch_full_ms']:.1f} ms | synchronous=NORMAL: "
        f"{audit['single_normal_ms']:.2f} / {audit['batch_normal_ms']:.1f} ms | |",
        "",
        f"Where the time goes (fastest of 5 calls each, one declaration / {batch['rows']:,}):",
        "",
        "| step | ms, one declaration | ms, batch |",
        "| --- | ---: | ---: |",
    ]
    for step, seconds in batch["breakdown"]["seconds"].items():
        lines.append(f"| {step} | {single['steps'].get(step, float('nan')) * 1e3:.2f} | {seconds * 1e3:.1f} |")
    if http["failed_requests"]:
        lines += ["", f"{http['failed_requests']} HTTP request(s) failed."]
    return lines


STORE_CONFIGURATIONS = {
    "sqlite_1": "1 replica, SQLite",
    "postgresql_1": "1 replica, PostgreSQL",
    "postgresql_2": "2 replicas, one PostgreSQL",
}


def store_table(s: dict) -> list[str]:
    lines = [
        "",
        f"**Store** (issue 31: /score in batches of {s['batch']}, {s['in_flight_per_replica']} requests in flight per "
        f"replica, {s['seconds']:.0f} s each, {s['cores']} cores shared by the replicas, PostgreSQL and the load generator)",
        "",
        "| configuration | decisions/s | p50 ms | p99 ms | cores busy: replicas | decisions per replica core-second "
        "| cores busy: PostgreSQL | load generator | failed requests |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, x in s["configurations"].items():
        lines.append(
            f"| {STORE_CONFIGURATIONS[name]} | {x['declarations_per_second']:.0f} | {x['p50_ms']:.0f} | "
            f"{x['p99_ms']:.0f} | {x['replicas_cores']:.2f} | {x['decisions_per_replica_core_second']:.0f} | "
            f"{x['postgresql_cores']:.2f} | "
            f"{x['load_generator_cores']:.2f} | {x['failed_requests']} |"
        )
    lines += [
        "",
        f"2 replicas / 1 replica on PostgreSQL: {s['two_over_one_postgresql']:.2f}x; "
        f"1 replica PostgreSQL / SQLite: {s['postgresql_over_sqlite']:.2f}x",
    ]
    return lines


def markdown(results: dict) -> str:
    lines = []
    m = results["machine"]
    lines.append(
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB RAM, {m['os']}, Python {m['python']}, "
        f"LightGBM {m['versions']['lightgbm']}, pandas {m['versions']['pandas']}; load average at start "
        f"{m['load_average_at_start'][0]:.1f} (shared machine); `{results['mode']}` mode, medians of {results['runs']}."
    )
    if "scoring" in results:
        lines += scoring_table(results["scoring"])
    if "pipeline" in results:
        p = results["pipeline"]
        lines += [
            "",
            f"**1. Pipeline** (`dvc repro --force --single-item STAGE`, {p['rows']:,} rows of KCS history)",
            "",
            "| stage | seconds | peak RSS |",
            "| --- | ---: | ---: |",
        ]
        lines += [f"| {s} | {p['stage_seconds'][s]:.1f} | {_gib(p['stage_peak_rss_bytes'][s])} |" for s in STAGES]
        lines += [
            f"| **total** | **{p['total_seconds']:.1f}** | |",
            f"| bare LightGBM fit, same matrix, {p['bare_fit_rounds']} rounds (lower bound) | {p['bare_fit_seconds']:.1f} | |",
            "",
            f"train stage / bare fit: {p['train_over_bare_fit']:.1f}x; whole pipeline / bare fit: {p['total_over_bare_fit']:.1f}x",
        ]
    if "serving" in results:
        v = results["serving"]
        lines += [
            "",
            f"**2. Serving over HTTP** (latency: 1 declaration a request, open loop at {v['request_rate']:.1f} req/s, "
            f"half the slowest server's sequential rate; throughput: {v['concurrency']} batch requests in flight; "
            f"{v['seconds']:.0f} s each)",
            "",
            "| server | sequential req/s | p50 ms | p95 ms | p99 ms | decl/s, batches of 100 | decl/s, batches of 1000 | failed requests |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, x in v["servers"].items():
            lines.append(
                f"| {name} | {x['sequential_requests_per_second']:.1f} | {x['p50_ms']:.1f} | {x['p95_ms']:.1f} | {x['p99_ms']:.1f} | "
                f"{x['batch_100_per_second']:.0f} | {x['batch_1000_per_second']:.0f} | {x['failed_requests']} |"
            )
        lines += [
            f"- {name}: first failure: `{x['first_error']}`" for name, x in v["servers"].items() if x["first_error"]
        ]
        r = v["ratios"]
        lines += [
            "",
            f"ours / minimal FastAPI: p99 {r['p99_over_minimal']:.2f}x, p50 {r['p50_over_minimal']:.2f}x; "
            f"throughput ours / mlflow models serve: {r['batch_100_throughput_over_mlflow']:.1f}x (100), "
            f"{r['batch_1000_throughput_over_mlflow']:.1f}x (1000)",
        ]
    if "store" in results:
        lines += store_table(results["store"])
    if "batch" in results:
        b = results["batch"]
        lines += [
            "",
            f"**3. Batch scoring** ({b['rows']:,} declarations)",
            "",
            "| what | seconds |",
            "| --- | ---: |",
            f"| `customs-risk score` (whole command, Parquet in and out) | {b['cli_seconds']:.1f} |",
            f"| baseline: `serving_features` + both boosters' `predict` | {b['baseline_seconds']:.1f} |",
            f"| ratio | {b['cli_over_baseline']:.1f}x |",
            f"| `customs-risk score` on 1,000,000 declarations at this rate (extrapolated) | "
            f"{b['cli_seconds'] / b['rows'] * 1e6:,.0f} |",
            "",
            f"Where a scoring call spends its time ({b['breakdown_rows']:,} declarations, step by step):",
            "",
            "| step | seconds | µs per declaration |",
            "| --- | ---: | ---: |",
        ]
        for step, seconds in b["breakdown_seconds"].items():
            lines.append(f"| {step} | {seconds:.2f} | {seconds / b['breakdown_rows'] * 1e6:.0f} |")
        single = b["single"]
        lines += [
            "",
            f"The same steps for one declaration a call ({single['calls']} calls), as the service sees it:",
            "",
            "| step | ms per call |",
            "| --- | ---: |",
        ]
        lines += [f"| {step} | {seconds / single['calls'] * 1e3:.2f} |" for step, seconds in single["seconds"].items()]
    if results.get("targets"):
        lines += ["", "**Targets**", "", "| target | measured | |", "| --- | --- | --- |"]
        lines += [f"| {t['target']} | {t['measured']} | {_verdict(t['met'])} |" for t in results["targets"]]
    return "\n".join(lines)


def _target(target: str, value: float, shown: str, at_most: float | None = None, at_least: float | None = None) -> dict:
    """One target judged on its own figure: `shown` formats the value."""
    met = value <= at_most if at_most is not None else value >= at_least
    return {"target": target, "measured": shown.format(value), "met": met}


def targets(results: dict) -> list[dict]:
    out = []
    if "scoring" in results:
        inproc, http = results["scoring"]["in_process"], results["scoring"]["http"]
        single, batch, rows = inproc["single"], inproc["batch"], http["batch_rows"]
        out += [
            _target(
                "one declaration in process <= 50x a raw predict of one prepared row",
                single["p50_over_raw_predict"],
                "{:.0f}x",
                at_most=50,
            ),
            _target("HTTP single declaration p50 <= 10 ms", http["single_p50_ms"], "{:.1f} ms", at_most=10),
            _target("HTTP single declaration p99 <= 25 ms", http["single_p99_ms"], "{:.1f} ms", at_most=25),
            _target(
                "HTTP single declaration p50 <= 5x the same server's GET /healthz p50",
                http["single_p50_over_healthz_p50"],
                "{:.1f}x",
                at_most=5,
            ),
            _target(
                f"{batch['rows']:,} declarations, default reasons, <= 2x features + both predicts",
                batch["over_baseline"],
                "{:.1f}x",
                at_most=2,
            ),
            _target(">= 5,000 declarations/s in process", batch["declarations_per_second"], "{:,.0f}/s", at_least=5000),
            _target(
                f">= 3,000 declarations/s over HTTP in batches of {rows}",
                http["batch_per_second"],
                "{:,.0f}/s",
                at_least=3000,
            ),
            _target(
                f"HTTP throughput >= 3x `mlflow models serve` (batches of {rows})",
                http["batch_over_mlflow"],
                "{:.1f}x",
                at_least=3,
            ),
        ]
    if "serving" in results:
        r = results["serving"]["ratios"]
        out.append(_target("service p99 within 2x of minimal FastAPI", r["p99_over_minimal"], "{:.2f}x", at_most=2))
        out += [
            _target(
                f"throughput >= 3x mlflow models serve (batches of {batch})",
                r[f"batch_{batch}_throughput_over_mlflow"],
                "{:.1f}x",
                at_least=3,
            )
            for batch in (100, 1000)
        ]
    if "store" in results:
        out.append(
            _target(
                "2 replicas on one PostgreSQL >= 1.4x one (batches of 100)",
                results["store"]["two_over_one_postgresql"],
                "{:.2f}x",
                at_least=1.4,
            )
        )
    if "batch" in results:
        out.append(
            _target(
                f"batch scoring {results['batch']['rows']:,} rows within 1.5x of features + predict",
                results["batch"]["cli_over_baseline"],
                "{:.1f}x",
                at_most=1.5,
            )
        )
    return out
