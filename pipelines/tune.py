"""Stage tune: LightGBM parameters searched on the validation window (params.yaml `tune`).

Each trial trains on at most `tune.max_train_rows` of the most recent training rows: a national
history would make every trial a full training; the model card states the sample.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.training import FeatureMatrix, most_recent, window_masks
from models.tuning import CRITICAL, FRAUD, tune
from pipelines.common import load_params, staged_output, write_json
from pipelines.paths import MATRIX, TRIALS, TUNED


def main() -> None:
    params = load_params()
    windows, base, budget = params["windows"], params["train"], params["tune"]
    matrix = FeatureMatrix(MATRIX)
    is_train, is_valid = window_masks(matrix.column("declaration_date"), windows)
    sample = most_recent(is_train, budget["max_train_rows"])
    if budget["trials"] <= 0:
        outcome, table = {"params": base, "critical_params": base, "trials": 0}, pd.DataFrame()
        print("tune: tune.trials is 0: training with params.yaml `train` as is")
    else:
        print(
            f"tune: {budget['trials']} trials on the {sample.sum():,} most recent of {is_train.sum():,} training rows"
        )
        x = matrix.rows_between(0, matrix.rows)
        outcome, tables = {"trials": budget["trials"]}, []
        # each target its own search: the critical model ranks a rarer, different thing
        for key, objective in (("params", FRAUD), ("critical_params", CRITICAL)):
            y = matrix.column(objective.label).astype("float64")
            inspected = ~np.isnan(y)  # only what was inspected is learned from and judged on
            best, table = tune(
                x, y, sample & inspected, is_valid & inspected, base, budget["trials"], budget["seed"], objective
            )
            outcome[key] = best
            outcome[f"{key.removesuffix('params')}best_value"] = float(table["value"].max())
            tables.append(table.assign(target=objective.label))
            print(f"tune: {objective.label}: best of {budget['trials']} trials: {best}")
        table = pd.concat(tables, ignore_index=True)
    outcome.update(train_rows_sampled=int(sample.sum()), train_rows=int(is_train.sum()))
    with staged_output(TRIALS) as trials:
        table.to_csv(trials, index=False)
    write_json(TUNED, outcome)


if __name__ == "__main__":
    main()
