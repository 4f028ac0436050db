# %% [markdown]
# # Lesson 02 — Sparse gating: the sparsely-gated Mixture-of-Experts layer (Shazeer et al., 2017)
#
# The 1991 mixture runs every expert on every input, so its cost grows with the number of
# experts. Shazeer and colleagues turned that around: let the gate keep only the $k$ best experts
# for each token and skip the rest. Parameters can then grow by adding experts while the compute
# per token stays that of $k$ experts — "conditional computation". They trained layers with
# thousands of experts this way. Two problems come with it, and this lesson meets both: a hard
# top-$k$ choice, and the tendency of the gate to send everything to a few favourite experts.
#
# **After this lesson you can**
# - write top-$k$ gating $G(x) = \mathrm{softmax}(\mathrm{KeepTopK}(H(x), k))$ and its noisy
#   version, and use the library's routers;
# - measure what sparsity saves: FLOPs and wall time at $k = 1, 2, \dots, E$, and at growing $E$
#   with $k$ fixed;
# - reproduce **expert collapse** in a small model trained without balancing, and cure it with
#   the importance and load losses;
# - explain the smooth load estimator, and check it against counts by sampling.
#
# **Papers.** Shazeer, Mirhoseini, Maziarz, Davis, Le, Hinton & Dean (2017), *Outrageously large
# neural networks: the sparsely-gated mixture-of-experts layer*, ICLR 2017 (arXiv 1701.06538):
# §2.1 (gating, eqs. 3–5), §4 (balancing, eqs. 6–7) and Appendix A (the load loss, eqs. 8–11).
# Jiang et al. (2024), *Mixtral of experts*, arXiv 2401.04088, §2.1, for the same gate written
# $\mathrm{Softmax}(\mathrm{TopK}(x W_g))$. The idea of conditional computation: Bengio, Léonard
# & Courville (2013), *Estimating or propagating gradients through stochastic neurons for
# conditional computation*, arXiv 1308.3432.
#
# **Prerequisites.** Lessons 00 and 01.

# %% tags=["parameters"]
import os

FAST = os.environ.get("MINIMOE_FAST") == "1"  # CI runs every lesson with MINIMOE_FAST=1: fewer steps, same code
TIMING_TOKENS = 256 if FAST else 1024  # tokens in the timed batch
TIMING_REPEATS = 2 if FAST else 9  # each timing is the best of this many runs
TRAIN_STEPS = 60 if FAST else 300  # steps of each collapse / cure run
SEEDS = (0,) if FAST else (0, 1, 2)
LOAD_SAMPLES = 20 if FAST else 200  # noise draws for checking the load estimator

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

import minimoe as mm
import minimoe.functional as F
from minimoe import nn, seeds
from minimoe.moe import MoE, MoEConfig, losses
from minimoe.moe.routers import NoisyTopKRouter, TopKRouter

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.4, 3.6), "axes.grid": True, "grid.alpha": 0.3})
np.set_printoptions(precision=3, suppress=True)
print("fast mode" if FAST else "full mode")

# %% [markdown]
# ## 1. Top-k gating
#
# The router scores every expert with one linear map, $H(x) = x W_g$ (one logit per expert), and
# keeps only the $k$ largest (Shazeer et al., eqs. 3 and 5):
#
# $$G(x) = \mathrm{softmax}\big(\mathrm{KeepTopK}(H(x), k)\big),\qquad
# \mathrm{KeepTopK}(v, k)_i = \begin{cases} v_i & \text{if } v_i \text{ is among the top } k\\ -\infty & \text{otherwise.}\end{cases}$$
#
# The $-\infty$ entries become exact zeros after the softmax, and the layer's output
# $y = \sum_i G_i(x)\,E_i(x)$ needs only the experts with $G_i > 0$: $k$ expert evaluations per
# token, whatever the number of experts $E$. The Mixtral paper (Jiang et al. 2024, §2.1) writes
# the same gate, $G(x) = \mathrm{Softmax}(\mathrm{TopK}(x W_g))$. Another order is common in code:
# Hugging Face's Mixtral implementation takes the softmax over all experts, keeps the top $k$ and
# renormalises them to sum to one, and that is what the library's `TopKRouter` does by default.
# Both orders give identical weights, as the cell checks. (With $k = 1$ the weight is then always
# exactly 1 and the router gets no gradient from the task: lesson 03 returns to this trap.)
#
# Where this lesson first needs the whole layer, here is its data flow: the router picks each
# token's experts, the dispatch groups the token copies by expert, each expert runs once on its
# group, and the combine adds each expert's output back to its token, weighted by the gate.

# %%
def draw_moe_data_flow():
    """The MoE layer's four stages for 4 tokens, 3 experts, top-2 (a picture, not a computation)."""
    choices = [(0, 2), (1, 0), (0, 1), (2, 0)]  # each token's two experts
    fig, ax = plt.subplots(figsize=(12, 3.4))
    ax.set_xlim(0, 11.3), ax.set_ylim(-0.6, 4.3), ax.axis("off")
    box = {"fc": "w", "ec": "k"}
    for t in range(4):
        y = 3.5 - t
        ax.text(0.1, y, f"token {t}", va="center", bbox=box)
        ax.text(1.7, y, f"router: {choices[t][0]}, {choices[t][1]}", va="center", fontsize=9,
                bbox={"fc": "lightyellow", "ec": "grey"})
        ax.annotate("", (1.65, y), (1.1, y), arrowprops={"arrowstyle": "->"})
        ax.text(9.3, y, f"y{t} = g·E(x{t}) + g'·E'(x{t})", va="center", fontsize=9, bbox=box)
    for e in range(3):
        group = [t for t in range(4) if e in choices[t]]
        y = 3.2 - 1.2 * e
        ax.text(4.4, y, "rows " + ", ".join(f"x{t}" for t in group), va="center", fontsize=9,
                bbox={"fc": "w", "ec": f"C{e}"})
        ax.text(7.0, y, f"expert {e}", va="center", color="w", bbox={"fc": f"C{e}", "ec": f"C{e}"})
        for t in group:
            ax.annotate("", (4.35, y), (3.1, 3.5 - t), arrowprops={"arrowstyle": "->", "color": f"C{e}", "alpha": 0.7})
            ax.annotate("", (9.25, 3.5 - t), (7.9, y), arrowprops={"arrowstyle": "->", "color": f"C{e}", "alpha": 0.7})
        ax.annotate("", (6.95, y), (6.2, y), arrowprops={"arrowstyle": "->", "color": f"C{e}"})
    for x, label in ((0.1, "tokens"), (1.7, "1. route: top-2"), (4.4, "2. dispatch by expert"),
                     (7.0, "3. experts"), (9.3, "4. combine: gate-weighted sum")):
        ax.text(x, 4.15, label, fontsize=9, weight="bold")
    plt.show()


draw_moe_data_flow()

# %% [markdown]
# The router itself, on four tokens: its logits, each token's two experts and their gates, and
# the same gates computed in the paper's order.

# %%
mm.manual_seed(0)
tokens = mm.randn(4, 8)  # (T, d): 4 tokens of width 8
router = TopKRouter(d_model=8, n_experts=6, k=2)  # default order: softmax, top-k, renormalise (Hugging Face's Mixtral code)
routing = router(tokens)
print("router logits H(x) (T, E)\n", routing.logits.numpy())
print("chosen experts (T, k)\n", routing.expert_index)
print("their gates (T, k), rows sum to 1\n", routing.gates.numpy())

top_logits, _ = F.topk(routing.logits, 2)
print("softmax over the top-2 logits (the order of Shazeer et al. and of the Mixtral paper)\n", F.softmax(top_logits).numpy())
assert np.allclose(F.softmax(top_logits).numpy(), routing.gates.numpy(), atol=1e-6)

# %% [markdown]
# In the MoE layer the router's choice decides which tokens each expert sees. The layer sorts the
# token copies by expert and runs each expert once on its block (lesson 03 looks inside), and its
# `report` says what happened:

# %%
layer = MoE(MoEConfig(d_model=8, n_experts=6, top_k=2, expert_hidden=16, router="topk", balance_loss=None))
y = layer(mm.randn(64, 8))
print("output shape:", y.shape)
print("experts of the first 4 tokens:\n", layer.report.expert_index.reshape(-1, 2)[:4])
print("load: share of the 64 x 2 assignments each expert got:", layer.report.load)

# %% [markdown]
# ## 2. Noisy top-k
#
# Shazeer et al. add noise to the logits before choosing, with a learned, per-expert scale, and
# give its purpose as **load balancing** (§2.1, with the details in App. A): the noise spreads
# tokens over experts, and it is what makes the smooth load estimator of section 5 possible — a
# count of tokens has no gradient, but the probability that noise puts an expert in the top $k$
# does. A second effect is exploration: an expert outside the top $k$ gets no output, so no
# gradient tells the router that it might have been better, and noise lets near-misses be tried.
# The noisy logits (eq. 4):
#
# $$H(x)_i = (x W_g)_i + \varepsilon_i\cdot \mathrm{softplus}\big((x W_{\text{noise}})_i\big),
# \qquad \varepsilon_i \sim \mathcal N(0, 1),$$
#
# in training only. Both weight matrices start at **zero** (paper, App. A): at the start the
# choice is made by the noise alone, so every expert should get an even share of tokens. The
# library's `NoisyTopKRouter` does exactly this; in evaluation mode it uses the clean logits. The
# cell measures three things: how many tokens' choices the noise changes between two calls, the
# load at initialisation, and that evaluation mode is deterministic.

# %%
mm.manual_seed(0)
noisy = NoisyTopKRouter(d_model=8, n_experts=6, k=2)
batch = mm.randn(600, 8)
first, second = noisy(batch).expert_index, noisy(batch).expert_index  # two training-mode calls
print("training mode: tokens whose top-2 set changed between two calls:",
      f"{np.mean(np.sort(first, axis=1) != np.sort(second, axis=1)).mean():.0%}")
print("load at initialisation (weights are zero, noise decides):",
      np.bincount(first.ravel(), minlength=6) / first.size)
noisy.train(False)  # evaluation mode: no noise
print("evaluation mode, same tokens twice: identical choices?",
      np.array_equal(noisy(batch).expert_index, noisy(batch).expert_index))

# %% [markdown]
# ## 3. The compute saved by sparsity
#
# Per token, the router costs $2dE$ FLOPs (one matrix-vector product) and each expert, an FFN
# $d \to h \to d$, costs $2dh + 2hd = 4dh$. With top-$k$ the layer's forward pass costs
#
# $$\text{FLOPs per token} = 2dE + k\cdot 4dh,$$
#
# so it grows with $k$, not with $E$, while the parameters, $E\cdot 2dh$, grow with $E$. Two
# measurements on this machine (forward plus backward, best of several runs): the same layer at
# $k = 1, 2, 4, 8$ with $E = 8$ experts, and the layer at $k = 2$ with $E = 4 \dots 32$.

# %%
D_MODEL, HIDDEN = 64, 256


def timed_pass(layer, x):
    """Wall time of one forward + backward pass (seconds)."""
    start = time.perf_counter()
    layer(x).sum().backward()
    return time.perf_counter() - start


def best_times(configs, n_tokens=TIMING_TOKENS, rounds=TIMING_REPEATS):
    """Best time of each (E, k) config over several rounds. The rounds go through all configs in
    turn, so a burst of load from other programs hits every config alike instead of one."""
    mm.manual_seed(0)
    layers = {(e, k): MoE(MoEConfig(d_model=D_MODEL, n_experts=e, top_k=k, expert_hidden=HIDDEN, router="topk", balance_loss=None))
              for e, k in configs}
    x = mm.randn(n_tokens, D_MODEL, requires_grad=True)
    for layer in layers.values():
        timed_pass(layer, x)  # warm-up: the first call pays for memory allocation
    best = dict.fromkeys(configs, float("inf"))
    for _ in range(rounds):
        for config, layer in layers.items():
            best[config] = min(best[config], timed_pass(layer, x))
    return best


def forward_flops(n_experts, k, n_tokens=TIMING_TOKENS):
    return n_tokens * (2 * D_MODEL * n_experts + k * 4 * D_MODEL * HIDDEN)


k_values, e_values = [1, 2, 4, 8], [4, 8, 16, 32]
timings = best_times(sorted({(8, k) for k in k_values} | {(e, 2) for e in e_values}))
k_times = [timings[(8, k)] for k in k_values]
e_times = [timings[(e, 2)] for e in e_values]

print(f"{TIMING_TOKENS} tokens, d = {D_MODEL}, expert hidden = {HIDDEN}")
print(" E   k   forward MFLOP   expert params   forward+backward ms")
for (e, k), t in sorted(timings.items()):
    print(f"{e:2}  {k:2}   {forward_flops(e, k) / 1e6:13.1f}   {e * 2 * D_MODEL * HIDDEN:13,}   {t * 1e3:19.1f}")
print(f"k = E = 8 (every expert on every token) against k = 1: {k_times[-1] / k_times[0]:.1f}x the time, "
      f"{forward_flops(8, 8) / forward_flops(8, 1):.1f}x the FLOPs")
print(f"E = 32 against E = 4 at k = 2: {e_times[-1] / e_times[0]:.1f}x the time for 8x the expert parameters")

fig, (ax_k, ax_e) = plt.subplots(1, 2, figsize=(11, 3.6))
ax_k.plot(k_values, np.array(k_times) * 1e3, "o-", label="measured time")
ax_k.plot(k_values, np.array(k_values) / k_values[0] * k_times[0] * 1e3, "k:", label="proportional to k")
ax_k.set_xlabel("k (experts per token), E = 8")
ax_k.set_ylabel("forward + backward (ms)")
ax_k.set_title("Cost grows with k ...")
ax_k.legend()
ax_e.plot(e_values, np.array(e_times) * 1e3, "o-", label="measured time (k = 2)")
ax_e.set_xscale("log", base=2)
ax_e.set_ylim(0, max(e_times) * 1.3e3)
ax_e.set_xlabel("E (experts), k = 2")
ax_e.set_title("... and far more slowly than E")
ax_e.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The time grows with $k$, somewhat less than in proportion (the dotted line, and the printed
# ratio of time against FLOPs at $k = 8$). Multiplying the experts — the parameters — raises it
# far less than in proportion (the last printed line): the expert FLOPs do not change (the FLOP
# column), and what grows is the router's share and the work per expert (each expert's block is
# one matrix product called from Python, which matters when blocks are this small). Timings on a
# shared machine are noisy; the best-of-several runs and the FLOP column tell the same story.
#
# ## 4. Expert collapse
#
# Sparsity creates a feedback loop. An expert that the router happens to favour early gets more
# tokens, so more gradient, so it improves faster, so the router favours it more. Shazeer et al.
# observed that "the gating network tends to converge to a state where it always produces large
# weights for the same few experts" (§4). Let us watch it happen.
#
# The model: a linear layer from 2 inputs to width 32, a GELU, an MoE layer with $E = 16$
# noisy-top-2 experts, and a linear read-out to 8 classes. The task: points in the square
# $[-2, 2]^2$ cut into a 4×4 grid of cells, each cell labelled with one of 8 classes — a pattern
# that needs several different local rules, so there is work for many experts. We train with SGD
# with momentum and record the layer's `report.load` (each expert's share of the assignments) at
# every step. (SGD keeps the feedback loop intact: an expert's update grows with the tokens it
# gets. Adam rescales every parameter's step to a similar size, which may weaken the loop; this
# lesson does not measure Adam — question 8 asks you to.)
#
# What you are about to see: the load of each expert at every step of one run without any
# balancing (a heat map), then the final shares over three seeds. Under top-2 each token makes
# two assignments to two *different* experts, so one expert can hold at most 50% of the
# assignments — and a busiest share of 50% means that expert is on **every** token.

# %%
N_EXPERTS, K = 16, 2


def grid_task(n, rng):
    """n points in [-2, 2]^2; the label is the 4x4 cell's index modulo 8 (8 classes, 2 cells each)."""
    x = rng.uniform(-2, 2, size=(n, 2)).astype(np.float32)
    cell = np.floor(x + 2).astype(int).clip(0, 3)  # (n, 2) column and row of the cell
    return x, (4 * cell[:, 0] + cell[:, 1]) % 8


class Classifier(nn.Module):
    def __init__(self, moe_config):
        self.inp = nn.Linear(2, moe_config.d_model)
        self.moe = MoE(moe_config)
        self.out = nn.Linear(moe_config.d_model, 8)

    def forward(self, x):
        return self.out(self.moe(F.gelu(self.inp(x))))


def train_classifier(balance_loss, seed, steps=TRAIN_STEPS, coef=0.1):
    """Trains the classifier; returns (model, load per step (S, E), test accuracy)."""
    mm.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = MoEConfig(d_model=32, n_experts=N_EXPERTS, top_k=K, expert_hidden=32, router="noisy_topk",
                       balance_loss=balance_loss, balance_coef=coef)
    model = Classifier(config)
    optimizer = mm.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loads = []
    for _ in range(steps):
        x, labels = grid_task(256, rng)
        loss = F.cross_entropy(model(mm.tensor(x)), mm.tensor(labels)) + model.moe.aux_loss  # aux_loss is 0 without balancing
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loads.append(model.moe.report.load)
    model.eval()
    x, labels = grid_task(4000, np.random.default_rng(1000))
    with mm.no_grad():
        accuracy = float((model(mm.tensor(x)).numpy().argmax(axis=1) == labels).mean())
    return model, np.array(loads), accuracy


def summary(loads):
    """Numbers for the last 20 steps' mean load: busiest expert, top-2 share, starved experts, CV^2."""
    final = loads[-20:].mean(axis=0)
    return {"busiest": final.max(), "top2": np.sort(final)[-2:].sum(),
            "starved": int((final < 0.25 / N_EXPERTS).sum()), "cv2": final.var() / final.mean() ** 2}


collapse_runs = {seed: train_classifier(None, seed) for seed in SEEDS}
_, loads_none, accuracy_none = collapse_runs[SEEDS[0]]

fig, ax = plt.subplots(figsize=(8, 3.2))
image = ax.imshow(loads_none.T, aspect="auto", cmap="viridis", vmin=0, vmax=0.5, interpolation="nearest")
fig.colorbar(image, ax=ax, label="share of assignments")
ax.set_xlabel("training step")
ax.set_ylabel("expert")
ax.set_title(f"Load per expert without balancing (seed {SEEDS[0]}; balanced = {1 / N_EXPERTS:.3f})")
ax.grid(False)
plt.show()
s = summary(loads_none)
print(f"after {TRAIN_STEPS} steps: busiest expert {s['busiest']:.1%} of assignments (fair share {1 / N_EXPERTS:.0%}), "
      f"two busiest {s['top2']:.0%}, experts under a quarter of the fair share: {s['starved']} of {N_EXPERTS} "
      f"(the most one expert can hold under top-2 is 50%: one of every token's two)")

# %% [markdown]
# At the start every expert gets its fair share: the router's weights are zero and the noise
# decides. Then a handful of bright bands take over and most experts fade out (the printed
# shares above; on seed 0 the busiest expert ends close to the 50% ceiling, so it is on nearly
# every token). Each token still goes to two experts, but mostly to the same few: the layer has
# the parameters of sixteen experts and the use of a few.
#
# ## 5. Balancing losses
#
# Shazeer et al. add two terms to the training loss, each the squared **coefficient of variation**
# $\mathrm{CV}(v)^2 = \mathrm{Var}(v) / \mathrm{mean}(v)^2$ of a per-expert vector (zero exactly
# when all entries are equal, and independent of scale). The first is the **importance** loss
# (§4, eqs. 6–7):
#
# $$\mathrm{Importance}(X)_i = \sum_{x \in X} G_i(x),\qquad
# L_{\text{importance}} = w_{\text{importance}}\cdot \mathrm{CV}\big(\mathrm{Importance}(X)\big)^2.$$
#
# It evens out the total *gate weight* each expert receives. But equal importance does not mean
# equal numbers of tokens: one expert can receive many tokens with small weights and another a few
# with large ones. A tiny example:

# %%
expert_index = np.array([[0], [0], [0], [1], [2], [2], [2], [3]])  # (T, k=1): experts 0 and 2 get three tokens
gates = mm.tensor([[0.3], [0.3], [0.3], [0.9], [0.3], [0.3], [0.3], [0.9]])  # ... with small gates; 1 and 3 one token, big gate
importance = np.bincount(expert_index.ravel(), weights=gates.numpy().ravel(), minlength=4)
counts = np.bincount(expert_index.ravel(), minlength=4)
print("importance per expert:", importance, "  CV^2 =", round(losses.importance_loss(gates, expert_index, 4).item(), 6))
print("tokens per expert:    ", counts, "          CV^2 =", counts.var() / counts.mean() ** 2)

# %% [markdown]
# (The gates are top-1 probabilities kept without renormalising, as in Switch, lesson 03.)
# Balanced importance, unbalanced counts. And counts are what matter for the hardware: each
# expert's batch must fit in memory, and the slowest expert sets the pace. So the paper adds a
# **load** loss on the number of tokens each expert receives. A count has no gradient, though.
#
# ### The load estimator
#
# The trick (App. A, eqs. 8–10) is to replace the count by its *probability*. Expert $i$ is in
# token $x$'s top $k$ when its noisy logit beats the $k$-th largest of the others. Holding the
# other experts' noise fixed and redrawing only expert $i$'s, that happens with probability
#
# $$P(x, i) = \Phi\!\left(\frac{(x W_g)_i - \mathrm{kth\_excluding}(H(x), k, i)}{\mathrm{softplus}\big((x W_{\text{noise}})_i\big)}\right),
# \qquad \mathrm{Load}(X)_i = \sum_{x\in X} P(x, i),$$
#
# where $\Phi$ is the standard normal CDF and $\mathrm{kth\_excluding}(H, k, i)$ is the $k$-th
# largest entry of $H(x)$ among the experts other than $i$. $P$ is smooth in $W_g$ and
# $W_{\text{noise}}$, so $L_{\text{load}} = w_{\text{load}}\cdot\mathrm{CV}(\mathrm{Load}(X))^2$
# has a gradient. Because each $P(x, i)$ is an exact conditional probability, averaging
# $\mathrm{Load}_i$ over noise draws must give the average *count* of tokens routed to $i$. We can
# check that by sampling, with a router whose weights are random (so the loads differ):

# %%
mm.manual_seed(1)
checked = NoisyTopKRouter(d_model=8, n_experts=6, k=2)
checked.weight.data[:] = 0.5 * np.random.default_rng(1).standard_normal(checked.weight.shape)
checked.noise_weight.data[:] = 0.3 * np.random.default_rng(2).standard_normal(checked.weight.shape)
probe = mm.randn(256, 8)
smooth, counted = np.zeros(6), np.zeros(6)
for _ in range(LOAD_SAMPLES):
    r = checked(probe)  # training mode: a fresh noise sample each call
    smooth += checked.smooth_load.numpy().sum(axis=0) / LOAD_SAMPLES  # Load_i, eq. 10
    counted += np.bincount(r.expert_index.ravel(), minlength=6) / LOAD_SAMPLES
print(f"averaged over {LOAD_SAMPLES} noise draws:")
print("smooth load estimate:", smooth)
print("tokens counted:      ", counted)
print(f"largest relative difference: {np.abs(smooth - counted).max() / counted.mean():.1%}")

# %% [markdown]
# The two agree to within the sampling error: the smooth load is an unbiased, differentiable
# stand-in for the count. In the library the router keeps $P(x, i)$ as `router.smooth_load`, and
# the MoE layer with `balance_loss="importance_load"` adds
# $w\cdot\big(\mathrm{CV}(\mathrm{Importance})^2 + \mathrm{CV}(\mathrm{Load})^2\big)$ to
# `layer.aux_loss` (one weight for both; the paper's language-model runs used 0.1 for each).
#
# ## 6. The cure
#
# The same model, data, seeds and optimiser, now with both losses at $w = 0.1$. You will see the
# two heat maps side by side, the imbalance (CV² of the load) over training for both, and a table
# of every seed of both; the last lines compare the two on accuracy and on balance over the seeds.

# %%
cure_runs = {seed: train_classifier("importance_load", seed) for seed in SEEDS}
_, loads_balanced, accuracy_balanced = cure_runs[SEEDS[0]]

fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained", gridspec_kw={"width_ratios": [1, 1, 0.9]})
for ax, loads, title in ((axes[0], loads_none, "no balancing"), (axes[1], loads_balanced, "importance + load losses")):
    image = ax.imshow(loads.T, aspect="auto", cmap="viridis", vmin=0, vmax=0.5, interpolation="nearest")
    ax.set_title(f"Load: {title}")
    ax.set_xlabel("training step")
    ax.set_ylabel("expert")
    ax.grid(False)
fig.colorbar(image, ax=axes[:2], label="share of assignments")
for loads, label in ((loads_none, "no balancing"), (loads_balanced, "importance + load")):
    axes[2].plot(loads.var(axis=1) / loads.mean(axis=1) ** 2, label=label)  # CV^2 of the load, per step
axes[2].set_xlabel("training step")
axes[2].set_ylabel("CV² of the load")
axes[2].set_title("Imbalance over training")
axes[2].legend()
plt.show()

print(f"{'run':22} seed  busiest  two busiest  starved experts  CV^2 of load  test accuracy")
for name, runs in (("no balancing", collapse_runs), ("importance + load", cure_runs)):
    for seed, (_, loads, accuracy) in runs.items():
        s = summary(loads)
        print(f"{name:22} {seed:4}  {s['busiest']:7.0%}  {s['top2']:11.0%}  {s['starved']:8} of {N_EXPERTS}  "
              f"{s['cv2']:12.2f}  {accuracy:13.1%}")
accuracies = {name: [accuracy for _, _, accuracy in runs.values()] for name, runs in
              (("no balancing", collapse_runs), ("importance + load", cure_runs))}
imbalance = {name: [summary(loads)["cv2"] for _, loads, _ in runs.values()] for name, runs in
             (("no balancing", collapse_runs), ("importance + load", cure_runs))}
print("\ntest accuracy:", seeds.verdict(accuracies["importance + load"], accuracies["no balancing"],
                                      "balanced", "unbalanced", lower_is_better=False))
print("CV^2 of load: ", seeds.verdict(imbalance["importance + load"], imbalance["no balancing"], "balanced", "unbalanced"))

# %% [markdown]
# With the losses, the load stays far more even on every seed (the CV² columns and the last
# line), while without them it concentrates. Compare the accuracy columns as well, and the
# accuracy verdict: on this small task a collapsed layer still fits, and the losses do not buy
# accuracy — by the course's rule the unbalanced runs are even slightly ahead, though the gap
# only just clears the spread. The losses are a constraint on the router, not a free
# improvement of the task. What they buy is that all sixteen experts' parameters are used, and that no
# expert receives far more tokens than the hardware planned for — which becomes a hard limit in
# lesson 03, where each expert has a fixed capacity and the overflow is dropped.
#
# ## Check your understanding
#
# (Short answers, each pointing to the cell that shows it, are in `solutions/answers/02.md`:
# try the questions first.)
#
# 1. A top-$k$ layer has $E = 64$ experts and $k = 2$. How do its parameters and its FLOPs per
#    token compare with a dense FFN of the same expert width? With the $E=8$, $k=8$ row above?
# 2. Why does softmax-then-top-$k$-then-renormalise give the same weights as top-$k$-then-softmax?
#    Why does $k = 1$ leave the router without a gradient in both?
# 3. What would go wrong at initialisation if $W_g$ started random instead of zero, with no noise?
# 4. Give a batch where $\mathrm{CV}(\mathrm{Importance})^2 = 0$ but the counts are very uneven,
#    and one where the counts are equal but the importance is not.
# 5. $P(x, i)$ uses the $k$-th largest of the *other* experts' noisy logits. For an expert that is
#    inside the top $k$, which entry of the sorted $H(x)$ is that? For one outside?
# 6. Why is the CV² used rather than the variance of the loads? (Think of doubling the batch.)
# 7. In the collapse run, which experts win? Would the same ones win with another seed? What does
#    that suggest about whether collapse reflects the *task*?
# 8. Swap SGD for `mm.optim.Adam` in `train_classifier` (no balancing). Does the load still
#    collapse in 300 steps? Report the busiest share over the three seeds.
#
# ## Exercises
#
# In `exercises/ex02_sparse_gating.py`: `topk_gating` (section 1), `noisy_topk_gating` (section 2),
# `importance_loss` (section 5) and `load_loss` (*The load estimator*). Grade them with
#
# ```
# python -m minimoe.grade ex02
# ```
