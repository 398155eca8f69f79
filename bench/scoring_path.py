"""The in-process scoring path, before and after issue 14, side by side in one process.

"Before" is the path as it was (models/bundle.py and FeatureState.counts_for at ed7127f): entity
counts by reindexing pandas frames per request, TreeSHAP contributions for every row, the risk
from their sum, and reasons assembled row by row from pandas rows. It is kept here, verbatim in
logic, as the reference the new path is measured and checked against.

    .venv/bin/python -m bench.scoring_path --bundle data/model/bundle \
        --input data/validated/declarations.parquet [--rows 1000] [--repeat 5]

Prints a table and, on its last line, one JSON object. Validation (`validated_declarations`)
is timed apart, as it is the same in both paths.
"""

from __future__ import annotations

# models first: it sets OMP_WAIT_POLICY, which OpenMP reads once, when LightGBM loads it
import models  # noqa: F401

# isort: split
import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.history import ENTITIES, FeatureState, entity_keys, with_derived_fields
from features.matrix import FEATURE_NAMES, FEATURES_BY_NAME, feature_matrix, model_input, serving_inputs
from features.schema import DECLARATION_FIELDS
from models.bundle import RiskModel, _json_value, score_declarations, validated_declarations


def legacy_counts_for(state: FeatureState, records: pd.DataFrame) -> pd.DataFrame:
    columns = {}
    for entity in ENTITIES:
        found = state.totals[entity.name].reindex(entity_keys(records, entity).to_numpy())
        for column in found.columns:
            values = found[column].to_numpy(dtype="float64")
            if column in ("declarations", "fraud_count", "critical_count"):
                values = np.nan_to_num(values, nan=0.0)
            columns[f"{entity.name}__{column}"] = values
    return pd.DataFrame(columns, index=records.index)


def legacy_serving_features(records: pd.DataFrame, state: FeatureState) -> tuple[pd.DataFrame, pd.DataFrame]:
    records = with_derived_fields(records)
    counts = legacy_counts_for(state, records)
    return feature_matrix(records, counts, state), counts


def legacy_reasons(records, x, counts, contributions, max_reasons) -> list[list[dict]]:
    derived = with_derived_fields(records)
    top = np.argsort(-contributions, axis=1, kind="stable")[:, :max_reasons]
    reasons = []
    for row in range(len(records)):
        picked = [j for j in top[row] if contributions[row, j] > 0]
        if not picked:
            reasons.append([])
            continue
        context = {
            **{name: x.iat[row, j] for j, name in enumerate(FEATURE_NAMES)},
            **counts.iloc[row].to_dict(),
            **derived.iloc[row].to_dict(),
        }
        reasons.append(
            [
                {
                    "feature": FEATURE_NAMES[j],
                    "value": _json_value(x.iat[row, j]),
                    "contribution": float(contributions[row, j]),
                    "text": FEATURES_BY_NAME[FEATURE_NAMES[j]].reason(context),
                }
                for j in picked
            ]
        )
    return reasons


def legacy_score(model: RiskModel, records: pd.DataFrame, max_reasons: int = 3) -> pd.DataFrame:
    """RiskModel.score as it was: every row's contributions, the risk from their sum."""
    x, counts = legacy_serving_features(records, model.state)
    contributions = model.fraud_booster.predict(x, pred_contrib=True)
    risk = model.fraud_calibration(contributions.sum(axis=1))
    critical = model.critical_calibration(model.critical_booster.predict(x, raw_score=True))
    ids = records["declaration_id"].astype(str).tolist()
    lane, selected_by = model.lanes.assign(risk, ids, critical)
    reasons = legacy_reasons(records, x, counts, contributions[:, :-1], max_reasons)
    return pd.DataFrame(
        {"declaration_id": ids, "risk_score": risk, "critical_score": critical, "lane": lane,
         "selected_by": selected_by, "reasons": reasons}
    )


def legacy_score_declarations(model: RiskModel, records: pd.DataFrame, max_reasons: int = 3) -> pd.DataFrame:
    return legacy_score(model, validated_declarations(records), max_reasons)


def _best(call, repeat: int) -> float:
    """Best of `repeat` runs, in seconds: the machine's other load only ever adds time."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def measure(model: RiskModel, sent: pd.DataFrame, rows: int, repeat: int, max_reasons: int = 3) -> dict:
    """Seconds (best of `repeat`) of each way of scoring, one declaration and `rows` of them."""
    one, batch = sent.head(1), sent.head(rows)
    typed_one, typed = validated_declarations(one), validated_declarations(batch)
    prepared_one = np.ascontiguousarray(serving_inputs(typed_one, model.state).matrix)
    matrix = serving_inputs(typed, model.state).matrix
    x_one, _ = legacy_serving_features(typed_one, model.state)
    x, _ = legacy_serving_features(typed, model.state)
    fraud, critical = model.fraud_booster, model.critical_booster
    single, many = max(repeat * 20, 50), repeat
    out = {
        "rows": len(batch),
        "one_lane": str(model.score(typed_one, max_reasons)["lane"].iloc[0]),
        "batch_rows_with_reasons": int((model.score(typed, max_reasons, "none")["lane"] != "green").sum()),
        "one": {
            "raw predict, one prepared row (float array)": _best(lambda: fraud.predict(prepared_one, raw_score=True), single),
            "validated_declarations": _best(lambda: validated_declarations(one), single),
            "before: score_declarations": _best(lambda: legacy_score_declarations(model, one, max_reasons), single),
            "after: score_declarations (reasons selected)": _best(lambda: score_declarations(model, one, max_reasons), single),
            "after: score_declarations (reasons all)": _best(
                lambda: score_declarations(model, one, max_reasons, "all"), single
            ),
            "after: score_declarations (reasons none)": _best(
                lambda: score_declarations(model, one, max_reasons, "none"), single
            ),
            "before: features (reindex + frames)": _best(lambda: legacy_serving_features(typed_one, model.state), single),
            "after: features (serving_inputs)": _best(lambda: serving_inputs(typed_one, model.state), single),
            "after: RiskModel.score on typed (reasons selected)": _best(lambda: model.score(typed_one, max_reasons), single),
            "after: RiskModel.score on typed (reasons all)": _best(lambda: model.score(typed_one, max_reasons, "all"), single),
            "pred_contrib, one row": _best(lambda: fraud.predict(prepared_one, pred_contrib=True), single),
        },
        "batch": {
            "validated_declarations": _best(lambda: validated_declarations(batch), many),
            "baseline before: legacy features + both predicts": _best(
                lambda: (lambda f: (fraud.predict(f), critical.predict(f)))(legacy_serving_features(typed, model.state)[0]),
                many,
            ),
            "baseline after: serving_inputs + both predicts": _best(
                lambda: (lambda f: (fraud.predict(f), critical.predict(f)))(serving_inputs(typed, model.state).matrix),
                many,
            ),
            "both predicts on a prepared matrix": _best(
                lambda: (fraud.predict(matrix, raw_score=True), critical.predict(matrix, raw_score=True)), many
            ),
            "pred_contrib, every row": _best(lambda: fraud.predict(matrix, pred_contrib=True), many),
            "before: score_declarations": _best(lambda: legacy_score_declarations(model, batch, max_reasons), many),
            "after: score_declarations (reasons selected)": _best(lambda: score_declarations(model, batch, max_reasons), many),
            "after: score_declarations (reasons all)": _best(lambda: score_declarations(model, batch, max_reasons, "all"), many),
            "after: score_declarations (reasons none)": _best(lambda: score_declarations(model, batch, max_reasons, "none"), many),
            "after: RiskModel.score on typed (reasons selected)": _best(lambda: model.score(typed, max_reasons), many),
        },
    }
    del x_one, x
    return out


def compare(model: RiskModel, sent: pd.DataFrame, max_reasons: int = 3) -> dict:
    """How far the new path's answers are from the old one's, on the same declarations."""
    typed = validated_declarations(sent)
    before = legacy_score(model, typed, max_reasons)
    after = model.score(typed, max_reasons, "all")
    selected = model.score(typed, max_reasons)
    risk_change = np.abs(after["risk_score"].to_numpy() - before["risk_score"].to_numpy())
    old_margin = model.fraud_booster.predict(legacy_serving_features(typed, model.state)[0], pred_contrib=True).sum(axis=1)
    new_margin = model.fraud_booster.predict(serving_inputs(typed, model.state).matrix, raw_score=True)
    carried = selected["lane"] != "green"
    return {
        "rows": len(typed),
        "features_bit_identical": bool(
            np.array_equal(
                model_input(legacy_serving_features(typed, model.state)[0]).to_numpy(),
                serving_inputs(typed, model.state).matrix,
                equal_nan=True,
            )
        ),
        "max_abs_margin_change": float(np.abs(new_margin - old_margin).max()),
        "max_abs_risk_change": float(risk_change.max()),
        "share_risk_changed": float((risk_change > 0).mean()),
        "critical_identical": bool((after["critical_score"] == before["critical_score"]).all()),
        "lanes_identical": bool((after["lane"] == before["lane"]).all()),
        "selected_by_identical": bool((after["selected_by"] == before["selected_by"]).all()),
        "reasons_all_identical": after["reasons"].tolist() == before["reasons"].tolist(),
        "reasons_selected_identical_where_carried": selected["reasons"][carried].tolist()
        == before["reasons"][carried].tolist(),
        "greens_without_reasons": bool(all(r == [] for r in selected["reasons"][~carried])),
        "share_carrying_reasons": float(carried.mean()),
    }


def declarations_as_sent(path: Path, rows: int, seed: int = 14) -> pd.DataFrame:
    """Declarations as a client sends them (fields of the contract, dates as strings)."""
    history = pd.read_parquet(path)
    sent = history[[c for c in DECLARATION_FIELDS if c in history.columns]]
    sent = sent.sample(n=min(rows, len(sent)), random_state=seed).reset_index(drop=True)
    return sent.assign(declaration_date=sent["declaration_date"].dt.strftime("%Y-%m-%d"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("data/model/bundle"))
    parser.add_argument("--input", type=Path, default=Path("data/validated/declarations.parquet"))
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compare-rows", type=int, default=5000)
    args = parser.parse_args()
    model = RiskModel.load(args.bundle)
    sent = declarations_as_sent(args.input, max(args.rows, args.compare_rows))
    result = {"compare": compare(model, sent.head(args.compare_rows)), **measure(model, sent, args.rows, args.repeat)}
    raw = result["one"]["raw predict, one prepared row (float array)"]
    baseline = result["batch"]["baseline after: serving_inputs + both predicts"]
    print(f"one declaration, lane {result['one_lane']} ({max(args.repeat * 20, 50)}+ runs, best)")
    for name, seconds in result["one"].items():
        print(f"  {name:58s} {seconds * 1e3:9.3f} ms  {seconds / raw:8.0f}x raw predict")
    print(f"{result['rows']} declarations, {result['batch_rows_with_reasons']} red or yellow ({args.repeat} runs, best)")
    for name, seconds in result["batch"].items():
        print(f"  {name:58s} {seconds:9.4f} s  {seconds / baseline:6.2f}x baseline after  "
              f"{result['rows'] / seconds:9.0f}/s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
