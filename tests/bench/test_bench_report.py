"""The scoring section's report (issue 14): every figure a run measures reaches the table, and
each acceptance point is judged from the ratio or rate it names, so that an hour of
measurement never ends in a KeyError or a verdict read off the wrong figure."""

from __future__ import annotations

from bench.report import scoring_table, targets

STEPS = {"check_requests (the contract's rules, online)": 0.001, "= score_declarations, end to end": 0.004}


def _results(single_p50_over_raw: float, batch_over_baseline: float, http_p50_ms: float) -> dict:
    in_process = {
        "raw_predict_ms": 0.05,
        "single": {
            "calls": 100,
            "p50_ms": 4.0,
            "p99_ms": 20.0,
            "mean_ms": 6.0,
            "p50_over_raw_predict": single_p50_over_raw,
            "steps": STEPS,
        },
        "batch": {
            "rows": 1000,
            "baseline_seconds": 0.1,
            "seconds": 0.1 * batch_over_baseline,
            "over_baseline": batch_over_baseline,
            "declarations_per_second": 1000 / (0.1 * batch_over_baseline),
            "breakdown": {"rows": 1000, "rows_with_reasons": 150, "seconds": STEPS},
        },
        "validation_ms": {"online_single": 1.0, "pandera_single": 50.0, "online_batch": 30.0, "pandera_batch": 60.0},
        "audit_store": {"single_full_ms": 1.0, "batch_full_ms": 20.0, "single_normal_ms": 0.5, "batch_normal_ms": 18.0},
        "peak_rss_bytes": 4e8,
    }
    http = {
        "single_p50_ms": http_p50_ms,
        "single_p99_ms": 20.0,
        "healthz_p50_ms": 2.0,
        "single_p50_over_healthz_p50": http_p50_ms / 2.0,
        "batch_per_second": 3500.0,
        "batch_no_reasons_per_second": 6000.0,
        "mlflow_batch_per_second": 1000.0,
        "batch_over_mlflow": 3.5,
        "idle_rss_bytes": 7e8,
        "peak_rss_bytes": 7.5e8,
        "failed_requests": 0,
        "single_rate": 20.0,
        "batch_rows": 500,
        "seconds": 15,
    }
    return {"scoring": {"in_process": in_process, "http": http}}


def _verdicts(results: dict) -> dict[str, bool]:
    return {t["target"]: t["met"] for t in targets(results)}


def test_each_acceptance_point_is_judged_on_its_own_figure():
    met = _verdicts(_results(single_p50_over_raw=40, batch_over_baseline=1.5, http_p50_ms=8))
    assert all(met.values()), met
    unmet = _verdicts(_results(single_p50_over_raw=60, batch_over_baseline=2.5, http_p50_ms=12))
    assert {target for target, ok in unmet.items() if not ok} == {
        "one declaration in process <= 50x a raw predict of one prepared row",
        "1,000 declarations, default reasons, <= 2x features + both predicts",
        "HTTP single declaration p50 <= 10 ms",
        "HTTP single declaration p50 <= 5x the same server's GET /healthz p50",
        ">= 5,000 declarations/s in process",
    }


def test_the_table_shows_every_step_measured():
    table = "\n".join(scoring_table(_results(100, 5, 10)["scoring"]))
    assert all(step in table for step in STEPS)
    assert "100x" in table and "5.0x" in table and "3.5x" in table


def test_the_store_section_shows_each_configuration_and_judges_two_replicas_on_their_ratio():
    """Issue 31: the table holds the three configurations side by side; the target is judged on
    2 replicas over 1 on PostgreSQL, not on any one rate."""
    from bench.report import store_table

    figures = {
        "declarations_per_second": 900.0,
        "p50_ms": 200.0,
        "p99_ms": 400.0,
        "replicas_cores": 1.6,
        "decisions_per_replica_core_second": 560.0,
        "postgresql_cores": 0.1,
        "load_generator_cores": 0.2,
    }
    store = {
        "batch": 100,
        "in_flight_per_replica": 2,
        "seconds": 10,
        "cores": 2,
        "configurations": {
            name: {**figures, "failed_requests": 0} for name in ("sqlite_1", "postgresql_1", "postgresql_2")
        },
        "two_over_one_postgresql": 1.3,
        "postgresql_over_sqlite": 0.95,
    }
    table = "\n".join(store_table(store))
    assert all(name in table for name in ("1 replica, SQLite", "1 replica, PostgreSQL", "2 replicas, one PostgreSQL"))
    assert "1.30x" in table
    assert _verdicts({"store": store}) == {"2 replicas on one PostgreSQL >= 1.4x one (batches of 100)": False}
    assert _verdicts({"store": {**store, "two_over_one_postgresql": 1.5}}) == {
        "2 replicas on one PostgreSQL >= 1.4x one (batches of 100)": True
    }
