"""Per-feature contributions of a LightGBM booster's raw score by path attribution (Saabas;
"treeinterpreter"), from a table of every leaf's attribution built once, when the model loads.

Why not TreeSHAP: LightGBM's `predict(..., pred_contrib=True)` cost 2.9 ms for each declaration
that carries reasons on the champion (425 trees of 56 leaves, mean depth 14): 519 of the 624 ms
that scoring 1,000 declarations took, against 14 ms for the predict itself. TreeSHAP's cost per
row grows with trees x leaves x depth squared, and depends on which way every split would go for
every subset of the path's features, so nothing of it can be computed ahead of the row.

Path attribution: each tree starts at the expected value of its root (the count-weighted mean of
its leaves' values; the sum over trees is the bias), and each split on the row's path credits
its feature with the change it makes, the expected value of the child taken minus that of the
node. The changes along a path add up to the leaf's value, so contributions plus bias are the raw
score exactly (as TreeSHAP's are); the cost is linear in depth, and because a row's attribution in
a tree depends only on the leaf it reaches, all of it is precomputed: one table row per leaf of
every tree, one column per feature and the bias. Contributions of n rows are then LightGBM's leaf
indices (`pred_leaf=True`, about a predict) and a sum of n x trees table rows.

How it differs from TreeSHAP: where features interact on a path, path attribution gives the
credit for the change to the split nearest it, so a feature split on near the root gets less and
one near the leaves more than TreeSHAP's average over orders gives them; with one split per tree
(stumps) the two coincide. Node expected values are weighted by the training rows that reached
each leaf (`leaf_count`), as LightGBM's TreeSHAP weights them; LightGBM's own `internal_value`
(hessian-weighted, and dumped to six digits) is not used.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import scipy.sparse

from models import release_freed_memory


def _trees(booster: lgb.Booster):
    """Each tree of the booster as LightGBM's text format holds it (`Tree=` blocks), as arrays:
    split_feature, left_child and right_child per split (a child < 0 is leaf ~child), leaf_value
    and leaf_count per leaf. Read from the text rather than `dump_model()`, whose nested dicts
    take 23 MiB and 0.7 s for the champion. A linear tree's leaf is not a constant: refused."""
    wanted = {"num_leaves", "split_feature", "left_child", "right_child", "leaf_value", "leaf_count"}
    for block in booster.model_to_string(num_iteration=-1).split("\nTree=")[1:]:
        fields = dict(line.split("=", 1) for line in block.split("\n\n", 1)[0].split("\n")[1:] if "=" in line)
        if fields.get("is_linear", "0").strip() != "0":
            raise ValueError("path contributions need constant leaves, not linear trees (linear_tree)")
        tree: dict[str, Any] = {
            key: np.array(fields[key].split(), dtype=np.float64) for key in wanted - {"num_leaves"} if key in fields
        }
        tree["num_leaves"] = int(fields["num_leaves"])
        yield tree


def _expected(tree: dict, node: int, values: dict[int, float]) -> tuple[float, float]:
    """(expected value, training rows) of split `node`: its leaves' values weighted by the rows
    that reached each, kept in `values` (split -> expected value) for the pass down."""
    children = []
    for child in (int(tree["left_child"][node]), int(tree["right_child"][node])):
        if child < 0:  # leaf ~child
            children.append((float(tree["leaf_value"][~child]), float(tree["leaf_count"][~child])))
        else:
            children.append(_expected(tree, child, values))
    (left, n_left), (right, n_right) = children
    count = n_left + n_right
    value = (left * n_left + right * n_right) / count if count > 0 else (left + right) / 2
    values[node] = value
    return value, count


def _attribute(tree: dict, node: int, values: dict, path: dict[int, float], out: dict[int, dict[int, float]]) -> None:
    """Each leaf under split `node` gets `path` (feature -> the credits of the splits above)
    plus its own splits'."""
    feature = int(tree["split_feature"][node])
    for child in (int(tree["left_child"][node]), int(tree["right_child"][node])):
        child_value = float(tree["leaf_value"][~child]) if child < 0 else values[child]
        credited = dict(path)
        credited[feature] = credited.get(feature, 0.0) + (child_value - values[node])
        if child < 0:
            out[~child] = credited
        else:
            _attribute(tree, child, values, credited, out)


def leaf_table(booster: lgb.Booster) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """Every leaf's path attribution, trees in order: (table, offsets), where table has one row
    per leaf of every tree (tree t's leaf i is row offsets[t] + i) and one column per feature
    then the bias (the tree's root expected value); each row sums to its leaf's value. Sparse:
    a leaf's path credits at most its depth of features (a tenth of the champion's table)."""
    bias_column = booster.num_feature()
    entries = []  # per tree, as arrays: few Python objects alive at once
    offsets, at = [], 0
    for tree in _trees(booster):
        leaves: dict[int, dict[int, float]] = {}
        if tree["num_leaves"] == 1:  # no split: the tree's value is all bias
            bias = float(tree["leaf_value"][0])
            leaves[0] = {}
        else:
            values: dict[int, float] = {}
            bias, _ = _expected(tree, 0, values)
            _attribute(tree, 0, values, {}, leaves)
        rows, columns, credits = [], [], []
        for leaf, credited in leaves.items():
            rows += [at + leaf] * (len(credited) + 1)
            columns += [*credited, bias_column]
            credits += [*credited.values(), bias]
        entries.append((np.array(rows, dtype=np.int64), np.array(columns, dtype=np.int64), np.array(credits)))
        offsets.append(at)
        at += tree["num_leaves"]
    all_rows, all_columns, all_credits = (np.concatenate(part) for part in zip(*entries))
    table = scipy.sparse.csr_matrix((all_credits, (all_rows, all_columns)), shape=(at, bias_column + 1))
    return table, np.asarray(offsets, dtype=np.int64)


class PathContributions:
    """Contributions of a booster's raw score (log-odds for a binary booster), in the shape of
    `booster.predict(x, pred_contrib=True)`: one row per row of x, one column per feature then
    the bias; features plus bias sum to `predict(x, raw_score=True)`. Build it once per booster."""

    def __init__(self, booster: lgb.Booster):
        if booster.num_model_per_iteration() != 1:
            raise ValueError("path contributions are for one model per iteration (not multiclass)")
        self.booster = booster
        self.table, self.offsets = leaf_table(booster)
        self.n_leaves = self.table.shape[0]
        release_freed_memory()  # the model's text and LightGBM's buffers for it

    def __call__(self, x) -> np.ndarray:
        """`x` as `booster.predict` takes it (a matrix or a frame of the features)."""
        if not len(x):  # LightGBM refuses an empty matrix
            return np.zeros((0, self.table.shape[1]))
        leaves = self.booster.predict(x, pred_leaf=True).astype(np.int64, copy=False).reshape(len(x), -1)
        trees = leaves.shape[1]  # the trees predict uses (best_iteration, when the booster has one)
        columns = (leaves + self.offsets[:trees]).ravel()
        indptr = np.arange(0, columns.size + 1, trees, dtype=np.int64)
        one_hot = scipy.sparse.csr_matrix((np.ones(columns.size), columns, indptr), shape=(len(x), self.n_leaves))
        return (one_hot @ self.table).toarray()
