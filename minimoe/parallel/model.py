"""A whole model across ranks: its MoE layers expert-parallel, everything else data-parallel.

    model = Transformer(config)          # built from the same seed on every rank
    shard_model(model, comm)             # each MoE layer keeps this rank's experts
    ...
    loss.backward()                      # loss: the mean over this rank's tokens (+ aux losses)
    average_gradients(model, comm)       # then optimizer.step(), on every rank

Each rank's loss is the mean over its own tokens, and training minimises the mean of the ranks'
losses -- with equal shards, the single-process loss of the whole batch. Its gradient:
* replicated parameters (embeddings, attention, routers, shared experts): the mean over ranks
  of their gradients (an Allreduce, then / R: data parallelism);
* experts: each lives on one rank, and the all-to-all's backward has already brought it the
  gradients of all R ranks' losses, summed; / R makes that the mean.
"""
from __future__ import annotations

from ..moe import MoE
from ..nn import Module
from .collectives import broadcast_parameters, sum_arrays_over_ranks
from .layer import ExpertParallelMoE, replicated_parameters


def shard_model(model: Module, comm) -> Module:
    """Replaces every `MoE` inside `model` (in place) by its `ExpertParallelMoE` twin holding this
    rank's experts, and gives every replicated parameter rank 0's values. Returns the model."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, MoE) and not isinstance(child, ExpertParallelMoE):
                setattr(parent, name, ExpertParallelMoE(child, comm))
    broadcast_parameters(comm, replicated_parameters(model))
    return model


def average_gradients(model: Module, comm) -> None:
    """After `backward()` on every rank: every gradient becomes that of the mean of the ranks'
    losses (see the module docstring). Parameters without a gradient are left alone; every rank
    runs the same graph, so they are the same ones on every rank."""
    n_ranks = comm.Get_size()
    replicated = [p for p in replicated_parameters(model) if p.grad is not None]
    for p, total in zip(replicated, sum_arrays_over_ranks(comm, [p.grad for p in replicated])):
        p.grad = total
    for p in model.parameters():
        if p.grad is not None:
            p.grad = p.grad * (1.0 / n_ranks)
