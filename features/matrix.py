"""The model's features, built by one function for training and serving, each with the sentence
an officer reads when it drives a score."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.history import (
    ENTITIES,
    VALUE_REFERENCE_ENTITIES,
    FeatureState,
    entity_history,
    with_derived_fields,
)
from features.schema import UNKNOWN_COUNTRY, Declarations

CATEGORICAL = [
    "office_id",
    "process_type",
    "import_type",
    "import_use",
    "payment_type",
    "transport_mode",
    "tax_type",
    "origin_indicator",
    "departure_country",
    "origin_country",
    "hs_chapter",
]
FIRST_TIME_ENTITIES = ["importer", "declarant", "seller"]


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    reason: Callable[[dict], str]  # context (record fields, features, counts) -> sentence


def _share(count: float, total: float) -> str:
    return f"{count / total:.0%}" if total else "0%"


def _entity_features(entity) -> list[Feature]:
    name, label = entity.name, entity.label

    def who(ctx: dict) -> str:
        missing = [c.removesuffix("_id") for c in entity.columns if pd.isna(ctx.get(c))]
        return f"no {' or '.join(missing)} declared" if missing else label.format(**ctx)

    def history(ctx: dict) -> tuple[float, float, float]:
        return (
            ctx[f"{name}__inspected_count"],
            ctx[f"{name}__fraud_count"],
            ctx[f"{name}__critical_count"],
        )

    def rate_text(ctx: dict) -> str:
        n, fraud, _ = history(ctx)
        if not n:
            return f"{who(ctx)}: no earlier inspected declarations, rated at the overall fraud rate"
        return f"{who(ctx)}: {fraud:.0f} of {n:.0f} earlier inspected declarations were fraud ({_share(fraud, n)})"

    def critical_text(ctx: dict) -> str:
        n, _, critical = history(ctx)
        if not n:
            return f"{who(ctx)}: no earlier inspected declarations, rated at the overall critical rate"
        return f"{who(ctx)}: {critical:.0f} of {n:.0f} earlier inspected declarations were critical fraud"

    def count_text(ctx: dict) -> str:
        n = ctx[f"{name}__declarations"]
        return f"{who(ctx)}: first declaration" if not n else f"{who(ctx)}: {n:.0f} earlier declarations"

    def inspected_text(ctx: dict) -> str:
        n = history(ctx)[0]
        return f"{who(ctx)}: never inspected before" if not n else f"{who(ctx)}: {n:.0f} earlier inspections"

    plain = name.replace("_", " ")
    features = [
        Feature(f"{name}_declarations", f"earlier declarations of the same {plain}", count_text),
        Feature(f"{name}_inspected", f"earlier inspected declarations of the same {plain}", inspected_text),
        Feature(
            f"{name}_fraud_rate",
            f"fraud rate of the same {plain} in earlier inspected declarations, shrunk towards the overall rate",
            rate_text,
        ),
        Feature(
            f"{name}_critical_rate",
            f"critical-fraud rate of the same {plain}, shrunk towards the overall rate",
            critical_text,
        ),
    ]

    def first_seen_text(ctx: dict) -> str:
        days = ctx[f"{name}_days_since_first"]
        if np.isnan(days):
            return f"{who(ctx)}: never seen before"
        return f"{who(ctx)}: first seen {days:.0f} days earlier"

    def last_seen_text(ctx: dict) -> str:
        days = ctx[f"{name}_days_since_last"]
        if np.isnan(days):
            return f"{who(ctx)}: never seen before"
        return f"{who(ctx)}: previous declaration {days:.0f} days earlier"

    features += [
        Feature(
            f"{name}_days_since_first",
            f"days since the {plain}'s first declaration (missing when never seen)",
            first_seen_text,
        ),
        Feature(
            f"{name}_days_since_last",
            f"days since the {plain}'s previous declaration (missing when never seen)",
            last_seen_text,
        ),
    ]
    if name in FIRST_TIME_ENTITIES:
        features.append(
            Feature(
                f"{name}_first_time",
                f"1 when this is the {plain}'s first declaration",
                lambda ctx: (
                    f"{who(ctx)}: first declaration ever" if ctx[f"{name}_first_time"] else f"{who(ctx)}: known"
                ),
            )
        )
    return features


def _value_reason(entity: str) -> Callable[[dict], str]:
    def reason(c: dict) -> str:
        goods = f"HS {c['hs6_code']}" if entity == "hs6" else f"HS {c['hs6_code']} from {c['origin_country']}"
        return (
            f"value per kg {np.exp(c[f'value_vs_{entity}']):.2g}x the median of "
            f"{c[f'{entity}__declarations']:.0f} earlier declarations of {goods}"
        )

    return reason


def _country(code: str) -> str:
    return f"{UNKNOWN_COUNTRY} (unknown country)" if code == UNKNOWN_COUNTRY else code


def _categorical_feature(column: str) -> Feature:
    plain = column.removesuffix("_id").replace("_", " ").replace("hs ", "HS ")

    def reason(ctx: dict) -> str:
        return f"{plain} {_country(ctx[column]) if column.endswith('_country') else ctx[column]}"

    return Feature(column, f"declared {plain}", reason)


FEATURES: list[Feature] = [
    *[f for entity in ENTITIES if entity.name != "all" for f in _entity_features(entity)],
    Feature("tax_rate", "declared tax rate (%)", lambda c: f"tax rate {c['tax_rate']:g}%"),
    Feature("net_mass_kg", "declared net mass", lambda c: f"net mass {c['net_mass_kg']:,.1f} kg"),
    Feature("item_price", "declared item price", lambda c: f"declared value {c['item_price']:,.0f}"),
    Feature(
        "log_value_per_kg",
        "log of declared value per kg",
        lambda c: f"declared value {c['item_price']:,.0f} for {c['net_mass_kg']:,.1f} kg",
    ),
    *[
        Feature(
            f"value_vs_{entity}",
            f"log of value per kg minus the median of earlier declarations of the same "
            f"{entity.replace('_', ' x ').replace('hs6', 'HS6')} (0 when there are none)",
            _value_reason(entity),
        )
        for entity in VALUE_REFERENCE_ENTITIES
    ],
    Feature(
        "duty_exposure",
        "duty at stake: item price x tax rate",
        lambda c: f"duty at stake {c['duty_exposure']:,.0f}",
    ),
    Feature(
        "origin_differs_from_departure",
        "country of origin differs from country of departure",
        lambda c: (
            f"origin {_country(c['origin_country'])} differs from departure {_country(c['departure_country'])}"
            if c["origin_differs_from_departure"]
            else f"shipped from its origin country {_country(c['origin_country'])}"
        ),
    ),
    *[_categorical_feature(column) for column in CATEGORICAL],
]
FEATURE_NAMES = [feature.name for feature in FEATURES]
FEATURES_BY_NAME = {feature.name: feature for feature in FEATURES}


def feature_matrix(records: pd.DataFrame, counts: pd.DataFrame, state: FeatureState) -> pd.DataFrame:
    """Model input from records (with derived fields) and their entity history counts.

    The global fraud rate known at the row's time is the shrinkage prior, so a new importer is
    rated at the overall rate and a long-known one at its own. Rates are over inspected
    declarations only (what was never looked at is not clean), beside the inspected count.
    """
    columns = _numeric_features(records, counts, state.smoothing)
    matrix = pd.DataFrame(columns, index=records.index)
    for column in CATEGORICAL:
        categories = state.categories[column]
        values = records[column].astype("object")
        matrix[column] = pd.Categorical(values.where(values.isin(categories)), categories=categories)
    return matrix[FEATURE_NAMES]


def _numeric_features(records, counts, smoothing: float) -> dict[str, np.ndarray]:
    """Every feature but the categorical ones, from columns of records (with derived fields)
    and counts, each a Series or an array: one formula for training, serving and its arrays."""

    def column(frame, name: str, dtype=None) -> np.ndarray:
        return np.asarray(frame[name], dtype=dtype)

    m = smoothing
    known = column(counts, "all__inspected_count")
    prior_fraud = (column(counts, "all__fraud_count") + 1) / (known + 2)
    prior_critical = (column(counts, "all__critical_count") + 1) / (known + 2)
    day = column(records, "day")
    columns = {}
    for entity in ENTITIES:
        if entity.name == "all":
            continue
        columns[f"{entity.name}_declarations"] = column(counts, f"{entity.name}__declarations")
        n = column(counts, f"{entity.name}__inspected_count")
        columns[f"{entity.name}_inspected"] = n
        fraud = column(counts, f"{entity.name}__fraud_count")
        critical = column(counts, f"{entity.name}__critical_count")
        columns[f"{entity.name}_fraud_rate"] = (fraud + m * prior_fraud) / (n + m)
        columns[f"{entity.name}_critical_rate"] = (critical + m * prior_critical) / (n + m)
        columns[f"{entity.name}_days_since_first"] = day - column(counts, f"{entity.name}__first_seen_day")
        columns[f"{entity.name}_days_since_last"] = day - column(counts, f"{entity.name}__last_seen_day")
        if entity.name in FIRST_TIME_ENTITIES:
            columns[f"{entity.name}_first_time"] = (columns[f"{entity.name}_declarations"] == 0).astype("float64")
    price = column(records, "item_price", "float64")
    mass = column(records, "net_mass_kg", "float64")
    tax = column(records, "tax_rate", "float64")
    columns["tax_rate"] = tax
    columns["net_mass_kg"] = mass
    columns["item_price"] = price
    columns["log_value_per_kg"] = column(records, "log_value_per_kg")
    for entity in VALUE_REFERENCE_ENTITIES:
        median = column(counts, f"{entity}__median_log_value_per_kg")
        columns[f"value_vs_{entity}"] = np.nan_to_num(columns["log_value_per_kg"] - median, nan=0.0)
    columns["duty_exposure"] = price * tax / 100
    columns["origin_differs_from_departure"] = (
        column(records, "origin_country") != column(records, "departure_country")
    ).astype("float64")
    return columns


def model_input(matrix: pd.DataFrame) -> pd.DataFrame:
    """The features as the boosters read them: every column a float, a category its code in the
    state's categories (NaN when unseen), as LightGBM itself encodes a categorical column. So
    the matrix on disk is plain floats whatever part a row group came from, and the model
    scores a categorical frame (serving) and its encoding (training) alike."""
    encoded = {}
    for name in FEATURE_NAMES:
        column = matrix[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy()
            encoded[name] = np.where(codes < 0, np.nan, codes.astype("float64"))
        else:
            encoded[name] = column.to_numpy(dtype="float64")
    return pd.DataFrame(encoded, index=matrix.index)


def training_features(history: pd.DataFrame, smoothing: float) -> tuple[pd.DataFrame, FeatureState]:
    """Point-in-time features for every row of a history held in memory, and the state serving
    will use (`features.partitioned` streams a history larger than memory the same way)."""
    history = with_derived_fields(history)
    counts, totals = {}, {}
    for entity in ENTITIES:
        counts[entity.name], totals[entity.name] = entity_history(history, entity)
    state = FeatureState.of(totals, history, CATEGORICAL, smoothing)
    return feature_matrix(history, pd.concat(counts.values(), axis=1), state), state


def serving_features(records: pd.DataFrame, state: FeatureState) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features of new declarations from the fitted state; also the counts, for reason texts."""
    records = with_derived_fields(records)
    counts = state.counts_for(records)
    return feature_matrix(records, counts, state), counts


# the record columns the features read (hs_chapter is derived from hs6_code)
_SERVING_COLUMNS = list(
    dict.fromkeys(
        [
            *(column for entity in ENTITIES for column in entity.columns if column != "hs_chapter"),
            *(column for column in CATEGORICAL if column != "hs_chapter"),
            "hs6_code",
            "declaration_date",
            "item_price",
            "net_mass_kg",
            "tax_rate",
        ]
    )
)


@dataclass
class ServingInputs:
    """Features of new declarations as arrays, for the boosters and the reason texts."""

    matrix: np.ndarray  # rows x FEATURE_NAMES, float64, encoded as `model_input` encodes a frame
    counts: dict[str, np.ndarray]  # the columns of `FeatureState.counts_for`
    fields: dict[str, np.ndarray]  # the record columns features read, hs_chapter, day, log_value_per_kg
    records: Declarations  # the typed declarations, for the fields reason texts may name


def serving_inputs(records: pd.DataFrame | Declarations, state: FeatureState) -> ServingInputs:
    """`serving_features` without frames: numpy in, numpy out, the same values bit for bit
    (`model_input` of its matrix, its counts), for typed declarations (a frame or its columns)."""
    records = Declarations.of(records)
    rows = records.rows
    fields = {column: records[column] for column in _SERVING_COLUMNS}
    # with_derived_fields, on arrays
    fields["hs_chapter"] = np.array(
        [code[:2] if isinstance(code, str) else np.nan for code in fields["hs6_code"].tolist()], dtype=object
    )
    fields["day"] = records["declaration_date"].astype("datetime64[D]").astype("int64")
    fields["log_value_per_kg"] = np.log1p(records["item_price"].astype("float64")) - np.log1p(
        records["net_mass_kg"].astype("float64")
    )
    counts = state.lookup(fields, rows)
    columns = _numeric_features(fields, counts, state.smoothing)
    codes = state.category_codes()
    for column in CATEGORICAL:
        code = codes[column].get
        columns[column] = np.fromiter(
            (code(value, np.nan) for value in fields[column].tolist()), dtype="float64", count=rows
        )
    matrix = np.empty((rows, len(FEATURE_NAMES)))
    for j, name in enumerate(FEATURE_NAMES):
        matrix[:, j] = columns[name]
    return ServingInputs(matrix, counts, fields, records)
