"""Past one machine: featurize's entity histories on a Dask cluster named by DASK_SCHEDULER_ADDRESS.

Nothing here computes a feature: featurize ships `features.history.entity_history` to the
workers, on partitions shuffled by the entity's key columns (a key's point-in-time history
depends only on that key's rows). Every cluster call has a deadline: a scheduler that does not
answer, or a shuffle that does not finish, must fail the stage, not stall it. Workers read the
stage's files by absolute path, so they must see the same filesystem (one machine, or a shared
mount). Training on the cluster (lightgbm.dask) is `models.cluster`, which connects here too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
from distributed import Client, Future

from features.history import ENTITIES, Entity, entity_history
from features.partitioned import EntityRunner, entity_fields

SCHEDULER_ADDRESS = "DASK_SCHEDULER_ADDRESS"
CONNECT_TIMEOUT_SECONDS = 10
TASK_TIMEOUT_SECONDS = 3600  # one entity's shuffle, or one training, on the cluster


class ClusterError(RuntimeError):
    """The cluster cannot be used: nothing was written."""


def connect(address: str | None = None) -> Client | None:
    """The cluster's client, or None when no scheduler is set (the embedded default)."""
    address = address or os.environ.get(SCHEDULER_ADDRESS)
    if not address:
        return None
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_SECONDS, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise ClusterError(
            f"the Dask scheduler at {address} ({SCHEDULER_ADDRESS}) did not answer within "
            f"{CONNECT_TIMEOUT_SECONDS} s: {error}. Start it (`dask scheduler`, then `dask worker "
            f"{address}` on each machine) or unset {SCHEDULER_ADDRESS} to run in this process."
        ) from error
    workers = len(client.scheduler_info(n_workers=-1)["workers"])
    print(f"cluster: {address}, {workers} worker(s)", flush=True)
    return client


def _entity_partition(frame: pd.DataFrame, entity: Entity) -> tuple[pd.DataFrame, pd.DataFrame]:
    return entity_history(frame.set_index("row"), entity)


def gather(client: Client, futures: list[Future], what: str) -> list:
    """Results of futures, or a ClusterError once TASK_TIMEOUT_SECONDS have passed."""
    deadline = time.monotonic() + TASK_TIMEOUT_SECONDS
    try:
        return [future.result(timeout=max(deadline - time.monotonic(), 0)) for future in futures]
    except TimeoutError as error:
        client.cancel(futures)
        raise ClusterError(f"{what} did not finish on the cluster within {TASK_TIMEOUT_SECONDS} s") from error


def cluster_entities(client: Client) -> EntityRunner:
    """An entity runner for `features.partitioned.featurize_history` that runs on `client`."""

    def run(sorted_dir: Path, part_rows: list[int]) -> Iterator[tuple[Entity, pd.DataFrame, pd.DataFrame]]:
        total = sum(part_rows)
        for entity in ENTITIES:
            frame = dd.read_parquet(str(Path(sorted_dir).resolve()), columns=[*entity_fields(entity), "row"])
            # whole keys per partition; "all" is one key, so one partition
            frame = (
                frame.shuffle(on=list(entity.columns), shuffle_method="tasks")
                if entity.columns
                else frame.repartition(npartitions=1)
            )
            tasks = [dask.delayed(_entity_partition)(piece, entity) for piece in frame.to_delayed()]
            results = gather(client, client.compute(tasks), f"featurize entity {entity.name}")
            columns = results[0][0].columns
            rows = np.full((total, len(columns)), np.nan)
            for partition_rows, _ in results:
                rows[partition_rows.index.to_numpy()] = partition_rows.to_numpy()
            totals = pd.concat([partition_totals for _, partition_totals in results]).sort_index()
            yield entity, pd.DataFrame(rows, columns=columns), totals

    return run
