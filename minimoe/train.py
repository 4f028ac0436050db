"""Train the tiny MoE Transformer (or its dense twin) on the bundled corpus.

    python -m minimoe.train                          # the `laptop` preset, on the CPU
    python -m minimoe.train --preset ci --out runs/ci
    python -m minimoe.train --preset laptop --dense  # the dense twin of matched active compute
    python -m minimoe.train --out runs/ci --resume   # continue an interrupted run, bit for bit
    python -m minimoe.train --out runs/ci --resume --steps 120  # extend a run (a new cosine total)

One step: sample a batch, forward, loss = cross-entropy + the MoE layers' auxiliary losses (already
weighted by their coefficients), backward, clip the gradient norm, AdamW with warm-up and cosine
decay, then the router-bias update (DeepSeek-V3's aux-loss-free balancing; a no-op for other
routers). The run folder gets config.json, metrics.jsonl (one JSON object per logged step),
checkpoint.npz, PNG plots and sample.txt. `train(...)` does the same from Python (lesson 04).

No work is lost and no failure is hidden: every option and a resumed checkpoint are checked before
the first file is written; Ctrl-C (or SIGTERM) finishes the step, saves and prints the command that
resumes; a NaN or infinite loss or gradient norm stops the run at that step, before the update,
and no checkpoint with a non-finite value is ever written.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import resource
import shlex
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import backend
from . import functional as F
from . import rng as minimoe_rng
from .checkpoint import (Checkpoint, CheckpointError, NonFiniteError, check_config, load_checkpoint,
                         save_checkpoint)
from .config_checks import real_number, whole, whole_number
from .data import BatchSampler, CharTokenizer, eval_batches, load_corpus, split
from .models import ModelConfig, ModelSummary, Transformer, generate, model_summary
from .models.config import config_from_dict
from .optim import AdamW, clip_grad_norm, warmup_cosine
from .tensor import no_grad

CHECKPOINT, CONFIG, METRICS, SAMPLE = "checkpoint.npz", "config.json", "metrics.jsonl", "sample.txt"
# What a run writes (the PNGs are viz.save_run_plots'); --force replaces these and nothing else.
RUN_FILES = (CHECKPOINT, CONFIG, METRICS, SAMPLE, "loss.png", "expert_load.png", "dropped.png")
# What a crash while writing leaves behind (save_checkpoint's and _write_metrics's temporary files).
STALE_FILES = (CHECKPOINT + ".partial", METRICS + ".partial")
MAX_SAMPLE_LENGTH = 100_000  # characters one sample may ask for (a character costs a forward pass)
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000             # optimiser steps
    batch_size: int = 16          # sequences per step (each `context` characters long)
    lr: float = 3e-3              # peak learning rate
    min_lr_ratio: float = 0.1     # the cosine ends at min_lr_ratio * lr
    warmup_steps: int = 50        # linear warm-up from 0 (0: none, the peak rate from the first step)
    weight_decay: float = 0.01    # AdamW's decoupled decay
    grad_clip: float | None = 1.0  # max global gradient norm (None: no clipping, the norm still logged)
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
            whole_number(self, name, at_least=1)
        whole_number(self, "warmup_steps", at_least=0)
        whole_number(self, "seed", at_least=0, at_most=MAX_SEED)
        whole_number(self, "sample_length", at_least=0, at_most=MAX_SAMPLE_LENGTH)
        real_number(self, "lr", low=0, low_open=True)
        real_number(self, "min_lr_ratio", low=0, high=1)
        real_number(self, "weight_decay", low=0)
        if self.grad_clip is not None:
            real_number(self, "grad_clip", low=0, low_open=True)
        real_number(self, "temperature", low=0)  # 0: always the likeliest character
        if not isinstance(self.sample_prompt, str) or not self.sample_prompt:
            raise ValueError(f"TrainConfig.sample_prompt must be a non-empty str, got {self.sample_prompt!r}")
        try:
            CharTokenizer().encode(self.sample_prompt)
        except ValueError as err:
            raise ValueError(f"TrainConfig.sample_prompt: {err}") from None

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

def check_out_dir(out_dir: Path, resume: bool, force: bool) -> None:
    """Refuses a folder that holds files unless told how (resume or start over), and one that
    cannot be written; reads only, so a refusal leaves everything as it was."""
    if resume and force:
        raise ValueError("choose either resume (continue the run) or force (start it over), not both")
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a folder; choose another output folder")
    existing = next(p for p in (out_dir, *out_dir.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise FileExistsError(f"cannot make the run folder {out_dir}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write the run folder {out_dir}: no permission to write in {existing}")
    if resume:
        if not (out_dir / CHECKPOINT).is_file():
            raise FileNotFoundError(f"cannot resume: {out_dir / CHECKPOINT} does not exist; "
                                    "start a new run without --resume")
        return
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise FileExistsError(f"{out_dir} already exists and holds files; pass --resume to continue "
                              "the run in it, --force to start a new run there (replacing its files), "
                              "or choose another --out")


def _clear_out_dir(out_dir: Path, force: bool) -> list[str]:
    """Makes the folder; removes what a crash left (and, with force, the old run's files). Returns
    the names of the stale files it removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if force:
        for name in RUN_FILES:  # a run's own files only: anything else in the folder stays
            (out_dir / name).unlink(missing_ok=True)
    stale = [name for name in STALE_FILES if (out_dir / name).exists()]
    for name in stale:
        (out_dir / name).unlink()
    return stale


def read_metrics(run: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl (`run` is the folder or the file). A torn last line (a
    crash in the middle of writing it) is skipped with a warning; a bad line elsewhere is an error."""
    path = Path(run)
    path = path / METRICS if path.is_dir() else path
    lines = [(number, line) for number, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    records = []
    for position, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("not a record with a step")
        except ValueError as err:
            if position == len(lines) - 1:
                warnings.warn(f"{path}: skipped the torn last line {number} (the run stopped while "
                              "writing it)", stacklevel=2)
                break
            raise ValueError(f"{path}, line {number}, is not a metric record ({err}); remove the line "
                             "or start the run again") from None
        records.append(record)
    return records


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


# ---- checkpoints of a run: what they must hold ---------------------------------------------------

def read_checkpoint(path) -> tuple[Checkpoint, ModelConfig, TrainConfig]:
    """A run's checkpoint with its configs, checked: valid configs, 0 <= step <= steps, the random
    states and the optimiser's step count there. Anything wrong raises CheckpointError naming the
    file. (The shapes are checked against the model by `check_parameters`.)"""
    path = Path(path)
    checkpoint = load_checkpoint(path)
    configs = []
    for section, kind in (("model", ModelConfig), ("train", TrainConfig)):
        try:
            configs.append(kind.from_dict(checkpoint.config[section]))
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"checkpoint {path}: its {section} config is not valid ({err})") from None
    model_config, train_config = configs
    if not 0 <= checkpoint.step <= train_config.steps:
        raise CheckpointError(f"checkpoint {path}: step {checkpoint.step} is outside 0..{train_config.steps} "
                              "(the run's step count)")
    for name in ("sampler", "host"):
        state = checkpoint.state.get(name)
        try:
            np.random.PCG64().state = state  # what the run's generators are; refuses anything else
        except (TypeError, ValueError, KeyError) as err:
            raise CheckpointError(f"checkpoint {path}: the {name} random state is missing or not a PCG64 "
                                  f"state ({type(err).__name__}: {err}); it cannot resume bit for bit") from None
    step_count = checkpoint.optimizer_state.get("step_count")  # its absence: see check_optimizer_state
    if step_count is not None and (np.shape(step_count) != () or int(step_count) != checkpoint.step):
        raise CheckpointError(f"checkpoint {path}: the optimiser's step count (optim/step_count) is "
                              f"{step_count}, not the checkpoint's step {checkpoint.step}")
    return checkpoint, model_config, train_config


def check_parameters(path, checkpoint: Checkpoint, model) -> None:
    """The checkpoint holds exactly the model's parameters, each of its shape."""
    expected = {name: p.shape for name, p in model.named_parameters()}
    _check_entries(path, "model", checkpoint.model_state, expected)


def check_optimizer_state(path, checkpoint: Checkpoint, model_config: ModelConfig, train_config: TrainConfig,
                          batch) -> None:
    """The checkpoint holds exactly the optimiser state a run has after `checkpoint.step` steps.
    Which parameters get a gradient, and what the optimiser keeps for each, is the optimiser's
    business: so ask it, by one step of a throwaway model on `batch`."""
    model = Transformer(model_config)
    optimizer = AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    if checkpoint.step > 0:
        x, y, _ = batch
        (F.cross_entropy(model(x), model.as_ids(y)) + model.aux_loss()).backward()
        optimizer.step()
    expected = {name: tuple(np.shape(a)) for name, a in optimizer.state_dict().items()}
    _check_entries(path, "optim", checkpoint.optimizer_state, expected)


def _check_entries(path, prefix: str, arrays: dict, expected: dict) -> None:
    missing, unexpected = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    wrong = [f"{prefix}/{name} has shape {tuple(np.shape(arrays[name]))}, expected {expected[name]}"
             for name in sorted(set(arrays) & set(expected)) if tuple(np.shape(arrays[name])) != expected[name]]
    problems = ([f"it lacks {', '.join(prefix + '/' + n for n in missing[:4])}" + (" ..." if len(missing) > 4 else "")]
                if missing else [])
    problems += [f"unexpected {', '.join(prefix + '/' + n for n in unexpected[:4])}"] if unexpected else []
    problems += wrong[:4]
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit the model of its own config: {'; '.join(problems)}")


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

class TrainingDiverged(RuntimeError):
    """A loss, gradient or weight became NaN or infinite; the step was not applied and nothing
    non-finite was saved."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run after a whole step, saved; the message says how to resume."""


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
    schedule_change: dict | None = None  # set when a resumed run's step count was raised

    @cached_property
    def summary(self) -> ModelSummary:
        return model_summary(self.model_config)

    @property
    def tokens_per_step(self) -> int:
        return self.train_config.batch_size * self.model_config.context

    def learning_rate(self, step: int, total_steps: int | None = None) -> float:
        tc = self.train_config
        return warmup_cosine(step, tc.lr, tc.warmup_steps, total_steps or tc.steps, tc.min_lr_ratio)

    def checkpoint(self) -> Checkpoint:
        configs = {"model": self.model_config.to_dict(), "train": self.train_config.to_dict()}
        return Checkpoint(self.model.state_dict(), configs, self.step, self.optimizer.state_dict(),
                          _random_state(self.sampler))


def _configs(checkpoint: Checkpoint | None, model_config, train_config):
    """The configs of the run: the checkpoint's when resuming (any given here must match them)."""
    for given, kind in ((model_config, ModelConfig), (train_config, TrainConfig)):
        if given is not None and not isinstance(given, kind):
            raise TypeError(f"expected a {kind.__name__} (or None when resuming), got {type(given).__name__}")
    if checkpoint is not None:
        for what, given in (("model", model_config), ("train", train_config)):
            if given is not None:
                check_config(checkpoint, given.to_dict(), what)
        return None
    if model_config is None or train_config is None:
        raise ValueError("a new run needs a model_config and a train_config (for example from PRESETS)")
    return model_config, train_config


def build_run(model_config, train_config, out_dir: Path, resume: bool, steps: int | None = None) -> Run:
    """The model, optimiser and data of a new run, or of the run saved in `out_dir` (its checkpoint
    checked whole first). Writes nothing. `steps` raises a resumed run's step count: the cosine
    schedule is then the one of the new total (`run.schedule_change` says how the rate jumps)."""
    out_dir = Path(out_dir)
    path = out_dir / CHECKPOINT
    steps = None if steps is None else whole(steps, "steps")
    checkpoint = None
    if resume:
        checkpoint, mc, tc = read_checkpoint(path)
        _configs(checkpoint, model_config, train_config)
    else:
        mc, tc = _configs(None, model_config, train_config)
    train_text, val_text = split(load_corpus())
    val = eval_batches(val_text.ids, val_text.domains, tc.batch_size, mc.context, tc.eval_batches)
    if checkpoint is not None:
        check_optimizer_state(path, checkpoint, mc, tc, val[0])
    minimoe_rng.manual_seed(tc.seed)
    model = Transformer(mc)
    optimizer = AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sampler = BatchSampler(train_text.ids, train_text.domains, tc.batch_size, mc.context, tc.seed)
    run = Run(mc, tc, out_dir, model, optimizer, sampler, val, records=[])
    if checkpoint is not None:
        check_parameters(path, checkpoint, model)
        model.load_state_dict(checkpoint.model_state)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        _restore_random_state(checkpoint.state, sampler)
        run.step = checkpoint.step
        if steps is not None and steps != tc.steps:
            if steps < tc.steps:
                raise ValueError(f"resuming can raise the run's step count, not lower it: it is {tc.steps}, "
                                 f"asked for {steps}")
            run.train_config = dataclasses.replace(tc, steps=steps)
            run.schedule_change = {"steps_before": tc.steps, "steps_after": steps,
                                   "lr_before": run.learning_rate(run.step, tc.steps),
                                   "lr_after": run.learning_rate(run.step)}
    elif steps is not None:
        raise ValueError("steps= raises the step count of a resumed run; a new run takes it from its TrainConfig")
    return run


def start_run(run: Run, resumed: bool, force: bool = False) -> list[str]:
    """The run's first writes: the folder, config.json and metrics.jsonl (a resumed run's records
    after its checkpoint dropped). Returns the stale temporary files it removed."""
    out_dir = run.out_dir
    records = []
    if resumed:
        if (out_dir / METRICS).is_file():
            # A run that stopped after its last checkpoint logged steps it will now redo: drop them.
            records = [r for r in read_metrics(out_dir) if r["step"] <= run.step]
        else:
            warnings.warn(f"{out_dir / METRICS} is missing: the resumed run's metrics start at step {run.step}",
                          stacklevel=2)
    if not resumed:  # before any file is touched: the first forward pass is where a model too big fails
        records = [{"step": 0, "tokens": 0, "flops": 0.0, "val_loss": evaluate(run.model, run.val_batches)}]
    stale = _clear_out_dir(out_dir, force)
    if not resumed or run.schedule_change:
        (out_dir / CONFIG).write_text(json.dumps(run.checkpoint().config, indent=2) + "\n")
    run.records = records
    _write_metrics(out_dir / METRICS, records)
    return stale


def open_run(model_config, train_config, out_dir: Path, resume: bool) -> Run:
    """`build_run`, then `start_run`: a run ready for its first step."""
    run = build_run(model_config, train_config, out_dir, resume)
    start_run(run, resume)
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
    """One optimiser step; returns its metric record. A non-finite loss or gradient norm (one
    reduction, which clipping computes anyway) raises TrainingDiverged before the update."""
    model, optimizer, tc = run.model, run.optimizer, run.train_config
    tick = time.perf_counter()
    optimizer.lr = run.learning_rate(run.step)
    x, y, _ = run.sampler.sample()  # (B, T) each, on the host
    try:
        logits = model(x)  # (B, T, V)
    except ValueError as err:  # a router stops at non-finite logits: a run that diverged, said so
        if "NaN" not in str(err) and all(_is_finite(p.data) for p in model.parameters()):
            raise
        raise TrainingDiverged(_divergence_message(run, run.step + 1, None, f"in the forward pass: {err}")) from None
    lm_loss = F.cross_entropy(logits, model.as_ids(y))
    aux_loss = model.aux_loss()  # the MoE layers' balancing (and z-) losses, times their coefficients
    optimizer.zero_grad()
    (lm_loss + aux_loss).backward()
    grad_norm = clip_grad_norm(optimizer.params, tc.grad_clip)
    # .item() copies a number to the host: a sync point on a GPU, once per step.
    train_loss, aux = lm_loss.item(), aux_loss.item()
    if not (math.isfinite(grad_norm) and math.isfinite(train_loss) and math.isfinite(aux)):
        raise TrainingDiverged(_divergence_message(run, run.step + 1, logits, f"train loss {train_loss}, auxiliary "
                                                   f"loss {aux}, gradient norm {grad_norm}"))
    optimizer.step()
    model.update_router_biases()
    run.step += 1
    tokens = run.step * run.tokens_per_step
    record = {"step": run.step, "train_loss": train_loss, "aux_loss": aux,
              "lr": optimizer.lr, "grad_norm": grad_norm,
              "tokens_per_s": round(run.tokens_per_step / (time.perf_counter() - tick), 1),
              "tokens": tokens, "flops": tokens * run.summary.training_flops_per_token}
    if run.schedule_change is not None:  # the first step after a resume that raised the step count
        record["schedule_change"], run.schedule_change = run.schedule_change, None
    if not run.model_config.dense:
        record["moe"] = _routing_record(model)  # before an evaluation overwrites the reports
    if run.step % tc.eval_every == 0 or run.step == tc.steps:
        record["val_loss"] = evaluate(model, run.val_batches)
    return record


def _is_finite(array) -> bool:
    return bool(backend.xp_of(array).isfinite(array).all())


def _divergence_message(run: Run, step: int, logits, values: str) -> str:
    """Names the step, the first non-finite weight, activation or gradient, and what to try."""
    params = list(run.model.named_parameters())
    culprit = next((f"parameter {name}" for name, p in params if not _is_finite(p.data)), None)
    if culprit is None and logits is not None and not _is_finite(logits.data):
        culprit = "the output logits (an activation; the weights are finite but too large)"
    culprit = culprit or next((f"gradient of {name}" for name, p in params
                               if p.grad is not None and not _is_finite(p.grad)),
                              "an activation" if logits is None else "the auxiliary loss")
    tc = run.train_config
    clipping = ("clipping (grad_clip is None: off)" if tc.grad_clip is None
                else f"a smaller grad_clip ({tc.grad_clip:g})")
    return (f"training diverged at step {step} ({values}); first non-finite value: {culprit}. "
            f"The step was not applied and no checkpoint holds it. Try a lower learning rate (lr is "
            f"{tc.lr:g}), a longer warm-up (warmup_steps is {tc.warmup_steps}) or {clipping}, "
            "then start the run again with --force")


def _save(run: Run) -> None:
    try:
        save_checkpoint(run.out_dir / CHECKPOINT, run.checkpoint())
    except NonFiniteError as err:  # a finite step gave non-finite weights (an enormous update)
        raise TrainingDiverged(_divergence_message(run, run.step, None, str(err))) from None


@contextlib.contextmanager
def _stop_requests():
    """While open, SIGINT (Ctrl-C) and SIGTERM are noted in the yielded list instead of stopping the
    process at once, so the run can finish its step and save; a second signal acts as usual."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():  # only there can Python catch signals
        yield received
        return

    def note(signum, frame):
        received.append(signal.Signals(signum).name)
        for number, handler in previous.items():
            signal.signal(number, handler)

    previous = {number: signal.signal(number, note) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def resume_command(out_dir, backend_name: str = "numpy") -> str:
    """The command line that continues the run in `out_dir`."""
    command = f"python -m minimoe.train --out {shlex.quote(str(out_dir))} --resume"
    return command + (f" --backend {backend_name}" if backend_name != "numpy" else "")


def train(model_config: ModelConfig | None, train_config: TrainConfig | None, out_dir, *,
          backend_name: str | None = None, resume: bool = False, force: bool = False,
          steps: int | None = None, stop_at: int | None = None, progress: bool = True,
          verbose: bool = True, plots: bool = True) -> dict:
    """Trains, writing the run folder `out_dir`; returns a summary dict (with the model).

    backend_name picks the array library (default: the current one, see `minimoe.use`).
    resume=True continues the run saved in `out_dir` (configs given here must match the saved
    ones; pass None to take them from the checkpoint); steps=N then raises its step count to N.
    stop_at=k saves a checkpoint after step k and returns, as if the run had been interrupted there
    (how the tests check resuming). plots=False skips the PNGs (and importing matplotlib).

    Everything is checked (configs, folder, checkpoint) before the first file is written. SIGINT or
    SIGTERM finishes the step, saves and raises TrainingInterrupted; a NaN or infinite loss,
    gradient or weight raises TrainingDiverged and leaves the last good checkpoint as it was.
    """
    out_dir = Path(out_dir)
    if stop_at is not None:
        whole(stop_at, "stop_at")
    backend_name = backend_name or backend.current()
    backend.use(backend_name)  # first: an unusable backend should fail before any folder is made
    check_out_dir(out_dir, resume, force)
    run = build_run(model_config, train_config, out_dir, resume, steps)
    stale = start_run(run, resume, force)
    tc = run.train_config
    if verbose:
        print(f"{'dense' if run.model_config.dense else 'MoE'} model: {run.summary}\n"
              f"{tc.steps} steps of {tc.batch_size} x {run.model_config.context} tokens on {backend_name}; "
              f"writing to {out_dir}" + (f" (resuming after step {run.step})" if run.step else ""))
        if stale:
            print(f"removed {', '.join(stale)}, left by a run that stopped while writing")
        if run.schedule_change:
            change = run.schedule_change
            print(f"step count raised from {change['steps_before']} to {change['steps_after']}: the learning "
                  f"rate goes from {change['lr_before']:.3g} to {change['lr_after']:.3g}")
    began = time.perf_counter()
    # disable=None: the bar shows in a terminal or notebook, and stays out of logs and pipes.
    bar = tqdm(total=tc.steps, initial=run.step, disable=None if progress else True,
               desc="training", unit="step")
    with _stop_requests() as stop, open(out_dir / METRICS, "a") as metrics_file, contextlib.closing(bar):
        while run.step < tc.steps and run.step != stop_at and not stop:
            try:
                record = train_step(run)
            except TrainingDiverged as err:
                saved = f"{out_dir / CHECKPOINT} (the last good one) is as it was" \
                    if (out_dir / CHECKPOINT).is_file() else "no checkpoint was written"
                raise TrainingDiverged(f"{err}; {saved}") from None
            if run.step % tc.log_every == 0 or "val_loss" in record or "schedule_change" in record:
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                run.records.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", tok_s=f"{record['tokens_per_s']:,.0f}")
            if run.step % tc.checkpoint_every == 0 or run.step in (tc.steps, stop_at) or stop:
                _save(run)
    if stop and run.step < tc.steps:
        raise TrainingInterrupted(f"stopped by {stop[0]} after step {run.step} of {tc.steps}, saved in "
                                  f"{out_dir / CHECKPOINT}; continue with:\n  {resume_command(out_dir, backend_name)}")
    result = _result(run, time.perf_counter() - began)
    if run.step == tc.steps:  # finished (not stopped early): plots and a sample
        _finish(run, result, plots, verbose)
    return result


def _result(run: Run, wall: float) -> dict:
    val_losses = [(r["step"], r["val_loss"]) for r in run.records if "val_loss" in r]
    return {"out_dir": str(run.out_dir), "steps": run.step, "wall_time_s": wall,
            "peak_memory_mib": peak_memory_mib(), "summary": run.summary,
            "model": run.model, "records": run.records, "val_losses": val_losses,
            "final_val_loss": val_losses[-1][1] if val_losses else None,
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
        losses = result["val_losses"]
        change = (f"validation loss {losses[0][1]:.3f} -> {losses[-1][1]:.3f} nats per character"
                  if losses else "no validation loss recorded")
        print(f"{change} in {result['wall_time_s']:.0f} s; peak memory "
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
        epilog="The run folder gets config.json, metrics.jsonl, checkpoint.npz, PNG plots and sample.txt. "
               "Ctrl-C (or SIGTERM) finishes the step, saves and prints the --resume command (exit status 130).")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="model and training size: ci (under a minute), laptop (the default, "
                             "at most 10 minutes on 2 cores), gpu (larger, for --backend cupy)")
    parser.add_argument("--backend", choices=backend.KNOWN_BACKENDS, default="numpy",
                        help="array library: numpy (CPU), cupy (NVIDIA GPU), "
                             "strict (CuPy's rules on the CPU, for testing)")
    parser.add_argument("--dense", action="store_true", help="train the dense twin of matched active compute")
    parser.add_argument("--steps", type=_positive_int,
                        help="optimiser steps (default: the preset's); with --resume, raises the run's "
                             "step count (the cosine schedule is redefined for the new total)")
    parser.add_argument("--seed", type=int, help="random seed (default: the preset's, 0)")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<preset>-<moe|dense>)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out, bit for bit")
    parser.add_argument("--force", action="store_true",
                        help="start a new run in an --out that exists, replacing its files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _error_line(err: OSError) -> str:
    """One line for a file-system error: what failed, on which path (no traceback)."""
    if err.errno is None:  # one of this module's own refusals: its message says it all
        return str(err)
    paths = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
    return f"{err.strerror or err} ({paths})" if paths else f"{err.strerror or err}"


def main(argv=None) -> dict | None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        given = [f"--{name}" for name in ("preset", "seed") if getattr(args, name) is not None]
        given += ["--dense"] if args.dense else []
        if given or args.out is None:
            parser.error(f"--resume continues the run in --out exactly as it was configured: give --out "
                         f"and drop {' '.join(given) or 'nothing else'} (--steps may raise its step count)")
    try:
        if args.resume:
            model_config = train_config = None
        else:
            preset = args.preset or "laptop"
            model_config, train_config = PRESETS[preset]
            model_config = model_config.dense_twin() if args.dense else model_config
            overrides = {name: getattr(args, name) for name in ("steps", "seed") if getattr(args, name) is not None}
            train_config = dataclasses.replace(train_config, **overrides)  # checks every field
            args.out = args.out or Path("runs") / f"{preset}-{'dense' if args.dense else 'moe'}"
        return train(model_config, train_config, args.out, backend_name=args.backend, resume=args.resume,
                     force=args.force, steps=args.steps if args.resume else None, progress=not args.no_progress)
    except TrainingInterrupted as stop:
        print(stop, file=sys.stderr)
        raise SystemExit(130) from None
    except TrainingDiverged as err:
        parser.exit(1, f"{parser.prog}: {err}\n")
    except OSError as err:
        parser.exit(2 if err.errno is None else 1, f"{parser.prog}: error: {_error_line(err)}\n")
    except (ValueError, RuntimeError, TypeError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except MemoryError as err:
        parser.exit(1, f"{parser.prog}: error: out of memory ({err}); try a smaller batch_size, context or model\n")


if __name__ == "__main__":
    main()
