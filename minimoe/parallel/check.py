"""`python -m minimoe.parallel --check`: the expert-parallel layer against the single-process one,
and the traffic of its all-to-all.

Every rank builds the single-process `MoE` from one seed and runs it on the whole batch (the
reference), then builds the expert-parallel twin from the same seed and runs it on its own slice.
It compares its outputs with its slice of the reference's, its experts' gradients with its slice
of the reference's, and the averaged replicated gradients with the reference's. The reference's
loss is the mean over all tokens of y.c plus the aux loss; each rank's is the mean over its own
tokens plus the (global) aux loss, so the mean over ranks is the reference's loss.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import minimoe as mm

from ..backend import to_numpy
from ..moe import MoE, MoEConfig
from ..tensor import Tensor, no_grad
from .demos import N_EXPERTS, table
from .layer import ExpertParallelMoE
from .model import average_gradients
from .simulate import simulate_all_to_all

TOLERANCE = 1e-5  # largest relative difference accepted: float32 rounding, summed in another order


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    config: dict = field(default_factory=dict)  # MoEConfig fields
    training: bool = True  # eval mode where the router draws random numbers in training
    sequences: bool = False  # inputs (B, T, d) split by sequence, for the sequence-wise loss
    idle_last_rank: bool = False  # the last rank's experts are never chosen
    router_std: float | None = None  # new random router weights (the noisy router's start at zero)


CASES = (
    Case("top1", "Switch top-1, capacity factor 1.0, z-loss",
         {"router": "switch", "capacity_factor": 1.0, "z_loss_coef": 1e-3}),
    Case("top2-capacity", "top-2, capacity factor 1.0",
         {"router": "topk", "top_k": 2, "capacity_factor": 1.0}),
    Case("dropless-shared", "top-2 dropless, a shared expert, SwiGLU",
         {"router": "topk", "top_k": 2, "n_shared_experts": 1, "activation": "swiglu"}),
    Case("qwen2-shared-gate", "top-2, bias-free SwiGLU experts, a sigmoid-gated shared expert (Qwen2-MoE)",
         {"router": "topk", "top_k": 2, "renormalize": False, "n_shared_experts": 1, "activation": "swiglu",
          "expert_bias": False, "shared_expert_gate": True}),
    Case("gshard-eval", "GShard top-2 (eval), capacity factor 1.25",
         {"router": "gshard", "capacity_factor": 1.25}, training=False),
    Case("noisy-importance", "noisy top-2 (eval), importance loss",
         {"router": "noisy_topk", "top_k": 2, "balance_loss": "importance_load"}, training=False, router_std=0.3),
    Case("deepseek-sequence", "DeepSeek-V3 groups, sequence loss, cf 1.25",
         {"router": "deepseek", "top_k": 2, "n_groups": 4, "topk_groups": 2,
          "balance_loss": "deepseek_sequence", "capacity_factor": 1.25}, sequences=True),
    Case("idle-rank", "top-2; no token for the last rank's experts",
         {"router": "topk", "top_k": 2}, idle_last_rank=True),
)


@dataclass(frozen=True)
class Sizes:
    tokens: int = 256
    d_model: int = 32
    n_experts: int = N_EXPERTS
    expert_hidden: int = 64
    sequence: int = 32  # tokens per sequence where a case splits the batch by sequence
    seed: int = 0


def relative_error(value, reference) -> float:
    """max |value - reference| / max |reference| over the whole array."""
    value, reference = (np.asarray(to_numpy(a.data if isinstance(a, Tensor) else a), np.float64)
                        for a in (value, reference))
    largest = max(np.abs(reference).max(initial=0.0), 1e-30)
    return float(np.abs(value - reference).max(initial=0.0) / largest)


def _shard(n: int, comm) -> slice:
    """This rank's tokens: the rank-th of R equal slices, in order."""
    n_ranks, rank = comm.Get_size(), comm.Get_rank()
    return slice(rank * n // n_ranks, (rank + 1) * n // n_ranks)


def _layers(case: Case, comm, sizes: Sizes) -> tuple[MoE, ExpertParallelMoE]:
    """The single-process layer and its expert-parallel twin, drawn from the same seed."""
    cfg = MoEConfig(d_model=sizes.d_model, n_experts=sizes.n_experts, expert_hidden=sizes.expert_hidden,
                    **case.config)
    mm.manual_seed(sizes.seed)
    reference = MoE(cfg)
    mm.manual_seed(sizes.seed)
    parallel = ExpertParallelMoE(cfg, comm)
    for layer in (reference, parallel):
        layer.train(case.training)
        weight = layer.router.weight
        if case.router_std:
            draw = np.random.default_rng(sizes.seed + 1).normal(0.0, case.router_std, weight.shape)
            weight.data = mm.tensor(draw, dtype=np.float32).data
        if case.idle_last_rank:  # with input feature 0 fixed at 3, these experts' logits get -150
            weight.data[0, cfg.n_experts - cfg.n_experts // comm.Get_size():] = -50.0
    return reference, parallel


def _forward_backward(layer, x: np.ndarray, c: np.ndarray, shape: tuple):
    """loss = mean over the tokens of y.c, plus the layer's aux loss; backward."""
    inputs = mm.tensor(x.reshape(shape), requires_grad=True)
    y = layer(inputs)
    loss = (y * mm.tensor(c.reshape(shape))).sum() * (1.0 / x.shape[0]) + layer.aux_loss
    loss.backward()
    return inputs, y.reshape(-1, x.shape[1])


def _differences(reference, parallel, comm, x, c, shape) -> dict:
    """Both layers forward and backward on the same batch: the largest relative differences over
    all ranks, of the outputs, the aux loss, the weights' and the inputs' gradients, the report."""
    mine, n_ranks, d = _shard(x.shape[0], comm), comm.Get_size(), x.shape[1]
    ref_inputs, ref_y = _forward_backward(reference, x, c, shape)
    inputs, y = _forward_backward(parallel, x[mine], c[mine], shape)
    average_gradients(parallel, comm)
    ref_params = dict(reference.named_parameters())
    experts = slice(parallel.first_expert, parallel.first_expert + parallel.experts_per_rank)
    weights = [relative_error(p.grad, ref_params[name].grad[experts] if name.startswith("experts.")
                              else ref_params[name].grad)
               for name, p in parallel.named_parameters() if p.grad is not None]
    errors = {
        "output": relative_error(y, ref_y.data[mine]),
        "aux_loss": relative_error(parallel.aux_loss, reference.aux_loss),
        "weight_grads": max(weights),
        # a rank's loss averages N/R tokens, the reference's N: R times the gradient per token
        "input_grad": relative_error(inputs.grad.reshape(-1, d) / n_ranks, ref_inputs.grad.reshape(-1, d)[mine]),
        "report": max(relative_error(parallel.report.load, reference.report.load),
                      abs(parallel.report.dropped_fraction - reference.report.dropped_fraction)),
    }
    return {key: max(comm.allgather(value)) for key, value in errors.items()}


def _simulated(layer: MoE, x: np.ndarray, n_ranks: int):
    """The simulation of the all-to-all for the routing `layer` gives the whole batch."""
    with no_grad():
        routing = layer.router(mm.tensor(x))
    return simulate_all_to_all(routing.expert_index, n_ranks, layer.cfg.n_experts, layer.cfg.capacity_factor,
                               routing.keep, d_model=x.shape[1])


def run_case(case: Case, comm, sizes: Sizes) -> dict:
    """One case: the differences from the single-process layer, the exchanged counts (conserved?
    equal to the simulation's?), and what each rank sent."""
    n_ranks = comm.Get_size()
    data = np.random.default_rng(sizes.seed)
    x = data.standard_normal((sizes.tokens, sizes.d_model)).astype(np.float32)
    c = data.standard_normal((sizes.tokens, sizes.d_model)).astype(np.float32)
    if case.idle_last_rank:
        x[:, 0] = 3.0
    reference, parallel = _layers(case, comm, sizes)
    shape = (-1, sizes.sequence, sizes.d_model) if case.sequences else (-1, sizes.d_model)
    errors = _differences(reference, parallel, comm, x, c, shape)
    sent = np.array(comm.allgather(parallel.traffic.sent))  # (R, R) row s: what rank s sent
    received = np.array(comm.allgather(parallel.traffic.received))  # (R, R) row q: what rank q got
    simulated = _simulated(reference, x, n_ranks)
    return {
        "case": case.name, "what": case.what, "errors": errors, "max_error": max(errors.values()),
        "sent": sent.tolist(), "received": received.tolist(),
        "conserved": bool((sent == received.T).all() and sent.sum() == received.sum()),
        "matches_simulation": bool((simulated.send_counts == sent).all()
                                   and (simulated.expert_load == parallel._last_counts).all()),
        "dropped_fraction": reference.report.dropped_fraction,
        "idle_ranks": [q for q in range(n_ranks) if received[q].sum() == 0],
        "tokens_per_rank": comm.allgather(sizes.tokens // n_ranks),
        "bytes_out": comm.allgather(parallel.traffic.bytes_sent),
        "bytes_in": comm.allgather(parallel.traffic.bytes_received),
    }


def traffic_row(comm, sizes: Sizes, top_k: int, capacity_factor: float | None) -> dict:
    """One forward of a top-k layer on the check's batch: what its dispatch moved between ranks."""
    cfg = MoEConfig(d_model=sizes.d_model, n_experts=sizes.n_experts, expert_hidden=sizes.expert_hidden,
                    router="topk", top_k=top_k, capacity_factor=capacity_factor)
    x = np.random.default_rng(sizes.seed).standard_normal((sizes.tokens, sizes.d_model)).astype(np.float32)
    mm.manual_seed(sizes.seed)
    layer = ExpertParallelMoE(cfg, comm)
    with no_grad():
        layer(mm.tensor(x[_shard(sizes.tokens, comm)]))
    sent = np.array(comm.allgather(layer.traffic.sent))  # (R, R)
    simulated = _simulated(layer, x, comm.Get_size())
    processed = sent.sum(axis=0)  # (R,) rows each rank's experts ran
    return {
        "top_k": top_k, "capacity_factor": capacity_factor, "capacity": simulated.capacity,
        "dropped_fraction": layer.report.dropped_fraction,
        "rows_across": int(sent.sum() - np.trace(sent)),
        "bytes_per_forward": simulated.bytes_per_forward, "bytes_per_step": simulated.bytes_per_step,
        "busiest_over_mean": float(processed.max() / processed.mean()),
        "matches_simulation": bool((simulated.send_counts == sent).all()),
    }


def indivisible_error(comm, sizes: Sizes) -> str | None:
    """The error for 2R + 1 experts on R ranks (None: no error raised; "" with a single rank)."""
    n_ranks = comm.Get_size()
    if n_ranks == 1:
        return ""
    try:
        ExpertParallelMoE(MoEConfig(d_model=sizes.d_model, n_experts=2 * n_ranks + 1, top_k=1, expert_hidden=8), comm)
    except ValueError as err:
        return str(err)
    return None


def run_check(comm, sizes: Sizes = Sizes()) -> dict:
    """Every case (the idle-rank one needs 2 ranks or more), the traffic grid and the error check."""
    n_ranks = comm.Get_size()
    cases = [run_case(case, comm, sizes) for case in CASES if n_ranks > 1 or not case.idle_last_rank]
    traffic = [traffic_row(comm, sizes, k, cf) for k in (1, 2) for cf in (1.0, 1.25, None)]
    error = indivisible_error(comm, sizes)
    ok = (all(c["max_error"] <= TOLERANCE and c["conserved"] and c["matches_simulation"] for c in cases)
          and all(row["matches_simulation"] for row in traffic) and error is not None
          and all(c["idle_ranks"] == [n_ranks - 1] for c in cases if c["case"] == "idle-rank"))
    return {"ok": ok, "n_ranks": n_ranks, "sizes": vars(sizes), "tolerance": TOLERANCE, "cases": cases,
            "traffic": traffic, "indivisible_error": error}


# ---- the printed report -------------------------------------------------------------------------
YES = {True: "yes", False: "NO"}


def _cases_table(result: dict) -> list[str]:
    rows = [[c["case"], c["what"],
             *(f"{c['errors'][key]:.1e}" for key in ("output", "aux_loss", "weight_grads", "input_grad")),
             YES[c["conserved"]], YES[c["matches_simulation"]], f"{100 * c['dropped_fraction']:.1f}%"]
            for c in result["cases"]]
    worst = max(c["max_error"] for c in result["cases"])
    verdict = "all agree" if worst <= result["tolerance"] else "MISMATCH"
    return [("Largest relative difference from the single-process layer (outputs, aux loss, gradients of "
             "the weights and of the inputs):"),
            table(["case", "what", "output", "aux", "weights", "inputs", "sent=recv", "=sim", "dropped"], rows, left=2),
            f"{verdict}: largest difference {worst:.1e} (tolerance {result['tolerance']:.0e})"]


def _per_rank_table(result: dict) -> list[str]:
    shown = next(c for c in result["cases"] if c["case"] == "top2-capacity")
    sent, received = np.array(shown["sent"]), np.array(shown["received"])
    rows = [[q, shown["tokens_per_rank"][q], sent[q, q], sent[q].sum() - sent[q, q],
             received[q].sum() - received[q, q], shown["bytes_out"][q], shown["bytes_in"][q]]
            for q in range(result["n_ranks"])]
    return [(f"Per rank, case top2-capacity, one dispatch (the combine sends the rows back, and the backward "
             f"repeats both); one row = {result['sizes']['d_model'] * 4} bytes:"),
            table(["rank", "tokens", "rows kept here", "rows out", "rows in", "bytes out", "bytes in"], rows)]


def _traffic_table(result: dict) -> list[str]:
    rows = [[t["top_k"], t["capacity_factor"] or "dropless", t["capacity"] or "-",
             f"{100 * t['dropped_fraction']:.1f}%", t["rows_across"], f"{t['bytes_per_forward'] / 1024:.1f}",
             f"{t['bytes_per_step'] / 1024:.1f}", f"{t['busiest_over_mean']:.2f}", YES[t["matches_simulation"]]]
            for t in result["traffic"]]
    return [(f"Traffic against top-k and capacity factor (top-k router, {result['sizes']['tokens']} tokens; "
             "bytes between ranks, dispatch + combine, and with the backward):"),
            table(["top-k", "capacity factor", "capacity", "dropped", "rows across", "KB forward", "KB step",
                   "busiest rank / mean", "=sim"], rows)]


def format_check(result: dict) -> str:
    """The check's results as the tables `--check` prints."""
    sizes, n_ranks = result["sizes"], result["n_ranks"]
    error = result["indivisible_error"]
    if error == "":
        error = "(one rank: nothing to split)"
    header = (f"Expert-parallel MoE on {n_ranks} rank(s): {sizes['n_experts']} experts "
              f"({sizes['n_experts'] // n_ranks} per rank), d_model {sizes['d_model']}, {sizes['tokens']} tokens "
              f"({sizes['tokens'] // n_ranks} per rank), float32.")
    sections = [[header], _cases_table(result), _per_rank_table(result), _traffic_table(result),
                [f"E not divisible by R: {f'ValueError: {error}' if error else 'NO ERROR RAISED'}"]]
    return "\n\n".join("\n".join(section) for section in sections)
