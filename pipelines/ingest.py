"""Stage ingest: source files in their own layout -> one Parquet file of canonical records.

Values stay as read (strings); validate types them and quarantines what does not parse.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.adapters import LAYOUTS, read_source
from pipelines.common import load_params

OUTPUT = Path("data/interim/declarations.parquet")


def main() -> None:
    params = load_params()["ingest"]
    layout = LAYOUTS[params["layout"]]
    frames = []
    for source in params["sources"]:
        frame = read_source(source, layout)
        print(f"ingest: {source}: {len(frame):,} rows ({layout.name} layout)")
        frames.append(frame)
    records = pd.concat(frames, ignore_index=True)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    records.to_parquet(OUTPUT, index=False)
    print(f"ingest: {len(records):,} records -> {OUTPUT}")


if __name__ == "__main__":
    main()
