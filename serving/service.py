"""The scoring service (CONTRACT.md section 3), served with `bentoml serve`."""

from __future__ import annotations

import logging
import os
import typing as t
from pathlib import Path

import bentoml
import pandas as pd

from models.bundle import InvalidDeclarations, score_declarations
from serving.audit import AuditStore
from serving.http import RequestGuard, api_keys
from serving.loading import load_packaged, model_tag
from serving.requests import batch_errors, error, outcome_errors

logger = logging.getLogger("customs_risk.service")


@bentoml.service(name="customs-risk", traffic={"timeout": 30})
class CustomsRisk:
    champion = bentoml.models.BentoModel(model_tag())

    def __init__(self) -> None:
        info = self.champion.info
        self.model = load_packaged(self.champion)
        self.packaged = dict(info.metadata)
        self.identity = {
            "name": self.packaged["name"],
            "version": str(self.packaged["version"]),
            "run_id": self.packaged["run_id"],
        }
        self.max_batch = int(self.packaged["serving"]["max_batch"])
        self.max_reasons = int(self.packaged["serving"]["max_reasons"])
        self.audit = AuditStore(Path(os.environ.get("RISK_AUDIT_DB", "data/serving/audit.db")))
        if not api_keys():
            logger.warning("RISK_API_KEYS is not set: only loopback clients are served")
        logger.info("serving %s version %s (run %s)", *self.identity.values())

    def _reject(self, ctx: bentoml.Context, errors: list[dict]) -> dict:
        ctx.response.status_code = 422
        return {"errors": errors}

    @bentoml.api
    def score(self, declarations: list[dict[str, t.Any]], ctx: bentoml.Context) -> dict:
        errors = batch_errors(declarations, "declarations", self.max_batch)
        if errors:
            return self._reject(ctx, errors)
        try:
            results = score_declarations(self.model, pd.DataFrame(declarations), self.max_reasons)
        except InvalidDeclarations as invalid:
            return self._reject(
                ctx, [error(int(f.index), f.field, f.message) for f in invalid.failures.itertuples()]
            )
        self.audit.record_decisions(declarations, results, self.identity["version"])
        return {"model": self.identity, "results": results.to_dict(orient="records")}

    @bentoml.api
    def outcomes(self, outcomes: list[dict[str, t.Any]], ctx: bentoml.Context) -> dict:
        errors = batch_errors(outcomes, "outcomes", self.max_batch) or outcome_errors(outcomes)
        if errors:
            return self._reject(ctx, errors)
        return {"stored": self.audit.record_outcomes(outcomes)}

    @bentoml.api
    def metadata(self) -> dict:
        lanes = self.model.lanes
        return {
            **self.identity,
            "training_window": self.model.info["training_window"],
            "validation_window": self.model.info["validation_window"],
            "validation_metrics": self.packaged["validation_metrics"],
            "lanes": {
                "red_share": lanes.red_share,
                "yellow_share": lanes.yellow_share,
                "exploration_share": lanes.exploration_share,
                "red_threshold": lanes.red_threshold,
                "yellow_threshold": lanes.yellow_threshold,
            },
            "features": self.model.info["features"],
        }


CustomsRisk.add_asgi_middleware(RequestGuard)
