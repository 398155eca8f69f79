"""Point-in-time features (docs/design.md invariants 1 and 2): training and serving compute the same
features from the same code path, a row never sees its own day or the future, and unseen
entities and categories in serving get defined values."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from features.history import (
    ENTITIES,
    FeatureState,
    entity_keys,
    point_in_time_counts,
    state_columns,
    with_derived_fields,
)
from features.matrix import (
    CATEGORICAL,
    FEATURE_NAMES,
    FEATURES,
    FEATURES_BY_NAME,
    OUTCOME,
    OVERALL_COUNTS,
    RATE_FACTOR,
    evidence,
    model_input,
    overall_rate,
    serving_features,
    serving_inputs,
    training_features,
)
from features.schema import DECLARATION_FIELDS, RECORD, check_declarations

SMOOTHING = 10.0  # params.yaml features.smoothing
NAN_WORD = re.compile(r"\bnan\b", re.IGNORECASE)  # a missing value leaking into a sentence
# "days since first/last seen" is NaN, documented as "never seen", for an entity without history
RECENCY_FEATURES = {
    f"{entity.name}_days_since_{which}" for entity in ENTITIES if entity.name != "all" for which in ("first", "last")
}
NUMERIC_FEATURES = [name for name in FEATURE_NAMES if name not in CATEGORICAL]
# No shrinking: each example recomputes features (~0.2 s), and shrinking a failure would take
# minutes; the failing draw (row, seed, fields) is printed as is.
PROPERTY = settings(
    max_examples=15,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)


def assert_same_features(actual: pd.DataFrame, expected: pd.DataFrame, atol: float = 1e-9) -> None:
    """Numeric features equal within atol (NaN only where NaN), categoricals equal as values."""
    assert list(actual.columns) == FEATURE_NAMES
    assert list(expected.columns) == FEATURE_NAMES
    assert list(actual.index) == list(expected.index)
    for name in NUMERIC_FEATURES:
        a = actual[name].to_numpy(dtype="float64")
        e = expected[name].to_numpy(dtype="float64")
        np.testing.assert_allclose(a, e, rtol=0, atol=atol, equal_nan=True, err_msg=name)
    for name in CATEGORICAL:
        a = actual[name].astype(object).where(actual[name].notna(), None).tolist()
        e = expected[name].astype(object).where(expected[name].notna(), None).tolist()
        assert a == e, name


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def trained(history):
    return training_features(history, SMOOTHING)


@pytest.fixture(scope="module")
def small_history(history) -> pd.DataFrame:
    """~300 rows of the 12 busiest importers: dense histories, fast to recompute."""
    top = history["importer_id"].value_counts().index[:12]
    small = history[history["importer_id"].isin(top)].reset_index(drop=True)
    assert 200 <= len(small) <= 600
    return small


@pytest.fixture(scope="module")
def small_trained(small_history):
    return training_features(small_history, SMOOTHING)


@pytest.fixture
def new_records(declarations, trained) -> pd.DataFrame:
    """Client declarations, typed; row 0 has every entity and category unseen, row 1 no
    seller and no courier, the rest are known."""
    records = check_declarations(declarations, RECORD).valid
    unseen = {
        "importer_id": "NEW-IMPORTER",
        "declarant_id": "NEW-DECLARANT",
        "seller_id": "NEW-SELLER",
        "courier_id": "NEW-COURIER",
        "hs6_code": "999999",
        "office_id": "999",
        "process_type": "Z",
        "import_type": "99",
        "import_use": "99",
        "payment_type": "99",
        "transport_mode": "99",
        "tax_type": "NEWTAX",
        "origin_indicator": "Q",
        "departure_country": "AQ",
        "origin_country": "AQ",
    }
    for field, value in unseen.items():
        records.loc[0, field] = value
    records.loc[1, ["seller_id", "courier_id"]] = None
    # a new declaration arrives after the fitted history
    records["declaration_date"] = pd.Timestamp(trained[1].history_end) + pd.Timedelta(days=3)
    state = trained[1]
    for column in CATEGORICAL:
        if column in unseen:
            assert unseen[column] not in state.categories[column], column
    return records


def _priors(state: FeatureState) -> tuple[float, float]:
    total = state.totals["all"].loc["all"]
    n = total["declarations"]
    return (total["fraud_count"] + 1) / (n + 2), (total["critical_count"] + 1) / (n + 2)


# ---------------------------------------------------------------------------------------------
# (1) parity: training rows of day D == serving rows of day D from the state fitted before D


def _parity_days(history: pd.DataFrame) -> list[pd.Timestamp]:
    sizes = history["declaration_date"].value_counts().sort_index()
    busy = sizes[sizes >= 5].index
    return [busy[int(q * (len(busy) - 1))] for q in (0.1, 0.35, 0.6, 0.85, 1.0)]


@pytest.mark.parametrize("which", range(5))
def test_serving_matches_training_on_day_d(history, trained, which):
    training, full_state = trained
    day = _parity_days(history)[which]
    before = history[history["declaration_date"] < day]
    on_day = history[history["declaration_date"] == day]
    assert len(before) > 0 and len(on_day) >= 5

    state = FeatureState.fit(with_derived_fields(before), CATEGORICAL, SMOOTHING)
    state.categories = full_state.categories
    served, counts = serving_features(on_day[DECLARATION_FIELDS], state)

    assert_same_features(served, training.loc[on_day.index])
    for name in CATEGORICAL:
        assert list(served[name].cat.categories) == list(training[name].cat.categories)
    # the state really is the history before D, and rows have real histories to compare
    assert (counts["all__declarations"] == len(before)).all()
    assert (counts["all__fraud_count"] == before["fraud"].sum()).all()
    if which > 0:
        assert (served["importer_declarations"] > 0).any()
        assert served["importer_days_since_last"].notna().any()


def test_point_in_time_counts_match_state_counts(history):
    """Below the features: the per-entity counts of both paths agree column by column."""
    day = _parity_days(history)[2]
    before = with_derived_fields(history[history["declaration_date"] < day])
    on_day = history["declaration_date"] == day
    training = point_in_time_counts(with_derived_fields(history))[on_day]
    state = FeatureState.fit(before, CATEGORICAL, SMOOTHING)
    serving = state.counts_for(with_derived_fields(history[on_day]))
    assert list(serving.columns) == list(training.columns)
    assert list(training.columns) == [f"{e.name}__{c}" for e in ENTITIES for c in state_columns(e)]
    pd.testing.assert_frame_equal(serving, training, check_exact=False, atol=1e-9, rtol=0)


@pytest.mark.parametrize("row", [150, 1500, 2999, 3999])
def test_point_in_time_counts_match_a_naive_count(history, row):
    """An independent oracle: count earlier declarations of each entity with plain filters."""
    derived = with_derived_fields(history)
    counts = point_in_time_counts(derived)
    target = derived.iloc[row]
    earlier = derived[derived["day"] < target["day"]]
    for entity in ENTITIES:
        if any(pd.isna(target[c]) for c in entity.columns):
            same = earlier.iloc[0:0]
        else:
            mask = np.ones(len(earlier), dtype=bool)
            for column in entity.columns:
                mask &= (earlier[column] == target[column]).to_numpy()
            same = earlier[mask]
        got = counts.iloc[row]
        assert got[f"{entity.name}__declarations"] == len(same), entity.name
        assert got[f"{entity.name}__fraud_count"] == same["fraud"].sum(), entity.name
        assert got[f"{entity.name}__critical_count"] == same["critical_fraud"].sum(), entity.name
        last = got[f"{entity.name}__last_seen_day"]
        if len(same):
            assert last == same["day"].max(), entity.name
        else:
            assert np.isnan(last), entity.name


def test_shrunk_rates_follow_the_formula(history, trained):
    """importer_fraud_rate = (fraud + m * prior) / (n + m), prior = (all_fraud + 1) / (all_n + 2)."""
    training, _ = trained
    counts = point_in_time_counts(with_derived_fields(history))
    prior = (counts["all__fraud_count"] + 1) / (counts["all__declarations"] + 2)
    expected = (counts["importer__fraud_count"] + SMOOTHING * prior) / (counts["importer__declarations"] + SMOOTHING)
    np.testing.assert_allclose(training["importer_fraud_rate"], expected, rtol=0, atol=1e-12)
    assert training["importer_fraud_rate"].between(0, 1).all()
    # and the feature moves with the importer's own record, not only with the prior
    assert training["importer_fraud_rate"].nunique() > 50


# ---------------------------------------------------------------------------------------------
# (2) no leakage, as properties


MUTABLE_STRINGS = [
    "importer_id",
    "declarant_id",
    "seller_id",
    "courier_id",
    "hs6_code",
    "office_id",
    "process_type",
    "tax_type",
    "departure_country",
    "origin_country",
]
MUTABLE_FIELDS = MUTABLE_STRINGS + ["tax_rate", "net_mass_kg", "item_price", "declaration_date"]


def _mutate(frame: pd.DataFrame, rows: pd.Index, fields, rng: np.random.Generator) -> pd.DataFrame:
    out = frame.copy()
    n = len(rows)
    if not n:
        return out
    for field in fields:
        if field in MUTABLE_STRINGS:
            pool = np.array(list(frame[field].dropna().unique()) + ["NEW-1", "NEW-2", "999999"], dtype=object)
            out.loc[rows, field] = rng.choice(pool, size=n)
        elif field == "declaration_date":  # stays on or after its day: later is still later
            shift = pd.to_timedelta(rng.integers(0, 90, size=n), unit="D")
            out.loc[rows, field] = frame.loc[rows, field] + shift
        else:
            out.loc[rows, field] = rng.uniform(0, 1e6, size=n)
    return out


@PROPERTY
@given(data=st.data())
def test_labels_and_fields_of_the_same_day_or_later_never_reach_a_row(small_history, small_trained, data):
    features, _ = small_trained
    position = data.draw(st.integers(0, len(small_history) - 1), label="row")
    row = small_history.index[position]
    day = small_history.loc[row, "declaration_date"]
    on_or_after = small_history["declaration_date"] >= day
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))

    changed = small_history.copy()
    # any labels on or after the row's day, the row's own label included
    fraud = rng.integers(0, 2, size=on_or_after.sum()).astype("int8")
    changed.loc[on_or_after, "fraud"] = fraud
    changed.loc[on_or_after, "critical_fraud"] = fraud * rng.integers(0, 2, size=len(fraud)).astype("int8")
    # any fields of the other rows on or after that day
    fields = data.draw(st.sets(st.sampled_from(MUTABLE_FIELDS), max_size=len(MUTABLE_FIELDS)), label="fields")
    others = small_history.index[on_or_after & (small_history.index != row)]
    changed = _mutate(changed, others, sorted(fields), rng)

    after, _ = training_features(changed, SMOOTHING)
    unaffected = small_history.index[small_history["declaration_date"] < day].append(pd.Index([row]))
    assert_same_features(after.loc[unaffected], features.loc[unaffected], atol=1e-12)


def test_labels_do_reach_later_rows(small_history, small_trained):
    """The property above is not vacuous: flipping a day's labels changes the next rows."""
    features, _ = small_trained
    day = small_history["declaration_date"].iloc[len(small_history) // 2]
    changed = small_history.copy()
    on_day = changed["declaration_date"] == day
    changed.loc[on_day, "fraud"] = 1 - changed.loc[on_day, "fraud"]
    changed.loc[on_day, "critical_fraud"] = 0
    after, _ = training_features(changed, SMOOTHING)
    same_or_before = small_history["declaration_date"] <= day
    assert_same_features(after[same_or_before], features[same_or_before], atol=1e-12)
    later = ~same_or_before
    assert not np.allclose(after.loc[later, "office_fraud_rate"], features.loc[later, "office_fraud_rate"])


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1))
def test_row_order_never_changes_features(small_history, small_trained, new_records_small, seed):
    features, state = small_trained
    order = np.random.default_rng(seed).permutation(len(small_history))
    shuffled = small_history.iloc[order].reset_index(drop=True)
    after, shuffled_state = training_features(shuffled, SMOOTHING)

    expected = features.set_axis(small_history["declaration_id"].to_numpy())
    actual = after.set_axis(shuffled["declaration_id"].to_numpy()).loc[expected.index]
    assert_same_features(actual, expected, atol=1e-12)
    # the fitted state does not depend on the order either
    assert shuffled_state.categories == state.categories
    assert shuffled_state.history_end == state.history_end
    assert_same_features(
        serving_features(new_records_small, shuffled_state)[0],
        serving_features(new_records_small, state)[0],
        atol=1e-12,
    )


@pytest.fixture(scope="module")
def new_records_small(small_history) -> pd.DataFrame:
    return small_history[DECLARATION_FIELDS].tail(8).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# (3) unseen entities, HS codes and categories in serving


def test_unseen_entities_get_the_prior(trained, new_records):
    _, state = trained
    features, counts = serving_features(new_records, state)
    assert list(features.columns) == FEATURE_NAMES
    assert list(features.index) == list(new_records.index)
    prior_fraud, prior_critical = _priors(state)
    assert 0 < prior_fraud < 1 and 0 < prior_critical < 1

    new = features.iloc[0]
    for entity in ENTITIES:
        if entity.name == "all":
            continue
        assert new[f"{entity.name}_declarations"] == 0, entity.name
        assert new[f"{entity.name}_fraud_rate"] == pytest.approx(prior_fraud, abs=1e-12), entity.name
        assert new[f"{entity.name}_critical_rate"] == pytest.approx(prior_critical, abs=1e-12), entity.name
    for name in RECENCY_FEATURES:
        assert np.isnan(new[name]), name

    no_seller = features.iloc[1]
    for entity in ("seller", "courier"):
        assert no_seller[f"{entity}_declarations"] == 0
        assert no_seller[f"{entity}_fraud_rate"] == pytest.approx(prior_fraud, abs=1e-12)
    # the counts behind the reasons agree
    assert counts.loc[0, "importer__declarations"] == 0
    assert counts.loc[0, "all__declarations"] == state.totals["all"].loc["all", "declarations"]


def test_known_entities_are_rated_from_the_whole_history(history, trained, new_records):
    _, state = trained
    features, _ = serving_features(new_records, state)
    prior_fraud, _ = _priors(state)
    for row in (2, 3, 4):
        importer = new_records.loc[row, "importer_id"]
        past = history[history["importer_id"] == importer]
        assert len(past) > 0
        assert features.loc[row, "importer_declarations"] == len(past)
        expected_rate = (past["fraud"].sum() + SMOOTHING * prior_fraud) / (len(past) + SMOOTHING)
        assert features.loc[row, "importer_fraud_rate"] == pytest.approx(expected_rate, abs=1e-12)
        last_day = past["declaration_date"].max()
        days = (new_records.loc[row, "declaration_date"] - last_day).days
        assert features.loc[row, "importer_days_since_last"] == days
        assert features.loc[row, "importer_days_since_last"] >= 3


def test_only_recency_features_may_be_nan(trained, new_records):
    training, state = trained
    served, _ = serving_features(new_records, state)
    for matrix in (training, served):
        numeric_nan = {name for name in NUMERIC_FEATURES if matrix[name].isna().any()}
        assert numeric_nan <= RECENCY_FEATURES, numeric_nan
    # in training, every categorical value is in the vocabulary, and first sightings are NaN
    assert not training[CATEGORICAL].isna().any().any()
    assert training["importer_days_since_last"].isna().any()
    # rates are probabilities everywhere
    for matrix in (training, served):
        rates = [name for name in NUMERIC_FEATURES if name.endswith("_rate") and name != "tax_rate"]
        values = matrix[rates].to_numpy()
        assert np.isfinite(values).all() and (values > 0).all() and (values < 1).all()


def test_unknown_categories_become_nan_without_crashing(trained, new_records):
    _, state = trained
    served, _ = serving_features(new_records, state)
    derived = with_derived_fields(new_records)
    for column in CATEGORICAL:
        assert isinstance(served[column].dtype, pd.CategoricalDtype), column
        assert list(served[column].cat.categories) == state.categories[column], column
        unseen = ~derived[column].isin(state.categories[column])
        assert served[column].isna().tolist() == unseen.tolist(), column
        known = ~unseen
        assert served.loc[known, column].astype(str).tolist() == derived.loc[known, column].tolist()
    assert served.loc[0, CATEGORICAL].isna().all()  # row 0 has every category unseen


def test_serving_does_not_depend_on_the_batch(trained, new_records):
    """A declaration scores the same alone or among others."""
    _, state = trained
    together, _ = serving_features(new_records, state)
    for row in range(len(new_records)):
        alone, _ = serving_features(new_records.iloc[[row]], state)
        assert_same_features(alone, together.iloc[[row]], atol=0)


def test_entity_keys_are_null_when_any_part_is_null(history):
    derived = with_derived_fields(history.head(20)).copy()
    derived.loc[0, "seller_id"] = None
    derived.loc[1, "importer_id"] = None
    by_name = {entity.name: entity for entity in ENTITIES}
    assert entity_keys(derived, by_name["seller"]).isna().tolist()[:2] == [True, False]
    assert entity_keys(derived, by_name["importer_hs6"]).isna().tolist()[:2] == [False, True]
    keys = entity_keys(derived, by_name["route"])
    assert keys.notna().all() and keys.nunique() >= 1
    assert (entity_keys(derived, by_name["all"]) == "all").all()


def _reindexed_counts(state: FeatureState, records: pd.DataFrame) -> pd.DataFrame:
    """The serving lookup as it was first written: each entity's totals reindexed by the rows'
    key strings (an independent oracle for the indexes built at load)."""
    columns = {}
    for entity in ENTITIES:
        found = state.totals[entity.name].reindex(entity_keys(records, entity).to_numpy())
        for column in found.columns:
            values = found[column].to_numpy(dtype="float64")
            if column in ("declarations", "inspected_count", "fraud_count", "critical_count"):
                values = np.nan_to_num(values, nan=0.0)
            columns[f"{entity.name}__{column}"] = values
    return pd.DataFrame(columns, index=records.index)


def test_indexed_lookup_matches_reindexing_with_null_and_unseen_keys(history, trained, new_records):
    """The dict-and-array lookup answers what reindexing answered, bit for bit: known keys, keys
    never seen (row 0, and one part of a pair unseen), null keys (row 1: no seller, no courier;
    one part of a pair null), and a key string that looks null but is not."""
    _, state = trained
    known = check_declarations(history[DECLARATION_FIELDS].iloc[-200:], RECORD).valid
    records = pd.concat([new_records, known], ignore_index=True)
    records.loc[len(new_records), "hs6_code"] = "999998"  # importer known, importer_hs6 pair unseen
    records.loc[len(new_records) + 1, "departure_country"] = None  # route: one part null
    records.loc[len(new_records) + 2, "importer_id"] = "nan"  # a string, not a null
    derived = with_derived_fields(records)
    expected = _reindexed_counts(state, derived)
    actual = state.counts_for(derived)
    pd.testing.assert_frame_equal(actual, expected, check_exact=True)
    arrays = state.lookup(derived, len(derived))
    assert list(arrays) == list(expected.columns)
    for column, values in arrays.items():
        assert isinstance(values, np.ndarray) and values.dtype == np.float64, column
    # what each kind of key answers
    assert actual.loc[0, "importer__declarations"] == 0 and np.isnan(actual.loc[0, "importer__first_seen_day"])
    assert actual.loc[1, "seller__declarations"] == 0 and np.isnan(actual.loc[1, "seller__last_seen_day"])
    assert actual.loc[len(new_records) + 1, "route__declarations"] == 0
    assert actual.loc[len(new_records), "importer__declarations"] > 0
    assert actual.loc[len(new_records), "importer_hs6__declarations"] == 0
    assert (actual["all__declarations"] == state.totals["all"].loc["all", "declarations"]).all()


def test_serving_inputs_are_serving_features_as_arrays(history, trained, new_records):
    """The arrays the service scores are `model_input` of `serving_features`' frame and its
    counts, bit for bit, including unseen categories and entities and missing parties."""
    _, state = trained
    known = check_declarations(history[DECLARATION_FIELDS].iloc[-300:], RECORD).valid
    records = pd.concat([new_records, known], ignore_index=True)
    x, counts = serving_features(records, state)
    inputs = serving_inputs(records, state)
    assert inputs.matrix.shape == (len(records), len(FEATURE_NAMES))
    np.testing.assert_array_equal(inputs.matrix, model_input(x).to_numpy())
    pd.testing.assert_frame_equal(pd.DataFrame(inputs.counts, index=counts.index), counts, check_exact=True)
    derived = with_derived_fields(records)
    for column in ("hs_chapter", "day", "log_value_per_kg"):
        assert inputs.fields[column].tolist() == derived[column].tolist(), column


# ---------------------------------------------------------------------------------------------
# (4) FeatureState round trip


def test_feature_state_save_load_round_trip(trained, new_records, tmp_path):
    _, state = trained
    state.save(tmp_path / "state")
    loaded = FeatureState.load(tmp_path / "state")
    assert loaded.categories == state.categories
    assert loaded.smoothing == state.smoothing
    assert loaded.history_end == state.history_end
    assert set(loaded.totals) == set(state.totals)
    expected, expected_counts = serving_features(new_records, state)
    actual, actual_counts = serving_features(new_records, loaded)
    pd.testing.assert_frame_equal(actual, expected, check_exact=True)
    pd.testing.assert_frame_equal(actual_counts, expected_counts, check_exact=True)


def test_feature_state_round_trip_with_an_entity_never_seen(small_history, new_records_small, tmp_path):
    """A history with no courier at all still saves, loads and scores."""
    history = small_history.assign(courier_id=None)
    _, state = training_features(history, SMOOTHING)
    assert len(state.totals["courier"]) == 0
    state.save(tmp_path / "state")
    loaded = FeatureState.load(tmp_path / "state")
    expected, _ = serving_features(new_records_small, state)
    actual, _ = serving_features(new_records_small, loaded)
    pd.testing.assert_frame_equal(actual, expected, check_exact=True)
    assert (actual["courier_declarations"] == 0).all()


# ---------------------------------------------------------------------------------------------
# (5) every feature explains itself: evidence with its weight, never a typical value (issue 30)


def _contexts(records: pd.DataFrame, state: FeatureState, outcome: str = "fraud") -> list[dict]:
    """Reason contexts as models/bundle.py builds them: record fields, counts, features, outcome."""
    features, counts = serving_features(records, state)
    derived = with_derived_fields(records)
    return [
        {
            **derived.iloc[row].to_dict(),
            **counts.iloc[row].to_dict(),
            **{name: features.iat[row, features.columns.get_loc(name)] for name in FEATURE_NAMES},
            OUTCOME: outcome,
        }
        for row in range(len(records))
    ]


def _stated(feature: str, ctx: dict) -> str | None:
    """The feature's sentence where its value is evidence, None where it is not offered."""
    reason = FEATURES_BY_NAME[feature].reason
    return reason.text(ctx) if reason is not None and reason.evidence(ctx) else None


def _with_record(ctx: dict, entity: str, inspected: float, cases: float, outcome: str = "fraud") -> dict:
    """The context with the entity's earlier inspected declarations and cases of the outcome
    replaced, its counts and its features (the shrunk rate as feature_matrix computes it)."""
    overall = overall_rate(ctx[f"all__{outcome}_count"], ctx["all__inspected_count"])
    return {
        **ctx,
        f"{entity}__inspected_count": inspected,
        f"{entity}_inspected": inspected,
        f"{entity}__{outcome}_count": cases,
        f"{entity}_{outcome}_rate": (cases + SMOOTHING * overall) / (inspected + SMOOTHING),
    }


def test_feature_catalogue_matches_the_matrix(trained):
    training, _ = trained
    assert list(training.columns) == FEATURE_NAMES
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert set(FEATURES_BY_NAME) == set(FEATURE_NAMES)


@pytest.fixture(scope="module")
def real_contexts(history, trained) -> list[dict]:
    """The last 300 rows of history as new declarations (every entity with a long history), one
    of them from a new importer and declarant, and one without seller and courier."""
    _, state = trained
    records = history[DECLARATION_FIELDS].tail(300).reset_index(drop=True)
    records.loc[0, ["importer_id", "declarant_id"]] = ["NEW-IMPORTER", "NEW-DECLARANT"]
    records.loc[1, ["seller_id", "courier_id"]] = None
    return _contexts(records, state)


@pytest.fixture(scope="module")
def known(real_contexts) -> dict:
    """A declaration whose importer, HS code and route have long records."""
    return next(ctx for ctx in real_contexts[2:] if ctx["importer__inspected_count"] >= 5 and ctx["seller_id"])


@pytest.mark.parametrize("feature", FEATURES, ids=FEATURE_NAMES)
def test_every_feature_says_what_it_is_and_states_its_evidence_readably(feature, real_contexts):
    assert isinstance(feature.description, str) and len(feature.description.strip()) > 5
    if feature.reason is None:
        return
    assert feature.reason.support in FEATURE_NAMES  # what `support` reports: a count of earlier declarations
    for ctx in real_contexts:
        text = _stated(feature.name, ctx)
        if text is None:
            continue
        assert len(text.strip()) > 5 and not NAN_WORD.search(text), text
        assert "{" not in text and "}" not in text, text
        assert ctx[feature.reason.support] >= 0
        entity = ENTITY_OF_FEATURE.get(feature.name)
        if entity is not None:  # an entity feature names the importer, HS code... it is about
            assert entity.label.format(**ctx) in text


def test_the_real_contexts_state_each_kind_of_evidence(real_contexts):
    """The sample is not vacuous: records, first declarations and quiet entities are stated."""
    stated = {name for ctx in real_contexts for name in FEATURE_NAMES if _stated(name, ctx)}
    assert {"importer_declarations", "importer_first_time"} <= stated  # the new importer
    assert any(name.endswith("_fraud_rate") for name in stated)
    assert stated <= {feature.name for feature in FEATURES if feature.reason is not None}


ENTITY_OF_FEATURE = {
    f"{entity.name}_{suffix}": entity
    for entity in ENTITIES
    for suffix in ("declarations", "inspected", "fraud_rate", "critical_rate", "days_since_last")
}


@pytest.mark.parametrize(
    ("inspected", "cases", "stated"),
    [
        (1, 1, "the only earlier inspected declaration was fraud"),
        (2, 2, "all 2 earlier inspected declarations were fraud"),
        (3, 1, "1 of 3 earlier inspected declarations was fraud"),
        (4, 3, "3 of 4 earlier inspected declarations were fraud"),
        (5, 3, "3 of 5 earlier inspected declarations were fraud (60%)"),
        (58, 24, "24 of 58 earlier inspected declarations were fraud (41%)"),
    ],
)
def test_a_record_is_counted_under_five_declarations_and_a_rate_with_its_count_from_five(
    known, inspected, cases, stated
):
    reason = FEATURES_BY_NAME["importer_fraud_rate"].reason
    assert (
        reason.text(_with_record(known, "importer", inspected, cases)) == f"importer {known['importer_id']}: {stated}"
    )
    assert FEATURES_BY_NAME["importer_fraud_rate"].reason.support == "importer_inspected"


def test_a_rare_outcomes_rate_keeps_two_digits(known):
    ctx = _with_record(known, "origin", 20753, 278, "critical")
    assert _stated("origin_critical_rate", ctx) == (
        f"origin country {known['origin_country']}: 278 of 20753 earlier inspected declarations were critical fraud (1.3%)"
    )


def test_a_rate_near_or_below_the_overall_rate_is_typical_and_not_a_reason(known):
    overall = overall_rate(known["all__fraud_count"], known["all__inspected_count"])
    for inspected, cases in [(100, round(overall * 100)), (100, 0), (1, 0), (0, 0), (2, 1)]:
        assert _stated("importer_fraud_rate", _with_record(known, "importer", inspected, cases)) is None
    # the threshold is on the rate as the model sees it, shrunk: one case moves it little
    just = _with_record(known, "importer", 100, 100)
    just["importer_fraud_rate"] = RATE_FACTOR * overall
    assert _stated("importer_fraud_rate", just) is not None
    just["importer_fraud_rate"] = RATE_FACTOR * overall * 0.999
    assert _stated("importer_fraud_rate", just) is None


@pytest.mark.parametrize(
    ("ratio", "stated"),
    [
        (
            0.2,
            "declared 0.2x the median value per kg of 312 earlier declarations of HS {hs} from {origin}: possible undervaluation",
        ),
        (
            3.0,
            "declared 3x the median value per kg of 312 earlier declarations of HS {hs} from {origin}: possible overvaluation",
        ),
        (0.6, None),
        (1.0, None),
        (1.9, None),
    ],
)
def test_a_value_per_kg_is_stated_against_its_median_with_direction_and_size(known, ratio, stated):
    ctx = {**known, "origin_hs6_declarations": 312.0, "value_vs_origin_hs6": float(np.log(ratio))}
    expected = stated and stated.format(hs=known["hs6_code"], origin=known["origin_country"])
    assert _stated("value_vs_origin_hs6", ctx) == expected
    single = {**ctx, "origin_hs6_declarations": 1.0}
    if stated:
        assert "of the only earlier declaration of HS" in _stated("value_vs_origin_hs6", single)
    none = {**ctx, "origin_hs6_declarations": 0.0, "value_vs_origin_hs6": 0.0}  # no reference: 0 by definition
    assert _stated("value_vs_origin_hs6", none) is None


def test_a_value_per_kg_itself_is_stated_against_its_hs_codes_median(known):
    low = {**known, "hs6_declarations": 40.0, "value_vs_hs6": float(np.log(0.1))}
    assert _stated("log_value_per_kg", low) == _stated("value_vs_hs6", low)
    assert _stated("log_value_per_kg", low).startswith("declared 0.1x the median value per kg of 40 earlier")
    assert FEATURES_BY_NAME["log_value_per_kg"].reason.topic == FEATURES_BY_NAME["value_vs_hs6"].reason.topic


def test_a_gap_is_stated_against_the_usual_interval_and_only_when_long(known):
    who = f"importer {known['importer_id']}"
    quiet = {
        **known,
        "importer_declarations": 37.0,
        "importer_days_since_first": 200.0,
        "importer_days_since_last": 120.0,
    }
    assert _stated("importer_days_since_last", quiet) == (
        f"{who}: previous declaration 120 days earlier, against one every 2.2 days over its 37 earlier declarations"
    )
    busy = {**quiet, "importer_days_since_first": 120.5}  # 37 declarations within half a day, then 120 days
    assert "against more than one a day over its 37" in _stated("importer_days_since_last", busy)
    for first, last in [(200.0, 10.0), (1000.0, 40.0)]:  # under a month; under 3x one every 27 days
        assert (
            _stated(
                "importer_days_since_last",
                {**quiet, "importer_days_since_first": first, "importer_days_since_last": last},
            )
            is None
        )
    assert _stated("importer_days_since_last", {**quiet, "importer_declarations": 1.0}) is None  # no usual interval


@pytest.mark.parametrize(
    ("declarations", "stated"),
    [
        (0, "first declaration"),
        (1, "little history, only 1 earlier declaration"),
        (4, "little history, only 4 earlier declarations"),
        (5, None),
        (300, None),
    ],
)
def test_a_new_entity_is_news_and_an_established_ones_count_is_not(known, declarations, stated):
    ctx = {**known, "importer_declarations": float(declarations)}
    assert _stated("importer_declarations", ctx) == (stated and f"importer {known['importer_id']}: {stated}")


def test_a_first_declaration_is_stated_alike_by_every_feature_that_shows_it(real_contexts):
    new = real_contexts[0]
    texts = {
        _stated(f"importer_{suffix}", new)
        for suffix in ("declarations", "inspected", "days_since_first", "days_since_last", "first_time")
    }
    assert texts == {"importer NEW-IMPORTER: first declaration"}
    topics = {
        FEATURES_BY_NAME[f"importer_{suffix}"].reason.topic
        for suffix in ("declarations", "inspected", "days_since_first", "days_since_last", "first_time")
    }
    assert len(topics) == 1  # one statement of it is shown (models.bundle.select_reasons)


def test_an_entity_never_inspected_says_so(known):
    who = f"declarant {known['declarant_id']}"
    ctx = {**known, "declarant_declarations": 12.0, "declarant_inspected": 0.0}
    assert _stated("declarant_inspected", ctx) == f"{who}: none of its 12 earlier declarations was inspected"
    ctx = {**known, "declarant_declarations": 1.0, "declarant_inspected": 0.0}
    assert _stated("declarant_inspected", ctx) == f"{who}: its only earlier declaration was not inspected"
    assert _stated("declarant_inspected", {**known, "declarant_inspected": 3.0}) is None


def test_a_missing_seller_or_courier_is_never_a_reason(real_contexts):
    """Its features are a new one's (no history): the model cannot tell them apart, so neither
    is offered; a known seller with few declarations is."""
    missing = real_contexts[1]
    assert pd.isna(missing["seller_id"]) and pd.isna(missing["courier_id"])
    for entity in ("seller", "courier"):
        for name in FEATURE_NAMES:
            if name.startswith(f"{entity}_"):
                assert _stated(name, missing) is None, name
    few = {**real_contexts[2], "seller_declarations": 2.0}
    assert (
        _stated("seller_declarations", few) == f"seller {few['seller_id']}: little history, only 2 earlier declarations"
    )


def test_a_category_is_stated_by_its_record_of_the_outcome_explained(known):
    chapter = _with_record(_with_record(known, "hs_chapter", 40, 30), "hs_chapter", 40, 12, "critical")
    assert (
        _stated("hs_chapter", chapter)
        == _stated("hs_chapter_fraud_rate", chapter)
        == (f"HS chapter {known['hs_chapter']}: 30 of 40 earlier inspected declarations were fraud (75%)")
    )
    critical = {**chapter, OUTCOME: "critical"}
    assert _stated("hs_chapter", critical) == (
        f"HS chapter {known['hs_chapter']}: 12 of 40 earlier inspected declarations were critical fraud (30%)"
    )
    overall = overall_rate(known["all__fraud_count"], known["all__inspected_count"])
    typical = _with_record(known, "hs_chapter", 4000, round(overall * 4000))
    assert _stated("hs_chapter", typical) is None  # a chapter of typical record is a bare value: not offered
    for never in (
        "departure_country",
        "process_type",
        "transport_mode",
        "tax_rate",
        "net_mass_kg",
        "item_price",
        "duty_exposure",
    ):
        assert FEATURES_BY_NAME[never].reason is None, never


def test_an_origin_apart_from_departure_is_stated_by_the_routes_record(known):
    route = _with_record(
        {**known, "departure_country": "HK", "origin_country": "ZZ", "origin_differs_from_departure": 1.0},
        "route",
        6,
        4,
    )
    assert _stated("origin_differs_from_departure", route) == (
        "shipped from HK with origin ZZ (unknown country): 4 of 6 earlier inspected declarations were fraud (67%)"
    )
    assert (
        _stated("route_fraud_rate", route)
        == "route HK->ZZ (unknown country): 4 of 6 earlier inspected declarations were fraud (67%)"
    )
    assert _stated("origin_differs_from_departure", {**route, "origin_differs_from_departure": 0.0}) is None


def test_evidence_on_arrays_is_evidence_row_by_row(real_contexts):
    """The service and evaluate decide on arrays of rows: the same answer as each row alone."""
    columns = {
        name: np.array([float(ctx[name]) for ctx in real_contexts])
        for name in [*(n for n in FEATURE_NAMES if n not in CATEGORICAL), *OVERALL_COUNTS]
    }
    columns.update({name: np.zeros(len(real_contexts)) for name in CATEGORICAL}, **{OUTCOME: "fraud"})
    together = evidence(columns, len(real_contexts))
    for row, ctx in enumerate(real_contexts):
        alone = [f.reason is not None and bool(f.reason.evidence(ctx)) for f in FEATURES]
        assert together[row].tolist() == alone, row
