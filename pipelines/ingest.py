"""Stage ingest: source files in their own layout, and the fed-back outcomes -> canonical records
as Parquet parts, each with the file and row it came from.

Sources are read and written a chunk at a time, so a national history never has to fit in
memory. Values stay as read (strings); validate types them and quarantines what does not parse.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa

from features.adapters import (
    LAYOUTS,
    has_outcome,
    merge_feedback,
    read_feedback,
    read_source_chunks,
    with_source,
)
from features.record import LABELLED_FIELDS, SELECTED_BY
from pipelines.common import load_params, part_path, staged_output
from pipelines.paths import INTERIM

CHUNK_ROWS = 500_000  # source rows in memory at a time, and rows per part
# Every part has the same columns and types, even a chunk whose optional field is all empty.
SCHEMA = pa.schema(
    [(field, pa.large_string()) for field in LABELLED_FIELDS]
    + [("source_file", pa.large_string()), ("source_row", pa.int64())]
)
# What ingest writes: those and what selected each declaration, which only fed-back rows say (null
# in the administration's rows). Validate reads a part without it (bench.synthesize writes SCHEMA)
# as saying nothing.
WITH_SELECTION = SCHEMA.append(pa.field(SELECTED_BY, pa.large_string()))


def write_part(records: pd.DataFrame, path: Path) -> None:
    """One part of the interim history, in WITH_SELECTION's columns."""
    records.reindex(columns=WITH_SELECTION.names).to_parquet(path, index=False, schema=WITH_SELECTION)


def ingest(params: dict, output: Path) -> int:
    """Write the canonical records as parts of `output` in row order; the number of records."""
    layout = LAYOUTS[params["layout"]]
    feedback = read_feedback(params["feedback"])
    in_files: set[str] = set()  # fed-back declarations that the files hold too

    def history() -> Iterator:
        for source in params["sources"]:
            done = 0
            for chunk in read_source_chunks(source, layout, CHUNK_ROWS):
                records = with_source(chunk, source, first_row=done + 1)
                done += len(records)
                print(f"ingest: {source}: {done:,} rows read")
                yield records
            print(f"ingest: {source}: {done:,} rows ({layout.name} layout)")

    output.mkdir(parents=True, exist_ok=True)
    written = 0
    for index, part in enumerate(merge_feedback(history(), feedback, in_files)):
        write_part(part, part_path(output, index))
        written += len(part)
    known = feedback["declaration_id"].isin(in_files)
    outcome = has_outcome(feedback)
    print(
        f"ingest: {params['feedback']}: {int(outcome.sum()):,} outcomes ({int((outcome & known).sum()):,} relabel "
        f"declarations of the files above, {int((outcome & ~known).sum()):,} new), "
        f"{int((~outcome).sum()):,} declarations scored and not inspected ({int((~outcome & ~known).sum()):,} new)"
    )
    return written


def main() -> None:
    params = load_params()["ingest"]
    with staged_output(INTERIM) as output:
        records = ingest(params, output)
    print(f"ingest: {records:,} records -> {INTERIM}")


if __name__ == "__main__":
    main()
