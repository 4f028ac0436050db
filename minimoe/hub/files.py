"""Which tensors a checkpoint directory holds, in which shard, with which shape and dtype.

A directory holds one `model.safetensors`, or shards listed by `model.safetensors.index.json`
(`weight_map`: tensor name -> shard file). Every shard's header is read (a few kilobytes, no
weights) before the model is built, so a missing shard, a truncated file or a tensor listed in
the index but absent from its shard is found before any memory is spent.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# dtypes of weights the loader converts (bf16 through ml_dtypes); fp8 is refused with its own message
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


class CheckpointFormatError(ValueError):
    """A checkpoint directory that cannot be read as it is (the message names the file and the fix)."""


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    shape: tuple
    dtype: str  # safetensors' spelling: "F32", "BF16", "F8_E4M3", ...


def safe_open(file: Path):
    """safetensors' memory-mapped reader, NumPy arrays out; a file it cannot parse is named."""
    import ml_dtypes  # noqa: F401  (registers bfloat16 with NumPy, so bf16 tensors can be read)
    from safetensors import safe_open as open_file

    try:
        return open_file(str(file), framework="np")
    except Exception as err:  # safetensors raises its own error types (a Rust panic for some files)
        raise CheckpointFormatError(f"{file} is not a readable safetensors file ({err}); it may be truncated or "
                                    "corrupt: download or write it again") from None


def tensor_table(folder: Path) -> dict[str, TensorInfo]:
    """name -> TensorInfo for every tensor of the checkpoint in `folder`."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointFormatError(f"{index} is not a safetensors index (a JSON object with a "
                                        f"'weight_map'): {err}") from None
        files = sorted(set(weight_map.values()))
        missing = [name for name in files if not (folder / name).is_file()]
        if missing:
            listed = [t for t, f in weight_map.items() if f == missing[0]][:3]
            raise CheckpointFormatError(f"the index {index.name} names shard(s) {missing} that are not in {folder} "
                                        f"(they hold {listed}...): download the missing shard(s)")
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
        if not files:
            raise CheckpointFormatError(f"{folder} has no *.safetensors file (and no {index.name}): minimoe reads "
                                        "safetensors checkpoints only (convert a PyTorch .bin with transformers first)")
        weight_map = None
    table = {}
    for name in files:
        with safe_open(folder / name) as f:
            for key in f.keys():
                piece = f.get_slice(key)
                table[key] = TensorInfo(folder / name, tuple(piece.get_shape()), piece.get_dtype())
    if weight_map is not None:
        absent = [t for t, f in weight_map.items() if t not in table or table[t].file.name != f]
        if absent:
            raise CheckpointFormatError(f"the index {index.name} lists {len(absent)} tensor(s) that are not in the shard it "
                                        f"names, first {absent[0]!r} in {weight_map[absent[0]]}: the shards and the "
                                        "index are from different downloads")
    return table
