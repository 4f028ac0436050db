# %% [markdown]
# # Lesson 01 — Adaptive mixtures of local experts (Jacobs, Jordan, Nowlan & Hinton, 1991)
#
# Every Mixture-of-Experts layer in a modern language model descends from one short paper. A
# *gating network* looks at the input and hands out weights; several *expert networks* each make
# a prediction; the output is the weighted blend. The paper's real contribution is not the blend
# but the **error function**: with one choice the experts divide the input space among themselves,
# with the other they smear into one committee. This lesson reproduces that finding, fits the
# same model by EM, the statistician's way, and then grows it into a tree of gates, the
# hierarchical mixture of experts (Jordan & Jacobs, 1994).
#
# **After this lesson you can**
# - write a mixture of experts $y = \sum_i p_i(x)\, o_i(x)$ with a softmax gate, and compute the
#   softmax so that it never overflows;
# - state the cooperative error (eq. 1.1) and the competitive error (eq. 1.3), derive their
#   gradients, and explain why one makes experts specialise and the other makes them co-adapt;
# - compute each expert's posterior responsibility $h_i$ and read the gate's gradient $p_i - h_i$;
# - fit a mixture of linear experts by EM and watch its log-likelihood rise at every step;
# - compute the posteriors at each level of a two-level tree of gates, fit the tree by EM, and
#   compare it with a flat mixture of as many experts.
#
# **Papers.** Jacobs, Jordan, Nowlan & Hinton (1991), *Adaptive mixtures of local experts*,
# Neural Computation 3(1): 79–87, §1, equations 1.1–1.5. Jordan & Jacobs (1994), *Hierarchical
# mixtures of experts and the EM algorithm*, Neural Computation 6(2): 181–214 (the tree of gates,
# its posteriors and its EM, with IRLS for the gates; we use linear-Gaussian experts and softmax
# gates, as the paper does). Dempster, Laird & Rubin (1977),
# *Maximum likelihood from incomplete data via the EM algorithm*, JRSS B 39 (EM, and "generalised
# EM", which only needs the M-step to *improve*).
#
# **Prerequisites.** Lesson 00 (the engine: tensors, `backward`, `mm.optim`). Gaussian
# likelihoods and Bayes' rule.

# %% tags=["parameters"]
import os

FAST = os.environ.get("MINIMOE_FAST") == "1"  # CI runs every lesson with MINIMOE_FAST=1: fewer steps, same code
TRAIN_STEPS = 300 if FAST else 2000  # gradient steps per mixture in section 3
SEEDS = (0, 1, 2)  # section 3 repeats each training with these seeds
EM_ITERATIONS = 15 if FAST else 60
GD_STEPS = 200 if FAST else 1500  # gradient descent on the same likelihood, for comparison
TREE_ITERATIONS = 15 if FAST else 60  # EM iterations per fit in section 6
TREE_STARTS = 3  # section 6 keeps the best of this many EM starts per seed

# %%
import itertools
import time

import matplotlib.pyplot as plt
import numpy as np

import minimoe as mm
import minimoe.functional as F
from minimoe import seeds
from minimoe.models import hme
from minimoe.models.jacobs import LinearMixture, competitive_loss, cooperative_loss, posterior

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.4, 3.6), "axes.grid": True, "grid.alpha": 0.3})
EXPERT_COLOURS = plt.cm.tab10(np.arange(10))
print("fast mode" if FAST else "full mode")

# %% [markdown]
# ## 1. A task with regimes
#
# The 1991 paper used vowel recognition across speakers. We use something we can see whole: a
# one-dimensional regression whose target follows three different straight lines on three
# intervals, with jumps between them, plus a little noise. A single linear model cannot fit it; a
# committee of linear models can, if each takes one interval.

# %%
BOUNDARIES = (-1.0, 1.0)  # the regimes: x < -1, -1 <= x < 1, x >= 1
REGIME_NAMES = ("A", "B", "C")


def target(x):
    """The noise-free function: a different line in each regime."""
    return np.select([x < BOUNDARIES[0], x < BOUNDARIES[1]], [2 * x + 6, -2 * x], 3 * x - 7)


def regime_of(x):
    return np.select([x < BOUNDARIES[0], x < BOUNDARIES[1]], [0, 1], 2)


data_rng = np.random.default_rng(0)
x_train = data_rng.uniform(-3, 3, size=(600, 1))  # (T, 1)
d_train = target(x_train) + 0.2 * data_rng.standard_normal(x_train.shape)  # (T, 1) the desired outputs
x_grid = np.linspace(-3, 3, 601)[:, None]  # for plots and for measuring errors against the clean target

fig, ax = plt.subplots()
ax.scatter(x_train[:, 0], d_train[:, 0], s=4, c=[EXPERT_COLOURS[r] for r in regime_of(x_train[:, 0])])
ax.plot(x_grid, target(x_grid), "k", lw=1)
for bound in BOUNDARIES:
    ax.axvline(bound, color="grey", ls=":")
ax.set_xlabel("x")
ax.set_ylabel("d")
ax.set_title("Three regimes A, B, C (noise std 0.2)")
plt.show()

# %% [markdown]
# ## 2. The softmax gate
#
# The gating network produces one score $s_i(x)$ per expert, and the softmax turns scores into
# weights that are positive and sum to one:
#
# $$p_i(x) = \frac{e^{s_i(x)}}{\sum_j e^{s_j(x)}}.$$
#
# Written literally this overflows: $e^{1000}$ is `inf` in float64, and `inf/inf` is `nan`.
# Since multiplying top and bottom by $e^{-m}$ changes nothing, we subtract $m = \max_j s_j$
# first, and every exponent is then at most 0. The same trick gives the log-softmax,
# $\log p_i = s_i - m - \log\sum_j e^{s_j - m}$, without ever taking the log of a number that
# rounded to 0. The engine's `F.softmax`, `F.log_softmax` and `F.logsumexp` all work this way.

# %%
scores = np.array([[1000.0, 999.0, -1000.0]])
with np.errstate(over="ignore", invalid="ignore"):
    naive = np.exp(scores) / np.exp(scores).sum()
print("naive softmax:       ", naive)
print("F.softmax:           ", F.softmax(mm.tensor(scores, dtype=np.float64)).numpy())
with np.errstate(divide="ignore"):
    print("log of the softmax:  ", np.log(np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()))
print("F.log_softmax:       ", F.log_softmax(mm.tensor(scores, dtype=np.float64)).numpy())

# %% [markdown]
# Our model, `LinearMixture` in `minimoe/models/jacobs.py`: the gate is a linear map of $x$
# followed by the softmax, and each of $E$ experts is a line $o_i(x) = a_i x + b_i$. The $E$
# experts are held as vectors of slopes and intercepts, so one broadcast computes all of them for
# all inputs at once: scores of shape (T, E) and outputs of shape (T, E, 1) (one output dimension
# here). The gate starts at zero — every expert equally weighted everywhere — so whatever
# partition appears is learned. We use $E = 6$ experts for 3 regimes, more than needed, as the
# paper did.

# %%
N_EXPERTS = 6
mm.manual_seed(0)
scores, outputs = LinearMixture(N_EXPERTS)(mm.tensor(np.array([[-2.0], [0.0], [2.0]])))
print("scores", scores.shape, "outputs", outputs.shape, "\ngate at the start:\n", F.softmax(scores).numpy())


# %% [markdown]
# ## 3. Competitive against cooperative loss
#
# Write $d$ for the desired output of one case, $o_i$ for expert $i$'s output and $p_i$ for its
# gate weight. The obvious error compares the *blend* with the target — the paper's eq. 1.1, which
# it attributes to earlier systems:
#
# $$E^{\text{coop}} = \Big\| d - \sum_i p_i\, o_i \Big\|^2,
# \qquad \frac{\partial E^{\text{coop}}}{\partial o_i} = -2\,p_i\,\Big(d - \sum_j p_j o_j\Big).$$
#
# Every expert is pushed by the residual *of the blend*: if the others overshoot, expert $i$ is
# told to undershoot. Experts learn to cancel each other's errors — they co-adapt — and nothing
# rewards a single expert for getting a case right on its own. The paper's remedy is to make each
# expert answer the target by itself, and let the gate pick. Eq. 1.2,
# $E = \sum_i p_i \|d - o_i\|^2$, already does that; the form the paper used in all its
# simulations is eq. 1.3,
#
# $$E^{\text{comp}} = -\log \sum_i p_i\, e^{-\frac12 \|d - o_i\|^2},
# \qquad \frac{\partial E^{\text{comp}}}{\partial o_i} = -h_i\,(d - o_i)\quad\text{(eq. 1.5)},$$
#
# the negative log-likelihood of a mixture of unit-variance Gaussians. Each expert is pulled
# toward $d$ itself, weighted by $h_i$, its *posterior* responsibility for the case (section 4).
# The experts compete: the one that is already best at a case gets most of the gradient for it
# and becomes better still.
#
# Both losses are in `minimoe/models/jacobs.py` as `cooperative_loss` and `competitive_loss`,
# averaged over cases and written on the engine, so `backward()` gives their gradients. Eq. 1.3
# needs one care: written literally, $e^{-\frac12\|d - o_i\|^2}$ underflows to 0 for every expert
# when all are far off, and the log of 0 is $-\infty$. In logs it is
# $-\operatorname{logsumexp}_i\big(\log p_i - \tfrac12\|d - o_i\|^2\big)$, the same max-shift trick
# as the softmax. First the two losses on a case small enough to do by hand: two experts, gate
# $p = (\frac12, \frac12)$, target $d = 0$, outputs $o = (0, 2)$. The blend is 1, so eq. 1.1 is
# $1$; eq. 1.3 is $-\log(\frac12 + \frac12 e^{-2}) \approx 0.566$.

# %%
case = [mm.tensor(a, dtype=np.float64) for a in ([[0.0, 0.0]], [[[0.0], [2.0]]], [[0.0]])]  # s, o, d
print(f"cooperative (eq. 1.1): {cooperative_loss(*case).item():.4f}   "
      f"competitive (eq. 1.3): {competitive_loss(*case).item():.4f}   "
      f"by hand: 1 and {-np.log(0.5 + 0.5 * np.exp(-2)):.4f}")

# %% [markdown]
# Below, the same mixture of six linear experts is trained with each loss from three seeds. You
# will see, for one seed, how the gate cuts the line and what each expert outputs, then a table
# over all seeds: the question is whether the experts specialise — one per regime, each fitting
# its regime alone — or share every input.

# %%
def train_mixture(loss_fn, seed, steps):
    """Full-batch SGD with momentum on one of the two losses; the same data and start for both."""
    mm.manual_seed(seed)
    model = LinearMixture(N_EXPERTS)
    optimizer = mm.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)
    x, d = mm.tensor(x_train), mm.tensor(d_train)
    for _ in range(steps):
        loss = loss_fn(*model(x), d)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def evaluate(model):
    """Gate weights and expert outputs on the grid, and the numbers that tell the two regimes apart."""
    with mm.no_grad():
        scores, outputs = model(mm.tensor(x_grid))
    p, o = F.softmax(scores).numpy(), outputs.numpy()[..., 0]  # (G, E) each
    clean, regime = target(x_grid[:, 0]), regime_of(x_grid[:, 0])
    best_single = [min(((o[regime == r, i] - clean[regime == r]) ** 2).mean() for i in range(N_EXPERTS)) for r in range(3)]
    return {
        "p": p, "o": o,
        "mixture_mse": float((((p * o).sum(axis=1) - clean) ** 2).mean()),
        "experts_over_10pc": float((p > 0.1).sum(axis=1).mean()),  # experts carrying > 10% of the gate, per input
        "experts_in_use": int((p.mean(axis=0) > 0.05).sum()),  # experts with > 5% of the gate weight overall
        "best_single_mse": best_single,  # per regime: the error of the one expert that fits it best
    }


LOSSES = {"competitive (1.3)": competitive_loss, "cooperative (1.1)": cooperative_loss}
results = {(name, seed): evaluate(train_mixture(fn, seed, TRAIN_STEPS)) for name, fn in LOSSES.items() for seed in SEEDS}

# %%
def show_partition(axes, result, title):
    """Top: the gate's weights over x, stacked (the partition). Bottom: data, each expert, the blend."""
    p, o = result["p"], result["o"]
    top, bottom = axes
    top.stackplot(x_grid[:, 0], p.T, colors=EXPERT_COLOURS[:N_EXPERTS], alpha=0.85)
    top.set_ylim(0, 1)
    top.set_ylabel("gate $p_i(x)$")
    top.set_title(title)
    bottom.scatter(x_train[:, 0], d_train[:, 0], s=3, c="lightgrey")
    for i in range(N_EXPERTS):
        bottom.plot(x_grid[:, 0], o[:, i], color=EXPERT_COLOURS[i], lw=1.2, label=f"expert {i}")
    bottom.plot(x_grid[:, 0], (p * o).sum(axis=1), "k--", lw=1.5, label="blend")
    bottom.set_ylim(-9, 9)
    bottom.set_xlabel("x")
    bottom.set_ylabel("output")
    for ax in axes:
        for bound in BOUNDARIES:
            ax.axvline(bound, color="grey", ls=":")


fig, axes = plt.subplots(2, 2, figsize=(11, 6), sharex=True)
for column, name in enumerate(LOSSES):
    show_partition(axes[:, column], results[(name, SEEDS[0])], f"{name}, seed {SEEDS[0]}")
axes[1, 1].legend(fontsize=7, ncol=2, loc="lower left")
plt.tight_layout()
plt.show()

print(f"{'loss':18} seed  mixture MSE  experts >10% per x  experts in use  best single expert's MSE in A / B / C")
for (name, seed), r in results.items():
    best = " / ".join(f"{v:.2f}" for v in r["best_single_mse"])
    print(f"{name:18} {seed:4}  {r['mixture_mse']:11.3f}  {r['experts_over_10pc']:18.2f}  {r['experts_in_use']:14}  {best}")
mse = {name: [results[(name, seed)]["mixture_mse"] for seed in SEEDS] for name in LOSSES}
print("\nmixture MSE:", seeds.verdict(*mse.values(), *LOSSES))
print("experts >10% per x, mean ± spread over seeds:",
      "; ".join(f"{name} {seeds.summarize([results[(name, seed)]['experts_over_10pc'] for seed in SEEDS])}" for name in LOSSES))

# %% [markdown]
# Read the figure and the table together (the numbers are from this run; the seeds show they are
# not a fluke of one initialisation):
#
# - **Competitive.** The gate cuts the line into intervals close to the regimes, one colour per
#   interval (the cuts are still soft after this many steps), and each interval's expert is a line
#   through that regime's data: in every
#   regime some expert fits the data *on its own* (the small "best single expert" errors). Surplus
#   experts are left with almost no gate weight — the loss does not need them.
# - **Cooperative.** The blend fits the data too, if less closely (the mixture MSE column and its
#   verdict line), but
#   look at the experts themselves: their lines run far from the data, and in at least one regime
#   no expert comes close by itself (a large "best single expert" error). Only the weighted sum is
#   meaningful, and more experts share each input (the last line). That is co-adaptation: each expert's job is
#   defined by the others' mistakes.
#
# Why does it matter, if the blend fits? The paper's argument is about *learning*: under the
# cooperative loss a change to one expert changes the residual every other expert sees, so they
# interfere; under the competitive loss an expert is trained almost only on the cases it owns.
# And a specialised expert can be used alone — the property that sparse MoE (lesson 02) relies on
# when it runs only the top-scoring experts.
#
# ## 4. The posterior
#
# Eq. 1.3 is a mixture likelihood, so Bayes' rule gives each expert's responsibility for a case
# after seeing the target:
#
# $$h_i = \frac{p_i\, e^{-\frac12\|d - o_i\|^2}}{\sum_j p_j\, e^{-\frac12\|d - o_j\|^2}},$$
#
# the prior $p_i$ (the gate, which sees only $x$) times the likelihood of $d$ under expert $i$,
# normalised (`posterior` in `minimoe/models/jacobs.py`, computed in logs like eq. 1.3). Its
# gradients are the paper's eq. 1.5 for the experts and, for the gate's scores,
# $\partial E / \partial s_i = p_i - h_i$: the gate is trained to predict, from $x$ alone, which
# expert will turn out responsible. The engine confirms both on the trained competitive model:

# %%
model = train_mixture(competitive_loss, SEEDS[0], TRAIN_STEPS)
x_probe = np.array([[-2.0], [0.0], [2.0]])  # one case in each regime
d_probe = target(x_probe)
with mm.no_grad():
    scores_probe, outputs_probe = model(mm.tensor(x_probe, dtype=np.float32))
scores_leaf = mm.tensor(scores_probe.numpy(), dtype=np.float64, requires_grad=True)  # (3, E)
outputs_leaf = mm.tensor(outputs_probe.numpy(), dtype=np.float64, requires_grad=True)  # (3, E, 1)
d_leaf = mm.tensor(d_probe, dtype=np.float64)  # (3, 1)
loss_sum = competitive_loss(scores_leaf, outputs_leaf, d_leaf) * len(x_probe)
loss_sum.backward()  # gradients of the summed per-case losses

p = F.softmax(scores_leaf).numpy()
h = posterior(scores_leaf, outputs_leaf, d_leaf).numpy()  # (3, E)
expert_gradient = -h * (d_probe - outputs_leaf.numpy()[..., 0])  # eq. 1.5
np.set_printoptions(precision=3, suppress=True)
print("gate p (rows: x = -2, 0, 2)\n", p)
print("posterior h\n", h)
print("dE/ds from backward\n", scores_leaf.grad, "\np - h\n", p - h)
print("dE/do from backward\n", outputs_leaf.grad[..., 0], "\n-h (d - o)\n", expert_gradient)
assert np.allclose(scores_leaf.grad, p - h) and np.allclose(outputs_leaf.grad[..., 0], expert_gradient)

# %% [markdown]
# For each case the posterior puts nearly all its mass on one expert, the owner of that regime,
# and the gate already agrees with it, so $p - h$ is close to zero: the model has settled.
#
# ## 5. EM for a mixture of experts
#
# If the competitive loss is a likelihood, we can maximise it the way statisticians fit mixtures:
# with the **EM algorithm** (Jordan & Jacobs 1994). Give each expert its own noise variance
# $\sigma_i^2$, so the model of a case is
#
# $$P(d \mid x) = \sum_i p_i(x)\,\mathcal N\!\big(d;\ a_i x + b_i,\ \sigma_i^2\big),
# \qquad \mathcal L = \sum_t \log P(d_t \mid x_t).$$
#
# If we knew which expert generated each case, fitting would be easy: each expert would be a
# least-squares line through its own cases and the gate a classifier of which expert owns $x$.
# EM replaces that unknown by its posterior and alternates:
#
# - **E-step:** $h_{ti} = p_i(x_t)\,\mathcal N(d_t; a_i x_t + b_i, \sigma_i^2) \,/\, \sum_j (\cdots)$,
#   the section-4 posterior with the current parameters.
# - **M-step, experts:** each expert solves a *weighted* least-squares problem,
#   $\min_{a_i, b_i} \sum_t h_{ti} (d_t - a_i x_t - b_i)^2$ (2×2 normal equations, exact), and
#   $\sigma_i^2 = \sum_t h_{ti}(d_t - a_i x_t - b_i)^2 / \sum_t h_{ti}$.
# - **M-step, gate:** raise $Q = \sum_t \sum_i h_{ti} \log p_i(x_t)$: a softmax classifier
#   trained on soft labels $h$. Jordan & Jacobs solve it by IRLS, iteratively reweighted least
#   squares, which is Newton's method for this problem. We take three Newton steps per M-step and
#   halve a step until $Q$ does not fall.
#
# The experts' M-step maximises its part of the expected complete-data log-likelihood exactly and
# the gate's raises its part, which guarantees that $\mathcal L$ never decreases (Dempster et al.
# 1977; a partial M-step that still raises it is called "generalised EM"). We use $E = 3$ here: one
# expert per regime, so that no expert is left with a handful of cases whose variance collapses
# toward zero (a known way maximum likelihood degenerates for mixtures; the library also floors
# each variance at $10^{-6}$).
#
# The EM code is in `minimoe/models/hme.py`, written for the tree of gates of section 6; a flat
# mixture is the tree with a single branch, so `hme.init(1, 3, ...)` is our three experts. The
# features of a case are $(x, 1)$, the 1 giving every line and every gate score its intercept.
# The log-likelihood is written once, on the engine, and used by both EM and gradient descent.

# %%
EM_EXPERTS = 3
features_train = np.concatenate([x_train, np.ones_like(x_train)], axis=1)  # (T, 2): x and a 1
features_grid = np.concatenate([x_grid, np.ones_like(x_grid)], axis=1)
d_flat = d_train[:, 0]  # (T,)


def log_likelihood(model):
    with mm.no_grad():
        return hme.log_likelihood(model, features_train, d_flat).item()


start = hme.init(1, EM_EXPERTS, 2, np.random.default_rng(1))  # zero gate, N(0, 1) lines, unit variances
model, em_curve, em_seconds = start, [log_likelihood(start)], [0.0]  # em_seconds: cumulative time
for _ in range(EM_ITERATIONS):
    clock = time.perf_counter()
    model = hme.em_step(model, features_train, d_flat)
    em_seconds.append(em_seconds[-1] + time.perf_counter() - clock)  # the steps only, not the likelihood below
    em_curve.append(log_likelihood(model))
em_curve, em_seconds, em_model = np.array(em_curve), np.array(em_seconds), model

rises = np.diff(em_curve)
print(f"EM: log-likelihood {em_curve[0]:.1f} -> {em_curve[-1]:.1f} in {EM_ITERATIONS} iterations; "
      f"smallest change between iterations {rises.min():+.2e}")
assert np.all(rises >= -1e-8 * np.abs(em_curve[1:])), "EM must never lower the log-likelihood"

# %% [markdown]
# The assertion is the guarantee: every EM iteration raised the log-likelihood (up to float64
# rounding once it has converged). Now gradient descent on *the same* likelihood from *the same*
# start: Adam on $-\mathcal L / T$, all parameters at once, the variances through their logs.
# You will see the two curves per iteration, and — because an EM iteration does far more work
# than one gradient step — the wall-clock time each optimiser took, which is the fair comparison.

# %%
nested_gate, experts, log_variances = (mm.tensor(a, dtype=np.float64, requires_grad=True)
                                       for a in (start.nested_gates, start.experts, np.log(start.variances)))
optimizer = mm.optim.Adam([nested_gate, experts, log_variances], lr=0.05)
gd_curve = []
gd_start = time.perf_counter()
for _ in range(GD_STEPS):
    tree = hme.HME(start.top_gate, nested_gate, experts, log_variances.exp())  # the one-way top gate is the constant 1
    negative_ll = -hme.log_likelihood(tree, features_train, d_flat) / len(d_flat)
    gd_curve.append(-negative_ll.item() * len(d_flat))
    optimizer.zero_grad()
    negative_ll.backward()
    optimizer.step()
gd_total_seconds = time.perf_counter() - gd_start
gd_model = hme.HME(start.top_gate, nested_gate.numpy(), experts.numpy(), np.exp(log_variances.numpy()))
gd_curve.append(log_likelihood(gd_model))
gd_curve = np.array(gd_curve)

print("log-likelihood after n iterations (EM) or n steps (gradient descent):")
for n in sorted({1, 5, 10, 20, 50, 100, 500, 1000, len(gd_curve) - 1}):
    em_value = f"{em_curve[n]:8.1f}" if n < len(em_curve) else f"{'':8}"
    if n < len(gd_curve):
        print(f"  n = {n:5}   EM {em_value}   gradient descent {gd_curve[n]:8.1f}")

passed = int(np.argmax(em_curve >= gd_curve[-1])) if em_curve[-1] >= gd_curve[-1] else None
print(f"\nwall clock: EM {EM_ITERATIONS} iterations in {em_seconds[-1]:.2f} s "
      f"({1e3 * em_seconds[-1] / EM_ITERATIONS:.1f} ms each), final log-likelihood {em_curve[-1]:.1f}; "
      f"gradient descent {GD_STEPS} steps in {gd_total_seconds:.2f} s "
      f"({1e3 * gd_total_seconds / GD_STEPS:.2f} ms each), final {gd_curve[-1]:.1f}")
if passed is not None:
    print(f"EM passed gradient descent's final value at iteration {passed}, after {em_seconds[passed]:.2f} s")

fig, (ax_curve, ax_fit) = plt.subplots(1, 2, figsize=(11, 3.8))
ax_curve.plot(np.arange(len(em_curve)) + 1, em_curve, "o-", ms=3, label="EM (one E-step + M-step per iteration)")
ax_curve.plot(np.arange(len(gd_curve)) + 1, gd_curve, label="gradient descent (Adam), one step per iteration")
ax_curve.set_xscale("log")
ax_curve.set_ylim(em_curve[-1] - 1500, em_curve[-1] + 100)
ax_curve.set_xlabel("iteration")
ax_curve.set_ylabel("log-likelihood")
ax_curve.legend(fontsize=8)
ax_curve.set_title("The same likelihood, two optimisers")

em_gate = hme.leaf_priors(em_model, features_grid)[:, 0, :]  # (G, E): the gate of the one branch
slopes, intercepts = em_model.experts[0, 0], em_model.experts[1, 0]  # (E,) each
sigmas = np.sqrt(em_model.variances[0])
ax_fit.scatter(x_train[:, 0], d_train[:, 0], s=3, c="lightgrey")
for i in range(EM_EXPERTS):
    owned = em_gate[:, i] > 0.5
    ax_fit.plot(x_grid[:, 0], slopes[i] * x_grid[:, 0] + intercepts[i], color=EXPERT_COLOURS[i], lw=0.8, alpha=0.4)
    ax_fit.plot(x_grid[owned, 0], slopes[i] * x_grid[owned, 0] + intercepts[i], color=EXPERT_COLOURS[i], lw=2.5,
                label=f"expert {i}: {slopes[i]:+.2f} x {intercepts[i]:+.2f}, σ = {sigmas[i]:.2f}")
ax_fit.set_ylim(-9, 9)
ax_fit.legend(fontsize=7)
ax_fit.set_title("EM's experts (thick where the gate gives them > 0.5)")
plt.tight_layout()
plt.show()

# %% [markdown]
# EM reaches its optimum within about twenty iterations, and the fitted lines and noise levels can be
# compared with the data's true ones (slopes 2, −2, 3; intercepts 6, 0, −7; σ = 0.2). Gradient
# descent climbs the same hill far more slowly, because it must take small steps in all
# parameters together, while each EM step solves the experts' part exactly. An EM iteration
# costs more than a gradient step (a linear solve per expert and three Newton steps for the gate),
# so the fair comparison is the wall clock: compare the milliseconds each in the printed line, and
# the time at which EM passed gradient descent's final value against the time those gradient steps
# took — at this size. Two cautions: EM finds a *local* maximum that depends on the start (try
# other seeds in `hme.init`), and it needs closed-form or cheap M-steps, which is why deep MoE
# layers are trained by gradient descent instead.
#
# ## 6. A hierarchy of experts (Jordan & Jacobs 1994)
#
# A flat gate makes one decision among all experts. Jordan & Jacobs make it a tree: a top gate
# chooses among $I$ branches, and inside branch $i$ a nested gate chooses among its $J$ experts.
# Every gate is a softmax of scores linear in the input and every expert a linear-Gaussian model,
# as before:
#
# $$P(y \mid x) = \sum_i g_i(x) \sum_j g_{j|i}(x)\, P_{ij}(y \mid x), \qquad
# P_{ij} = \mathcal N\!\big(y;\ x \cdot w_{ij},\ \sigma_{ij}^2\big).$$
#
# The E-step now has a posterior at each level of the tree (the paper's "posterior
# probabilities"): for a leaf, for a branch, and for a leaf within its branch,
#
# $$h_{ij} = \frac{g_i\, g_{j|i}\, P_{ij}}{\sum_k g_k \sum_l g_{l|k} P_{kl}}, \qquad
# h_i = \sum_j h_{ij}, \qquad
# h_{j|i} = \frac{g_{j|i} P_{ij}}{\sum_l g_{l|i} P_{il}} = \frac{h_{ij}}{h_i}.$$
#
# The last form is for reading only: where $h_i$ rounds to 0, $h_{j|i}$ is still defined by the
# middle one, and all three are computed in logs. The expected complete-data log-likelihood
# splits into one term per expert and one per gate, so the M-step (the paper's "applying EM to
# the HME architecture") fits each on its own:
#
# - expert $(i, j)$: weighted least squares with weights $h_{ij}$, and $\sigma_{ij}^2$ the
#   weighted mean squared residual (exact);
# - the top gate: a softmax regression on the soft targets $h_i$, raising
#   $\sum_t \sum_i h_i \log g_i$;
# - branch $i$'s gate: a softmax regression on the targets $h_{j|i}$ with each case weighted by
#   $h_i$, that is on $h_{ij}$, raising $\sum_t h_i \sum_j h_{j|i} \log g_{j|i}$. A case the top
#   gate sends elsewhere barely moves this gate.
#
# The paper fits each gate by IRLS; we use the same three Newton steps with halving as in
# section 5, so each EM iteration is a generalised EM step and the log-likelihood still never
# falls — asserted below for every fit.
#
# **A task with nested regimes.** In one dimension a flat softmax gate can already cut the line
# into up to $E$ intervals in any order (the winning expert is the top line of $E$ score lines
# $s_i(x) = u_i x + c_i$), so a tree has nothing to add there. In two dimensions it does. Our
# target first depends on the sign of $x_1$; then each half splits again along $x_2$, at
# $x_2 = 0.8$ on the left and at $x_2 = -0.8$ on the right, with a different plane in each of the
# four cells. A 2×2 tree matches that structure: the top gate can take $x_1 = 0$ and each nested
# gate its own threshold. A flat gate with 4 experts must draw all the boundaries from
# differences of 4 linear scores; the vertical boundary then bends where the two horizontal ones
# meet it, and only steep gate weights straighten it. Whether that costs anything here is what we
# measure. Both models have 4 linear experts and are fitted by the same EM code from the same
# starts; EM finds local maxima, so for each of three seeds we keep the best of three starts by
# final log-likelihood (the usual remedy) and then compare over the seeds.

# %%
# the plane a1 x1 + a2 x2 + b of each cell
TREE_LINES = np.array([[1.0, 1.0, 3.0], [-1.0, 0.5, -2.0], [2.0, -1.0, -3.0], [-0.5, -1.5, 2.5]])


def tree_regime(points):
    """The cell of each 2-D point: the sign of x1 first, then x2 against that half's own threshold."""
    x1, x2 = points[:, 0], points[:, 1]
    return np.where(x1 < 0, np.where(x2 < 0.8, 0, 1), np.where(x2 < -0.8, 2, 3))


def tree_target(points):
    line = TREE_LINES[tree_regime(points)]
    return (line[:, :2] * points).sum(axis=1) + line[:, 2]


tree_rng = np.random.default_rng(0)
points_train = tree_rng.uniform(-2, 2, (800, 2))
y_tree = tree_target(points_train) + 0.2 * tree_rng.standard_normal(len(points_train))
tree_features = np.concatenate([points_train, np.ones((len(points_train), 1))], axis=1)  # (T, 3)
axis_2d = np.linspace(-2, 2, 101)
points_grid = np.stack(np.meshgrid(axis_2d, axis_2d), axis=-1).reshape(-1, 2)  # (G, 2), x1 varies fastest
grid_features = np.concatenate([points_grid, np.ones((len(points_grid), 1))], axis=1)
TREES = {"tree 2x2": (2, 2), "flat 1x4": (1, 4)}  # (branches, experts per branch)


def fit_by_em(shape, seed):
    """EM from TREE_STARTS starts; asserts every iteration of every start; returns the best start."""
    fits = []
    for start_rng in np.random.default_rng(seed).spawn(TREE_STARTS):
        model = hme.init(*shape, 3, start_rng)
        curve = [hme.log_likelihood(model, tree_features, y_tree).item()]
        clock = time.perf_counter()
        for _ in range(TREE_ITERATIONS):
            model = hme.em_step(model, tree_features, y_tree)
            curve.append(hme.log_likelihood(model, tree_features, y_tree).item())
        seconds = time.perf_counter() - clock
        curve = np.array(curve)
        assert np.all(np.diff(curve) >= -1e-8 * np.abs(curve[1:])), "EM lowered the log-likelihood"
        fits.append({"model": model, "curve": curve, "seconds": seconds})
    return max(fits, key=lambda fit: fit["curve"][-1]) | {"finals": [f["curve"][-1] for f in fits],
                                                           "seconds": sum(f["seconds"] for f in fits)}


def winning_cells(model):
    """The winning leaf at each grid point, renamed by the relabelling of leaves that best matches the
    true cells (a leaf's index is arbitrary)."""
    winner = hme.leaf_priors(model, grid_features).reshape(len(points_grid), -1).argmax(axis=1)
    truth = tree_regime(points_grid)
    return max((np.array(order)[winner] for order in itertools.permutations(range(4))),
               key=lambda renamed: (renamed == truth).mean())


tree_fits = {(name, seed): fit_by_em(shape, seed) for name, shape in TREES.items() for seed in SEEDS}
for fit in tree_fits.values():
    fit["mse"] = float(((hme.predict(fit["model"], grid_features) - tree_target(points_grid)) ** 2).mean())
    fit["cells"] = winning_cells(fit["model"])
    fit["agreement"] = float((fit["cells"] == tree_regime(points_grid)).mean())

print(f"{'model':9} seed  final log-likelihood of the {TREE_STARTS} starts   best   "
      "mean squared error  cells right  EM time")
for (name, seed), fit in tree_fits.items():
    finals = " ".join(f"{v:8.1f}" for v in fit["finals"])
    print(f"{name:9} {seed:4}  {finals:36} {fit['curve'][-1]:6.1f}  {fit['mse']:17.3f}  {fit['agreement']:11.3f}"
          f"  {fit['seconds']:.2f} s")
for measure, label, better_low in (("mse", "mean squared error", True), ("agreement", "cells right", False)):
    values = {name: [tree_fits[(name, seed)][measure] for seed in SEEDS] for name in TREES}
    print(f"\n{label}:", seeds.verdict(*values.values(), *TREES, lower_is_better=better_low))
best_ll = {name: [tree_fits[(name, seed)]["curve"][-1] for seed in SEEDS] for name in TREES}
print("\nbest log-likelihood:", seeds.verdict(*best_ll.values(), *TREES, lower_is_better=False))

# %%
def top_split_agreement(model):
    """The share of the grid where the top gate's choice is the sign of x1 (either labelling)."""
    with mm.no_grad():
        top_choice = hme.log_gates(model, grid_features)[0].numpy().argmax(axis=1)
    left = points_grid[:, 0] < 0
    return max(float((top_choice == left).mean()), float((top_choice != left).mean()))


print("the tree's top gate against the split x1 = 0:",
      ", ".join(f"seed {seed} {top_split_agreement(tree_fits[('tree 2x2', seed)]['model']):.3f}" for seed in SEEDS))

cell_colours = plt.cm.tab10(np.arange(4))
fig, axes = plt.subplots(1, 4, figsize=(15, 3.7))
panels = [("true cells", tree_regime(points_grid))]
for name in TREES:
    panels.append((f"{name}, seed {SEEDS[0]}: winning leaf (relabelled)", tree_fits[(name, SEEDS[0])]["cells"]))
for ax, (title, labels) in zip(axes[:3], panels):
    ax.imshow(cell_colours[labels.reshape(len(axis_2d), len(axis_2d))], origin="lower", extent=(-2, 2, -2, 2))
    ax.plot([0, 0], [-2, 2], "k:", lw=1)
    ax.plot([-2, 0], [0.8, 0.8], "k:", lw=1)
    ax.plot([0, 2], [-0.8, -0.8], "k:", lw=1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("$x_1$")
axes[0].set_ylabel("$x_2$")
with mm.no_grad():
    top_gate = np.exp(hme.log_gates(tree_fits[("tree 2x2", SEEDS[0])]["model"], grid_features)[0].numpy())
axes[1].contour(axis_2d, axis_2d, top_gate[:, 0].reshape(len(axis_2d), len(axis_2d)), levels=[0.5], colors="white",
                linewidths=2)
for (name, seed), fit in tree_fits.items():
    axes[3].plot(fit["curve"], color="C0" if name.startswith("tree") else "C3", alpha=0.8,
                 label=name if seed == SEEDS[0] else None)
axes[3].set_ylim(max(fit["curve"][-1] for fit in tree_fits.values()) - 1500, None)
axes[3].set_xlabel("EM iteration")
axes[3].set_ylabel("log-likelihood")
axes[3].set_title("kept start of each seed", fontsize=9)
axes[3].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %%
highest = max(max(fit["finals"]) for fit in tree_fits.values())
for name in TREES:
    reached = sum(int(v >= highest - 1.0) for seed in SEEDS for v in tree_fits[(name, seed)]["finals"])
    top = [tree_fits[(name, seed)] for seed in SEEDS if tree_fits[(name, seed)]["curve"][-1] >= highest - 1.0]
    seconds = np.mean([tree_fits[(name, seed)]["seconds"] for seed in SEEDS])
    iteration_ms = 1e3 * seconds / (TREE_STARTS * TREE_ITERATIONS)
    print(f"{name}: {reached} of {len(SEEDS) * TREE_STARTS} starts reached the highest log-likelihood found "
          f"({highest:.1f}, within 1.0); the {len(top)} seeds whose kept start did: mean squared error "
          + ", ".join(f"{fit['mse']:.3f}" for fit in top) + "; cells right "
          + ", ".join(f"{fit['agreement']:.3f}" for fit in top) + f"; {iteration_ms:.1f} ms per EM iteration")

# %% [markdown]
# The figure shows the true cells, the leaf that wins (largest $g_i g_{j|i}$) at each point for
# the kept start of seed 0 of each model, with leaves renamed to match the true cells (a leaf's
# index is arbitrary), the true boundaries dotted, and for the tree the top gate's own boundary
# in white; on the right, the log-likelihood of every kept start. Read it with the numbers above:
#
# - **Where EM ends depends more on the start than on the model.** Both models reach the same
#   highest log-likelihood, but the flat mixture got there from more of its starts than the tree
#   (the "starts reached" lines), and for one seed none of the tree's three starts did — its top
#   gate then misses the split $x_1 = 0$ (the top-gate line). That stuck seed spreads the tree's
#   values so wide that, over three seeds, every verdict line says no clear difference.
# - **Where both reach the top**, they explain the training data equally well but do not draw
#   the same partition: on those seeds the tree's winning leaves match more of the true cells and
#   its mean squared error against the clean target is lower than the flat mixture's (the last two
#   lines). That is what the structure predicts — in the figure the flat gate's vertical boundary
#   leans where it meets a horizontal one, while the tree's top gate draws it straight — but the
#   gap is small and rests on two and three seeds: an observation, not a verdict.
# - **The tree divides the work as the task does**: where it reached the top, its top gate alone
#   agrees with the sign of $x_1$ on nearly the whole grid, and each nested gate only places its
#   own threshold. An EM iteration of the tree costs more than one of the flat mixture (the
#   milliseconds per iteration): three gates to fit instead of one.
#
# At this size the hierarchy buys a partition closer to the nested structure and a readable
# division of labour, not a better likelihood, and it is harder to start well. Most later MoE
# layers keep a single gate and make it sparse instead (Shazeer et al. 2017 also try a two-level
# one), the subject of the next lesson.
#
# ## 7. The same mixture in the library
#
# minimoe's MoE layer with `router="dense"` is this 1991 model with FFN experts: a linear gate, a
# softmax, every expert on every token, and the weighted sum, $y = \sum_i p_i(x) E_i(x)$. Checking
# it by hand against its own router and experts:

# %%
from minimoe.moe import MoE, MoEConfig

mm.manual_seed(0)
layer = MoE(MoEConfig(d_model=4, n_experts=3, expert_hidden=8, router="dense", balance_loss=None))
tokens = mm.randn(5, 4)  # (T, d)
y = layer(tokens).numpy()  # (T, d)
with mm.no_grad():
    gate = F.softmax(tokens @ layer.router.weight).numpy()  # (T, E)
    each = [layer.experts(tokens, [5 if j == i else 0 for j in range(3)]).numpy() for i in range(3)]  # E x (T, d)
by_hand = sum(gate[:, i : i + 1] * each[i] for i in range(3))
print("largest difference between the layer and sum_i p_i E_i(x):", np.abs(y - by_hand).max())
print("gate weights of the first two tokens:\n", gate[:2])

# %% [markdown]
# Every expert runs on every token here, so the cost grows with the number of experts. The next
# lesson keeps only the top-scoring few per token — which only works because, as we have just
# seen, a well-trained gate concentrates its weight on a few specialists.
#
# ## Check your understanding
#
# (Short answers, each pointing to the cell that shows it, are in `solutions/answers/01.md`:
# try the questions first.)
#
# 1. Show that eq. 1.3 with a single expert is $\frac12\|d - o\|^2$ plus a constant. What does
#    that say about the relation between the competitive loss and ordinary least squares?
# 2. Under the cooperative loss, expert 2 overshoots on some case. What does the gradient tell
#    expert 1 to do on that case? Under the competitive loss?
# 3. Derive $\partial E^{\text{comp}}/\partial s_i = p_i - h_i$ from eq. 1.3 and the softmax.
#    When is the gate's gradient zero?
# 4. The competitive run left some experts almost unused. Is that a failure? What would happen
#    to them if the data got a fourth regime later?
# 5. Why is the E-step's $h$ computed from the *old* parameters, and why does fitting each
#    expert by weighted least squares raise the likelihood?
# 6. In EM, what goes wrong if one expert is responsible for only two cases, and how did this
#    lesson avoid it?
# 7. The unit variance in eq. 1.3 is a choice of scale. Multiply every target by 10: what happens
#    to the posteriors $h$, and so to the competition between experts?
# 8. In the tree's E-step, why is $h_{j|i}$ computed within branch $i$ rather than as
#    $h_{ij} / h_i$? And why is branch $i$'s gate fitted to $h_{ij}$, not to $h_{j|i}$ alone?
# 9. Section 6 says a one-dimensional task does not need a tree. Why can a flat softmax gate with
#    $E$ linear scores cut a line into $E$ intervals in any order, and what does the tree add in
#    two dimensions?
#
# ## Exercises
#
# In `exercises/ex01_jacobs.py`: `softmax` and `log_softmax` (section 2), `competitive_loss`
# (section 3), `gate_posterior` (section 4), `em_step` (section 5, with a gate that is a fixed
# prior over experts, the simplest case), and `hme_posteriors` and `hme_em_step` (section 6: the
# tree's posteriors at each level, and its EM step with the gates' M-step given). Grade them with
#
# ```
# python -m minimoe.grade ex01
# ```
