"""Lesson 08, do experts specialise? Counting, mutual information and locality: exercises.

Replace each `raise NotImplementedError(...)` with your answer, then grade:
    python -m minimoe.grade ex08
Each docstring is the contract the grader checks; the reference answers are in
`solutions/ex08_specialisation.py` (look there only when stuck).
"""
# ruff: noqa: F401  (the imports are there for your answers)
import numpy as np


def domain_expert_counts(domains, expert_index, n_domains, n_experts):
    """How often each domain's tokens were sent to each expert.

    domains: int ndarray (T,), each token's domain. expert_index: int ndarray (T, k), its experts,
    -1 where an assignment was dropped (not counted). n_domains, n_experts: ints.
    Returns an int ndarray (n_domains, n_experts): counts[d, e] = number of (token, choice) pairs
    with domain d and expert e. The same pair can occur many times, and every occurrence counts.

    Hint: counts[rows, cols] += 1 counts a repeated pair once; np.add.at counts every one.
    """
    raise NotImplementedError(
        'ex08: counts[rows, cols] += 1 counts a repeated pair once; np.add.at counts every one.')


def mutual_information(counts):
    """The mutual information I(domain; expert), in nats, from a table of counts.

    counts: ndarray (D, E) of non-negative counts (some may be zero), not all zero.
    Returns a float: sum over d, e of p(d, e) log(p(d, e) / (p(d) p(e))), with 0 log 0 = 0.
    0 when expert choice is independent of the domain; log D when each domain has its own expert.

    Hint: joint = counts / total; the two marginals; sum over the non-zero cells only.
    """
    raise NotImplementedError(
        'ex08: joint = counts / total; the two marginals; sum over the non-zero cells only.')


def consecutive_same_expert_rate(expert_ids):
    """The share of consecutive token pairs that share an expert: Mixtral's locality (Jiang et al.
    2024, §5, Table 5).

    expert_ids: integer ndarray (B, T), each token's first-choice expert, for B sequences of T
    tokens; or (B, T, k), each token's k experts. A pair of neighbours (t, t+1) in the same row
    counts when the two first choices are equal (B, T), or when the two tokens' sets of experts
    share at least one expert, in any position (B, T, k: Mixtral's "first or second choice" at
    k = 2; k = 1 gives the first-choice rate). Only the B * (T - 1) pairs inside a row count: the
    last token of one sequence and the first of the next are not neighbours. -1 (an assignment a
    capacity limit dropped) is no expert: it matches nothing, not even another -1, and its pairs
    still count. Any integer dtype (int8, uint8, int64, ...).
    Returns a Python float in [0, 1]. Raises ValueError when there is no pair (T = 1, or B = 0):
    the rate is undefined there, not 0.

    Hint: compare ids[:, :-1] with ids[:, 1:]; for sets, broadcast (B, T-1, k, 1) against
    (B, T-1, 1, k) and ask .any() over the last two axes.
    """
    raise NotImplementedError(
        'ex08: compare ids[:, :-1] with ids[:, 1:]; for sets, broadcast (B, T-1, k, 1) against (B, T-1, 1, k).')
