"""The exploration rule: one declaration each of the busiest, riskiest never-inspected combinations,
then declarations of never-inspected HS codes, never what risk already took."""

from __future__ import annotations

import numpy as np

from models.exploration import exploration_picks


def _picks(count: int, taken=None) -> list[int]:
    keys = np.array(["A", "A", "A", "B", "C", "D", None, "E"], dtype=object)
    key_inspected = np.array([0, 0, 0, 0, 0, 3, 0, 0])
    key_declarations = np.array([5, 5, 5, 0, 40, 9, 0, 1])
    hs6_inspected = np.array([1, 1, 1, 1, 1, 1, 0, 1])
    risk = np.array([0.1, 0.3, 0.2, 0.9, 0.05, 0.99, 0.5, 0.4])
    taken = np.zeros(len(risk), dtype=bool) if taken is None else taken
    mask = exploration_picks(keys, key_inspected, key_declarations, hs6_inspected, risk, count, taken)
    return np.flatnonzero(mask).tolist()


def test_the_busiest_riskiest_unknown_combinations_first_one_declaration_each():
    # priority = best row's risk x (rows this period + declarations before): C 0.05 x 41 = 2.05,
    # A 0.3 x (3 + 5) = 2.4, B 0.9 x 1 = 0.9, E 0.4 x 2 = 0.8; D was inspected, row 6 has no key
    assert _picks(1) == [1]
    assert _picks(2) == [1, 4]
    assert _picks(4) == [1, 3, 4, 7]


def test_then_never_inspected_hs_codes_then_risk_and_never_what_is_taken():
    assert _picks(5) == [1, 3, 4, 6, 7]  # row 6: no key, an HS code never inspected
    assert _picks(6) == [1, 3, 4, 5, 6, 7]  # then the riskiest left
    taken = np.zeros(8, dtype=bool)
    taken[1] = True  # risk inspects one of A's: A is learned about anyway, C comes first
    assert _picks(1, taken) == [4]
    assert 0 not in _picks(3, taken) and 2 not in _picks(3, taken)
    assert _picks(0) == []
