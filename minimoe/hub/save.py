"""`save_pretrained`: a minimoe Transformer as a Hugging Face checkpoint directory that
`transformers.AutoModelForCausalLM.from_pretrained` loads.

The architecture is the first of Mixtral, OLMoE, Qwen2-MoE and DeepSeek-V3 that expresses every option of
the model (a Mixtral-style model: RMSNorm, rotary positions, bias-free SwiGLU experts, top-k of
a renormalised softmax, no shared experts). The weights go in the per-expert layout that
transformers itself writes by default, as one `model.safetensors` in the model's dtype.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import deepseek_v3, mixtral, olmoe, qwen2_moe
from .hf_config import UnsupportedCheckpoint

EXPORT_ORDER = (mixtral, olmoe, qwen2_moe, deepseek_v3)


def architecture_for(config):
    """The first architecture that expresses `config`, or an error listing what each one lacks."""
    reasons = {}
    for arch in EXPORT_ORDER:
        problems = arch.export_problems_of(config)
        if not problems:
            return arch
        reasons[arch.MODEL_TYPE] = problems
    listed = "; ".join(f"{kind}: {', '.join(problems)}" for kind, problems in reasons.items())
    raise UnsupportedCheckpoint(f"no Hugging Face architecture matches this model's options ({listed}). Train with "
                                "the Mixtral-style options: norm='rms', positions='rotary', activation='swiglu', "
                                "ffn_bias=False")


def save_pretrained(model, path) -> Path:
    """Writes config.json and model.safetensors for `model` into directory `path` (made if needed)."""
    from safetensors.numpy import save_file

    config = model.config
    arch = architecture_for(config)
    params = {name: p.numpy() for name, p in model.named_parameters()}
    dtype = next(iter(params.values())).dtype
    tensors = {piece.source: np.ascontiguousarray(piece.from_engine(params[piece.target]))
               for piece in arch.pieces(config, available=())}
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    hf = dict(arch.config_to_hf(config), model_type=arch.MODEL_TYPE, architectures=[arch.ARCHITECTURE],
              dtype=str(dtype))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    return folder
