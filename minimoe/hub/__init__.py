"""Hugging Face checkpoints in and out: `load_pretrained` reads a Mixtral, OLMoE, Qwen2-MoE or
DeepSeek-V3 directory (config.json and safetensors shards) into a minimoe Transformer,
`save_pretrained` writes a minimoe model as a directory transformers loads, and `load_tokenizer`
reads its tokenizer.json with the `tokenizers` library. One file per architecture holds its
name map."""
from pathlib import Path

from .download import local_folder
from .files import CheckpointFormatError
from .hf_config import UnsupportedCheckpoint
from .load import ARCHITECTURES, load_pretrained, read_config
from .save import architecture_for, save_pretrained

__all__ = ["ARCHITECTURES", "CheckpointFormatError", "UnsupportedCheckpoint", "architecture_for", "load_pretrained",
           "load_tokenizer", "read_config", "save_pretrained"]


def load_tokenizer(path):
    """The `tokenizers.Tokenizer` of the checkpoint in `path` (a folder or a hub id), or None where it
    has no tokenizer.json."""
    file = local_folder(path) / "tokenizer.json"
    if not file.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(file))
