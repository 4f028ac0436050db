"""Train the tiny MoE Transformer (or its dense twin) on the bundled corpus.

    python -m minimoe.train                          # the `laptop` preset, on the CPU
    python -m minimoe.train --preset ci --out runs/ci
    python -m minimoe.train --preset laptop --dense  # the dense twin of matched active compute
    python -m minimoe.train --out runs/ci --resume   # continue an interrupted run, bit for bit

One step: sample a batch, forward, loss = cross-entropy + the MoE layers' auxiliary losses (already
weighted by their coefficients), backward, clip the gradient norm, AdamW with warm-up and cosine
decay, then the router-bias update (DeepSeek-V3's aux-loss-free balancing; a no-op for other
routers). The run folder gets config.json, metrics.jsonl (one JSON object per logged step),
checkpoint.npz, PNG plots and sample.txt. `train(...)` does the same from Python (lesson 04).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import backend
from . import functional as F
from . import rng as minimoe_rng
from .checkpoint import Checkpoint, check_config, load_checkpoint, save_checkpoint
from .data import BatchSampler, CharTokenizer, eval_batches, load_corpus, split
from .models import ModelConfig, ModelSummary, Transformer, generate, model_summary
from .models.config import config_from_dict
from .optim import AdamW, clip_grad_norm, warmup_cosine
from .tensor import no_grad

CHECKPOINT, CONFIG, METRICS, SAMPLE = "checkpoint.npz", "config.json", "metrics.jsonl", "sample.txt"
# What a run writes (the PNGs are viz.save_run_plots'); --force replaces these and nothing else.
RUN_FILES = (CHECKPOINT, CONFIG, METRICS, SAMPLE, "loss.png", "expert_load.png", "dropped.png")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000             # optimiser steps
    batch_size: int = 16          # sequences per step (each `context` characters long)
    lr: float = 3e-3              # peak learning rate
    min_lr_ratio: float = 0.1     # the cosine ends at min_lr_ratio * lr
    warmup_steps: int = 50        # linear warm-up from 0
    weight_decay: float = 0.01    # AdamW's decoupled decay
    grad_clip: float = 1.0        # max global gradient norm
    eval_every: int = 100         # steps between validation passes (and one at step 0)
    eval_batches: int = 8         # fixed validation batches per pass
    log_every: int = 1            # steps between metric lines
    checkpoint_every: int = 250   # steps between checkpoints (and one at the end)
    seed: int = 0                 # weights, batches and every random draw
    sample_prompt: str = "def "   # the text the final sample continues
    sample_length: int = 300      # characters to generate at the end
    temperature: float = 0.8      # sampling temperature

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "eval_batches", "log_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a whole number of at least 1, got {value!r}")
        if not self.lr > 0 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"need lr > 0, warmup_steps >= 0 and 0 <= min_lr_ratio <= 1; got "
                             f"{self.lr}, {self.warmup_steps}, {self.min_lr_ratio}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return config_from_dict(cls, data)


# Timings on 2 CPU cores are in the project README.
PRESETS: dict[str, tuple[ModelConfig, TrainConfig]] = {
    "ci": (  # well under a minute: the tests train this one
        ModelConfig(d_model=32, n_layers=2, n_heads=4, context=32, n_experts=4, top_k=2, expert_hidden=64),
        TrainConfig(steps=60, batch_size=8, lr=1e-2, warmup_steps=5, eval_every=20, eval_batches=4,
                    checkpoint_every=20, sample_length=80),
    ),
    "laptop": (  # the default: at most 10 minutes on 2 cores
        ModelConfig(d_model=128, n_layers=4, n_heads=4, context=128, n_experts=8, top_k=2, expert_hidden=256),
        TrainConfig(steps=1000, batch_size=16, lr=3e-3, warmup_steps=50, eval_every=100, log_every=5),
    ),
    "gpu": (  # larger, for CuPy
        ModelConfig(d_model=384, n_layers=6, n_heads=6, context=256, n_experts=16, top_k=2,
                    expert_hidden=768),
        TrainConfig(steps=5000, batch_size=32, lr=1e-3, warmup_steps=200, eval_every=250, eval_batches=16,
                    log_every=10, checkpoint_every=500),
    ),
}


# ---- the run folder ----------------------------------------------------------------------------

def prepare_out_dir(out_dir: Path, resume: bool, force: bool) -> None:
    """Refuses to touch a folder that holds files unless told how: resume or start over."""
    if resume and force:
        raise ValueError("choose either resume (continue the run) or force (start it over), not both")
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a folder; choose another output folder")
    if resume:
        if not (out_dir / CHECKPOINT).is_file():
            raise FileNotFoundError(f"cannot resume: {out_dir / CHECKPOINT} does not exist; "
                                    "start a new run without --resume")
        return
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise FileExistsError(f"{out_dir} already exists and holds files; pass --resume to continue "
                              "the run in it, --force to start a new run there (replacing its files), "
                              "or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    if force:
        for name in RUN_FILES:  # a run's own files only: anything else in the folder stays
            (out_dir / name).unlink(missing_ok=True)


def read_metrics(run: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl (`run` is the folder or the file)."""
    path = Path(run)
    path = path / METRICS if path.is_dir() else path
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_metrics(path: Path, records: list[dict]) -> None:
    """Replaces the file in one step (temporary file, then rename), so no crash can lose it."""
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(temporary, path)


# ---- random state, for bit-for-bit resuming ---------------------------------------------------

def _random_state(sampler: BatchSampler) -> dict:
    state = {"sampler": sampler.state(), "host": minimoe_rng.host_rng().bit_generator.state}
    device = minimoe_rng.device_rng(backend.module())
    if hasattr(device, "bit_generator"):  # NumPy's generator; CuPy's cannot be saved as JSON
        state["device"] = device.bit_generator.state
    return state


def _restore_random_state(state: dict, sampler: BatchSampler) -> None:
    sampler.set_state(state["sampler"])
    minimoe_rng.host_rng().bit_generator.state = state["host"]
    device = minimoe_rng.device_rng(backend.module())
    if "device" in state and hasattr(device, "bit_generator"):
        device.bit_generator.state = state["device"]


# ---- evaluation and the step's record ----------------------------------------------------------

def evaluate(model: Transformer, batches) -> float:
    """Mean cross-entropy over fixed batches, without dropout or a graph; the model is left in the
    mode it was in."""
    was_training = model.training
    model.eval()
    with no_grad():
        losses = [F.cross_entropy(model(x), model.as_ids(y)).item() for x, y, _ in batches]
    model.train(was_training)
    return float(np.mean(losses))


def _routing_record(model: Transformer) -> list[dict]:
    return [{"load": np.round(backend.to_numpy(r.load), 5).tolist(),
             "dropped_fraction": float(r.dropped_fraction), "router_entropy": float(r.router_entropy),
             "max_logit": float(r.max_logit), "mean_logsumexp": float(r.mean_logsumexp), "losses": {k: float(v) for k, v in r.losses.items()}}
            for r in model.routing_reports()]


def peak_memory_mib() -> float:
    """The process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


# ---- the run: what lives between steps ----------------------------------------------------------

@dataclass
class Run:
    """A run in progress: the model and optimiser, the data, and the records so far."""

    model_config: ModelConfig
    train_config: TrainConfig
    out_dir: Path
    model: Transformer
    optimizer: AdamW
    sampler: BatchSampler
    val_batches: list
    records: list[dict]
    step: int = 0  # optimiser steps done
    seconds: float = 0.0  # time spent in train_step (set by train_in_memory)

    @cached_property
    def summary(self) -> ModelSummary:
        return model_summary(self.model_config)

    @property
    def tokens_per_step(self) -> int:
        return self.train_config.batch_size * self.model_config.context

    def checkpoint(self) -> Checkpoint:
        configs = {"model": self.model_config.to_dict(), "train": self.train_config.to_dict()}
        return Checkpoint(self.model.state_dict(), configs, self.step, self.optimizer.state_dict(),
                          _random_state(self.sampler))


def _configs(checkpoint: Checkpoint | None, model_config, train_config):
    """The configs of the run: the checkpoint's when resuming (any given here must match them)."""
    if checkpoint is not None:
        for what, given in (("model", model_config), ("train", train_config)):
            if given is not None:
                check_config(checkpoint, given.to_dict(), what)
        saved = checkpoint.config
        return ModelConfig.from_dict(saved["model"]), TrainConfig.from_dict(saved["train"])
    if model_config is None or train_config is None:
        raise ValueError("a new run needs a model_config and a train_config (for example from PRESETS)")
    return model_config, train_config


def open_run(model_config, train_config, out_dir: Path, resume: bool) -> Run:
    """Builds the model, optimiser and data of a new run, or restores them from its checkpoint."""
    checkpoint = load_checkpoint(out_dir / CHECKPOINT) if resume else None
    mc, tc = _configs(checkpoint, model_config, train_config)
    minimoe_rng.manual_seed(tc.seed)
    model = Transformer(mc)
    optimizer = AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    train_text, val_text = split(load_corpus())
    sampler = BatchSampler(train_text.ids, train_text.domains, tc.batch_size, mc.context, tc.seed)
    val = eval_batches(val_text.ids, val_text.domains, tc.batch_size, mc.context, tc.eval_batches)
    run = Run(mc, tc, out_dir, model, optimizer, sampler, val, records=[])
    if checkpoint is None:
        (out_dir / CONFIG).write_text(json.dumps(run.checkpoint().config, indent=2) + "\n")
        run.records = [{"step": 0, "tokens": 0, "flops": 0.0, "val_loss": evaluate(model, val)}]
    else:
        model.load_state_dict(checkpoint.model_state)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        _restore_random_state(checkpoint.state, sampler)
        run.step = checkpoint.step
        # A run that stopped after its last checkpoint logged steps it will now redo: drop them.
        run.records = [r for r in read_metrics(out_dir) if r["step"] <= run.step]
    _write_metrics(out_dir / METRICS, run.records)
    return run


def train_in_memory(model_config: ModelConfig, train_config: TrainConfig, setup=None, after_step=None) -> Run:
    """Trains for `train_config.steps` with no run folder to keep: what lessons and experiments
    call to compare configurations. `setup(run)` may change the run before the first step (swap a
    layer, say); `after_step(run)` is called after each step (to record a router's bias, say).
    Returns the `Run`, with a record of every step and `seconds`, the time spent training."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        run = open_run(model_config, train_config, Path(folder), resume=False)
        if setup is not None:
            setup(run)
        began = time.perf_counter()
        for _ in range(train_config.steps):
            run.records.append(train_step(run))
            if after_step is not None:
                after_step(run)
        run.seconds = time.perf_counter() - began
    return run


def train_step(run: Run) -> dict:
    """One optimiser step; returns its metric record."""
    model, optimizer, tc = run.model, run.optimizer, run.train_config
    tick = time.perf_counter()
    optimizer.lr = warmup_cosine(run.step, tc.lr, tc.warmup_steps, tc.steps, tc.min_lr_ratio)
    x, y, _ = run.sampler.sample()  # (B, T) each, on the host
    logits = model(x)  # (B, T, V)
    lm_loss = F.cross_entropy(logits, model.as_ids(y))
    aux_loss = model.aux_loss()  # the MoE layers' balancing (and z-) losses, times their coefficients
    optimizer.zero_grad()
    (lm_loss + aux_loss).backward()
    grad_norm = clip_grad_norm(optimizer.params, tc.grad_clip)
    optimizer.step()
    model.update_router_biases()
    run.step += 1
    tokens = run.step * run.tokens_per_step
    # .item() copies a number to the host: a sync point on a GPU, once per step.
    record = {"step": run.step, "train_loss": lm_loss.item(), "aux_loss": aux_loss.item(),
              "lr": optimizer.lr, "grad_norm": grad_norm,
              "tokens_per_s": round(run.tokens_per_step / (time.perf_counter() - tick), 1),
              "tokens": tokens, "flops": tokens * run.summary.training_flops_per_token}
    if not run.model_config.dense:
        record["moe"] = _routing_record(model)  # before an evaluation overwrites the reports
    if run.step % tc.eval_every == 0 or run.step == tc.steps:
        record["val_loss"] = evaluate(model, run.val_batches)
    return record


def train(model_config: ModelConfig | None, train_config: TrainConfig | None, out_dir, *,
          backend_name: str | None = None, resume: bool = False, force: bool = False,
          stop_at: int | None = None, progress: bool = True, verbose: bool = True,
          plots: bool = True) -> dict:
    """Trains, writing the run folder `out_dir`; returns a summary dict (with the model).

    backend_name picks the array library (default: the current one, see `minimoe.use`).
    resume=True continues the run saved in `out_dir` (configs given here must match the saved
    ones; pass None to take them from the checkpoint). stop_at=k saves a checkpoint after step k
    and returns, as if the run had been interrupted there (how the tests check resuming).
    plots=False skips the PNGs (and importing matplotlib, a second or two).
    """
    out_dir = Path(out_dir)
    backend_name = backend_name or backend.current()
    backend.use(backend_name)  # first: an unusable backend should fail before any folder is made
    prepare_out_dir(out_dir, resume, force)
    run = open_run(model_config, train_config, out_dir, resume)
    tc = run.train_config
    if verbose:
        print(f"{'dense' if run.model_config.dense else 'MoE'} model: {run.summary}\n"
              f"{tc.steps} steps of {tc.batch_size} x {run.model_config.context} tokens on {backend_name}; "
              f"writing to {out_dir}" + (f" (resuming after step {run.step})" if run.step else ""))
    began = time.perf_counter()
    # disable=None: the bar shows in a terminal or notebook, and stays out of logs and pipes.
    bar = tqdm(total=tc.steps, initial=run.step, disable=None if progress else True,
               desc="training", unit="step")
    with open(out_dir / METRICS, "a") as metrics_file:
        while run.step < tc.steps and run.step != stop_at:
            record = train_step(run)
            if run.step % tc.log_every == 0 or "val_loss" in record:
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                run.records.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", tok_s=f"{record['tokens_per_s']:,.0f}")
            if run.step % tc.checkpoint_every == 0 or run.step in (tc.steps, stop_at):
                save_checkpoint(out_dir / CHECKPOINT, run.checkpoint())
    bar.close()
    result = _result(run, time.perf_counter() - began)
    if run.step == tc.steps:  # finished (not stopped early): plots and a sample
        _finish(run, result, plots, verbose)
    return result


def _result(run: Run, wall: float) -> dict:
    val_losses = [(r["step"], r["val_loss"]) for r in run.records if "val_loss" in r]
    return {"out_dir": str(run.out_dir), "steps": run.step, "wall_time_s": wall,
            "peak_memory_mib": peak_memory_mib(), "summary": run.summary,
            "model": run.model, "records": run.records, "val_losses": val_losses,
            "final_val_loss": val_losses[-1][1],
            "train_losses": [r["train_loss"] for r in run.records if "train_loss" in r]}


def _finish(run: Run, result: dict, plots: bool, verbose: bool) -> None:
    tc = run.train_config
    if plots:
        from . import viz  # here: matplotlib takes a second or two to import

        viz.save_run_plots(run.records, run.out_dir)
    tokenizer = CharTokenizer()
    prompt = tokenizer.encode(tc.sample_prompt)
    ids = generate(run.model, prompt, tc.sample_length, tc.temperature, tc.seed)
    result["sample"] = tokenizer.decode(ids)
    (run.out_dir / SAMPLE).write_text(result["sample"] + "\n")
    if verbose:
        print(f"validation loss {result['val_losses'][0][1]:.3f} -> {result['final_val_loss']:.3f} "
              f"nats per character in {result['wall_time_s']:.0f} s; peak memory "
              f"{result['peak_memory_mib']:.0f} MiB\nplots, metrics and checkpoint in {run.out_dir}\n"
              f"--- sample ---\n{result['sample']}")


# ---- the command line ------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minimoe.train",
        description="Train the tiny MoE Transformer (or its dense twin) on the bundled corpus.",
        epilog="The run folder gets config.json, metrics.jsonl, checkpoint.npz, PNG plots and sample.txt.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="model and training size: ci (under a minute), laptop (the default, "
                             "at most 10 minutes on 2 cores), gpu (larger, for --backend cupy)")
    parser.add_argument("--backend", choices=backend.KNOWN_BACKENDS, default="numpy",
                        help="array library: numpy (CPU), cupy (NVIDIA GPU), "
                             "strict (CuPy's rules on the CPU, for testing)")
    parser.add_argument("--dense", action="store_true", help="train the dense twin of matched active compute")
    parser.add_argument("--steps", type=_positive_int, help="optimiser steps (default: the preset's)")
    parser.add_argument("--seed", type=int, help="random seed (default: the preset's, 0)")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<preset>-<moe|dense>)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out, bit for bit")
    parser.add_argument("--force", action="store_true",
                        help="start a new run in an --out that exists, replacing its files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> dict | None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        given = [f"--{name}" for name in ("preset", "steps", "seed") if getattr(args, name) is not None]
        given += ["--dense"] if args.dense else []
        if given or args.out is None:
            parser.error(f"--resume continues the run in --out exactly as it was configured: give --out "
                         f"and drop {' '.join(given) or 'nothing else'}")
        model_config = train_config = None
    else:
        preset = args.preset or "laptop"
        model_config, train_config = PRESETS[preset]
        model_config = model_config.dense_twin() if args.dense else model_config
        overrides = {name: getattr(args, name) for name in ("steps", "seed") if getattr(args, name) is not None}
        train_config = dataclasses.replace(train_config, **overrides)
        args.out = args.out or Path("runs") / f"{preset}-{'dense' if args.dense else 'moe'}"
    try:
        return train(model_config, train_config, args.out, backend_name=args.backend, resume=args.resume,
                     force=args.force, progress=not args.no_progress)
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")


if __name__ == "__main__":
    main()
