"""Exploration aimed at what the model does not know.

A center learns only from what it inspects, so after a few retrains most of an importer's
history is unlabelled unless someone looked. Uniform random picks land on the big, known
importers; the loss is mostly missing labels of *entities*. The exploration rule picks among
declarations whose importer (then declarant) has no inspected history, the riskiest first by the
model's prior (which already carries what is known of the HS code, route and declarant).
"""

from __future__ import annotations

import numpy as np

# the entities whose inspected history an exploration pick looks for, most telling first
UNKNOWN_ENTITIES = ("importer", "declarant")


def unknown_entity_order(inspected: dict[str, np.ndarray], risk: np.ndarray) -> np.ndarray:
    """Row positions, best exploration pick first: rows with more of `UNKNOWN_ENTITIES` never
    inspected come first (an unknown importer before an unknown declarant), each group by risk."""
    risk = np.asarray(risk, dtype="float64")
    # np.lexsort sorts by its last key first; "known" flags sort False (never inspected) first
    known = [np.asarray(inspected[entity]) > 0 for entity in reversed(UNKNOWN_ENTITIES)]
    return np.lexsort([-risk, *known])


def exploration_picks(inspected: dict[str, np.ndarray], risk: np.ndarray, count: int, taken: np.ndarray) -> np.ndarray:
    """A mask of `count` rows not already `taken`, chosen by `unknown_entity_order`."""
    order = unknown_entity_order(inspected, risk)
    order = order[~np.asarray(taken)[order]]
    picks = np.zeros(len(risk), dtype=bool)
    picks[order[: max(count, 0)]] = True
    return picks
