"""An async HTTP load generator: latency at a fixed request rate (open loop, so a slow answer
delays the figures, not the next request), and throughput with a fixed number of requests in
flight (closed loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    body: Callable[[list[dict]], dict] | None  # declarations -> request body; None: a GET probe
    count: Callable[[dict], int]  # response body -> declarations scored


def probe(name: str, url: str) -> Target:
    """A GET that answers 200, timed like a request: what a server costs before any work."""
    return Target(name, url, None, lambda _: 1)


async def _post(client: httpx.AsyncClient, target: Target, declarations: list[dict]) -> int:
    if target.body is None:
        response = await client.get(target.url)
        if response.status_code != 200:
            raise RuntimeError(f"{target.name}: HTTP {response.status_code}: {response.text[:300]}")
        return len(declarations)
    response = await client.post(target.url, json=target.body(declarations))
    return answered(target, response, len(declarations))


def answered(target: Target, response: httpx.Response, sent: int) -> int:
    """The number of items answered; RuntimeError unless a 200 answers every item sent."""
    if response.status_code != 200:
        raise RuntimeError(f"{target.name}: HTTP {response.status_code}: {response.text[:300]}")
    scored = target.count(response.json())
    if scored != sent:
        raise RuntimeError(f"{target.name}: {scored} results for {sent} declarations")
    return scored


def _batches(pool: list[dict], size: int):
    start = 0
    while True:
        if start + size > len(pool):
            start = 0
        yield pool[start : start + size]
        start += size


def as_sent(records: pd.DataFrame) -> list[dict]:
    """Typed canonical declarations as a client sends them: JSON values, ISO dates, null for
    a missing optional field."""
    records = records.copy()
    records["declaration_date"] = records["declaration_date"].dt.strftime("%Y-%m-%d")
    return records.astype(object).where(records.notna(), None).to_dict(orient="records")


async def open_loop(rate: float, requests: int, send: Callable[[int, float], Awaitable[None]]) -> None:
    """Call `send(i, due)` for request i at its due time, started + i / rate, whether or not the
    earlier ones were answered (open loop), and return once every one has returned. Measured
    from `due`, a slow answer delays the figures, not the next request: no coordinated omission."""
    started = time.perf_counter()

    async def at(i: int) -> None:
        due = started + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await send(i, due)

    await asyncio.gather(*(at(i) for i in range(requests)))


async def _latency(target: Target, pool: list[dict], rate: float, seconds: float) -> dict:
    requests = max(1, int(rate * seconds))
    batches = _batches(pool, 1)
    latencies: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=200)) as client:

        async def one(_: int, due: float) -> None:
            try:
                await _post(client, target, next(batches))
            except (RuntimeError, httpx.HTTPError) as failed:
                errors.append(f"{type(failed).__name__}: {failed}"[:200])
                return
            latencies.append(time.perf_counter() - due)

        await open_loop(rate, requests, one)
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
                    done["first_error"] = done["first_error"] or f"{type(failed).__name__}: {failed}"[:200]

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {**done, "batch": batch, "seconds": elapsed, "declarations_per_second": done["declarations"] / elapsed}


def latency(target: Target, pool: list[dict], rate: float, seconds: float) -> dict:
    return asyncio.run(_latency(target, pool, rate, seconds))


def throughput(target: Target, pool: list[dict], batch: int, concurrency: int, seconds: float) -> dict:
    return asyncio.run(_throughput(target, pool, batch, concurrency, seconds))
