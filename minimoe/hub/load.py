"""`load_pretrained`: a Hugging Face checkpoint directory as a minimoe Transformer.

Every check runs before a weight is read (config fields, the name of every tensor, every shape
and dtype), and the weights are then streamed one tensor at a time from the memory-mapped
shards into the engine's arrays, each converted to the engine's dtype on the way (bfloat16 and
float16 through NumPy and ml_dtypes). Peak memory is the model in the engine's dtype plus about
one tensor (the model is built without a random start). A checkpoint that fails anywhere
raises; no half-loaded model is returned.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from .. import backend
from ..models import Transformer
from ..nn import Parameter
from . import deepseek_v3, mixtral, olmoe, qwen2_moe
from .download import local_folder
from .files import FLOAT_DTYPES, CheckpointFormatError, safe_open, tensor_table
from .hf_config import UnsupportedCheckpoint, checkpoint_dtype

ARCHITECTURES = {arch.MODEL_TYPE: arch for arch in (mixtral, olmoe, qwen2_moe, deepseek_v3)}
ENGINE_DTYPES = (np.float32, np.float64)
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers older transformers saved; recomputed here


def read_config(folder) -> tuple[object, dict]:
    """(the architecture's module, the parsed config.json) of a checkpoint directory."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a directory: pass the folder that holds config.json and the "
                                "*.safetensors files")
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json: a Hugging Face model directory has config.json "
                                "beside its *.safetensors files")
    try:
        hf = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointFormatError(f"{path} is not valid JSON ({err})") from None
    kind = hf.get("model_type") if isinstance(hf, dict) else None
    if kind not in ARCHITECTURES:
        raise UnsupportedCheckpoint(f"model_type {kind!r} in {path} is not supported; minimoe loads "
                                    f"{', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[kind], hf


def load_pretrained(path, dtype=None) -> Transformer:
    """The Mixtral, OLMoE, Qwen2-MoE or DeepSeek-V3 checkpoint in directory `path` as a minimoe
    `Transformer` in eval mode, its weights in `dtype` (float32 or float64; None: the checkpoint's
    own dtype if it is one of those, else float32 -- the engine does not compute in 16 bits).
    `path` may be a hub id (`owner/name`) where huggingface_hub is installed: it is downloaded."""
    folder = local_folder(path)
    arch, hf = read_config(folder)
    dtype = _engine_dtype(dtype, checkpoint_dtype(hf))
    config = arch.config_from_hf(hf)
    table = tensor_table(folder)
    pieces = arch.pieces(config, set(table))
    with _uninitialised_parameters(dtype):
        model = Transformer(config)
    params = dict(model.named_parameters())
    _check(pieces, table, {name: p.shape for name, p in params.items()})
    by_file = {}
    for piece in pieces:
        by_file.setdefault(table[piece.source].file, []).append(piece)
    for file, file_pieces in by_file.items():
        with safe_open(file) as f:
            for piece in file_pieces:
                target = params[piece.target].data
                array = piece.to_engine(f.get_tensor(piece.source))
                if piece.expert is None:
                    target[...] = array  # converts to the engine's dtype in the copy
                else:
                    target[piece.expert] = array
    if backend.current() != "numpy":  # onto the current backend (a GPU under minimoe.use("cupy"))
        for p in params.values():
            p.data = backend.asarray(p.data)  # one parameter at a time: a copy beside the host array
    return model.eval()


@contextlib.contextmanager
def _uninitialised_parameters(dtype):
    """While a model is built only to be overwritten by a checkpoint: its parameters are
    allocated in `dtype`, not drawn (no random start in memory beside the weights, no time spent
    drawing it, and the caller's random state untouched)."""
    factories = {name: Parameter.__dict__[name] for name in ("normal", "uniform", "constant")}
    allocate = classmethod(lambda cls, shape, *args, **options: cls(np.empty(shape, dtype=dtype)))
    for name in factories:
        setattr(Parameter, name, allocate)
    try:
        yield
    finally:
        for name, factory in factories.items():
            setattr(Parameter, name, factory)


def _engine_dtype(dtype, saved):
    if dtype is None:
        dtype = saved if saved in ("float32", "float64") else "float32"
    dtype = np.dtype(dtype)
    if dtype not in [np.dtype(d) for d in ENGINE_DTYPES]:
        raise ValueError(f"load_pretrained computes in float32 or float64, got dtype={dtype}; the 16-bit "
                         "weights are converted on load")
    return dtype


def _check(pieces, table, shapes) -> None:
    """Every parameter covered, every checkpoint tensor used, every shape and dtype right."""
    fp8 = next((name for name, info in table.items() if info.dtype.startswith("F8")), None)
    if fp8 is not None:
        raise UnsupportedCheckpoint(f"tensor {fp8!r} is {table[fp8].dtype} (fp8, as DeepSeek-V3 is released): "
                                    "minimoe does not dequantise fp8 block-scaled weights; use a bf16 copy")
    wanted = {piece.source for piece in pieces}
    missing = sorted(wanted - set(table))
    if missing:
        raise CheckpointFormatError(f"the checkpoint lacks {len(missing)} tensor(s) the model needs, first "
                                    f"{missing[:3]}: is the config.json from this checkpoint?")
    unused = sorted(name for name in set(table) - wanted if not name.endswith(IGNORED_SUFFIXES))
    if unused:
        raise UnsupportedCheckpoint(f"the checkpoint has {len(unused)} tensor(s) minimoe's model has no place for, "
                                    f"first {unused[:3]}: an option of this architecture that is not implemented")
    covered = {}
    for piece in pieces:
        info, shape = table[piece.source], shapes[piece.target]
        if info.dtype not in FLOAT_DTYPES:
            raise CheckpointFormatError(f"tensor {piece.source!r} has dtype {info.dtype}; weights must be one of "
                                        f"{FLOAT_DTYPES}")
        expected = piece.checkpoint_shape(shape)
        if info.shape != expected:
            raise CheckpointFormatError(f"tensor {piece.source!r} in {info.file.name} has shape {list(info.shape)}, "
                                        f"the config makes it {list(expected)} (for minimoe's {piece.target} of "
                                        f"shape {list(shape)}): the config.json and the weights do not match")
        covered[piece.target] = covered.get(piece.target, 0) + (1 if piece.expert is None else 1 / shape[0])
    uncovered = sorted(name for name in shapes if round(covered.get(name, 0), 6) != 1)
    if uncovered:  # a gap in an architecture's name map, not in the checkpoint
        raise AssertionError(f"the name map leaves parameters {uncovered[:3]} unread (or reads them twice)")
