"""Grades exercises/ex08_specialisation.py: the domain-by-expert table and its mutual information."""
import math

import numpy as np
import pytest

from graders._checks import expect, expect_close, expect_equal, lesson

MODULE = "ex08_specialisation"
see = lesson(MODULE)


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
