"""Stage validate: valid rows go on; every rejected row is kept in quarantine with its reasons."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from features.schema import coerce_declarations, find_failures
from pipelines.common import load_params, write_json

INPUT = Path("data/interim/declarations.parquet")
VALID = Path("data/validated/declarations.parquet")
QUARANTINE = Path("data/quarantine/rejected.parquet")
REPORT = Path("metrics/validation.json")


def split_duplicates(records: pd.DataFrame) -> tuple[pd.DataFrame, int, pd.Series]:
    """Drop exact repeats (counted); flag IDs that repeat with different content (conflicts)."""
    exact = records.duplicated(keep="first")
    kept = records[~exact]
    conflicting = kept["declaration_id"].duplicated(keep=False) & kept["declaration_id"].notna()
    return kept, int(exact.sum()), conflicting


def validate(records: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    kept, duplicates_dropped, conflicting = split_duplicates(records)
    kept = kept.reset_index(drop=True)
    conflicting = conflicting.reset_index(drop=True)
    failures = find_failures(kept, labelled=True)
    conflict_rows = pd.DataFrame(
        {
            "index": conflicting[conflicting].index,
            "field": "declaration_id",
            "check": "conflicting_duplicate",
            "message": "appears more than once with different content",
        }
    )
    failures = pd.concat([failures, conflict_rows], ignore_index=True)
    reasons = (
        (failures["field"] + ": " + failures["message"] + " [" + failures["check"] + "]")
        .groupby(failures["index"])
        .agg("; ".join)
    )
    rejected = kept.loc[reasons.index].assign(rejection_reasons=reasons.to_numpy())
    valid = coerce_declarations(kept.drop(index=reasons.index), labelled=True)
    by_check = failures.drop_duplicates(["index", "check"])["check"].value_counts()
    report = {
        "rows_in": len(records),
        "duplicates_dropped": duplicates_dropped,
        "rows_valid": len(valid),
        "rows_rejected": len(rejected),
        "reject_share": len(rejected) / max(len(records), 1),
        "rejected_by_check": {str(k): int(v) for k, v in by_check.items()},
    }
    return valid, rejected, report


def main() -> None:
    params = load_params()["validate"]
    valid, rejected, report = validate(pd.read_parquet(INPUT))
    for path, frame in ((VALID, valid), (QUARANTINE, rejected)):
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
    write_json(REPORT, report)
    print(
        f"validate: {report['rows_valid']:,} valid, {report['rows_rejected']:,} quarantined "
        f"({report['reject_share']:.2%}), {report['duplicates_dropped']:,} exact duplicates dropped"
    )
    for check, count in report["rejected_by_check"].items():
        print(f"  {check}: {count:,} rows")
    if report["reject_share"] > params["max_reject_share"]:
        top = ", ".join(f"{k} ({v})" for k, v in list(report["rejected_by_check"].items())[:3])
        sys.exit(
            f"validate: {report['reject_share']:.2%} of rows rejected, above "
            f"validate.max_reject_share={params['max_reject_share']:.2%}; top checks: {top}. "
            f"See {QUARANTINE}."
        )


if __name__ == "__main__":
    main()
