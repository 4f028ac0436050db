# %% [markdown]
# # Lesson 07 — DeepSeek-style experts: fine-grained, shared, sigmoid-gated, balanced without a loss
#
# The DeepSeek models changed the MoE layer in four places, and each change answers a weakness met
# in the earlier lessons. **Fine-grained experts** (DeepSeekMoE, 2024): cut every expert into
# smaller ones and route to more of them, so that a token can combine experts far more flexibly
# for the same compute. **Shared experts**: a few experts that every token uses, so that common
# knowledge is not copied into every routed expert. **A sigmoid gate** (DeepSeek-V3, 2024): each
# expert's affinity is scored on its own, not in competition through a softmax. And
# **auxiliary-loss-free balancing**: a per-expert bias, moved by a simple rule after every step,
# that evens the load without adding a loss whose gradient pulls against the task. V3 adds two
# things around them: a tiny **sequence-wise balance loss**, against imbalance inside one
# sequence, and **group-limited routing**, which caps how many nodes a token's copies travel to.
#
# **After this lesson you can**
# - segment experts into finer ones and check that parameters and FLOPs stay the same, with
#   `minimoe.calculator` and `model_summary`;
# - add shared experts and keep the active compute equal by routing to fewer;
# - compare coarse, fine-grained and fine-grained-plus-shared layouts at equal active compute on
#   the tiny Transformer;
# - write DeepSeek-V3's gate — sigmoid affinities, a bias that only steers the choice, gates
#   normalised over the chosen experts — and its bias update;
# - compare the bias update with loss-based balancing on load balance and validation loss, and
#   read the bias trajectories;
# - write V3's sequence-wise balance loss and measure the balance within each sequence with and
#   without it, on top of the bias;
# - limit routing to a few groups of experts, as V3 limits it to a few nodes, and measure what it
#   costs in validation loss and how many groups a token's copies then reach.
#
# **Papers.**
# - Dai, Deng, Zhao, Xu, Gao, Chen, Li, Zeng, Yu, Wu, Xie, Li, Huang, Luo, Ruan, Sui & Liang
#   (2024), *DeepSeekMoE: towards ultimate expert specialization in mixture-of-experts language
#   models*, arXiv 2401.06066: §3.1 (fine-grained segmentation), §3.2 (shared expert isolation),
#   §3.3 (expert-level balance loss, eqs. 12–14).
# - DeepSeek-AI (Liu et al.) (2024), *DeepSeek-V3 technical report*, arXiv 2412.19437: §2.1.2
#   (the gate, eqs. 12–16; auxiliary-loss-free balancing; the complementary sequence-wise loss,
#   eqs. 17–20; node-limited routing), §3.2.2 (why tokens are limited to a few nodes) and §4.2
#   (bias update speed $\gamma = 0.001$, balance factor $\alpha = 0.0001$, at most 4 nodes per token).
# - Wang, Gao, Zhao, Sun & Dai (2024), *Auxiliary-loss-free load balancing strategy for
#   mixture-of-experts*, arXiv 2408.15664: the bias update, studied on its own.
#
# **Library files used.** `minimoe/moe/routers/deepseek.py` (the gate, group-limited routing and
# `update_bias`), `minimoe/moe/losses.py` (`aux_free_bias_update`, `deepseek_sequence_loss`), `minimoe/moe/layer.py` (shared experts),
# `minimoe/calculator.py` (`count_parameters`), `minimoe/models/transformer.py`
# (`model_summary`, `update_router_biases`), `minimoe/train.py` (`train_in_memory`).
#
# **Prerequisites.** Lessons 02 and 03 (top-$k$ routing and the balancing loss), 04 (the tiny MoE
# Transformer) and 06 (load statistics).

# %% tags=["parameters"]
import os

FAST = os.environ.get("MINIMOE_FAST") == "1"  # CI runs every lesson with MINIMOE_FAST=1: fewer steps, same code
SEEDS = (0, 1, 2)  # every layout and every balancing method is trained from these seeds
LAYOUT_STEPS = 20 if FAST else 400  # steps of each coarse / fine / fine + shared run
BALANCE_STEPS = 20 if FAST else 400  # steps of each run of sections 5-7 (5's bias runs are 6's and 7's baseline)

# %%
# The tiny model's matrices are far too small for BLAS threads to pay off, and on a busy machine
# the threads cost much more than they give; one thread per process (set before NumPy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dataclasses
import math

import matplotlib.pyplot as plt
import numpy as np

import minimoe as mm
from minimoe.calculator import count_parameters
from minimoe.models import ModelConfig, Transformer, model_summary
from minimoe.moe import Experts, MoE, MoEConfig, losses
from minimoe.moe.routers import DeepSeekV3Router
from minimoe.seeds import table, verdict
from minimoe.train import TrainConfig, train_in_memory

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.4, 3.6), "axes.grid": True, "grid.alpha": 0.3})
np.set_printoptions(precision=3, suppress=True)
print("fast mode" if FAST else "full mode")

# %% [markdown]
# ## 1. Fine-grained experts
#
# Take an MoE layer of $N$ experts of hidden width $h$, top-$K$. DeepSeekMoE splits each expert
# into $m$ experts of width $h/m$ and routes each token to $mK$ of the $mN$ (§3.1):
#
# $$h_t = \sum_{i=1}^{mN} g_{i,t}\,\mathrm{FFN}_i(u_t) + u_t,\qquad
# g_{i,t} = \begin{cases} s_{i,t} & s_{i,t} \in \mathrm{TopK}(\{s_{j,t}\}_{j=1}^{mN},\, mK)\\ 0 & \text{otherwise,}\end{cases}
# \qquad s_{i,t} = \mathrm{softmax}_i(u_t^\top e_i).$$
#
# The parameters do not change ($mN$ experts of width $h/m$ hold as many weights as $N$ of width
# $h$), nor do the FLOPs per token ($mK$ experts of width $h/m$ cost as much as $K$ of width $h$).
# What changes is the number of ways a token can combine experts: $\binom{N}{K}$ becomes
# $\binom{mN}{mK}$. The paper's example is $N = 16$, $K = 2$, $m = 4$:

# %%
for n, k in ((16, 2), (64, 8), (8, 2), (32, 8)):
    print(f"choose {k:2} of {n:2} experts: {math.comb(n, k):>16,} combinations")

# %% [markdown]
# Why should that help? An FFN's hidden units are independent of each other until the output
# projection sums them, so a coarse expert *is* already a sum of $m$ narrower FFNs. Splitting only
# lets the router pick those pieces separately: the segmentation of a trained coarse layer is
# exact, and a fine-grained layer is at least as expressive. Here is the exactness, on the
# library's `Experts` (hidden units $jh/m \dots (j+1)h/m$ go to fine expert $j$; the output bias is
# shared out evenly so that the $m$ pieces add up to it once):

# %%
mm.manual_seed(0)
d, h, m, T = 16, 64, 4, 10
coarse = Experts(1, d, h)  # one expert of width 64
fine = Experts(m, d, h // m)  # four experts of width 16
pieces = [slice(j * h // m, (j + 1) * h // m) for j in range(m)]
fine.w_in.data = np.stack([coarse.w_in.data[0][:, p] for p in pieces])  # (m, d, h/m)
fine.b_in.data = np.stack([coarse.b_in.data[0][p] for p in pieces])  # (m, h/m)
fine.w_out.data = np.stack([coarse.w_out.data[0][p] for p in pieces])  # (m, h/m, d)
fine.b_out.data = np.repeat(coarse.b_out.data / m, m, axis=0)  # (m, d)

tokens = mm.randn(T, d)
with mm.no_grad():
    y_coarse = coarse(tokens, [T]).numpy()  # (T, d)
    y_pieces = fine(mm.tensor(np.tile(tokens.numpy(), (m, 1))), [T] * m).numpy()  # (m*T, d): each piece on every token
print("the four fine experts, summed, equal the coarse expert:",
      np.allclose(y_pieces.reshape(m, T, d).sum(axis=0), y_coarse, atol=1e-5))
print("parameters:", coarse.num_parameters(), "coarse vs", fine.num_parameters(), "fine",
      "(the fine ones hold m - 1 more output biases)")

# %% [markdown]
# ## 2. Shared experts
#
# Whatever every token needs — common words, the grammar of the language — a routed layout must
# learn again in each expert that tokens are sent to. DeepSeekMoE isolates $K_s$ **shared experts**
# that process every token, and routes to $mK - K_s$ of the remaining $mN - K_s$, so that the
# active compute stays the same (§3.2):
#
# $$h_t = \sum_{i=1}^{K_s}\mathrm{FFN}_i(u_t) + \sum_{i=K_s+1}^{mN} g_{i,t}\,\mathrm{FFN}_i(u_t) + u_t .$$
#
# The shared experts carry no gate: their outputs are simply added. Since $K_s$ always-on experts
# of width $h'$ add up to one FFN of width $K_s h'$, minimoe holds them that way
# (`n_shared_experts` in the config, `layer.shared` in the layer):

# %%
mm.manual_seed(0)
E_ROUTED, K = 7, 3
layer = MoE(MoEConfig(d_model=d, n_experts=E_ROUTED, top_k=K, expert_hidden=16, n_shared_experts=1))
x = mm.randn(T, d)
with mm.no_grad():
    y = layer(x).numpy()  # (T, d)
    routing = layer.router(x)  # the same choice the layer made: expert_index (T, K), gates (T, K)
    every_expert = layer.experts(mm.tensor(np.tile(x.numpy(), (E_ROUTED, 1))), [T] * E_ROUTED).numpy()
    shared = layer.shared(x, [T]).numpy()  # (T, d): the always-on expert, on every token
every_expert = every_expert.reshape(E_ROUTED, T, d)  # (E, T, d): each routed expert on every token
chosen = every_expert[routing.expert_index, np.arange(T)[:, None]]  # (T, K, d)
routed = (routing.gates.numpy()[:, :, None] * chosen).sum(axis=1)  # (T, d)
print("routed experts:", layer.experts.w_in.shape, " shared expert:", layer.shared.w_in.shape)
print("token 0 is routed to experts", routing.expert_index[0], "with gates", routing.gates.numpy()[0].round(3))
print("output = sum of gated routed experts + shared expert:", np.allclose(y, routed + shared, atol=1e-5))

# %% [markdown]
# ## 3. Equal active compute, measured
#
# Three layouts of the tiny Transformer of lesson 04 (two blocks of width 32, each with an MoE
# layer), all with the same total expert width, $8 \times 128 = 32 \times 32 = 1{,}024$, and the
# same active expert width per token, $256$:
#
# | layout | routed experts | width | top-$k$ | shared | active width |
# | --- | --- | --- | --- | --- | --- |
# | coarse | 8 | 128 | 2 | 0 | $2 \cdot 128 = 256$ |
# | fine-grained ($m = 4$) | 32 | 32 | 8 | 0 | $8 \cdot 32 = 256$ |
# | fine-grained + 1 shared | 31 | 32 | 7 | 1 | $7 \cdot 32 + 32 = 256$ |
#
# The router is the same in all three and is DeepSeekMoE's, as written in section 1: softmax over
# the experts, keep the top $k$, and use the kept probabilities as the gates *without*
# renormalising them (`renormalize=False`; they sum to less than one). The Switch balancing loss
# with $\alpha = 0.01$ and nothing dropped, so only the layout differs. First the check that the
# compute really is equal — the calculator counts every parameter and every matmul FLOP from the
# config, and the count agrees with the model the config builds:

# %%
BASE = ModelConfig(d_model=32, n_layers=2, n_heads=4, context=32, n_experts=8, top_k=2, expert_hidden=128)
BASE = dataclasses.replace(BASE, renormalize=False)  # DeepSeekMoE's gate: g = s for the chosen experts
LAYOUTS = {
    "coarse 8 x 128, top-2": BASE,
    "fine 32 x 32, top-8": dataclasses.replace(BASE, n_experts=32, top_k=8, expert_hidden=32),
    "fine 1 shared + 31 x 32, top-7": dataclasses.replace(BASE, n_experts=31, top_k=7, expert_hidden=32,
                                                          n_shared_experts=1),
}
print(f"{'layout':32} {'total params':>12} {'(model)':>8} {'active':>8} {'experts, active':>16} "
      f"{'router':>7} {'FLOPs/token':>12}")
for name, config in LAYOUTS.items():
    summary, count = model_summary(config), count_parameters(config.transformer_spec())
    expert_active = count.active_breakdown["routed_experts"] + count.active_breakdown["shared_experts"]
    print(f"{name:32} {summary.total_params:12,} {Transformer(config).num_parameters():8,} "
          f"{summary.active_params:8,} {expert_active:16,} {count.breakdown['router']:7,} "
          f"{summary.flops_per_token:12,.0f}")

# %% [markdown]
# Total parameters agree between the calculator and the model. The active expert parameters
# differ only by the experts' biases (eight active output biases instead of two), and the FLOPs
# per token only by the router, whose matrix is $d \times E$: 32 experts cost four times the
# routing of 8. That is the whole price of fine granularity in FLOPs — here a few per cent, in
# DeepSeek-V3 (256 routed experts of width 2048 on $d = 7168$) well under one per cent of an MoE
# layer. The real price is elsewhere: more, smaller matmuls, and more token copies to sort and
# scatter, which the wall time per step below shows.
#
# Each layout is trained from three seeds on the same batches for the same number of steps. What
# to expect, if DeepSeekMoE's claim holds at this scale: the fine-grained layouts end lower than
# the coarse one at the same FLOPs. Whether they do, only the spread over seeds can say.

# %%
def train_config(steps, seed=0):
    return TrainConfig(steps=steps, batch_size=16, lr=1e-2, warmup_steps=min(20, steps // 4),
                       eval_every=max(steps // 8, 1), eval_batches=8, checkpoint_every=steps, seed=seed)


def val_curve(run):
    return zip(*[(r["step"], r["val_loss"]) for r in run.records if "val_loss" in r])


layout_runs = {}
for name, config in LAYOUTS.items():
    for seed in SEEDS:
        layout_runs[name, seed] = train_in_memory(config, train_config(LAYOUT_STEPS, seed))
    ms = 1e3 * layout_runs[name, seed].seconds / LAYOUT_STEPS
    print(f"{name:32} {len(SEEDS)} x {LAYOUT_STEPS} steps, {ms:.0f} ms per step (with evaluations)")

# %%
fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
for i, name in enumerate(LAYOUTS):
    for seed in SEEDS:
        ax.plot(*val_curve(layout_runs[name, seed]), ("o-", "s--", "^:")[seed % 3], ms=3,
                color=f"C{i}", label=f"{name}, seed {seed}")
ax.set_ylim(top=3.2)
ax.set_xlabel("training step")
ax.set_ylabel("validation loss (nats per character)")
ax.set_title("Equal active compute: coarse, fine-grained, fine-grained + shared")
ax.legend(fontsize=8)
plt.show()

layout_val = {name: [layout_runs[name, seed].records[-1]["val_loss"] for seed in SEEDS] for name in LAYOUTS}
print(table(layout_val, "validation loss"))
COARSE, FINE, SHARED = LAYOUTS
print(verdict(layout_val[FINE], layout_val[COARSE], "fine", "coarse"))
print(verdict(layout_val[SHARED], layout_val[COARSE], "fine + shared", "coarse"))
print(verdict(layout_val[SHARED], layout_val[FINE], "fine + shared", "fine"))

# %% [markdown]
# Read the verdicts under the table (each seed starts the three layouts from its own initial
# weights and feeds them the same batches). Fine-grained against coarse is a clear difference: the
# 32 narrow experts end lower on every seed, at the same FLOPs — this run's evidence, at a tiny
# scale and for a few hundred steps, for DeepSeekMoE's claim that finer experts learn better at
# equal compute. The shared expert is another matter: fine + shared against coarse and against
# fine are both "no clear difference" — its seeds range more widely than the gaps. DeepSeekMoE's
# ablations find that both changes help at their scale; three seeds of a tiny model support the
# first and cannot settle the second.
#
# ## 4. The DeepSeek-V3 gate
#
# DeepSeek-V3 keeps the fine-grained, shared-expert layout (1 shared and 256 routed experts, 8
# active per token) and changes the gate (§2.1.2, eqs. 13–16):
#
# $$s_{i,t} = \sigma(u_t^\top e_i),\qquad
# g'_{i,t} = \begin{cases} s_{i,t} & s_{i,t} + b_i \in \mathrm{TopK}(\{s_{j,t} + b_j\}_{j},\, K_r)\\ 0 & \text{otherwise,}\end{cases}
# \qquad g_{i,t} = \frac{g'_{i,t}}{\sum_j g'_{j,t}} .$$
#
# - The **affinity** $s_{i,t}$ is a sigmoid, one number per expert in $(0, 1)$, not a softmax: an
#   expert's score does not go down because another expert's went up. With hundreds of experts a
#   softmax spreads the mass thin; sigmoid scores stay on a fixed scale.
# - The **bias** $b_i$ is added for the *choice* only. The gate value is the unbiased $s_{i,t}$,
#   so the bias can steer tokens toward an underused expert without changing how much any chosen
#   expert's output counts.
# - The chosen scores are **normalised** to sum to one (and the released model multiplies them by
#   a constant `routed_scaling_factor` = 2.5; minimoe's `routed_scaling`, 1 by default).
#
# **One departure from eq. 13, at $k = 1$.** With a single chosen expert the normalisation gives
# $g = s / s = 1$ for every token: a constant gate, so the task loss sends the router no gradient
# at all — the top-1 trap of lesson 03. minimoe's router therefore skips the normalisation when
# $k = 1$ and uses the affinity $s$ itself as the gate (as Switch does with its probability); the
# paper's literal form is the option `DeepSeekV3Router(..., normalize_top1=True)`. For $k > 1$ the
# two are the same. The cell after the next one shows both at $k = 1$.
#
# (V3 also limits each token to experts on at most 4 of its 8 nodes — *group-limited routing*,
# section 7.) The library's router, on four tokens, first with zero bias and then with expert 0's bias raised:

# %%
mm.manual_seed(0)
router = DeepSeekV3Router(d_model=d, n_experts=8, k=2)
x = mm.randn(4, d) * 4.0  # larger inputs, so that the scores spread out
routing = router(x)
print("affinities s = sigmoid(x e) (T, E):\n", mm.functional.sigmoid(routing.logits).numpy())
print("chosen experts (T, k):\n", routing.expert_index, "\ngates (T, k):\n", routing.gates.numpy())
router.expert_bias.data[0] = 0.5  # make expert 0 attractive
biased = router(x)
print("with b_0 = 0.5, chosen experts:\n", biased.expert_index, "\ngates:\n", biased.gates.numpy())
s = mm.functional.sigmoid(biased.logits).numpy()
chosen = np.take_along_axis(s, biased.expert_index, axis=1)
print("gates = unbiased s of the chosen experts, normalised:",
      np.allclose(biased.gates.numpy(), chosen / chosen.sum(axis=1, keepdims=True)))

# %% [markdown]
# And $k = 1$: the library's default gate is the affinity, the paper's form a constant 1, whose
# gradient with respect to the router's weights is exactly zero.

# %%
for normalize_top1 in (False, True):
    mm.manual_seed(0)
    top1 = DeepSeekV3Router(d_model=d, n_experts=8, k=1, normalize_top1=normalize_top1)
    gates = top1(x).gates
    gates.sum().backward()
    print(f"normalize_top1={normalize_top1!s:5}: gates {gates.numpy().ravel().round(3)}, "
          f"largest |router gradient| {np.abs(top1.weight.grad).max():.2e}")

# %% [markdown]
# ## 5. Auxiliary-loss-free balancing
#
# Every balancing loss of the earlier lessons works through the gradient: it adds
# $\alpha \sum_i f_i P_i$ (DeepSeekMoE's expert-level loss, eqs. 12–14, is the Switch loss of
# lesson 03 with $f$ counted over all $K'$ choices) and the router learns to lower the probability
# of busy experts. That gradient is mixed with the task's. Too small an $\alpha$ and the load
# drifts; too large and the router serves the balance more than the task. DeepSeek-V3 (after Wang
# et al. 2024) balances outside the gradient instead. After each step, with $n_i$ the number of
# tokens routed to expert $i$ in that step:
#
# $$b_i \leftarrow b_i + \gamma\,\mathrm{sign}(\bar n - n_i),\qquad \gamma = 0.001 \text{ in V3 (§4.2)}.$$
#
# An overloaded expert's bias falls by $\gamma$, an underloaded one's rises; by the previous
# section the bias moves the choice only, so the task gradient is untouched. (V3 keeps a
# complementary sequence-wise loss with a tiny $\alpha = 10^{-4}$, against extreme imbalance within
# one sequence; we leave it out here, to see the bias alone, and add it in section 6.) In minimoe the trainer calls
# `model.update_router_biases()` after each optimiser step, and each DeepSeek router applies the
# rule with its layer's `bias_update_rate`.
#
# The experiment: a V3-like layout on the tiny model — 1 shared and 16 routed experts of width 32,
# top-4, DeepSeek-V3's gate — trained four ways from the same seed on the same batches:
#
# | run | balancing |
# | --- | --- |
# | none | neither loss nor bias ($\gamma = 0$) |
# | loss, $\alpha = 0.01$ | DeepSeekMoE / Switch expert-level loss |
# | bias, $\gamma = 0.001$ | the update rule with V3's speed |
# | bias, $\gamma = 0.01$ | ten times faster |
#
# and all four again from two more seeds. What to expect: every balancing method should bring the
# busiest expert's load toward the mean, the fast bias soonest; whether any of them changes the
# validation loss is for the verdicts over the three seeds to say.
# V3 trains for hundreds of thousands of steps; our runs have a few hundred, over which
# $\gamma = 0.001$ can move a bias by at most a few tenths — which is why the faster rate is here
# too. After every step we record the load of each layer and every router's bias.

# %%
V3_LIKE = ModelConfig(d_model=32, n_layers=2, n_heads=4, context=32, n_experts=16, top_k=4, expert_hidden=32,
                      n_shared_experts=1, router="deepseek")
BALANCING = {
    "none": dataclasses.replace(V3_LIKE, balance_loss=None, bias_update_rate=0.0),
    "loss, alpha = 0.01": dataclasses.replace(V3_LIKE, balance_loss="switch", balance_coef=0.01, bias_update_rate=0.0),
    "bias, gamma = 0.001": dataclasses.replace(V3_LIKE, balance_loss=None, bias_update_rate=0.001),
    "bias, gamma = 0.01": dataclasses.replace(V3_LIKE, balance_loss=None, bias_update_rate=0.01),
}
print(model_summary(V3_LIKE))

def record_biases(trajectory):
    """A `watch` that appends every router's bias after each step: (layers, E) per step."""
    return lambda run: trajectory.append(np.stack([layer.router.expert_bias.numpy() for layer in run.model.moe_layers()]))


balance_runs, biases = {}, {}
for seed in SEEDS:
    for name, config in BALANCING.items():
        trajectory = []
        balance_runs[name, seed] = train_in_memory(config, train_config(BALANCE_STEPS, seed),
                                                        after_step=record_biases(trajectory))
        biases[name, seed] = np.array(trajectory)  # (steps, layers, E)
    print(f"seed {seed}: four runs of {BALANCE_STEPS} steps, the last in {balance_runs[name, seed].seconds:.1f} s")

# %%
def max_over_mean(run):
    """(steps,) the busiest expert's load over the mean load, averaged over the MoE layers."""
    loads = np.array([[layer["load"] for layer in r["moe"]] for r in run.records if "moe" in r])  # (S, L, E)
    return (loads.max(axis=2) * loads.shape[2]).mean(axis=1)


def smooth(y, width=15):
    """Moving average along the steps (the batch-to-batch noise hides the trend)."""
    width = min(width, len(y))
    return np.convolve(np.pad(y, (width // 2, width - 1 - width // 2), mode="edge"), np.ones(width) / width, "valid")


SEED = SEEDS[0]  # the plots show the first seed; the table shows all
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
for i, name in enumerate(BALANCING):
    axes[0].plot(smooth(max_over_mean(balance_runs[name, SEED])), color=f"C{i}", label=name)
    axes[1].plot(*val_curve(balance_runs[name, SEED]), "o-", ms=3, color=f"C{i}", label=name)
axes[0].axhline(1, color="k", lw=1, ls=":")
axes[0].set_title(f"Load balance: busiest expert / mean (1 = perfect), seed {SEED}")
axes[0].set_xlabel("training step")
axes[1].set_title(f"Validation loss, seed {SEED}")
axes[1].set_xlabel("training step")
axes[1].set_ylim(top=3.2)
axes[0].legend()
plt.show()

print(f"{'run':20} {'seed':>4} {'max/mean load':>14} {'':>9} {'validation':>10} {'bias spread':>12}")
print(f"{'':20} {'':>4} {'first 50':>14} {'last 100':>9} {'loss':>10} {'(layer 0)':>12}")
for name in BALANCING:
    for seed in SEEDS:
        run, balance = balance_runs[name, seed], max_over_mean(balance_runs[name, seed])
        print(f"{name:20} {seed:4} {balance[:50].mean():14.2f} {balance[-100:].mean():9.2f} "
              f"{run.records[-1]['val_loss']:10.3f} {np.ptp(biases[name, seed][-1, 0]):12.3f}")

late_balance = {name: [max_over_mean(balance_runs[name, seed])[-100:].mean() for seed in SEEDS] for name in BALANCING}
balance_val = {name: [balance_runs[name, seed].records[-1]["val_loss"] for seed in SEEDS] for name in BALANCING}
print("\n" + table(late_balance, "max/mean, last 100"))
print("\n" + table(balance_val, "validation loss"))
NONE, LOSS, SLOW, QUICK = BALANCING
for a, b in ((LOSS, NONE), (SLOW, NONE), (QUICK, NONE), (SLOW, LOSS), (QUICK, LOSS), (QUICK, SLOW)):
    print(f"{a} vs {b}:\n  balance:    {verdict(late_balance[a], late_balance[b], a, b)}"
          f"\n  validation: {verdict(balance_val[a], balance_val[b], a, b)}")

# %% [markdown]
# Read the two plots and the tables together. Without any balancing the load stays uneven: over
# the last 100 steps the busiest expert keeps about 2.6 times its share. The loss and both bias
# rates pull it toward the mean — each a clear difference from "none". The fast bias gets there
# first and ends the most even (about 1.33, with almost no spread over seeds); the bias at the
# paper's rate needs most of this short run — each step can move a bias by only $\gamma$ — and
# still ends clearly more even than the loss (about 1.50 against 1.63). All of it without a
# balancing term in the objective: the bias runs optimise the language-modelling loss alone.
#
# The validation losses are the other half of the question, and there the verdicts are mostly
# "no clear difference": none of the three balancing methods is clearly better or worse than no
# balancing, and the fast bias is indistinguishable from the loss. Two gaps do pass the rule: the
# slow bias ends clearly behind both the loss and the fast bias, by 0.03–0.04 nats. One plausible
# reading, not measured here: while its biases are still moving, the routing of many tokens keeps
# changing, so experts train on a shifting set of tokens. Wang et al.'s argument for the bias —
# that a balancing loss's gradient interferes with the task, more so the stronger it must be —
# concerns large models trained for very long; a few hundred steps of a tiny model cannot test it.
# What the run does show is the mechanism working: a rule with no gradient at all balances the
# load at least as well as the loss does. (In a dropless layer balance is mostly about hardware —
# no expert, and no device, waits on the busiest — which matters once experts are spread over
# devices, lesson 09.)
#
# Finally the biases themselves. Each line is one expert of layer 0:

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), layout="constrained", sharey=True)
for ax, name in zip(axes, ("bias, gamma = 0.001", "bias, gamma = 0.01")):
    ax.plot(biases[name, SEED][:, 0], lw=1)
    ax.set_title(f"{name}: the 16 biases of layer 0, seed {SEED}")
    ax.set_xlabel("training step")
axes[0].set_ylabel("expert bias b_i")
plt.show()

for name in ("bias, gamma = 0.001", "bias, gamma = 0.01"):
    trajectory = biases[name, SEED][:, 0]  # (steps, E)
    flips = (np.diff(np.sign(np.diff(trajectory, axis=0)), axis=0) != 0).mean()
    print(f"{name}: final biases {trajectory[-1].round(3)}\n"
          f"   mean bias {trajectory[-1].mean():+.3f}; steps at which a bias changed direction: {flips:.0%}")

# %% [markdown]
# With the paper's $\gamma$ the biases move in near-straight lines at the start — every step
# moves each bias by exactly $\pm\gamma$, so a straight line is an expert that stays over- or
# under-loaded step after step — and they bend as the experts reach their share. With the faster
# rate they get there sooner and then jitter: an expert near the mean is overloaded one step and
# underloaded the next, and its bias zig-zags by $\pm\gamma$ (the printed share of direction
# changes). With the fast rate the biases also drift upward *together*: when a few experts are
# busy and many sit a little below the mean, more biases rise than fall at each step. A shift
# common to all biases changes no choice, so the drift is harmless — only the differences between
# biases route tokens. That is the trade-off of the sign rule: $\gamma$ sets both how fast the
# load is corrected and how much the routing is shaken once it is balanced. V3 sets $\gamma = 0$
# for its last 500B training tokens (§4.2), freezing the biases.
#
# ## 6. The complementary sequence-wise loss
#
# The bias of section 5 evens the load of each step's *batch*. It cannot see how the load falls
# inside one sequence: a batch can be even while each of its sequences sends most of its tokens
# to a few experts, different ones for different sequences. Against that, V3 keeps a small
# **sequence-wise balance loss** beside the bias (§2.1.2, eqs. 17–20). For one sequence of $T$
# tokens, with $N_r$ routed experts and $K_r$ of them per token:
#
# $$\mathcal L_{\mathrm{Bal}} = \alpha \sum_{i=1}^{N_r} f_i P_i,\qquad
# f_i = \frac{N_r}{K_r T} \sum_{t=1}^{T} \mathbb 1\big(s_{i,t} \in \mathrm{TopK}(\{s_{j,t}\}_{j=1}^{N_r}, K_r)\big),\qquad
# s'_{i,t} = \frac{s_{i,t}}{\sum_{j=1}^{N_r} s_{j,t}},\qquad
# P_i = \frac1T \sum_{t=1}^{T} s'_{i,t} .$$
#
# - $f_i$ counts the top $K_r$ of the **unbiased** affinities $s$ (eq. 18), not the experts the bias
#   steered the token to. minimoe's layer does the same: it takes its own top-$k$ of $s$ for the
#   loss (`MoE._losses`), whatever the router chose.
# - $P_i$ averages the affinities **normalised over all $N_r$ experts** (eq. 19), since sigmoid
#   scores do not sum to one; the V3 router returns these $s'$ as `routing.probs`.
# - The factor $N_r / (K_r T)$ makes every $f_i = 1$ when the sequence's $K_r T$ choices are spread
#   evenly, so the loss is exactly $\alpha$ under uniform routing — the normalisation of
#   DeepSeekMoE's expert-level loss (formula sheet §9), now per sequence.
# - The paper calls $\alpha$ "extremely small" and sets $\alpha = 0.0001$ (§4.2).
#
# The paper writes the loss for one sequence; minimoe's `losses.deepseek_sequence_loss` computes it
# for each sequence of the batch and averages, as the `seq_aux` option of DeepSeek's released
# modelling code does (`balance_loss="deepseek_sequence"`, with `balance_coef` as $\alpha$; the
# library returns the loss without $\alpha$). Two sequences of two tokens, each sending both its
# tokens to one expert — the batch is perfectly balanced, each sequence is not:

# %%
collapsed = mm.tensor([[[0.9, 0.1], [0.9, 0.1]], [[0.1, 0.9], [0.1, 0.9]]])  # s' (B=2, T=2, E=2)
first_choice = np.array([[[0], [0]], [[1], [1]]])  # (B, T, k=1): sequence 0 uses expert 0, sequence 1 expert 1
print("per sequence, averaged:", round(losses.deepseek_sequence_loss(collapsed, first_choice, 2, 1).item(), 3))
print("the whole batch as one sequence:",
      round(losses.deepseek_sequence_loss(collapsed.reshape(1, 4, 2), first_choice.reshape(1, 4, 1), 2, 1).item(), 3))

# %% [markdown]
# The experiment: the V3-like model of section 5 balanced by the bias at the paper's rate
# $\gamma = 0.001$ (section 5's runs, reused), and the same with the sequence-wise loss added at the
# paper's $\alpha = 10^{-4}$ and at 100 and 1,000 times that, three seeds each. A fourth run,
# $\alpha = 10^{-6}$, is a control: a term far too small to steer the routing, which still changes
# every floating-point step, and so each run's path from its seed. After training we
# route the 8 fixed validation batches — 128 sequences of 32 characters, 16 to a batch — and count
# each expert's choices. Two gauges of balance, each averaged over the two MoE layers:
#
# - **within a sequence**: the busiest expert's count in a sequence over the mean count,
#   $K_r T / N_r = 4 \cdot 32 / 16 = 8$, averaged over the 128 sequences;
# - **over a batch**: the same over each batch of 16 sequences (what the bias sees at a training
#   step), averaged over the 8 batches.
#
# With only 128 choices in a sequence, chance alone leaves them uneven: the cell also routes every
# token to 4 experts drawn at random and measures the same two gauges: what a router with no
# preferences at all would show at these sizes.

# %%
SEQUENCE_LOSS = {f"bias + alpha {alpha:g}": dataclasses.replace(
    V3_LIKE, balance_loss="deepseek_sequence", balance_coef=alpha, bias_update_rate=0.001)
    for alpha in (1e-6, 1e-4, 1e-2, 1e-1)}  # 1e-6: the control
BIAS_ONLY = "bias, gamma = 0.001"
sequence_runs = {(BIAS_ONLY, seed): balance_runs[BIAS_ONLY, seed] for seed in SEEDS}  # section 5's
for seed in SEEDS:
    for name, config in SEQUENCE_LOSS.items():
        sequence_runs[name, seed] = train_in_memory(config, train_config(BALANCE_STEPS, seed))
    print(f"seed {seed}: four runs of {BALANCE_STEPS} steps, the last in {sequence_runs[name, seed].seconds:.1f} s")


def validation_choices(run):
    """(layers, sequences, T, k): the experts the trained model chooses for the fixed validation
    batches (each layer's report holds its last forward's choices)."""
    run.model.eval()
    chosen = []
    with mm.no_grad():
        for x, _, _ in run.val_batches:
            run.model(x)
            chosen.append(np.stack([report.expert_index for report in run.model.routing_reports()]))
    run.model.train()
    return np.concatenate(chosen, axis=1)


def busiest_over_mean(chosen, n_experts, batch_size):
    """(within a sequence, over a batch): the busiest expert's count over the mean count, averaged
    over sequences (or batches of `batch_size` sequences) and the leading axis (layers)."""
    layers, n_seq, length, k = chosen.shape
    counts = (chosen[..., None] == np.arange(n_experts)).sum(axis=(2, 3))  # (L, S, E) choices per expert
    within = counts.max(axis=-1) / (length * k / n_experts)  # (L, S)
    per_batch = counts.reshape(layers, n_seq // batch_size, batch_size, n_experts).sum(axis=2)  # (L, S/B, E)
    return within.mean(), (per_batch.max(axis=-1) / per_batch.mean(axis=-1)).mean()


def random_choices(shape, n_experts, k, seed=0):
    """shape + (k,): k distinct experts drawn uniformly at random for every token."""
    return np.argsort(np.random.default_rng(seed).random(shape + (n_experts,)), axis=-1)[..., :k]


E_V3, K_V3, BATCH = V3_LIKE.n_experts, V3_LIKE.top_k, train_config(1).batch_size
choices = {key: validation_choices(run) for key, run in sequence_runs.items()}  # (L, S, T, k) each
sizes = choices[BIAS_ONLY, SEEDS[0]].shape
by_chance = busiest_over_mean(random_choices((20,) + sizes[1:3], E_V3, K_V3), E_V3, BATCH)  # 20 draws of the whole set
print(f"random routing: busiest / mean {by_chance[0]:.2f} within a sequence, {by_chance[1]:.2f} over a batch\n")

METHODS = [BIAS_ONLY, *SEQUENCE_LOSS]
within_sequence = {name: [busiest_over_mean(choices[name, seed], E_V3, BATCH)[0] for seed in SEEDS] for name in METHODS}
over_batch = {name: [busiest_over_mean(choices[name, seed], E_V3, BATCH)[1] for seed in SEEDS] for name in METHODS}
sequence_val = {name: [sequence_runs[name, seed].records[-1]["val_loss"] for seed in SEEDS] for name in METHODS}
weighted_loss = {name: [np.mean([r["aux_loss"] for r in sequence_runs[name, seed].records[1:]]) for seed in SEEDS]
                 for name in METHODS}
print(table(within_sequence, "busiest/mean in a sequence"))
print("\n" + table(over_batch, "busiest/mean over a batch"))
print("\n" + table(sequence_val, "validation loss"))
print("\n" + table(weighted_loss, "alpha x loss, mean of run"))
for name in SEQUENCE_LOSS:
    print(f"\n{name} vs {BIAS_ONLY}:"
          f"\n  within a sequence: {verdict(within_sequence[name], within_sequence[BIAS_ONLY], name, 'bias')}"
          f"\n  over a batch:      {verdict(over_batch[name], over_batch[BIAS_ONLY], name, 'bias')}"
          f"\n  validation:        {verdict(sequence_val[name], sequence_val[BIAS_ONLY], name, 'bias')}")
CONTROL, PAPER, HUNDRED, THOUSAND = SEQUENCE_LOSS
print(f"\nvalidation, {PAPER} vs the control: {verdict(sequence_val[PAPER], sequence_val[CONTROL], PAPER, CONTROL)}")
print(f"within a sequence, {THOUSAND} vs {HUNDRED}: "
      f"{verdict(within_sequence[THOUSAND], within_sequence[HUNDRED], THOUSAND, HUNDRED)}")

# %% [markdown]
# Read the tables from the top. Chance alone leaves short sequences uneven: routed at random, a
# sequence of 32 characters gives its busiest expert 1.58 times its share, and a batch of 16
# sequences 1.14 times. The bias alone (section 5's runs) brings the busiest expert of a batch to
# 1.47 times its share, but within a sequence it takes 2.45 times — far above chance: the router
# gives different sequences different favourite experts, and the bias, which sees only the batch,
# does not correct that.
#
# At the paper's $\alpha = 10^{-4}$ the loss makes no clear difference to either gauge in 400
# steps; its weighted value averages $2.8 \times 10^{-4}$ nats, beside a language-modelling loss
# of about 2.2. The paper sets it this small on purpose: the bias does the balancing, and the loss
# is there only against *extreme* imbalance in a single sequence, over trillions of tokens and
# sequences of thousands — another regime from ours. At 100 and 1,000 times the paper's $\alpha$
# the loss does its job: within a sequence the busiest expert drops to 1.96 and 1.84 times its
# share, over a batch to 1.27, each a clear difference from the bias alone ($10^{-1}$ is also
# clearly more even within a sequence than $10^{-2}$).
#
# Validation loss shows no clear difference at $10^{-2}$ or $10^{-1}$. At $10^{-4}$ the rule calls
# it better than the bias alone (2.227 against 2.269) — but the control $\alpha = 10^{-6}$, a term
# of $3 \times 10^{-6}$ nats that steers nothing measurable, lands between the two (2.248), and
# $10^{-4}$ against the control is no clear difference. Any change to the computation moves each
# run onto another path from its seed, and the bias-only runs sit high (section 5 found them
# clearly behind the balancing loss and the fast bias), so we do not count that gap as an effect
# of the loss. What the section shows is the mechanism: the sequence-wise loss evens the load inside
# each sequence, which the bias cannot see, with no clear cost in validation loss here — and at
# the paper's $\alpha$, at this scale, it changes nothing we can measure.
#
# ## 7. Group-limited routing
#
# In V3 each layer's 256 routed experts are spread over 64 GPUs in 8 nodes (§4.2). A token sent to
# experts on many nodes costs an InfiniBand transfer per node, and InfiniBand is about 3.2 times
# slower than the NVLink inside a node (§3.2.2). So V3 sends each token to at most $M = 4$ nodes:
# the nodes are ranked by the sum of the highest $K_r / M$ affinities of their experts, and the
# token's $K_r$ experts are the top $K_r$ among the experts of its $M$ best nodes (§2.1.2). With
# $K_r = 8$ and $M = 4$ that is the sum of each node's **best two** scores, and two is what
# DeepSeek's released inference code writes (its config calls the nodes groups: `n_group` 8,
# `topk_group` 4), on the biased scores $s + b$ that make the choice. minimoe follows the code:
# `n_groups` groups of consecutive experts, each scored by its best two $s + b$, of which a token
# may use `topk_groups` (`DeepSeekV3Router`, and the same fields of `ModelConfig`). Where
# $K_r / M \neq 2$ — one of the settings below — the library's two departs from the paper's general
# rule.
#
# Why the best two and not the best one? A token needs $K_r$ experts; a node with two good ones
# serves it better than a node with one excellent expert and nothing else. Four tokens, 8 experts
# in 4 groups of 2, top-2 from 1 group:

# %%
mm.manual_seed(0)
x = mm.randn(4, d) * 4.0
plain = DeepSeekV3Router(d_model=d, n_experts=8, k=2)
limited = DeepSeekV3Router(d_model=d, n_experts=8, k=2, n_groups=4, topk_groups=1)
limited.weight.data = plain.weight.data.copy()  # the same affinities
by_group = mm.functional.sigmoid(plain(x).logits).numpy().reshape(4, 4, 2)  # (T, groups, 2); zero bias: s + b = s
group_score = np.sort(by_group, axis=-1)[..., -2:].sum(axis=-1)  # (T, groups)
print("affinities, by group (T, 4 groups, 2):\n", by_group)
print("group scores, the sum of each group's best two (T, 4):\n", group_score)
print("group of each token's best expert:", by_group.max(axis=-1).argmax(axis=-1),
      "  group with the best two:", group_score.argmax(axis=-1))
for name, router in (("plain top-2", plain), ("top-2 of 1 group", limited)):
    chosen = router(x).expert_index  # (T, 2)
    print(f"{name:17}: experts {chosen.tolist()}, groups {(chosen // 2).tolist()}")

# %% [markdown]
# Tokens 1 and 3 show the rule at work: token 1's best expert (0.905) is in group 0, but group 3's
# best two add up to more (1.48 against 1.467), so both its experts come from group 3. The limit
# costs flexibility — the number of expert sets a token can choose from, section 1's measure. For
# the V3-like layer (16 routed experts, top-4):

# %%
def reachable_sets(n_experts, k, n_groups, topk_groups):
    """How many sets of k experts lie within at most `topk_groups` of the groups (inclusion-exclusion
    over the number j of groups actually used: C(n_groups, j) ways times the sets that use all j)."""
    size = n_experts // n_groups
    exactly = [0] * (topk_groups + 1)
    for j in range(1, topk_groups + 1):
        exactly[j] = math.comb(j * size, k) - sum(math.comb(j, i) * exactly[i] for i in range(1, j))
    return sum(math.comb(n_groups, j) * exactly[j] for j in range(1, topk_groups + 1))


GROUPINGS = {"8 groups of 2, 2 allowed": (8, 2), "4 groups of 4, 2 allowed": (4, 2), "4 groups of 4, 1 allowed": (4, 1)}
print(f"unrestricted: {math.comb(E_V3, K_V3):,} sets of {K_V3} experts")
for name, (n_groups, topk_groups) in GROUPINGS.items():
    print(f"{name}: {reachable_sets(E_V3, K_V3, n_groups, topk_groups):,}")

# %% [markdown]
# The experiment: the V3-like model (bias at $\gamma = 0.001$, no loss) with its 16 routed experts
# in the three groupings above, three seeds each, beside the unrestricted runs of section 5.
#
# | setting | groups | allowed ($M$) | $K_r / M$ | the paper's node score | the library's |
# | --- | --- | --- | --- | --- | --- |
# | unrestricted | 1 | 1 | — | — | — |
# | 8 groups of 2, 2 allowed | 8 | 2 | 2 | best 2 | best 2 |
# | 4 groups of 4, 2 allowed | 4 | 2 | 2 | best 2 | best 2 |
# | 4 groups of 4, 1 allowed | 4 | 1 | 4 | best 4 (the whole group) | best 2 |
#
# What it costs is the validation loss; what it buys is a bound on the groups a token's copies
# reach — at most `topk_groups`, by construction. The unrestricted model has no such bound, and we
# measure how many groups its tokens do reach on the same two partitions of the experts (and
# random routing's count, for scale).

# %%
group_runs = {("unrestricted", seed): balance_runs[BIAS_ONLY, seed] for seed in SEEDS}  # section 5's
for seed in SEEDS:
    for name, (n_groups, topk_groups) in GROUPINGS.items():
        config = dataclasses.replace(V3_LIKE, balance_loss=None, bias_update_rate=0.001, n_groups=n_groups,
                                     topk_groups=topk_groups)
        group_runs[name, seed] = train_in_memory(config, train_config(BALANCE_STEPS, seed))
    print(f"seed {seed}: three runs of {BALANCE_STEPS} steps, the last in {group_runs[name, seed].seconds:.1f} s")


def groups_reached(chosen, n_groups, n_experts):
    """(...,): how many distinct groups of consecutive experts each token's choices fall in."""
    group = chosen // (n_experts // n_groups)  # (..., k)
    return (group[..., None] == np.arange(n_groups)).any(axis=-2).sum(axis=-1)


group_choices = {key: validation_choices(run) for key, run in group_runs.items()}
at_random = random_choices(sizes[1:3], E_V3, K_V3)
print(f"{'':31} {'groups a token reaches':^27}")
print(f"{'':31} {'8 groups of 2':^13} {'4 groups of 4':^13} {'validation':>10}")
print(f"{'setting':26} {'seed':>4} {'mean':>7} {'max':>5} {'mean':>7} {'max':>5} {'loss':>10}")
for name in ("unrestricted", *GROUPINGS):
    for seed in SEEDS:
        chosen = group_choices[name, seed]
        of8, of4 = groups_reached(chosen, 8, E_V3), groups_reached(chosen, 4, E_V3)
        print(f"{name:26} {seed:4} {of8.mean():7.2f} {of8.max():5} {of4.mean():7.2f} {of4.max():5} "
              f"{group_runs[name, seed].records[-1]['val_loss']:10.3f}")
print(f"{'random routing':26} {'':4} {groups_reached(at_random, 8, E_V3).mean():7.2f} {'':5} "
      f"{groups_reached(at_random, 4, E_V3).mean():7.2f}")

group_val = {name: [group_runs[name, seed].records[-1]["val_loss"] for seed in SEEDS] for name in ("unrestricted", *GROUPINGS)}
print("\n" + table(group_val, "validation loss"))
for name in GROUPINGS:
    print(verdict(group_val[name], group_val["unrestricted"], name, "unrestricted"))
print(verdict(group_val["4 groups of 4, 1 allowed"], group_val["4 groups of 4, 2 allowed"], "1 of 4 allowed", "2 of 4 allowed"))

# %% [markdown]
# The bound holds by construction, and the "max" columns show it: with 2 of 4 groups allowed no
# token reaches more than 2 groups, with 1 allowed exactly one, and with 8 groups of 2 and 2
# allowed a token takes two whole pairs. The unrestricted model has no such limit, and its tokens
# reach 2.89–2.96 of the 4 groups and 3.54–3.74 of the 8 on average (over the seeds) — as many as
# routing at random (2.90 and 3.59): nothing in training keeps a token's experts together. So if each group of 4 were a
# node, the limit at V3's ratio (half the groups) would cut the nodes a token's copies travel to
# from about 2.9 to at most 2.
#
# What it costs, in validation loss: at V3's ratio, 2 of 4 groups, no clear difference from
# unrestricted routing (2.250 against 2.269); with a single group of 4 allowed (2.287), the
# setting that leaves only 4 expert sets, no clear difference from unrestricted either, but a
# clear one behind 2 allowed (2.287 against 2.250). 8 groups of 2 with 2 allowed comes out, by
# the rule, clearly *better* than unrestricted (2.238 against 2.269). The unrestricted runs are
# section 5's bias-only runs, which sit high in section 6's table as well, and section 6's control
# showed a change that steers nothing moving the mean of three seeds by 0.02; a limit that leaves
# 28 of the 1,820 expert sets is unlikely to help, but three seeds cannot say more. At this scale
# a limit to half the groups costs nothing we can measure, and one that leaves a single group
# starts to cost against one that leaves two.
#
# ## Check your understanding
#
# 1. Segment 8 experts of width 128 with $m = 4$. How many experts, of what width, and what top-$k$
#    keep the FLOPs of top-2? How many expert combinations does each layout allow?
# 2. Why is segmenting a trained expert exact? Which of its weights must be shared out, and how?
# 3. With one shared expert, why does the routed top-$k$ go down by one? What would happen to the
#    active compute if it did not?
# 4. In DeepSeek-V3's gate, the bias changes which experts are chosen but not the gate values.
#    Why does that matter for the gradient of the task loss?
# 5. With a softmax instead of a sigmoid, what would adding a bias $b_i$ to the logits do to the
#    gate values? Why would the scale of a useful bias change as $E$ grows?
# 6. Under the sign rule, an expert is exactly at the mean load. What happens to its bias? And to
#    an expert that is always slightly overloaded?
# 7. In a dropless layer, what does load imbalance cost, if not validation loss? What changes once
#    the experts sit on different devices (lesson 09)?
# 8. How can every expert get its share of a batch while each sequence in it uses only a few
#    experts? Which of the two does the bias see, and which does the sequence-wise loss?
# 9. What value does the sequence-wise loss take under uniform routing, and what does the factor
#    $N_r / (K_r T)$ do? Why must $P_i$ use $s'$ rather than the sigmoid scores $s$ themselves?
# 10. With 16 routed experts in 4 groups of 4, top-4 and one group allowed, which expert sets can a
#    token choose? How many with two groups allowed, and how many without the limit?
# 11. A group's score is the sum of its best two affinities. Give scores where the group with the
#    best single expert is not the group with the best two. Why would masking the other groups by
#    multiplying their scores by 0 go wrong once $s + b$ can be negative?
# 12. What bound does group-limited routing put on the groups a token's copies reach, and how many
#    did the unrestricted model's tokens reach (section 7)? Why does that count matter more than
#    the number of experts a token uses?
#
# ## Exercises
#
# In `exercises/ex07_deepseek.py`: `segment_experts` (section 1, *Fine-grained experts*),
# `moe_with_shared_experts` (section 2, *Shared experts*), `deepseek_v3_gate` (section 4,
# *The DeepSeek-V3 gate*), `update_expert_bias` (section 5, *Auxiliary-loss-free balancing*),
# `sequence_balance_loss` (section 6, *The complementary sequence-wise loss*) and
# `group_limited_topk` (section 7, *Group-limited routing*). Grade them with
#
# ```
# python -m minimoe.grade ex07
# ```
