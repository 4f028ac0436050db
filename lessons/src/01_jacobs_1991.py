# %% [markdown]
# # Lesson 01 — Adaptive mixtures of local experts (Jacobs, Jordan, Nowlan & Hinton, 1991)
#
# Every Mixture-of-Experts layer in a modern language model descends from one short paper. A
# *gating network* looks at the input and hands out weights; several *expert networks* each make
# a prediction; the output is the weighted blend. The paper's real contribution is not the blend
# but the **error function**: with one choice the experts divide the input space among themselves,
# with the other they smear into one committee. This lesson reproduces that finding and then fits
# the same model by EM, the statistician's way (Jordan & Jacobs, 1994).
#
# **After this lesson you can**
# - write a mixture of experts $y = \sum_i p_i(x)\, o_i(x)$ with a softmax gate, and compute the
#   softmax so that it never overflows;
# - state the cooperative error (eq. 1.1) and the competitive error (eq. 1.3), derive their
#   gradients, and explain why one makes experts specialise and the other makes them co-adapt;
# - compute each expert's posterior responsibility $h_i$ and read the gate's gradient $p_i - h_i$;
# - fit a mixture of linear experts by EM and watch its log-likelihood rise at every step.
#
# **Papers.** Jacobs, Jordan, Nowlan & Hinton (1991), *Adaptive mixtures of local experts*,
# Neural Computation 3(1): 79–87, §1, equations 1.1–1.5. Jordan & Jacobs (1994), *Hierarchical
# mixtures of experts and the EM algorithm*, Neural Computation 6(2): 181–214 (EM for mixtures of
# experts; we derive the single-level, linear-expert case here). Dempster, Laird & Rubin (1977),
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

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

import minimoe as mm
import minimoe.functional as F
from minimoe import nn, seeds

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
# Our model: the gate is a linear map of $x$ followed by the softmax, and each of $E$ experts is a
# line $o_i(x) = a_i x + b_i$. The $E$ experts are held as vectors of slopes and intercepts, so one
# broadcast computes all of them for all inputs at once: shape (T, E). The gate starts at zero —
# every expert equally weighted everywhere — so whatever partition appears is learned. We use
# $E = 6$ experts for 3 regimes, more than needed, as the paper did.

# %%
N_EXPERTS = 6


class LinearMixture(nn.Module):
    """A softmax gate over E linear experts on 1-D inputs (Jacobs et al. 1991, with linear experts)."""

    def __init__(self, n_experts):
        self.gate = nn.Linear(1, n_experts)  # s(x) = x W + c
        self.gate.weight.data[:] = 0  # a uniform gate at the start
        self.gate.bias.data[:] = 0
        self.slope = nn.Parameter.normal((n_experts,), 1.0)
        self.intercept = nn.Parameter.normal((n_experts,), 1.0)

    def forward(self, x):
        """x (T, 1) -> gate scores (T, E) and expert outputs (T, E)."""
        return self.gate(x), x * self.slope + self.intercept


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
# Both losses are a few lines on the engine (the logsumexp keeps eq. 1.3 finite when every expert
# is far off). Below, the same mixture of six linear experts is trained with each loss from three
# seeds. You will see, for one seed, how the gate cuts the line and what each expert outputs, then
# a table over all seeds: the question is whether the experts specialise — one per regime, each
# fitting its regime alone — or share every input.

# %%
def cooperative_loss(scores, outputs, d):
    """Eq. 1.1, averaged over cases: ||d - sum_i p_i o_i||^2."""
    blend = (F.softmax(scores) * outputs).sum(axis=1, keepdims=True)  # (T, 1)
    return ((d - blend) ** 2).mean()


def competitive_loss(scores, outputs, d):
    """Eq. 1.3, averaged over cases: -log sum_i p_i exp(-||d - o_i||^2 / 2)."""
    return -F.logsumexp(F.log_softmax(scores) - 0.5 * (d - outputs) ** 2, axis=1).mean()


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
    p, o = F.softmax(scores).numpy(), outputs.numpy()  # (G, E) each
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
# normalised. Its gradients are the paper's eq. 1.5 for the experts and, for the gate's scores,
# $\partial E / \partial s_i = p_i - h_i$: the gate is trained to predict, from $x$ alone, which
# expert will turn out responsible. The engine confirms both on the trained competitive model:

# %%
model = train_mixture(competitive_loss, SEEDS[0], TRAIN_STEPS)
x_probe = np.array([[-2.0], [0.0], [2.0]])  # one case in each regime
d_probe = target(x_probe)
with mm.no_grad():
    scores_probe, outputs_probe = model(mm.tensor(x_probe, dtype=np.float32))
scores_leaf = mm.tensor(scores_probe.numpy(), dtype=np.float64, requires_grad=True)  # (3, E)
outputs_leaf = mm.tensor(outputs_probe.numpy(), dtype=np.float64, requires_grad=True)  # (3, E)
loss_sum = competitive_loss(scores_leaf, outputs_leaf, mm.tensor(d_probe, dtype=np.float64)) * len(x_probe)
loss_sum.backward()  # gradients of the summed per-case losses

p = F.softmax(scores_leaf).numpy()
h = F.softmax(F.log_softmax(scores_leaf) - 0.5 * (mm.tensor(d_probe, dtype=np.float64) - outputs_leaf) ** 2).numpy()
np.set_printoptions(precision=3, suppress=True)
print("gate p (rows: x = -2, 0, 2)\n", p)
print("posterior h\n", h)
print("dE/ds from backward\n", scores_leaf.grad, "\np - h\n", p - h)
print("dE/do from backward\n", outputs_leaf.grad, "\n-h (d - o)\n", -h * (d_probe - outputs_leaf.numpy()))
assert np.allclose(scores_leaf.grad, p - h) and np.allclose(outputs_leaf.grad, -h * (d_probe - outputs_leaf.numpy()))

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
#   trained on soft labels $h$. Jordan & Jacobs solve it by IRLS (Newton's method); we take
#   gradient-ascent steps with a line search that only accepts a step that raises $Q$.
#
# Each M-step raises the expected complete-data log-likelihood, which guarantees that
# $\mathcal L$ never decreases (Dempster et al. 1977; a partial gate step keeps the guarantee —
# that is "generalised EM"). We use $E = 3$ here: one expert per regime, so that no expert is left
# with a handful of cases whose variance collapses toward zero (a known way maximum likelihood
# degenerates for mixtures). The likelihood is written once, on the engine, and used by both EM
# and gradient descent:

# %%
EM_EXPERTS = 3
X64, D64 = mm.tensor(x_train, dtype=np.float64), mm.tensor(d_train, dtype=np.float64)


def log_joint(gate_w, gate_b, slope, intercept, log_var):
    """log p_i(x_t) + log N(d_t; a_i x_t + b_i, sigma_i^2): (T, E). Inputs are (1, E) / (E,) tensors."""
    log_prior = F.log_softmax(X64 @ gate_w + gate_b)  # (T, E)
    residual = D64 - (X64 * slope + intercept)  # (T, E)
    return log_prior - 0.5 * (np.log(2 * np.pi) + log_var) - 0.5 * residual**2 / log_var.exp()


def log_likelihood(params):
    """The data's log-likelihood for a dict of float64 arrays."""
    with mm.no_grad():
        return F.logsumexp(log_joint(*(mm.tensor(v, dtype=np.float64) for v in params.values())), axis=1).sum().item()


def fit_experts(h):
    """M-step for the experts: weighted least squares and the weighted residual variance, all E at once."""
    features = np.concatenate([x_train, np.ones_like(x_train)], axis=1)  # (T, 2): slope and intercept
    normal = np.einsum("te,ti,tj->eij", h, features, features)  # (E, 2, 2)
    right = np.einsum("te,ti,t->ei", h, features, d_train[:, 0])  # (E, 2)
    slope, intercept = np.linalg.solve(normal, right[..., None])[..., 0].T  # (E,) each
    residual = d_train - (x_train * slope + intercept)  # (T, E)
    variance = np.maximum((h * residual**2).sum(axis=0) / h.sum(axis=0), 1e-6)
    return slope, intercept, np.log(variance)


def fit_gate(h, gate_w, gate_b, steps=20):
    """M-step for the gate: gradient ascent on Q = sum h log p, each step accepted only if Q rises."""
    responsibilities = mm.tensor(h, dtype=np.float64)

    def q(w, b):
        return (responsibilities * F.log_softmax(X64 @ w + b)).sum()

    step = 1.0
    for _ in range(steps):
        w, b = (mm.tensor(v, dtype=np.float64, requires_grad=True) for v in (gate_w, gate_b))
        current = q(w, b)
        current.backward()
        while True:  # halve the step until Q does not fall
            new_w, new_b = gate_w + step * w.grad / len(h), gate_b + step * b.grad / len(h)
            with mm.no_grad():
                if q(mm.tensor(new_w, dtype=np.float64), mm.tensor(new_b, dtype=np.float64)).item() >= current.item():
                    break
            step /= 2
        gate_w, gate_b, step = new_w, new_b, step * 2
    return gate_w, gate_b


def em_step(params):
    with mm.no_grad():
        h = F.softmax(log_joint(*(mm.tensor(v, dtype=np.float64) for v in params.values()))).numpy()  # E-step (T, E)
    slope, intercept, log_var = fit_experts(h)
    gate_w, gate_b = fit_gate(h, params["gate_w"], params["gate_b"])
    return {"gate_w": gate_w, "gate_b": gate_b, "slope": slope, "intercept": intercept, "log_var": log_var}


init_rng = np.random.default_rng(1)
start = {"gate_w": np.zeros((1, EM_EXPERTS)), "gate_b": np.zeros(EM_EXPERTS),
         "slope": init_rng.standard_normal(EM_EXPERTS), "intercept": init_rng.standard_normal(EM_EXPERTS),
         "log_var": np.zeros(EM_EXPERTS)}

params, em_curve, em_seconds = dict(start), [log_likelihood(start)], [0.0]  # em_seconds: cumulative time
for _ in range(EM_ITERATIONS):
    clock = time.perf_counter()
    params = em_step(params)
    em_seconds.append(em_seconds[-1] + time.perf_counter() - clock)  # the steps only, not the likelihood below
    em_curve.append(log_likelihood(params))
em_curve, em_seconds = np.array(em_curve), np.array(em_seconds)
em_params = params

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
gd_params = {name: mm.tensor(value, dtype=np.float64, requires_grad=True) for name, value in start.items()}
optimizer = mm.optim.Adam(list(gd_params.values()), lr=0.05)
gd_curve = []
gd_start = time.perf_counter()
for _ in range(GD_STEPS):
    negative_ll = -F.logsumexp(log_joint(*gd_params.values()), axis=1).mean()
    gd_curve.append(-negative_ll.item() * len(x_train))
    optimizer.zero_grad()
    negative_ll.backward()
    optimizer.step()
gd_total_seconds = time.perf_counter() - gd_start
gd_curve.append(log_likelihood({k: v.numpy() for k, v in gd_params.items()}))
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

with mm.no_grad():
    grid64 = mm.tensor(x_grid, dtype=np.float64)
    em_gate = F.softmax(grid64 @ mm.tensor(em_params["gate_w"], dtype=np.float64) + mm.tensor(em_params["gate_b"], dtype=np.float64)).numpy()
ax_fit.scatter(x_train[:, 0], d_train[:, 0], s=3, c="lightgrey")
for i in range(EM_EXPERTS):
    owned = em_gate[:, i] > 0.5
    ax_fit.plot(x_grid[:, 0], em_params["slope"][i] * x_grid[:, 0] + em_params["intercept"][i], color=EXPERT_COLOURS[i], lw=0.8, alpha=0.4)
    ax_fit.plot(x_grid[owned, 0], em_params["slope"][i] * x_grid[owned, 0] + em_params["intercept"][i], color=EXPERT_COLOURS[i], lw=2.5,
                label=f"expert {i}: {em_params['slope'][i]:+.2f} x {em_params['intercept'][i]:+.2f}, σ = {np.exp(em_params['log_var'][i] / 2):.2f}")
ax_fit.set_ylim(-9, 9)
ax_fit.legend(fontsize=7)
ax_fit.set_title("EM's experts (thick where the gate gives them > 0.5)")
plt.tight_layout()
plt.show()

# %% [markdown]
# EM reaches its optimum in a few dozen iterations, and the fitted lines and noise levels can be
# compared with the data's true ones (slopes 2, −2, 3; intercepts 6, 0, −7; σ = 0.2). Gradient
# descent climbs the same hill far more slowly, because it must take small steps in all
# parameters together, while each EM step solves the experts' part exactly. An EM iteration
# costs more than a gradient step (a linear solve and an inner loop for the gate), so the fair
# comparison is the wall clock. The printed times show one EM iteration costing as much as
# several gradient steps (compare the milliseconds each), and EM still passing the value where
# gradient descent stopped in a fraction of the time those 1500 steps took — at this size. Two cautions: EM finds a
# *local* maximum that depends on the start (try other `init_rng` seeds), and it needs closed-form
# or cheap M-steps, which is why deep MoE layers are trained by gradient descent instead.
#
# ## 6. The same mixture in the library
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
#
# ## Exercises
#
# In `exercises/ex01_jacobs.py`: `softmax` and `log_softmax` (section 2), `competitive_loss`
# (section 3), `gate_posterior` (section 4) and `em_step` (section 5, with a gate that is a fixed
# prior over experts, the simplest case). Grade them with
#
# ```
# python -m minimoe.grade ex01
# ```
