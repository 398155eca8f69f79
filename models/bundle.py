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
from features.matrix import CATEGORICAL, FEATURE_NAMES, FEATURES_BY_NAME, ServingInputs, serving_inputs
from features.schema import Declarations, check_requests
from models.calibration import Calibration
from models.contributions import PathContributions
from models.lanes import LanePolicy

RESULT_COLUMNS = ["declaration_id", "risk_score", "critical_score", "duty_at_risk", "lane", "selected_by", "reasons"]
DECLARED_DUTY = FEATURE_NAMES.index("duty_exposure")  # item_price * tax_rate / 100, as a feature


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


def reasons_for(
    inputs: ServingInputs, state: FeatureState, rows: np.ndarray, contributions: np.ndarray, max_reasons: int
) -> list[list[dict]]:
    """The features that pushed each score up most, as sentences about the declaration, for
    `rows` (positions in `inputs`) and their contributions (one row each, features only).

    Each row's context holds the features, then the counts, then the record's fields (declared
    values last: an unseen category is NaN as a feature but named as declared), as plain Python
    values taken column by column, and only for rows with a positive contribution."""
    top = np.argsort(-contributions, axis=1, kind="stable")[:, :max_reasons]
    chosen = np.take_along_axis(contributions, top, axis=1)
    keep = chosen > 0
    out: list[list[dict]] = [[] for _ in range(len(rows))]
    explained = np.flatnonzero(keep.any(axis=1))
    if not len(explained):
        return out
    at = np.asarray(rows)[explained]
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
        context = dict(zip(names, context_values))
        i = explained[k]
        out[i] = [
            {
                "feature": FEATURE_NAMES[j],
                "value": _json_value(values[FEATURE_NAMES[j]][k]),
                "contribution": float(contributions[i, j]),
                "text": FEATURES_BY_NAME[FEATURE_NAMES[j]].reason(context),
            }
            for j, positive in zip(top[i].tolist(), keep[i].tolist())
            if positive
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
            "text": f"{estimate} {duty:,.0f} at {risk:.0%} fraud risk",
        }
    if source == "critical":
        critical = float(assessed.critical[row])
        return {
            "feature": "critical_score",
            "value": critical,
            "contribution": None,
            "text": f"{critical:.1%} risk of critical (public-safety) fraud, at {risk:.0%} fraud risk",
        }
    return None


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

    @functools.cached_property
    def path_contributions(self) -> PathContributions:
        """The fraud booster's per-leaf attribution table (models.contributions): built by `load`
        (or on first use for a model made in memory), never per request."""
        return PathContributions(self.fraud_booster)

    def contributions(self, matrix) -> np.ndarray:
        """The fraud booster's contributions to its raw score (log-odds), by path attribution:
        `pred_contrib`'s shape (one column per feature, then the bias), summing to the raw score."""
        return self.path_contributions(matrix)

    def score(
        self, records: pd.DataFrame | Declarations, max_reasons: int = 3, reasons: str = "selected"
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
        risk = self.fraud_calibration(self.fraud_booster.predict(inputs.matrix, raw_score=True))
        critical = self.critical_calibration(self.critical_booster.predict(inputs.matrix, raw_score=True))
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
        """Reasons for every declaration: from the fraud booster's contributions for `rows`
        (positions), `[]` for the others."""
        reasons: list[list[dict]] = [[] for _ in assessed.ids]
        if len(rows) and max_reasons > 0:
            matrix = assessed.inputs.matrix[rows]
            contributions = self.contributions(matrix)[:, :-1]
            found_all = reasons_for(assessed.inputs, self.state, rows, contributions, max_reasons)
            for row, found in zip(rows.tolist(), found_all):
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
            self.model, model_input, params.get("max_reasons", 3), params.get("reasons", "selected")
        )
        results["reasons"] = results["reasons"].map(json.dumps)
        return results
