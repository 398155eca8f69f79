"""Stage validate: valid rows go on; every rejected row is kept in quarantine with its reasons.

Every input row ends in exactly one place: the validated history, the quarantine, or (an exact
repeat of a row already counted) the duplicates dropped. The report says how many went where
and, per failed check, which rule, how many rows and example values, so a data steward can fix
the source; the stage fails when more than `validate.max_reject_share` of the rows is rejected.
A declaration nobody inspected (both labels null) is valid history, not a rejected row: it
counts in `rows_valid`, and `rows_not_inspected` says how many of those it is.

A national history does not fit in memory, so the stage reads it a chunk at a time, twice:
repeats need the whole history, and the first pass keeps only two 128-bit hashes per row (its
content, its ID); the second checks each chunk and writes its valid and rejected rows.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.adapters import SOURCE_FIELDS
from features.record import DATE, LABEL, LABEL_FIELDS, LABELLED_FIELDS, NUMBER, SELECTED_BY, HistoryRules
from features.schema import LABELLED, Rules, check_declarations, history_rules
from models.lanes import SOURCES
from pipelines.common import load_params, part_path, staged_output, write_json
from pipelines.paths import INTERIM, QUARANTINE, VALIDATED, VALIDATION_REPORT

CHUNK_ROWS = 500_000  # rows checked at a time: the stage peaks near 0.8 GB, plus 33 bytes per row
EXAMPLES = 5  # example values per failed check in the report
INTERIM_FIELDS = LABELLED_FIELDS + SOURCE_FIELDS  # what ingest writes, besides what selected each row
# Two keys, 128 bits per row: no two distinct rows of a national history share both hashes, so
# a row is never dropped as the repeat of another.
HASH_KEYS = ("0123456789123456", "6543210987654321")
# Every valid part has the canonical types, even a chunk whose optional field is all empty; the
# labels are int8, null where nobody inspected the declaration.
_ARROW_TYPES = {DATE: pa.timestamp("ns"), NUMBER: pa.float64(), LABEL: pa.int8()}
VALID_SCHEMA = pa.schema(
    [(field.name, _ARROW_TYPES.get(field.kind, pa.large_string())) for field in LABELLED.record]
    + [(SELECTED_BY, pa.large_string())]
)
# The selection is provenance, not part of the record the rules hold: checked here, on its own.
UNKNOWN_SOURCE = (
    "selected_by_source",
    f"must be one of {', '.join(SOURCES)} (what selected the declaration), or empty where the source does not say",
)


class UnreadableInput(ValueError):
    """A part of the interim history that cannot be validated as it is."""


def stage_rules(params: dict) -> Rules:
    """The history's rules with the limits of params.yaml's validate section."""
    today = pd.Timestamp.now(tz="UTC").tz_localize(None).normalize()
    return history_rules(
        HistoryRules(
            run_date=pd.Timestamp(params["run_date"]) if params.get("run_date") else today,
            history_start=pd.Timestamp(params["history_start"]),
            max_net_mass_kg=float(params["max_net_mass_kg"]),
        )
    )


def interim_parts(directory: Path) -> tuple[list[Path], int]:
    """The parts in row order and their row count, each checked from its footer before any
    output is touched: readable, with every field ingest writes, with the first part's types."""
    parts = sorted(Path(directory).glob("part-*.parquet"))
    if not parts:
        raise UnreadableInput(f"{directory}: no Parquet parts (the ingest stage writes them)")
    rows, first = 0, None
    for part in parts:
        try:
            metadata = pq.read_metadata(part)
        except (pa.ArrowException, OSError) as error:
            raise UnreadableInput(f"{part}: not a readable Parquet file ({error})") from error
        schema = metadata.schema.to_arrow_schema()
        missing = [name for name in INTERIM_FIELDS if name not in schema.names]
        if missing:
            raise UnreadableInput(f"{part}: missing column(s) {missing}; ingest writes {INTERIM_FIELDS}")
        first = schema if first is None else first
        if not schema.equals(first, check_metadata=False):
            raise UnreadableInput(f"{part}: columns {schema} differ from those of {parts[0]}: {first}")
        rows += metadata.num_rows
    return parts, rows


def read_chunks(parts: list[Path], rows: int) -> Iterator[pd.DataFrame]:
    """The history in row order, at most `rows` rows at a time; an empty part is an empty chunk."""
    for part in parts:
        try:
            file = pq.ParquetFile(part)
            batches = (
                file.iter_batches(batch_size=rows)
                if file.metadata.num_rows
                else [pa.RecordBatch.from_pylist([], schema=file.schema_arrow)]
            )
            for batch in batches:
                yield batch.to_pandas()
        except (pa.ArrowException, OSError) as error:
            raise UnreadableInput(f"{part}: cannot be read ({error})") from error


def _counted(chunks: Iterable[pd.DataFrame], total: int, doing: str) -> Iterator[pd.DataFrame]:
    done = 0
    for chunk in chunks:
        yield chunk
        if len(chunk):
            done += len(chunk)
            print(f"validate: {done:,} of {total:,} rows {doing}")


def _hashes(values: pd.DataFrame | pd.Series) -> np.ndarray:
    return np.column_stack(
        [pd.util.hash_pandas_object(values, index=False, hash_key=key).to_numpy() for key in HASH_KEYS]
    )


@dataclass(frozen=True)
class Repeats:
    """Per row of the whole history, in row order."""

    dropped: np.ndarray  # an exact repeat of an earlier row: dropped and counted
    conflicting: np.ndarray  # kept, but its ID is on another kept row with other content


def find_repeats(chunks: Iterable[pd.DataFrame]) -> Repeats:
    """Where a row was read from does not make it different. Holds 33 bytes per row."""
    content, ids, present = [], [], []
    for chunk in chunks:
        content.append(_hashes(chunk.drop(columns=[c for c in SOURCE_FIELDS if c in chunk.columns])))
        ids.append(_hashes(chunk["declaration_id"]))
        present.append(chunk["declaration_id"].notna().to_numpy())
    dropped = pd.DataFrame(np.concatenate(content)).duplicated(keep="first").to_numpy()
    keyed = np.flatnonzero(~dropped & np.concatenate(present))
    conflicting = np.zeros(len(dropped), dtype=bool)
    conflicting[keyed] = pd.DataFrame(np.concatenate(ids)[keyed]).duplicated(keep=False).to_numpy()
    return Repeats(dropped, conflicting)


def _examples(values: pd.Series) -> list[str | None]:
    return [None if pd.isna(value) else str(value) for value in values.drop_duplicates().head(EXAMPLES)]


def _first_examples(values: list[str | None]) -> list[str | None]:
    return list(dict.fromkeys(values))[:EXAMPLES]


def _counts(values: pd.Series) -> dict[str, int]:
    return {str(key): int(count) for key, count in values.value_counts().items()}


@dataclass
class Tally:
    """The report, summed over the chunks."""

    rows_in: int = 0
    duplicates_dropped: int = 0
    rows_valid: int = 0
    rows_not_inspected: int = 0  # valid rows with both labels null
    rows_rejected: int = 0
    by_check: Counter = field(default_factory=Counter)
    by_field: Counter = field(default_factory=Counter)
    checks: dict = field(default_factory=dict)  # (check, field, rule) -> rows and examples
    in_by_source: Counter | None = None  # when the rows say which file they came from
    rejected_by_source: Counter = field(default_factory=Counter)

    def add(self, chunk: pd.DataFrame, kept: pd.DataFrame, failures: pd.DataFrame, valid, rejected) -> None:
        self.rows_in += len(chunk)
        self.duplicates_dropped += len(chunk) - len(kept)
        self.rows_valid += len(valid)
        self.rows_not_inspected += int(valid[LABEL_FIELDS].isna().all(axis=1).sum())
        self.rows_rejected += len(rejected)
        self.by_check.update(_counts(failures.drop_duplicates(["index", "check"])["check"]))
        self.by_field.update(_counts(failures.drop_duplicates(["index", "field"])["field"]))
        for (check, name, rule), group in failures.groupby(["check", "field", "message"], sort=False):
            failed = kept.iloc[group["index"].unique()]
            entry = self.checks.setdefault((check, name, rule), {"rows": 0, "values": [], "ids": []})
            entry["rows"] += len(failed)
            if name in failed:
                entry["values"] = _first_examples(entry["values"] + _examples(failed[name]))
            if "declaration_id" in failed:
                entry["ids"] = _first_examples(entry["ids"] + _examples(failed["declaration_id"]))
        if "source_file" in chunk:
            self.in_by_source = (self.in_by_source or Counter()) + Counter(_counts(chunk["source_file"]))
            self.rejected_by_source.update(_counts(rejected["source_file"]))

    def report(self) -> dict:
        failed_checks = [
            {
                "check": check,
                "field": name,
                "rule": rule,
                "rows": entry["rows"],
                "example_values": entry["values"],
                "example_declaration_ids": entry["ids"],
            }
            for (check, name, rule), entry in self.checks.items()
        ]
        report = {
            "rows_in": self.rows_in,
            "duplicates_dropped": self.duplicates_dropped,
            "rows_valid": self.rows_valid,
            "rows_not_inspected": self.rows_not_inspected,
            "rows_rejected": self.rows_rejected,
            "reject_share": self.rows_rejected / max(self.rows_in, 1),
            "rejected_by_check": dict(self.by_check.most_common()),
            "rejected_by_field": dict(self.by_field.most_common()),
            "failed_checks": sorted(failed_checks, key=lambda entry: (-entry["rows"], entry["check"], entry["field"])),
        }
        if self.in_by_source is not None:
            report["rows_in_by_source"] = dict(self.in_by_source.most_common())
            report["rejected_by_source"] = dict(self.rejected_by_source.most_common())
        return report


def check_chunk(
    chunk: pd.DataFrame, repeats: Repeats, start: int, rules: Rules, tally: Tally
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid rows typed, rejected rows as read with their reasons) of the chunk at row `start`
    of the history `repeats` was found in, each row parsed and checked once; the chunk's counts
    go into `tally`."""
    dropped = repeats.dropped[start : start + len(chunk)]
    kept = chunk[~dropped].reset_index(drop=True)
    conflicting = repeats.conflicting[start : start + len(chunk)][~dropped]
    content = kept.drop(columns=[c for c in [*SOURCE_FIELDS, SELECTED_BY] if c in kept.columns])
    checked = check_declarations(content, rules)
    conflict_rows = pd.DataFrame(
        {
            "index": np.flatnonzero(conflicting),
            "field": "declaration_id",
            "check": "conflicting_duplicate",
            "message": "appears more than once with different content",
        }
    )
    selection = kept[SELECTED_BY] if SELECTED_BY in kept.columns else pd.Series(None, index=kept.index, dtype="str")
    unknown_source = (selection.notna() & ~selection.isin(SOURCES)).to_numpy()
    source_rows = pd.DataFrame(
        {
            "index": np.flatnonzero(unknown_source),
            "field": SELECTED_BY,
            "check": UNKNOWN_SOURCE[0],
            "message": UNKNOWN_SOURCE[1],
        }
    )
    failures = pd.concat([checked.failures, conflict_rows, source_rows], ignore_index=True)
    reasons = (
        (failures["field"] + ": " + failures["message"] + " [" + failures["check"] + "]")
        .groupby(failures["index"])
        .agg("; ".join)
    )
    rejected = kept.loc[reasons.index].assign(rejection_reasons=reasons.to_numpy())
    # a conflicting row, or one of an unknown source, may pass the record's checks
    valid = checked.valid[~(conflicting | unknown_source)[checked.valid.index]]
    if SELECTED_BY in kept.columns:
        valid = valid.assign(**{SELECTED_BY: selection[valid.index]})
    tally.add(chunk, kept, failures, valid, rejected)
    return valid, rejected


def validate(records: pd.DataFrame, rules: Rules = LABELLED) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(valid rows typed, rejected rows as read with their reasons, the report) of a history
    held in memory: the stage's checks, as one chunk. By default only the labelled record's own
    checks apply, not the history's limits (`history_rules`)."""
    tally = Tally()
    valid, rejected = check_chunk(records, find_repeats([records]), 0, rules, tally)
    return valid, rejected, tally.report()


def validate_parts(parts: list[Path], rows_in: int, rules: Rules, valid_dir: Path, quarantine: Path) -> dict:
    """Validate the history in `parts` chunk by chunk: valid rows as parts of `valid_dir` in row
    order, rejected rows appended to the `quarantine` file; the report."""
    repeats = find_repeats(_counted(read_chunks(parts, CHUNK_ROWS), rows_in, "hashed for repeats"))
    tally = Tally()
    rejected_schema = (
        pq.read_schema(parts[0]).remove_metadata().append(pa.field("rejection_reasons", pa.large_string()))
    )
    valid_dir.mkdir()
    start = 0
    with pq.ParquetWriter(quarantine, rejected_schema) as writer:
        for index, chunk in enumerate(_counted(read_chunks(parts, CHUNK_ROWS), rows_in, "checked")):
            valid, rejected = check_chunk(chunk, repeats, start, rules, tally)
            start += len(chunk)
            valid.reindex(columns=VALID_SCHEMA.names).to_parquet(
                part_path(valid_dir, index), index=False, schema=VALID_SCHEMA
            )
            writer.write_table(pa.Table.from_pandas(rejected, schema=rejected_schema, preserve_index=False))
    return tally.report()


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
        f"Top failing checks: {top}. Rows and reasons: {QUARANTINE}; per check: {VALIDATION_REPORT}."
    )


def main() -> None:
    params = load_params()["validate"]
    try:
        parts, rows_in = interim_parts(INTERIM)
        with staged_output(VALIDATED) as valid_dir, staged_output(QUARANTINE) as quarantine:
            report = validate_parts(parts, rows_in, stage_rules(params), valid_dir, quarantine)
    except UnreadableInput as error:
        sys.exit(f"validate: {error}; nothing was written")
    with staged_output(VALIDATION_REPORT) as path:
        write_json(path, report)
    print(
        f"validate: {report['rows_valid']:,} valid ({report['rows_not_inspected']:,} not inspected), "
        f"{report['rows_rejected']:,} quarantined "
        f"({report['reject_share']:.2%}), {report['duplicates_dropped']:,} exact duplicates dropped"
    )
    for entry in report["failed_checks"]:
        print(f"  {entry['check']} on {entry['field']}: {entry['rows']:,} rows ({entry['rule']})")
    failure = too_many_rejected(report, params["max_reject_share"])
    if failure:
        sys.exit(failure)


if __name__ == "__main__":
    main()
