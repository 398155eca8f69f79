"""Stage validate: valid rows go on; every rejected row is kept in quarantine with its reasons.

Every input row ends in exactly one place: the validated history, the quarantine, or (an exact
repeat of a row already counted) the duplicates dropped. The report says how many went where
and, per failed check, which rule, how many rows and example values, so a data steward can fix
the source; the stage fails when more than `validate.max_reject_share` of the rows is rejected.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from features.adapters import SOURCE_FIELDS
from features.schema import (
    DECLARATION_FIELDS,
    LABEL_FIELDS,
    HistoryRules,
    coerce_declarations,
    find_failures,
)
from pipelines.common import load_params, write_json

INPUT = Path("data/interim/declarations.parquet")
VALID = Path("data/validated/declarations.parquet")
QUARANTINE = Path("data/quarantine/rejected.parquet")
REPORT = Path("metrics/validation.json")
EXAMPLES = 5  # example values per failed check in the report


def history_rules(params: dict) -> HistoryRules:
    today = pd.Timestamp.now(tz="UTC").tz_localize(None).normalize()
    return HistoryRules(
        run_date=pd.Timestamp(params["run_date"]) if params.get("run_date") else today,
        history_start=pd.Timestamp(params["history_start"]),
        max_net_mass_kg=float(params["max_net_mass_kg"]),
    )


def split_duplicates(records: pd.DataFrame) -> tuple[pd.DataFrame, int, pd.Series]:
    """Drop exact repeats (counted); flag IDs that repeat with different content (conflicts).
    Where a row was read from does not make it different."""
    content = [column for column in records.columns if column not in SOURCE_FIELDS]
    exact = records.duplicated(subset=content, keep="first")
    kept = records[~exact]
    conflicting = kept["declaration_id"].duplicated(keep=False) & kept["declaration_id"].notna()
    return kept, int(exact.sum()), conflicting


def _examples(values: pd.Series) -> list[str | None]:
    return [None if pd.isna(value) else str(value) for value in values.drop_duplicates().head(EXAMPLES)]


def _failed_checks(failures: pd.DataFrame, rows: pd.DataFrame) -> list[dict]:
    """One entry per (check, field), most rows first: the rule, the count, example values."""
    entries = []
    for (check, field, message), group in failures.groupby(["check", "field", "message"], sort=False):
        failed = rows.iloc[group["index"].unique()]
        entries.append(
            {
                "check": check,
                "field": field,
                "rule": message,
                "rows": len(failed),
                "example_values": _examples(failed[field]) if field in failed else [],
                "example_declaration_ids": _examples(failed["declaration_id"]) if "declaration_id" in failed else [],
            }
        )
    return sorted(entries, key=lambda entry: (-entry["rows"], entry["check"], entry["field"]))


def _counts(values: pd.Series) -> dict[str, int]:
    return {str(key): int(count) for key, count in values.value_counts().items()}


def validate(records: pd.DataFrame, rules: HistoryRules | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(valid rows typed, rejected rows as read with their reasons, the report). Without
    `rules`, only the record's own checks apply, not the history's limits."""
    kept, duplicates_dropped, conflicting = split_duplicates(records)
    kept = kept.reset_index(drop=True)
    conflicting = conflicting.reset_index(drop=True)
    content = kept.drop(columns=[c for c in SOURCE_FIELDS if c in kept.columns])
    failures = find_failures(content, labelled=True, history=rules)
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
    passed = content.drop(index=reasons.index)
    if passed.empty:  # every row failed, perhaps on a missing or extra column
        passed = pd.DataFrame(columns=DECLARATION_FIELDS + LABEL_FIELDS, dtype="str")
    valid = coerce_declarations(passed, labelled=True)
    per_row = failures.drop_duplicates(["index", "check"])
    report = {
        "rows_in": len(records),
        "duplicates_dropped": duplicates_dropped,
        "rows_valid": len(valid),
        "rows_rejected": len(rejected),
        "reject_share": len(rejected) / max(len(records), 1),
        "rejected_by_check": _counts(per_row["check"]),
        "rejected_by_field": _counts(failures.drop_duplicates(["index", "field"])["field"]),
        "failed_checks": _failed_checks(failures, kept),
    }
    if "source_file" in records:
        report["rows_in_by_source"] = _counts(records["source_file"])
        report["rejected_by_source"] = _counts(rejected["source_file"])
    return valid, rejected, report


def too_many_rejected(report: dict, max_reject_share: float) -> str | None:
    """The failure message naming the top failing checks, or None when within the limit."""
    if report["reject_share"] <= max_reject_share:
        return None
    top = "; ".join(
        f"{entry['check']} on {entry['field']}: {entry['rows']:,} rows ({entry['rule']})"
        for entry in report["failed_checks"][:3]
    )
    return (
        f"validate: {report['rows_rejected']:,} of {report['rows_in']:,} rows rejected "
        f"({report['reject_share']:.2%}), above validate.max_reject_share = {max_reject_share:.2%}. "
        f"Top failing checks: {top}. Rows and reasons: {QUARANTINE}; per check: {REPORT}."
    )


def main() -> None:
    params = load_params()["validate"]
    valid, rejected, report = validate(pd.read_parquet(INPUT), history_rules(params))
    for path, frame in ((VALID, valid), (QUARANTINE, rejected)):
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
    write_json(REPORT, report)
    print(
        f"validate: {report['rows_valid']:,} valid, {report['rows_rejected']:,} quarantined "
        f"({report['reject_share']:.2%}), {report['duplicates_dropped']:,} exact duplicates dropped"
    )
    for entry in report["failed_checks"]:
        print(f"  {entry['check']} on {entry['field']}: {entry['rows']:,} rows ({entry['rule']})")
    failure = too_many_rejected(report, params["max_reject_share"])
    if failure:
        sys.exit(failure)


if __name__ == "__main__":
    main()
