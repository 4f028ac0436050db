"""Hugging Face checkpoints in and out (minimoe.hub), against transformers as the oracle.

For each architecture, a random-weight model made by transformers from a tiny config is saved
to a temporary directory and loaded by minimoe: the logits agree (float32: within 1e-5 of the
largest logit; float64: within 1e-6, the floor being transformers' own float32 casts of the
router softmax, the rotary tables, the RMSNorm and the attention softmax, about 1e-7 measured;
with those casts undone, within 1e-12),
every token chooses the same experts, and greedy generation of 20 tokens gives the same ids.
A minimoe model trained with the Hugging Face options goes the other way: exported, loaded by
transformers with the same logits, and loaded back by minimoe with bit-identical weights.
Bad directories fail with an error that names the problem. transformers and torch are test
oracles only: the tests that need them skip where they are not installed.
"""
import dataclasses
import json
import shutil

import numpy as np
import pytest

import minimoe as mm
from minimoe.hub import (CheckpointFormatError, UnsupportedCheckpoint, architecture_for, load_pretrained,
                         load_tokenizer, save_pretrained)
from minimoe.models import ModelConfig, Transformer, generate

pytest.importorskip("safetensors", reason="minimoe.hub reads safetensors files: pip install safetensors")
pytest.importorskip("ml_dtypes", reason="bfloat16 weights need ml_dtypes: pip install ml_dtypes")

VOCAB, LENGTH = 64, 12
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=64, initializer_range=0.1, bos_token_id=None, eos_token_id=None,
            pad_token_id=None)


def hf_configs(transformers):
    """A tiny config of each architecture, with the options that differ from the defaults."""
    return {
        "mixtral": transformers.MixtralConfig(**TINY, intermediate_size=24, num_local_experts=4,
                                              num_experts_per_tok=2, rope_parameters={"rope_theta": 1e6,
                                                                                     "rope_type": "default"}),
        "olmoe": transformers.OlmoeConfig(**TINY, intermediate_size=24, num_experts=4, num_experts_per_tok=2,
                                          norm_topk_prob=False),
        "olmoe-renormalised-biased": transformers.OlmoeConfig(**TINY, intermediate_size=24, num_experts=6,
                                                              num_experts_per_tok=3, norm_topk_prob=True,
                                                              attention_bias=True, tie_word_embeddings=True),
        "qwen2_moe": transformers.Qwen2MoeConfig(**TINY, intermediate_size=40, moe_intermediate_size=16,
                                                 shared_expert_intermediate_size=24, num_experts=4,
                                                 num_experts_per_tok=2, mlp_only_layers=[1]),
        "deepseek_v3": transformers.DeepseekV3Config(**dict(TINY, num_hidden_layers=3, num_key_value_heads=4),
                                                     **DEEPSEEK, q_lora_rank=None),
        "deepseek_v3-q-lora-plain-rotary": transformers.DeepseekV3Config(
            **dict(TINY, num_key_value_heads=4), **DEEPSEEK, q_lora_rank=12, rope_interleave=False,
            attention_bias=True),
    }


DEEPSEEK = dict(intermediate_size=40, moe_intermediate_size=12, n_shared_experts=2, n_routed_experts=8,
                routed_scaling_factor=2.5, kv_lora_rank=16, qk_rope_head_dim=4, v_head_dim=6, qk_nope_head_dim=8,
                n_group=4, topk_group=2, num_experts_per_tok=3, first_k_dense_replace=1)
ARCHITECTURES = ["mixtral", "olmoe", "olmoe-renormalised-biased", "qwen2_moe", "deepseek_v3",
                 "deepseek_v3-q-lora-plain-rotary"]


@pytest.fixture(scope="module")
def oracle():
    torch = pytest.importorskip("torch", reason="PyTorch is a test oracle: pip install torch")
    transformers = pytest.importorskip("transformers", reason="transformers is a test oracle: pip install transformers")
    return torch, transformers


def hf_model(oracle, name, folder, dtype="float32", **save_options):
    """A random-weight transformers model of architecture `name`, saved in `folder`."""
    torch, transformers = oracle
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_configs(transformers)[name])
    with torch.no_grad():
        for layer in model.model.layers:  # DeepSeek-V3's correction bias starts at 0: make it steer
            if hasattr(layer.mlp, "gate") and hasattr(layer.mlp.gate, "e_score_correction_bias"):
                layer.mlp.gate.e_score_correction_bias.normal_(0.0, 0.1)
    model = model.to(getattr(torch, dtype)).eval()
    model.save_pretrained(folder, **save_options)
    return model


def hf_reload(oracle, folder, dtype="float32"):
    torch, transformers = oracle
    return transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=getattr(torch, dtype), attn_implementation="eager", experts_implementation="eager").eval()


def hf_logits(oracle, model, ids):
    torch, _ = oracle
    with torch.no_grad():
        out = model(torch.as_tensor(ids), output_router_logits=True)
    return out.logits.numpy(), [r.numpy() for r in out.router_logits]


def relative(ours, theirs):
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def input_ids(seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, size=(2, LENGTH))


# ---- transformers -> minimoe ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("float64", 1e-6)])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_logits_experts_and_generation_match_transformers(oracle, tmp_path, name, dtype, tolerance):
    hf_model(oracle, name, tmp_path)
    theirs = hf_reload(oracle, tmp_path, dtype)
    ours = load_pretrained(tmp_path, dtype=dtype)
    assert ours.parameters()[0].dtype == np.dtype(dtype)
    ids = input_ids()
    logits, router_logits = hf_logits(oracle, theirs, ids)
    assert relative(ours(ids).numpy(), logits) < tolerance

    k = ours.config.top_k
    reports = ours.routing_reports()
    assert len(reports) == len(router_logits) == sum(ours.config.is_moe_layer(i) for i in range(ours.config.n_layers))
    for report, layer, scores in zip(reports, ours.moe_layers(), router_logits):
        assert np.array_equal(np.sort(report.expert_index.reshape(-1, k), axis=-1), hf_choice(layer, scores, k))

    torch, _ = oracle
    prompt = ids[0, :5]
    with torch.no_grad():
        hf_ids = theirs.generate(torch.as_tensor(prompt[None]), max_new_tokens=20, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)[0].numpy()
    assert np.array_equal(generate(ours, prompt, 20, temperature=0), hf_ids)


def hf_choice(layer, scores, k):
    """The experts transformers chose from its router logits (T, E), sorted per token: the top k
    of the softmax (which keeps the logits' order), or for DeepSeek-V3 the top k of
    sigmoid + correction bias within the best groups."""
    if layer.cfg.router != "deepseek":
        return np.sort(np.argsort(-scores, axis=-1, kind="stable")[:, :k], axis=-1)
    choice = 1 / (1 + np.exp(-scores)) + layer.router.expert_bias.numpy()  # (T, E)
    t, e = choice.shape
    groups = choice.reshape(t, layer.cfg.n_groups, -1)
    best = np.argsort(-np.sort(groups, axis=-1)[:, :, -2:].sum(axis=-1), axis=-1)[:, : layer.cfg.topk_groups]
    allowed = np.zeros(groups.shape[:2], dtype=bool)
    allowed[np.arange(t)[:, None], best] = True
    choice = np.where(np.repeat(allowed, e // layer.cfg.n_groups, axis=1), choice, -np.inf)
    return np.sort(np.argsort(-choice, axis=-1)[:, :k], axis=-1)


def test_float64_floor_is_transformers_float32_casts(oracle, tmp_path, monkeypatch):
    """In float64 the difference is float32 rounding (about 1e-7), and it comes from the four
    places transformers computes in float32 whatever the model's dtype: with the attention
    softmax, the RMSNorm, the router softmax and the rotary tables computed in float64 instead
    (patched here, for Mixtral), the logits agree to float64 rounding."""
    torch, _ = oracle
    from transformers.models.mixtral import modeling_mixtral as mixtral

    hf_model(oracle, "mixtral", tmp_path)
    ids = input_ids()
    ours = load_pretrained(tmp_path, dtype="float64")(ids).numpy()
    logits, _ = hf_logits(oracle, hf_reload(oracle, tmp_path, "float64"), ids)
    assert 1e-12 < relative(ours, logits) < 1e-6

    softmax = torch.nn.functional.softmax
    monkeypatch.setattr(torch.nn.functional, "softmax", lambda x, dim=None, dtype=None, **_: softmax(x, dim=dim))
    monkeypatch.setattr(mixtral.MixtralRMSNorm, "forward", lambda self, h: self.weight * (
        h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)))

    def router(self, h):
        logits = torch.nn.functional.linear(h.reshape(-1, self.hidden_dim), self.weight)
        top, index = torch.topk(softmax(logits, dim=-1), self.top_k, dim=-1)
        return logits, top / top.sum(-1, keepdim=True), index

    def rotary_tables(self, x, position_ids):
        dim = self.config.hidden_size // self.config.num_attention_heads
        inverse = 1.0 / self.config.rope_parameters["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        angles = position_ids[..., None].double() * inverse
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(x.dtype), angles.sin().to(x.dtype)

    monkeypatch.setattr(mixtral.MixtralTopKRouter, "forward", router)
    monkeypatch.setattr(mixtral.MixtralRotaryEmbedding, "forward", rotary_tables)
    logits, _ = hf_logits(oracle, hf_reload(oracle, tmp_path, "float64"), ids)
    assert relative(ours, logits) < 1e-12


def test_fused_expert_layout_loads_the_same_weights(oracle, tmp_path):
    hf_model(oracle, "olmoe", tmp_path / "per-expert")
    hf_model(oracle, "olmoe", tmp_path / "fused", save_original_format=False)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "fused" / "model.safetensors"), "np") as f:
        assert "model.layers.0.mlp.experts.gate_up_proj" in f.keys()
    per_expert, fused = (load_pretrained(tmp_path / name).state_dict() for name in ("per-expert", "fused"))
    assert per_expert.keys() == fused.keys()
    assert all(np.array_equal(per_expert[name], fused[name]) for name in per_expert)


def test_sharded_checkpoint_with_an_index(oracle, tmp_path):
    hf_model(oracle, "mixtral", tmp_path, max_shard_size="30KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("*.safetensors"))) > 2
    ids = input_ids()
    logits, _ = hf_logits(oracle, hf_reload(oracle, tmp_path), ids)
    assert relative(load_pretrained(tmp_path)(ids).numpy(), logits) < 1e-5


def test_bfloat16_weights_convert_exactly(oracle, tmp_path):
    torch, _ = oracle
    hf = hf_model(oracle, "qwen2_moe", tmp_path, dtype="bfloat16")
    ours = dict(load_pretrained(tmp_path).named_parameters())
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    expected = hf.model.embed_tokens.weight.detach().to(torch.float32).numpy()
    assert np.array_equal(ours["token_embedding.weight"].numpy(), expected)
    gate = hf.model.layers[0].mlp.shared_expert_gate.weight.detach().to(torch.float32).numpy()  # (1, d)
    assert np.array_equal(ours["blocks.0.ffn.shared_gate"].numpy(), gate.T)


# ---- minimoe -> transformers -> minimoe ----------------------------------------------------------

def hf_style(config: ModelConfig, **options) -> ModelConfig:
    """`config` with the options every Hugging Face architecture here shares."""
    return dataclasses.replace(config, norm="rms", positions="rotary", activation="swiglu", ffn_bias=False,
                               rope_theta=1e6, **options)


def trained_mixtral_style():
    from minimoe.train import PRESETS, train_in_memory

    model_config, train_config = PRESETS["ci"]
    config = hf_style(model_config, n_kv_heads=2)
    run = train_in_memory(config, dataclasses.replace(train_config, steps=3, eval_every=1000, sample_length=0))
    return run.model


ROUND_TRIPS = {
    "mixtral": lambda: trained_mixtral_style(),
    "olmoe": lambda: Transformer(hf_style(ModelConfig(d_model=32, n_layers=2, n_heads=4, context=32, n_experts=4,
                                                      expert_hidden=16, renormalize=False), qk_norm=True)),
    "qwen2_moe": lambda: Transformer(hf_style(
        ModelConfig(d_model=32, n_layers=3, n_heads=4, context=32, n_experts=4, expert_hidden=16, ffn_hidden=24,
                    n_shared_experts=1), shared_expert_hidden=20, shared_expert_gate=True, qkv_bias=True,
        dense_layers=(1,), n_kv_heads=1)),
    "deepseek_v3": lambda: Transformer(hf_style(
        ModelConfig(d_model=32, n_layers=3, n_heads=4, context=32, n_experts=8, top_k=3, expert_hidden=12,
                    ffn_hidden=24, n_shared_experts=1, router="deepseek", n_groups=4, topk_groups=2,
                    routed_scaling=2.5), attention="mla", q_lora_rank=12, kv_lora_rank=16, qk_nope_head_dim=8,
        qk_rope_head_dim=4, v_head_dim=6, rope_interleave=True, dense_layers=(0,))),
}


@pytest.mark.parametrize("name", ROUND_TRIPS)
def test_export_loads_in_transformers_and_back_bit_identical(oracle, tmp_path, name):
    mm.manual_seed(3)
    model = ROUND_TRIPS[name]().eval()
    assert architecture_for(model.config).MODEL_TYPE == name
    save_pretrained(model, tmp_path)
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, size=(2, LENGTH))
    logits, _ = hf_logits(oracle, hf_reload(oracle, tmp_path), ids)
    assert relative(model(ids).numpy(), logits) < 1e-5
    back = load_pretrained(tmp_path)
    for field in STRUCTURE:
        assert getattr(back.config, field) == getattr(model.config, field), field
    assert back.config.kv_heads == model.config.kv_heads
    original, loaded = model.state_dict(), back.state_dict()
    assert original.keys() == loaded.keys()
    assert all(np.array_equal(original[key], loaded[key]) for key in original)


STRUCTURE = ("vocab_size", "d_model", "n_layers", "n_heads", "context", "positions", "tie_weights", "n_experts",
             "top_k", "expert_hidden", "router", "renormalize", "n_shared_experts", "norm", "norm_eps", "rope_theta",
             "qk_norm", "qkv_bias", "out_bias", "activation", "ffn_bias", "shared_expert_hidden",
             "shared_expert_gate", "dense_layers", "attention", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
             "qk_rope_head_dim", "v_head_dim", "rope_interleave", "n_groups", "topk_groups", "routed_scaling")


def test_models_without_a_matching_architecture_are_refused():
    with pytest.raises(UnsupportedCheckpoint, match="norm='layer'.*Mixtral-style options"):
        architecture_for(ModelConfig())


# ---- bad input ---------------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    """A small valid checkpoint written by minimoe itself (no oracle needed)."""
    mm.manual_seed(0)
    model = Transformer(hf_style(ModelConfig(d_model=16, n_layers=1, n_heads=2, context=16, n_experts=2,
                                             top_k=1, expert_hidden=8)))
    save_pretrained(model, tmp_path / "model")
    return tmp_path / "model"


def test_a_directory_without_config_json(saved):
    (saved / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(saved)


def test_an_unsupported_model_type_lists_the_supported_ones(saved):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps(dict(config, model_type="llama")))
    with pytest.raises(UnsupportedCheckpoint, match="'llama'.*deepseek_v3, mixtral, olmoe, qwen2_moe"):
        load_pretrained(saved)


def test_a_shard_missing_from_the_index(saved):
    from safetensors import safe_open

    with safe_open(str(saved / "model.safetensors"), "np") as f:
        names = list(f.keys())
    shutil.move(saved / "model.safetensors", saved / "model-00001-of-00002.safetensors")
    weight_map = {name: f"model-0000{1 + (i % 2)}-of-00002.safetensors" for i, name in enumerate(names)}
    (saved / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointFormatError, match="model-00002-of-00002.safetensors.*not in"):
        load_pretrained(saved)


def test_a_tensor_of_the_wrong_shape_is_named(saved):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(saved / "model.safetensors"))
    tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((5, 16), dtype=np.float32)
    save_file(tensors, str(saved / "model.safetensors"))
    with pytest.raises(CheckpointFormatError, match=r"'model.layers.0.self_attn.k_proj.weight'.*\[5, 16\].*\[16, 16\]"):
        load_pretrained(saved)


def test_a_truncated_safetensors_file(saved):
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError, match="not a readable safetensors file.*truncated"):
        load_pretrained(saved)


def test_fp8_weights_are_refused(saved):
    import ml_dtypes
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(saved / "model.safetensors"))
    name = "model.layers.0.block_sparse_moe.experts.0.w1.weight"
    tensors[name] = tensors[name].astype(ml_dtypes.float8_e4m3fn)
    save_file(tensors, str(saved / "model.safetensors"))
    with pytest.raises(UnsupportedCheckpoint, match="fp8"):
        load_pretrained(saved)


def test_unused_or_missing_tensors_are_errors(saved):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(saved / "model.safetensors"))
    tensors["model.layers.0.mlp.something_new.weight"] = np.zeros(3, dtype=np.float32)
    save_file(tensors, str(saved / "model.safetensors"))
    with pytest.raises(UnsupportedCheckpoint, match="no place for.*something_new"):
        load_pretrained(saved)
    del tensors["model.layers.0.mlp.something_new.weight"], tensors["model.norm.weight"]
    save_file(tensors, str(saved / "model.safetensors"))
    with pytest.raises(CheckpointFormatError, match="lacks 1 tensor.*model.norm.weight"):
        load_pretrained(saved)


def test_unsupported_options_are_named(saved):
    config = json.loads((saved / "config.json").read_text())
    for change, message in [({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "yarn"),
                            ({"hidden_act": "gelu"}, "hidden_act"),
                            ({"quantization_config": {"quant_method": "fp8"}}, "quantised")]:
        (saved / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(UnsupportedCheckpoint, match=message):
            load_pretrained(saved)


def test_older_config_spellings_are_read(saved):
    config = json.loads((saved / "config.json").read_text())
    del config["rope_parameters"], config["dtype"]
    (saved / "config.json").write_text(json.dumps(dict(config, rope_theta=5e5, torch_dtype="float64")))
    model = load_pretrained(saved)
    assert model.config.rope_theta == 5e5 and model.parameters()[0].dtype == np.float64


def test_tokenizer_json_is_read_with_the_tokenizers_library(saved):
    tokenizers = pytest.importorskip("tokenizers", reason="pip install tokenizers")
    assert load_tokenizer(saved) is None
    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(saved / "tokenizer.json"))
    assert load_tokenizer(saved).encode("hello world again").ids == [1, 2, 0]


def test_weights_go_to_the_current_backend(saved, backend_name):
    model = load_pretrained(saved)
    assert {p.backend for p in model.parameters()} == {backend_name}
    mm.use("numpy")
    reference = load_pretrained(saved)(input_ids()).numpy()
    mm.use(backend_name)
    np.testing.assert_array_equal(model(input_ids()).numpy(), reference)


def test_a_hub_id_is_downloaded_through_huggingface_hub(tmp_path, monkeypatch):
    import sys
    import types
    mm.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, d_model=16, n_layers=1, n_heads=2, context=16, n_experts=4, top_k=2,
                         expert_hidden=8, norm="rms", positions="rotary", activation="swiglu", ffn_bias=False,
                         balance_loss=None)
    model = Transformer(config)
    save_pretrained(model, tmp_path / "cache" / "snapshot")
    asked = []

    def snapshot_download(repo_id, allow_patterns):
        asked.append((repo_id, allow_patterns))
        return str(tmp_path / "cache" / "snapshot")

    monkeypatch.chdir(tmp_path)  # "owner/tiny-moe" is no folder here
    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=snapshot_download))
    loaded = load_pretrained("owner/tiny-moe")
    assert asked == [("owner/tiny-moe", ["*.json", "*.safetensors"])]
    for (name, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    def offline(repo_id, allow_patterns):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=offline))
    with pytest.raises(FileNotFoundError, match="is not a folder here, and downloading .* failed .*no network"):
        load_pretrained("runs/typo")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(FileNotFoundError, match="pip install huggingface_hub"):
        load_pretrained("owner/tiny-moe")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_pretrained(tmp_path / "no" / "such" / "folder")
