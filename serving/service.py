"""The scoring service (docs/api.md), served with `bentoml serve`."""

from __future__ import annotations

import datetime as dt
import gc
import logging
import typing as t
from pathlib import Path

import bentoml
import pandas as pd
import pydantic
import pydantic_core
from starlette.responses import Response

from models.bundle import RESULT_COLUMNS, InvalidDeclarations, result_records, validated_declarations
from models.governance import APPROVAL_TAGS
from serving.alert_exchange import LiveAlerts
from serving.audit import AuditStore, AuditStoreUnavailable
from serving.decide import decide
from serving.http import RequestGuard, quiet_client_errors
from serving.kpis import validation_scores
from serving.live_metrics import LiveMetrics
from serving.loading import PackagedLanes, check_loadable, load_packaged, model_tag, packaged_champion
from serving.profiles import RiskProfiles
from serving.requests import batch_errors, declaration_type_errors, error, outcome_errors
from serving.settings import Settings, SettingsError

logger = logging.getLogger("customs_risk.service")
quiet_client_errors()

SETTINGS = Settings.from_environment()  # read while BentoML imports this module in the bento's folder
CHAMPION = packaged_champion(model_tag(SETTINGS))
LIMITS = dict(CHAMPION.info.metadata)["serving"]  # params.yaml `serving`, fixed at packaging


class _Body(pydantic.BaseModel):
    """A body with a key the API does not take is refused (BentoML would ignore the key), as the
    contract refuses unknown fields in a record."""

    model_config = pydantic.ConfigDict(extra="forbid")


Reasons = t.Literal["selected", "all", "none"]  # models.bundle.REASONS: who carries reasons


class ScoreRequest(_Body):
    declarations: list[dict[str, t.Any]]
    reasons: Reasons = "selected"  # red and yellow declarations; "all"; "none" (rule reasons always)


class OutcomesRequest(_Body):
    outcomes: list[dict[str, t.Any]]


class MetadataRequest(_Body):
    pass


def audit_location() -> Path | str:
    """Where decisions and outcomes are kept (serving.settings: a postgresql:// URL or an
    absolute path, required outside a checkout)."""
    try:
        return SETTINGS.audit_store()
    except SettingsError as err:
        raise RuntimeError(str(err)) from None


def _partner_keys_path() -> Path | None:
    """RISK_PARTNER_KEYS, or None (hashed alerts cannot match) when it is not usable."""
    try:
        return SETTINGS.partner_keys_file()
    except SettingsError as err:
        logger.error("hashed partner alerts will not match: %s", err)
        return None


@bentoml.service(
    name="customs-risk",
    traffic={"timeout": LIMITS["timeout_seconds"]},
    workers=SETTINGS.workers,
)
class CustomsRisk:
    champion = bentoml.models.BentoModel(CHAMPION.tag)

    def __init__(self) -> None:
        info = self.champion.info
        self.model = load_packaged(self.champion)
        self.packaged = dict(info.metadata)
        self.identity = {
            "name": self.packaged["name"],
            "version": str(self.packaged["version"]),
            "run_id": self.packaged["run_id"],
        }
        self.max_batch = int(LIMITS["max_batch"])
        self.max_reasons = int(LIMITS["max_reasons"])
        self.audit = AuditStore(audit_location())
        # thresholds fixed, or following the champion's last decisions in the store (all workers')
        self.lanes = PackagedLanes.of(self.champion, self.model.lanes)
        self.profiles = RiskProfiles.from_environment(SETTINGS)
        # partner alerts in the audit store's `alerts` table, re-read when an import changed it
        self.alerts = LiveAlerts(self.audit.location, _partner_keys_path())
        # GET /metrics: decisions, outcomes, and the risk score's drift from the validation window
        reference, missing = validation_scores(SETTINGS.checkout)
        if missing:
            logger.warning("customs_risk_score_psi is NaN: %s", missing)
        self.live = LiveMetrics(self.audit, reference, int(LIMITS["drift_window"]), self.model.lanes)
        # the model's feature state is some 250,000 long-lived objects: a full garbage collection
        # walks them all (85 ms), inside whichever request triggered it; frozen, it skips them
        gc.freeze()
        if not SETTINGS.api_keys:
            logger.warning("RISK_API_KEYS is not set: only loopback clients are served")
        logger.info(
            "serving %s version %s (run %s); audit store %s; %d risk profile rule(s) from %s",
            *self.identity.values(),
            self.audit.described,
            len(self.profiles.rules),
            self.profiles.path,
        )

    @bentoml.on_deployment
    def refuse_to_start_when_unfit() -> None:
        """Runs once in `bentoml serve` before any worker starts, so a champion that does not
        match the registry or cannot be loaded, an unusable audit store or a bad rules file
        stops the server with the reason; a failing worker would be restarted forever."""
        AuditStore(audit_location()).close()
        RiskProfiles.from_environment(SETTINGS)
        check_loadable(CHAMPION)

    def __is_ready__(self) -> bool:
        """BentoML's hook on GET /readyz: ready while the store answers, so a replica that
        cannot store a decision leaves the balancer's pool (503) and returns by itself."""
        return self.audit.ready()

    def __metrics__(self, page: str) -> str:
        """BentoML's hook on GET /metrics: the page it rendered from the workers' counters, and
        the drift and lane share gauges computed now, from the audit store (not after every /score)."""
        return page + self.live.exposition(page)

    def _reject(self, ctx: bentoml.Context, errors: list[dict]) -> dict:
        ctx.response.status_code = 422
        return {"errors": errors}

    def _unavailable(self, ctx: bentoml.Context, failed: AuditStoreUnavailable) -> dict:
        logger.error("refused a request: %s", failed)
        ctx.response.status_code = 503
        ctx.response.headers["retry-after"] = "30"
        return {"errors": [error(None, "audit_store", f"{failed}; nothing was stored, retry later")]}

    @bentoml.api(input_spec=ScoreRequest)
    def score(self, declarations: list[dict[str, t.Any]], ctx: bentoml.Context, reasons: Reasons = "selected") -> dict:
        errors = batch_errors(declarations, "declarations", self.max_batch) or declaration_type_errors(declarations)
        if errors:
            return self._reject(ctx, errors)
        try:
            typed = validated_declarations(declarations)
        except InvalidDeclarations as invalid:
            return self._reject(ctx, [error(int(f.index), f.field, f.message) for f in invalid.failures.itertuples()])
        try:
            # Concurrent requests each follow the window as it was when they began (every
            # decision stores the thresholds it used); one client's stream in order is exact.
            window = self.lanes.window(self._recent()) if self.lanes.follows else None
            results = decide(
                self.model,
                typed,
                rules=self.profiles.current(),
                alerts=self.alerts.current(),
                reasons=reasons,
                max_reasons=self.max_reasons,
                window=window,
            )
            self.audit.record_decisions(declarations, results, self.identity["version"], self.lanes.mode)
        except AuditStoreUnavailable as failed:
            return self._unavailable(ctx, failed)
        self.live.decided(results)
        # the answer as JSON bytes (pydantic's encoder, as BentoML's own): BentoML would first
        # validate the whole dict against the return annotation, dump it, then encode it
        answer = {"model": self.identity, "results": result_records(results[RESULT_COLUMNS])}
        return Response(pydantic_core.to_json(answer), media_type="application/json")

    @bentoml.api(input_spec=OutcomesRequest)
    def outcomes(self, outcomes: list[dict[str, t.Any]], ctx: bentoml.Context) -> dict:
        errors = batch_errors(outcomes, "outcomes", self.max_batch) or outcome_errors(outcomes)
        if errors:
            return self._reject(ctx, errors)
        try:
            stored = self.audit.record_outcomes(outcomes)
        except AuditStoreUnavailable as failed:
            return self._unavailable(ctx, failed)
        self.live.reported(outcomes)
        return {"stored": stored}

    def _recent(self) -> pd.DataFrame:
        """The champion's last decisions in the store, as many as the lanes' window holds."""
        return self.audit.recent_scores(self.lanes.size, self.identity["version"])

    @bentoml.api(input_spec=MetadataRequest)
    def metadata(self, ctx: bentoml.Context) -> dict:
        try:
            lanes = self.lanes.describe(self._recent())
        except AuditStoreUnavailable as failed:
            return self._unavailable(ctx, failed)
        approval = self.packaged.get("approval") or {}  # packaged with the version (models.governance)
        return {
            **self.identity,
            **{key: approval.get(key) for key in APPROVAL_TAGS},  # who put it in service, when and why
            "files_sha256": self.packaged["files_sha256"],
            "training_window": self.model.info["training_window"],
            "validation_window": self.model.info["validation_window"],
            "validation_metrics": self.packaged["validation_metrics"],
            # shares per source, their order, the thresholds now and how they are set, the window
            "lanes": lanes,
            # duty_at_risk: risk x the declared duty, or x the duty inspections were learned to recover
            "duty_estimate": self.model.info.get("duty_estimate", "declared"),
            "features": self.model.info["features"],
            # which declarations carry reasons unless a request says otherwise, and how many each
            "reasons": {"default": "selected", "options": list(t.get_args(Reasons)), "max_reasons": self.max_reasons},
            "risk_profiles": self.profiles.describe(),
            "alerts": self._active_alerts(),
        }

    def _active_alerts(self) -> dict:
        """Partner alerts in force today (UTC) per issuer, from the store as the lanes see it now."""
        today = dt.datetime.now(dt.UTC).date().isoformat()
        index = self.alerts.current()
        return {"on": today, "active_by_issuer": index.active_by_issuer(today), "stored": len(index)}


# bentoml.service turned the class into a bentoml Service, which has add_asgi_middleware; mypy
# ignores the return type of class decorators (python/mypy#3135) and still sees the class
CustomsRisk.add_asgi_middleware(  # type: ignore[attr-defined]
    RequestGuard,
    body_timeout_seconds=LIMITS["body_timeout_seconds"],
    max_batch=int(LIMITS["max_batch"]),
    settings=SETTINGS,
)
