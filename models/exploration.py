"""Exploration aimed at what the model does not know.

A center learns only from what it inspects, so after a few retrains most of an importer's
history is unlabelled unless someone looked. Uniform random picks land on the big, known
importers; the loss is mostly missing labels of *entities*. The exploration rule inspects one
declaration each of the importers never inspected that matter most: the busiest (declarations
this period and before: a label learned of one counts for all of their traffic), riskiest by the
model's prior (which already carries what is known of the declarant, HS code and route). What is
left of the share goes to declarations of never-inspected declarants, the riskiest first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def exploration_picks(
    importer: np.ndarray,
    importer_inspected: np.ndarray,
    importer_declarations: np.ndarray,
    declarant_inspected: np.ndarray,
    risk: np.ndarray,
    count: int,
    taken: np.ndarray,
) -> np.ndarray:
    """A mask of `count` rows not already `taken`: per row its importer, how many of that
    importer's earlier declarations were inspected and were declared, and the same of its
    declarant's inspections, with the row's risk. An importer a taken row belongs to is learned
    about anyway, so none of its rows is an exploration pick."""
    risk = np.asarray(risk, dtype="float64")
    free = ~np.asarray(taken, dtype=bool)
    picks = np.zeros(len(risk), dtype=bool)
    count = max(count, 0)
    covered = pd.Series(importer)[~free].dropna().unique()  # risk inspects them anyway this period
    unknown = free & (np.asarray(importer_inspected) == 0) & pd.notna(importer) & ~np.isin(importer, covered)
    rows = pd.DataFrame({"importer": importer, "risk": risk, "before": importer_declarations})[unknown]
    if len(rows) and count:
        grouped = rows.groupby("importer", sort=False)
        best = grouped["risk"].idxmax()
        priority = best.map(risk.__getitem__) * (grouped.size() + grouped["before"].max())
        chosen = best[priority.sort_values(ascending=False, kind="stable").index[:count]]
        picks[chosen.to_numpy()] = True
    left = count - int(picks.sum())
    if left > 0:  # then the riskiest of never-inspected declarants, then anything by risk
        order = np.lexsort([-risk, np.asarray(declarant_inspected) > 0])
        order = order[free[order] & ~picks[order]]
        picks[order[:left]] = True
    return picks
