"""History of every declaration (CONTRACT section 1): volume counts every declaration, rates count
only inspected ones, each from the day its outcome was known. Hand-computed on a small history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.history import ENTITIES, FeatureState, point_in_time_counts, with_derived_fields
from features.matrix import CATEGORICAL, training_features

SMOOTHING = 10.0
FIELDS = {
    "office_id": "10",
    "process_type": "A",
    "import_type": "11",
    "import_use": "21",
    "payment_type": "11",
    "transport_mode": "10",
    "declarant_id": "DEC1",
    "seller_id": None,
    "courier_id": None,
    "hs6_code": "440890",
    "departure_country": "BE",
    "origin_country": "BE",
    "tax_rate": 8.0,
    "tax_type": "A",
    "origin_indicator": "B",
    "net_mass_kg": 100.0,
    "item_price": 1000.0,
    "container_number": None,
    "bill_of_lading": None,
}


def _row(n: int, day: int, importer: str, fraud, inspected_on: int | None, critical=None) -> dict:
    start = pd.Timestamp("2020-01-01")
    critical = critical if critical is not None else (None if fraud is None else 0)
    return {
        **FIELDS,
        "declaration_id": f"D{n}",
        "declaration_date": start + pd.Timedelta(days=day),
        "importer_id": importer,
        "fraud": fraud,
        "critical_fraud": critical,
        "inspected_on": None if inspected_on is None else start + pd.Timedelta(days=inspected_on),
    }


@pytest.fixture
def history() -> pd.DataFrame:
    rows = [
        _row(1, 1, "A", 1, 5),  # fraud, known only on day 5
        _row(2, 2, "A", None, None),  # released uninspected
        _row(3, 3, "A", 0, 3),  # clean, known the same day
        _row(4, 4, "A", None, None),  # question on day 4
        _row(5, 6, "A", None, None),  # question on day 6
        _row(6, 2, "B", 1, 2, critical=1),  # another importer: counts in the overall prior only
        _row(7, 6, "B", 0, None),  # inspected, no inspection date: known from its declaration day
    ]
    frame = pd.DataFrame(rows)
    frame["inspected_on"] = pd.to_datetime(frame["inspected_on"])
    frame["fraud"] = frame["fraud"].astype("Float64")
    frame["critical_fraud"] = frame["critical_fraud"].astype("Float64")
    return frame.sort_values(["declaration_date", "declaration_id"]).reset_index(drop=True)


def _counts(history: pd.DataFrame, declaration_id: str) -> pd.Series:
    counts = point_in_time_counts(with_derived_fields(history))
    return counts.loc[history.index[history["declaration_id"] == declaration_id][0]]


def test_volume_counts_every_declaration_and_rates_only_what_was_known_inspected(history):
    day4 = _counts(history, "D4")
    assert day4["importer__declarations"] == 3  # D1, D2, D3: inspected or not
    assert day4["importer__inspected_count"] == 1  # D3 (known day 3); D1's outcome only on day 5
    assert day4["importer__fraud_count"] == 0
    day6 = _counts(history, "D5")
    assert day6["importer__declarations"] == 4
    assert day6["importer__inspected_count"] == 2  # D1 (known day 5) and D3
    assert day6["importer__fraud_count"] == 1
    assert day6["all__inspected_count"] == 3  # D1, D3, D6; D7 is the same day
    assert day6["all__critical_count"] == 1


def test_importer_fraud_rate_is_the_shrunk_rate_over_earlier_known_inspections(history):
    matrix, _ = training_features(history, SMOOTHING)
    row = history.index[history["declaration_id"] == "D5"][0]
    prior = (2 + 1) / (3 + 2)  # overall: 2 frauds (D1, D6) of 3 inspections known before day 6 (+ D3)
    expected = (1 + SMOOTHING * prior) / (2 + SMOOTHING)
    assert matrix.loc[row, "importer_fraud_rate"] == pytest.approx(expected, abs=1e-12)
    assert matrix.loc[row, "importer_inspected"] == 2
    assert matrix.loc[row, "importer_declarations"] == 4


def test_serving_state_counts_every_outcome_and_every_declaration(history):
    state = FeatureState.fit(with_derived_fields(history), CATEGORICAL, SMOOTHING)
    importer = state.totals["importer"].loc["A"]
    assert importer["declarations"] == 5
    assert importer["inspected_count"] == 2
    assert importer["fraud_count"] == 1


@pytest.mark.parametrize("seed", range(5))
def test_an_outcome_not_yet_known_never_reaches_a_feature(history, seed):
    """Flip every label whose outcome was known on or after a row's day: that row's features
    must not move (the leak a closed-loop simulation would otherwise hide)."""
    rng = np.random.default_rng(seed)
    derived = with_derived_fields(history)
    matrix, _ = training_features(history, SMOOTHING)
    for row in range(len(history)):
        changed = history.copy()
        later = derived["known_day"].to_numpy() >= derived["day"].to_numpy()[row]
        inspected = changed["fraud"].notna().to_numpy()
        flip = later & inspected & (rng.random(len(history)) < 0.8)
        changed.loc[flip, "fraud"] = 1 - changed.loc[flip, "fraud"]
        again, _ = training_features(changed, SMOOTHING)
        numeric = [name for name in matrix.columns if name not in CATEGORICAL]
        pd.testing.assert_series_equal(
            again.loc[row, numeric].astype(float), matrix.loc[row, numeric].astype(float), check_names=False
        )


def test_every_entity_reads_the_same_label_semantics(history):
    counts = point_in_time_counts(with_derived_fields(history))
    for entity in ENTITIES:
        assert (counts[f"{entity.name}__inspected_count"] <= counts[f"{entity.name}__declarations"] + 1e-9).all()
