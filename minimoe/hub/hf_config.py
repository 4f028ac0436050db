"""Reading a Hugging Face `config.json`: the fields every Llama-style architecture shares, in
both spellings transformers has written (5.x: `rope_parameters` and `dtype`; older files on the
hub: top-level `rope_theta`, `rope_scaling` and `torch_dtype`), and refusing what the engine does
not compute (a scaled rotary, quantised weights, an activation other than SiLU) with the field
named, rather than loading a model that would give other numbers."""
from __future__ import annotations


class UnsupportedCheckpoint(ValueError):
    """A checkpoint option minimoe does not implement (the message names it)."""


def field(hf: dict, name: str, default=None, *, required: bool = True):
    if name in hf and hf[name] is not None:
        return hf[name]
    if required and default is None:
        raise UnsupportedCheckpoint(f"config.json has no {name!r}, which a {hf.get('model_type')} model needs")
    return default


def rope_theta(hf: dict, default: float) -> float:
    """theta of the rotary angles; a scaled rotary (YaRN, linear, dynamic) is refused."""
    parameters = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    kind = parameters.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise UnsupportedCheckpoint(f"rotary scaling {kind!r} (rope_parameters / rope_scaling) is not implemented; "
                                    "minimoe computes the plain rotary of RoFormer")
    return float(parameters.get("rope_theta", hf.get("rope_theta", default)))


def checkpoint_dtype(hf: dict) -> str | None:
    """The dtype the weights were saved in ("bfloat16", "float32", ...), if config.json says."""
    return hf.get("dtype") or hf.get("torch_dtype")


def context(hf: dict) -> int:
    """The longest sequence: max_position_embeddings, or a sliding window if that is shorter (within
    the window, sliding-window attention is plain causal attention, so it is exact)."""
    length = int(field(hf, "max_position_embeddings"))
    window = hf.get("sliding_window") if hf.get("use_sliding_window", True) else None
    return min(length, int(window)) if window else length


def common(hf: dict) -> dict:
    """ModelConfig fields every Llama-style checkpoint sets the same way."""
    if field(hf, "hidden_act", "silu", required=False) != "silu":
        raise UnsupportedCheckpoint(f"hidden_act={hf['hidden_act']!r}: minimoe's SwiGLU experts use SiLU only")
    d, heads = int(field(hf, "hidden_size")), int(field(hf, "num_attention_heads"))
    head_dim = hf.get("head_dim")
    if head_dim is not None and head_dim * heads != d:
        raise UnsupportedCheckpoint(f"head_dim={head_dim} with {heads} heads is not hidden_size={d}: "
                                    "minimoe's attention keeps heads * head_dim = d_model")
    if hf.get("quantization_config"):
        method = hf["quantization_config"].get("quant_method", "?")
        raise UnsupportedCheckpoint(f"the weights are quantised ({method}; DeepSeek-V3 is released in fp8 with block "
                                    "scales): minimoe loads float32, float16 and bfloat16 weights only, so dequantise "
                                    "them to bf16 first")
    return dict(vocab_size=int(field(hf, "vocab_size")), d_model=d, n_layers=int(field(hf, "num_hidden_layers")),
                n_heads=heads, n_kv_heads=int(hf.get("num_key_value_heads") or heads), context=context(hf),
                positions="rotary", norm="rms", norm_eps=float(field(hf, "rms_norm_eps", 1e-6, required=False)),
                tie_weights=bool(hf.get("tie_word_embeddings", False)), activation="swiglu", ffn_bias=False,
                router="topk", balance_loss=None, dropout=0.0)


def common_to_hf(config) -> dict:
    """The config.json fields of `common`, written the transformers 5 way."""
    return dict(vocab_size=config.vocab_size, hidden_size=config.d_model, num_hidden_layers=config.n_layers,
                num_attention_heads=config.n_heads, num_key_value_heads=config.kv_heads,
                max_position_embeddings=config.context, rms_norm_eps=config.norm_eps, hidden_act="silu",
                tie_word_embeddings=config.tie_weights, attention_dropout=0.0, use_cache=True,
                rope_parameters={"rope_theta": config.rope_theta, "rope_type": "default"},
                bos_token_id=None, eos_token_id=None, pad_token_id=None)


def export_problems(config, **wanted) -> list[str]:
    """The ModelConfig fields whose values an architecture cannot express, as 'field=value (needs x)'."""
    problems = [f"{name}={getattr(config, name)!r} (needs {value!r})"
                for name, value in wanted.items() if getattr(config, name) != value]
    if config.dense:
        problems.append("dense=True (needs an MoE model)")
    if config.capacity_factor is not None:
        problems.append(f"capacity_factor={config.capacity_factor!r} (needs None: the checkpoint's MoE drops no token)")
    return problems
