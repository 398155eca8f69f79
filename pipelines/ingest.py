"""Stage ingest: source files in their own layout, and the fed-back outcomes -> one Parquet file
of canonical records, each with the file and row it came from.

Values stay as read (strings); validate types them and quarantines what does not parse.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.adapters import LAYOUTS, merge_feedback, read_feedback, read_source, with_source
from pipelines.common import load_params

OUTPUT = Path("data/interim/declarations.parquet")


def ingest(params: dict) -> pd.DataFrame:
    layout = LAYOUTS[params["layout"]]
    frames = []
    for source in params["sources"]:
        frame = with_source(read_source(source, layout), source)
        print(f"ingest: {source}: {len(frame):,} rows ({layout.name} layout)")
        frames.append(frame)
    history = pd.concat(frames, ignore_index=True)
    feedback = read_feedback(params["feedback"])
    known = int(feedback["declaration_id"].isin(history["declaration_id"]).sum())
    print(
        f"ingest: {params['feedback']}: {len(feedback):,} outcomes "
        f"({known:,} relabel declarations of the files above, {len(feedback) - known:,} new)"
    )
    return merge_feedback(history, feedback)


def main() -> None:
    records = ingest(load_params()["ingest"])
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    records.to_parquet(OUTPUT, index=False)
    print(f"ingest: {len(records):,} records -> {OUTPUT}")


if __name__ == "__main__":
    main()
