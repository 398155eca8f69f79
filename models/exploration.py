"""Exploration aimed at what the model does not know.

A center learns only from what it inspects, so after a few retrains most of history is
unlabelled unless someone looked. In the embedded history a declaration's fraud follows what is
declared, from where and taxed how (features.history: the HS code x route x tax type entities),
not who imports it (an importer's earlier record ranks its next declaration no better than
chance). So the exploration rule inspects one declaration each of the never-inspected
combinations that matter most: the busiest (declarations this period and before: a label learned
of one counts for all of their traffic), riskiest by the model's prior (which already carries
what is known of coarser combinations: the HS code, its origin, its route). What is left of the
share goes to declarations of never-inspected HS codes, the riskiest first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def exploration_picks(
    keys: np.ndarray,
    key_inspected: np.ndarray,
    key_declarations: np.ndarray,
    backoff_inspected: np.ndarray,
    risk: np.ndarray,
    count: int,
    taken: np.ndarray,
) -> np.ndarray:
    """A mask of `count` rows not already `taken`: per row the key of what it explores (its
    combination), how many of that key's earlier declarations were inspected and were declared,
    and how many of a coarser key's (its HS code's) were inspected, with the row's risk. A key a
    taken row has is learned about anyway, so none of its rows is an exploration pick."""
    risk = np.asarray(risk, dtype="float64")
    free = ~np.asarray(taken, dtype=bool)
    picks = np.zeros(len(risk), dtype=bool)
    count = max(count, 0)
    covered = pd.Series(keys)[~free].dropna().unique()  # risk inspects them anyway this period
    unknown = free & (np.asarray(key_inspected) == 0) & pd.notna(keys) & ~np.isin(keys, covered)
    rows = pd.DataFrame({"key": keys, "risk": risk, "before": key_declarations})[unknown]
    if len(rows) and count:
        grouped = rows.groupby("key", sort=False)
        best = grouped["risk"].idxmax()
        priority = best.map(risk.__getitem__) * (grouped.size() + grouped["before"].max())
        chosen = best[priority.sort_values(ascending=False, kind="stable").index[:count]]
        picks[chosen.to_numpy()] = True
    left = count - int(picks.sum())
    if left > 0:  # then the riskiest of never-inspected coarser keys, then anything by risk
        order = np.lexsort([-risk, np.asarray(backoff_inspected) > 0])
        order = order[free[order] & ~picks[order]]
        picks[order[:left]] = True
    return picks
