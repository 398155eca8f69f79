"""Stage tune: LightGBM parameters searched on the validation window (params.yaml `tune`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.matrix import FEATURE_NAMES
from models.tuning import tune
from pipelines.common import load_params, write_json

MATRIX = Path("data/features/matrix.parquet")
TUNED = Path("data/model/tuned_params.json")
TRIALS = Path("data/model/tuning_trials.csv")


def main() -> None:
    params = load_params()
    windows, base, budget = params["windows"], params["train"], params["tune"]
    matrix = pd.read_parquet(MATRIX)
    dates = matrix["declaration_date"]
    is_train = (dates < windows["valid_start"]).to_numpy()
    is_valid = dates.between(windows["valid_start"], windows["valid_end"]).to_numpy()
    TUNED.parent.mkdir(parents=True, exist_ok=True)
    if budget["trials"] <= 0:
        write_json(TUNED, {"params": base, "trials": 0})
        pd.DataFrame().to_csv(TRIALS, index=False)
        print("tune: tune.trials is 0: training with params.yaml `train` as is")
        return
    best, table = tune(
        matrix[FEATURE_NAMES], matrix["fraud"].to_numpy(), is_train, is_valid, base, budget["trials"], budget["seed"]
    )
    write_json(TUNED, {"params": best, "trials": budget["trials"], "best_value": float(table["value"].max())})
    table.to_csv(TRIALS, index=False)
    print(f"tune: best of {budget['trials']} trials: {best}")


if __name__ == "__main__":
    main()
