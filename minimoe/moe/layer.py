"""The MoE layer: a router, E experts, optional shared experts, the losses, and a routing report.

    y = sum over the chosen experts i of gate_i(x) * expert_i(x)  [+ shared experts(x)]

Token-choice routers go through the sorted dispatch (dispatch.py): copy each token once per
choice, sort the copies by expert, run each expert on its block, weight by the gates, put the rows
back in token order and sum the k copies of each token. Expert choice and Soft MoE have their own
paths (their routers decide differently). No step loops over tokens.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..backend import to_numpy
from ..nn import Module, Parameter
from ..rng import device_rng
from ..tensor import Tensor, no_grad
from . import losses
from .config import MoEConfig
from .dispatch import expert_capacity, plan_dispatch
from .experts import Experts
from .report import RoutingReport
from .routers import ExpertChoiceRouting, NoisyTopKRouter, make_router
from .soft_moe import SoftMoE


class MoE(Module):
    def __init__(self, cfg: MoEConfig):
        self.cfg = cfg
        if cfg.router == "soft":
            self.soft = SoftMoE(cfg.d_model, cfg.n_experts, cfg.expert_hidden, cfg.slots_per_expert, cfg.activation)
        else:
            self.router = make_router(cfg)
            self.experts = Experts(cfg.n_experts, cfg.d_model, cfg.expert_hidden, cfg.activation, cfg.expert_bias)
        if cfg.n_shared_experts:
            # n shared experts of width h always add up, so they are one expert of width n*h (DeepSeekMoE §3.2)
            self.shared = Experts(1, cfg.d_model, cfg.shared_hidden, cfg.activation, cfg.expert_bias)
            if cfg.shared_expert_gate:  # Qwen2-MoE's shared_expert_gate, a (d, 1) Linear without bias
                self.shared_gate = Parameter.uniform((cfg.d_model, 1), 1 / np.sqrt(cfg.d_model))
        self.aux_loss: Tensor | None = None
        self.report: RoutingReport | None = None
        self._last_counts = None

    # ---- forward --------------------------------------------------------------------------------
    def forward(self, x: Tensor, token_ids=None) -> Tensor:
        cfg = self.cfg
        if not isinstance(x, Tensor):
            raise TypeError(f"MoE takes a Tensor x, got {type(x).__name__}; wrap it with minimoe.tensor(x)")
        if x.ndim not in (2, 3) or x.shape[-1] != cfg.d_model:
            raise ValueError(f"MoE expects inputs of shape (tokens, {cfg.d_model}) or (batch, seq, {cfg.d_model}); got {x.shape}")
        if x.size == 0:
            raise ValueError(f"MoE got an empty batch (input shape {x.shape}): there are no tokens to route")
        seq_shape = x.shape[:-1] if x.ndim == 3 else (1, x.shape[0])  # (B, T)
        if cfg.router == "hash" and token_ids is not None:
            _check_token_ids(token_ids, x.shape[:-1], cfg.vocab_size)
        flat = x.reshape(-1, cfg.d_model)  # (N, d)
        if cfg.router == "soft":
            y = self._soft(x.reshape(seq_shape + (cfg.d_model,)))
        elif cfg.router == "expert_choice":
            y = self._expert_choice(flat, seq_shape)
        else:
            y = self._token_choice(flat, self.router(flat, token_ids=token_ids), seq_shape)
        if cfg.n_shared_experts:
            shared = self.shared(flat, [flat.shape[0]], self._dropout_mask(flat.shape[0], self.shared.hidden, x))
            if cfg.shared_expert_gate:
                shared = F.sigmoid(flat @ self.shared_gate) * shared  # (N, 1) gate per token
            y = y + shared
        return y.reshape(x.shape)

    def _token_choice(self, flat, routing, seq_shape):
        cfg, n = self.cfg, flat.shape[0]
        k = routing.expert_index.shape[1]
        plan = self._plan(routing, n)
        # copy c of token t is row c*N + t of the k-major copies, as the plan numbers them
        x_sorted = F.dispatch_rows(flat, plan.order, k)  # (M, d) grouped by expert, no k copies made
        out = self._run_experts(x_sorted, plan)  # (M, d) each row through its expert
        gate = F.permute_rows(routing.gates.T.reshape(k * n, 1), plan.order)  # (M, 1)
        y = F.combine_rows(out, gate, plan.order, k, n)  # (N, d): gate-weighted sum of each token's rows

        counts, n_dropped, n_tokens = self._batch_counts(plan, n)
        self._last_counts = counts
        found = self._losses(routing, seq_shape)
        xp = flat.xp
        dispatched = xp.zeros(k * n, dtype=bool)
        dispatched[plan.order] = True
        kept = dispatched.reshape(k, n).T  # (N, k)
        index = xp.where(kept, routing.expert_index, -1)
        gates = xp.where(kept, routing.gates.data, 0)
        self._record(routing.probs, routing.logits, index.reshape(seq_shape + (k,)), counts,
                     n_dropped / (k * n_tokens), found, gates.reshape(seq_shape + (k,)))
        return y

    # The three steps an expert-parallel layer (minimoe.parallel) does differently:
    def _plan(self, routing, n_tokens):
        """Which assignments each expert keeps, sorted by expert (dispatch.py)."""
        k = routing.expert_index.shape[1]
        cf = self.cfg.capacity_factor
        capacity = expert_capacity(n_tokens, self.cfg.n_experts, k, cf) if cf else None
        return plan_dispatch(routing.expert_index, self.cfg.n_experts, capacity, routing.keep)

    def _run_experts(self, x_sorted, plan):
        return self.experts(x_sorted, plan.group_sizes, self._dropout_mask(x_sorted.shape[0], self.cfg.expert_hidden, x_sorted))

    def _batch_counts(self, plan, n_tokens):
        """(assignments per expert, assignments dropped, tokens) over the batch the losses see."""
        return plan.group_sizes, plan.n_dropped, n_tokens

    def _expert_choice(self, flat, seq_shape):
        cfg, n = self.cfg, flat.shape[0]
        r: ExpertChoiceRouting = self.router(flat)
        e, c = r.token_index.shape
        x_in = flat[r.token_index.reshape(-1)]  # (E*C, d) expert-major; a token may appear several times
        out = self.experts(x_in, [c] * e, self._dropout_mask(e * c, cfg.expert_hidden, flat))
        weighted = out * r.gates.reshape(e * c, 1)
        zeros = Tensor(flat.xp.zeros(flat.shape, dtype=flat.dtype))
        y = F.index_add(zeros, r.token_index.reshape(-1), weighted)  # (N, d)

        xp = flat.xp
        taken = xp.zeros((n, e), dtype=flat.dtype)
        taken[r.token_index, xp.arange(e)[:, None]] = r.gates.data  # (N, E) gate of each expert that took the token
        taken_by_any = taken.max(axis=1) > 0  # (N,)
        best = xp.where(taken_by_any, taken.argmax(axis=1), -1)  # (N,) the expert with the largest gate
        self._last_counts = np.full(e, c)  # every expert is exactly full
        self._record(r.probs, r.logits, best.reshape(seq_shape + (1,)), self._last_counts,
                     float(to_numpy(1 - taken_by_any.mean())), self._losses_common(r.logits),
                     taken.max(axis=1).reshape(seq_shape + (1,)))
        return y

    def _soft(self, x3):
        y = self.soft(x3)
        logits = Tensor(self.soft.last_logits.data.reshape(-1, self.soft.phi.shape[1]))  # (N, S), no graph
        combine = F.softmax(logits)  # (N, S) each token's weights over the slots: its routing distribution
        no_whole_token_routed = np.full(x3.shape[:2] + (1,), -1)
        self._record(combine, logits, no_whole_token_routed, np.ones(self.cfg.n_experts), 0.0, {})
        return y.reshape(-1, self.cfg.d_model)

    def _dropout_mask(self, rows, hidden, like):
        """Expert dropout: a keep mask on the hidden units, scaled so evaluation needs no change."""
        p = self.cfg.expert_dropout
        if not (self.training and p):
            return None
        keep = device_rng(like.xp).random((rows, hidden), dtype=like.dtype) >= p
        return keep.astype(like.dtype) / (1 - p)

    # ---- losses and the report -------------------------------------------------------------------
    def _losses(self, routing, seq_shape) -> dict:
        cfg, e = self.cfg, self.cfg.n_experts
        found = {}
        if cfg.balance_loss == "switch":
            found["balance"] = (cfg.balance_coef, losses.switch_balance_loss(routing.probs, routing.expert_index, e))
        elif cfg.balance_loss == "gshard":
            found["balance"] = (cfg.balance_coef, losses.gshard_balance_loss(routing.probs, routing.expert_index, e))
        elif cfg.balance_loss == "importance_load":
            found["importance"] = (cfg.balance_coef, losses.importance_loss(routing.gates, routing.expert_index, e))
            if isinstance(self.router, NoisyTopKRouter) and self.router.smooth_load is not None:
                found["load"] = (cfg.balance_coef, losses.load_loss(self.router.smooth_load))
        elif cfg.balance_loss == "deepseek_sequence":
            b, t = seq_shape
            k = routing.expert_index.shape[1]
            # f_i counts the top-k of the *unbiased* scores (eq. 18), not the bias-steered choice
            unbiased_top = routing.probs.xp.argsort(-routing.probs.data, axis=-1, kind="stable")[:, :k]  # (N, k)
            found["balance"] = (cfg.balance_coef, losses.deepseek_sequence_loss(
                routing.probs.reshape(b, t, e), unbiased_top.reshape(b, t, k), e, k))
        found.update(self._losses_common(routing.logits))
        return found

    def _losses_common(self, logits) -> dict:
        return {"z": (self.cfg.z_loss_coef, losses.z_loss(logits))} if self.cfg.z_loss_coef else {}

    def _record(self, probs, logits, expert_index, counts, dropped, found, expert_gate=None):
        xp = logits.xp
        total = None
        for coef, value in found.values():
            total = value * coef if total is None else total + value * coef
        self.aux_loss = total if total is not None else Tensor(xp.zeros((), dtype=logits.dtype))
        p = probs.data
        entropy = -(p * xp.log(xp.maximum(p, 1e-20))).sum(axis=-1).mean()
        with no_grad():
            lse_mean = F.logsumexp(logits).mean().item()
        counts = np.asarray(counts, dtype=np.float64)
        self.report = RoutingReport(
            load=counts / max(1.0, counts.sum()),
            dropped_fraction=float(dropped),
            router_entropy=float(entropy),
            expert_index=to_numpy(expert_index),
            expert_gate=None if expert_gate is None else to_numpy(expert_gate),
            losses={name: value.item() for name, (_, value) in found.items()},
            max_logit=float(to_numpy(xp.abs(logits.data).max())),
            mean_logsumexp=lse_mean,
        )

    # ---- DeepSeek-V3's balancing step ------------------------------------------------------------
    def update_bias(self) -> None:
        """After an optimiser step: the auxiliary-loss-free bias update from the last forward's
        load (DeepSeek-V3 routers only; a no-op otherwise)."""
        if self.cfg.router == "deepseek" and self._last_counts is not None:
            self.router.update_bias(self._last_counts, self.cfg.bias_update_rate)


def _check_token_ids(token_ids, expected_shape: tuple, vocab_size: int) -> None:
    """Hash routing looks each id up in a table of `vocab_size` rows: the ids must be integers in
    range, one per token of x."""
    ids = token_ids.data if isinstance(token_ids, Tensor) else token_ids
    if not hasattr(ids, "dtype") or ids.dtype.kind not in "iu":
        raise TypeError(f"token_ids must be an integer array or Tensor, got {getattr(ids, 'dtype', type(ids).__name__)}")
    if tuple(ids.shape) != tuple(expected_shape):
        raise ValueError(f"token_ids has shape {tuple(ids.shape)}; x needs one id per token, shape {tuple(expected_shape)}")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"token_ids must lie in [0, {vocab_size}) (the hash table has vocab_size={vocab_size} "
                         f"rows), got ids from {low} to {high}")
