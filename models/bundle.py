"""The deployable unit: boosters, calibrations, lane policy and feature state, saved together so
the registry version is everything the service needs and nothing it must find elsewhere."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from features.history import FeatureState
from features.matrix import (
    CATEGORICAL,
    FEATURE_NAMES,
    FEATURES,
    OUTCOME,
    OUTCOME_WORDS,
    OVERALL_COUNTS,
    ServingInputs,
    evidence,
    overall_rate,
    references,
    serving_inputs,
)
from features.schema import Declarations, check_requests
from models.calibration import Calibration
from models.contributions import PathContributions
from models.lanes import LanePolicy

RESULT_COLUMNS = ["declaration_id", "risk_score", "critical_score", "duty_at_risk", "lane", "selected_by", "reasons"]
DECLARED_DUTY = FEATURE_NAMES.index("duty_exposure")  # item_price * tax_rate / 100, as a feature
MAX_REASONS = 3  # serving.max_reasons's default
# Picks the lane policy made for something else than fraud risk state why first (policy_reason);
# a critical pick's reasons are then the critical booster's contributions, every other's the fraud
# booster's (docs/api.md, reasons).
STATED_SOURCES = ("value", "critical")
TOPICS = [feature.reason.topic if feature.reason else None for feature in FEATURES]


def _json_value(value):
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value


REASONS = ("selected", "all", "none")  # which declarations carry reasons (docs/api.md)


def check_reasons(reasons: str) -> None:
    if reasons not in REASONS:
        raise ValueError(f"reasons must be one of {', '.join(REASONS)}, got {reasons!r}")


def reason_rows(lane, reasons: str = "selected") -> np.ndarray:
    """Positions of the declarations that carry reasons: by default red and yellow ones."""
    check_reasons(reasons)
    lane = np.asarray(lane, dtype=object)
    if reasons == "all":
        return np.arange(len(lane))
    if reasons == "none":
        return np.arange(0)
    return np.flatnonzero(lane != "green")


@dataclass
class Assessment:
    """A batch scored, before its reasons: what rules and reason selection need."""

    ids: list[str]
    risk: np.ndarray
    critical: np.ndarray
    duty_at_risk: np.ndarray
    lane: np.ndarray
    selected_by: np.ndarray
    inputs: ServingInputs

    def results(self, reasons: list[list[dict]]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "declaration_id": self.ids,
                "risk_score": self.risk,
                "critical_score": self.critical,
                "duty_at_risk": self.duty_at_risk,
                "lane": self.lane,
                "selected_by": self.selected_by,
                "reasons": reasons,
            }
        )


def result_records(results: pd.DataFrame) -> list[dict]:
    """`results.to_dict(orient="records")`, the same Python values, column by column: pandas
    reads a frame row by row, which costs more than scoring one declaration."""
    columns = list(results.columns)
    return [dict(zip(columns, row)) for row in zip(*(results[column].tolist() for column in columns))]


def select_reasons(contributions: np.ndarray, stated: np.ndarray, max_reasons: int) -> list[list[int]]:
    """Per row, the features its reasons state: the largest positive contributions among those
    whose value is evidence (`stated`, from features.matrix.evidence), one per topic (two
    features saying the same thing, a first declaration or an entity's record, are said once),
    at most `max_reasons`. A typical value is skipped for the next contribution, not shown."""
    stated = stated & (contributions > 0)
    order = np.argsort(np.where(stated, -contributions, np.inf), axis=1, kind="stable")
    chosen = []
    for row, count in zip(order.tolist(), stated.sum(axis=1).tolist()):
        picked: list[int] = []
        topics = set()
        for j in row[:count]:
            if len(picked) == max_reasons:
                break
            if TOPICS[j] not in topics:
                topics.add(TOPICS[j])
                picked.append(j)
        chosen.append(picked)
    return chosen


def _columns(matrix: np.ndarray, overall: dict, outcome: str) -> dict:
    """What features.matrix.evidence and references read: the features, overall counts, outcome."""
    return {**{name: matrix[:, j] for j, name in enumerate(FEATURE_NAMES)}, **overall, OUTCOME: outcome}


def reasons_for(
    inputs: ServingInputs,
    state: FeatureState,
    rows: np.ndarray,
    contributions: np.ndarray,
    max_reasons: int,
    outcome: str = "fraud",
) -> list[list[dict]]:
    """The reasons of `rows` (positions in `inputs`) from their contributions (one row each,
    features only) to `outcome`'s score: what `select_reasons` picks, each with its sentence and
    `support` (features.matrix.Reason).

    Which features are stated is decided on arrays, as evaluate decides it from the stored
    matrix; only the rows that state something get a context for the sentences: the features,
    then the counts, then the record's fields (declared values last: an unseen category is NaN
    as a feature but named as declared), as plain Python values taken column by column."""
    at = np.asarray(rows)
    overall = {name: inputs.counts[name][at] for name in OVERALL_COUNTS}
    chosen = select_reasons(
        contributions, evidence(_columns(inputs.matrix[at], overall, outcome), len(at)), max_reasons
    )
    out: list[list[dict]] = [[] for _ in range(len(at))]
    explained = [i for i, picked in enumerate(chosen) if picked]
    if not explained:
        return out
    at = at[explained]
    matrix = inputs.matrix[at]
    values = {name: matrix[:, j].tolist() for j, name in enumerate(FEATURE_NAMES)}
    for column in CATEGORICAL:  # the category a code stands for, as the feature frame holds it
        categories = state.categories[column]
        values[column] = [np.nan if code != code else categories[int(code)] for code in values[column]]
    context_columns = dict(values)
    context_columns.update({name: column[at].tolist() for name, column in inputs.counts.items()})
    for name, column in inputs.records.items():
        column = inputs.fields.get(name, column)
        # dates as the Timestamps a frame's row holds, not numpy's integer nanoseconds
        context_columns[name] = (
            pd.DatetimeIndex(column[at]).tolist() if column.dtype.kind == "M" else column[at].tolist()
        )
    for name in ("hs_chapter", "day", "log_value_per_kg"):
        context_columns[name] = inputs.fields[name][at].tolist()
    names = list(context_columns)
    for k, context_values in enumerate(zip(*context_columns.values())):
        context = dict(zip(names, context_values), **{OUTCOME: outcome})
        i = explained[k]
        out[i] = [
            {
                "feature": FEATURE_NAMES[j],
                "value": _json_value(values[FEATURE_NAMES[j]][k]),
                "contribution": float(contributions[i, j]),
                "support": int(context[reason.support]),
                "text": reason.text(context),
            }
            for j in chosen[i]
            if (reason := FEATURES[j].reason) is not None
        ]
    return out


def policy_reason(assessed: Assessment, row: int, learned_duty: bool) -> dict | None:
    """Why the lane policy picked a declaration for its value or its critical score, first
    among its reasons; a pick by fraud risk is explained by the model's contributions alone."""
    source = assessed.selected_by[row]
    risk = float(assessed.risk[row])
    if source == "value":
        duty_at_risk = float(assessed.duty_at_risk[row])
        duty = duty_at_risk / risk if risk > 0 else 0.0
        estimate = "expected recovered duty" if learned_duty else "declared duty"
        return {
            "feature": "duty_at_risk",
            "value": duty_at_risk,
            "contribution": None,
            "support": None,
            "text": f"{estimate} {duty:,.0f} at {risk:.0%} fraud risk",
        }
    if source == "critical":
        critical = float(assessed.critical[row])
        counts = assessed.inputs.counts
        overall = float(overall_rate(counts["all__critical_count"][row], counts["all__inspected_count"][row]))
        return {
            "feature": "critical_score",
            "value": critical,
            "contribution": None,
            "support": None,
            "text": f"critical (public-safety) fraud risk {critical:.1%}, against {overall:.1%} overall",
        }
    return None


def reason_quality(
    model: RiskModel, matrix: pd.DataFrame, scores: pd.DataFrame, max_reasons: int = MAX_REASONS, seed: int = 0
) -> dict[str, float]:
    """How the reasons of a window's red and yellow declarations hold up, from its stored feature
    matrix (`model_input`'s encoding, in the order of `scores`, which holds their `lane` and
    `selected_by`), as the service would state them with the overall rates of the model's state:

    - `reasons_pass_share`: declarations whose shown reasons all state evidence (no typical
      value, no bare category: features.matrix.Reason); `reasons_top_pass_share`: the same for
      the plain largest positive contributions, without those rules (as before issue 30);
    - `reasons_explained_share`: declarations with at least one of the model's reasons;
    - `reasons_faithfulness_shown`: the mean drop of the explained score (the risk score, or the
      critical score for a critical pick) when the shown reasons' features are set to their
      reference values (features.matrix.references), over the declarations with a reason;
      `reasons_faithfulness_random`: the same for as many features drawn at random."""
    red_or_yellow = np.flatnonzero(scores["lane"].to_numpy() != "green")
    x = matrix[FEATURE_NAMES].to_numpy(dtype="float64")[red_or_yellow]
    source = scores["selected_by"].to_numpy()[red_or_yellow]
    totals = model.state.totals["all"].loc["all"]
    overall = {name: float(totals[name.removeprefix("all__")]) for name in OVERALL_COUNTS}
    rng = np.random.default_rng(seed)
    passed, top_passed, explained, drops, random_drops = [], [], [], [], []
    for outcome, rows in (("fraud", source != "critical"), ("critical", source == "critical")):
        if not rows.any():
            continue
        features, n = x[rows], int(rows.sum())
        columns = _columns(features, overall, outcome)
        stated = evidence(columns, n)
        contributions = model.contributions(features, outcome)[:, :-1]
        slots = max_reasons - np.isin(source[rows], STATED_SOURCES)
        chosen = [js[:k] for js, k in zip(select_reasons(contributions, stated, max_reasons), slots)]
        top = np.argsort(-contributions, axis=1, kind="stable")
        passed += [bool(stated[i, js].all()) for i, js in enumerate(chosen)]
        top_passed += [
            bool(stated[i, [j for j in top[i, :k] if contributions[i, j] > 0]].all()) for i, k in enumerate(slots)
        ]
        explained += [bool(js) for js in chosen]
        reference = references(columns, n)
        shown, drawn = features.copy(), features.copy()
        for i, js in enumerate(chosen):
            shown[i, js] = reference[i, js]
            at_random = rng.choice(len(FEATURE_NAMES), size=len(js), replace=False)
            drawn[i, at_random] = reference[i, at_random]
        score, with_reason = model.calibrated(features, outcome), np.array([bool(js) for js in chosen])
        drops += (score - model.calibrated(shown, outcome))[with_reason].tolist()
        random_drops += (score - model.calibrated(drawn, outcome))[with_reason].tolist()
    return {
        "reasons_rows": len(red_or_yellow),
        "reasons_pass_share": float(np.mean(passed)),
        "reasons_top_pass_share": float(np.mean(top_passed)),
        "reasons_explained_share": float(np.mean(explained)),
        "reasons_faithfulness_shown": float(np.mean(drops)),
        "reasons_faithfulness_random": float(np.mean(random_drops)),
    }


@dataclass
class RiskModel:
    fraud_booster: lgb.Booster
    critical_booster: lgb.Booster
    fraud_calibration: Calibration
    critical_calibration: Calibration
    lanes: LanePolicy
    state: FeatureState
    info: dict = field(default_factory=dict)
    # expected recovered duty of a fraud, learned from inspections' additional_duty where history
    # holds enough of it; None: the declared duty is the estimate (docs/api.md, duty_at_risk)
    duty_booster: lgb.Booster | None = None

    def _booster(self, outcome: str) -> tuple[lgb.Booster, Calibration]:
        if outcome == "fraud":
            return self.fraud_booster, self.fraud_calibration
        return self.critical_booster, self.critical_calibration

    def calibrated(self, matrix, outcome: str = "fraud") -> np.ndarray:
        """The calibrated probability of `outcome` ("fraud": the risk score; "critical")."""
        booster, calibration = self._booster(outcome)
        return calibration(booster.predict(matrix, raw_score=True))

    @functools.cached_property
    def path_contributions(self) -> dict[str, PathContributions]:
        """Each booster's per-leaf attribution table (models.contributions), by the outcome it
        predicts: built by `load` (or on first use for a model made in memory), never per request."""
        return {outcome: PathContributions(self._booster(outcome)[0]) for outcome in OUTCOME_WORDS}

    def contributions(self, matrix, outcome: str = "fraud") -> np.ndarray:
        """A booster's contributions to its raw score (log-odds), by path attribution:
        `pred_contrib`'s shape (one column per feature, then the bias), summing to the raw score."""
        return self.path_contributions[outcome](matrix)

    def score(
        self, records: pd.DataFrame | Declarations, max_reasons: int = MAX_REASONS, reasons: str = "selected"
    ) -> pd.DataFrame:
        """Scores, lanes and reasons for typed canonical declarations (a frame or its columns), in their order. Reasons
        ("selected": red and yellow declarations; "all"; "none") cost a leaf-index predict and a
        table lookup each (models.contributions), so only the declarations that carry them pay for it."""
        check_reasons(reasons)
        assessed = self.assess(records)
        rows = reason_rows(assessed.lane, reasons)
        return assessed.results(self.explain(assessed, rows, max_reasons))

    def assess(self, records: pd.DataFrame | Declarations, policy: LanePolicy | None = None) -> Assessment:
        """Features, calibrated scores and lanes; no contributions yet. `policy` stands in for
        the packaged one, for a caller that asks what other thresholds would have decided on
        the same scores (bench.backtest's thresholds following the traffic)."""
        inputs = serving_inputs(records, self.state)
        risk, critical = self.calibrated(inputs.matrix), self.calibrated(inputs.matrix, "critical")
        duty_at_risk = risk * self.expected_duty(inputs.matrix)
        ids = [str(i) for i in inputs.records["declaration_id"].tolist()]
        lane, selected_by = (policy or self.lanes).assign(risk, critical, duty_at_risk, ids)
        return Assessment(ids, risk, critical, duty_at_risk, lane, selected_by, inputs)

    def expected_duty(self, matrix: np.ndarray) -> np.ndarray:
        """Duty an inspection of a fraud would recover: learned where history taught it, else
        the declared duty."""
        if self.duty_booster is None:
            return matrix[:, DECLARED_DUTY]
        return self.duty_booster.predict(matrix)  # Tweedie's log link: never negative

    def explain(self, assessed: Assessment, rows: np.ndarray, max_reasons: int) -> list[list[dict]]:
        """Reasons for `rows` (positions), `[]` for the others: a critical pick's from the critical
        booster's contributions, every other's from the fraud booster's, after the policy's line."""
        reasons: list[list[dict]] = [[] for _ in assessed.ids]
        if not len(rows) or max_reasons <= 0:
            return reasons
        critical = assessed.selected_by[rows] == "critical"
        for outcome, explained in (("fraud", rows[~critical]), ("critical", rows[critical])):
            if not len(explained):
                continue
            contributions = self.contributions(assessed.inputs.matrix[explained], outcome)[:, :-1]
            found_all = reasons_for(assessed.inputs, self.state, explained, contributions, max_reasons, outcome)
            for row, found in zip(explained.tolist(), found_all):
                stated = policy_reason(assessed, row, self.duty_booster is not None)
                reasons[row] = ([stated] if stated else []) + found[: max_reasons - bool(stated)]
        return reasons

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.fraud_booster.save_model(str(directory / "fraud.txt"))
        self.critical_booster.save_model(str(directory / "critical.txt"))
        if self.duty_booster is not None:
            self.duty_booster.save_model(str(directory / "duty.txt"))
        self.state.save(directory / "state")
        config = {
            "fraud_calibration": self.fraud_calibration.to_dict(),
            "critical_calibration": self.critical_calibration.to_dict(),
            "lanes": self.lanes.to_dict(),
            "info": self.info,
        }
        (directory / "model.json").write_text(json.dumps(config, indent=1, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> RiskModel:
        config = json.loads((directory / "model.json").read_text())
        model = cls(
            fraud_booster=lgb.Booster(model_file=str(directory / "fraud.txt")),
            critical_booster=lgb.Booster(model_file=str(directory / "critical.txt")),
            fraud_calibration=Calibration(**config["fraud_calibration"]),
            critical_calibration=Calibration(**config["critical_calibration"]),
            lanes=LanePolicy(**config["lanes"]),
            state=FeatureState.load(directory / "state"),
            info=config["info"],
            duty_booster=lgb.Booster(model_file=str(duty)) if (duty := directory / "duty.txt").exists() else None,
        )
        model.path_contributions  # noqa: B018 -- built once, at load, not by the first request
        return model


class InvalidDeclarations(ValueError):
    """Raised with every failed field, so a caller can fix all of them at once."""

    def __init__(self, failures: pd.DataFrame):
        self.failures = failures
        shown = "; ".join(f"row {f.index}: {f.field} {f.message}" for f in failures.head(20).itertuples())
        more = f" (and {len(failures) - 20} more)" if len(failures) > 20 else ""
        super().__init__(f"{len(failures)} invalid field(s): {shown}{more}")


def validated_declarations(records: pd.DataFrame | list[dict]) -> Declarations:
    """Canonical declarations as given (a frame, or the JSON objects a client sent) in their
    typed form; any invalid record rejects the whole batch, so nothing is half-scored. Checked
    online (`check_requests`: the contract's rules without a pandera pass, which would cost more
    than scoring)."""
    checked = check_requests(records)
    if not checked.passed:
        raise InvalidDeclarations(checked.failures)
    return checked.declarations


def score_declarations(
    model: RiskModel, records: pd.DataFrame | list[dict], max_reasons: int, reasons: str = "selected"
) -> pd.DataFrame:
    return model.score(validated_declarations(records), max_reasons, reasons)


class RiskPyfunc(mlflow.pyfunc.PythonModel):
    """The registry's view of a RiskModel: canonical declarations in, /score results out."""

    def load_context(self, context) -> None:
        self.model = RiskModel.load(Path(context.artifacts["bundle"]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        results = score_declarations(
            self.model, model_input, params.get("max_reasons", MAX_REASONS), params.get("reasons", "selected")
        )
        results["reasons"] = results["reasons"].map(json.dumps)
        return results
