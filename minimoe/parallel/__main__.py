"""`python -m minimoe.parallel`: expert parallelism across processes with MPI.

    mpiexec -n 4 python -m minimoe.parallel --check   # same results as one process; the traffic
    mpiexec -n 4 python -m minimoe.parallel --train   # a tiny MoE Transformer, expert-parallel
    mpiexec -n 4 python -m minimoe.parallel --bench   # the time of one forward + backward

Without mpiexec it runs on one rank. Rank 0 prints; the exit status is non-zero if a check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from ..ops.row_blocks import set_num_threads
from .demos import N_EXPERTS
from .mpi import MPIUnavailable, load_mpi
from .plan import experts_per_rank


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m minimoe.parallel",
        description=f"Expert parallelism with MPI: run under `mpiexec -n R` (R must divide the {N_EXPERTS} experts).",
        epilog="Install MPI with `pip install mpi4py mpich`. Under mpiexec each rank's engine runs on one "
               "thread, BLAS included, so the ranks do not fight over the cores (MINIMOE_NUM_THREADS overrides it).")
    task = parser.add_mutually_exclusive_group(required=True)
    task.add_argument("--check", action="store_true",
                      help="compare with the single-process layer (outputs, gradients, counts) and print the traffic")
    task.add_argument("--train", action="store_true",
                      help="train the tiny MoE Transformer expert-parallel and compare its loss with one process")
    task.add_argument("--bench", action="store_true", help="time one forward + backward of a larger layer")
    parser.add_argument("--steps", type=int, default=5, help="--train: optimiser steps (default 5)")
    parser.add_argument("--capacity-factor", type=float, default=None,
                        help="--train: the MoE layers' capacity factor (default: dropless)")
    parser.add_argument("--backend", default="numpy", choices=("numpy", "strict", "cupy"),
                        help="array backend of every rank (default numpy)")
    parser.add_argument("--json", action="store_true", help="rank 0 prints the results as one line of JSON, last")
    parser.add_argument("--quiet", action="store_true", help="no tables (with --json: only the JSON line)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    return args


def run(args, comm) -> dict:
    import minimoe as mm

    mm.use(args.backend)
    if args.check:
        from .check import format_check, run_check

        result, text = run_check(comm), format_check
    elif args.train:
        from .train_demo import format_training, train_demo

        result, text = train_demo(comm, steps=args.steps, capacity_factor=args.capacity_factor), format_training
    else:
        from .bench import bench, format_bench

        result, text = bench(comm), format_bench
    if comm.Get_rank() == 0:
        if not args.quiet:
            print(text(result), flush=True)
        if args.json:
            print(json.dumps(result), flush=True)
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        mpi = load_mpi()
    except MPIUnavailable as err:
        print(f"minimoe.parallel: {err}", file=sys.stderr)
        return 2
    comm = mpi.COMM_WORLD
    try:
        experts_per_rank(N_EXPERTS, comm.Get_size())  # every rank refuses at once, before any collective
    except ValueError as err:
        if comm.Get_rank() == 0:
            print(f"minimoe.parallel: {err}", file=sys.stderr)
        return 2
    if comm.Get_size() > 1 and not os.environ.get("MINIMOE_NUM_THREADS"):
        set_num_threads(1)  # one core per rank: ranks' thread pools would otherwise fight for the cores
    try:
        result = run(args, comm)
    except Exception:  # noqa: BLE001 -- any error on one rank must end every rank
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)  # the other ranks may be waiting in a collective: end them all
        return 1
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
