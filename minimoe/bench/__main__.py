"""`python -m minimoe.bench [--quick] [--only engine,moe,train] [--out FILE] [--profile] [--checkpoint N]`:
a table and a JSON file."""
import argparse
import json
import os
import platform
import sys

import numpy as np

from . import workloads as W
from ..backend import synchronize, use
from ..ops.row_blocks import is_plain, num_threads, set_num_threads
from .timing import paired_median_ms


def torch_peer(threads: int):
    """The PyTorch side of the comparison, or None where torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from . import torch_peer as peer

    return torch, peer


def engine_cases(peer):
    yield "MLP train step (3 layers, batch 256, width 512)", W.mlp_step(), (
        peer and _torch_mlp(peer))
    yield "Transformer block train step (2048 tokens, d 128)", W.block_step(), (
        peer and _torch_block(peer))


def _torch_mlp(peer):
    torch, p = peer
    model = p.MLP(512, 512, 3, 10)
    x, y = torch.randn(256, 512), torch.randint(0, 10, (256,))
    return p.train_step_fn(model, (x, y), lambda m, x, y: torch.nn.functional.cross_entropy(m(x), y))


def _torch_block(peer):
    torch, p = peer
    model = p.Block(128, 4, 512)
    x = torch.randn(16, 128, 128)
    return p.train_step_fn(model, (x,), lambda m, x: (m(x) * 0.01).sum())


def _torch_layer(peer, module, tokens=2048, d=128):
    torch, _ = peer
    x = torch.randn(tokens, d, requires_grad=True)

    def step():
        module.zero_grad(set_to_none=True)
        out = module(x)
        y, aux = out if isinstance(out, tuple) else (out, 0.0)
        ((y * 0.01).sum() + aux).backward()

    return step


def moe_cases(peer, quick):
    sweep = (2, 8, 64) if quick else (2, 4, 8, 16, 32, 64)
    for n in sweep:
        yield f"MoE layer fwd+bwd, E={n}, top-2, hidden 512", W.moe_layer_fwd_bwd(n), (
            peer and _torch_layer(peer, peer[1].MoEFFN(128, n, 2, 512)))
    yield "fine-grained: 62 experts of hidden 64, top-14, + 2 shared", W.moe_layer_fwd_bwd(62, k=14, hidden=64, n_shared=2), (
        peer and _torch_layer(peer, peer[1].MoEFFN(128, 62, 14, 64, n_shared=2, shared_hidden=64)))
    yield "dense FFN of matched active FLOPs (hidden 1024)", W.dense_ffn_fwd_bwd(1024), (
        peer and _torch_layer(peer, peer[1].DenseFFN(128, 1024)))


def _torch_model(peer, **kwargs):
    torch, p = peer
    model = p.TinyTransformer(96, 128, 4, 4, 128, **kwargs)
    ids, targets = torch.randint(0, 96, (16, 128)), torch.randint(0, 96, (16, 128))
    return p.train_step_fn(model, (ids, targets), lambda m, ids, targets: m(ids, targets))


def train_cases(peer, quick):
    from ..train import PRESETS

    yield "reference workload: MoE train step", W.model_step(W.reference_model_config()), (
        peer and _torch_model(peer))
    yield "reference workload: dense twin train step (hidden 1024)", W.model_step(W.reference_model_config(dense=True)), (
        peer and _torch_model(peer, dense_hidden=1024))
    laptop = PRESETS["laptop"][0]
    yield "laptop preset: MoE train step (8 experts of 256, top-2)", W.model_step(laptop), (
        peer and _torch_model(peer, expert_hidden=laptop.expert_hidden))
    yield "laptop preset: dense twin train step", W.model_step(laptop.dense_twin()), (
        peer and _torch_model(peer, dense_hidden=laptop.dense_twin().dense_hidden))


GROUPS = {"engine": engine_cases, "moe": moe_cases, "train": train_cases}


def _synchronised(step, backend_name):
    """On a GPU a step returns before its kernels finish: wait for them, or the time means nothing."""
    if backend_name != "cupy":
        return step

    def run():
        step()
        synchronize(backend_name)

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minimoe.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and sizes (a smoke run)")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups of {sorted(GROUPS)}")
    parser.add_argument("--out", default="bench-results.json", help="where to write the JSON results")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per case (default 5 quick, 15 full)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for minimoe's pool and for PyTorch alike (default: every core)")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"],
                        help="where minimoe runs; on cupy the PyTorch peer (a CPU build here) is left out")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the table: one reference-workload step, op by op (MoE and dense twin)")
    parser.add_argument("--checkpoint", type=float, default=None, metavar="PARAMETERS",
                        help="instead of the table: load a synthetic Mixtral of about this many parameters "
                             "(e.g. 1e9) that transformers builds with random weights; needs torch and transformers")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    set_num_threads(args.threads)
    if args.checkpoint is not None:
        from .checkpoint import report

        print(report(args.checkpoint))
        return
    if args.profile:
        from .profile import profile_reference_step

        for dense in (False, True):
            print(profile_reference_step(steps=args.reps or 5, dense=dense) + "\n")
        return
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {unknown}; choose from {sorted(GROUPS)}")
    reps = args.reps or (5 if args.quick else 15)
    use(args.backend)  # every workload's tensors and parameters are made on this backend
    peer = torch_peer(args.threads) if args.backend == "numpy" else None
    print(f"minimoe bench: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, NumPy {np.__version__}, "
          f"minimoe {'plain path' if is_plain() else 'fast path'} ({num_threads()} threads), "
          + (f"PyTorch {peer[0].__version__} ({peer[0].get_num_threads()} threads)" if peer else "PyTorch not installed (no peer)"))
    rows = []
    header = f"{'case':<62} {'minimoe ms':>11} {'torch ms':>9} {'ratio':>6}"
    print(header + "\n" + "-" * len(header))
    for group in groups:
        cases = GROUPS[group](peer) if group == "engine" else GROUPS[group](peer, args.quick)
        for name, ours, theirs in cases:
            ours_ms, theirs_ms = paired_median_ms(_synchronised(ours, args.backend), theirs, reps)
            ratio = ours_ms / theirs_ms if theirs_ms else None
            rows.append({"group": group, "case": name, "minimoe_ms": ours_ms, "torch_ms": theirs_ms, "ratio": ratio})
            print(f"{name:<62} {ours_ms:>11.1f} {theirs_ms or float('nan'):>9.1f} {ratio or float('nan'):>6.2f}", flush=True)
    with open(args.out, "w") as f:
        json.dump({"python": sys.version.split()[0], "numpy": np.__version__, "cores": os.cpu_count(), "reps": reps,
                   "backend": args.backend,
                   "threads": num_threads(), "plain": is_plain(),
                   "torch": peer[0].__version__ if peer else None, "results": rows}, f, indent=2)
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
