"""The reasons a declaration carries (issue 30; docs/api.md, reasons), as models.bundle assembles
them: the largest contributions whose value is evidence (features.matrix.Reason), one per topic,
with their support; a value pick's and a critical pick's line first, a critical pick explained by
the critical booster; the reviewed set's sentences pinned; and evaluate's measure of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.history import FeatureState, with_derived_fields
from features.matrix import (
    CATEGORICAL,
    FEATURE_NAMES,
    FEATURES,
    OUTCOME,
    model_input,
    overall_rate,
    serving_features,
    serving_inputs,
)
from features.schema import DECLARATION_FIELDS, RECORD, check_declarations
from models.bundle import _json_value, reason_quality, reasons_for, select_reasons
from tests.models.test_training_and_bundle import MAX_REASONS, build_model

REVIEWED = Path(__file__).resolve().parents[1] / "data" / "reviewed_reasons.json"
POLICY_LINES = {"value": "duty_at_risk", "critical": "critical_score"}


@pytest.fixture(scope="module")
def model(history):
    return build_model(history)[0]


@pytest.fixture(scope="module")
def records(history) -> pd.DataFrame:
    """The last 300 declarations of history, scored as new ones."""
    return history[DECLARATION_FIELDS].iloc[-300:].reset_index(drop=True)


@pytest.fixture(scope="module")
def scored_all(model, records) -> pd.DataFrame:
    return model.score(records, max_reasons=MAX_REASONS, reasons="all")


def _one_row(**contributions: float) -> np.ndarray:
    row = np.zeros((1, len(FEATURE_NAMES)))
    for name, value in contributions.items():
        row[0, FEATURE_NAMES.index(name)] = value
    return row


def test_the_largest_positive_contributions_that_are_evidence_are_stated_once_per_topic():
    contributions = _one_row(
        importer_first_time=6.0,
        importer_declarations=5.0,  # the importer's activity again: said once
        tax_rate=4.0,  # never a reason
        hs6_fraud_rate=3.0,  # not evidence here (typical)
        importer_fraud_rate=2.0,
        value_vs_hs6=1.0,
        hs_chapter=-1.0,  # lowers the score
    )
    stated = np.ones_like(contributions, dtype=bool)
    for name in ("tax_rate", "hs6_fraud_rate"):
        stated[0, FEATURE_NAMES.index(name)] = False
    expected = [FEATURE_NAMES.index(name) for name in ("importer_first_time", "importer_fraud_rate", "value_vs_hs6")]
    assert select_reasons(contributions, stated, 3) == [expected]
    assert select_reasons(contributions, stated, 2) == [expected[:2]]
    assert select_reasons(contributions, stated, 0) == [[]]
    assert select_reasons(-contributions, stated, 3) == [[FEATURE_NAMES.index("hs_chapter")]]
    assert select_reasons(np.zeros_like(contributions), stated, 3) == [[]]


def _context(features: pd.DataFrame, counts: pd.DataFrame, derived: pd.DataFrame, row: int, outcome: str) -> dict:
    """One declaration's context from the frames, as the reasons were first written (an oracle
    for the service's arrays): record fields, counts, features, outcome."""
    return {
        **derived.iloc[row].to_dict(),
        **counts.iloc[row].to_dict(),
        **{name: features.iat[row, j] for j, name in enumerate(FEATURE_NAMES)},
        OUTCOME: outcome,
    }


def test_reasons_are_the_largest_contributions_of_the_explained_booster_that_are_evidence(model, records, scored_all):
    """Row by row from frames: after the policy's line, the largest positive contributions of
    the booster that explains the pick (critical for a critical pick, else fraud) whose value is
    evidence, the next taken where one is typical or says what a larger one said; each with its
    value, contribution, support and sentence."""
    features, counts = serving_features(records, model.state)
    derived = with_derived_fields(records)
    by_outcome = {outcome: model.contributions(features, outcome)[:, :-1] for outcome in ("fraud", "critical")}
    skipped = 0
    for row, (reasons, source) in enumerate(zip(scored_all["reasons"], scored_all["selected_by"])):
        outcome = "critical" if source == "critical" else "fraud"
        ctx = _context(features, counts, derived, row, outcome)
        own = by_outcome[outcome][row]
        expected, topics = [], set()
        for j in np.argsort(-own, kind="stable"):
            reason = FEATURES[j].reason
            if own[j] <= 0 or len(expected) == MAX_REASONS - (source in POLICY_LINES):
                break
            if reason is None or not reason.evidence(ctx) or reason.topic in topics:
                skipped += 1
                continue
            topics.add(reason.topic)
            expected.append(
                {
                    "feature": FEATURE_NAMES[j],
                    "value": _json_value(features.iat[row, j]),
                    "contribution": float(own[j]),
                    "support": int(ctx[reason.support]),
                    "text": reason.text(ctx),
                }
            )
        stated = reasons[1:] if source in POLICY_LINES else reasons
        assert stated == expected, row
    assert skipped > len(records)  # typical values were passed over, and their next contributions shown


def test_support_counts_the_declarations_a_sentence_rests_on(scored_all):
    checked = 0
    for reasons in scored_all["reasons"]:
        for reason in reasons:
            if reason["contribution"] is None:
                assert reason["support"] is None
                continue
            checked += 1
            assert isinstance(reason["support"], int) and reason["support"] >= 0
            if "earlier inspected declaration" in reason["text"]:
                n = reason["support"]
                assert ("the only earlier" in reason["text"]) == (n == 1)
                assert f"{n} earlier inspected declarations" in reason["text"] or n == 1
                assert ("%" in reason["text"]) == (n >= 5)  # counts, never a percentage, under 5
    assert checked > 100


def test_a_value_pick_and_a_critical_pick_say_why_first(model, scored_all):
    totals = model.state.totals["all"].loc["all"]
    overall = overall_rate(totals["critical_count"], totals["inspected_count"])
    for source, feature in POLICY_LINES.items():
        picked = scored_all[scored_all["selected_by"] == source]
        assert len(picked), f"no {source} pick in the sample"
        for row in picked.itertuples():
            first = row.reasons[0]
            assert first["feature"] == feature
            assert first["contribution"] is None and first["support"] is None
            if source == "value":
                assert first["text"].startswith("declared duty ")
                assert first["text"].endswith(f" at {row.risk_score:.0%} fraud risk")
            else:  # the critical risk named against its overall rate, not restated beside the fraud risk
                assert first["value"] == row.critical_score
                assert first["text"] == (
                    f"critical (public-safety) fraud risk {row.critical_score:.1%}, against {overall:.1%} overall"
                )
    model_picks = scored_all[scored_all["selected_by"].isin(["model", "random"])]
    assert all(r[0]["contribution"] is not None for r in model_picks["reasons"] if r)


def test_a_critical_pick_is_explained_by_the_critical_booster(model, records, scored_all):
    features, _ = serving_features(records, model.state)
    fraud, critical = (model.contributions(features, outcome)[:, :-1] for outcome in ("fraud", "critical"))
    explained = 0
    for row in np.flatnonzero(scored_all["selected_by"] == "critical"):
        for reason in scored_all.at[row, "reasons"][1:]:
            j = FEATURE_NAMES.index(reason["feature"])
            assert reason["contribution"] == critical[row, j] != fraud[row, j]
            explained += 1
    assert explained


def test_a_missing_party_or_a_declared_field_gives_way_to_the_evidence_below_it(model, records):
    """Forced to the top, a missing seller's and courier's features, a tax rate and a net mass
    are passed over; a new importer's first declaration is stated, once."""
    one = records.head(1).assign(seller_id=None, courier_id=None, importer_id="NEW-IMPORTER")
    typed = check_declarations(one, RECORD).valid
    contributions = _one_row(
        seller_fraud_rate=6.0,
        courier_critical_rate=5.0,
        tax_rate=4.0,
        seller_declarations=3.0,
        net_mass_kg=2.5,
        importer_first_time=2.0,
        importer_declarations=1.0,
    )
    (reasons,) = reasons_for(serving_inputs(typed, model.state), model.state, np.arange(1), contributions, 3)
    assert reasons == [
        {
            "feature": "importer_first_time",
            "value": 1.0,
            "contribution": 2.0,
            "support": 0,
            "text": "importer NEW-IMPORTER: first declaration",
        }
    ]


def test_an_unseen_category_is_never_a_reason(model, records):
    """An office, an origin or a route history never saw has no record to state."""
    one = records.head(1).assign(office_id="999", origin_country="AQ", departure_country="AQ")
    typed = check_declarations(one, RECORD).valid
    contributions = _one_row(office_id=3.0, origin_country=2.0, route_fraud_rate=1.0)
    (reasons,) = reasons_for(serving_inputs(typed, model.state), model.state, np.arange(1), contributions, 3)
    assert reasons == []


# --- the reviewed set ----------------------------------------------------------------------------


class _PinnedCounts(FeatureState):
    """The reviewed declarations' counts as history held them for each, in place of a fitted
    history: serving_inputs computes their features from them as the service would."""

    def __init__(self, counts: dict[str, np.ndarray], categories: dict[str, list[str]], smoothing: float):
        super().__init__({}, categories, smoothing, "2021-03-31")
        self.pinned = counts

    def lookup(self, columns, rows: int) -> dict[str, np.ndarray]:
        return self.pinned


def test_the_reviewed_declarations_state_the_reviewed_sentences():
    reviewed = json.loads(REVIEWED.read_text())
    declarations = reviewed["declarations"]
    assert len(declarations) >= 20
    records = check_declarations(pd.DataFrame([d["record"] for d in declarations]), RECORD).valid
    counts = {
        name: np.array([d["counts"][name] for d in declarations], dtype="float64") for name in declarations[0]["counts"]
    }
    derived = records.assign(hs_chapter=records["hs6_code"].str[:2])
    categories = {column: sorted(derived[column].dropna().unique().tolist()) for column in CATEGORICAL}
    state = _PinnedCounts(counts, categories, reviewed["smoothing"])
    inputs = serving_inputs(records, state)
    contributions = np.array([d["contributions"] for d in declarations])
    for outcome in ("fraud", "critical"):
        rows = np.array([i for i, d in enumerate(declarations) if d["outcome"] == outcome])
        stated = reasons_for(inputs, state, rows, contributions[rows], MAX_REASONS, outcome)
        for i, reasons in zip(rows, stated):
            assert reasons == declarations[i]["reasons"], declarations[i]["record"]["declaration_id"]


# --- evaluate's measure ----------------------------------------------------------------------------


def test_reason_quality_measures_what_the_service_states(model, records):
    scored = model.score(records, max_reasons=MAX_REASONS)
    matrix = pd.DataFrame(serving_inputs(records, model.state).matrix, columns=FEATURE_NAMES)
    quality = reason_quality(model, matrix, scored)
    assert set(quality) == {
        "reasons_rows",
        "reasons_pass_share",
        "reasons_top_pass_share",
        "reasons_explained_share",
        "reasons_faithfulness_shown",
        "reasons_faithfulness_random",
    }
    red_or_yellow = scored[scored["lane"] != "green"]
    assert quality["reasons_rows"] == len(red_or_yellow)
    served = [any(r["contribution"] is not None for r in reasons) for reasons in red_or_yellow["reasons"]]
    assert quality["reasons_explained_share"] == pytest.approx(np.mean(served))
    assert quality["reasons_pass_share"] == 1.0
    assert quality["reasons_top_pass_share"] < 1.0  # the plain top contributions hold typical values
    assert quality["reasons_faithfulness_shown"] > quality["reasons_faithfulness_random"]
    assert quality == reason_quality(model, matrix, scored)  # seeded


def test_reason_quality_reads_the_stored_matrix_as_the_service_reads_its_arrays(model, records):
    """evaluate passes the matrix featurize wrote (model_input's encoding): the same figures."""
    scored = model.score(records, max_reasons=MAX_REASONS)
    stored = model_input(serving_features(records, model.state)[0])
    served = pd.DataFrame(serving_inputs(records, model.state).matrix, columns=FEATURE_NAMES)
    assert reason_quality(model, stored, scored) == reason_quality(model, served, scored)
