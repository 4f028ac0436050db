"""Lesson 08, do experts specialise? Counting and mutual information: exercises.

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
