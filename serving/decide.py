"""The decision on a batch of declarations, written once: the service's /score, `customs-risk
score`, bench.backtest and the loop simulation (serving.simulation) all call `decide`, so a
declaration gets the same lane, source and reasons whichever door it comes in by, and what the
simulation measures is what a center would run.

The chain, in the order a targeting center wants it (CONTRACT section 3):

1. the model scores each declaration (fraud risk, critical risk, duty at risk);
2. the lane policy gives it a lane by capacity (models.lanes; `selected_by` model, value,
   critical or random), by thresholds fixed at training or following the traffic: fitted for
   each declaration in turn on the scores of the last declarations scored before it, earlier
   ones of the same batch included, so the same declarations in the same order get the same
   lanes whether they come one by one, in batches of a thousand or as one file;
3. an analyst's risk profile that fires raises the lane to its own (serving.profiles;
   `selected_by: rule`), so a declaration a rule holds is never counted as a random pick and the
   yardstick stays unbiased;
4. a partner alert that matches raises it again (serving.alerts; `selected_by: alert` unless the
   lane was already stricter than every alert that fired);
5. reasons: the alerts' first, then the rules', then the model's contributions, at most
   `max_reasons`. The model's are computed only for the declarations that carry them, by the
   lane the profiles left: a profile that raises a green states the model's reasons after its
   own, an alert states its own only.

Raising never lowers a lane (models.lanes.raise_lane): an override adds scrutiny, it never
releases what the policy held.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from features.schema import Declarations
from models.bundle import RiskModel, check_reasons, reason_rows
from models.lanes import THRESHOLDS, LanePolicy, ScoreWindow, raise_lane, score_rows
from serving.alerts import EMPTY_INDEX, Alert, AlertIndex
from serving.profiles import Rule, rule_hits


def decide(
    model: RiskModel,
    declarations: Declarations | pd.DataFrame,
    *,
    rules: tuple[Rule, ...] = (),
    alerts: AlertIndex = EMPTY_INDEX,
    reasons: str = "selected",
    max_reasons: int = 3,
    policy: LanePolicy | None = None,
    window: ScoreWindow | None = None,
) -> pd.DataFrame:
    """The /score results (models.bundle.RESULT_COLUMNS), one row per declaration in their order,
    then the thresholds its lane was decided with (models.lanes.THRESHOLDS, infinite for a source
    given no share): what the audit store keeps beside each decision.

    - `model`: the champion as loaded (serving.loading.load_packaged) or any RiskModel.
    - `declarations`: typed and valid, as `models.bundle.validated_declarations` gives them (or a
      frame as `features.schema.check_declarations` types it): a caller validates first, so that
      what it refuses, and how it says so, stays its own (a 422, a `.rejected` file).
    - `rules`: the analysts' risk profiles in force (`RiskProfiles.current()`); none by default.
    - `alerts`: the partner alerts in force (`LiveAlerts.current()`); none by default.
    - `reasons`: which declarations carry the model's reasons: "selected" (red and yellow, after
      the profiles), "all" or "none"; a rule or alert that fires states its reason whatever.
    - `max_reasons`: reasons per declaration, all sources together.
    - `policy`: shares and thresholds to use instead of the packaged ones, for a what-if on the
      same scores (serving.simulation: red scaled to its inspection rate); None: the model's own.
    - `window`: the scores the thresholds follow (the last declarations scored before this batch,
      serving.loading.PackagedLanes); None: the policy's thresholds are fixed.
    """
    check_reasons(reasons)
    declarations = Declarations.of(declarations)
    lanes = policy or model.lanes
    assessed = model.assess(declarations, policy)
    if window is None:
        thresholds = np.tile(lanes.thresholds(), (len(assessed.ids), 1))
    else:  # the scores first: each declaration's thresholds follow those before it in the batch
        thresholds = window.follow(lanes, score_rows(assessed.risk, assessed.critical, assessed.duty_at_risk))
        followed = lanes.assign(assessed.risk, assessed.critical, assessed.duty_at_risk, assessed.ids, thresholds)
        assessed = replace(assessed, lane=followed[0], selected_by=followed[1])
    lane, selected_by = assessed.lane.copy(), assessed.selected_by.copy()
    stated: dict[int, list[dict]] = {}  # by row: the reasons of the profiles and alerts that fired
    if rules:
        hits = rule_hits(declarations, rules, model.state, assessed.inputs.matrix)
        for row in np.flatnonzero(hits.any(axis=1)).tolist():
            fired = [rule for rule, hit in zip(rules, hits[row]) if hit]
            lane[row] = raise_lane(lane[row], *(rule.lane for rule in fired))
            selected_by[row] = "rule"
            stated[row] = [profile_reason(rule) for rule in fired]
    explained = model.explain(assessed, reason_rows(lane, reasons), max_reasons)
    for row, matched in alerts.fired(declarations).items():
        strictest = matched[0].lane  # `AlertIndex.matching` puts the strictest first
        if raise_lane(lane[row], strictest) == strictest:  # as strict as the lane, or stricter
            lane[row], selected_by[row] = strictest, "alert"
        stated[row] = [alert_reason(alert) for alert in matched] + stated.get(row, [])
    for row, first in stated.items():
        explained[row] = (first + explained[row])[:max_reasons]
    results = replace(assessed, lane=lane, selected_by=selected_by).results(explained)
    return results.join(pd.DataFrame(thresholds, columns=list(THRESHOLDS), index=results.index))


def profile_reason(rule: Rule) -> dict:
    """The reason a risk profile states, in the shape of the model's (no contribution: it is the
    analyst's judgement, not a weight)."""
    return {"feature": "risk_profile", "value": rule.name, "contribution": None, "support": None, "text": rule.reason}


def alert_reason(alert: Alert) -> dict:
    """The reason a partner alert states: which alert, who issued it, on what, and why."""
    return {
        "feature": "alert",
        "value": alert.alert_id,
        "contribution": None,
        "support": None,
        "text": f"partner alert {alert.alert_id} from {alert.issued_by} on the {alert.target}: {alert.reason}",
    }
