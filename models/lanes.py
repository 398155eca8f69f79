"""Lanes from inspection capacity and from what the center values.

Red capacity is shared between three things a center spends it on: critical (public-safety)
risk, duty at risk and fraud risk, filled in that order from the validation window's
out-of-sample scores, so each source gets its share of traffic and a declaration counts once, for
the first source that picks it. Yellow takes the next by critical score and by risk the same way.
A keyed hash sends an exploration share of would-be-green declarations red at random, so the
model keeps being tested on what it would have released (the report's unbiased yardstick).

Thresholds are fitted when the model is trained, on the validation window's scores. Served, they
either stay so (`fixed`) or follow the traffic (`follow`, params.yaml `serving.lane_thresholds`):
capacity is a share of what arrives, and the score distribution moves by more than a point at
the top from month to month (docs/lanes.md, Backtest), so thresholds fixed on any past window let
the shares drift. Following, each declaration's thresholds are fitted, the same way, on the
scores of the declarations scored just before it (`ScoreWindow`): its lane depends on its own
scores and on that window, never on the declarations after it, so a stream gets the same lanes
however it is cut into batches. Given its thresholds, raising any score never lowers a lane.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

# Every lane, least scrutiny first: green releases, yellow checks the documents, red inspects.
LANES = ("green", "yellow", "red")
SEVERITY = {lane: rank for rank, lane in enumerate(LANES)}
# Where an analyst's risk profile or a partner alert may send a declaration: they add scrutiny to
# what the model decided and never release what it holds.
RAISED_LANES = LANES[1:]


def raise_lane(lane: str, *to: str) -> str:
    """The strictest of `lane` and the lanes `to` asks for: an override that fires can only add
    scrutiny, so a wrong or stale rule never releases a declaration the policy held."""
    return max((lane, *to), key=SEVERITY.__getitem__)


# What thresholds are quantiles of, as /score names the scores; a window holds them in this order.
SCORES = ("risk_score", "critical_score", "duty_at_risk")
RISK, CRITICAL, VALUE = range(len(SCORES))
# Every threshold, in the order it fills capacity: (its name, the lane and source it picks for,
# the score it is a quantile of). Each takes its share among what the ones before it left.
FILLS = (
    ("red_critical_threshold", "red", "critical", CRITICAL),
    ("red_value_threshold", "red", "value", VALUE),
    ("red_threshold", "red", "model", RISK),  # fraud risk
    ("yellow_critical_threshold", "yellow", "critical", CRITICAL),
    ("yellow_threshold", "yellow", "model", RISK),  # fraud risk
)
THRESHOLDS = tuple(name for name, *_ in FILLS)
# the sources of red and yellow picks, in the order they fill capacity: public safety first
RED_SOURCES = tuple(source for _, lane, source, _ in FILLS if lane == "red")
YELLOW_SOURCES = tuple(source for _, lane, source, _ in FILLS if lane == "yellow")
# What may select a declaration, as a decision's `selected_by` names it: the policy's sources by
# score, an analyst's risk profile (`rule`, serving.profiles), a partner alert (`alert`,
# serving.alerts) and the exploration share's random picks, the one sample chosen blind to risk.
RANDOM_PICK = "random"
SOURCES = ("model", "value", "critical", "rule", "alert", RANDOM_PICK)
# params.yaml `serving.lane_thresholds`: thresholds as fitted on the validation window, or
# refitted for each declaration on the last `serving.follow_window` scored (the default)
FIXED, FOLLOW = "fixed", "follow"
THRESHOLD_MODES = (FOLLOW, FIXED)
# The folder of a training run's MLflow artifacts holding its validation window's scores (the
# evaluate stage logs them): what the run's thresholds were fitted on, and what a packaged
# window that follows traffic starts from.
SCORES_ARTIFACTS = "lanes"


def threshold_mode(value: str) -> str:
    """params.yaml `serving.lane_thresholds`, checked where it is packaged and where it is read."""
    if value not in THRESHOLD_MODES:
        raise ValueError(f"serving.lane_thresholds must be one of {', '.join(THRESHOLD_MODES)}, got {value!r}")
    return value


@dataclass(frozen=True)
class LaneShares:
    """The capacity a center sets in params.yaml `serving`: shares of all declarations."""

    red_risk_share: float
    red_value_share: float
    red_critical_share: float
    yellow_share: float
    yellow_critical_share: float
    exploration_share: float

    def __post_init__(self) -> None:
        for name in LaneShares.__dataclass_fields__:
            share = getattr(self, name)
            if not 0 <= share <= 1:
                raise ValueError(f"serving.{name} must be between 0 and 1, got {share}")
        if self.yellow_critical_share > self.yellow_share:
            raise ValueError(
                f"serving.yellow_critical_share ({self.yellow_critical_share}) is part of yellow_share "
                f"({self.yellow_share}) and cannot exceed it"
            )
        if self.red_share + self.yellow_share > 1:
            raise ValueError(f"red and yellow shares add up to {self.red_share + self.yellow_share:.3f}, more than 1")

    @property
    def red_share(self) -> float:
        """Red by score (risk, value and critical together); the random picks come on top
        (report.md: share_setting)."""
        return self.red_risk_share + self.red_value_share + self.red_critical_share

    @staticmethod
    def from_params(serving: dict) -> LaneShares:
        return LaneShares(**{name: float(serving[name]) for name in LaneShares.__dataclass_fields__})

    def fill_shares(self) -> tuple[float, ...]:
        """Each threshold's share of all declarations, in FILLS order."""
        return (
            self.red_critical_share,
            self.red_value_share,
            self.red_risk_share,
            self.yellow_critical_share,
            self.yellow_share - self.yellow_critical_share,
        )


def _threshold(values: np.ndarray, available: np.ndarray, share: float) -> float:
    """The score of the last declaration the share takes among those still available (infinite
    when it takes none): every available declaration at or above it is picked, ties included."""
    count = round(share * len(values))
    pool = values[available]
    if count <= 0 or not len(pool):
        return float("inf")
    count = min(count, len(pool))
    return float(np.partition(pool, len(pool) - count)[len(pool) - count])


def fit_thresholds(shares: LaneShares, scores: np.ndarray) -> np.ndarray:
    """The thresholds (THRESHOLDS order) that give each source its share of these declarations'
    scores (rows of SCORES), each among what the sources before it left."""
    available = np.ones(len(scores), dtype=bool)
    thresholds = np.empty(len(FILLS))
    for k, ((*_, column), share) in enumerate(zip(FILLS, shares.fill_shares())):
        values = scores[:, column]
        thresholds[k] = _threshold(values, available, share)
        available &= values < thresholds[k]
    return thresholds


def score_rows(risk, critical, duty_at_risk) -> np.ndarray:
    """Scores as a window holds them: one row per declaration, SCORES in order."""
    return np.column_stack([np.asarray(a, dtype=float) for a in (risk, critical, duty_at_risk)])


@dataclass(frozen=True)
class LanePolicy(LaneShares):
    """The shares, and the thresholds that give each source its share."""

    exploration_key: str
    red_critical_threshold: float
    red_value_threshold: float
    red_threshold: float  # fraud risk
    yellow_critical_threshold: float
    yellow_threshold: float  # fraud risk

    @classmethod
    def fit(
        cls,
        shares: LaneShares,
        exploration_key: str,
        risk: np.ndarray,
        critical: np.ndarray,
        duty_at_risk: np.ndarray,
    ) -> LanePolicy:
        """Thresholds that give each source its share on these (out-of-sample) scores."""
        thresholds = fit_thresholds(shares, score_rows(risk, critical, duty_at_risk))
        shared = {name: getattr(shares, name) for name in LaneShares.__dataclass_fields__}
        return cls(**shared, exploration_key=exploration_key, **dict(zip(THRESHOLDS, thresholds.tolist())))

    def thresholds(self) -> np.ndarray:
        """The policy's thresholds, in THRESHOLDS order."""
        return np.array([getattr(self, name) for name in THRESHOLDS], dtype=float)

    def explored(self, declaration_ids: Sequence[str]) -> np.ndarray:
        """Whether each ID falls in the exploration share: the same ID always answers the same."""
        key = self.exploration_key.encode()
        if len(key) > hashlib.blake2b.MAX_KEY_SIZE:  # blake2b takes at most 64 key bytes
            key = hashlib.blake2b(key).digest()
        draws = [
            int.from_bytes(hashlib.blake2b(str(i).encode(), key=key, digest_size=8).digest(), "big")
            for i in declaration_ids
        ]
        return np.asarray(draws, dtype=np.float64) / 2.0**64 < self.exploration_share

    def assign(
        self,
        risk: np.ndarray,
        critical: np.ndarray,
        duty_at_risk: np.ndarray,
        declaration_ids: Sequence[str],
        thresholds: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lane and what selected it (`selected_by`), for each declaration; by `thresholds`, one
        row per declaration (THRESHOLDS order), where they follow the traffic, else the policy's."""
        scores = score_rows(risk, critical, duty_at_risk)
        limits = self.thresholds() if thresholds is None else np.asarray(thresholds, dtype=float)
        lane = np.full(len(scores), "green", dtype=object)
        selected_by = np.full(len(scores), "model", dtype=object)
        undecided = np.ones(len(scores), dtype=bool)
        for k, (_, to_lane, source, column) in enumerate(FILLS):
            chosen = undecided & (scores[:, column] >= limits[..., k])
            lane[chosen], selected_by[chosen] = to_lane, source
            undecided &= ~chosen
        random_pick = undecided & self.explored(declaration_ids)
        lane[random_pick], selected_by[random_pick] = "red", RANDOM_PICK
        return lane, selected_by

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> dict:
        """The policy as /metadata and the model card show it: shares and thresholds, without the
        exploration key (knowing it would tell an importer which declarations are picked)."""
        shown = {
            name: None if value == float("inf") else value  # a source given no share picks nothing
            for name, value in self.to_dict().items()
            if name != "exploration_key"
        }
        return {
            **shown,
            "red_share": self.red_share,
            "order": {"red": list(RED_SOURCES), "yellow": list(YELLOW_SOURCES)},
        }


@dataclass(frozen=True)
class ScoreWindow:
    """The scores lane thresholds follow: those of the last `size` declarations scored (rows of
    SCORES, oldest first), as the audit store keeps them, topped up from the validation window's
    out-of-sample scores (packaged with the model) while fewer have been scored."""

    size: int
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"serving.follow_window must be 1 or more, got {self.size}")

    @classmethod
    def of(cls, size: int, *parts: np.ndarray) -> ScoreWindow:
        """The last `size` rows of `parts` (score rows, each part and the parts oldest first)."""
        scores = np.concatenate([np.asarray(part, dtype=float).reshape(-1, len(SCORES)) for part in parts])
        return cls(size, scores[max(0, len(scores) - size) :])

    @classmethod
    def latest(cls, size: int, scored: pd.DataFrame) -> ScoreWindow:
        """The last `size` declarations by date of a frame with `declaration_date` and SCORES (the
        validation window's scores, in the order they were scored within a day)."""
        in_order = scored.sort_values("declaration_date", kind="stable")
        return cls.of(size, in_order[list(SCORES)].to_numpy(dtype=float))

    def policy(self, policy: LanePolicy) -> LanePolicy:
        """`policy` with the thresholds the next declaration scored would be decided with."""
        return LanePolicy.fit(policy, policy.exploration_key, *self.scores.T)

    def follow(self, shares: LaneShares, scores: np.ndarray) -> np.ndarray:
        """The thresholds of each of a batch of declarations (score rows in the order they are
        decided), one row each: fitted on the `size` scored before it, the window's and then
        the batch's own. So a declaration's thresholds do not depend on how the stream was cut
        into batches, and no declaration's lane on the ones after it."""
        stream = np.concatenate([self.scores, np.asarray(scores, dtype=float).reshape(-1, len(SCORES))])
        return np.array(
            [
                fit_thresholds(shares, stream[max(0, end - self.size) : end])
                for end in range(len(self.scores), len(stream))
            ]
        ).reshape(-1, len(THRESHOLDS))
