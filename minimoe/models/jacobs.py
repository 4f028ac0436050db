"""Adaptive mixtures of local experts (Jacobs, Jordan, Nowlan & Hinton 1991, §1): a softmax gate over
linear experts, the paper's two error functions, and the posterior that links them.

The paper's notation: s are the gating network's outputs, p = softmax(s) the gate, o_i expert i's
output and d the desired output of one case. Every function here works on engine Tensors, so the
gradients come from `backward()`; they are checked by finite differences in tests/test_jacobs.py.
Fitting the same mixture by EM is in `minimoe/models/hme.py`. Introduced in lesson 01.
"""
from __future__ import annotations

from .. import functional as F
from ..nn import Linear, Module, Parameter


class LinearMixture(Module):
    """A softmax gate over E linear experts o_i(x) = a_i x + b_i on 1-D inputs (the 1991 model with
    linear experts). The gate starts at zero, every expert weighted 1/E everywhere, so whatever
    partition of the input appears is learned."""

    def __init__(self, n_experts: int, init_std: float = 1.0):
        self.gate = Linear(1, n_experts)  # s(x) = x W + c
        self.gate.weight.data[:] = 0
        self.gate.bias.data[:] = 0
        self.slope = Parameter.normal((n_experts,), init_std)
        self.intercept = Parameter.normal((n_experts,), init_std)

    def forward(self, x):
        """x (T, 1) -> gate scores s (T, E) and expert outputs o (T, E, 1)."""
        outputs = x * self.slope + self.intercept  # (T, E)
        return self.gate(x), outputs.reshape(*outputs.shape, 1)


def _half_squared_errors(outputs, targets):
    """(T, E, D) outputs and (T, D) targets -> 1/2 ||d - o_i||^2, (T, E)."""
    t, _, d = outputs.shape
    error = outputs - targets.reshape(t, 1, d)  # (T, E, D)
    return (error * error).sum(axis=-1) * 0.5


def cooperative_loss(scores, outputs, targets):
    """Eq. 1.1 of the 1991 paper, averaged over cases: ||d - sum_i p_i o_i||^2, the error of the
    blend (the paper ascribes it to earlier systems; under it the experts co-adapt).

    scores (T, E), outputs (T, E, D), targets (T, D) -> a scalar Tensor."""
    t, e, d = outputs.shape
    blend = (F.softmax(scores).reshape(t, e, 1) * outputs).sum(axis=1)  # (T, D)
    error = targets - blend
    return (error * error).sum(axis=-1).mean()


def competitive_loss(scores, outputs, targets):
    """Eq. 1.3 of the 1991 paper, averaged over cases: -log sum_i p_i exp(-1/2 ||d - o_i||^2), the
    negative log-likelihood of a mixture of unit-variance Gaussians (under it the experts compete).
    Computed as a log-sum-exp of log p_i - 1/2 ||d - o_i||^2, finite when every expert is far off.

    scores (T, E), outputs (T, E, D), targets (T, D) -> a scalar Tensor."""
    log_joint = F.log_softmax(scores, axis=-1) - _half_squared_errors(outputs, targets)  # (T, E)
    return -F.logsumexp(log_joint, axis=-1).mean()


def posterior(scores, outputs, targets):
    """Each expert's responsibility for each case after seeing its target (the weights h_i of the
    gradient in eq. 1.5): h_i = p_i e^{-||d - o_i||^2 / 2} / sum_j p_j e^{-||d - o_j||^2 / 2}.

    scores (T, E), outputs (T, E, D), targets (T, D) -> a (T, E) Tensor whose rows sum to 1.
    The gradient of eq. 1.3 with respect to the scores is (p - h) / T (tests/test_jacobs.py)."""
    return F.softmax(F.log_softmax(scores, axis=-1) - _half_squared_errors(outputs, targets), axis=-1)
