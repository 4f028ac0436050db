"""Grades exercises/ex08_specialisation.py: the domain-by-expert table, its mutual information, and the
consecutive-token repeat rate (Mixtral's locality)."""
import math

import numpy as np
import pytest

from graders._checks import expect, expect_close, expect_equal, expect_raises, lesson
from minimoe.moe import locality

MODULE = "ex08_specialisation"
see = lesson(MODULE)
TWINS = {"consecutive_same_expert_rate": [locality.consecutive_same_expert_rate]}


@pytest.mark.exercise("domain_expert_counts", points=1)
def test_domain_expert_counts_hand_case(fn):
    domains = np.array([0, 0, 1, 0])
    expert_index = np.array([[2, 0], [2, -1], [1, 2], [2, 0]])  # (0, 2) occurs three times; one drop
    expect_equal(fn(domains, expert_index, 2, 3), [[2, 0, 3], [0, 1, 1]],
                 "counts for a batch where the pair (domain 0, expert 2) repeats (every repeat counts, -1 does not)",
                 see("Counting who serves whom"), dtype="iu")


@pytest.mark.exercise("domain_expert_counts", points=1)
def test_domain_expert_counts_totals(fn, rng):
    domains, expert_index = rng.integers(0, 3, 200), rng.integers(-1, 6, (200, 2))
    counts = np.asarray(fn(domains, expert_index, 3, 6))
    section = see("Counting who serves whom")
    for n_domains, n_experts, k in [(4, 7, 3), (2, 5, 5)]:
        d, e = rng.integers(0, n_domains - 1, 60), rng.integers(-1, n_experts - 1, (60, k))  # last domain, expert: none
        expected = np.zeros((n_domains, n_experts), dtype=int)
        for t in range(60):
            for j in range(k):
                if e[t, j] >= 0:
                    expected[d[t], e[t, j]] += 1
        expect_equal(fn(d, e, n_domains, n_experts), expected, f"counts for 60 random tokens, top-{k}, {n_domains} "
                     f"domains, {n_experts} experts (the last of each unused)", section, dtype="iu")
    kept = expert_index >= 0
    expect_equal(counts.sum(axis=0), np.bincount(expert_index[kept], minlength=6), "column sums (load per expert)",
                 section)
    expect_equal(counts.sum(axis=1), np.bincount(np.repeat(domains, 2)[kept.reshape(-1)], minlength=3),
                 "row sums (assignments per domain)", section)


@pytest.mark.exercise("mutual_information", points=1)
def test_mutual_information_values(fn):
    section = see("Mutual information")
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    expect_close(fn(np.array([[3, 1], [1, 3]])), expected, "I(domain; expert) for counts [[3, 1], [1, 3]] in nats",
                 section)
    expect_close(fn(np.array([[5, 10, 5], [1, 2, 1]])), 0.0, "I for a table where expert use ignores the domain",
                 section, atol=1e-12)


@pytest.mark.exercise("mutual_information", points=1)
def test_mutual_information_with_empty_cells(fn, rng):
    section = see("Mutual information")
    expect_close(fn(np.eye(3) * 7), math.log(3), "I when each of 3 domains has its own expert (log 3, zeros "
                 "in the table count as 0 log 0 = 0)", section)
    counts = np.array([[4, 0, 1, 0], [0, 2, 2, 1]])
    got = fn(counts)
    expect_close(fn(counts.T), got, "I of the transposed table (it is symmetric)", section)
    expect(0 < got < math.log(2), "I for [[4, 0, 1, 0], [0, 2, 2, 1]]", "between 0 and log 2 (finite)", str(got),
           section)
    table = rng.integers(0, 6, (int(rng.integers(2, 5)), int(rng.integers(5, 8))))
    table[0, 0], table[-1, 1] = 0, 9  # some empty cells, not all empty
    joint = table / table.sum()
    expected = sum(joint[d, e] * math.log(joint[d, e] / (joint[d].sum() * joint[:, e].sum()))
                   for d in range(table.shape[0]) for e in range(table.shape[1]) if table[d, e])
    expect_close(fn(table), expected, f"I for a random {table.shape} table of counts", section)


def _pairwise_rate(ids):
    """Mixtral's rate written pair by pair: the exact reference (rows are separate sequences)."""
    ids = np.asarray(ids)
    ids = ids[:, :, None] if ids.ndim == 2 else ids
    hits = [bool({int(e) for e in ids[b, t] if e >= 0} & {int(e) for e in ids[b, t + 1] if e >= 0})
            for b in range(ids.shape[0]) for t in range(ids.shape[1] - 1)]
    return sum(hits) / len(hits)


def _distinct_experts(rng, shape, n_experts):
    """(B, T, k) expert ids, k distinct ones per token (as a router chooses them)."""
    b, t, k = shape
    return np.argsort(rng.random((b, t, n_experts)), axis=-1)[:, :, :k]


@pytest.mark.exercise("consecutive_same_expert_rate", points=1)
def test_consecutive_rate_hand_cases(fn):
    section = see("Mixtral's locality")
    expect_close(fn(np.array([[0, 0, 1, 1], [1, 2, 2, 2]])), 4 / 6, "the first-choice rate of [[0, 0, 1, 1], "
                 "[1, 2, 2, 2]] (2 repeats in each row, 3 pairs per row)", section, dtype="f")
    expect_close(fn(np.array([[0, 1, 1], [1, 0, 0]])), 2 / 4, "the rate of [[0, 1, 1], [1, 0, 0]]: the 1 ending "
                 "row 0 and the 1 starting row 1 are not neighbours (2 of 4 pairs, not 3 of 5)", section)
    expect_close(fn(np.array([[-1, -1, 3, 3, -1]])), 1 / 4, "the rate of [[-1, -1, 3, 3, -1]]: -1 (dropped) "
                 "matches nothing, not even -1, and its pairs still count", section)
    expect_raises(ValueError, lambda: fn(np.array([[2], [5]])), "consecutive_same_expert_rate with T = 1 (no pairs: "
                  "the rate is undefined)", section)


@pytest.mark.exercise("consecutive_same_expert_rate", points=1)
def test_consecutive_rate_top_k_sets(fn, rng):
    section = see("Mixtral's locality")
    sets = np.array([[[0, 1], [1, 2], [3, 4], [4, -1], [-1, 5], [6, -1], [2, 6]]])
    expect_close(fn(sets), 3 / 6, "the top-2 rate of [[0,1], [1,2], [3,4], [4,-1], [-1,5], [6,-1], [2,6]]: a "
                 "shared expert counts in any position (first of one, second of the other), -1 never",
                 section, dtype="f")
    for k in (1, 2, 3):
        ids = _distinct_experts(rng, (int(rng.integers(3, 6)), int(rng.integers(8, 15)), k), 5)
        ids[rng.random(ids.shape) < 0.1] = -1
        expect_close(fn(ids), _pairwise_rate(ids), f"the top-{k} rate of random {ids.shape} expert ids (5 experts, "
                     "some -1)", section, atol=1e-12)
    first = rng.integers(0, 3, (4, 12))
    expect_close(fn(first[:, :, None]), fn(first), "the rate of (B, T, 1) ids against the same ids as (B, T)",
                 section, atol=1e-12)


@pytest.mark.exercise("consecutive_same_expert_rate", points=1)
def test_consecutive_rate_random_rows_and_dtypes(fn, rng):
    section = see("Mixtral's locality")
    n_rows, length = int(rng.integers(3, 7)), int(rng.integers(5, 12))
    ids = rng.integers(0, 4, (n_rows, length))
    ids[0, 1] = (ids[0, 0] + 1) % 4  # one pair that differs and one that repeats, so that counting pairs
    ids[0, 2] = ids[0, 1]  # across rows, or dividing by T instead of T - 1, changes the rate
    ids[1:, 0] = ids[:-1, -1]  # every row starts with the expert that ended the row before
    expected = _pairwise_rate(ids)
    expect_close(fn(ids), expected, f"the first-choice rate of random {ids.shape} ids whose rows each start with "
                 "the previous row's last expert (pairs across rows do not count)", section, atol=1e-12)
    for dtype in (np.int8, np.uint8, np.int32):
        expect_close(fn(ids.astype(dtype)), expected, f"the same rate for {np.dtype(dtype).name} ids (returned as a "
                     "float)", section, atol=1e-12, dtype="f")
    sets = _distinct_experts(rng, (2, int(rng.integers(6, 10)), 2), 4).astype(np.int16)
    expect_close(fn(sets), _pairwise_rate(sets), f"the top-2 rate of random int16 {sets.shape} ids", section,
                 atol=1e-12, dtype="f")
