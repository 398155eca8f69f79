"""Lanes from inspection capacity split between fraud risk, duty at risk and critical score,
and reproducible random exploration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models.lanes import THRESHOLDS, LanePolicy, LaneShares, ScoreWindow, threshold_mode

KEY = "customs-risk-exploration"
INF = float("inf")
SHARES = LaneShares(
    red_risk_share=0.025,
    red_value_share=0.015,
    red_critical_share=0.02,
    yellow_share=0.10,
    yellow_critical_share=0.05,
    exploration_share=0.0,
)


def _ids(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{value:08d}" for value in rng.choice(100_000_000, n, replace=False)]


def _exploring(share: float, key: str = KEY) -> LanePolicy:
    """A policy that picks nothing by score: only exploration."""
    return LanePolicy(
        **{**vars(SHARES), "exploration_share": share},
        exploration_key=key,
        red_critical_threshold=INF,
        red_value_threshold=INF,
        red_threshold=INF,
        yellow_critical_threshold=INF,
        yellow_threshold=INF,
    )


@pytest.fixture(scope="module")
def scores() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    risk = rng.beta(0.8, 4.0, 10_000)
    critical = rng.beta(0.3, 20.0, 10_000)
    duty = rng.lognormal(10, 2, 10_000)
    return risk, critical, risk * duty


@pytest.mark.parametrize("exploration", [0.0, 0.01])
def test_each_source_takes_its_share_in_order(scores, exploration):
    shares = LaneShares(**{**vars(SHARES), "exploration_share": exploration})
    policy = LanePolicy.fit(shares, KEY, *scores)
    lane, selected_by = policy.assign(*scores, _ids(len(scores[0])))
    for to_lane, source, share in (
        ("red", "critical", shares.red_critical_share),
        ("red", "value", shares.red_value_share),
        ("red", "model", shares.red_risk_share),
        ("yellow", "critical", shares.yellow_critical_share),
        ("yellow", "model", shares.yellow_share - shares.yellow_critical_share),
    ):
        assert np.mean((lane == to_lane) & (selected_by == source)) == pytest.approx(share, abs=1e-4)
    random_red = np.mean(selected_by == "random")
    assert random_red == pytest.approx(exploration * (1 - shares.red_share - shares.yellow_share), abs=0.003)
    assert np.mean(lane == "red") == pytest.approx(shares.red_share + random_red, abs=1e-4)
    # each source picked by its own score: value picks hold more duty at risk than risk picks,
    # critical picks have higher critical scores
    _, critical, value = scores
    assert value[selected_by == "value"].mean() > value[(lane == "red") & (selected_by == "model")].mean()
    assert critical[selected_by == "critical"].min() >= policy.yellow_critical_threshold
    assert value[selected_by == "value"].min() >= policy.red_value_threshold


def test_thresholds_hold_on_new_scores_and_at_the_boundary(scores):
    policy = LanePolicy.fit(SHARES, KEY, *scores)
    lane, selected_by = policy.assign(
        [0.0, policy.red_threshold, 0.0, 0.0, 0.0],
        [0.0, 0.0, policy.red_critical_threshold, policy.yellow_critical_threshold, 0.0],
        [0.0, 0.0, 0.0, 0.0, policy.red_value_threshold],
        list("abcde"),
    )
    # a score equal to a threshold is picked; critical comes before value comes before risk
    assert lane.tolist() == ["green", "red", "red", "yellow", "red"]
    assert selected_by.tolist() == ["model", "model", "critical", "critical", "value"]


def test_the_policy_shown_hides_the_exploration_key_and_names_no_infinity(scores):
    shares = LaneShares(**{**vars(SHARES), "red_value_share": 0.0})
    shown = LanePolicy.fit(shares, KEY, *scores).describe()
    assert "exploration_key" not in shown
    assert shown["red_value_threshold"] is None  # a source given no share picks nothing
    assert shown["red_share"] == pytest.approx(shares.red_share)
    assert shown["order"] == {"red": ["critical", "value", "model"], "yellow": ["critical", "model"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"red_risk_share": -0.1}, "red_risk_share must be between 0 and 1"),
        ({"yellow_critical_share": 0.2}, "cannot exceed"),
        ({"red_risk_share": 0.6, "yellow_share": 0.5}, "more than 1"),
    ],
)
def test_impossible_shares_are_refused_by_name(change, message):
    with pytest.raises(ValueError, match=message):
        LaneShares(**{**vars(SHARES), **change})


@pytest.mark.parametrize("seed", [0, 1])
def test_exploration_share_over_ten_thousand_ids(seed):
    share = 0.01
    policy = _exploring(share)
    sequential = [str(90_000_000 + i) for i in range(10_000)]
    for ids in (_ids(10_000, seed), sequential):
        assert abs(policy.explored(ids).mean() - share) <= 0.003


def test_exploration_share_is_followed_for_larger_settings():
    ids = _ids(10_000, seed=5)
    for share in (0.0, 0.05, 0.2, 1.0):
        picked = _exploring(share).explored(ids).mean()
        assert abs(picked - share) <= 0.01
    assert _exploring(0.0).explored(ids).sum() == 0


def test_same_id_always_gets_the_same_decision():
    ids = _ids(3000, seed=2)
    policy = _exploring(0.1)
    first = policy.explored(ids)
    # again, in another order, one at a time, and from an equal policy built later
    order = np.random.default_rng(3).permutation(len(ids))
    assert np.array_equal(policy.explored([ids[i] for i in order]), first[order])
    assert [bool(policy.explored([i])[0]) for i in ids[:200]] == first[:200].tolist()
    again = LanePolicy(**policy.to_dict())
    assert np.array_equal(again.explored(ids), first)
    assert first.any() and not first.all()


def test_another_key_picks_other_declarations():
    ids = _ids(10_000, seed=4)
    a = _exploring(0.05).explored(ids)
    b = _exploring(0.05, KEY + "-2").explored(ids)
    assert a.sum() > 0 and b.sum() > 0
    overlap = (a & b).sum() / a.sum()
    assert overlap < 0.2  # independent picks overlap by about the share itself (5%)


def test_only_would_be_green_declarations_are_explored(scores):
    ids = _ids(len(scores[0]), seed=6)
    plain = LanePolicy.fit(SHARES, KEY, *scores)
    exploring = LanePolicy.fit(LaneShares(**{**vars(SHARES), "exploration_share": 0.2}), KEY, *scores)
    base_lane, base_selected = plain.assign(*scores, ids)
    lane, selected_by = exploring.assign(*scores, ids)
    explored = exploring.explored(ids)

    would_be_green = base_lane == "green"
    random_pick = selected_by == "random"
    # picked: exactly the would-be-green declarations whose ID falls in the share, sent red
    assert np.array_equal(random_pick, would_be_green & explored)
    assert set(lane[random_pick]) == {"red"}
    # the score-based decisions are untouched, even when their ID is in the share
    assert np.array_equal(lane[~would_be_green], base_lane[~would_be_green])
    assert np.array_equal(selected_by[~would_be_green], base_selected[~would_be_green])
    assert (explored & ~would_be_green).sum() > 0  # that case really occurred
    assert set(lane[would_be_green & ~explored]) == {"green"}
    assert abs(random_pick.sum() / would_be_green.sum() - 0.2) <= 0.02


# --- properties ----------------------------------------------------------------------------------

LANE_ORDER = {"green": 0, "yellow": 1, "red": 2}
unit = st.floats(0, 1)
shares_strategy = st.builds(
    lambda r, v, c, y, yc: LaneShares(r, v, c, y, min(yc, y), 0.0),
    st.floats(0, 0.2),
    st.floats(0, 0.2),
    st.floats(0, 0.2),
    st.floats(0, 0.3),
    st.floats(0, 0.3),
)


def _triples(size):
    return st.tuples(*(hnp.arrays(np.float64, size, elements=unit) for _ in range(3)))


@st.composite
def fitted(draw, unique: bool = False):
    n = draw(st.integers(20, 300))
    arrays = [draw(hnp.arrays(np.float64, n, elements=unit, unique=unique)) for _ in range(3)]
    shares = draw(shares_strategy)
    return shares, LanePolicy.fit(shares, KEY, *arrays), arrays


@settings(max_examples=150, deadline=None)
@given(case=fitted(), new=st.integers(1, 200).flatmap(_triples), which=st.integers(0, 2), bump=st.floats(0, 1))
def test_raising_any_score_never_lowers_a_lane(case, new, which, bump):
    _, policy, _ = case
    ids = [str(i) for i in range(len(new[0]))]
    lane, _ = policy.assign(*new, ids)
    raised = [a.copy() for a in new]
    raised[which] = raised[which] + bump
    higher, _ = policy.assign(*raised, ids)
    assert all(LANE_ORDER[h] >= LANE_ORDER[b] for h, b in zip(higher, lane))


@settings(max_examples=150, deadline=None)
@given(case=fitted(unique=True))
def test_without_ties_every_source_takes_its_share_to_one_declaration(case):
    shares, policy, arrays = case
    n = len(arrays[0])
    lane, selected_by = policy.assign(*arrays, [str(i) for i in range(n)])
    remaining = n
    for to_lane, source, share in (
        ("red", "critical", shares.red_critical_share),
        ("red", "value", shares.red_value_share),
        ("red", "model", shares.red_risk_share),
        ("yellow", "critical", shares.yellow_critical_share),
        ("yellow", "model", shares.yellow_share - shares.yellow_critical_share),
    ):
        picked = int(np.sum((lane == to_lane) & (selected_by == source)))
        assert picked == min(round(share * n), remaining), (to_lane, source)
        remaining -= picked


@settings(max_examples=150, deadline=None)
@given(case=fitted(), new=st.integers(1, 100).flatmap(_triples))
def test_every_pick_says_what_selected_it_and_ties_share_a_lane(case, new):
    _, policy, _ = case
    risk, critical, value = new
    lane, selected_by = policy.assign(risk, critical, value, [str(i) for i in range(len(risk))])
    allowed = {"red": {"critical", "value", "model"}, "yellow": {"critical", "model"}, "green": {"model"}}
    assert all(s in allowed[lane_] for lane_, s in zip(lane, selected_by))
    assert np.all(
        critical[selected_by == "critical"] >= min(policy.red_critical_threshold, policy.yellow_critical_threshold)
    )
    assert np.all(value[selected_by == "value"] >= policy.red_value_threshold)
    # declarations with equal scores get the same lane and source (no exploration here)
    triples = {}
    for key, decided in zip(zip(risk, critical, value), zip(lane, selected_by)):
        assert triples.setdefault(key, decided) == decided


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=50), share=st.floats(0, 1))
def test_exploration_depends_on_the_id_alone(ids, share):
    policy = _exploring(share)
    alone = [bool(policy.explored([i])[0]) for i in ids]
    assert policy.explored(ids).tolist() == alone
    assert policy.explored(list(reversed(ids))).tolist() == list(reversed(alone))


# --- thresholds that follow the traffic ----------------------------------------------------------


def test_a_window_keeps_the_last_scores_oldest_first():
    rows = np.arange(30, dtype=float).reshape(10, 3)
    window = ScoreWindow.of(4, rows[:3], rows[3:7])
    np.testing.assert_array_equal(window.scores, rows[3:7])
    assert len(ScoreWindow.of(50, rows).scores) == 10  # fewer scored than it holds: all of them
    with pytest.raises(ValueError, match="follow_window must be 1 or more"):
        ScoreWindow.of(0, rows)


def test_the_latest_of_a_window_are_the_last_by_date_in_their_order():
    scored = pd.DataFrame(
        {
            "declaration_date": pd.to_datetime(["2021-03-02", "2021-03-01", "2021-03-02", "2021-03-01"]),
            "risk_score": [0.1, 0.2, 0.3, 0.4],
            "critical_score": 0.0,
            "duty_at_risk": 0.0,
        }
    )
    assert ScoreWindow.latest(3, scored).scores[:, 0].tolist() == [0.4, 0.1, 0.3]


def test_thresholds_given_per_declaration_decide_as_the_policy_fitted_on_them(scores):
    policy = LanePolicy.fit(SHARES, KEY, *scores)
    ids = _ids(len(scores[0]), seed=8)
    windows = [ScoreWindow.of(500, np.column_stack(scores)[start : start + 500]) for start in (0, 3000, 6000)]
    rows = np.arange(len(ids)) % len(windows)  # each declaration by one of three windows' thresholds
    thresholds = np.array([windows[w].policy(policy).thresholds() for w in rows])
    lane, selected_by = policy.assign(*scores, ids, thresholds)
    for w, window in enumerate(windows):
        mine = rows == w
        expected = window.policy(policy).assign(*(s[mine] for s in scores), [i for i, m in zip(ids, mine) if m])
        assert lane[mine].tolist() == expected[0].tolist()
        assert selected_by[mine].tolist() == expected[1].tolist()
    # a window's thresholds are the policy's fitted on its scores, shares and key kept
    assert windows[0].policy(policy) == LanePolicy.fit(SHARES, KEY, *(s[:500] for s in scores))


def test_following_a_window_as_big_as_the_scores_gives_the_fitted_thresholds(scores):
    rows = np.column_stack(scores)
    followed = ScoreWindow.of(1000, rows[:1000]).follow(SHARES, rows[1000:1003])
    np.testing.assert_array_equal(followed[0], LanePolicy.fit(SHARES, KEY, *rows[:1000].T).thresholds())
    np.testing.assert_array_equal(followed[2], LanePolicy.fit(SHARES, KEY, *rows[2:1002].T).thresholds())
    assert ScoreWindow.of(10, rows[:10]).follow(SHARES, rows[:0]).shape == (0, len(THRESHOLDS))


def test_an_unknown_threshold_mode_is_refused_by_name():
    assert [threshold_mode(mode) for mode in ("follow", "fixed")] == ["follow", "fixed"]
    with pytest.raises(ValueError, match=r"serving\.lane_thresholds must be one of follow, fixed"):
        threshold_mode("adaptive")
