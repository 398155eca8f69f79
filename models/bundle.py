"""The deployable unit: boosters, calibrations, lane policy and feature state, saved together so
the registry version is everything the service needs and nothing it must find elsewhere."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from features.history import FeatureState, with_derived_fields
from features.matrix import FEATURE_NAMES, FEATURES_BY_NAME, serving_features
from features.schema import RECORD, check_declarations
from models.calibration import Calibration
from models.lanes import LanePolicy

RESULT_COLUMNS = ["declaration_id", "risk_score", "critical_score", "lane", "selected_by", "reasons"]


def _json_value(value):
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value


@dataclass
class RiskModel:
    fraud_booster: lgb.Booster
    critical_booster: lgb.Booster
    fraud_calibration: Calibration
    critical_calibration: Calibration
    lanes: LanePolicy
    state: FeatureState
    info: dict = field(default_factory=dict)

    def score(self, records: pd.DataFrame, max_reasons: int = 3) -> pd.DataFrame:
        """Scores, lanes and reasons for typed canonical declarations, in their order."""
        x, counts = serving_features(records, self.state)
        contributions = self.fraud_booster.predict(x, pred_contrib=True)
        risk = self.fraud_calibration(contributions.sum(axis=1))  # the contributions sum to the margin
        critical = self.critical_calibration(self.critical_booster.predict(x, raw_score=True))
        ids = records["declaration_id"].astype(str).tolist()
        lane, selected_by = self.lanes.assign(risk, ids, critical)
        reasons = self._reasons(records, x, counts, contributions[:, :-1], max_reasons)
        return pd.DataFrame(
            {
                "declaration_id": ids,
                "risk_score": risk,
                "critical_score": critical,
                "lane": lane,
                "selected_by": selected_by,
                "reasons": reasons,
            }
        )

    def _reasons(self, records, x, counts, contributions, max_reasons) -> list[list[dict]]:
        """The features that pushed each score up most, as sentences about this declaration."""
        derived = with_derived_fields(records)
        top = np.argsort(-contributions, axis=1, kind="stable")[:, :max_reasons]
        reasons = []
        for row in range(len(records)):
            picked = [j for j in top[row] if contributions[row, j] > 0]
            if not picked:
                reasons.append([])
                continue
            # declared values last: an unseen category is NaN as a feature but named as declared
            context = {
                **{name: x.iat[row, j] for j, name in enumerate(FEATURE_NAMES)},
                **counts.iloc[row].to_dict(),
                **derived.iloc[row].to_dict(),
            }
            reasons.append(
                [
                    {
                        "feature": FEATURE_NAMES[j],
                        "value": _json_value(x.iat[row, j]),
                        "contribution": float(contributions[row, j]),
                        "text": FEATURES_BY_NAME[FEATURE_NAMES[j]].reason(context),
                    }
                    for j in picked
                ]
            )
        return reasons

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.fraud_booster.save_model(str(directory / "fraud.txt"))
        self.critical_booster.save_model(str(directory / "critical.txt"))
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
        return cls(
            fraud_booster=lgb.Booster(model_file=str(directory / "fraud.txt")),
            critical_booster=lgb.Booster(model_file=str(directory / "critical.txt")),
            fraud_calibration=Calibration(**config["fraud_calibration"]),
            critical_calibration=Calibration(**config["critical_calibration"]),
            lanes=LanePolicy(**config["lanes"]),
            state=FeatureState.load(directory / "state"),
            info=config["info"],
        )


class InvalidDeclarations(ValueError):
    """Raised with every failed field, so a caller can fix all of them at once."""

    def __init__(self, failures: pd.DataFrame):
        self.failures = failures
        shown = "; ".join(
            f"row {f.index}: {f.field} {f.message}" for f in failures.head(20).itertuples()
        )
        more = f" (and {len(failures) - 20} more)" if len(failures) > 20 else ""
        super().__init__(f"{len(failures)} invalid field(s): {shown}{more}")


def validated_declarations(records: pd.DataFrame) -> pd.DataFrame:
    """Canonical declarations as given (strings, JSON values) in their typed form; any invalid
    record rejects the whole batch, so nothing is half-scored."""
    checked = check_declarations(records, RECORD)
    if not checked.failures.empty:
        raise InvalidDeclarations(checked.failures)
    return checked.valid


def score_declarations(model: RiskModel, records: pd.DataFrame, max_reasons: int) -> pd.DataFrame:
    return model.score(validated_declarations(records), max_reasons)


class RiskPyfunc(mlflow.pyfunc.PythonModel):
    """The registry's view of a RiskModel: canonical declarations in, /score results out."""

    def load_context(self, context) -> None:
        self.model = RiskModel.load(Path(context.artifacts["bundle"]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        results = score_declarations(self.model, model_input, (params or {}).get("max_reasons", 3))
        results["reasons"] = results["reasons"].map(json.dumps)
        return results
