"""How close the served reasons (path attribution, models.contributions) stay to TreeSHAP's
(LightGBM's `pred_contrib`) on the validation window's red and yellow declarations, the ones
that carry reasons by default (issue 14).

    python -m bench.agreement [--bundle data/model/bundle] [--max-reasons 3]

The reasons are the features with the largest positive contributions, at most `max_reasons`
(models.bundle.reasons_for); both methods' reasons are taken that way from the same rows of the
feature matrix (point-in-time features, as evaluate's plots use them). Prints one JSON object:
the share of declarations whose first reason is the same feature, the mean overlap of the reason
sets (shared features over the larger set's size; 1 when both are empty), and the same for the
plain top contribution whatever its sign."""

from __future__ import annotations

# models first: it sets OMP_WAIT_POLICY before LightGBM loads OpenMP
import models  # noqa: F401

# isort: split
import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.matrix import FEATURE_NAMES
from models.bundle import RiskModel

REPO = Path(__file__).resolve().parents[1]


def reason_sets(contributions: np.ndarray, max_reasons: int) -> list[list[int]]:
    """Each row's reasons as the service picks them: largest first, positive only."""
    top = np.argsort(-contributions, axis=1, kind="stable")[:, :max_reasons]
    return [[j for j in row if contributions[i, j] > 0] for i, row in enumerate(top.tolist())]


def agreement(path: np.ndarray, shap: np.ndarray, max_reasons: int) -> dict:
    ours, theirs = reason_sets(path, max_reasons), reason_sets(shap, max_reasons)
    same_first = [(bool(a) and bool(b) and a[0] == b[0]) or (not a and not b) for a, b in zip(ours, theirs)]
    overlap = [len(set(a) & set(b)) / max(len(a), len(b)) if (a or b) else 1.0 for a, b in zip(ours, theirs)]
    return {
        "declarations": len(ours),
        "same_first_reason": float(np.mean(same_first)),
        "mean_reason_overlap": float(np.mean(overlap)),
        "same_top_contribution": float(np.mean(path.argmax(axis=1) == shap.argmax(axis=1))),
        "without_reasons": {"path": sum(not a for a in ours), "treeshap": sum(not b for b in theirs)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "data/model/bundle")
    parser.add_argument("--max-reasons", type=int, default=3)
    args = parser.parse_args()
    model = RiskModel.load(args.bundle)
    scores = pd.read_parquet(REPO / "data/model/validation_scores.parquet", columns=["declaration_id", "lane"])
    carried = scores[scores["lane"] != "green"]
    matrix = pd.read_parquet(REPO / "data/features/matrix.parquet", columns=["declaration_id", *FEATURE_NAMES])
    x = matrix.set_index("declaration_id").loc[carried["declaration_id"], FEATURE_NAMES].to_numpy(dtype=np.float64)
    started = time.perf_counter()
    path = model.contributions(x)
    path_seconds = time.perf_counter() - started
    started = time.perf_counter()
    shap = model.fraud_booster.predict(x, pred_contrib=True)
    shap_seconds = time.perf_counter() - started
    raw = model.fraud_booster.predict(x, raw_score=True)
    result = {
        "lanes": carried["lane"].value_counts().to_dict(),
        **agreement(path[:, :-1], shap[:, :-1], args.max_reasons),
        "by_lane": {
            lane: agreement(path[at, :-1], shap[at, :-1], args.max_reasons)
            for lane in ("red", "yellow")
            if len(at := np.flatnonzero(carried["lane"].to_numpy() == lane))
        },
        "max_reasons": args.max_reasons,
        "path_sum_error": float(np.abs(path.sum(axis=1) - raw).max()),
        "treeshap_sum_error": float(np.abs(shap.sum(axis=1) - raw).max()),
        "path_seconds": path_seconds,
        "treeshap_seconds": shap_seconds,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
