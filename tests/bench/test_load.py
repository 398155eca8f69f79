"""The load generator's pieces (bench/load.py) that the benchmarks and the soak share."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pandas as pd
import pytest

from bench.load import Target, answered, as_sent, open_loop


def test_open_loop_does_not_wait_for_answers():
    # request 0 is answered only once request 2 has started: a closed loop would never finish
    calls: list[tuple[int, float]] = []
    third_started = asyncio.Event()

    async def send(i: int, due: float) -> None:
        calls.append((i, due))
        if i == 2:
            third_started.set()
        if i == 0:
            await third_started.wait()

    async def run() -> None:
        await asyncio.wait_for(open_loop(1000, 3, send), timeout=30)

    asyncio.run(run())
    assert sorted(i for i, _ in calls) == [0, 1, 2]
    dues = dict(calls)
    assert dues[1] - dues[0] == pytest.approx(0.001) and dues[2] - dues[1] == pytest.approx(0.001)


def test_as_sent_gives_json_values():
    typed = pd.DataFrame(
        {
            "declaration_id": ["1", "2"],
            "declaration_date": pd.to_datetime(["2021-01-05", "2021-02-28"]),
            "courier_id": ["C1", None],
            "item_price": [10.5, np.nan],
        }
    )
    assert as_sent(typed) == [
        {"declaration_id": "1", "declaration_date": "2021-01-05", "courier_id": "C1", "item_price": 10.5},
        {"declaration_id": "2", "declaration_date": "2021-02-28", "courier_id": None, "item_price": None},
    ]


SCORE = Target("score", "http://test/score", lambda d: {"declarations": d}, lambda b: len(b["results"]))


def test_answered_counts_items_of_a_200():
    assert answered(SCORE, httpx.Response(200, json={"results": [{}, {}]}), 2) == 2


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(503, json={"errors": []}), "HTTP 503"),
        (httpx.Response(200, json={"results": [{}]}), "1 results for 2"),
    ],
)
def test_answered_rejects_a_failure_or_a_short_answer(response, message):
    with pytest.raises(RuntimeError, match=message):
        answered(SCORE, response, 2)
