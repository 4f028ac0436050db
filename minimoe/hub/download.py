"""A Hugging Face hub id (`allenai/OLMoE-1B-7B-0924`) where a folder is expected: downloaded on the
learner's machine through `huggingface_hub`, which caches it. Only what `load_pretrained` reads
is fetched: the JSON files (config, shard index, tokenizer) and the safetensors shards."""
from __future__ import annotations

import re
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as the hub spells repositories
FILES = ["*.json", "*.safetensors"]


def local_folder(path_or_id) -> Path:
    """`path_or_id` as a local folder: the folder itself if it exists, else the download of the hub
    id it names."""
    path = Path(path_or_id)
    if path.exists() or not HUB_ID.match(str(path_or_id)):
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"{path_or_id} is not a folder here; to download it as a Hugging Face hub id, "
                                "pip install huggingface_hub (or download it yourself and pass the folder)") from None
    try:
        return Path(snapshot_download(repo_id=str(path_or_id), allow_patterns=FILES))
    except Exception as err:  # no network, no such repository, no access: say both readings failed
        raise FileNotFoundError(f"{path_or_id} is not a folder here, and downloading it as a Hugging Face hub id "
                                f"failed ({type(err).__name__}: {err})") from None
