"""Stage featurize: point-in-time features for every history row, and the state serving reuses.

With DASK_SCHEDULER_ADDRESS set, each entity's history runs on that Dask cluster, partitioned
by the entity's key; otherwise in this process. The same functions either way.
"""

from __future__ import annotations

from features.cluster import cluster_entities, connect
from features.partitioned import featurize_history, local_entities
from pipelines.common import load_params, staged_output
from pipelines.paths import MATRIX, STATE, VALIDATED


def main() -> None:
    params = load_params()
    windows = params["windows"]
    client = connect()
    entities = cluster_entities(client) if client else local_entities
    with staged_output(MATRIX) as matrix, staged_output(STATE) as state:
        info = featurize_history(
            VALIDATED,
            matrix,
            state,
            (windows["train_start"], windows["valid_end"]),
            params["features"]["smoothing"],
            entities,
        )
    print(f"featurize: {info['rows']:,} rows in {info['seconds']:.1f}s -> {MATRIX}, state -> {STATE}")


if __name__ == "__main__":
    main()
