"""Lesson 08, do experts specialise? Counting and mutual information: reference answers.

Try the exercise first (`exercises/ex08_specialisation.py`); grade it with
`python -m minimoe.grade ex08`.
"""
import numpy as np


def domain_expert_counts(domains, expert_index, n_domains, n_experts):
    """How often each domain's tokens were sent to each expert.

    domains: int ndarray (T,), each token's domain. expert_index: int ndarray (T, k), its experts,
    -1 where an assignment was dropped (not counted). n_domains, n_experts: ints.
    Returns an int ndarray (n_domains, n_experts): counts[d, e] = number of (token, choice) pairs
    with domain d and expert e. The same pair can occur many times, and every occurrence counts.

    Hint: counts[rows, cols] += 1 counts a repeated pair once; np.add.at counts every one.
    """
    rows = np.broadcast_to(domains[:, None], expert_index.shape)  # (T, k): each assignment's domain
    kept = expert_index >= 0
    counts = np.zeros((n_domains, n_experts), dtype=np.int64)
    np.add.at(counts, (rows[kept], expert_index[kept]), 1)  # unbuffered: repeated pairs all count
    return counts


def mutual_information(counts):
    """The mutual information I(domain; expert), in nats, from a table of counts.

    counts: ndarray (D, E) of non-negative counts (some may be zero), not all zero.
    Returns a float: sum over d, e of p(d, e) log(p(d, e) / (p(d) p(e))), with 0 log 0 = 0.
    0 when expert choice is independent of the domain; log D when each domain has its own expert.

    Hint: joint = counts / total; the two marginals; sum over the non-zero cells only.
    """
    joint = counts / counts.sum()  # (D, E)
    independent = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)  # p(d) p(e)
    nonzero = joint > 0  # 0 log 0 = 0
    return float((joint[nonzero] * np.log(joint[nonzero] / independent[nonzero])).sum())
