"""What `make bench` measures: its sections, the pipeline's stages, and the sizes and number of
runs in quick and full mode."""

from __future__ import annotations

from dataclasses import dataclass

STAGES = ["ingest", "validate", "featurize", "tune", "train", "evaluate", "register", "package"]  # dvc.yaml order
SECTIONS = ["scoring", "pipeline", "serving", "store", "batch"]


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
    scoring_runs: int  # issue 14 on make run's champion: runs of the HTTP measurements
    scoring_seconds: float  # each HTTP measurement
    single_calls: int  # one-declaration calls in process


QUICK = Plan("quick", (3000, 1000), 1, 1, 5, 0.5, 1, 2_000, 1, 200, 1, 5, 200)
FULL = Plan("full", None, 3, 3, 10, 0.5, 1, 10_000, 1, 2_000, 3, 15, 1_000)
# Issue 14's sizes: a batch in process, a batch over HTTP, and the open-loop rate of single
# declarations and health probes (far below capacity, so latency is a request's own).
SCORING_BATCH_ROWS = 1_000
HTTP_BATCH_ROWS = 500
SINGLE_RATE = 20.0
