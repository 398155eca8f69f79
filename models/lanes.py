"""Lanes from inspection capacity: red and yellow take fixed shares of traffic like the
validation window; a keyed hash picks an exploration share so the model keeps being tested on
declarations it would have released."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LanePolicy:
    red_threshold: float
    yellow_threshold: float
    red_share: float
    yellow_share: float
    exploration_share: float
    exploration_key: str

    @classmethod
    def from_shares(
        cls,
        scores: np.ndarray,
        red_share: float,
        yellow_share: float,
        exploration_share: float,
        exploration_key: str,
    ) -> LanePolicy:
        scores = np.asarray(scores, dtype=float)
        red = float(np.quantile(scores, 1 - red_share, method="higher"))
        yellow = float(np.quantile(scores, 1 - red_share - yellow_share, method="higher"))
        return cls(red, min(yellow, red), red_share, yellow_share, exploration_share, exploration_key)

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

    def assign(self, risk_score: np.ndarray, declaration_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Lane and what selected it, for each declaration."""
        risk_score = np.asarray(risk_score, dtype=float)
        lane = np.where(
            risk_score >= self.red_threshold,
            "red",
            np.where(risk_score >= self.yellow_threshold, "yellow", "green"),
        ).astype(object)
        selected_by = np.full(len(lane), "model", dtype=object)
        random_pick = (lane == "green") & self.explored(declaration_ids)
        lane[random_pick] = "red"
        selected_by[random_pick] = "random"
        return lane, selected_by

    def to_dict(self) -> dict:
        return asdict(self)
