"""Lesson 06, the routing zoo: expert choice (Zhou et al. 2022), hash layers (Roller et al. 2021)
and Soft MoE (Puigcerver et al. 2023): exercises.

Replace each `raise NotImplementedError(...)` with your answer, then grade:
    python -m minimoe.grade ex06
Each docstring is the contract the grader checks; the reference answers are in
`solutions/ex06_routing_zoo.py` (look there only when stuck).
"""
# ruff: noqa: F401  (the imports are there for your answers)
import numpy as np


def expert_choice(router_probs, capacity):
    """Expert-choice routing (Zhou et al. 2022, eq. 2): every expert takes its top-C tokens.

    router_probs: ndarray (T, E), each token's softmax over experts. capacity: int C, 1 <= C <= T
    (ValueError otherwise).
    Returns (token_index, gates), both (E, C): token_index[e] are the C tokens with the highest
    router_probs[:, e], highest first (ties: lower token index first), and
    gates[e, c] = router_probs[token_index[e, c], e].

    Hint: argsort each *column* of router_probs descending (kind="stable"), keep C of them.
    """
    raise NotImplementedError(
        'ex06: argsort each *column* of router_probs descending (kind="stable"), keep C of them.')


def hash_routing(token_ids, table, n_experts):
    """Hash routing (Roller et al. 2021): a fixed table sends each token id to one expert.

    token_ids: int ndarray (T,), ids in 0 .. len(table)-1 (ValueError naming the bad id otherwise;
    a negative id is an error, not an index from the end of the table).
    table: int ndarray (V,), the expert of every vocabulary id. n_experts: int E.
    Returns (expert_index, load): expert_index int ndarray (T,), load int ndarray (E,), the number
    of tokens each expert receives (0 for an expert no token reaches).

    Hint: table[token_ids]; count with np.bincount(..., minlength=n_experts).
    """
    raise NotImplementedError(
        'ex06: table[token_ids]; count with np.bincount(..., minlength=n_experts).')


def soft_moe_weights(x, slot_params):
    """Soft MoE's dispatch and combine weights (Puigcerver et al. 2023, Algorithm 1).

    x: ndarray (m, d), the tokens. slot_params: ndarray (d, S), one column per slot (S = experts x
    slots per expert). With logits L = x @ slot_params (m, S):
      dispatch D = softmax of L over *tokens* (axis 0): each slot is a weighted average of tokens;
      combine  C = softmax of L over *slots* (axis 1): each token mixes the slot outputs.
    Returns (dispatch, combine), both (m, S): columns of D and rows of C sum to 1; both finite
    for logits of 1000.

    Hint: one logits matrix, two stable softmaxes along different axes.
    """
    raise NotImplementedError('ex06: one logits matrix, two stable softmaxes along different axes.')
