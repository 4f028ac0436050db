# %% [markdown]
# # Lesson 11 — Real MoE checkpoints
#
# The engine you built in lessons 00 to 07 is not a toy version of the real thing: with a few
# options switched on, its Transformer *is* Mixtral, OLMoE, Qwen2-MoE and DeepSeek-V3, and it
# reads their checkpoints. This short lesson shows that, number by number. A model made by the
# Hugging Face `transformers` library is saved to disk, loaded into minimoe, and gives the same
# logits, the same expert for every token and the same greedy text. Then the other way: the
# course's own tiny MoE, trained here, is written as a checkpoint that `transformers` loads and
# generates from. Between the two, `python -m minimoe.route` shows which experts fire on your own
# text, and the last section gives the commands and the memory to run a real pretrained MoE.
#
# **After this lesson you can**
# - name what separates the course's tiny model from Mixtral, OLMoE, Qwen2-MoE and DeepSeek-V3,
#   and which `ModelConfig` option expresses each difference;
# - load a Hugging Face MoE directory with `minimoe.hub.load_pretrained` and check it against
#   `transformers` (logits, chosen experts, greedy tokens), and explain why float64 agrees only to
#   about 1e-7;
# - trace the routing of your own text with `minimoe.route`, and say what a random-weight model's
#   routing does and does not show;
# - export a model you trained with `minimoe.hub.save_pretrained` so that `transformers` runs it;
# - work out the memory a real checkpoint needs with `minimoe.calculator`, before downloading it.
#
# **Papers and code bases.**
# - Jiang et al. (2024), *Mixtral of experts*, arXiv 2401.04088, §2: top-2 of 8 SwiGLU experts,
#   softmax over the top-2 logits; grouped-query attention and rotary positions from Mistral 7B.
# - Muennighoff et al. (2024), *OLMoE: open mixture-of-experts language models*, arXiv 2409.02060:
#   64 experts, top-8, 6.9B total and 1.3B active parameters, QK-norm.
# - Qwen team (2024), Qwen1.5-MoE, and the Hugging Face `Qwen2MoeSparseMoeBlock`: routed experts
#   plus a shared expert scaled by a sigmoid gate.
# - DeepSeek-AI (2024), *DeepSeek-V3 technical report*, arXiv 2412.19437, §2.1: multi-head latent
#   attention, sigmoid router scores with a correction bias, node-limited routing (groups of experts
#   in the released code), shared experts.
# - Zhang & Sennrich (2019), RMSNorm; Shazeer (2020), SwiGLU; Su et al. (2021), RoFormer (rotary
#   positions, $\theta = 10000$); Ainslie et al. (2023), grouped-query attention.
# - The Hugging Face `transformers` modelling files of the four architectures (version 5.24), the
#   oracle every number below is checked against.
#
# **Library files used.** `minimoe/hub/` (`load_pretrained`, `save_pretrained`, one name map per
# architecture in `mixtral.py`, `olmoe.py`, `qwen2_moe.py`, `deepseek_v3.py`), `minimoe/models/config.py`
# (the checkpoint options), `minimoe/route.py` (`python -m minimoe.route`), `minimoe/calculator.py`.
#
# **Prerequisites.** Lessons 04 (the tiny MoE Transformer), 07 (DeepSeek's router and shared
# experts), 08 (reading routing) and 09 (the calculator). Sections 2 and 4 use PyTorch and
# `transformers` as the reference; they are not part of the course's requirements
# (`pip install torch transformers`), and without them those cells say that they are skipped.

# %% tags=["parameters"]
import os

FAST = os.environ.get("MINIMOE_FAST") == "1"  # CI runs every lesson with MINIMOE_FAST=1: fewer steps, same code
TRAIN_STEPS = 40 if FAST else 1500  # optimiser steps for the model exported in section 4
BIG_WIDTH = 128 if FAST else 512  # d_model of section 2's larger OLMoE-shaped model (load time, tokens per second)
BPE_VOCAB = 512  # sub-word vocabulary of section 3's tokenizer

# %%
# The models here are small: one BLAS thread per process is faster than two fighting (set before NumPy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from IPython.display import Image, display

import minimoe as mm
from minimoe import calculator, route
from minimoe.data import CharTokenizer, load_corpus, split
from minimoe.hub import ARCHITECTURES, architecture_for, load_pretrained, read_config, save_pretrained
from minimoe.models import ModelConfig, Transformer, generate
from minimoe.train import TrainConfig, train_in_memory

ORACLE = all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))
if ORACLE:
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()  # no progress bars or notices in the outputs
    transformers.utils.logging.disable_progress_bar()
    print(f"transformers {transformers.__version__} and torch {torch.__version__}: sections 2 and 4 run")
else:
    print("transformers or torch is not installed: the cells of sections 2 and 4 that use them are SKIPPED "
          "(pip install torch transformers to run them)")
scratch = Path(tempfile.mkdtemp(prefix="lesson11-"))  # every checkpoint of this lesson; deleted at the end
np.set_printoptions(precision=3, suppress=True)
print("fast mode" if FAST else "full mode")

# %% [markdown]
# ## 1. What a real MoE changes
#
# The model of lesson 04 is GPT-2-shaped: LayerNorm with a scale and a bias, a learned table of
# positions, every attention head with its own keys and values, and experts that are two-layer
# GELU MLPs with biases. The released MoE models all depart from it in the same Llama-style way,
# and then each adds something of its own:
#
# - **RMSNorm** (Zhang & Sennrich 2019): $x / \sqrt{\mathrm{mean}(x^2) + \epsilon} \cdot g$, no
#   centring, no bias.
# - **SwiGLU experts without biases** (Shazeer 2020): $W_\text{down}\,(\mathrm{silu}(W_\text{gate} x)
#   \odot W_\text{up} x)$, three matrices per expert.
# - **Rotary positions** (Su et al. 2021): no position table; queries and keys are rotated by
#   angles $p\,\theta^{-2i/d_h}$. The checkpoint fixes $\theta$: 10000 in RoFormer, $10^6$ in Mixtral.
# - **Grouped-query attention** (Ainslie et al. 2023): fewer key/value heads than query heads
#   (Mixtral 8x7B: 32 query heads, 8 key/value heads), which shrinks the KV cache.
# - **QK-norm** (OLMoE): an RMSNorm over the whole query projection and one over the whole key
#   projection, before the rotation.
# - **A gated shared expert** (Qwen2-MoE): one always-on expert whose output is scaled by
#   $\sigma(x\,w)$, beside the routed ones, which are *not* renormalised after the top-k.
# - **DeepSeek-V3**: multi-head latent attention (keys and values rebuilt from a small latent), the
#   sigmoid router with its correction bias and group-limited choice, the routed scaling factor,
#   shared experts, and dense first blocks (lesson 07).
#
# Each is an option of minimoe's `ModelConfig`, off by default, so the course's model is unchanged.
# `minimoe.hub` maps a checkpoint's `config.json` to these options, one file per architecture.
# Below are four tiny `config.json` contents, one per architecture, with the options that tell the
# architectures apart, and the `ModelConfig` each one maps to, beside the course's default model.
# The same four dictionaries build the `transformers` models of section 2.

# %%
TINY = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
            initializer_range=0.1, bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=False)
HF_CONFIGS = {  # what each architecture's config.json holds (tiny sizes, the real models' kinds of options)
    "mixtral": dict(TINY, model_type="mixtral", num_key_value_heads=2, intermediate_size=48, num_local_experts=8,
                    num_experts_per_tok=2, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
    "olmoe": dict(TINY, model_type="olmoe", num_key_value_heads=4, intermediate_size=32, num_experts=16,
                  num_experts_per_tok=4, norm_topk_prob=False, rms_norm_eps=1e-5,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e4}),
    "qwen2_moe": dict(TINY, model_type="qwen2_moe", num_key_value_heads=4, intermediate_size=96,
                      moe_intermediate_size=24, shared_expert_intermediate_size=96, num_experts=8,
                      num_experts_per_tok=2, norm_topk_prob=False, qkv_bias=True, rms_norm_eps=1e-6,
                      rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
    "deepseek_v3": dict(TINY, model_type="deepseek_v3", num_hidden_layers=3, num_key_value_heads=4,
                        intermediate_size=96, moe_intermediate_size=16, n_routed_experts=16, num_experts_per_tok=4,
                        n_shared_experts=1, n_group=4, topk_group=2, routed_scaling_factor=2.5,
                        first_k_dense_replace=1, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8,
                        qk_rope_head_dim=8, v_head_dim=16, rms_norm_eps=1e-6,
                        rope_parameters={"rope_type": "default", "rope_theta": 1e4}),
}
MAPPED = {name: ARCHITECTURES[name].config_from_hf(hf) for name, hf in HF_CONFIGS.items()}
COURSE = ModelConfig()  # lesson 04's model


def option_rows(config):
    """The options that tell the architectures apart, as short strings."""
    rows = {"norm": config.norm, "positions": config.positions,
            "rope_theta": f"{config.rope_theta:g}" if config.positions == "rotary" else "-",
            "attention": config.attention, "query / key-value heads": f"{config.n_heads} / {config.kv_heads}",
            "qk_norm": config.qk_norm, "qkv_bias / out_bias": f"{config.qkv_bias} / {config.out_bias}",
            "activation": config.activation, "ffn_bias": config.ffn_bias,
            "experts, top_k": f"{config.n_experts}, {config.top_k}", "router": config.router,
            "renormalize": config.renormalize if config.router == "topk" else "-",
            "groups / used": f"{config.n_groups} / {config.topk_groups}", "routed_scaling": config.routed_scaling,
            "n_shared_experts": config.n_shared_experts, "shared_expert_gate": config.shared_expert_gate,
            "dense_layers": config.dense_layers or "-", "tie_weights": config.tie_weights}
    return {name: str(value) for name, value in rows.items()}


columns = {"course (lesson 04)": option_rows(COURSE)} | {name: option_rows(c) for name, c in MAPPED.items()}
print(f"{'ModelConfig option':24}" + "".join(f"{name:>20}" for name in columns))
for option in columns["mixtral"]:
    print(f"{option:24}" + "".join(f"{rows[option]:>20}" for rows in columns.values()))

# %% [markdown]
# Read the table column by column. All four checkpoints share the Llama-style core (`rms`,
# `rotary`, `swiglu`, no FFN biases) that the course model lacks. Mixtral differs from that core
# in its $\theta$, its grouped-query attention (4 query heads share 2 key/value heads here) and its
# renormalised top-k; OLMoE adds `qk_norm` and does not renormalise; Qwen2-MoE adds a gated shared
# expert and biases on $q, k, v$; DeepSeek-V3 changes the attention (`mla`), the router
# (`deepseek`: groups, scaling), and keeps block 0 dense. The sizes are tiny (the real Mixtral has
# $d = 4096$, 32 blocks, 8 experts), but the options are the real ones: the same mapping reads the
# released `config.json` files.
#
# ## 2. The same model in transformers and in minimoe
#
# For each architecture, `transformers` builds a random-weight model from the dictionary above
# (no download: a config is all it needs) and saves it into a temporary folder as a real checkpoint
# would be, `config.json` beside `model.safetensors`. `minimoe.hub.load_pretrained` reads that
# folder: it checks every tensor's name and shape against the model the config describes, then
# copies the weights one tensor at a time from the memory-mapped file. We compare, on the same two
# sequences of 24 random tokens:
#
# - the **logits**, as the largest difference relative to the largest logit, with both models in
#   float32 and then both in float64;
# - the **experts chosen** for every token in every MoE layer (as sets: the order within a top-k
#   is not part of the result), read in `transformers` from the ids its router hands its experts
#   (a forward hook) and in minimoe from the layers' routing reports;
# - **20 greedy tokens** generated after a 5-token prompt.
#
# DeepSeek-V3's correction bias starts at zero in a fresh model, where it would change nothing; we
# draw it at random, as training would have moved it, so that the test sees it steer the choice.

# %%
def oracle_model(hf_config, folder, dtype="float32", seed=0):
    """A random-weight transformers model of `hf_config`, saved as a checkpoint in `folder` in `dtype`."""
    torch.manual_seed(seed)
    config = transformers.AutoConfig.for_model(**hf_config)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for layer in model.model.layers:  # DeepSeek-V3's correction bias: 0 at the start, so make it steer
            if hasattr(getattr(layer.mlp, "gate", None), "e_score_correction_bias"):
                layer.mlp.gate.e_score_correction_bias.normal_(0.0, 0.1)
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    return model


def oracle_load(folder, dtype):
    """The saved checkpoint read back by transformers, in `dtype`, with its plain (eager) code paths."""
    return transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=getattr(torch, dtype), attn_implementation="eager", experts_implementation="eager").eval()


def oracle_run(model, ids):
    """(logits, [the expert ids of every MoE layer, (tokens, k)]) of transformers' forward pass."""
    chosen, hooks = [], []
    for layer in model.model.layers:
        if hasattr(layer.mlp, "experts"):  # an MoE block: its experts receive (hidden, top_k_index, top_k_weights)
            hooks.append(layer.mlp.experts.register_forward_pre_hook(lambda _, args: chosen.append(args[1].numpy())))
    try:
        with torch.no_grad():
            logits = model(torch.as_tensor(ids)).logits.numpy()
    finally:
        for hook in hooks:
            hook.remove()
    return logits, chosen


def minimoe_run(model, ids):
    """(logits, [the expert ids of every MoE layer, (tokens, k)]) of minimoe's forward pass."""
    with mm.no_grad():
        logits = model(ids).numpy()
    k = model.config.experts_per_token
    return logits, [report.expert_index.reshape(-1, k) for report in model.routing_reports()]


def relative_difference(ours, theirs):
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def same_experts(ours, theirs):
    """The share of (token, layer) pairs whose sets of chosen experts are equal."""
    return float(np.mean([np.all(np.sort(a, -1) == np.sort(b, -1), axis=-1) for a, b in zip(ours, theirs)]))


def greedy_both(oracle, ours, prompt, n):
    with torch.no_grad():
        theirs = oracle.generate(torch.as_tensor(prompt[None]), max_new_tokens=n, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)[0].numpy()
    return generate(ours, prompt, n, temperature=0), theirs


def compare(name, folder, ids):
    """One architecture's row: sizes, load time, logits in float32 and float64, experts, greedy tokens."""
    row = {"architecture": name}
    for dtype in ("float32", "float64"):
        began = time.perf_counter()
        ours = load_pretrained(folder, dtype=dtype)
        row[f"load {dtype} (ms)"] = 1000 * (time.perf_counter() - began)
        oracle = oracle_load(folder, dtype)
        (our_logits, our_experts), (their_logits, their_experts) = minimoe_run(ours, ids), oracle_run(oracle, ids)
        row[f"logits {dtype}"] = relative_difference(our_logits, their_logits)
        if dtype == "float32":
            row["weights"] = ours.num_parameters()  # every number the checkpoint holds, in both programs
            assert row["weights"] == sum(tensor.numel() for tensor in oracle.state_dict().values())
            row["same config as section 1"] = ours.config == MAPPED.get(name, ours.config)
            row["same experts"] = same_experts(our_experts, their_experts)
            mine, theirs = greedy_both(oracle, ours, ids[0, :5], 20)
            row["greedy 20 equal"] = bool(np.array_equal(mine, theirs))
    return {name: row[name] for name in COLUMNS}


COLUMNS = ("architecture", "weights", "same config as section 1", "load float32 (ms)", "load float64 (ms)",
           "logits float32", "logits float64", "same experts", "greedy 20 equal")


ROW_FORMAT = {"weights": "{:,}", "load float32 (ms)": "{:.1f}", "load float64 (ms)": "{:.1f}",
              "logits float32": "{:.1e}", "logits float64": "{:.1e}", "same experts": "{:.0%}"}


def print_rows(rows):
    names = list(rows[0])
    print("".join(f"{n:>{max(12, len(n) + 2)}}" for n in names))
    for row in rows:
        print("".join(f"{ROW_FORMAT.get(n, '{}').format(row[n]):>{max(12, len(n) + 2)}}" for n in names))


if ORACLE:
    ids = np.random.default_rng(0).integers(0, TINY["vocab_size"], size=(2, 24))  # (B, T) the same for every model
    rows = []
    oracle_model(HF_CONFIGS["mixtral"], scratch / "warm-up")
    load_pretrained(scratch / "warm-up")  # the first load imports safetensors and ml_dtypes: not timed below
    for name, hf_config in HF_CONFIGS.items():
        oracle_model(hf_config, scratch / name)
        rows.append(compare(name, scratch / name, ids))
    print_rows(rows)
    print(f"\nfloat32 machine epsilon {np.finfo(np.float32).eps:.1e}, "
          f"float64 machine epsilon {np.finfo(np.float64).eps:.1e}")
else:
    print("SKIPPED: section 2 needs torch and transformers (pip install torch transformers)")

# %% [markdown]
# Every architecture loads into the same number of parameters as `transformers` holds (the cell
# asserts it) and maps to the configuration of section 1's table. Read the columns:
#
# - **float32**: the logits agree to a few parts in $10^7$ of the largest logit, a few float32
#   rounding steps ($\epsilon = 1.2 \times 10^{-7}$): two programs that add the same numbers in
#   different orders.
# - **float64**: the difference does *not* fall to float64 rounding ($\epsilon = 2.2 \times
#   10^{-16}$); it stays at about $10^{-7}$, float32's scale. That is a floor set by `transformers`,
#   not by the loader: even in a float64 model it computes the router softmax, the rotary
#   tables, the RMSNorm and the attention softmax in float32 (explicit casts in its modelling
#   files). The next cell shows two of the four directly.
# - **experts** and **greedy tokens**: every token of every MoE layer chose the same set of
#   experts, and 20 greedy tokens came out the same, in all four architectures. The cell after
#   next shows what a mistake in a name map does to these columns.
#
# The float64 Mixtral of the table, piece by piece: its final RMSNorm and its rotary table
# against the same formulas computed in float64.

# %%
if ORACLE:
    mixtral64 = oracle_load(scratch / "mixtral", "float64")
    h = torch.randn(24, TINY["hidden_size"], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    norm = mixtral64.model.norm  # transformers' RMSNorm, in a float64 model
    with torch.no_grad():
        exact = norm.weight * h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        print("RMSNorm, float64 model against the float64 formula: "
              f"{relative_difference(norm(h).numpy(), exact.numpy()):.1e}")
        positions = torch.arange(24)[None]  # the 24 positions of the comparison above
        cos, _ = mixtral64.model.rotary_emb(h, positions)  # (1, 24, head_dim), returned as float64
        head_dim, theta = TINY["hidden_size"] // TINY["num_attention_heads"], 1e6
        inverse_frequencies = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = positions[..., None].double() * inverse_frequencies  # (1, 24, head_dim / 2)
        exact = torch.cat([angles, angles], dim=-1).cos()
        print("rotary cos table, float64 model against float64 angles: "
              f"{relative_difference(cos.numpy(), exact.numpy()):.1e}")
else:
    print("SKIPPED: needs torch and transformers")

# %% [markdown]
# Both pieces of the float64 model are off by float32 rounding, errors of the size of the whole
# float64 comparison; minimoe computes them in float64. The project's `tests/test_hub.py` goes the
# whole way: with the four casts patched out of the Mixtral code, the float64 logits of the two
# programs agree within $10^{-12}$.
#
# A name map with one mistake: the OLMoE model loaded again, with the gate and up matrices of
# block 0's experts swapped (an easy slip: both are $d \times h$, so every shape check passes).

# %%
if ORACLE:
    ids = np.random.default_rng(0).integers(0, TINY["vocab_size"], size=(2, 24))
    their_logits, their_experts = oracle_run(oracle_load(scratch / "olmoe", "float32"), ids)
    wrong = load_pretrained(scratch / "olmoe")
    weights = dict(wrong.named_parameters())
    gate, up = weights["blocks.0.ffn.experts.w_gate"], weights["blocks.0.ffn.experts.w_in"]  # (E, d, h) each
    gate.data, up.data = up.data.copy(), gate.data.copy()
    our_logits, our_experts = minimoe_run(wrong, ids)
    print(f"gate and up swapped in block 0: logits differ by {relative_difference(our_logits, their_logits):.1e}; "
          f"same experts in block 0: {same_experts(our_experts[:1], their_experts[:1]):.0%}, "
          f"in block 1: {same_experts(our_experts[1:], their_experts[1:]):.0%}")
else:
    print("SKIPPED: needs torch and transformers")

# %% [markdown]
# The swap leaves block 0's routing untouched (its router runs before its experts) but changes
# every block-0 output, so block 1's router sees other inputs and picks another set of experts for
# about one token in five, and the logits are off by far more than rounding. Matching experts token by token, layer
# by layer, is a sharper test than a logit tolerance: it points to the first layer that is wrong.
#
# The tiny models load in a few milliseconds. For a load time that means something, the same
# comparison on a larger model of OLMoE's shape: 64 experts, top-8, QK-norm, at a width of
# `BIG_WIDTH` (the real OLMoE: 2048 wide, 16 blocks), written in bfloat16 as real checkpoints are.
# minimoe converts the weights to float32 on the way in, so both programs compute from the same
# rounded weights. We also time a forward pass of 256 tokens in each, which is a statement about
# NumPy against PyTorch on this CPU, not about the architecture.

# %%
BIG = dict(TINY, model_type="olmoe", vocab_size=4096, hidden_size=BIG_WIDTH, num_hidden_layers=4,
           num_attention_heads=8, num_key_value_heads=8, intermediate_size=BIG_WIDTH // 2, num_experts=64,
           num_experts_per_tok=8, norm_topk_prob=False, rms_norm_eps=1e-5, max_position_embeddings=256,
           initializer_range=0.02, rope_parameters={"rope_type": "default", "rope_theta": 1e4})


def tokens_per_second(forward, ids, repeats=3):
    best = np.inf
    for _ in range(repeats):
        began = time.perf_counter()
        forward(ids)
        best = min(best, time.perf_counter() - began)
    return ids.size / best


if ORACLE:
    folder = scratch / "olmoe-shaped"
    began = time.perf_counter()
    oracle_model(BIG, folder, dtype="bfloat16")
    print(f"built and saved by transformers in {time.perf_counter() - began:.1f} s: "
          f"{sum(f.stat().st_size for f in folder.glob('*.safetensors')) / 1e6:.0f} MB of bfloat16 weights")
    began = time.perf_counter()
    ours = load_pretrained(folder)  # bfloat16 on disk -> float32
    load_s = time.perf_counter() - began
    print(f"minimoe: {ours.num_parameters() / 1e6:.1f}M parameters loaded into {ours.parameters()[0].dtype} "
          f"in {load_s:.2f} s")
    oracle = oracle_load(folder, "float32")
    ids = np.random.default_rng(1).integers(0, BIG["vocab_size"], size=(1, 256))
    (our_logits, our_experts), (their_logits, their_experts) = minimoe_run(ours, ids), oracle_run(oracle, ids)
    print(f"logits: largest relative difference {relative_difference(our_logits, their_logits):.1e}; "
          f"same expert sets for {same_experts(our_experts, their_experts):.1%} of (token, layer) pairs")
    with mm.no_grad():
        ours_speed = tokens_per_second(ours, ids)
    with torch.no_grad():
        theirs_speed = tokens_per_second(lambda x: oracle(torch.as_tensor(x)), ids)
    print(f"forward pass, 256 tokens: minimoe {ours_speed:,.0f} tokens/s, transformers {theirs_speed:,.0f} tokens/s")
    NUMPY_GFLOPS = ours_speed * calculator.flops_per_token(ours.config.transformer_spec(), 256) / 1e9
    print(f"minimoe's rate: {NUMPY_GFLOPS:.1f} GFLOP/s of matrix products (the calculator's FLOPs per token)")
else:
    NUMPY_GFLOPS = None
    print("SKIPPED: needs torch and transformers")

# %% [markdown]
# The larger model agrees as the tiny ones do: the logits to float32 rounding, the experts on
# every token. Its load time is what reading the file and converting bfloat16 to float32 costs,
# tensor by tensor. In this run minimoe's forward pass is the faster of the two, against
# `transformers` on its plain per-expert loop (`experts_implementation="eager"`), one thread each;
# the rate in GFLOP/s is what section 5 uses to estimate a real model's speed.
#
# ## 3. Routing on your own text
#
# A real checkpoint comes with its tokenizer, as `tokenizer.json` in the same folder, read by the
# `tokenizers` library. To show the whole path on a model built here, we make one: a byte-level
# BPE tokenizer (the kind GPT-2 and OLMoE use) with `BPE_VOCAB` tokens, trained on the course's
# corpus with the `tokenizers` library. A random OLMoE-style model with that vocabulary, written
# by `save_pretrained` with the tokenizer beside it, is then a Hugging Face directory like any
# other, and `minimoe.route` runs on it. (`save_pretrained` and this section need no `transformers`.)

# %%
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

train_text, _ = split(load_corpus())
documents = train_text.text.split("\n\n")  # the corpus's documents, one training item each
tokenizer = Tokenizer(models.BPE())
tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tokenizer.decoder = decoders.ByteLevel()
began = time.perf_counter()
tokenizer.train_from_iterator(documents, trainers.BpeTrainer(
    vocab_size=BPE_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
print(f"byte-level BPE of {tokenizer.get_vocab_size()} tokens trained on {len(documents):,} documents "
      f"in {time.perf_counter() - began:.1f} s")
for name, text in route.DEFAULT_TEXTS.items():
    encoding = tokenizer.encode(text)
    print(f"{name:10} {len(text):3} characters -> {len(encoding.ids):3} tokens, first ones: "
          + " | ".join(repr(text[a:b]) for a, b in encoding.offsets[:8]))

# %%
mm.manual_seed(0)
routed_model = Transformer(ModelConfig(
    vocab_size=tokenizer.get_vocab_size(), d_model=64, n_layers=2, n_heads=4, context=128, n_experts=8, top_k=2,
    expert_hidden=64, renormalize=False, norm="rms", positions="rotary", activation="swiglu", ffn_bias=False,
    qk_norm=True))
print("exported as:", architecture_for(routed_model.config).MODEL_TYPE)
folder = save_pretrained(routed_model, scratch / "routed")
tokenizer.save(str(folder / "tokenizer.json"))
print("the folder holds:", sorted(path.name for path in folder.iterdir()))

model, tokens = route.load(folder)  # what `python -m minimoe.route --model FOLDER` does first
routed = [route.route(model, tokens, name, text) for name, text in route.DEFAULT_TEXTS.items()]
n_experts = model.config.n_experts
print()
print(route.choices_text(routed[0]).splitlines()[0])
print("\n".join(route.choices_text(routed[0]).splitlines()[1:7]), "\n  ...")
print()
print(route.load_table(routed, n_experts))
route.draw(routed, n_experts, scratch / route.PICTURE)
display(Image(filename=str(scratch / route.PICTURE)))

# %% [markdown]
# This is `python -m minimoe.route` in pieces: `route.load` reads the folder (the model through
# `minimoe.hub`, the tokenizer through `tokenizers`), `route.route` runs each text and collects every
# MoE layer's choices with their gates, `route.load_table` gives each expert's share of the
# assignments, inputs side by side, and `route.draw` colours each token by its first-choice
# expert. The command does the same and writes the table and the picture into `--out`.
#
# The gates printed per token are near $1/8$: a random router's softmax over 8 experts is nearly
# flat, and OLMoE-style gates are not renormalised after the top-2.
#
# Be plain about what these numbers say: **nothing about specialisation.** The weights are random,
# so the shares differ between code, poem and arithmetic only because the texts are made of
# different tokens, which a random projection sends to different experts; in layer 1 the random
# attention has already mixed each token with those before it, so whole stretches of a text land
# on one expert. The `max/mean` row (1.00 would be perfectly even) measures that unevenness and
# nothing learned. What the section shows is the mechanism: the tokenizer's pieces,
# one routing decision per token and layer, the gates, the load. Whether a *trained* model's
# experts divide the work by domain is the question of lesson 08, and its answer needs trained
# weights, several seeds and a baseline; section 5 gives the commands for a real one.
#
# ## 4. Exporting the course's model
#
# Now the other direction. We train a minimoe model with the options that Mixtral's format
# expresses — `norm="rms"`, `positions="rotary"`, `activation="swiglu"`, `ffn_bias=False` (which
# removes the experts' biases too), and here grouped-query attention with 2 key/value heads — on
# the course corpus, with the usual trainer. `save_pretrained` picks the first architecture that
# expresses every option of the model (`architecture_for`): top-k with renormalisation, no shared
# experts, no QK-norm and an MoE layer in every block make it Mixtral. (A model it cannot express,
# the course's default one for example, is refused with the options that stand in the way.)

# %%
EXPORTED = ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, context=64, n_experts=4, top_k=2,
                       expert_hidden=96, norm="rms", positions="rotary", activation="swiglu", ffn_bias=False)
TRAINING = TrainConfig(steps=TRAIN_STEPS, batch_size=16, lr=3e-3, warmup_steps=min(30, TRAIN_STEPS // 4),
                       eval_every=TRAIN_STEPS, eval_batches=8, checkpoint_every=TRAIN_STEPS, sample_length=0, seed=0)
run = train_in_memory(EXPORTED, TRAINING)
trained = run.model.eval()
val_losses = [record["val_loss"] for record in run.records if "val_loss" in record]  # at step 0 and at the end
print(f"{trained.num_parameters():,} parameters, {TRAIN_STEPS} steps in {run.seconds:.0f} s; validation loss "
      f"{val_losses[0]:.3f} -> {val_losses[-1]:.3f} nats per character (uniform guessing: ln 96 = {np.log(96):.3f})")
try:
    architecture_for(ModelConfig())
except ValueError as err:
    print("the course's default model:", str(err)[:150], "...")
exported = save_pretrained(trained, scratch / "exported")
print(f"\nexported as {architecture_for(EXPORTED).ARCHITECTURE}:", sorted(path.name for path in exported.iterdir()))
print({key: value for key, value in json.loads((exported / "config.json").read_text()).items()
       if key in ("model_type", "hidden_size", "num_key_value_heads", "num_local_experts", "num_experts_per_tok",
                  "intermediate_size", "rope_parameters", "dtype")})

# %% [markdown]
# `transformers` loads the folder with the call it uses for any checkpoint,
# `AutoModelForCausalLM.from_pretrained`. The model reads characters: its token ids are
# `CharTokenizer`'s, so we encode the prompt and decode the output with it. We compare the logits
# on validation windows, then let both programs continue the same prompt greedily for 40
# characters (prompt and continuation fit in the context of 64, so both read the whole text at
# every step).

# %%
if ORACLE:
    hf_trained = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()  # the defaults: no options of ours
    print(type(hf_trained).__name__, f"with {sum(p.numel() for p in hf_trained.parameters()):,} parameters")
    x, _, _ = run.val_batches[0]
    with torch.no_grad():
        their_logits = hf_trained(torch.as_tensor(x)).logits.numpy()
    print(f"validation batch {x.shape}: largest relative difference of the logits "
          f"{relative_difference(minimoe_run(trained, x)[0], their_logits):.1e}")

    chars = CharTokenizer()
    for prompt in ("def ", "The "):
        mine, theirs = greedy_both(hf_trained, trained, chars.encode(prompt), 40)
        print(f"\nprompt {prompt!r}, 40 greedy characters, the same in both: {bool(np.array_equal(mine, theirs))}")
        print("  transformers:", repr(chars.decode(theirs)))
        print("  minimoe:     ", repr(chars.decode(mine)))
    with torch.no_grad():
        torch.manual_seed(0)
        sampled = hf_trained.generate(torch.as_tensor(chars.encode("def ")[None]), max_new_tokens=50, do_sample=True,
                                      temperature=0.8, top_k=0, eos_token_id=None, pad_token_id=0)[0].numpy()
    print("\ntransformers sampling at temperature 0.8:", repr(chars.decode(sampled)))
else:
    print("SKIPPED: section 4's check in transformers needs torch and transformers (pip install torch transformers)")

# %% [markdown]
# The exported model runs in `transformers` with nothing of minimoe's: the logits within about
# $10^{-6}$ of the largest (float32 rounding, over a whole batch of 16 windows), and the same greedy
# text from both programs. The text itself is what 1500 steps on a 1 MB corpus buy (a validation
# loss near 0.95 nats per character, against 4.56 for uniform guessing): fragments of the corpus's
# code and prose, not good writing. The sample at temperature 0.8 uses
# `transformers`' own sampler, which minimoe's does not reproduce draw for draw (the random numbers
# differ), so only greedy decoding is compared.
#
# The export is also a way out of the course: the folder is a Mixtral checkpoint, so any tool
# that reads Mixtral checkpoints can read your model.
#
# ## 5. A real checkpoint
#
# Nothing above used pretrained weights: **no pretrained checkpoint was downloaded where this
# project is built**, and every number in this notebook comes from models built in it (random
# weights made by `transformers` or by minimoe, and the model trained in section 4). On your own
# machine, with a network and the disk and memory worked out below, the step to a real MoE is a
# download and one command. OLMoE-1B-7B (Muennighoff et al. 2024) is a good first one: fully open, and small as MoE
# models go. Its `config.json` (checked for this lesson) gives hidden size 2048, 16 blocks,
# 16 heads, 64 experts of width 1024 with top-8, a vocabulary of 50304, and untied embeddings.
#
# ```
# pip install huggingface_hub
# hf download allenai/OLMoE-1B-7B-0924 --local-dir OLMoE-1B-7B
# python -m minimoe.route --model OLMoE-1B-7B --out routing-olmoe
# python -m minimoe.route --model OLMoE-1B-7B --text "for i in range(10):" --text "Shall I compare thee"
# ```
#
# (`huggingface_hub` before version 1.0 spells the download `huggingface-cli download`, with the same
# arguments.) `minimoe.route` needs three kinds of file in the folder: `config.json`, the
# `*.safetensors` weights (with their index when there are several shards) and `tokenizer.json`;
# it names any that is missing. With `huggingface_hub` installed you may also skip the first step
# and pass the hub id itself, `python -m minimoe.route --model allenai/OLMoE-1B-7B-0924`: minimoe
# then downloads only those files, into `huggingface_hub`'s cache. Before you download,
# the calculator says what you are taking on. We write that configuration into a folder and map it
# with the same `minimoe.hub` code that will read the download:

# %%
OLMOE_1B_7B = dict(model_type="olmoe", vocab_size=50304, hidden_size=2048, num_hidden_layers=16,
                   num_attention_heads=16, num_key_value_heads=16, intermediate_size=1024, num_experts=64,
                   num_experts_per_tok=8, norm_topk_prob=False, max_position_embeddings=4096, rms_norm_eps=1e-5,
                   rope_theta=10000.0, tie_word_embeddings=False, hidden_act="silu", attention_bias=False,
                   clip_qkv=None, torch_dtype="bfloat16")  # the fields of the released config.json that matter here
(scratch / "olmoe-config").mkdir()
(scratch / "olmoe-config" / "config.json").write_text(json.dumps(OLMOE_1B_7B))
arch, hf = read_config(scratch / "olmoe-config")
olmoe = arch.config_from_hf(hf)
spec = olmoe.transformer_spec()
counts = calculator.count_parameters(spec)
print(f"OLMoE-1B-7B as minimoe maps it: {counts.total / 1e9:.2f}B parameters in total, {counts.active / 1e9:.2f}B "
      f"active per token (the paper: 6.9B and 1.3B)")
for part, n in counts.breakdown.items():
    if n:
        print(f"  {part:15} {n / 1e9:6.3f}B total   {counts.active_breakdown[part] / 1e9:6.3f}B active")
GB = 1e9
for dtype, width in (("bfloat16", 2), ("float32", 4)):
    print(f"weights in {dtype:8}: {calculator.memory_bytes(spec, width).total / GB:5.1f} GB")
flops = calculator.flops_per_token(spec, 512)
print(f"forward FLOPs per token at 512 tokens: {flops / 1e9:.2f} GFLOP")
if NUMPY_GFLOPS is not None:
    print(f"at section 2's {NUMPY_GFLOPS:.1f} GFLOP/s: about {NUMPY_GFLOPS * 1e9 / flops:.0f} tokens per second, "
          f"a 100-token paragraph in about {100 * flops / (NUMPY_GFLOPS * 1e9):.0f} s (an estimate for this machine)")

# %% [markdown]
# The calculator's count, from the `ModelConfig` that `minimoe.hub` makes of the configuration,
# matches the paper's 6.9B total and 1.3B active to the digit printed. (It leaves out the QK-norm
# scales, 4096 numbers per block, which do not change those digits.) Almost all of the total is
# routed experts: 16 blocks of 64 experts of three $2048 \times 1024$ matrices. A token uses 8 of
# the 64, which is why the active count is a fifth of the total.
#
# What your machine needs, from these numbers:
#
# - **Disk**: the download is the bfloat16 weights, about 14 GB (the first line), plus the
#   tokenizer.
# - **Memory for minimoe**: the engine computes in float32, so `load_pretrained` converts the
#   bfloat16 weights on load and holds the float32 line, about 28 GB, plus one tensor while
#   loading and the activations of your text: a machine with 32 GB of RAM is the floor. No GPU is
#   needed; with CuPy and a GPU of that much memory, `mm.use("cupy")` before loading puts the
#   weights on it.
# - **Memory for transformers**: it can compute in bfloat16, so about 14 GB.
# - **Time**: each token multiplies through about 1.3B active parameters, the FLOPs per token
#   above. The estimate printed assumes that minimoe keeps section 2's rate on matrices four times
#   wider; a forward pass of a paragraph also reads most of the 28 GB of weights from memory, which
#   the estimate leaves out. Read it as an order of magnitude: seconds for `minimoe.route` on a
#   paragraph. Generation is much slower per token, because minimoe's `generate` reruns the
#   whole window for every new token (there is no KV cache).
#
# Then ask the question of lesson 08 on real weights: does OLMoE send your code, your poem and
# your arithmetic to different experts? The OLMoE paper reports that its routing shows high
# specialisation (its abstract); `minimoe.route`'s load table, on inputs of your own choosing, is
# where you check it on your machine — and a shuffled or untrained baseline, as in lesson 08, is what
# tells you how much a difference means.

# %%
import shutil

shutil.rmtree(scratch)  # every checkpoint this notebook wrote
print("removed the temporary checkpoints")

# %% [markdown]
# ## Check your understanding
#
# 1. The course's model has LayerNorm and a learned position table; Mixtral has RMSNorm and rotary
#    positions. Which parameters does each of the two changes remove from the model, and what does
#    `load_pretrained` do if a checkpoint holds a tensor the model has no place for?
# 2. Why is the float64 comparison with `transformers` stuck near $10^{-7}$ when the float32
#    comparison is already there? What would you change, and where, to see float64 agreement?
# 3. The experts are compared as *sets* per token, not as ordered lists. Give a case where both
#    programs route correctly but list the same two experts in different orders.
# 4. In section 2 the experts agreed on every token. Why is "same experts" a sharper test of a name
#    map than "logits within 1e-5"? Which mistake could pass the second and fail the first?
# 5. A random-weight model's load table in section 3 is uneven between code, poem and arithmetic.
#    Why does that say nothing about specialisation, and what baseline would you need to say
#    something about a trained model?
# 6. `save_pretrained` refuses the course's default model. Name three of its options that no
#    Hugging Face architecture of `minimoe.hub` expresses, and the option each must become.
# 7. OLMoE has 6.9B parameters and uses 1.3B per token. Why does the memory follow the first number
#    and the compute the second? How much memory would a float32 copy of only the active
#    parameters take, and why can you not run the model with only that much?
# 8. Mixtral renormalises its top-2 gates; OLMoE does not renormalise its top-8. For a token whose
#    softmax puts 0.5 of its mass on the chosen experts, how do the two models' expert outputs
#    differ in scale?
#
# ## Exercises
#
# This lesson has no graded exercise: its parts are library code checked against `transformers`
# in `tests/test_hub.py` and `tests/test_route.py`. To go further (not graded):
#
# - Run `python -m minimoe.route` on the folder of section 3 with a text of your own, and read the
#   picture it writes.
# - Change section 4's model to OLMoE's options (`qk_norm=True`, `renormalize=False`) or to
#   Qwen2-MoE's (`n_shared_experts=1`, `shared_expert_gate=True`), and check which architecture
#   `save_pretrained` picks and that `transformers` still gives the same logits.
# - On a machine that can hold it, download OLMoE-1B-7B and repeat lesson 08's question on it.
