"""`make scale ROWS=N`: the real validate, featurize, tune and train stages on N synthetic
labelled declarations, each stage timed and its peak memory measured.

The stages run as they do under DVC (`python -m pipelines.<stage>` in a workspace holding
params.yaml and data/), so what is measured is the code a data scientist runs, not a re-creation
of it. The workspace is scratch: the repository's data, MLflow store and metrics are never
touched. Each stage is its own child process, so its peak RSS (from wait4) is its own; with
DASK_SCHEDULER_ADDRESS set the cluster's workers do part of the work and their memory is not in
that figure (and they need to see the workspace: put it on a shared filesystem with SCALE_DIR).

Prints one JSON line per step on stdout, then one with the validation window's targeting
metrics; progress and failures go to stderr.

    python -m bench.scale --rows 1000000 [--seed 7] [--rounds 50] [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml

from pipelines import paths

REPO = Path(__file__).resolve().parents[1]
# Each stage and the data it reads, whose row count its line reports.
STAGES = {
    "validate": paths.INTERIM,
    "featurize": paths.VALIDATED,
    "tune": paths.MATRIX,
    "train": paths.MATRIX,
}
CODE = ("features", "models", "pipelines", "serving")  # the packages pyproject.toml installs
VALIDATION_MONTHS = 3
EARLY_STOPPING_ROUNDS = 10
LOG_TAIL_LINES = 60


class StageFailed(RuntimeError):
    pass


def run_measured(step: str, command: list[str], workspace: Path, env: dict) -> tuple[float, int]:
    """Seconds and peak RSS bytes of one child process, its output to logs/<step>.log.
    os.wait4 on exactly that child gives its own peak (and that of any process it waited for),
    not this process's nor an earlier stage's."""
    log = workspace / "logs" / f"{step}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=workspace, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
        raise StageFailed(
            f"{step} failed (exit {process.returncode}) after {seconds:.1f} s; last lines of {log}:\n{tail}"
        )
    return seconds, usage.ru_maxrss * 1024


def history_span(parts: Path) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last declaration day: the synthesizer writes parts in date order (ISO dates, as
    the ingest stage writes them), so the first and the last part hold them."""
    files = sorted(parts.glob("part-*.parquet"))
    days = [pc.min_max(pq.read_table(part, columns=["declaration_date"]).column(0)) for part in (files[0], files[-1])]
    return pd.Timestamp(days[0]["min"].as_py()), pd.Timestamp(days[1]["max"].as_py())


def workspace_params(params: dict, first: pd.Timestamp, last: pd.Timestamp, rounds: int) -> dict:
    """The repository's params with the windows on the synthetic dates (the last three months
    validate) and the time each stage takes bounded: no tuning trials, `rounds` boosting rounds."""
    params = copy.deepcopy(params)
    valid_start = last - pd.DateOffset(months=VALIDATION_MONTHS) + pd.Timedelta(days=1)
    params["windows"].update(
        train_start=f"{first:%Y-%m-%d}", valid_start=f"{valid_start:%Y-%m-%d}", valid_end=f"{last:%Y-%m-%d}"
    )
    params["validate"].update(history_start=f"{first:%Y-%m-%d}", run_date=f"{last:%Y-%m-%d}")
    params["tune"]["trials"] = 0
    params["train"].update(max_rounds=rounds, early_stopping_rounds=EARLY_STOPPING_ROUNDS)
    return params


def stage_env(workspace: Path) -> dict:
    """The environment of `make run`, pointed at the workspace; DASK_SCHEDULER_ADDRESS passes."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "MLFLOW_TRACKING_URI": f"sqlite:///{workspace / 'mlflow.db'}",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def validation_metrics(workspace: Path, rates: list[float]) -> dict:
    """The evaluate stage's targeting metrics and lane table on the train stage's validation
    scores, and which duty estimate the lanes' value picks used."""
    from models.metrics import lane_metrics, targeting_metrics

    scores = pd.read_parquet(workspace / paths.VALIDATION_SCORES)
    fraud, critical, duty = (scores[c].to_numpy() for c in ("fraud", "critical_fraud", "duty_exposure"))
    metrics = targeting_metrics(
        fraud, critical, duty, scores["risk_score"].to_numpy(), scores["critical_score"].to_numpy(), rates
    )
    metrics.update(lane_metrics(scores["lane"].to_numpy(), fraud, critical, duty))
    rows = int(metrics.pop("validation_rows"))
    info = json.loads((workspace / paths.BUNDLE / "model.json").read_text())["info"]
    return {"metrics": metrics, "validation_rows": rows, "duty_estimate": info["duty_estimate"]}


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


def link_code(workspace: Path) -> None:
    """The workspace is laid out like the repository root: the train stage logs its model with
    code paths relative to it (features/, models/)."""
    for package in CODE:
        (workspace / package).symlink_to(REPO / package, target_is_directory=True)


def scale(rows: int, seed: int, rounds: int, workspace: Path) -> None:
    link_code(workspace)
    env = stage_env(workspace)
    python = sys.executable
    interim = workspace / paths.INTERIM
    seconds, peak = run_measured(
        "synthesize",
        [
            python,
            "-m",
            "bench.synthesize",
            "--rows",
            str(rows),
            "--seed",
            str(seed),
            "--output",
            str(interim),
            "--ingested-as",
            f"synthetic, seed {seed}",
        ],
        workspace,
        env,
    )
    emit({"stage": "synthesize", "rows": rows, "seconds": round(seconds, 2), "peak_rss_bytes": peak})

    params = workspace_params(yaml.safe_load((REPO / "params.yaml").read_text()), *history_span(interim), rounds)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage, source in STAGES.items():
        read = ds.dataset(workspace / source, format="parquet").count_rows()
        seconds, peak = run_measured(stage, [python, "-m", f"pipelines.{stage}"], workspace, env)
        emit({"stage": stage, "rows": read, "seconds": round(seconds, 2), "peak_rss_bytes": peak})
    emit(validation_metrics(workspace, params["evaluate"]["inspection_rates"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic declarations")
    parser.add_argument("--seed", type=int, default=7, help="the synthesizer's seed")
    parser.add_argument("--rounds", type=int, default=50, help="train.max_rounds (early stopping after 10 more)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the scratch workspace goes (default: the temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the workspace (logs, data, MLflow store)")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.rounds < 1:
        parser.error("--rows and --rounds must be at least 1")
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix="customs-risk-scale-", dir=args.dir)).resolve()
    print(f"scale: {args.rows:,} rows in workspace {workspace}", file=sys.stderr, flush=True)
    try:
        scale(args.rows, args.seed, args.rounds, workspace)
    except StageFailed as failed:
        hint = f"workspace kept: {workspace}" if args.keep else "KEEP=1 (--keep) keeps the workspace"
        sys.exit(f"scale: {failed}\nscale: stopped; {hint}")
    finally:
        if not args.keep:
            shutil.rmtree(workspace, ignore_errors=True)


if __name__ == "__main__":
    main()
