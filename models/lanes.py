"""Lanes from inspection capacity and from what the center values.

Red capacity is shared between three things a center spends it on: critical (public-safety)
risk, duty at risk and fraud risk, filled in that order from the validation window's
out-of-sample scores, so each source gets its share of traffic and a declaration counts once, for
the first source that picks it. Yellow takes the next by critical score and by risk the same way.
A keyed hash sends an exploration share of would-be-green declarations red at random, so the
model keeps being tested on what it would have released (the report's unbiased yardstick).

Every threshold is fixed when the model is packaged; at serving a declaration's lane depends on
its own scores only, so the lane never depends on what else is in the batch, and raising any
score never lowers a lane.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

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


# the sources of red and yellow picks, in the order they fill capacity: public safety first
RED_SOURCES = ("critical", "value", "model")
YELLOW_SOURCES = ("critical", "model")


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


def _threshold(values: np.ndarray, available: np.ndarray, share: float) -> float:
    """The score of the last declaration the share takes among those still available (infinite
    when it takes none): every available declaration at or above it is picked, ties included."""
    count = round(share * len(values))
    pool = values[available]
    if count <= 0 or not len(pool):
        return float("inf")
    count = min(count, len(pool))
    return float(np.partition(pool, len(pool) - count)[len(pool) - count])


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
        risk, critical, value = (np.asarray(a, dtype=float) for a in (risk, critical, duty_at_risk))
        available = np.ones(len(risk), dtype=bool)
        thresholds = {}
        for name, scores, share in (
            ("red_critical_threshold", critical, shares.red_critical_share),
            ("red_value_threshold", value, shares.red_value_share),
            ("red_threshold", risk, shares.red_risk_share),
            ("yellow_critical_threshold", critical, shares.yellow_critical_share),
            ("yellow_threshold", risk, shares.yellow_share - shares.yellow_critical_share),
        ):
            thresholds[name] = _threshold(scores, available, share)
            available &= scores < thresholds[name]
        shared = {name: getattr(shares, name) for name in LaneShares.__dataclass_fields__}
        return cls(**shared, exploration_key=exploration_key, **thresholds)

    def explored(self, declaration_ids: list[str]) -> np.ndarray:
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
        self, risk: np.ndarray, critical: np.ndarray, duty_at_risk: np.ndarray, declaration_ids: list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lane and what selected it (`selected_by`), for each declaration."""
        risk, critical, value = (np.asarray(a, dtype=float) for a in (risk, critical, duty_at_risk))
        lane = np.full(len(risk), "green", dtype=object)
        selected_by = np.full(len(risk), "model", dtype=object)
        picks = (
            ("red", "critical", critical >= self.red_critical_threshold),
            ("red", "value", value >= self.red_value_threshold),
            ("red", "model", risk >= self.red_threshold),
            ("yellow", "critical", critical >= self.yellow_critical_threshold),
            ("yellow", "model", risk >= self.yellow_threshold),
        )
        undecided = np.ones(len(risk), dtype=bool)
        for to_lane, source, picked in picks:
            chosen = undecided & picked
            lane[chosen], selected_by[chosen] = to_lane, source
            undecided &= ~chosen
        random_pick = undecided & self.explored(declaration_ids)
        lane[random_pick], selected_by[random_pick] = "red", "random"
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
