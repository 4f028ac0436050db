"""Checkpoints as `.npz` files: arrays and JSON strings only, so loading never runs pickled code.

One file holds everything a run needs to continue exactly where it stopped:

    model/<name>    the model's parameters (host copies, by `named_parameters` name)
    optim/<name>    the optimiser's buffers (AdamW's m and v, its step count)
    step            optimiser steps done (0-d int64)
    config          JSON of {"model": ModelConfig, "train": TrainConfig} (0-d unicode array)
    state           JSON of the random states: batch sampler, minimoe.rng (0-d unicode array)
    format          the layout's version (0-d int64)

Saving writes a temporary file beside the target and renames it over the target (`os.replace`
is atomic), so a save that is interrupted leaves the previous checkpoint whole.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
REQUIRED_KEYS = ("step", "config", "state", "format")


@dataclass
class Checkpoint:
    model_state: dict[str, np.ndarray]
    config: dict  # {"model": {...}, "train": {...}}
    step: int = 0
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict)
    state: dict = field(default_factory=dict)  # JSON-able random states


def save_checkpoint(path, checkpoint: Checkpoint) -> None:
    """Writes `checkpoint` to `path` atomically (temporary file, then `os.replace`)."""
    path = Path(path)
    arrays = {f"model/{name}": np.asarray(a) for name, a in checkpoint.model_state.items()}
    arrays.update({f"optim/{name}": np.asarray(a) for name, a in checkpoint.optimizer_state.items()})
    arrays["step"] = np.asarray(checkpoint.step, dtype=np.int64)
    arrays["config"] = np.asarray(json.dumps(checkpoint.config, sort_keys=True))  # 0-d unicode
    arrays["state"] = np.asarray(json.dumps(checkpoint.state, sort_keys=True))
    arrays["format"] = np.asarray(FORMAT_VERSION, dtype=np.int64)
    temporary = path.with_name(path.name + ".partial")
    try:
        with open(temporary, "wb") as file:  # a file object, so NumPy does not append ".npz"
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())  # on disk before the rename makes it the checkpoint
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path) -> Checkpoint:
    """Reads a checkpoint written by `save_checkpoint`; a missing, corrupt or truncated file, or
    one that lacks an entry, raises ValueError (FileNotFoundError when absent) naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}  # reads every entry now
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"checkpoint {path} is corrupt or truncated and cannot be read ({err}); "
                         "restore a copy or train again with --force") from err
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing or not any(name.startswith("model/") for name in arrays):
        raise ValueError(f"checkpoint {path} lacks {missing or ['model/* (the parameters)']}: it was "
                         "not written by minimoe.checkpoint.save_checkpoint")
    if int(arrays["format"]) != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format {int(arrays['format'])}; this minimoe reads "
                         f"format {FORMAT_VERSION}")
    return Checkpoint(
        model_state=_with_prefix(arrays, "model/"),
        optimizer_state=_with_prefix(arrays, "optim/"),
        step=int(arrays["step"]),
        config=_json(path, arrays, "config"),
        state=_json(path, arrays, "state"),
    )


def check_config(checkpoint: Checkpoint, expected: dict, what: str = "model") -> None:
    """Raises ValueError naming every field where the checkpoint's `what` config differs from
    `expected` (a `to_dict()`), before any weight is touched."""
    saved = checkpoint.config.get(what)
    if saved != expected:
        saved = saved or {}
        differences = [f"{key}: {saved.get(key, '<absent>')!r} in the checkpoint, "
                       f"{expected.get(key, '<absent>')!r} here"
                       for key in sorted(set(saved) | set(expected)) if saved.get(key) != expected.get(key)]
        raise ValueError(f"the checkpoint is from another {what} config ({'; '.join(differences)}); "
                         "build the model from the checkpoint's config, or train a new run")


def _with_prefix(arrays: dict, prefix: str) -> dict[str, np.ndarray]:
    return {name[len(prefix):]: a for name, a in arrays.items() if name.startswith(prefix)}


def _json(path: Path, arrays: dict, key: str) -> dict:
    try:
        return json.loads(str(arrays[key]))
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint {path}: entry {key!r} is not valid JSON ({err})") from err
