# %% [markdown]
# # Lesson 09 — Scale and systems: counting, the GPU, expert parallelism, serving
#
# An MoE model has two sizes. Its **total** parameters are what memory must hold: every expert of
# every layer. Its **active** parameters are what one token computes with: the router's top-$k$
# experts and everything that is not an expert. Mixtral 8x7B holds 46.7 billion parameters and
# uses 12.9 billion per token; DeepSeek-V3 holds 671 billion and uses 37 billion. Nearly every
# systems question about MoE comes from that gap: where do all those experts live, how do tokens
# reach them, and what does it cost to serve a model that is mostly experts that are idle at any
# moment?
#
# This lesson works through those questions with the library and with the tiny model, from paper
# figures to measured traces.
#
# **After this lesson you can**
# - count parameters, FLOPs per token and memory of a published MoE from its config, and reproduce
#   the published totals of Mixtral 8x7B and DeepSeek-V3 (`minimoe.calculator`);
# - run the same model on a GPU through CuPy, or see why it cannot run here;
# - explain expert parallelism: who sends how many token rows to whom in the all-to-all, measured
#   over MPI and simulated in one process, against top-$k$ and the capacity factor;
# - simulate expert offloading with an LRU cache on real routing traces, and compare it with the
#   optimal (Belady) policy and with a trace whose order is shuffled;
# - quantise experts to int8 per output channel, and measure memory against validation loss;
# - batch the decoding tokens of many requests with a batch window, and measure the throughput
#   it buys against the latency it costs, and why (one weight read per expert per batch).
#
# **Papers.**
# - Kaplan et al. (2020), *Scaling laws for neural language models*, arXiv 2001.08361, §2.1: FLOPs
#   per token, $2N$ forward and $6N$ for training.
# - Jiang et al. (2024), *Mixtral of experts*, arXiv 2401.04088, Table 1 (the architecture) and
#   §5 (routing locality). DeepSeek-AI (2024), *DeepSeek-V3 technical report*, arXiv 2412.19437,
#   §2.1 and §4.2 (the architecture and its sizes).
# - Lepikhin et al. (2020), *GShard*, arXiv 2006.16668, §2–3: experts sharded over devices and
#   tokens exchanged by all-to-all. Fedus, Zoph & Shazeer (2021), *Switch Transformers*, arXiv
#   2101.03961, §5: data, model and expert parallelism.
# - Rajbhandari et al. (2020), *ZeRO*, arXiv 1910.02054, §3.1: 16 bytes per parameter for
#   mixed-precision Adam.
# - Eliseev & Mazur (2023), *Fast inference of mixture-of-experts language models with
#   offloading*, arXiv 2312.17238: an LRU cache of experts in GPU memory, and quantised experts.
#   Belady (1966), *A study of replacement algorithms for a virtual-storage computer*, IBM Systems
#   Journal 5(2): the optimal replacement policy.
# - Dettmers et al. (2022), *LLM.int8()*, arXiv 2208.07339, §3: absmax int8 quantisation with one
#   scale per row or column ("vector-wise").
# - Yu et al. (2022), *Orca: a distributed serving system for Transformer-based generative
#   models*, OSDI: iteration-level (continuous) batching. Williams, Waterman & Patterson (2009),
#   *Roofline*, Communications of the ACM 52(4): memory- against compute-bound. The batch window
#   is the policy of Triton Inference Server's dynamic batcher (its documentation).
#
# **Library files used.** `minimoe/calculator.py`, `minimoe/backend.py`, `minimoe/parallel/`
# (its README explains running on a cluster), `minimoe/train.py`, `minimoe/serving.py`.
#
# **Prerequisites.** Lessons 03 (capacity and dispatch), 04 (the tiny MoE Transformer) and 07
# (DeepSeek-style experts).

# %% tags=["parameters"]
import os

FAST = os.environ.get("MINIMOE_FAST") == "1"  # CI runs every lesson with MINIMOE_FAST=1: fewer steps, same code
TRAIN_STEPS = 40 if FAST else 400  # steps of the tiny model whose routing we trace
TRACE_WINDOWS = 16 if FAST else 64  # contiguous validation windows of 64 characters for the cache
EVAL_BATCHES = 4 if FAST else 16  # validation batches for the quantisation's quality
GPU_STEPS = 5 if FAST else 20  # steps per backend in the CuPy timing (only where a GPU exists)

# %%
# The tiny model's matrices are far too small for BLAS threads to pay off, and on a busy machine
# the threads cost much more than they give; one thread per process (set before NumPy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dataclasses
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minimoe as mm
from minimoe import calculator
from minimoe.data import eval_batches, load_corpus, split
from minimoe.models import ModelConfig, Transformer, model_summary
from minimoe.parallel import simulate_all_to_all
from minimoe.seeds import summarize, verdict
from minimoe.serving import batch_window_schedule, serve_in_order
from minimoe.train import TrainConfig, evaluate, train

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.4, 3.6)})
np.set_printoptions(precision=3, suppress=True)
print("fast mode" if FAST else "full mode")

# %% [markdown]
# ## 1. Counting parameters
#
# A decoder-only Transformer is a stack of identical blocks plus two tables. Count each piece once
# and multiply:
#
# - the token **embedding**, $V \times d$, and the **LM head**, another $V \times d$ unless it is
#   tied to the embedding;
# - per block, the **attention** projections: $W_Q$ and $W_O$ are $d \times n_h d_h$; with
#   grouped-query attention (Mixtral) $W_K$ and $W_V$ have only $n_{kv}$ heads, $d \times n_{kv} d_h$
#   each; DeepSeek-V3's multi-head latent attention squeezes queries and keys/values through
#   low-rank latents instead;
# - per MoE block, the **router**, $d \times E$, and $E$ **experts**; a SwiGLU expert of hidden
#   width $h$ has three matrices (gate, up, down): $3 d h$; **shared experts** (DeepSeekMoE) are
#   experts that every token uses;
# - the **norms**: $d$ scales each for RMSNorm (two per block and a final one).
#
# The **active** count replaces the $E$ routed experts by the $k$ a token uses:
#
# $$N_\text{total} = N_\text{rest} + L_\text{MoE}\,E\,N_\text{expert},\qquad
#   N_\text{active} = N_\text{rest} + L_\text{MoE}\,k\,N_\text{expert}.$$
#
# `minimoe.calculator` counts every weight by the name it has in the reference implementations
# (Hugging Face's Mixtral and DeepSeek-V3 code) from a `TransformerSpec` filled in from each
# model's published config:

# %%
PUBLISHED = {"Mixtral 8x7B": (calculator.mixtral_8x7b(), 46.7e9, 12.9e9),
             "DeepSeek-V3": (calculator.deepseek_v3(), 671e9, 37e9)}

for name, (spec, total, active) in PUBLISHED.items():
    count = calculator.count_parameters(spec)
    print(f"{name}: {spec.n_layers} layers, d = {spec.d_model}, {spec.n_routed_experts} routed experts "
          f"(top-{spec.top_k}) of width {spec.expert_hidden}, {spec.n_shared_experts} shared, attention {spec.attention}")
    print(f"  {'component':16} {'total':>18} {'active':>18}")
    for part, value in count.breakdown.items():
        if value:
            print(f"  {part:16} {value:18,} {count.active_breakdown[part]:18,}")
    print(f"  {'sum':16} {count.total:18,} {count.active:18,}\n")

print(f"{'model':14} {'total (B)':>10} {'published':>10} {'error':>7}   {'active (B)':>10} {'published':>10} "
      f"{'error':>7}   {'routed experts: share of total':>30}")
for name, (spec, total, active) in PUBLISHED.items():
    count = calculator.count_parameters(spec)
    print(f"{name:14} {count.total / 1e9:10.2f} {total / 1e9:10.1f} {count.total / total - 1:7.2%}   "
          f"{count.active / 1e9:10.2f} {active / 1e9:10.1f} {count.active / active - 1:7.2%}   "
          f"{count.breakdown['routed_experts'] / count.total:30.1%}")

# %% [markdown]
# Both totals land on the published figures, to within the rounding of a figure quoted to three
# significant digits. DeepSeek-V3's active count includes the input embedding; without it, it
# would be 0.9 billion lower, and the published "37B" does not say which it means (both round to
# it). The breakdowns tell the real story: in both models nearly all the parameters are routed
# experts (the last column), and a token uses only a quarter of Mixtral's experts and 8 of
# DeepSeek-V3's 256.
#
# The same calculator describes our tiny model, and here we can check it against the truth: the
# number of parameters the engine actually allocates.

# %%
TINY = ModelConfig(d_model=64, n_layers=2, n_heads=4, context=64, n_experts=8, top_k=2, expert_hidden=128)
mm.manual_seed(0)
allocated = Transformer(TINY).num_parameters()
counted = calculator.count_parameters(TINY.transformer_spec())
print(f"tiny model: the engine allocates {allocated:,} parameters; the calculator counts {counted.total:,} "
      f"({counted.active:,} active)")
assert allocated == counted.total

groups = {"routed experts": ("routed_experts",), "shared experts + dense FFN": ("shared_experts", "dense_ffn"),
          "attention": ("attention",), "embedding + head": ("embedding", "head", "positions"),
          "router + norms": ("router", "norms")}
fig, axes = plt.subplots(1, 2, figsize=(11, 2.6), layout="constrained")
for ax, (name, (spec, _, _)) in zip(axes, PUBLISHED.items()):
    count = calculator.count_parameters(spec)
    left = np.zeros(2)
    for i, (group, parts) in enumerate(groups.items()):
        sizes = np.array([sum(table[part] for part in parts)
                          for table in (count.breakdown, count.active_breakdown)]) / 1e9  # (total, active)
        ax.barh([1, 0], sizes, left=left, color=f"C{i}", label=group)
        left += sizes
    ax.set_yticks([1, 0], ["total", "active"])
    ax.set_xlabel("billions of parameters")
    ax.set_title(f"{name}: where the parameters are")
axes[1].legend(fontsize=8, loc="lower right")
plt.show()

# %% [markdown]
# ## 2. Counting FLOPs
#
# A weight matrix with $m$ entries costs one multiply-add per entry for each token that goes
# through it, and a multiply-add is 2 FLOPs, so the forward pass costs about $2N$ FLOPs per token
# for $N$ **matrix** parameters (Kaplan et al. 2020, §2.1). Three details:
#
# - for an MoE, $N$ is the **active** count: only $k$ experts run;
# - the embedding is a table lookup, not a matrix product, so it costs nothing; the LM head is a
#   $d \times V$ product and counts;
# - attention adds, per block and token, $2 \cdot T \cdot n_h (d_{qk} + d_v)$ for the scores and
#   the weighted sum over $T$ positions, the only term that grows with the sequence length.
#
# The backward pass costs about twice the forward, so training costs about $6N$ per token.

# %%
print(f"{'model':14} {'seq len':>8} {'forward GFLOPs/token':>21} {'2 x active (B)':>15} {'training GFLOPs/token':>22}")
for name, (spec, _, _) in PUBLISHED.items():
    active = calculator.count_parameters(spec).active
    for seq_len in (1024, 4096, 32768):
        forward = calculator.flops_per_token(spec, seq_len)
        print(f"{name:14} {seq_len:8,} {forward / 1e9:21.1f} {2 * active / 1e9:15.1f} "
              f"{calculator.training_flops_per_token(spec, seq_len) / 1e9:22.1f}")

mixtral = PUBLISHED["Mixtral 8x7B"][0]
dense_twin = dataclasses.replace(mixtral, n_routed_experts=0, top_k=0, expert_hidden=0, dense_hidden=8 * 14336)
print(f"\nA dense model as large as Mixtral (one FFN of width 8 x 14336): "
      f"{calculator.count_parameters(dense_twin).total / 1e9:.1f} B parameters and "
      f"{calculator.flops_per_token(dense_twin, 4096) / 1e9:.1f} GFLOPs per token at 4096 tokens, against "
      f"Mixtral's {calculator.flops_per_token(mixtral, 4096) / 1e9:.1f}.")

# %% [markdown]
# At the same number of parameters, the MoE computes a fraction of what a dense model would:
# that is the whole point of sparsity. What it does *not* save is memory.
#
# ## 3. Memory
#
# Every expert must sit somewhere a token could reach it, so memory follows the **total** count.
# Serving needs the weights (2 bytes each in bf16, 1 in int8, half a byte in 4-bit formats) plus
# the KV cache and activations (left out here). Training with Adam in mixed precision holds, per
# parameter, bf16 weights and gradients (2 + 2 bytes), an fp32 master copy (4) and Adam's two fp32
# moments (4 + 4): 16 bytes (ZeRO, §3.1), before any activation.

# %%
GPU_BYTES = 80e9  # one 80 GB accelerator
print(f"{'model':14} {'what':32} {'GB':>10} {'80 GB GPUs':>11}")
for name, (spec, _, _) in PUBLISHED.items():
    rows = [("serving, bf16 weights", calculator.memory_bytes(spec, 2)),
            ("serving, int8 weights", calculator.memory_bytes(spec, 1)),
            ("serving, 4-bit weights", calculator.memory_bytes(spec, 0.5)),
            ("training, bf16 + fp32 Adam", calculator.memory_bytes(spec, 2, training=True, master_weights=True))]
    for what, estimate in rows:
        print(f"{name:14} {what:32} {estimate.total / 1e9:10,.0f} {int(np.ceil(estimate.total / GPU_BYTES)):11}")

# %% [markdown]
# In bf16 Mixtral needs two 80 GB GPUs for its weights alone; in int8 it fits on one, with what
# is left for the KV cache. DeepSeek-V3 needs most of a node even in 4-bit (336 GB: five of a
# node's eight 80 GB GPUs, before any KV cache), and training
# either model needs many more, for the model state before a single activation. Two answers
# follow, and the rest of the lesson
# takes them in turn: spread the experts over many devices (**expert parallelism**, section 5),
# or keep most of them in slower memory and bring in the ones the tokens need (**offloading**,
# section 6), helped by making each expert smaller (**quantisation**, section 7). First, the one
# accelerator a learner may have.
#
# ## 4. The GPU through CuPy
#
# minimoe computes with whatever array module the arrays belong to. `mm.use("cupy")` makes new
# tensors CuPy arrays on the GPU, and every op then runs there; `train(..., backend_name="cupy")`
# or `python -m minimoe.train --backend cupy` do the same for a run. Whether CuPy can be used
# here is one call, which never raises:

# %%
GPU_OK, why = mm.backend.cupy_status()
print("CuPy usable:", GPU_OK, "--", why)

# %%
MEDIUM = ModelConfig(d_model=256, n_layers=4, n_heads=4, context=128, n_experts=8, top_k=2, expert_hidden=512)


def tokens_per_second(backend_name):
    """Median training throughput of MEDIUM over GPU_STEPS steps (the first two are warm-up)."""
    config = TrainConfig(steps=GPU_STEPS + 2, batch_size=16, eval_every=10_000, eval_batches=1,
                         checkpoint_every=10_000, sample_length=1)
    with tempfile.TemporaryDirectory() as run:
        result = train(MEDIUM, config, run, backend_name=backend_name, progress=False, verbose=False, plots=False)
    mm.use("numpy")
    return float(np.median([r["tokens_per_s"] for r in result["records"][3:]]))


if GPU_OK:
    speeds = {name: tokens_per_second(name) for name in ("numpy", "cupy")}
    print(f"{model_summary(MEDIUM)}")
    for name, speed in speeds.items():
        print(f"{name:6} {speed:10,.0f} tokens per second")
    print(f"the GPU is {speeds['cupy'] / speeds['numpy']:.1f} x faster on this model")
else:
    print("No usable GPU here, so the timing is skipped. On a machine with an NVIDIA GPU, install the CuPy\n"
          "build for its CUDA (for example `pip install cupy-cuda12x`) and rerun this cell: it trains the\n"
          f"same {MEDIUM.d_model}-wide model for {GPU_STEPS} steps on NumPy and on CuPy and prints both throughputs.")

# %% [markdown]
# What changes on a GPU is only where arrays live. The rule that keeps that safe is that nothing
# may copy a device array to the host behind your back: CuPy refuses `np.asarray(gpu_array)`, and
# the engine only leaves the device through the explicit `backend.to_numpy`. The library's
# **strict** backend follows the same rules on the CPU, which is how the GPU path is tested where
# there is no GPU. It runs here:

# %%
mm.use("strict")
mm.manual_seed(0)
strict_model = Transformer(TINY)
logits = strict_model(np.zeros((1, 8), dtype=np.int64))  # (1, 8, V) on the stand-in "device"
print("logits live in a", type(logits.data).__name__)
try:
    np.asarray(logits.data)
except TypeError as err:
    print("np.asarray on a device array:", err)
print("the explicit copy works:", mm.backend.to_numpy(logits.data).shape)
mm.use("numpy")

# %% [markdown]
# ## 5. Expert parallelism
#
# When the experts do not fit on one device, give each of $R$ devices ("ranks") $E/R$ of them,
# and let every rank keep its own share of the tokens and a copy of everything else (attention,
# router). GShard (§2–3) and Switch (§5) call this expert parallelism. An MoE layer then runs as:
#
# 1. every rank routes its own tokens;
# 2. **dispatch all-to-all**: rank $s$ sends rank $q$ the rows of its tokens whose experts live on
#    $q$ — $n_{s \to q}$ rows of $d$ numbers;
# 3. every rank runs its experts on the rows it received;
# 4. **combine all-to-all**: the results go back the same way, and each rank sums its tokens'
#    $k$ weighted outputs.
#
# The diagram below draws one MoE layer on $R = 4$ ranks with 8 experts, two per rank: every rank
# sends rows to every rank (itself included: those rows never leave it), the experts run, and the
# results travel the reverse way.

# %%
def draw_all_to_all(ranks=4, experts_per_rank=2):
    """A schematic of expert parallelism: tokens -> dispatch all-to-all -> experts -> combine all-to-all."""
    fig, ax = plt.subplots(figsize=(11, 4.2), layout="constrained")
    columns = {"tokens": 0.0, "experts": 4.0, "outputs": 8.0}
    for r in range(ranks):
        y = ranks - 1 - r
        for name, x in columns.items():
            label = {"tokens": f"rank {r}\nits tokens, router",
                     "experts": f"rank {r}\nexperts " + ", ".join(str(r * experts_per_rank + j) for j in range(experts_per_rank)),
                     "outputs": f"rank {r}\ncombine its tokens"}[name]
            ax.add_patch(plt.Rectangle((x - 0.8, y - 0.32), 1.6, 0.64, facecolor=f"C{r}", alpha=0.25, edgecolor=f"C{r}"))
            ax.text(x, y, label, ha="center", va="center", fontsize=8)
    for s_ in range(ranks):
        for q in range(ranks):
            ys, yq = ranks - 1 - s_, ranks - 1 - q
            style = dict(arrowstyle="->", color=f"C{s_}", lw=1.6 if s_ == q else 0.9, ls="-" if s_ == q else "--")
            ax.annotate("", xy=(columns["experts"] - 0.85, yq), xytext=(columns["tokens"] + 0.85, ys), arrowprops=style)
            ax.annotate("", xy=(columns["outputs"] - 0.85, ys), xytext=(columns["experts"] + 0.85, yq), arrowprops=style)
    ax.text(2.0, ranks - 0.35, "dispatch all-to-all\n(rows $n_{s \\to q}$ of $d$ numbers)", ha="center", fontsize=9)
    ax.text(6.0, ranks - 0.35, "combine all-to-all\n(the same rows, back)", ha="center", fontsize=9)
    ax.set_xlim(-1, 9)
    ax.set_ylim(-0.6, ranks + 0.2)
    ax.axis("off")
    ax.set_title("Expert parallelism: solid arrows stay on their rank, dashed ones cross to another", fontsize=10)
    plt.show()


draw_all_to_all()

# %% [markdown]
# The backward pass repeats both exchanges in reverse with the gradients. Per MoE layer and step,
# the bytes that cross between ranks are
#
# $$\text{bytes} = \underbrace{2}_{\text{dispatch, combine}} \times \underbrace{2}_{\text{forward, backward}}
#   \times \sum_{s \ne q} n_{s \to q} \times d \times \text{bytes per value},$$
#
# and $\sum_q n_{s \to q}$ is rank $s$'s number of kept token–expert assignments: about $k$ times
# its tokens, fewer when the capacity factor drops some. The slowest rank sets the pace, so the
# balance of $\sum_s n_{s \to q}$ over the receiving ranks matters as much as the total.
#
# `minimoe.parallel` implements this over MPI: the all-to-all is an autograd op whose backward is
# the reverse all-to-all, and the capacity is that of the *global* batch, so the layer gives the
# same outputs and gradients as one process. Its `--check` runs both and compares them. If MPI is
# installed (`pip install mpi4py mpich` puts `mpiexec` next to the Python executable), we run it on
# two processes:

# %%
mpiexec = Path(sys.executable).parent / "mpiexec"
if mpiexec.exists() and importlib.util.find_spec("mpi4py") is not None:
    command = [str(mpiexec), "-n", "2", sys.executable, "-m", "minimoe.parallel", "--check"]
    print("$", " ".join(["mpiexec", "-n", "2", "python", "-m", "minimoe.parallel", "--check"]))
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # two ranks on few cores: no extra threads
    print(done.stdout + done.stderr)
    print(f"exit status {done.returncode} after {time.perf_counter() - began:.1f} s")
else:
    print(f"MPI is not available here ({mpiexec} or mpi4py missing): `pip install mpi4py mpich` to run the real\n"
          "all-to-all. The simulation below computes the same counts in this process.")

# %% [markdown]
# Each line of the first table is a router and capacity setting; the differences from the
# single-process layer are at float32 rounding, and "=sim" says the counts measured over MPI are
# the ones `simulate_all_to_all` computes in one process. That function runs the parallel layer's
# own planning code on each rank's shard of a routing decision, with the two collectives it needs
# replaced by sums, so we can study the traffic of **real routing** without MPI.
#
# For that we train the tiny model of lesson 08 (two MoE layers, 8 experts, top-2) briefly; it
# serves the rest of the lesson too.

# %%
train_text, val_text = split(load_corpus())
with tempfile.TemporaryDirectory() as run:
    began = time.perf_counter()
    result = train(TINY, TrainConfig(steps=TRAIN_STEPS, batch_size=16, lr=3e-3, warmup_steps=min(20, TRAIN_STEPS // 4),
                                     eval_every=TRAIN_STEPS, eval_batches=4, log_every=10,
                                     checkpoint_every=TRAIN_STEPS, sample_length=1),
                   run, progress=False, verbose=False, plots=False)
model = result["model"].eval()
print(f"tiny model: validation loss {result['val_losses'][0][1]:.3f} -> {result['final_val_loss']:.3f} "
      f"after {TRAIN_STEPS} steps ({time.perf_counter() - began:.0f} s)")

# %% [markdown]
# To vary $k$, we ask the same trained router of the first MoE layer for its top-$k$ experts with
# $k = 1, 2, 4, 8$ on one batch of 1024 tokens, spread over $R = 4$ ranks (2 experts each). Bytes
# are given at Mixtral's width ($d = 4096$, bf16) rather than the tiny model's, to make them
# concrete.

# %%
R, WIDTH, BYTES_PER_VALUE = 4, 4096, 2
batch = eval_batches(val_text.ids, val_text.domains, batch_size=16, context=TINY.context, n_batches=1)[0][0]  # (16, 64)


def first_layer_routes(model, x, k):
    """The first MoE layer's expert_index (N, k) when its trained router keeps its top-k experts."""
    router = model.moe_layers()[0].router
    trained_k, router.k = router.k, k
    try:
        with mm.no_grad():
            model(x)
    finally:
        router.k = trained_k
    return model.routing_reports()[0].expert_index.reshape(-1, k)


simulations = {(k, cf): simulate_all_to_all(first_layer_routes(model, batch, k), R, TINY.n_experts,
                                            capacity_factor=cf, d_model=WIDTH, bytes_per_value=BYTES_PER_VALUE)
               for k in (1, 2, 4, 8) for cf in (1.0, 1.25, 2.0, None)}

print(f"{'top-k':>5} {'capacity factor':>16} {'dropped':>8} {'rows across':>12} {'MB per step':>12} "
      f"{'busiest rank / mean':>20}")
for (k, cf), sim in simulations.items():
    received = sim.send_counts.sum(axis=0)  # (R,) rows each rank's experts process
    print(f"{k:5} {cf if cf else 'dropless':>16} {sim.n_dropped / (k * batch.size):8.1%} {int(sim.rows_out.sum()):12,} "
          f"{sim.bytes_per_step / 1e6:12.1f} {received.max() / received.mean():20.2f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
sim = simulations[2, None]
image = axes[0].imshow(sim.send_counts, cmap="Blues", vmin=0)
for s in range(R):
    for q in range(R):
        axes[0].text(q, s, sim.send_counts[s, q], ha="center", va="center", fontsize=9,
                     fontweight="bold" if s == q else "normal")
axes[0].set_xticks(range(R))
axes[0].set_yticks(range(R))
axes[0].set_xlabel("receiving rank q")
axes[0].set_ylabel("sending rank s")
axes[0].set_title("rows sent, top-2 dropless (bold: the diagonal stays home)", fontsize=10)
fig.colorbar(image, ax=axes[0], shrink=0.8)
for cf, marker in ((1.0, "o"), (1.25, "s"), (2.0, "^"), (None, "x")):
    ks = [1, 2, 4, 8]
    axes[1].plot(ks, [simulations[k, cf].bytes_per_step / 1e6 for k in ks], marker=marker, label=f"cf {cf or 'dropless'}")
axes[1].set_xscale("log", base=2)
axes[1].set_xticks([1, 2, 4, 8], [1, 2, 4, 8])
axes[1].set_xlabel("top-k")
axes[1].set_ylabel("MB between ranks per step")
axes[1].set_title(f"one MoE layer, {batch.size} tokens, d = {WIDTH}, bf16", fontsize=10)
axes[1].legend(fontsize=8)
axes[1].grid(alpha=0.3)
plt.show()

# %% [markdown]
# The traffic grows in proportion to $k$: every extra expert per token is one more row sent and
# received, twice, forward and backward. With $R$ ranks, a fraction of about $(R-1)/R$ of the rows
# leave their rank (the off-diagonal of the matrix), so adding ranks hardly reduces it. A capacity
# factor caps each expert's rows and so drops traffic (and tokens) when the router is unbalanced;
# at factor 2 little is dropped. The last column is the balance that sets the speed: the
# busiest rank's experts process more rows than the mean, and everyone waits for it. That is what
# the balancing losses of lessons 03 and 07 are for; note how much worse the balance is at top-1
# than at top-2. DeepSeek's device-limited (V2) and node-limited (V3) routing answer a different
# cost: they bound *communication*, the number of devices or nodes a token's rows can reach, not
# the balance of the ranks.
#
# ## 6. Serving: expert offloading and caching
#
# One accelerator, a model whose experts do not fit: keep the experts in host memory and copy in
# the ones a token needs. Generating text runs one token at a time, so each MoE layer needs, per
# token, its $k$ experts — and if the last few tokens used the same ones, they may still be on
# the device. Eliseev & Mazur keep an **LRU cache** of experts per layer in GPU memory: on a miss,
# copy the expert in and evict the one used least recently. How well that works depends on the
# routing's temporal locality, which Mixtral's §5 observed: consecutive tokens often go to the same
# experts.
#
# We measure it on routing traces of the tiny model: contiguous validation text, each character's
# two experts in each layer, in reading order (a causal model routes a character the same whether
# it is generated or read, given the same context). The policies, for a cache of $C$ experts per
# layer:
#
# - **LRU**: evict the least recently used;
# - **LFU**: evict the least frequently used so far (ties: least recently);
# - **Belady**: evict the expert whose next use is farthest in the future — optimal, but it needs
#   to know the future, so it is the bound no online policy can beat;
# - **LRU on a shuffled trace**: the same requests in random order, which keeps how often each
#   expert is used and destroys the locality. The gap to plain LRU is what locality is worth.
#
# A cache is a sequential process — each decision depends on the ones before — so this cell loops
# over tokens.

# %%
stream = val_text.ids[:TRACE_WINDOWS * TINY.context].reshape(TRACE_WINDOWS, TINY.context)  # contiguous text
with mm.no_grad():
    model(stream)
trace = np.stack([report.expert_index.reshape(-1, TINY.top_k) for report in model.routing_reports()])  # (L, N, k)
E = TINY.n_experts
print(f"trace: {trace.shape[1]:,} characters x {trace.shape[0]} layers x top-{trace.shape[2]}")


def next_uses(requests):
    """(N, E): the index of the next token after t that needs expert e (N if none)."""
    n = len(requests)
    result = np.full((n, E), n)
    for e in range(E):
        used_at = np.flatnonzero((requests == e).any(axis=1))  # tokens that need e
        after = np.searchsorted(used_at, np.arange(n), side="right")  # first use strictly after t
        result[:, e] = np.append(used_at, n)[after]
    return result


def hit_rate(requests, capacity, policy):
    """Fraction of the expert requests (N, k) of one layer served from a cache of `capacity` experts."""
    future = next_uses(requests) if policy == "belady" else None
    cache, hits = set(), 0
    last_used, uses = np.zeros(E), np.zeros(E)
    for t, needed in enumerate(requests.tolist()):
        needed = set(needed)
        hits += len(needed & cache)
        for expert in needed - cache:
            if len(cache) >= capacity:  # evict one that this token does not need
                candidates = cache - needed
                if policy == "lru":
                    victim = min(candidates, key=lambda e: last_used[e])
                elif policy == "lfu":
                    victim = min(candidates, key=lambda e: (uses[e], last_used[e]))
                else:  # belady: the one needed again last
                    victim = max(candidates, key=lambda e: future[t, e])
                cache.remove(victim)
            cache.add(expert)
        for expert in needed:
            last_used[expert], uses[expert] = t, uses[expert] + 1
    return hits / requests.size


sizes = list(range(TINY.top_k, E + 1))
shuffled_trace = trace[:, np.random.default_rng(0).permutation(trace.shape[1])]
curves = {}
for name, policy, source in (("LRU", "lru", trace), ("LFU", "lfu", trace), ("Belady (optimal)", "belady", trace),
                             ("LRU, shuffled trace", "lru", shuffled_trace)):
    curves[name] = np.array([[hit_rate(source[layer], c, policy) for c in sizes] for layer in range(trace.shape[0])])

fig, axes = plt.subplots(1, trace.shape[0], figsize=(11, 3.6), sharey=True, layout="constrained")
for layer, ax in enumerate(axes):
    for (name, curve), style in zip(curves.items(), ("o-", "s-", "^--", "x:")):
        ax.plot(sizes, curve[layer], style, label=name)
    ax.plot(sizes, np.array(sizes) / E, color="0.6", lw=1, label="C / E (no locality, uniform use)")
    ax.set_xlabel("cache size C (experts per layer)")
    ax.set_title(f"layer {layer}")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("hit rate")
axes[0].legend(fontsize=8)
plt.show()

print(f"{'cache size':>10} " + " ".join(f"{name:>22}" for name in curves))
for i, c in enumerate(sizes):
    print(f"{c:10} " + " ".join(f"{curve[:, i].mean():22.1%}" for curve in curves.values()))
print("(hit rates averaged over the two layers)")

# %% [markdown]
# Read the curves from the left: with room for only $k = 2$ experts per layer, every token that
# changes experts costs a copy. LRU on the real trace beats LRU on the same requests shuffled —
# the routing has temporal locality — and Belady shows how much better any policy could do with
# knowledge of the future, which is what Eliseev & Mazur's *speculative* loading tries to
# approximate by guessing the next layer's experts early. LRU and LFU come out close on these
# traces; which one is ahead depends on the cache size and the layer.
#
# What do the misses cost? A miss copies one expert over the host–device link. Take Mixtral's
# experts (from the calculator) and a PCIe link of about 25 GB/s, and suppose its routing had the
# LRU hit rates of our tiny model:

# %%
expert_bytes = calculator.ffn_params(mixtral, mixtral.expert_hidden) * 2  # one bf16 SwiGLU expert
LINK, HBM = 25e9, 2e12  # bytes per second: host to device (PCIe 4.0 x16), and the GPU's own memory
lru = curves["LRU"].mean(axis=0)
active_bytes = calculator.count_parameters(mixtral).active * 2
print(f"one Mixtral expert: {expert_bytes / 1e6:.0f} MB in bf16, {expert_bytes / LINK * 1e3:.1f} ms over the link")
print(f"for comparison, one token at batch size one reads its {active_bytes / 1e9:.1f} GB of active weights from "
      f"GPU memory in about {active_bytes / HBM * 1e3:.0f} ms")
print(f"{'cache (experts/layer)':>22} {'GPU memory for experts':>23} {'misses per token':>17} {'copy time per token':>20}")
for i, c in enumerate(sizes):
    misses = (1 - lru[i]) * mixtral.top_k * mixtral.n_layers
    print(f"{c:22} {c * mixtral.n_layers * expert_bytes / 1e9:20.1f} GB {misses:17.1f} {misses * expert_bytes / LINK:18.2f} s")

# %% [markdown]
# Even a good hit rate leaves copy times far above the time the GPU needs for a token, which is
# why offloading systems also shrink the experts — the next section — and overlap the copies with
# computation.
#
# ## 7. Serving: quantised experts
#
# Store each expert weight as an 8-bit integer and a scale instead of a 16- or 32-bit float. The
# symmetric **absmax** scheme maps the largest magnitude of a group of weights to 127. With one
# scale per **output channel** (a column of $W$ in $y = xW$, as LLM.int8()'s vector-wise
# quantisation), one unusually large weight only coarsens its own column:
#
# $$s_j = \frac{\max_i |W_{ij}|}{2^{b-1} - 1},\qquad
#   Q_{ij} = \mathrm{round}\!\left(\frac{W_{ij}}{s_j}\right) \in \{-(2^{b-1}-1), \dots, 2^{b-1}-1\},
#   \qquad \hat W_{ij} = s_j\, Q_{ij}.$$
#
# With $b = 8$ the integers fit in `int8`. At serving time the kernel multiplies by the integers and
# rescales; here we simply put $\hat W$ back into the model (weight-only quantisation, simulated)
# and measure the validation loss. Memory counts $b$ bits per weight plus one float32 scale per
# column; fewer bits than 8 would need packing, which we count but do not implement. One scale
# for a whole expert matrix ("per tensor") is the comparison.

# %%
def quantise(weights, bits, per_channel=True):
    """Symmetric absmax quantisation of stacked expert weights (E, d_in, d_out): (int8 codes, scales)."""
    top = 2 ** (bits - 1) - 1  # 127 for 8 bits
    axes = 1 if per_channel else (1, 2)  # one scale per output column, or per matrix
    scale = np.abs(weights).max(axis=axes, keepdims=True) / top  # (E, 1, d_out) or (E, 1, 1)
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    codes = np.clip(np.round(weights / scale), -top, top).astype(np.int8)
    return codes, scale


def expert_weights(model):
    return [w for layer in model.moe_layers() for w in (layer.experts.w_in, layer.experts.w_out)]


quality_batches = eval_batches(val_text.ids, val_text.domains, batch_size=16, context=TINY.context,
                               n_batches=EVAL_BATCHES)
originals = [w.data.copy() for w in expert_weights(model)]
n_weights = sum(w.size for w in originals)
float_loss = evaluate(model, quality_batches)

codes, scale = quantise(originals[0], 8)
print(f"first expert matrix {originals[0].shape}: {originals[0].nbytes:,} bytes as float32 -> "
      f"{codes.nbytes:,} bytes of {codes.dtype} + {scale.nbytes:,} bytes of scales; "
      f"largest error {np.abs(codes * scale - originals[0]).max():.2e} (weights up to {np.abs(originals[0]).max():.2f})")

rows = []
for bits, per_channel in ((8, True), (6, True), (4, True), (3, True), (2, True), (8, False), (4, False)):
    n_scales = 0
    for weight, original in zip(expert_weights(model), originals):
        codes, scale = quantise(original, bits, per_channel)
        weight.data = codes * scale  # the dequantised weights, float32 again
        n_scales += scale.size
    rows.append((bits, per_channel, (n_weights * bits / 8 + 4 * n_scales) / 1e3, evaluate(model, quality_batches)))
for weight, original in zip(expert_weights(model), originals):
    weight.data = original  # the float model back

print(f"\n{'experts stored as':26} {'memory (KB)':>12} {'validation loss':>16} {'change':>9}")
print(f"{'float32':26} {n_weights * 4 / 1e3:12.1f} {float_loss:16.4f} {'':>9}")
for bits, per_channel, kb, loss in rows:
    label = f"int{bits}, {'per channel' if per_channel else 'per tensor'}"
    print(f"{label:26} {kb:12.1f} {loss:16.4f} {loss - float_loss:+9.5f}")

FLOOR = 1e-6  # changes smaller than this are drawn at it (a log axis has no zero)
fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
for per_channel, marker, color, offset in ((True, "o", "C0", (4, 6)), (False, "s", "C1", (4, -12))):
    chosen = [r for r in rows if r[1] == per_channel]
    change = np.array([r[3] - float_loss for r in chosen])
    kb = np.array([r[2] for r in chosen])
    ax.plot(kb, np.maximum(np.abs(change), FLOOR), "-" if per_channel else "--", color=color, lw=1)
    ax.plot(kb[change >= 0], np.maximum(change[change >= 0], FLOOR), marker, color=color,
            label="per channel" if per_channel else "per tensor")
    ax.plot(kb[change < 0], np.maximum(-change[change < 0], FLOOR), marker, color=color, mfc="none")
    for (bits, _, _, _), x, y in zip(chosen, kb, change):
        ax.annotate(f"int{bits}", (x, max(abs(y), FLOOR)), textcoords="offset points", xytext=offset, fontsize=8)
ax.plot([], [], "ko", mfc="none", label="hollow: loss came out lower (noise, not a gain)")
ax.set_yscale("log")
ax.set_xlabel("memory of the experts (KB)")
ax.set_ylabel("|validation loss - float32 loss| (nats)")
ax.set_title("Quantised experts: memory against quality")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Per-channel int8 cuts the experts' memory to about a quarter of float32 (half of bf16) and
# changes the validation loss only in the last digits printed — sometimes downward, which is
# rounding luck on these batches, not a gain (the hollow markers: the plot shows the size of each
# change on a log axis, so that a lucky sign cannot pass for an improvement). The loss stays close
# down to a few bits and then breaks at 2. Per-tensor scales, where one large weight sets the step
# for its whole matrix, cost only slightly more at 4 bits here (compare the two int4 rows): the
# tiny model's expert columns have similar ranges, and the difference grows with their spread
# (question 7). Experts tolerate this well, and since they are nearly all of an MoE's
# memory, quantising them is most of the saving: Eliseev & Mazur serve Mixtral with experts of
# 2–3 bits, and QMoE (Frantar & Alistarh 2023, arXiv 2310.16795) compresses a 1.6-trillion
# parameter Switch model below one bit per parameter. A tiny model trained for minutes is not a
# proof for a large one; the measurement — loss on held-out data against bytes — is the one to
# make there too.

# %% [markdown]
# ## 8. Serving: batching the tokens of many requests per expert
#
# A server generating text for many users runs the model one token per request per step, and the
# tokens arrive when each user's stream delivers them, not when the server would like them. Run
# each token the moment it arrives and every call carries one token; wait a little and one call
# carries the tokens of many requests. Inside the MoE layer the sorted dispatch of lesson 03 then
# gathers the batch's tokens **per expert** — sorted by expert, one product per expert — so an
# expert chosen by ten tokens of the batch is read once for all ten instead of ten times.
#
# The policy is a **batch window**: the first waiting token opens a window of $W$ seconds; the
# batch leaves when the window closes or when it holds $B$ tokens, whichever comes first. These
# are the two knobs of Triton Inference Server's dynamic batcher (`max_queue_delay_microseconds`
# and `max_batch_size`). One server then runs the batches first come, first served, and a batch
# that is ready while the server is busy waits in the queue. A token's latency is all of it:
#
# $$\text{latency} = \underbrace{\text{dispatch} - \text{arrival}}_{\text{the window: at most } W}
#   + \underbrace{\text{queue}}_{\text{server busy}} + \underbrace{c(n)}_{\text{compute of its batch of } n \text{ tokens}}.$$
#
# `minimoe.serving` has both steps: `batch_window_schedule` (which tokens form each batch, and
# when it leaves) and `serve_in_order` (the queue: Lindley's recursion
# $f_b = \max(r_b, f_{b-1}) + c_b$ for the finish time $f_b$ of batch $b$, ready at $r_b$).
#
# The traffic: $R$ requests decode at once, each a stream of tokens arriving as a Poisson process
# (exponential gaps, seeded). The tokens are real: request $r$ is a window of validation text, and
# each of its tokens enters the first MoE layer of the trained tiny model with the hidden state
# the model computes for it. One simplification: the arrivals are *open loop* — they do not wait
# for the server — whereas a real decoder's next token exists only once its previous one is
# computed.
#
# First, a check that batching changes nothing but the time: with dropless routing a token's
# output does not depend on its batch-mates (with a capacity factor it would: they compete for
# the experts' slots, lesson 03).

# %%
REQUESTS = 16 if FAST else 32
TOKENS_PER_REQUEST = 16 if FAST else 32  # on average: each request decodes for the same duration
layer, first_block = model.moe_layers()[0], model.blocks[0]
requests = val_text.ids[:REQUESTS * TINY.context].reshape(REQUESTS, TINY.context)  # room for 2x the mean
with mm.no_grad():  # the first block up to its MoE layer, as Transformer.forward runs it
    h = model.token_embedding(requests) + model.position_embedding(np.arange(TINY.context))
    h = h + first_block.attention(first_block.attention_norm(h))
    hidden = first_block.ffn_norm(h).data  # (R, T, d) what the MoE layer sees
    layer(mm.tensor(hidden))
    expert_index = layer.report.expert_index  # (R, T, k) each token's experts
    flat = hidden.reshape(-1, TINY.d_model)
    together = layer(mm.tensor(flat[:64])).data  # (64, d) in one batch
    alone = np.concatenate([layer(mm.tensor(flat[i:i + 1])).data for i in range(64)])  # one at a time
print(f"{REQUESTS} requests, each decoding about {TOKENS_PER_REQUEST} tokens of width {TINY.d_model}; "
      f"top-{TINY.top_k} of {TINY.n_experts} experts")
print(f"64 tokens in one batch against one at a time: largest difference {np.abs(together - alone).max():.1e}")
assert np.allclose(together, alone, atol=1e-5)

# %% [markdown]
# Every batch below is run through the layer and timed: the median of several repeats is its
# compute time $c(n)$. The load is set from the measured cost of a single token, so that it means
# the same on a faster or a slower machine: a **light** load of 30% of what one-at-a-time serving
# can sustain ($1/c(1)$ tokens per second), and a **heavy** one of twice that. Each setting runs on
# three seeds of the arrival process; the tables give mean ± spread over them (`minimoe.seeds`).

# %%
REPEATS = 3 if FAST else 5  # every batch is timed this many times; its compute time is the median
WINDOWS_MS = (0, 0.5, 1, 2, 4, 8, 16)  # 0: every token alone (Poisson arrivals never coincide)
MAX_BATCH = 64
LOADS = {"light": 0.3, "heavy": 2.0}  # offered tokens per second, as a multiple of 1 / c(1)
ARRIVAL_SEEDS = (0, 1, 2)


def time_layer(x):
    """Wall time of one forward of the MoE layer on tokens x (n, d), without an autograd graph."""
    with mm.no_grad():
        began = time.perf_counter()
        layer(mm.tensor(x))
        return time.perf_counter() - began


one_token = float(np.median([time_layer(flat[i:i + 1]) for i in range(200)]))
print(f"one token through the MoE layer: c(1) = {one_token * 1e6:.0f} us (median of 200 calls), "
      f"so one at a time serves at most {1 / one_token:,.0f} tokens/s")


def serve(total_rate, window, seed):
    """One run of the batch window on seeded Poisson traffic of `total_rate` tokens/s."""
    rng = np.random.default_rng(seed)
    duration = REQUESTS * TOKENS_PER_REQUEST / total_rate  # seconds of traffic
    arrival = np.cumsum(rng.exponential(REQUESTS / total_rate, (REQUESTS, TINY.context)), axis=1)  # (R, T)
    arrived = arrival < duration  # (R, T) the tokens of the run
    assert not arrived[:, -1].any(), "a request ran out of text: raise TINY.context or lower TOKENS_PER_REQUEST"
    arrival, x, chosen = arrival[arrived], hidden[arrived], expert_index[arrived]  # (N,), (N, d), (N, k)
    batch, dispatch = batch_window_schedule(arrival, window, MAX_BATCH)  # (N,), (N,)
    sizes = np.bincount(batch)  # (n_batches,)
    members = np.split(np.argsort(batch, kind="stable"), np.cumsum(sizes)[:-1])  # each batch's tokens
    compute = np.median([[time_layer(x[m]) for m in members] for _ in range(REPEATS)], axis=0)  # (n_batches,)
    ready = np.zeros(len(sizes))
    ready[batch] = dispatch
    latency = serve_in_order(ready, compute)[batch] - arrival  # (N,) window + queue + compute
    read = np.zeros((len(sizes), TINY.n_experts), dtype=bool)
    read[batch[:, None], chosen] = True  # (n_batches, E) the experts each batch runs
    n = len(arrival)
    return dict(batch=sizes.mean(), per_product=chosen.size / read.sum(), reads=read.sum() / n,
                throughput=n / compute.sum(), busy=compute.sum() / duration,
                wait=(dispatch - arrival).mean(), mean=latency.mean(), p95=np.percentile(latency, 95),
                sizes=sizes, compute=compute)


began = time.perf_counter()
runs = {(load, w): [serve(share / one_token, w / 1e3, seed) for seed in ARRIVAL_SEEDS]
        for load, share in LOADS.items() for w in WINDOWS_MS}
print(f"{sum(len(r['sizes']) for rs in runs.values() for r in rs) * REPEATS:,} timed calls in "
      f"{time.perf_counter() - began:.0f} s\n")


def mean_of(load, w, key):
    return np.mean([r[key] for r in runs[load, w]])


for load, share in LOADS.items():
    print(f"{load} load: {share / one_token:,.0f} tokens/s offered ({share:.0%} of one-at-a-time capacity), "
          f"batches of at most {MAX_BATCH}")
    print(f"{'W (ms)':>6} {'batch':>6} {'tokens per':>10} {'expert reads':>12} {'throughput (tokens/s)':>22} "
          f"{'server':>7} {'wait':>6} {'latency per token (ms)':>31}")
    print(f"{'':>6} {'':>6} {'product':>10} {'per token':>12} {'':>22} {'busy':>7} {'(ms)':>6} "
          f"{'mean':>15} {'p95':>15}")
    for w in WINDOWS_MS:
        rs = runs[load, w]
        tput, mean, p95 = (summarize([r[key] * scale for r in rs])
                           for key, scale in (("throughput", 1), ("mean", 1e3), ("p95", 1e3)))
        print(f"{w:6g} {mean_of(load, w, 'batch'):6.1f} {mean_of(load, w, 'per_product'):10.1f} "
              f"{mean_of(load, w, 'reads'):12.2f} {tput.mean:13,.0f} ± {tput.spread:6,.0f} "
              f"{mean_of(load, w, 'busy'):7.0%} {mean_of(load, w, 'wait') * 1e3:6.2f} "
              f"{mean.mean:8.2f} ± {mean.spread:5.2f} {p95.mean:8.2f} ± {p95.spread:5.2f}")
    print()

for load in LOADS:
    best = min(WINDOWS_MS, key=lambda w: mean_of(load, w, "mean"))
    alone = [r["mean"] * 1e3 for r in runs[load, 0]]
    print(f"{load} load, throughput, W = {WINDOWS_MS[-1]} ms against one at a time: "
          + verdict([r["throughput"] for r in runs[load, WINDOWS_MS[-1]]],
                    [r["throughput"] for r in runs[load, 0]], f"W = {WINDOWS_MS[-1]} ms", "W = 0",
                    lower_is_better=False))
    if best == 0:
        print(f"{load} load, mean latency: one at a time (W = 0) is the lowest, {summarize(alone)} ms")
    else:
        print(f"{load} load, mean latency (ms), the best window W = {best} ms against one at a time: "
              + verdict([r["mean"] * 1e3 for r in runs[load, best]], alone, f"W = {best} ms", "W = 0"))

# %% [markdown]
# Where does the time of a call go? Fit $c(n) = c_0 + c_1 n$ to every batch timed above: $c_0$ is
# what a call costs whatever it carries, $c_1$ what each token adds. Beside it, the matrix
# products that one token actually needs — two experts, two products each — timed alone in NumPy.

# %%
sizes = np.concatenate([r["sizes"] for rs in runs.values() for r in rs])
computes = np.concatenate([r["compute"] for rs in runs.values() for r in rs])
per_token_cost, fixed_cost = np.polyfit(sizes, computes, 1)  # c(n) = c_0 + c_1 n, least squares


def wall_time(fn, repeats):
    """Median wall time of fn() over `repeats` calls."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return float(np.median(times))


w_in, w_out = layer.experts.w_in.data, layer.experts.w_out.data  # (E, d, h), (E, h, d)
products = wall_time(lambda: [flat[:1] @ w_in[e] @ w_out[e] for e in expert_index[0, 0]], 500)
print(f"c(n) = {fixed_cost * 1e6:.0f} us + {per_token_cost * 1e6:.2f} us x n, fitted to {len(sizes):,} "
      f"timed batches of 1 to {sizes.max()} tokens")
print(f"one token's four expert products alone (NumPy, no activation): {products * 1e6:.1f} us, "
      f"{products / fixed_cost:.0%} of the fixed cost of a call")
print(f"the cost per token c(n) / n falls towards c_1 as n grows; it is within 2x of c_1 once "
      f"n >= c_0 / c_1 = {fixed_cost / per_token_cost:.0f} tokens")

# %%
fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
for (load, share), color in zip(LOADS.items(), ("C0", "C3")):
    for key, style, label in (("mean", "o-", "mean"), ("p95", "s--", "p95")):
        x = [mean_of(load, w, key) * 1e3 for w in WINDOWS_MS]
        y = [mean_of(load, w, "throughput") for w in WINDOWS_MS]
        spread = [summarize([r["throughput"] for r in runs[load, w]]).spread for w in WINDOWS_MS]
        ax.errorbar(x, y, yerr=spread, fmt=style, color=color, mfc="none" if key == "p95" else color,
                    ms=5, lw=1, capsize=2, label=f"{load} load ({share:.0%} of 1 / c(1)), {label} latency")
        if key == "mean":
            for w, xi, yi in zip(WINDOWS_MS, x, y):
                ax.annotate(f"{w:g}", (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7,
                            color=color)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("latency per token (ms): window + queue + compute")
ax.set_ylabel("throughput (tokens per second of compute)")
ax.set_title("Batch window W (ms, labels): throughput against latency, first MoE layer", fontsize=10)
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# Read the table row by row. The window gathers tokens (the batch column), the dispatch then
# gathers each expert's share of them (tokens per product), and the expert weight reads per token
# fall from $k = 2$ — every token alone reads its two experts — towards $E/n$. Throughput grows
# with the batch because a call's cost is mostly fixed: the fit above puts $c_0$ at dozens of
# tokens' worth of $c_1$, so a batch of $c_0 / c_1$ tokens costs only twice one token. (The
# throughput column is noisy: it divides by a sum of short timings on a shared machine.) The
# price is the window. At the light load the server is idle much of the
# time (the "server busy" column), a token that arrives is usually served at once, and a window
# mostly adds its wait — a mean of about $W/2$ and a p95 near $W$. At the heavy load one at a
# time is not an option: it would need more than all of the server's time, the queue grows for as
# long as the traffic lasts, and the latency of $W = 0$ is set by the queue, not by the model; on a
# longer trace it would grow without bound. A window cures it by making each call carry more
# tokens; once the server is comfortably below fully busy, a longer window only adds waiting. So
# the lowest latency there belongs to the shortest window that keeps the server well short of
# 100% busy — a window whose batches leave the server nearly full still queues, and its latency
# swings from seed to seed. Which window that is depends on how fast this machine ran the layer;
# the verdict lines name it and compare it, and the largest window's throughput, with one at a
# time over the three arrival seeds.
#
# **Why it pays, and why more on a GPU.** On this CPU the fixed cost is not the weights: one
# token's four expert products take a few percent of it (the line above), and the rest is the
# layer's other per-call work in Python and NumPy — routing, sorting, building the report. The
# argument the batch window is usually made with is the *weights*: a matrix product $x W$ with $x$
# of $n$ rows reads all of $W$ once, whatever $n$, and does $2n$ FLOPs per weight. At small $n$
# its time is the time to read $W$ from memory, so more rows are nearly free, until the
# arithmetic catches up with the memory (the roofline of Williams, Waterman & Patterson 2009,
# *CACM* 52(4)). A matrix too large for any cache shows it here:

# %%
BIG = (4096, 8192)  # 128 MiB of float32: far larger than a CPU's last-level cache
ROWS = (1, 2, 4, 8, 16, 32, 64) if FAST else (1, 2, 4, 8, 16, 32, 64, 128)
generator = np.random.default_rng(0)
big = generator.standard_normal(BIG, dtype=np.float32)
per_call = {}
print(f"x (n, {BIG[0]}) @ W ({BIG[0]}, {BIG[1]}), {big.nbytes / 2**20:.0f} MiB of weights; "
      f"median of {REPEATS} calls")
print(f"{'rows n':>6} {'time (ms)':>10} {'per row (ms)':>13} {'weights read (GB/s)':>20} {'GFLOP/s':>8}")
for n in ROWS:
    x = generator.standard_normal((n, BIG[0]), dtype=np.float32)
    per_call[n] = t = wall_time(lambda: x @ big, REPEATS)
    print(f"{n:6} {t * 1e3:10.2f} {t / n * 1e3:13.3f} {big.nbytes / t / 1e9:20.1f} "
          f"{2 * n * big.size / t / 1e9:8.1f}")
bandwidth = big.nbytes / per_call[1]  # bytes/s with one row: the weight read alone
flops = max(2 * n * big.size / per_call[n] for n in ROWS)  # the best arithmetic rate measured
del big
GPU_FLOPS, GPU_BYTES_PER_S = 989e12, 3.35e12  # an H100 SXM: dense bf16 peak and memory bandwidth (NVIDIA)
print(f"\nthis CPU: the weights stream at {bandwidth / 1e9:.0f} GB/s with one row, and the best rate is "
      f"{flops / 1e9:.0f} GFLOP/s; reading a float32 weight (4 bytes) takes as long as its 2n FLOPs at "
      f"n = 2 F / B = {2 * flops / bandwidth:.0f} rows")
print(f"an H100 SXM ({GPU_FLOPS / 1e12:.0f} TFLOP/s dense bf16, {GPU_BYTES_PER_S / 1e12:.2f} TB/s): a bf16 weight "
      f"(2 bytes) against 2n FLOPs meets at n = F / B = {GPU_FLOPS / GPU_BYTES_PER_S:.0f} rows per expert product")

rows = np.array(ROWS)
read_floor = per_call[1] / rows  # the one weight read, shared by n rows
arithmetic_floor = np.full(len(rows), 2 * BIG[0] * BIG[1] / flops)  # 2|W| FLOPs per row at the best rate
fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
ax.plot(rows, [per_call[n] / n * 1e3 for n in ROWS], "o-", label="measured")
ax.plot(rows, read_floor * 1e3, color="C1", lw=1, ls="--", label="the weight read of one row, shared: t(1) / n")
ax.plot(rows, arithmetic_floor * 1e3, color="C2", lw=1, ls="--", label="the arithmetic at the best rate measured")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("rows n in the product x W (tokens sharing one weight read)")
ax.set_ylabel("time per row (ms)")
ax.set_title(f"One {BIG[0]} x {BIG[1]} weight read shared by n rows (NumPy, this CPU)", fontsize=10)
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# With one row the product is the weight read: 128 MiB at the GB/s of the first line, and almost
# no arithmetic. Adding rows shares that read: the time per row falls several-fold and levels off
# at the arithmetic every row needs, the second floor of the plot. The roofline puts the meeting
# of the two floors at $n = 2F/B$ rows for float32 (the line below the table). The measured curve
# lies above both floors in between and is not smooth: for one row OpenBLAS uses a matrix-vector
# kernel, for more rows matrix-matrix kernels that need many rows to run at full speed. The tiny
# model's experts are nothing like this: a 64 x 128 matrix is 32 KB, it sits in the CPU's cache,
# and its products were a few percent of a call (measured above).
#
# A GPU moves both ends (the last line above). Its arithmetic is about three hundred times faster
# than its memory in these units, so an expert product stays bound by the weight read until a few
# hundred rows share it — far past the rows at which this CPU's memory and arithmetic meet. Its
# per-call overhead is kernel launches, microseconds each rather than the hundreds of
# microseconds of Python measured here, so on a GPU the fixed cost of a call *is* mostly the
# weight read, and the roofline argument is the story. An MoE makes it harder than a dense model:
# a batch of $n$ tokens gives each of $E$ experts only about $nk/E$ rows (the "tokens per product"
# column; $E/k = 4$ here, 32 for DeepSeek-V3's top-8 of 256), so an MoE needs about $E/k$ times
# the batch of a dense model to fill its expert products as well. None of these GPU figures is
# measured here; the H100's are its data-sheet peaks.
#
# **What it costs.** Latency, first: every token waits up to $W$ for company, and no batch can
# beat the latency of a free server running one token (the light load shows it). Memory, second:
# a server that batches many requests holds all their activations and, in a real model, each
# request's KV cache. And the MoE's own advantage shrinks as batches grow: once every batch
# reaches every expert, each step reads all the experts' weights, as a dense model of the total
# size would (question 2) — the expert reads per token approach $E/n$, not $k/n$. Real servers
# (Orca, Yu et al. 2022, OSDI) batch *continuously*: each step runs every request that is
# waiting, with no fixed window, and a request joins or leaves the batch between steps; the
# trade-off measured here — more tokens per weight read against longer waits — is the same.


# %% [markdown]
# ## Check your understanding
#
# 1. Mixtral's experts have 14 336 hidden units. How many parameters does one expert hold? Which
#    terms of the total change, and by how much, if the LM head is tied to the embedding?
# 2. Why does an MoE need the total count for memory but only the active count for FLOPs? A batch
#    so large that every expert is used on every step removes one of the MoE's advantages but not
#    the other: which one, and why does the FLOP advantage survive any batch size?
# 3. Where in DeepSeek-V3's breakdown do the shared experts and the first three dense layers
#    appear, and what share of the *active* parameters do they take?
# 4. With $R$ ranks and uniform routing, what fraction of the dispatched rows leave their rank?
#    Why does doubling $k$ double the all-to-all bytes, but doubling $R$ does not halve them?
# 5. Why must expert parallelism compute the capacity from the global batch (an Allreduce and an
#    Exscan of the counts) to match a single process exactly?
# 6. Belady's policy needs the future. Why is it still useful to compute? What would a
#    "speculative" loader need to predict to approach it?
# 7. A weight matrix has one column whose largest entry is 100 times the others. Compare the
#    rounding error of per-tensor and per-channel int8 on the *other* columns.
# 8. Under uniform routing, each token picks $k$ distinct experts of $E$. How many distinct
#    experts does a batch of $n$ tokens read on average? Compare with section 8's "expert reads
#    per token" column, and say why the gain stops growing at the batch limit $B$.
# 9. Why does the latency of $W = 0$ at the heavy load of section 8 depend on how long the trace
#    is, while the other rows' latencies do not? What decides the shortest window that keeps up?
#
# ## Exercises
#
# In `exercises/ex09_scale.py`: `moe_param_count` (section 1: Mixtral's exact totals),
# `moe_flops_per_token` (section 2), `all_to_all_send_counts` (section 5: the row of the send
# matrix that one rank computes) and `batch_window_schedule` (section 8: which tokens share a
# batch, and when it leaves). Grade them with
#
# ```
# python -m minimoe.grade ex09
# ```
