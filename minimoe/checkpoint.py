"""Checkpoints as `.npz` files: arrays and JSON strings only, so loading never runs pickled code.

One file holds everything a run needs to continue exactly where it stopped:

    model/<name>    the model's parameters (host copies, by `named_parameters` name)
    optim/<name>    the optimiser's buffers (AdamW's m and v, its step count)
    step            optimiser steps done (0-d int64)
    config          JSON of {"model": ModelConfig, "train": TrainConfig} (0-d unicode array)
    state           JSON of the random states: batch sampler, minimoe.rng (0-d unicode array)
    format          the layout's version (0-d int64)

Saving writes a temporary file beside the target and renames it over the target (`os.replace`
is atomic), so a save that is interrupted leaves the previous checkpoint whole; a checkpoint that
would hold a NaN or an infinity is not written at all. Loading checks the layout before anything
is trusted, and every refusal names the file and what is wrong.
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib
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


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and what is wrong."""


class NonFiniteError(ValueError):
    """A checkpoint would hold NaN or infinity: it is never written."""


def _non_finite_entries(arrays: dict) -> list[str]:
    """The names of the float arrays that hold a NaN or an infinity."""
    return [name for name, a in arrays.items()
            if np.asarray(a).dtype.kind == "f" and not np.isfinite(a).all()]


def save_checkpoint(path, checkpoint: Checkpoint) -> None:
    """Writes `checkpoint` to `path` atomically (temporary file, then `os.replace`). Refuses
    (NonFiniteError, before writing anything) a checkpoint with a NaN or infinite value, so the
    last good checkpoint of a run that diverged is never replaced by a useless one."""
    path = Path(path)
    arrays = {f"model/{name}": np.asarray(a) for name, a in checkpoint.model_state.items()}
    arrays.update({f"optim/{name}": np.asarray(a) for name, a in checkpoint.optimizer_state.items()})
    bad = _non_finite_entries(arrays)
    if bad:
        raise NonFiniteError(f"not saving {path}: {_listed(bad)} hold NaN or infinite values")
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
    """Reads a checkpoint written by `save_checkpoint` and checks its layout: every entry there,
    of the right kind, the configs JSON objects with a model and a train section, every number
    finite. A file that fails raises CheckpointError (a ValueError) naming the file and the problem
    (FileNotFoundError when there is no file). What the configs say is checked by the caller, which
    knows the model (see `minimoe.train.read_checkpoint`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    arrays = _read_arrays(path)
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing or not any(name.startswith("model/") for name in arrays):
        raise CheckpointError(f"checkpoint {path} lacks {missing or ['model/* (the parameters)']}: it "
                              "was not written by minimoe.checkpoint.save_checkpoint")
    for key in ("step", "format"):
        if arrays[key].shape != () or arrays[key].dtype.kind not in "iu":
            raise CheckpointError(f"checkpoint {path}: entry {key!r} must be one integer, got "
                                  f"{arrays[key].dtype} of shape {arrays[key].shape}")
    if int(arrays["format"]) != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {int(arrays['format'])}; this minimoe "
                              f"reads format {FORMAT_VERSION}")
    if int(arrays["step"]) < 0:
        raise CheckpointError(f"checkpoint {path}: step {int(arrays['step'])} is negative")
    numbers = {name: a for name, a in arrays.items() if name.startswith(("model/", "optim/"))}
    wrong_kind = [name for name, a in numbers.items() if a.dtype.kind not in "biuf"]
    if wrong_kind:
        raise CheckpointError(f"checkpoint {path}: {_listed(wrong_kind)} are not numeric arrays")
    bad = _non_finite_entries(numbers)
    if bad:
        raise CheckpointError(f"checkpoint {path}: {_listed(bad)} hold NaN or infinite values (the run "
                              "had diverged); use an earlier copy, or train again with a lower learning rate")
    config = _json(path, arrays, "config")
    for section in ("model", "train"):
        if not isinstance(config.get(section), dict):
            raise CheckpointError(f"checkpoint {path}: its config lacks the {section!r} section (a JSON "
                                  f"object of the {section} config's fields)")
    return Checkpoint(
        model_state=_with_prefix(arrays, "model/"),
        optimizer_state=_with_prefix(arrays, "optim/"),
        step=int(arrays["step"]),
        config=config,
        state=_json(path, arrays, "state"),
    )


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    problem = f"checkpoint {path} is corrupt or truncated and cannot be read"
    fix = "restore a copy or train again with --force"
    if not zipfile.is_zipfile(path):  # before np.load, which would try other formats (and pickle)
        raise CheckpointError(f"{problem}: it is not an .npz archive; {fix}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}  # reads every entry now
    except ValueError as err:
        if "pickle" in str(err):  # an entry of Python objects, which a checkpoint never holds
            raise CheckpointError(f"checkpoint {path} holds an entry of Python objects, which a "
                                  f"checkpoint never does; {fix}") from None
        raise CheckpointError(f"{problem} ({err}); {fix}") from err
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise CheckpointError(f"{problem} ({err}); {fix}") from err


def _listed(names: list[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


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
    array = arrays[key]
    if array.shape != () or array.dtype.kind != "U":
        raise CheckpointError(f"checkpoint {path}: entry {key!r} must be a JSON string, got {array.dtype} "
                              f"of shape {array.shape}")
    try:
        value = json.loads(str(array))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint {path}: entry {key!r} is not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise CheckpointError(f"checkpoint {path}: entry {key!r} must be a JSON object, got {type(value).__name__}")
    return value
