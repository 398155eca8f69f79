"""The soak's judgement and bookkeeping (bench/soak.py): what counts as memory growth, how the
run is cut into minutes, the request mix, and the declarations it sends."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from bench.soak import (
    GROWTH_ALLOWED_MIB,
    MIB,
    MIX,
    Answer,
    Watch,
    by_kind,
    cases,
    markdown,
    memory_growth,
    per_minute,
    request_kinds,
    statuses,
)
from tests.conftest import RAW


def _samples(mib_at: dict[float, float]) -> list[tuple[float, int]]:
    return [(t, int(mib * MIB)) for t, mib in mib_at.items()]


def test_flat_memory_passes_with_no_growth_and_no_slope():
    growth = memory_growth(_samples(dict.fromkeys(range(0, 300, 5), 700.0)), warmup_seconds=60)
    assert growth["ok"]
    assert growth["start_mib"] == growth["end_mib"] == 700
    assert growth["growth_mib"] == 0
    assert growth["slope_mib_per_minute"] == pytest.approx(0, abs=1e-9)


def test_warm_up_samples_are_left_out():
    # a start-up peak, then a steady level: the peak is not the start
    memory = {t: 900.0 if t < 60 else 700.0 for t in range(0, 300, 5)}
    growth = memory_growth(_samples(memory), warmup_seconds=60)
    assert growth["start_mib"] == 700
    assert growth["growth_mib"] == 0


def test_growth_beyond_the_floor_fails_on_a_small_server():
    # 300 MiB: 10% is 30 MiB, so the 50 MiB floor is the limit
    below = memory_growth(_samples({0: 300.0, 5: 300.0, 10: 349.0, 15: 349.0}), warmup_seconds=0)
    above = memory_growth(_samples({0: 300.0, 5: 300.0, 10: 351.0, 15: 351.0}), warmup_seconds=0)
    assert below["allowed_growth_mib"] == above["allowed_growth_mib"] == GROWTH_ALLOWED_MIB
    assert below["ok"] and not above["ok"]


def test_growth_beyond_a_tenth_fails_on_a_large_server():
    below = memory_growth(_samples({0: 1000.0, 5: 1000.0, 10: 1099.0, 15: 1099.0}), warmup_seconds=0)
    above = memory_growth(_samples({0: 1000.0, 5: 1000.0, 10: 1101.0, 15: 1101.0}), warmup_seconds=0)
    assert below["allowed_growth_mib"] == pytest.approx(100)
    assert below["ok"] and not above["ok"]
    assert above["growth_percent"] == pytest.approx(10.1)


def test_a_single_spike_at_the_end_is_not_growth():
    memory = dict.fromkeys(range(0, 120, 5), 700.0)
    memory[115] = 900.0
    growth = memory_growth(_samples(memory), warmup_seconds=0)
    assert growth["end_mib"] == 700
    assert growth["ok"]


def test_slope_of_a_steady_leak():
    # 2 MiB a minute: over 10 minutes 20 MiB, within the rule, but the slope shows it
    growth = memory_growth(_samples({t: 700 + 2 * t / 60 for t in range(0, 600, 5)}), warmup_seconds=0)
    assert growth["slope_mib_per_minute"] == pytest.approx(2, rel=1e-3)
    # median of the first three samples (t = 5 s) to median of the last three (t = 590 s)
    assert growth["growth_mib"] == pytest.approx(2 * (590 - 5) / 60, abs=0.01)


def test_too_few_samples_after_the_warm_up_is_an_error():
    with pytest.raises(ValueError, match="at least 2"):
        memory_growth(_samples({0: 700.0, 5: 700.0, 65: 700.0}), warmup_seconds=60)


def test_watch_names_a_replaced_worker_and_the_busy_cores():
    watch = Watch(
        pid=10,
        samples=_samples({0: 700.0, 60: 700.0, 120: 700.0, 180: 700.0}),
        processes=[{10, 11}, {10, 11}, {10, 12}, {10, 12}],
        cpu_seconds=[5.0, 20.0, 50.0, 80.0],
    )
    assert watch.replaced() == [12]
    assert watch.busy_cores(warmup_seconds=60) == pytest.approx(0.5)  # 60 CPU s in 120 s
    assert (
        Watch(pid=10, samples=watch.samples, processes=[{10, 11}] * 4, cpu_seconds=watch.cpu_seconds).replaced() == []
    )


def _answer(kind: str, at: float, ms: float, status: int | None = 200, error: str | None = None) -> Answer:
    return Answer(kind, at, ms / 1000, status, error)


def test_minutes_count_requests_errors_latency_and_memory():
    answers = [
        _answer("score 1", 1, 100),
        _answer("score 1", 2, 300),
        _answer("score 10", 3, 900),
        _answer("score 1", 4, 5000, status=504, error="HTTP 504"),
        _answer("score 1", 61, 200),
        _answer("outcomes", 62, 10),
        _answer("metadata", 70, 20, status=None, error="ConnectError"),
    ]
    samples = _samples({0: 700.0, 30: 710.0, 60: 720.0, 90: 730.0, 121: 740.0})  # the last after the last request
    first, second = per_minute(answers, samples)
    assert first["minute"] == 1 and first["requests"] == 4 and first["errors"] == 1
    # single-declaration latency from its successful answers only
    assert first["score_1_p50_ms"] == pytest.approx(200)
    assert first["score_1_p99_ms"] == pytest.approx(298)
    assert first["all_p99_ms"] == pytest.approx(888)
    assert first["rss_mib"] == 710
    assert second["requests"] == 3 and second["errors"] == 1
    assert second["score_1_p50_ms"] == pytest.approx(200)
    assert second["rss_mib"] == 740


def test_summaries_by_kind_and_status():
    answers = [
        _answer("score 1", 1, 100),
        _answer("score 1", 2, 300),
        _answer("score 1", 3, 9000, status=500, error="HTTP 500"),
        _answer("outcomes", 4, 10),
        _answer("metadata", 5, 20, status=None, error="ReadTimeout"),
    ]
    summary = by_kind(answers)
    assert summary["score 1"] == {
        "sent": 3,
        "errors": 1,
        "p50_ms": pytest.approx(200),
        "p99_ms": pytest.approx(298),
        "max_ms": pytest.approx(300),
    }
    assert summary["score 10"]["sent"] == 0 and summary["score 10"]["p50_ms"] is None
    assert summary["metadata"]["errors"] == 1
    assert statuses(answers) == {"200": 3, "500": 1, "no answer": 1}


def test_request_kinds_follow_the_mix_and_the_seed():
    kinds = request_kinds(20_000, seed=8)
    assert kinds == request_kinds(20_000, seed=8)
    assert kinds != request_kinds(20_000, seed=9)
    shares = Counter(kinds)
    for kind, share in MIX.items():
        assert shares[kind] / len(kinds) == pytest.approx(share, abs=0.01)


def test_cases_are_valid_declarations_as_sent_with_their_inspection_result(tmp_path):
    kcs = pd.read_csv(RAW / "df_syn_valid_eng.csv", dtype=str, keep_default_na=False).head(4)
    kcs[["Fraud", "Critical Fraud"]] = [["0", "0"], ["1", "1"], ["1", "2"], ["0", "0"]]
    kcs.loc[3, "HS6 Code"] = "12AB56"  # rejected by validation, so never sent
    kcs.to_csv(tmp_path / "kcs.csv", index=False)
    sent = cases(tmp_path / "kcs.csv")
    assert [c.found for c in sent] == ["clean", "fraud", "critical"]
    assert [c.declaration["declaration_id"] for c in sent] == list(kcs["Declaration ID"].head(3))
    first = sent[0].declaration
    assert first["declaration_date"] == kcs.loc[0, "Date"]
    assert isinstance(first["item_price"], float) and first["item_price"] == float(kcs.loc[0, "Item Price"])
    assert "fraud" not in first and "critical_fraud" not in first


def test_report_names_a_failure():
    answers = [_answer("score 1", 1, 100), _answer("score 1", 2, 5000, status=503, error="HTTP 503")]
    samples = _samples({0: 700.0, 5: 700.0, 10: 700.0})
    report = {
        "started_at": "2026-01-01T00:00:00",
        "load_average_at_end": (1.0, 1.0, 1.0),
        "machine": {"cores": 2, "cpu": "test", "load_average_at_start": (1.0, 1.0, 1.0)},
        "settings": {"bento": "customs-risk-service:test", "seconds": 10, "rate": 1, "warmup_seconds": 0},
        "requests": by_kind(answers),
        "statuses": statuses(answers),
        "errors": 1,
        "first_errors": ["HTTP 503"],
        "minutes": per_minute(answers, samples),
        "memory": memory_growth(samples, 0),
        "passed": False,
        "server_processes": 2,
        "processes_started_during_soak": [],
        "server_busy_cores": 0.5,
        "answers": answers,
    }
    text = markdown(report)
    assert "**FAILED**: 1 failed requests of 2" in text
    assert "503: 1" in text
