"""Expert parallelism across processes with MPI (lesson 09): each of R ranks holds E/R experts
and its own shard of the tokens, and token rows travel to their experts by all-to-all.

    mpiexec -n 4 python -m minimoe.parallel --check    # the same results as one process

    from mpi4py import MPI
    from minimoe.parallel import ExpertParallelMoE, average_gradients
    layer = ExpertParallelMoE(MoEConfig(d_model=64, n_experts=8), MPI.COMM_WORLD)

Without MPI, `simulate_all_to_all` computes the same exchange (counts, order, bytes) in one
process. Nothing here imports mpi4py except `load_mpi`: the layer only calls methods of the
communicator it is given.
"""
from .collectives import AllReduceSum, AllToAll, all_reduce_sum, all_to_all
from .layer import PARALLEL_ROUTERS, ExpertParallelMoE, Traffic, replicated_parameters
from .model import average_gradients, shard_model
from .mpi import MPI_INSTALL_HINT, MPIUnavailable, load_mpi
from .plan import (
    ShardPlan,
    experts_per_rank,
    plan_shard_dispatch,
    queue_start,
    slot_counts,
)
from .simulate import AllToAllSimulation, simulate_all_to_all

__all__ = [
    "MPI_INSTALL_HINT", "PARALLEL_ROUTERS", "AllReduceSum", "AllToAll", "AllToAllSimulation", "ExpertParallelMoE",
    "MPIUnavailable", "ShardPlan", "Traffic", "all_reduce_sum", "all_to_all", "average_gradients",
    "experts_per_rank", "load_mpi", "plan_shard_dispatch", "queue_start", "replicated_parameters",
    "shard_model", "simulate_all_to_all", "slot_counts",
]
