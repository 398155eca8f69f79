"""The model's features, built by one function for training and serving, each with the sentence
an officer reads when it drives a score, and the rule that says when its value is evidence.

A reason states evidence with its weight (issue 30): counts where few earlier declarations stand
behind it, a rate with its count, a value against its reference with direction and size. A value
near its reference (the overall rate, the median value per kg, the usual interval) is typical and
never offered, whatever its contribution; a declared field with no record of what makes it risky
(a tax rate, a net mass, a transport mode) is never offered either, and a category (an HS
chapter, an office, an origin) is stated by its own record of outcomes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from features.history import (
    ENTITIES,
    VALUE_REFERENCE_ENTITIES,
    Entity,
    FeatureState,
    entity_history,
    with_derived_fields,
)
from features.schema import OPTIONAL_FIELDS, UNKNOWN_COUNTRY, Declarations

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

# When a value is evidence (docs/api.md, reasons). Each is a judgement an officer can check in
# the sentence itself, which states the count, the rate or the ratio the threshold was applied to.
# Fewer earlier declarations than SMALL_SUPPORT: counts, never a percentage; and an entity that new
# is news. Typical, so never a reason: an entity's rate (shrunk, as the model sees it) under
# RATE_FACTOR times the overall rate; a value per kg within VALUE_FACTOR of the median of earlier
# declarations, either way; a gap since the previous declaration under INTERVAL_FACTOR times the
# usual interval, or under QUIET_DAYS (a busy HS code quiet for a week says nothing).
SMALL_SUPPORT = 5
RATE_FACTOR = 1.25
VALUE_FACTOR = 2.0
INTERVAL_FACTOR = 3.0
QUIET_DAYS = 30
# The context key naming the outcome the explained booster predicts: a category's record is
# stated for that outcome. The keys are how counts and rates spell them
# (`{entity}__critical_count`, `{entity}_critical_rate`), the values how a sentence does.
OUTCOME = "outcome"
OUTCOME_WORDS = {"fraud": "fraud", "critical": "critical fraud"}
# the counts of the `all` entity that the overall rates come from, beside the features
OVERALL_COUNTS = ("all__inspected_count", "all__fraud_count", "all__critical_count")


@dataclass(frozen=True)
class Reason:
    """How a feature's value is stated to an officer, and when it is evidence at all.

    `evidence` and `reference` read only features, OVERALL_COUNTS and OUTCOME, each a number or an
    array of rows, so the service (from its arrays) and evaluate (from the stored feature matrix)
    decide the same way which values are stated; `text` reads the whole context (the record's
    fields and its entities' counts too) of a value that is evidence."""

    evidence: Callable[[Mapping], Any]  # -> bool (per row): not typical, and says something about risk
    text: Callable[[dict], str]
    support: str  # the feature counting the earlier declarations the statement rests on
    topic: str  # reasons of one topic state one piece of evidence: only the largest contribution's is shown
    # the feature's typical value (NaN where it has none), for evaluate's faithfulness figure;
    # None: none of its own, the median of the rows evaluated stands in
    reference: Callable[[Mapping], Any] | None = None


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    reason: Reason | None = None  # None: never offered, nothing in history says what makes its value risky


def overall_rate(count, inspected):
    """The overall rate of an outcome, which every entity's rate is shrunk towards: Laplace's, so
    it is defined before the first inspection."""
    return (count + 1) / (inspected + 2)


def _overall(c: Mapping, outcome: str):
    return overall_rate(c[f"all__{outcome}_count"], c["all__inspected_count"])


def _number(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.2g}"


def _times(ratio: float) -> str:
    """A ratio as a sentence states it: 0.2x, 4.5x, 12x."""
    return f"{_number(ratio)}x"


def _percent(share: float) -> str:
    """Two digits where a whole percent would hide the difference: 41%, 1.3% (critical fraud is rare)."""
    return f"{share:.0%}" if share >= 0.1 else f"{share:.1%}"


def _counted(n: float, noun: str) -> str:
    return f"{n:.0f} {noun}" if n == 1 else f"{n:.0f} {noun}s"


def _days(days: float) -> str:
    shown = _number(days)
    return f"{shown} day" if shown == "1" else f"{shown} days"


def _country(code: str) -> str:
    return f"{UNKNOWN_COUNTRY} (unknown country)" if code == UNKNOWN_COUNTRY else code


def _named(entity: Entity, ctx: dict) -> str:
    """The entity as an officer names it: importer QLRUBN9, HS 847990 from US, route BE->ZZ (unknown country)."""
    return entity.label.format(
        **{column: _country(ctx[column]) if column.endswith("_country") else ctx[column] for column in entity.columns}
    )


def _record(ctx: dict, entity: str, outcome: str) -> str:
    """The entity's earlier inspected declarations and how many had the outcome: counts alone under
    SMALL_SUPPORT, where a percentage would claim more than a few cases say."""
    n, k = ctx[f"{entity}__inspected_count"], ctx[f"{entity}__{outcome}_count"]
    words = OUTCOME_WORDS[outcome]
    if n == 1:
        stated = f"the only earlier inspected declaration was {words if k else 'not ' + words}"
    elif k == n:
        stated = f"all {n:.0f} earlier inspected declarations were {words}"
    else:
        stated = f"{k:.0f} of {n:.0f} earlier inspected declarations {'was' if k == 1 else 'were'} {words}"
    return stated if n < SMALL_SUPPORT else f"{stated} ({_percent(k / n)})"


def _rate_reason(entity: Entity, outcome: str | None = None) -> Reason:
    """The entity's record of `outcome` (None: the outcome explained, for a category), evidence when
    its rate as the model sees it (shrunk towards the overall rate, so a few cases move it little)
    is at least RATE_FACTOR times the overall rate; a lower rate is no reason for risk."""
    name, inspected = entity.name, f"{entity.name}_inspected"

    def which(c: Mapping) -> str:
        return outcome or c[OUTCOME]

    def overall(c: Mapping) -> Any:
        return _overall(c, which(c))

    return Reason(
        evidence=lambda c: (c[inspected] > 0) & (c[f"{name}_{which(c)}_rate"] >= RATE_FACTOR * overall(c)),
        text=lambda ctx: f"{_named(entity, ctx)}: {_record(ctx, name, which(ctx))}",
        support=inspected,
        topic=f"{name} record",
        # the rate's own reference; a category's value is a category, not a rate
        reference=overall if outcome else None,
    )


def _entity_features(entity: Entity) -> list[Feature]:
    """An entity's volume, inspections, record and activity. A declaration without a seller or
    courier has the features of a first one (the model cannot tell them apart), so for those
    optional parties having no history says nothing: only a few earlier declarations does."""
    name = entity.name
    plain = name.replace("_", " ")
    declarations, inspected = f"{name}_declarations", f"{name}_inspected"
    since_first, since_last = f"{name}_days_since_first", f"{name}_days_since_last"
    optional = bool(OPTIONAL_FIELDS & set(entity.columns))
    least = 1 if optional else 0  # the fewest earlier declarations that say the entity is new
    activity = f"{name} activity"  # how new or how quiet it is: one statement of it is enough

    def first(ctx: dict) -> str:
        return f"{_named(entity, ctx)}: first declaration"

    def few_text(ctx: dict) -> str:
        n = ctx[declarations]
        return f"{_named(entity, ctx)}: little history, only {_counted(n, 'earlier declaration')}" if n else first(ctx)

    def uninspected_text(ctx: dict) -> str:
        n = ctx[declarations]
        if not n:
            return first(ctx)
        if n == 1:
            return f"{_named(entity, ctx)}: its only earlier declaration was not inspected"
        return f"{_named(entity, ctx)}: none of its {n:.0f} earlier declarations was inspected"

    def usual(c: Mapping):
        """Mean days between its earlier declarations (meaningful from two of them)."""
        return (c[since_first] - c[since_last]) / np.maximum(c[declarations] - 1, 1)

    def quiet(c: Mapping):
        gap = c[since_last]
        return (c[declarations] >= 2) & (gap >= QUIET_DAYS) & (gap >= INTERVAL_FACTOR * usual(c))

    def quiet_text(ctx: dict) -> str:
        if np.isnan(ctx[since_last]):
            return first(ctx)
        every = usual(ctx)
        rhythm = f"one every {_days(every)}" if every >= 1 else "more than one a day"
        return (
            f"{_named(entity, ctx)}: previous declaration {_days(ctx[since_last])} earlier, against {rhythm} "
            f"over its {ctx[declarations]:.0f} earlier declarations"
        )

    features = [
        Feature(
            declarations,
            f"earlier declarations of the same {plain}",
            Reason(
                lambda c: (c[declarations] >= least) & (c[declarations] < SMALL_SUPPORT),
                few_text,
                declarations,
                activity,
            ),
        ),
        Feature(
            inspected,
            f"earlier inspected declarations of the same {plain}",
            Reason(
                lambda c: (c[inspected] == 0) & (c[declarations] >= least), uninspected_text, declarations, activity
            ),
        ),
        *(
            Feature(
                f"{name}_{outcome}_rate",
                f"{words} rate of the same {plain} in earlier inspected declarations, shrunk towards the overall rate",
                _rate_reason(entity, outcome),
            )
            for outcome, words in OUTCOME_WORDS.items()
        ),
        Feature(
            since_first,
            f"days since the {plain}'s first declaration (missing when never seen)",
            None if optional else Reason(lambda c: np.isnan(c[since_first]), first, declarations, activity),
        ),
        Feature(
            since_last,
            f"days since the {plain}'s previous declaration (missing when never seen)",
            Reason(
                quiet if optional else (lambda c: np.isnan(c[since_last]) | quiet(c)),
                quiet_text,
                declarations,
                activity,
                reference=lambda c: np.where(c[declarations] >= 2, usual(c), np.nan),
            ),
        ),
    ]
    if name in FIRST_TIME_ENTITIES:
        first_time = f"{name}_first_time"
        features.append(
            Feature(
                first_time,
                f"1 when this is the {plain}'s first declaration",
                None if optional else Reason(lambda c: c[first_time] == 1, first, declarations, activity),
            )
        )
    return features


ENTITIES_BY_NAME = {entity.name: entity for entity in ENTITIES}


def _value_reason(entity: Entity, reference: Callable[[Mapping], Any] | None = None) -> Reason:
    """Declared value per kg against the median of the entity's earlier declarations, evidence
    outside VALUE_FACTOR of it either way. `reference`: the feature's own typical value, where the
    feature is not the ratio to that median (whose typical value is 0, the median itself)."""
    name, declarations, ratio = entity.name, f"{entity.name}_declarations", f"value_vs_{entity.name}"

    def at_the_median(c: Mapping) -> Any:
        return np.zeros_like(c[ratio])

    def text(ctx: dict) -> str:
        n, value = ctx[declarations], float(np.exp(ctx[ratio]))
        against = (
            "the value per kg of the only earlier declaration"
            if n == 1
            else f"the median value per kg of {n:.0f} earlier declarations"
        )
        judged = "possible undervaluation" if value < 1 else "possible overvaluation"
        return f"declared {_times(value)} {against} of {_named(entity, ctx)}: {judged}"

    return Reason(
        lambda c: (c[declarations] > 0) & (np.abs(c[ratio]) >= np.log(VALUE_FACTOR)),
        text,
        declarations,
        f"{name} value",
        reference or at_the_median,
    )


def _categorical_feature(column: str) -> Feature:
    """A declared category. An HS chapter, an office or an origin has an entity's record: it is
    stated by that record of the outcome explained, as its entity's rate is; the other categories
    (a process type, a departure country) have none and are never offered."""
    plain = column.removesuffix("_id").replace("_", " ").replace("hs ", "HS ")
    entity = next((entity for entity in ENTITIES if entity.columns == (column,)), None)
    return Feature(column, f"declared {plain}", _rate_reason(entity) if entity else None)


def _route_feature() -> Feature:
    """Origin and departure differ: stated by the route's record of the outcome explained."""
    route = _rate_reason(ENTITIES_BY_NAME["route"])

    def text(ctx: dict) -> str:
        departure, origin = _country(ctx["departure_country"]), _country(ctx["origin_country"])
        return f"shipped from {departure} with origin {origin}: {_record(ctx, 'route', ctx[OUTCOME])}"

    return Feature(
        "origin_differs_from_departure",
        "country of origin differs from country of departure",
        replace(route, evidence=lambda c: (c["origin_differs_from_departure"] == 1) & route.evidence(c), text=text),
    )


FEATURES: list[Feature] = [
    *[f for entity in ENTITIES if entity.name != "all" for f in _entity_features(entity)],
    Feature("tax_rate", "declared tax rate (%)"),
    Feature("net_mass_kg", "declared net mass"),
    Feature("item_price", "declared item price"),
    Feature(
        "log_value_per_kg",
        "log of declared value per kg",
        # stated against its HS code's median, which is what makes a value per kg high or low
        _value_reason(ENTITIES_BY_NAME["hs6"], reference=lambda c: c["log_value_per_kg"] - c["value_vs_hs6"]),
    ),
    *[
        Feature(
            f"value_vs_{entity}",
            f"log of value per kg minus the median of earlier declarations of the same "
            f"{entity.replace('_', ' x ').replace('hs6', 'HS6')} (0 when there are none)",
            _value_reason(ENTITIES_BY_NAME[entity]),
        )
        for entity in VALUE_REFERENCE_ENTITIES
    ],
    Feature("duty_exposure", "duty at stake: item price x tax rate"),
    _route_feature(),
    *[_categorical_feature(column) for column in CATEGORICAL],
]
FEATURE_NAMES = [feature.name for feature in FEATURES]
FEATURES_BY_NAME = {feature.name: feature for feature in FEATURES}
STATED = [(j, feature.reason) for j, feature in enumerate(FEATURES) if feature.reason is not None]


def evidence(columns: Mapping, rows: int) -> np.ndarray:
    """Rows x FEATURE_NAMES: True where the feature's value is evidence (`Reason.evidence`), from
    `columns`: each feature's values as `model_input` encodes them, OVERALL_COUNTS and OUTCOME."""
    out = np.zeros((rows, len(FEATURES)), dtype=bool)
    for j, reason in STATED:
        out[:, j] = reason.evidence(columns)
    return out


def references(columns: Mapping, rows: int) -> np.ndarray:
    """Rows x FEATURE_NAMES: each feature's typical value (`Reason.reference`) where it has one,
    else its median over these rows (a category's most frequent code), from `columns` as
    `evidence` reads them: what a value is set to when evaluate asks how much a reason weighed."""
    out = np.empty((rows, len(FEATURES)))
    for j, feature in enumerate(FEATURES):
        own = np.asarray(columns[feature.name], dtype="float64")
        typical = np.full(rows, np.nan)
        if feature.reason is not None and feature.reason.reference is not None:
            typical = np.broadcast_to(feature.reason.reference(columns), rows)
        if feature.name in CATEGORICAL:
            common = pd.Series(own).mode()
            population = float(common.iloc[0]) if len(common) else np.nan
        else:
            population = float(np.nanmedian(own)) if np.isfinite(own).any() else np.nan
        out[:, j] = np.where(np.isnan(typical), population, typical)
    return out


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
    prior_fraud = overall_rate(column(counts, "all__fraud_count"), known)
    prior_critical = overall_rate(column(counts, "all__critical_count"), known)
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
    for name in VALUE_REFERENCE_ENTITIES:
        median = column(counts, f"{name}__median_log_value_per_kg")
        columns[f"value_vs_{name}"] = np.nan_to_num(columns["log_value_per_kg"] - median, nan=0.0)
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
