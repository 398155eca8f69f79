"""An async HTTP load generator: latency at a fixed request rate (open loop, so a slow answer
delays the figures, not the next request), and throughput with a fixed number of requests in
flight (closed loop)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

import httpx
import numpy as np


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    body: Callable[[list[dict]], dict]  # declarations -> request body
    count: Callable[[dict], int]  # response body -> declarations scored


async def _post(client: httpx.AsyncClient, target: Target, declarations: list[dict]) -> int:
    response = await client.post(target.url, json=target.body(declarations))
    if response.status_code != 200:
        raise RuntimeError(f"{target.name}: HTTP {response.status_code}: {response.text[:300]}")
    scored = target.count(response.json())
    if scored != len(declarations):
        raise RuntimeError(f"{target.name}: {scored} results for {len(declarations)} declarations")
    return scored


def _batches(pool: list[dict], size: int):
    start = 0
    while True:
        if start + size > len(pool):
            start = 0
        yield pool[start : start + size]
        start += size


async def _latency(target: Target, pool: list[dict], rate: float, seconds: float) -> dict:
    requests = max(1, int(rate * seconds))
    batches = _batches(pool, 1)
    latencies: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=200)) as client:

        async def one(due: float, declarations: list[dict]) -> None:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                await _post(client, target, declarations)
            except (RuntimeError, httpx.HTTPError) as failed:
                errors.append(str(failed)[:200])
                return
            latencies.append(time.perf_counter() - due)  # from when it was due: no coordinated omission

        started = time.perf_counter()
        await asyncio.gather(*(one(started + i / rate, next(batches)) for i in range(requests)))
    ms = np.array(latencies or [np.nan]) * 1000
    return {
        "requests": requests,
        "rate": rate,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


async def _throughput(target: Target, pool: list[dict], batch: int, concurrency: int, seconds: float) -> dict:
    """Declarations answered per second; a failed request (a server timeout) scores nothing."""
    batches = _batches(pool, batch)
    done = {"requests": 0, "declarations": 0, "errors": 0, "first_error": None}
    async with httpx.AsyncClient(timeout=300) as client:
        started = time.perf_counter()

        async def worker() -> None:
            while time.perf_counter() - started < seconds or done["requests"] < concurrency:
                done["requests"] += 1
                try:
                    done["declarations"] += await _post(client, target, next(batches))
                except (RuntimeError, httpx.HTTPError) as failed:
                    done["errors"] += 1
                    done["first_error"] = done["first_error"] or str(failed)[:200]

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {**done, "batch": batch, "seconds": elapsed, "declarations_per_second": done["declarations"] / elapsed}


def latency(target: Target, pool: list[dict], rate: float, seconds: float) -> dict:
    return asyncio.run(_latency(target, pool, rate, seconds))


def throughput(target: Target, pool: list[dict], batch: int, concurrency: int, seconds: float) -> dict:
    return asyncio.run(_throughput(target, pool, batch, concurrency, seconds))
