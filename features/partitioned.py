"""A history larger than memory, featurized in bounded passes over partitioned Parquet.

1. Time order: the training window's rows are bucketed by day into parts of at most `part_rows`
   rows (a busier day stays whole), each part sorted by (date, ID) as the in-memory path sorts,
   with the derived fields and each row's global position (`row`).
2. Entities: for each entity, only its columns (categorical codes, integer days) of every row go
   through `entity_history`, the function the in-memory path and the Dask cluster run; the
   per-row counts are written part by part in compact dtypes, the per-key totals kept for the
   serving state (they grow with keys, not rows).
3. Matrix: part by part, records and their counts through `feature_matrix`, written as made.

Peak memory is one entity's columns plus one part, whatever the length of the history.
"""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.history import ENTITIES, HISTORY_FIELDS, Entity, FeatureState, entity_history, with_derived_fields
from features.matrix import CATEGORICAL, FEATURE_NAMES, feature_matrix, model_input
from features.schema import LABELLED_FIELDS, RECOVERED_DUTY

PART_ROWS = 500_000  # rows per sorted and matrix part: bounds the memory of passes 1 and 3
ROW_GROUP_ROWS = 65_536  # the matrix is read back a row group at a time while training
# beside the features: the row's key, its labels and the duty its inspection assessed
CARRIED = ["declaration_id", "declaration_date", "fraud", "critical_fraud", RECOVERED_DUTY]
SORT_KEY = ["declaration_date", "declaration_id"]
HISTORY_COLUMNS = LABELLED_FIELDS  # what a validated part holds


class HistoryFileError(ValueError):
    """A part of a partitioned history that cannot be used, named with what is wrong."""


def parts_of(directory: Path) -> list[Path]:
    parts = sorted(Path(directory).glob("part-*.parquet"))
    if not parts:
        raise HistoryFileError(f"{directory}: no Parquet parts (part-*.parquet) to read")
    return parts


# A read returns the table and a schema check nothing, so callers of a read need no None check.
@overload
def read_part(
    path: Path, columns: list[str] | None = None, schema_only: Literal[False] = False, **options: Any
) -> pa.Table: ...
@overload
def read_part(path: Path, columns: list[str] | None = None, *, schema_only: Literal[True], **options: Any) -> None: ...
def read_part(path: Path, columns: list[str] | None = None, schema_only: bool = False, **options) -> pa.Table | None:
    """One part, or a clear error naming the file: unreadable bytes or a missing column."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as error:
        raise HistoryFileError(f"{path}: not a readable Parquet file ({error})") from error
    missing = [column for column in columns or [] if column not in schema.names]
    if missing:
        raise HistoryFileError(f"{path}: missing column(s) {', '.join(missing)}")
    if schema_only:
        return None
    try:
        return pq.read_table(path, columns=columns, **options)
    except (OSError, pa.ArrowException) as error:
        raise HistoryFileError(f"{path}: cannot be read ({error})") from error


def entity_fields(entity: Entity) -> list[str]:
    """What `entity_history` reads for one entity."""
    return [*entity.columns, *HISTORY_FIELDS]


EntityRunner = Callable[[Path, list[int]], Iterator[tuple[Entity, pd.DataFrame, pd.DataFrame]]]


def local_entities(sorted_dir: Path, part_rows: list[int]) -> Iterator[tuple[Entity, pd.DataFrame, pd.DataFrame]]:
    """Each entity over the whole history in this process, one entity's columns at a time."""
    parts = parts_of(sorted_dir)
    for entity in ENTITIES:
        columns = entity_fields(entity)
        frame = pa.concat_tables(
            [read_part(part, columns, read_dictionary=list(entity.columns)) for part in parts]
        ).to_pandas()
        rows, totals = entity_history(frame, entity)
        del frame
        yield entity, rows, totals


def featurize_history(
    source: Path,
    matrix_dir: Path,
    state_dir: Path,
    window: tuple[str, str],
    smoothing: float,
    entities: EntityRunner = local_entities,
    part_rows: int = PART_ROWS,
) -> dict:
    """Features of every row of `source` (partitioned Parquet of validated declarations) dated
    within `window`, as partitioned Parquet in (date, ID) order, and the serving state. The
    work files live beside the matrix and are removed at the end."""
    work = matrix_dir.parent / f".{matrix_dir.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    try:
        started = time.perf_counter()
        rows_per_part, categories, history_end = sort_into_time_order(source, work / "sorted", window, part_rows)
        sorted_at = time.perf_counter()
        print(
            f"featurize: {sum(rows_per_part):,} rows in time order, {len(rows_per_part)} parts "
            f"({sorted_at - started:.1f}s)",
            flush=True,
        )
        totals = {}
        for entity, rows, entity_totals in entities(work / "sorted", rows_per_part):
            _write_counts(rows, rows_per_part, work / "counts" / entity.name)
            totals[entity.name] = entity_totals
            print(
                f"featurize: entity {entity.name}: {len(entity_totals):,} keys "
                f"({time.perf_counter() - sorted_at:.1f}s)",
                flush=True,
            )
        state = FeatureState(totals, categories, float(smoothing), history_end)
        _write_matrix(work, len(rows_per_part), state, matrix_dir)
        state.save(state_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"rows": sum(rows_per_part), "parts": len(rows_per_part), "seconds": time.perf_counter() - started}


def _days(dates: pa.ChunkedArray) -> np.ndarray:
    return dates.to_numpy().astype("datetime64[D]").astype("int64")


def sort_into_time_order(
    source: Path, target: Path, window: tuple[str, str], part_rows: int
) -> tuple[list[int], dict[str, list[str]], str]:
    """Rows of the window in (date, ID) order as parts of whole days; their counts, the
    categories of the categorical fields and the last date."""
    parts = parts_of(source)
    for part in parts:  # every part usable before anything is written
        read_part(part, HISTORY_COLUMNS, schema_only=True)
    first, last = (np.datetime64(day, "D").astype("int64") for day in window)
    histogram = np.zeros(last - first + 1, dtype="int64")
    for part in parts:
        days = _days(read_part(part, ["declaration_date"]).column("declaration_date"))
        days = days[(days >= first) & (days <= last)]
        histogram += np.bincount(days - first, minlength=len(histogram))
    if not histogram.sum():
        raise HistoryFileError(f"{source}: no declarations dated {window[0]}..{window[1]} (windows in params.yaml)")
    bucket_of_day = _buckets(histogram, part_rows)
    buckets = target.parent / "buckets"
    for number, part in enumerate(parts):
        table = read_part(part, HISTORY_COLUMNS)
        days = _days(table.column("declaration_date"))
        inside = np.flatnonzero((days >= first) & (days <= last))
        bucket = bucket_of_day[days[inside] - first]
        for b in np.unique(bucket):
            chunk = table.take(pa.array(inside[bucket == b]))
            (buckets / f"{b:05d}").mkdir(parents=True, exist_ok=True)
            pq.write_table(chunk, buckets / f"{b:05d}" / f"{number:05d}.parquet")
        print(f"featurize: read {part.name}: {len(inside):,} of {len(days):,} rows in the window", flush=True)
    target.mkdir(parents=True)
    rows_per_part: list[int] = []
    seen: dict[str, set[str]] = {column: set() for column in CATEGORICAL}
    offset = 0
    history_end: pd.Timestamp | None = None
    for b, bucket_dir in enumerate(sorted(buckets.iterdir())):
        history = pd.concat([pd.read_parquet(path) for path in sorted(bucket_dir.iterdir())], ignore_index=True)
        history = with_derived_fields(history.sort_values(SORT_KEY, kind="stable").reset_index(drop=True))
        history["row"] = np.arange(offset, offset + len(history), dtype="int64")
        history.to_parquet(target / f"part-{b:05d}.parquet", index=False)
        for column in CATEGORICAL:
            seen[column].update(history[column].dropna().unique().tolist())
        history_end = history["declaration_date"].iloc[-1]
        rows_per_part.append(len(history))
        offset += len(history)
        shutil.rmtree(bucket_dir)
    # the window holds rows (checked above) and each went into a bucket, so a part was written
    assert history_end is not None
    return rows_per_part, {column: sorted(values) for column, values in seen.items()}, str(history_end.date())


def _buckets(histogram: np.ndarray, part_rows: int) -> np.ndarray:
    """Per day of the window, its part: consecutive days while the part stays within
    `part_rows` rows; a single busier day is a part of its own."""
    bucket = np.zeros(len(histogram), dtype="int64")
    current, filled = 0, 0
    for day, rows in enumerate(histogram):
        if filled and filled + rows > part_rows:
            current, filled = current + 1, 0
        bucket[day] = current
        filled += rows
    # renumber so only days with rows count: empty buckets write no part
    used = np.unique(bucket[histogram > 0])
    return np.searchsorted(used, bucket)


def _compact(frame: pd.DataFrame) -> pd.DataFrame:
    """float32 where it holds every value exactly (counts and days mostly do), else float64."""
    out = {}
    for column in frame.columns:
        values = frame[column].to_numpy(dtype="float64")
        small = values.astype("float32")
        out[column] = small if np.array_equal(small.astype("float64"), values, equal_nan=True) else values
    return pd.DataFrame(out)


def _write_counts(rows: pd.DataFrame, rows_per_part: list[int], directory: Path) -> None:
    directory.mkdir(parents=True)
    compact = _compact(rows)
    bounds = np.cumsum([0, *rows_per_part])
    for number, (start, stop) in enumerate(itertools.pairwise(bounds)):
        compact.iloc[start:stop].to_parquet(directory / f"part-{number:05d}.parquet", index=False)


def _write_matrix(work: Path, parts: int, state: FeatureState, matrix_dir: Path) -> None:
    matrix_dir.mkdir(parents=True)
    for number in range(parts):
        records = pd.read_parquet(work / "sorted" / f"part-{number:05d}.parquet")
        counts = pd.concat(
            [pd.read_parquet(work / "counts" / entity.name / f"part-{number:05d}.parquet") for entity in ENTITIES],
            axis=1,
        ).astype("float64")
        matrix = model_input(feature_matrix(records, counts, state))
        matrix[CARRIED] = records[CARRIED]
        table = pa.Table.from_pandas(matrix, preserve_index=False)
        pq.write_table(table, matrix_dir / f"part-{number:05d}.parquet", row_group_size=ROW_GROUP_ROWS)
    print(f"featurize: {parts} matrix parts x {len(FEATURE_NAMES)} features -> {matrix_dir}", flush=True)
