"""Stage featurize: point-in-time features for every history row, and the state serving reuses."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from features.matrix import training_features
from pipelines.common import load_params

INPUT = Path("data/validated/declarations.parquet")
MATRIX = Path("data/features/matrix.parquet")
STATE = Path("data/features/state")
CARRIED = ["declaration_id", "declaration_date", "fraud", "critical_fraud"]


def main() -> None:
    params = load_params()
    windows = params["windows"]
    history = pd.read_parquet(INPUT)
    in_window = history["declaration_date"].between(windows["train_start"], windows["valid_end"])
    history = history[in_window].sort_values(["declaration_date", "declaration_id"], kind="stable")
    history = history.reset_index(drop=True)
    started = time.perf_counter()
    matrix, state = training_features(history, params["features"]["smoothing"])
    matrix[CARRIED] = history[CARRIED]
    MATRIX.parent.mkdir(parents=True, exist_ok=True)
    matrix.to_parquet(MATRIX, index=False)
    state.save(STATE)
    print(
        f"featurize: {len(matrix):,} rows x {matrix.shape[1] - len(CARRIED)} features "
        f"in {time.perf_counter() - started:.1f}s -> {MATRIX}, state -> {STATE}"
    )


if __name__ == "__main__":
    main()
