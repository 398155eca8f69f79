"""`make bench`: how fast and how big, each figure beside what a user would pick instead.

Every figure is the median of several runs, and each baseline is measured in the same run as
what it is compared with, interleaved, so the ratio holds on a noisy shared machine. Writes
bench/results.json and prints a markdown table.

    python -m bench.run [--quick] [--only pipeline,serving,batch]

`make scale` measures the pipeline's stages on synthetic histories (bench/scale.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import psutil

from bench.load import Target, as_sent, latency, throughput
from features.schema import DECLARATION_FIELDS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PYTHON = sys.executable
STAGES = ["ingest", "validate", "featurize", "train", "evaluate", "register", "package"]
SECTIONS = ["pipeline", "serving", "batch"]
RAW_FILES = ["df_syn_train_eng.csv", "df_syn_valid_eng.csv"]


@dataclass(frozen=True)
class Plan:
    mode: str
    kcs_rows: tuple[int, int] | None  # rows sampled per raw file; None: the whole KCS history
    pipeline_runs: int
    serving_runs: int
    serving_seconds: float
    load_share: float  # latency is measured at this share of the slowest server's capacity
    concurrency: int  # batch requests in flight, for throughput
    batch_rows: int
    batch_runs: int
    breakdown_rows: int


QUICK = Plan("quick", (3000, 1000), 1, 1, 5, 0.5, 1, 2_000, 1, 200)
FULL = Plan("full", None, 3, 3, 10, 0.5, 1, 10_000, 1, 2_000)
# A child above this is stopped: the machine has 24 GiB and is shared.
RSS_LIMIT_BYTES = 18 * 2**30


@dataclass
class Child:
    seconds: float
    peak_rss_bytes: int
    stdout: str


class MemoryLimitExceeded(RuntimeError):
    pass


def _watch_memory(process: subprocess.Popen, stop: threading.Event, tripped: list[bool]) -> None:
    """Kill the child's process group before it takes the machine down with it."""
    while not stop.wait(0.2):
        try:
            parent = psutil.Process(process.pid)
            rss = sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
        except psutil.Error:
            continue
        if rss > RSS_LIMIT_BYTES:
            tripped.append(True)
            os.killpg(process.pid, signal.SIGKILL)
            return


def run_child(command: list[str], cwd: Path, env: dict) -> Child:
    """Run to completion; wall time and the child's own peak RSS (os.wait4: the largest of the
    child and the descendants it waited for)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True)
        stop, tripped = threading.Event(), []
        watchdog = threading.Thread(target=_watch_memory, args=(process, stop, tripped), daemon=True)
        watchdog.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        stop.set()
        watchdog.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if tripped:
        raise MemoryLimitExceeded(f"stopped above {RSS_LIMIT_BYTES / 2**30:.0f} GiB RSS after {seconds:.0f} s")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return Child(seconds, usage.ru_maxrss * 1024, stdout)


def worker(task: list[str], cwd: Path, env: dict) -> tuple[dict, Child]:
    child = run_child([PYTHON, "-m", "bench.workers", *task], cwd, {**env, "PYTHONPATH": str(REPO)})
    return json.loads(child.stdout.strip().splitlines()[-1]), child


def median(values) -> float:
    return float(statistics.median(values))


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("inf")


# --- the workspace: a copy of the project with its own MLflow store and BentoML home ----------


@dataclass
class Workspace:
    root: Path
    env: dict = field(default_factory=dict)


def make_workspace(root: Path, plan: Plan) -> Workspace:
    for name in ("features", "models", "serving", "pipelines"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    for name, rows in zip(RAW_FILES, plan.kcs_rows or (None, None)):
        frame = pd.read_csv(REPO / "data/raw" / name, dtype=str, keep_default_na=False)
        if rows is not None:
            frame = frame.sample(n=rows, random_state=11).sort_values("Date", kind="stable")
        frame.to_csv(raw / name, index=False)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "BENTOML_HOME": str(root / ".bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "RISK_AUDIT_DB": str(root / "data/serving/audit.db"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("RISK_API_KEYS", None)
    workspace = Workspace(root, env)
    run_child([str(BIN / "dvc"), "init", "--no-scm", "-q"], root, env)
    return workspace


# --- 1. the pipeline, stage by stage, against a bare LightGBM fit -----------------------------


def bench_pipeline(ws: Workspace, plan: Plan) -> dict:
    runs = []
    for run in range(plan.pipeline_runs):
        stages = {}
        for stage in STAGES:
            child = run_child([str(BIN / "dvc"), "repro", "--force", "--single-item", stage], ws.root, ws.env)
            stages[stage] = {"seconds": child.seconds, "peak_rss_bytes": child.peak_rss_bytes}
        bare, _ = worker(["bare-fit", "--workspace", str(ws.root)], ws.root, ws.env)
        runs.append({"stages": stages, "total_seconds": sum(s["seconds"] for s in stages.values()), "bare_fit": bare})
        print(f"  pipeline run {run + 1}: {runs[-1]['total_seconds']:.1f}s, bare fit {bare['seconds']:.1f}s", flush=True)
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    target: Target
    ready_url: str
    process: subprocess.Popen
    log: Path


def _start(name: str, command: list[str], ws: Workspace, env: dict, score_path: str, ready_path: str, body, count) -> Server:
    log = ws.root / f"{name.split()[0]}.log"
    process = subprocess.Popen(
        command, cwd=ws.root, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    port = command[command.index("--port") + 1]
    base = f"http://127.0.0.1:{port}"
    return Server(Target(name, base + score_path, body, count), base + ready_path, process, log)


def packaged_bento(bentoml_home: Path) -> str | None:
    """The tag of the latest packaged scoring service in a BentoML store, if `make run` built one."""
    latest = bentoml_home / "bentos" / "customs-risk-service" / "latest"
    return f"customs-risk-service:{latest.read_text().strip()}" if latest.is_file() else None


def _wait_ready(server: Server, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.target.name} exited:\n{server.log.read_text()[-3000:]}")
        try:
            if httpx.get(server.ready_url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{server.target.name} not ready in {timeout}s:\n{server.log.read_text()[-3000:]}")


def _customs_risk(bento: str, ws: Workspace, env: dict) -> Server:
    """`bentoml serve` of our scoring service on a free loopback port."""
    return _start(
        "customs-risk (BentoML)",
        [str(BIN / "bentoml"), "serve", bento, "--host", "127.0.0.1", "--port", str(_free_port())],
        ws, env, "/score", "/readyz",
        lambda d: {"declarations": d}, lambda b: len(b["results"]),
    )


def serve_packaged(bentoml_home: Path, bento: str, folder: Path, api_key: str | None = None) -> Server:
    """A packaged bento as `make run` left it, for `make soak` and `make fuzz`: the bento's own
    code (no PYTHONPATH), a fresh audit store in `folder` (never the repository's), loopback,
    and a key only when one is given."""
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home), "BENTOML_DO_NOT_TRACK": "true",
           "OMP_WAIT_POLICY": "PASSIVE", "RISK_AUDIT_DB": str(folder / "audit.db"), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("RISK_API_KEYS", None)
    if api_key:
        env["RISK_API_KEYS"] = api_key
    return _customs_risk(bento, Workspace(folder, env), env)


def start_servers(ws: Workspace) -> list[Server]:
    def port() -> str:
        return str(_free_port())

    return [
        _customs_risk("customs-risk-service:latest", ws, ws.env),
        _start(
            "minimal FastAPI + uvicorn",
            [PYTHON, "-m", "uvicorn", "bench.minimal_api:app", "--host", "127.0.0.1", "--port", port(), "--log-level", "warning"],
            ws, {**ws.env, "PYTHONPATH": f"{ws.root}{os.pathsep}{REPO}", "RISK_BUNDLE": str(ws.root / "data/model/bundle")},
            "/score", "/healthz",
            lambda d: {"declarations": d}, lambda b: len(b["results"]),
        ),
        _start(
            "mlflow models serve",
            [str(BIN / "mlflow"), "models", "serve", "-m", "models:/customs-risk@champion", "--env-manager", "local",
             "--host", "127.0.0.1", "--port", port()],
            ws, ws.env, "/invocations", "/ping",
            lambda d: {"dataframe_records": d}, lambda b: len(b["predictions"]),
        ),
    ]


def stop_servers(servers: list[Server]) -> None:
    for server in servers:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGTERM)
    for server in servers:
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)


def declaration_pool(ws: Workspace, rows: int) -> list[dict]:
    """Validation-window declarations as a client sends them (JSON values, ISO dates)."""
    history = pd.read_parquet(ws.root / "data/validated/declarations.parquet", columns=DECLARATION_FIELDS)
    return as_sent(history.sort_values("declaration_date").tail(rows))


def bench_serving(ws: Workspace, plan: Plan) -> dict:
    pool = declaration_pool(ws, 5_000)
    servers = start_servers(ws)
    try:
        capacity = {}
        for server in servers:
            _wait_ready(server)
            # one request at a time: the rate each server sustains, and a warm-up
            capacity[server.target.name] = throughput(server.target, pool, 1, 1, 5)["declarations_per_second"]
        rate = plan.load_share * min(capacity.values())
        print(f"  single-declaration capacity (req/s): {capacity}; latency measured at {rate:.1f} req/s", flush=True)
        runs = {server.target.name: [] for server in servers}
        for run in range(plan.serving_runs):
            for server in servers:  # interleaved: each run measures all three under the same noise
                measured = {"latency": latency(server.target, pool, rate, plan.serving_seconds)}
                for batch in (100, 1000):
                    measured[f"batch_{batch}"] = throughput(server.target, pool, batch, plan.concurrency, plan.serving_seconds)
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
            **{f"batch_{b}_per_second": median(m[f"batch_{b}"]["declarations_per_second"] for m in measured) for b in (100, 1000)},
            "failed_requests": sum(m["latency"]["errors"] + m["batch_100"]["errors"] + m["batch_1000"]["errors"] for m in measured),
            "first_error": next((e for m in measured for e in (m["latency"]["first_error"], m["batch_100"]["first_error"],
                                                                 m["batch_1000"]["first_error"]) if e), None),
        }
    ours, minimal, mlflow_serve = (runs[s.target.name] for s in servers)
    ratios = {
        "p99_over_minimal": median(ratio(o["latency"]["p99_ms"], m["latency"]["p99_ms"]) for o, m in zip(ours, minimal)),
        "p50_over_minimal": median(ratio(o["latency"]["p50_ms"], m["latency"]["p50_ms"]) for o, m in zip(ours, minimal)),
    }
    for batch in (100, 1000):
        key = f"batch_{batch}"
        ratios[f"{key}_throughput_over_mlflow"] = median(
            ratio(o[key]["declarations_per_second"], f[key]["declarations_per_second"]) for o, f in zip(ours, mlflow_serve)
        )
        ratios[f"{key}_throughput_over_minimal"] = median(
            ratio(o[key]["declarations_per_second"], m[key]["declarations_per_second"]) for o, m in zip(ours, minimal)
        )
    return {"request_rate": rate, "seconds": plan.serving_seconds, "concurrency": plan.concurrency,
            "servers": summary, "ratios": ratios, "runs": runs}


# --- 3. batch scoring: `customs-risk score` against features + booster.predict ---------------


def batch_input(ws: Workspace, rows: int, path: Path) -> None:
    """KCS declarations resampled to `rows` with fresh IDs: real entities, so lookups hit."""
    history = pd.read_parquet(ws.root / "data/validated/declarations.parquet", columns=DECLARATION_FIELDS)
    sample = history.sample(n=rows, replace=True, random_state=3).reset_index(drop=True)
    sample["declaration_id"] = [f"B{i:09d}" for i in range(rows)]
    sample.to_parquet(path, index=False)


def bench_batch(ws: Workspace, plan: Plan, tmp: Path) -> dict:
    source, scored = tmp / "batch.parquet", tmp / "scored.parquet"
    batch_input(ws, plan.batch_rows, source)
    runs = []
    for run in range(plan.batch_runs):
        ours = run_child([PYTHON, "-m", "serving.cli", "score", "--input", str(source), "--output", str(scored)], ws.root, ws.env)
        assert len(pd.read_parquet(scored, columns=["declaration_id"])) == plan.batch_rows
        baseline, _ = worker(
            ["batch-baseline", "--bundle", str(ws.root / "data/model/bundle"), "--input", str(source),
             "--breakdown-rows", str(plan.breakdown_rows)],
            ws.root, ws.env,
        )
        runs.append({"cli_seconds": ours.seconds, "cli_peak_rss_bytes": ours.peak_rss_bytes, "baseline": baseline})
        print(f"  batch run {run + 1}: customs-risk score {ours.seconds:.1f}s, features + predict {baseline['seconds']:.1f}s", flush=True)
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


# --- the machine and the report ----------------------------------------------------------------


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")))
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
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }


def _gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB"


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def markdown(results: dict) -> str:
    lines = []
    m = results["machine"]
    lines.append(
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB RAM, {m['os']}, Python {m['python']}, "
        f"LightGBM {m['versions']['lightgbm']}, pandas {m['versions']['pandas']}; load average at start "
        f"{m['load_average_at_start'][0]:.1f} (shared machine); `{results['mode']}` mode, medians of {results['runs']}."
    )
    if "pipeline" in results:
        p = results["pipeline"]
        lines += ["", f"**1. Pipeline** (`dvc repro --force --single-item STAGE`, {p['rows']:,} rows of KCS history)", "",
                  "| stage | seconds | peak RSS |", "| --- | ---: | ---: |"]
        lines += [f"| {s} | {p['stage_seconds'][s]:.1f} | {_gib(p['stage_peak_rss_bytes'][s])} |" for s in STAGES]
        lines += [
            f"| **total** | **{p['total_seconds']:.1f}** | |",
            f"| bare LightGBM fit, same matrix, {p['bare_fit_rounds']} rounds (lower bound) | {p['bare_fit_seconds']:.1f} | |",
            "", f"train stage / bare fit: {p['train_over_bare_fit']:.1f}x; whole pipeline / bare fit: {p['total_over_bare_fit']:.1f}x",
        ]
    if "serving" in results:
        v = results["serving"]
        lines += ["", f"**2. Serving over HTTP** (latency: 1 declaration a request, open loop at {v['request_rate']:.1f} req/s, "
                  f"half the slowest server's sequential rate; throughput: {v['concurrency']} batch requests in flight; "
                  f"{v['seconds']:.0f} s each)", "",
                  "| server | sequential req/s | p50 ms | p95 ms | p99 ms | decl/s, batches of 100 | decl/s, batches of 1000 | failed requests |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, x in v["servers"].items():
            lines.append(f"| {name} | {x['sequential_requests_per_second']:.1f} | {x['p50_ms']:.1f} | {x['p95_ms']:.1f} | {x['p99_ms']:.1f} | "
                         f"{x['batch_100_per_second']:.0f} | {x['batch_1000_per_second']:.0f} | {x['failed_requests']} |")
        lines += [f"- {name}: first failure: `{x['first_error']}`" for name, x in v["servers"].items() if x["first_error"]]
        r = v["ratios"]
        lines += ["", f"ours / minimal FastAPI: p99 {r['p99_over_minimal']:.2f}x, p50 {r['p50_over_minimal']:.2f}x; "
                  f"throughput ours / mlflow models serve: {r['batch_100_throughput_over_mlflow']:.1f}x (100), "
                  f"{r['batch_1000_throughput_over_mlflow']:.1f}x (1000)"]
    if "batch" in results:
        b = results["batch"]
        lines += ["", f"**3. Batch scoring** ({b['rows']:,} declarations)", "", "| what | seconds |", "| --- | ---: |",
                  f"| `customs-risk score` (whole command, Parquet in and out) | {b['cli_seconds']:.1f} |",
                  f"| baseline: `serving_features` + both boosters' `predict` | {b['baseline_seconds']:.1f} |",
                  f"| ratio | {b['cli_over_baseline']:.1f}x |",
                  f"| `customs-risk score` on 1,000,000 declarations at this rate (extrapolated) | "
                  f"{b['cli_seconds'] / b['rows'] * 1e6:,.0f} |",
                  "", f"Where a scoring call spends its time ({b['breakdown_rows']:,} declarations, step by step):", "",
                  "| step | seconds | µs per declaration |", "| --- | ---: | ---: |"]
        for step, seconds in b["breakdown_seconds"].items():
            lines.append(f"| {step} | {seconds:.2f} | {seconds / b['breakdown_rows'] * 1e6:.0f} |")
        single = b["single"]
        lines += ["", f"The same steps for one declaration a call ({single['calls']} calls), as the service sees it:", "",
                  "| step | ms per call |", "| --- | ---: |"]
        lines += [f"| {step} | {seconds / single['calls'] * 1e3:.2f} |" for step, seconds in single["seconds"].items()]
    if results.get("targets"):
        lines += ["", "**Targets**", "", "| target | measured | |", "| --- | --- | --- |"]
        lines += [f"| {t['target']} | {t['measured']} | {_verdict(t['met'])} |" for t in results["targets"]]
    return "\n".join(lines)


def targets(results: dict) -> list[dict]:
    out = []
    if "serving" in results:
        r = results["serving"]["ratios"]
        out.append({"target": "service p99 within 2x of minimal FastAPI", "measured": f"{r['p99_over_minimal']:.2f}x", "met": r["p99_over_minimal"] <= 2})
        for batch in (100, 1000):
            ratio = r[f"batch_{batch}_throughput_over_mlflow"]
            out.append({"target": f"throughput >= 3x mlflow models serve (batches of {batch})", "measured": f"{ratio:.1f}x", "met": ratio >= 3})
    if "batch" in results:
        ratio = results["batch"]["cli_over_baseline"]
        out.append({"target": f"batch scoring {results['batch']['rows']:,} rows within 1.5x of features + predict",
                    "measured": f"{ratio:.1f}x", "met": ratio <= 1.5})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each: a few minutes")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    sections = [s for s in SECTIONS if s in args.only.split(",")]
    results: dict = {"mode": plan.mode, "plan": asdict(plan), "machine": machine(),
                     "runs": f"{plan.pipeline_runs} (pipeline), {plan.serving_runs} (serving), "
                             f"{plan.batch_runs} (batch)"}
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
        if {"pipeline", "serving", "batch"} & set(sections):
            print(f"workspace {tmp / 'workspace'}", flush=True)
            ws = make_workspace(tmp / "workspace", plan)
            if "pipeline" in sections:
                save("pipeline", bench_pipeline(ws, plan))
            else:
                run_child([str(BIN / "dvc"), "repro"], ws.root, ws.env)
            if "serving" in sections:
                save("serving", bench_serving(ws, plan))
        if "batch" in sections:  # last: the slowest, one scoring of 1M rows takes many minutes
            save("batch", bench_batch(ws, plan, tmp))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(markdown(results))
    print(f"\n{plan.mode} bench: {results['seconds'] / 60:.1f} min -> {args.output}")


if __name__ == "__main__":
    main()
