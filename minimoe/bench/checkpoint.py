"""`python -m minimoe.bench --checkpoint 1e9`: loading a Hugging Face checkpoint, timed.

transformers builds a Mixtral of about the given size with random weights (bfloat16, sharded as
`save_pretrained` shards, in a temporary folder that is deleted afterwards: nothing is
downloaded or kept), in a subprocess so that its memory is not counted. Then
`minimoe.hub.load_pretrained` reads it into float32, with the time, the peak of memory traced
while loading against the model's own size, and tokens per second of a forward pass of one
sequence (prefill) on the engine, beside transformers' own on the same weights.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

PREFILL = 128  # tokens of the timed forward pass
SHAPE = dict(vocab_size=32000, hidden_size=1024, intermediate_size=2048, num_attention_heads=16,
             num_key_value_heads=4, num_local_experts=8, num_experts_per_tok=2)

_BUILD = r"""
import json, sys, time
import torch, transformers
shape, layers, folder, prefill = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.manual_seed(0)
config = transformers.MixtralConfig(**shape, num_hidden_layers=layers, max_position_embeddings=4096)
model = transformers.MixtralForCausalLM(config).to(torch.bfloat16).eval()
model.save_pretrained(folder, max_shard_size="500MB")
model = model.float()
ids = torch.randint(0, shape["vocab_size"], (1, prefill), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    model(ids)
    start = time.perf_counter()
    model(ids)
    seconds = time.perf_counter() - start
print(json.dumps({"parameters": sum(p.numel() for p in model.parameters()), "torch_seconds": seconds,
                  "torch_threads": torch.get_num_threads()}))
"""


def layers_for(parameters: float) -> int:
    """Decoder layers that bring the Mixtral of SHAPE closest to `parameters`."""
    d, h, e = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["num_local_experts"]
    kv = d // SHAPE["num_attention_heads"] * SHAPE["num_key_value_heads"]
    per_layer = 2 * d * d + 2 * d * kv + e * 3 * d * h + d * e + 2 * d  # attention, experts, router, norms
    embeddings = 2 * SHAPE["vocab_size"] * d
    return max(1, round((parameters - embeddings) / per_layer))


def measure(parameters: float) -> dict:
    """Builds, loads and times one synthetic checkpoint; returns the figures."""
    from .. import no_grad
    from ..hub import load_pretrained

    layers = layers_for(parameters)
    with tempfile.TemporaryDirectory() as folder:
        built = subprocess.run([sys.executable, "-c", _BUILD, json.dumps(SHAPE), str(layers), folder, str(PREFILL)],
                               capture_output=True, text=True, check=False)
        if built.returncode:
            raise RuntimeError(f"transformers could not build the synthetic checkpoint:\n{built.stderr[-2000:]}")
        peer = json.loads(built.stdout.strip().splitlines()[-1])
        files = sorted(Path(folder).glob("*.safetensors"))
        on_disk = sum(f.stat().st_size for f in files)
        tracemalloc.start()
        start = time.perf_counter()
        model = load_pretrained(folder, dtype="float32")
        load_seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    model_bytes = sum(p.data.nbytes for p in model.parameters())
    largest = max(p.data.nbytes for p in model.parameters())
    ids = np.random.default_rng(1).integers(0, SHAPE["vocab_size"], (1, PREFILL))
    with no_grad():
        model(ids)  # the first call warms the allocator and the thread pool
        start = time.perf_counter()
        model(ids)
        forward_seconds = time.perf_counter() - start
    return {"layers": layers, "parameters": peer["parameters"], "shards": len(files), "on_disk_mib": on_disk / 2**20,
            "load_seconds": load_seconds, "peak_traced_mib": peak / 2**20, "model_mib": model_bytes / 2**20,
            "largest_tensor_mib": largest / 2**20, "minimoe_tokens_per_s": PREFILL / forward_seconds,
            "torch_tokens_per_s": PREFILL / peer["torch_seconds"], "torch_threads": peer["torch_threads"]}


def report(parameters: float) -> str:
    r = measure(parameters)
    return "\n".join([
        f"synthetic Mixtral: {r['parameters'] / 1e9:.2f} B parameters ({r['layers']} layers of "
        f"{SHAPE['num_local_experts']} experts, top-{SHAPE['num_experts_per_tok']}, d {SHAPE['hidden_size']}), "
        f"bfloat16, {r['shards']} shards, {r['on_disk_mib']:,.0f} MiB on disk",
        f"minimoe.hub.load_pretrained to float32: {r['load_seconds']:.1f} s; peak memory traced while loading "
        f"{r['peak_traced_mib']:,.0f} MiB against the model's {r['model_mib']:,.0f} MiB "
        f"(largest tensor {r['largest_tensor_mib']:,.0f} MiB)",
        f"forward of {PREFILL} tokens (one sequence, float32): minimoe {r['minimoe_tokens_per_s']:,.0f} tokens/s, "
        f"transformers {r['torch_tokens_per_s']:,.0f} tokens/s ({r['torch_threads']} threads)",
    ])
