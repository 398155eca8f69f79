"""Path attribution (models.contributions) on small boosters trained here, with a categorical
feature and missing values: exact in sum, equal to TreeSHAP where the two must agree (stumps),
and the per-leaf table it is computed from."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from models.contributions import PathContributions, leaf_table

N_FEATURES = 6
CATEGORY = 2  # an integer-coded categorical feature, as the feature matrix holds them


def _data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Numbers, one categorical code (12 categories) and about 15% missing values; a label that
    depends on the category, on interactions, and on whether a value is missing."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N_FEATURES))
    x[:, CATEGORY] = rng.integers(0, 12, size=rows)
    x[rng.random(x.shape) < 0.15] = np.nan
    logit = (
        np.isin(x[:, CATEGORY], [1, 4, 7]) * 1.5
        + np.nan_to_num(x[:, 0]) * np.nan_to_num(x[:, 1])
        + np.isnan(x[:, 3]) * 1.0
        - np.nan_to_num(x[:, 4]) ** 2 / 2
    )
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return x, y


def _train(rounds: int = 40, **params) -> lgb.Booster:
    x, y = _data(3000, seed=1)
    dataset = lgb.Dataset(x, y, categorical_feature=[CATEGORY], free_raw_data=False)
    base = {
        "objective": "binary",
        "learning_rate": 0.1,
        "num_leaves": 15,
        "min_data_in_leaf": 10,
        "max_cat_to_onehot": 4,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": 7,
        "verbose": -1,
        "num_threads": 1,
    }
    return lgb.train({**base, **params}, dataset, num_boost_round=rounds)


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    return _train()


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """Random rows not seen in training, with missing values and an unseen category (99)."""
    x, _ = _data(500, seed=2)
    x[:20, CATEGORY] = 99
    return x


def test_contributions_and_bias_sum_to_the_raw_score(booster, rows):
    contributions = PathContributions(booster)(rows)
    assert contributions.shape == (len(rows), N_FEATURES + 1)
    raw = booster.predict(rows, raw_score=True)
    np.testing.assert_allclose(contributions.sum(axis=1), raw, rtol=0, atol=1e-9)
    # the categorical feature and the missing values are on the paths, so the check covers them
    assert np.abs(contributions[:, CATEGORY]).max() > 0.1
    assert np.isnan(rows).any(axis=1).sum() > len(rows) // 2


def test_the_bias_is_treeshap_expected_value_and_only_path_features_get_credit(booster, rows):
    """Both take a tree's expected value as its leaves' values weighted by training rows."""
    contributions = PathContributions(booster)(rows)
    shap = booster.predict(rows, pred_contrib=True)
    np.testing.assert_allclose(contributions[:, -1], shap[:, -1], rtol=0, atol=1e-9)
    used = booster.feature_importance("split") > 0
    assert not contributions[:, :-1][:, ~used].any()


def test_on_stumps_path_attribution_is_treeshap():
    """With one split per tree, the split's feature gets the whole change from the tree's
    expected value to its leaf under both methods."""
    stumps = _train(max_depth=1, num_leaves=2, rounds=60)
    assert all(tree["num_leaves"] == 2 for tree in stumps.dump_model()["tree_info"])
    x, _ = _data(400, seed=3)
    np.testing.assert_allclose(PathContributions(stumps)(x), stumps.predict(x, pred_contrib=True), rtol=0, atol=1e-9)


def test_the_table_has_a_row_per_leaf_summing_to_its_value_and_a_bias_per_tree(booster):
    table, offsets = leaf_table(booster)
    trees = booster.dump_model()["tree_info"]
    assert table.shape == (sum(tree["num_leaves"] for tree in trees), N_FEATURES + 1)
    np.testing.assert_array_equal(offsets, np.cumsum([0] + [tree["num_leaves"] for tree in trees[:-1]]))
    for t, tree in enumerate(trees):
        own = table[offsets[t] : offsets[t] + tree["num_leaves"]].toarray()
        values = np.array([booster.get_leaf_output(t, leaf) for leaf in range(tree["num_leaves"])])
        np.testing.assert_allclose(own.sum(axis=1), values, rtol=0, atol=1e-12)
        # the bias: the same for every leaf of a tree, its leaves' values weighted by training rows
        counts = _leaf_counts(tree["tree_structure"], tree["num_leaves"])
        np.testing.assert_allclose(own[:, -1], np.average(values, weights=counts), rtol=0, atol=1e-12)
        # a leaf's path has at most its depth of splits, hence of features credited
        assert ((own[:, :-1] != 0).sum(axis=1) <= _leaf_depths(tree["tree_structure"], tree["num_leaves"])).all()


def test_a_tree_without_a_split_is_all_bias():
    """LightGBM keeps one leaf when no split is worth making: its value is the bias."""
    x, y = _data(1000, seed=4)
    flat = lgb.train(
        {"objective": "binary", "min_gain_to_split": 1e9, "verbose": -1, "num_threads": 1},
        lgb.Dataset(x, y),
        num_boost_round=3,
    )
    assert [tree["num_leaves"] for tree in flat.dump_model()["tree_info"]] == [1]
    contributions = PathContributions(flat)(x[:20])
    assert not contributions[:, :-1].any()
    np.testing.assert_allclose(contributions[:, -1], flat.predict(x[:20], raw_score=True), rtol=0, atol=1e-12)


def test_linear_trees_are_refused():
    """A linear tree's leaf output depends on the row, so no table holds its attribution."""
    x, y = _data(1000, seed=5)
    linear = lgb.train(
        {"objective": "binary", "linear_tree": True, "verbose": -1, "num_threads": 1},
        lgb.Dataset(np.nan_to_num(x), y),
        num_boost_round=3,
    )
    with pytest.raises(ValueError, match="linear trees"):
        PathContributions(linear)


def test_no_rows_give_no_contributions(booster):
    assert PathContributions(booster)(np.zeros((0, N_FEATURES))).shape == (0, N_FEATURES + 1)


def test_a_row_gets_the_same_contributions_alone_or_in_a_batch(booster, rows):
    contributions = PathContributions(booster)
    together = contributions(rows)
    for i in (0, 17, 499):
        np.testing.assert_array_equal(contributions(rows[i : i + 1])[0], together[i])


def _leaf_counts(node: dict, leaves: int) -> np.ndarray:
    counts = np.zeros(leaves)
    for leaf, _, count in _walk(node, 0):
        counts[leaf] = count
    return counts


def _leaf_depths(node: dict, leaves: int) -> np.ndarray:
    depths = np.zeros(leaves, dtype=int)
    for leaf, depth, _ in _walk(node, 0):
        depths[leaf] = depth
    return depths


def _walk(node: dict, depth: int):
    if "left_child" not in node:
        yield node["leaf_index"], depth, node["leaf_count"]
        return
    yield from _walk(node["left_child"], depth + 1)
    yield from _walk(node["right_child"], depth + 1)
