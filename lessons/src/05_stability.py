# %% [markdown]
# # Lesson 05 — Stability: the router z-loss, the router's precision, expert dropout, gradient clipping and warm-up
#
# A router is a tiny part of an MoE model — one $d \times E$ matrix per layer — and it is where
# large sparse models break. The Switch Transformer and ST-MoE papers report training runs that
# diverge, and trace many of them to the router: its logits drift upward during training, the
# softmax over those logits is computed in a number format with few digits, and small rounding
# errors turn into different experts, different gates and, at worst, infinities. This lesson
# measures each piece on the tiny model: how the logits grow, what the **router z-loss** does
# about it, what float16 and bfloat16 do to a softmax as the logits grow, what **expert
# dropout** does to a model that has too little data, and what the trainer's own safeguards —
# **gradient clipping** and a **learning-rate warm-up** — do at learning rates too high for
# comfort.
#
# **After this lesson you can**
# - explain why nothing in the task loss holds the router's logits in place, and why large
#   logits are a problem in low precision;
# - write the router z-loss and its gradient, switch it on in minimoe (`z_loss_coef`), and
#   measure its effect on the logits of a trained model;
# - predict what float16 and bfloat16 do to a router softmax: rounding, overflow, underflow and
#   flipped top-$k$ choices — and why "compute the router in float32" is the standard fix;
# - use expert dropout, and say in which regime it helps;
# - write gradient clipping by the global norm and the warm-up + cosine schedule as minimoe's
#   trainer does, explain why clipping barely touches AdamW's first steps, and measure what each
#   does to router logits, loss spikes, dead experts and validation loss.
#
# **Papers.**
# - Zoph, Bello, Kumar, Du, Huang, Dean, Shazeer & Fedus (2022), *ST-MoE: designing stable and
#   transferable sparse expert models*, arXiv 2202.08906: §3 (the stability study), §3.3 (the
#   router z-loss, eq. 5, and its coefficient $c_z = 10^{-3}$, eq. 6).
# - Fedus, Zoph & Shazeer (2021), *Switch Transformers: scaling to trillion parameter models with
#   simple and efficient sparsity*, arXiv 2101.03961 (JMLR 2022): §2.4 — selective precision (the
#   router in float32, Table 2), a smaller initialisation (Table 3) and expert dropout for
#   fine-tuning (Table 4).
# - Pascanu, Mikolov & Bengio (2013), *On the difficulty of training recurrent neural networks*,
#   ICML: §3.2, Algorithm 1 (clipping by the gradient norm).
# - Goyal, Dollár, Girshick, Noordhuis, Wesolowski, Kyrola, Tulloch, Jia & He (2017), *Accurate,
#   large minibatch SGD: training ImageNet in 1 hour*, arXiv 1706.02677: §2.2 (gradual warm-up).
# - Loshchilov & Hutter (2017), *SGDR: stochastic gradient descent with warm restarts*, ICLR:
#   eq. 5 (cosine annealing). Brown et al. (2020), *Language models are few-shot learners*
#   (GPT-3), App. B: the three together (clip at 1.0, linear warm-up, cosine to 10 %).
#
# **Library files used.** `minimoe/moe/losses.py` (`z_loss`), `minimoe/moe/layer.py` (the
# report's `max_logit`, expert dropout), `minimoe/moe/routers/base.py` (the router's logits and
# its small initialisation), `minimoe/train.py` (`train_in_memory`; `TrainConfig.grad_clip` and
# `warmup_steps`), `minimoe/optim/clip.py` (`clip_grad_norm`), `minimoe/optim/schedules.py`
# (`warmup_cosine`).
#
# **Prerequisites.** Lessons 02 and 03 (top-$k$ routing and the Switch balancing loss) and 04
# (the tiny MoE Transformer).

# %% tags=["parameters"]
import os

FAST = os.environ.get("MINIMOE_FAST") == "1"  # CI runs every lesson with MINIMOE_FAST=1: fewer steps, same code
SEEDS = (0, 1, 2)  # every comparison of methods is run from these seeds (at least three)
Z_STEPS = 40 if FAST else 600  # steps of each z-loss run (c_z = 0 and 1e-3)
SMALL_DATA_STEPS = 40 if FAST else 600  # steps of each expert-dropout run on a small training set
FULL_DATA_STEPS = 20 if FAST else 300  # steps of each expert-dropout run on the whole training split
CLIP_STEPS = 40 if FAST else 600  # steps of each clipping / warm-up run (4 arms x 2 learning rates x 3 seeds)

# %%
# The tiny model's matrices are far too small for BLAS threads to pay off, and on a busy machine
# the threads cost much more than they give; one thread per process (set before NumPy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np

import minimoe as mm
from minimoe.data import BatchSampler, load_corpus, split
from minimoe.models import ModelConfig, model_summary
from minimoe.moe import losses
from minimoe.optim import AdamW, clip_grad_norm, warmup_cosine
from minimoe.seeds import table, verdict
from minimoe.train import TrainConfig, train_in_memory

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.4, 3.6), "axes.grid": True, "grid.alpha": 0.3})
np.set_printoptions(precision=4, suppress=True)
print("fast mode" if FAST else "full mode")

# %% [markdown]
# ## 1. Why a router is fragile
#
# A router maps a token $x \in \mathbb R^d$ to logits $z = x W_r \in \mathbb R^E$ and then to
# probabilities $p = \mathrm{softmax}(z)$. Two facts about that softmax set up the whole lesson.
#
# **The level of the logits is free.** Adding the same number $c$ to every logit changes nothing:
#
# $$\mathrm{softmax}(z + c\mathbf 1)_i = \frac{e^{z_i + c}}{\sum_j e^{z_j + c}} = \frac{e^{z_i}}{\sum_j e^{z_j}} = \mathrm{softmax}(z)_i .$$
#
# So the language-modelling loss has no opinion about where the logits sit — only about their
# differences — and nothing stops them from drifting. Their *spread* also has a reason to grow: as
# the router becomes confident, the gap between the chosen experts and the others widens, and a
# probability of $0.99$ against seven rivals needs a gap of $\ln(0.99 \cdot 7 / 0.01) \approx 6.5$.
#
# **Rounding errors grow with the logits.** A floating-point format with $m$ stored mantissa bits
# holds $z$ with a relative error of at most $2^{-(m+1)}$, so the absolute error of a logit is
# about $|z| \cdot 2^{-(m+1)}$. The softmax only looks at differences $z_i - z_j$, but the error of a
# difference of two rounded numbers is about $(|z_i| + |z_j|) \cdot 2^{-(m+1)}$: it depends on
# where the logits *sit*, not only on how far apart they are. And a softmax turns an absolute
# error $\delta$ in a logit into a *relative* error of about $\delta$ in its probability (since
# $e^{z+\delta} \approx e^z(1+\delta)$). So the exact softmax does not care about the level of the
# logits, and the rounded softmax does: the higher the logits drift, the worse the router.
#
# | format | mantissa bits $m$ | largest finite value | $e^z$ overflows above |
# | --- | --- | --- | --- |
# | float32 | 23 | $3.4 \times 10^{38}$ | $88.7$ |
# | bfloat16 | 7 | $3.4 \times 10^{38}$ | $88.7$ |
# | float16 | 10 | $65504$ | $11.09$ |
#
# bfloat16 keeps float32's range with only 8 significant bits; float16 has 11 significant bits but
# a tiny range. The cell below prints the gap between neighbouring numbers ("one unit in the last
# place") near a few logit values. NumPy has float16 and float32 but no bfloat16, so we build a
# bfloat16 rounding from `np.frexp`, which splits $x = f \cdot 2^{e}$ with $\tfrac12 \le |f| < 1$:
# bfloat16 keeps 8 bits of $f$. It also keeps float32's exponent range at the small end: below
# the smallest normal number $2^{-126}$ the spacing stays fixed at $2^{-133}$ (the subnormals),
# and anything below half of that is zero, so $e^{-200}$ underflows to 0 as it does in float32.
# (Exercise `round_to_bfloat16` asks for the bit-level version that hardware uses: round the
# float32 bit pattern and clear its low 16 bits.)

# %%
BFLOAT16_MAX = (2 - 2.0**-7) * 2.0**127  # the largest finite bfloat16, as large as float32's


BFLOAT16_TINY = 2.0**-126  # the smallest normal bfloat16 (as in float32); below it, steps of 2^-133


def bfloat16(x):
    """Rounds to the nearest bfloat16 (8 significant bits, ties to even), float64 out, with
    float32's exponent range: subnormal steps of 2^-133 below 2^-126, zero below 2^-134, and
    infinity beyond the largest bfloat16."""
    x = np.asarray(x, dtype=np.float64)
    fraction, exponent = np.frexp(x)
    normal = np.ldexp(np.round(fraction * 256) / 256, exponent)
    subnormal = np.round(x / 2.0**-133) * 2.0**-133  # fixed spacing, ties to even (0 at 2^-134)
    rounded = np.where(np.abs(x) < BFLOAT16_TINY, subnormal, normal)
    return np.where(np.abs(rounded) > BFLOAT16_MAX, np.copysign(np.inf, rounded), rounded)


ROUND = {  # round every value to the format, then carry on in float64: one correctly rounded op at a time
    "float64": lambda a: np.asarray(a, dtype=np.float64),
    "float32": lambda a: np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64),
    "float16": lambda a: np.asarray(a, dtype=np.float64).astype(np.float16).astype(np.float64),
    "bfloat16": bfloat16,
}

print(f"{'logit':>6}  {'float32 gap':>12}  {'float16 gap':>12}  {'bfloat16 gap':>12}")
for z in (1.0, 8.0, 30.0, 100.0):
    gaps = [np.spacing(np.float32(z)), np.spacing(np.float16(z)), 2.0 ** (np.floor(np.log2(z)) - 7)]
    print(f"{z:6.0f}  " + "  ".join(f"{float(g):12.2e}" for g in gaps))
print("bfloat16 of 1/3:", bfloat16(1 / 3), " float16 of 1/3:", float(np.float16(1 / 3)))
print("e^-200 in float64:", np.exp(-200.0), " bfloat16:", bfloat16(np.exp(-200.0)),
      " float32:", float(np.float32(np.exp(-200.0))), " (both keep float32's range)")

# %% [markdown]
# Near a logit of 30 the bfloat16 gap is $0.125$: two experts whose logits differ by less than
# that are tied, and a rounding of half a gap changes a probability by about $e^{0.0625} - 1$,
# over 6 %. Near a logit of 1 the same format is sixteen times finer. Hence two remedies, both in
# the papers: **compute the router in float32** whatever the rest of the model uses (Switch
# Transformer §2.4, "selective precision"), and **keep the logits small** (ST-MoE §3.3, the
# z-loss). A third comes from Switch §2.4 too: Switch starts *all* its weights with a tenth of the
# usual variance. minimoe applies that reduced scale to the router alone (its own choice, not the
# paper's) — $\mathcal N(0, 0.1/d)$ — so the logits start small.
#
# ## 2. The router z-loss
#
# ST-MoE adds a penalty on the size of the router's log-partition function (eq. 5):
#
# $$L_z = \frac{1}{T}\sum_{t=1}^{T}\Big(\log \sum_{j=1}^{E} e^{z_{t,j}}\Big)^2,\qquad
# L = L_{\text{CE}} + c_B L_B + c_z L_z,\quad c_z = 10^{-3},$$
#
# where $z_{t,j}$ is the logit of token $t$ for expert $j$ and $L_B$ is the Switch balancing loss
# of lesson 03. Write $\ell_t = \log\sum_j e^{z_{t,j}}$ (the *log-sum-exp*). Its derivative is the
# softmax, $\partial \ell_t / \partial z_{t,j} = p_{t,j}$, so
#
# $$\frac{\partial L_z}{\partial z_{t,j}} = \frac{2}{T}\,\ell_t\,p_{t,j}.$$
#
# Two things to read in it. First, for $\ell_t > 0$ every logit is pushed *down*, each in
# proportion to its probability: the experts the router likes most are pushed hardest, and the
# push fades as $\ell_t \to 0$. Second, why $\ell$ and not simply $\|z\|^2$? Because
#
# $$\max_j z_{t,j} \;\le\; \ell_t \;\le\; \max_j z_{t,j} + \log E ,$$
#
# so $\ell_t$ measures the **largest** logit of the token — the one whose exponential dominates
# the softmax and whose rounding error matters. A very negative logit is harmless ($e^z$ is tiny,
# and so is its error), and the z-loss leaves it alone. Because of the shift freedom of section 1,
# the router can satisfy the z-loss at no cost to the task: it lowers the level of all its logits.
#
# The library's version is `minimoe.moe.losses.z_loss` (returned without its coefficient; the MoE
# layer multiplies by `z_loss_coef`). Two checks: zero logits give $(\log E)^2$, and a shift
# changes the z-loss but not the softmax. Then the gradient formula, against autograd.

# %%
E = 8
print("z-loss of zero logits:", losses.z_loss(mm.tensor(np.zeros((3, E)))).item(),
      " (log 8)^2 =", np.log(E) ** 2)

mm.manual_seed(0)
z = mm.randn(4, E, dtype=np.float64, requires_grad=True)  # (T, E) logits of 4 tokens
for shift in (0.0, -3.0, 5.0):
    shifted = z.numpy() + shift
    print(f"shift {shift:+.0f}: z-loss {losses.z_loss(mm.tensor(shifted)).item():7.3f}, "
          f"softmax of token 0 {mm.functional.softmax(mm.tensor(shifted)).numpy()[0].round(3)}")

losses.z_loss(z).backward()
lse = np.log(np.exp(z.numpy()).sum(axis=1, keepdims=True))  # (T, 1)
p = np.exp(z.numpy() - lse)  # (T, E)
print("autograd gradient equals 2/T * lse * p:", np.allclose(z.grad, 2 / 4 * lse * p))

# %% [markdown]
# ### The z-loss measured on the tiny model
#
# Now the real thing: the tiny Transformer of lesson 04, made small so that each run takes
# seconds — two blocks of width 32, each with an MoE layer of $E = 8$ experts of width 64, top-2
# routing, the Switch balancing loss ($\alpha = 0.01$), nothing dropped — trained with $c_z = 0$
# and with $c_z = 10^{-3}$, each pair from the same seed and on the same batches, for three seeds.
# What to expect: without the z-loss the router's log-sum-exp should drift upward; with it, it
# should be held near zero. The plots show seed 0; the tables after them show every seed, because
# a single run cannot tell a small difference in validation loss from chance.
#
# The training step is the library's own (`minimoe.train.train_step`: forward, loss plus auxiliary
# losses, backward, clipping, AdamW, warm-up and cosine decay; section 5 explains clipping and the
# schedule). We only watch. After every step we read each layer's routing report, whose
# `max_logit` is the largest $|z_{t,j}|$ of the batch.
# For the log-sum-exp we need the router's logits themselves; the small probe below wraps each
# router's `logits` method so that it keeps what it computed. It changes nothing in the
# computation.

# %%
TINY = ModelConfig(d_model=32, n_layers=2, n_heads=4, context=32, n_experts=E, top_k=2, expert_hidden=64)
print(model_summary(TINY))


def train_config(steps, seed=0):
    return TrainConfig(steps=steps, batch_size=16, lr=1e-2, warmup_steps=min(20, steps // 4),
                       eval_every=max(steps // 6, 1), eval_batches=8, checkpoint_every=steps, seed=seed)


def watch_router_logits(model):
    """Wraps every MoE router's `logits` method: each call keeps its logits as `router.last_logits`
    (an array), and each call in training mode appends the batch's mean log-sum-exp and mean
    largest logit to `router.trace`."""
    for layer in model.moe_layers():
        router, compute = layer.router, layer.router.logits
        router.trace = []

        def logits(x, router=router, compute=compute):
            out = compute(x)
            router.last_logits = out.numpy()  # (T, E)
            if router.training:
                top = router.last_logits.max(axis=1, keepdims=True)  # (T, 1)
                lse = top + np.log(np.exp(router.last_logits - top).sum(axis=1, keepdims=True))
                router.trace.append((lse.mean(), top.mean()))
            return out

        router.logits = logits


COEFS = (0.0, 1e-3)
z_runs = {}  # (c_z, seed) -> run
for seed in SEEDS:
    for coef in COEFS:
        z_runs[coef, seed] = train_in_memory(dataclasses.replace(TINY, z_loss_coef=coef), train_config(Z_STEPS, seed),
                                             setup=lambda run: watch_router_logits(run.model))
    print(f"seed {seed}: {Z_STEPS} steps in {z_runs[0.0, seed].seconds:.1f} s and {z_runs[1e-3, seed].seconds:.1f} s; "
          "validation loss " + ", ".join(f"c_z = {c:g}: {z_runs[c, seed].records[-1]['val_loss']:.3f}" for c in COEFS))
first_seed = {coef: z_runs[coef, SEEDS[0]] for coef in COEFS}  # the runs the plots show

# %%
def series(run):
    """Per step and per MoE layer: max |logit| (report), mean log-sum-exp and mean largest logit (probe)."""
    max_abs = np.array([[layer["max_logit"] for layer in r["moe"]] for r in run.records if "moe" in r])  # (S, L)
    trace = np.array([layer.router.trace for layer in run.model.moe_layers()])  # (L, S, 2)
    return max_abs, trace[..., 0].T, trace[..., 1].T  # each (S, L)


def smooth(y, width=15):
    """Moving average along the steps (the batch-to-batch noise hides the trend)."""
    width = min(width, len(y))
    kernel = np.ones(width) / width
    return np.convolve(np.pad(y, (width // 2, width - 1 - width // 2), mode="edge"), kernel, mode="valid")


fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
for coef, run in first_seed.items():
    max_abs, lse, top = series(run)
    for layer in range(max_abs.shape[1]):
        style = {"color": "C0" if coef == 0 else "C3", "ls": "-" if layer == 0 else "--",
                 "label": f"c_z = {coef:g}, layer {layer}"}
        axes[0].plot(smooth(lse[:, layer]), **style)
        axes[1].plot(smooth(top[:, layer]), **style)
        axes[2].plot(smooth(max_abs[:, layer]), **style)
for ax, title in zip(axes, ("mean log-sum-exp  $\\ell_t$", "mean largest logit  $\\max_j z_{t,j}$",
                            "report.max_logit  $\\max_{t,j} |z_{t,j}|$")):
    ax.set_title(title)
    ax.set_xlabel("training step")
axes[0].legend(fontsize=8)
plt.show()

print(f"seed {SEEDS[0]}:")
print(f"{'':10} {'layer':>5} {'log-sum-exp':>12} {'largest logit':>14} {'max |logit|':>12}   (mean of the last 50 steps)")
for coef, run in first_seed.items():
    max_abs, lse, top = series(run)
    for layer in range(max_abs.shape[1]):
        print(f"c_z = {coef:<5g} {layer:5} {lse[-50:, layer].mean():12.2f} {top[-50:, layer].mean():14.2f} "
              f"{max_abs[-50:, layer].mean():12.2f}")
print("log-sum-exp at step 1:", series(first_seed[0.0])[1][0].round(2), "(log 8 =", round(np.log(8), 2), ")")
z_value = [r["moe"][0]["losses"]["z"] for r in first_seed[1e-3].records if "moe" in r]
print(f"with c_z = 1e-3, layer 0's z-loss went from {z_value[0]:.2f} to {np.mean(z_value[-50:]):.2f}; "
      f"times c_z that is {1e-3 * np.mean(z_value[-50:]):.4f} of the total loss")

# %% [markdown]
# The same two measures over all three seeds: the log-sum-exp of the last 50 steps (averaged over
# both layers), which the z-loss is meant to change, and the final validation loss, which it is
# meant *not* to change. Each line gives the mean ± half the range over seeds, then every seed; the
# verdict under each table applies the course's rule (`minimoe.seeds`): a gap inside the larger
# spread is "no clear difference".

# %%
NAMES = {0.0: "c_z = 0", 1e-3: "c_z = 1e-3"}
final_lse = {NAMES[c]: [series(z_runs[c, seed])[1][-50:].mean() for seed in SEEDS] for c in COEFS}
final_val = {NAMES[c]: [z_runs[c, seed].records[-1]["val_loss"] for seed in SEEDS] for c in COEFS}
print(table(final_lse, "log-sum-exp"))
print(verdict(final_lse[NAMES[1e-3]], final_lse[NAMES[0.0]], NAMES[1e-3], NAMES[0.0]), "(lower log-sum-exp)\n")
print(table(final_val, "validation loss"))
print(verdict(final_val[NAMES[1e-3]], final_val[NAMES[0.0]], NAMES[1e-3], NAMES[0.0]), "(lower validation loss)")

# %% [markdown]
# Read the three panels from left to right (the table gives the numbers of this run). At the
# first step every router is near uniform and $\ell \approx \log 8$. **Without the z-loss** the
# log-sum-exp climbs as training goes on: nothing in the loss resists it, and the router becomes
# more confident. **With the z-loss** it is pulled down, far below $\log 8$, toward zero. The middle panel says
# how: the largest logit of each token falls with it — the z-loss caps the logits that matter.
#
# The right panel is a warning about what to measure. `max_logit` is the largest *absolute*
# logit, and it does **not** fall with the z-loss: the router has lowered the level of all its
# logits (the shift freedom of section 1), so the *least* favoured experts now sit at large
# negative values. That costs nothing: $e^z$ of a large negative $z$ is a tiny number whose
# rounding error is tiny too. A stability dashboard should watch $\ell$ or the largest logit, not
# $\max|z|$.
#
# The tiny model never diverges, with or without the z-loss: ST-MoE's instabilities appear in
# models with billions of parameters, trained in bfloat16 for many thousands of steps. What this
# run shows is the mechanism — the drift that the z-loss removes, on every seed: the first verdict
# above is a clear difference in log-sum-exp. Whether removing it costs anything in loss is the
# second verdict: on seed 0 the z-loss model ends several hundredths of a nat *worse*, on the
# other seeds the two are within about a hundredth, and over the three seeds the gap is inside the
# spread — no clear difference, in either direction. (ST-MoE
# reports no quality loss at $c_z = 10^{-3}$ over many runs of large models; three seeds of a tiny
# one can neither confirm nor refute it.) The next section shows what the drift would cost in low
# precision.
#
# ## 3. Router precision
#
# Take the router logits that the model trained *without* the z-loss produces on a validation
# batch, and compute the router — softmax over the experts, top-2, renormalise the two kept
# probabilities (the order of the Hugging Face Mixtral code; the Mixtral paper writes
# $\mathrm{Softmax}(\mathrm{TopK}(x W))$, which gives the same gates) — in float64 as the reference, and in float32, float16 and
# bfloat16, rounding the logits and every intermediate result (the max-subtracted logits, the
# exponentials, their sum, the quotient) to the format. That is what a router computed in that
# format does: its logits come out of the matmul already rounded.
#
# The experiment is the drift of section 1: we add the same number $c$ to every logit. In exact
# arithmetic that changes nothing at all — the float64 reference is the same for every $c$ — so
# every difference below is rounding, and nothing else. Three measures, each against float64:
#
# - **flipped**: the share of tokens whose chosen pair of experts is not the reference pair;
# - **gate error**: the mean over tokens of $\tfrac12\sum_e |g_e - g_e^{\text{ref}}|$, where $g$
#   holds each token's gates over all $E$ experts (zero for the experts not chosen): the share of
#   the token's output weight that went to the wrong place, flips included;
# - **NaN**: the share of tokens whose gates are NaN when the softmax is computed *naively*, as
#   $e^{z_j} / \sum_k e^{z_k}$ without subtracting the maximum first.

# %%
def router_gates(logits, fmt, subtract_max=True):
    """Top-2 gates over all experts (T, E) and the chosen pairs (T, 2), computed in `fmt` one
    rounded operation at a time: softmax, keep the two largest, renormalise them."""
    r = ROUND[fmt]
    z = r(logits)
    if subtract_max:
        z = r(z - z.max(axis=1, keepdims=True))
    with np.errstate(over="ignore", invalid="ignore"):
        e = r(np.exp(z))
        probs = r(e / r(e.sum(axis=1, keepdims=True)))  # (T, E)
        chosen = np.argsort(-probs, axis=1, kind="stable")[:, :2]  # (T, 2); ties go to the lower index
        kept = np.take_along_axis(probs, chosen, axis=1)
        gates = np.zeros_like(probs)
        np.put_along_axis(gates, chosen, r(kept / r(kept.sum(axis=1, keepdims=True))), axis=1)
    return gates, np.sort(chosen, axis=1)


FORMATS = ("float32", "float16", "bfloat16")


def precision_table(logits, reference_logits=None):
    """Per format: (flipped share, mean gate error, NaN share of the naive softmax), against the
    float64 router on `reference_logits` (default: the same logits)."""
    reference, pair = router_gates(logits if reference_logits is None else reference_logits, "float64")
    rows = {}
    for fmt in FORMATS:
        gates, chosen = router_gates(logits, fmt)
        naive, _ = router_gates(logits, fmt, subtract_max=False)
        rows[fmt] = ((chosen != pair).any(axis=1).mean(), 0.5 * np.abs(gates - reference).sum(axis=1).mean(),
                     np.isnan(naive).any(axis=1).mean())
    return rows


def print_table(results, label):
    print(f"{label:>7} |" + "|".join(f" {fmt:^26} " for fmt in FORMATS))
    print(f"{'':7} |" + "|".join(f" {'flipped':>8} {'gate err':>8} {'NaN':>7} " for _ in FORMATS))
    for key, rows in results.items():
        print(f"{key:7g} |" + "|".join(f" {flip:8.1%} {err:8.1e} {nan:7.1%} " for flip, err, nan in rows.values()))


def validation_logits(run, layer=0):
    """The router logits (T, E) of MoE layer `layer` on the first validation batch."""
    run.model.eval()
    with mm.no_grad():
        run.model(run.val_batches[0][0])
    run.model.train()
    return run.model.moe_layers()[layer].router.last_logits.astype(np.float64)


logits = validation_logits(first_seed[0.0])
print(f"{logits.shape[0]} tokens x {logits.shape[1]} experts; logits from {logits.min():.2f} to {logits.max():.2f}\n")
SHIFTS = (0, 2, 8, 32, 128)
by_shift = {c: precision_table(logits + c, reference_logits=logits) for c in SHIFTS}
print_table(by_shift, "shift c")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
for fmt in FORMATS:
    shifts = np.array(SHIFTS[1:])  # c = 0 cannot go on a log axis; the table has it
    axes[0].plot(shifts, [max(by_shift[c][fmt][1], 1e-9) for c in shifts], "o-", label=fmt)
    axes[1].plot(shifts, [by_shift[c][fmt][0] for c in shifts], "o-", label=fmt)
for ax, title in zip(axes, ("gate error (share of output weight misplaced)", "tokens with a flipped expert pair")):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("shift c added to every logit (the exact softmax is unchanged)")
    ax.set_title(title)
axes[0].set_yscale("log")
axes[0].legend()
plt.show()

# %% [markdown]
# Read the table row by row: the exact router is identical in every row.
#
# - **float32** rounds each logit to 24 significant bits; even at the largest shift its errors are
#   far too small to change a choice.
# - **bfloat16** has 8 significant bits, so its gap near $c$ is about $c / 128$: once that is
#   comparable to the differences between the router's logits, the differences themselves are
#   rounded away. Gates come out in the wrong proportions, then near-ties between experts tie
#   exactly (and a tie is settled by expert index, not by the router), and pairs flip. The
#   gradient the router receives carries the same errors.
# - **float16** has three more bits than bfloat16 and is correspondingly finer — but its range
#   ends at 65504, so the **naive** softmax overflows as soon as a logit passes
#   $\ln 65504 = 11.09$: $\infty/\infty$ is NaN, and the NaN column fills up. Subtracting the
#   maximum first, as every library does, prevents that.
#
# Multiplying the logits instead of shifting them — the router growing more *confident* — brings
# the other limit of float16, **underflow**: a probability below $2^{-24} \approx 6 \times 10^{-8}$
# (a logit more than about 16.6 below the top one) becomes exactly zero, ties with the other
# losers, and the second choice is again settled by index. float32 has the same problem much
# later: it flushes a probability to zero only when its logit lies more than about 103 below the
# top one (its smallest number is $1.4 \times 10^{-45} \approx e^{-103}$). For a token's *second*
# choice that is rare even at $s = 30$, so float32's flips stay at or near zero in the last row,
# while its naive softmax already overflows there (the NaN column). bfloat16 keeps float32's
# exponent range, so it underflows at the same place; its flips come from its coarse rounding. (Scaling by
# powers of two would show nothing about rounding: floating point is exact under them, so the
# factors below are not powers of two.)

# %%
SCALES = (1, 3, 10, 30)
print_table({s: precision_table(s * logits) for s in SCALES}, "scale s")

# %% [markdown]
# In minimoe a NaN or infinite logit never reaches the dispatch: the router raises a `ValueError`
# that names the z-loss as one of the fixes. The two remedies work together: **selective
# precision** (the router in float32, Switch §2.4) removes the rounding, and the **z-loss** keeps
# the top logits near zero ($\ell_t \approx 0$), where every format is finest, so that even a
# low-precision router would be harmless. The comparison that matters for this lesson — the same
# bfloat16 router on the logits of the two trained models, as they actually came out:

# %%
for (coef, seed), run in sorted(z_runs.items(), key=lambda item: item[0][1]):
    trained_logits = validation_logits(run)
    flip, err, _ = precision_table(trained_logits)["bfloat16"]
    top = trained_logits.max(axis=1)
    print(f"seed {seed}, trained with c_z = {coef:<5g}: largest logits {top.min():6.2f} .. {top.max():5.2f}; "
          f"bfloat16 router flips {flip:5.1%} of the pairs, gate error {err:.1e}")

# %% [markdown]
# On every seed the model trained without the z-loss has its largest logits above zero (about 1
# to 5), while the z-loss model keeps them around zero. At the size these short runs reached, that
# does **not** make the z-loss model's bfloat16 router clearly more accurate: both flip between a
# fraction of a per cent and about 1.5 % of the pairs, with gate errors of the same order, the
# z-loss model better on some seeds and not on others. The drift without the z-loss has not yet
# gone far enough to matter — its logits sit in the first rows of the shift table, where bfloat16
# flips about a per cent or less. What the z-loss buys is the future: the
# log-sum-exp of the model without it was still climbing when training stopped (section 2, left
# panel), and every unit of drift moves its router further down that table; the z-loss model's
# logits stay where they are.
#
# ## 4. Expert dropout
#
# Dropout (Srivastava et al. 2014) zeroes each hidden unit with probability $p$ during training
# and scales the survivors by $1/(1-p)$, so that nothing changes at evaluation. For an expert
# $E_i(x) = W_2\,\mathrm{act}(W_1 x)$ that reads
#
# $$E_i(x) = W_2\Big(\mathrm{act}(W_1 x) \odot \frac{m}{1 - p}\Big),\qquad m_h \sim \mathrm{Bernoulli}(1-p).$$
#
# Switch Transformer §2.4 found that fine-tuning a sparse model on a small downstream task
# overfits, because the experts hold many parameters and each sees only part of the few data. Its
# fix is a different dropout rate *inside the experts*: 0.1 everywhere else, **0.4 in the
# experts** (Table 4). In minimoe that is `expert_dropout` (the layer draws one mask over the
# hidden units of each routed token copy).
#
# Whether dropout helps depends on the regime, so we try two. First the **small-data** regime the
# paper targets: the training set is cut to ten pieces of 1,000 characters taken across the
# training split, so the model sees each character dozens of times and can memorise them. Then the
# regime of every other run in this course: the whole training split, which a short run sees
# less than once. The validation set is the usual one in both cases. Within a seed everything
# else is fixed — same initial weights, same batches — and only `expert_dropout` changes, 0 or
# 0.4; each comparison is repeated for three seeds. What to expect: on the small set, a large gap
# between training and validation loss that dropout should narrow; on the full split, no such gap.

# %%
train_text, _ = split(load_corpus())
PIECES, PIECE = 10, 1000
starts = np.linspace(0, len(train_text.ids) - PIECE, PIECES).astype(np.int64)  # (10,) spread over the split
index = (starts[:, None] + np.arange(PIECE)).ravel()  # (10 000,)
small_ids, small_domains = train_text.ids[index], train_text.domains[index]


def small_training_set(run):
    """Replaces the run's sampler: batches come from the 10 000-character training set only."""
    run.sampler = BatchSampler(small_ids, small_domains, run.train_config.batch_size,
                               run.model_config.context, run.train_config.seed)


dropout_runs = {}
for regime, steps, setup in (("small data", SMALL_DATA_STEPS, small_training_set),
                             ("full data", FULL_DATA_STEPS, None)):
    for seed in SEEDS:
        for rate in (0.0, 0.4):
            run = train_in_memory(dataclasses.replace(TINY, expert_dropout=rate), train_config(steps, seed), setup)
            dropout_runs[regime, seed, rate] = run
        print(f"{regime}, seed {seed}: two runs of {steps} steps in {run.seconds:.0f} s each")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
for ax, regime in zip(axes, ("small data", "full data")):
    for rate, color in ((0.0, "C0"), (0.4, "C1")):
        records = dropout_runs[regime, SEEDS[0], rate].records
        steps, train = zip(*[(r["step"], r["train_loss"]) for r in records if "train_loss" in r])
        ax.plot(steps, smooth(np.array(train)), color=color, alpha=0.5, lw=1, label=f"train, expert dropout {rate}")
        ax.plot(*zip(*[(r["step"], r["val_loss"]) for r in records if "val_loss" in r]), "o-", color=color,
                ms=4, label=f"validation, expert dropout {rate}")
    ax.set_title(f"{regime} (seed {SEEDS[0]})")
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy (nats per character)")
    ax.set_ylim(top=4)
axes[0].legend(fontsize=8)
plt.show()

def final_losses(run):
    """(final validation loss, training loss of the last 50 steps) of a run."""
    val = [r["val_loss"] for r in run.records if "val_loss" in r][-1]
    train = np.mean([r["train_loss"] for r in run.records[-50:] if "train_loss" in r])
    return val, train


for regime in ("small data", "full data"):
    val = {f"expert dropout {rate}": [final_losses(dropout_runs[regime, seed, rate])[0] for seed in SEEDS]
           for rate in (0.0, 0.4)}
    gap = {f"expert dropout {rate}": [np.subtract(*final_losses(dropout_runs[regime, seed, rate])) for seed in SEEDS]
           for rate in (0.0, 0.4)}
    print(f"{regime}:\n" + table(val, "validation loss"))
    print(verdict(val["expert dropout 0.4"], val["expert dropout 0.0"], "dropout 0.4", "dropout 0"),
          "(lower validation loss)")
    print(table(gap, "validation - training"))
    print(verdict(gap["expert dropout 0.4"], gap["expert dropout 0.0"], "dropout 0.4", "dropout 0"),
          "(smaller gap)\n")

# %% [markdown]
# How to read these results. In the **small-data** runs the validation loss ends far above the
# training loss (a gap of about 1.7 nats without dropout), which is what memorising a small set
# looks like. This is the regime where Switch uses expert dropout. With it the gap is clearly
# smaller (the second verdict). Whether that turns into a lower validation loss is the first
# verdict: over these three seeds and 600 steps, no clear difference — dropout slowed the
# memorising more than it improved what generalises. In the **full-data** runs there is nothing to
# memorise in a few hundred steps: the gap is near zero with or without dropout, and the
# validation losses show no clear difference.
#
# So expert dropout is a regulariser for the data-poor end — fine-tuning, in the paper — not a
# free improvement. And the paper's setting is fine-tuning a *pre-trained* model, which we only
# imitate by training from scratch on little data.
#
# ## 5. Gradient clipping and learning-rate warm-up
#
# Every Transformer run of this course (lesson 04 on) goes through the library's training step,
# which does two things to each update that no lesson has explained yet: it **clips the gradient
# norm**, and it takes the learning rate from a **schedule**, a linear warm-up followed by a
# cosine decay (`TrainConfig.grad_clip`, `warmup_steps`, `min_lr_ratio`; by default 1.0, 50 and
# 0.1). Both are there for stability. This section writes them down, then switches each off on the tiny
# MoE to see what it was doing.
#
# ### Clipping by the global norm
#
# Let $g_1, \dots, g_P$ be the gradients of all $P$ parameter arrays of the model and
#
# $$\|g\| = \Big(\sum_{i=1}^{P}\sum_j g_{i,j}^2\Big)^{1/2}$$
#
# their **global** norm: the length of all of them laid end to end as one vector. Clipping at $c$
# rescales every array by the same factor when that length is too large:
#
# $$g_i \leftarrow g_i \cdot \frac{c}{\|g\| + 10^{-6}} \quad \text{if } \|g\| > c, \qquad g_i \text{ unchanged otherwise.}$$
#
# This is Pascanu, Mikolov & Bengio (2013), *On the difficulty of training recurrent neural
# networks* (ICML), §3.2, Algorithm 1 (written there with $\ge$ and without the $10^{-6}$, the
# guard of PyTorch's `clip_grad_norm_` that minimoe copies). The step keeps its direction and
# only its length is capped; and because one factor multiplies every array, the sizes of
# different layers' gradients relative to each other are kept as well — clipping each array by
# its own norm would change the direction. minimoe's `clip_grad_norm` (in `minimoe/optim/clip.py`)
# returns the norm *before* clipping, which the trainer logs as `grad_norm` (and stops the run
# if it is not finite); $c = 1.0$ is the value of GPT-3 (Brown et al. 2020, App. B).
#
# Pascanu et al. clip for SGD, whose step is $\eta g$: a gradient a hundred times too large
# makes a step a hundred times too long. **AdamW's step is a ratio**,
# $\eta\,\hat m / (\sqrt{\hat v} + \epsilon)$ of the bias-corrected moving averages of $g$ and
# $g^2$ (Kingma & Ba 2015, Algorithm 1), and a factor $a$ on the gradient multiplies $\hat m$ by
# $a$ and $\sqrt{\hat v}$ by $|a|$. At the first step that cancels exactly: $\hat m_1 = g_1$ and
# $\hat v_1 = g_1^2$, so each weight moves by $\eta\,\mathrm{sign}(g_1)$ whatever the gradient's
# size. Later it cancels approximately, as long as the factor changes slowly next to the
# moments' memory. Under Adam, then, clipping acts mostly on a step whose gradient is much larger
# than the recent ones: it keeps that one step from dominating $\hat m$ and $\hat v$. The cell checks the first-step claim with
# the library's `AdamW`, and the clipping rule on a case you can do by hand.

# %%
def first_adamw_step(gradient, lr=0.2):
    """The change AdamW makes to a weight vector [1, -2] in its first step, for this gradient."""
    weight = mm.nn.Parameter(np.array([1.0, -2.0]))
    weight.grad = np.asarray(gradient, dtype=np.float64)
    AdamW([weight], lr=lr, weight_decay=0.0).step()
    return weight.numpy() - np.array([1.0, -2.0])


for gradient in ([3.0, -0.4], [0.3, -0.04], [3e-4, -4e-5]):
    print(f"first AdamW step (lr 0.2) for the gradient {gradient}: {first_adamw_step(gradient).round(6)}")

first, second = mm.nn.Parameter(np.zeros(2)), mm.nn.Parameter(np.zeros((2, 1)))
first.grad, second.grad = np.array([3.0, 4.0]), np.array([[12.0], [0.0]])  # norms 5 and 12, together 13
norm = clip_grad_norm([first, second], 6.5)
print(f"global norm {norm:g}; clipped at 6.5: {first.grad.round(4)} and {second.grad.ravel().round(4)} "
      f"(each halved: one factor 6.5 / 13 for both)")

# %% [markdown]
# ### Linear warm-up, then cosine decay
#
# Write $\eta$ for the peak rate (`lr`), $\eta_{\min} = $ `min_lr_ratio` $\cdot\,\eta$, $W$ for the
# warm-up steps and $S$ for the total. The rate at the 0-based step $s$ — the one used by the
# update that completes step $s + 1$ — is
#
# $$\eta(s) = \begin{cases} \eta\,\dfrac{s + 1}{W} & s < W,\\[2mm]
# \eta_{\min} + \tfrac12(\eta - \eta_{\min})\big(1 + \cos(\pi p)\big),\quad
# p = \min\!\Big(1, \dfrac{s - W}{\max(1, S - W)}\Big) & s \ge W. \end{cases}$$
#
# The linear warm-up is the "gradual warmup" of Goyal et al. (2017), *Accurate, large minibatch
# SGD: training ImageNet in 1 hour*, §2.2, who ramp the rate up linearly over the first five
# epochs because a large rate at the start made training unstable. The decay is the cosine
# annealing of Loshchilov & Hutter (2017), *SGDR: stochastic gradient descent with warm
# restarts* (ICLR), eq. 5, used for one cycle, without restarts. The combination, decaying to a
# tenth of the peak, is GPT-3's schedule (Brown et al. 2020, App. B), and it is
# `minimoe.optim.warmup_cosine`. Its conventions, which the exercise follows: the first update
# already uses $\eta / W$ (not 0); the rate reaches $\eta$ at step $W - 1$ and is still $\eta$ at
# step $W$, where the cosine starts; from step $S$ on it stays at $\eta_{\min}$; $W = 0$ means no
# warm-up at all.
#
# Why warm up, for a router in particular? The first AdamW step moves *every* weight by about
# $\eta$, as the cell above showed. The router's weights start small on purpose (section 1:
# $\mathcal N(0, 0.1/d)$, a standard deviation of $0.056$ at $d = 32$, printed below), so a first
# step of $\eta = 0.05$ is about their whole size and one of $0.2$ more than three times it,
# taken in one go, in a direction chosen from one batch. The warm-up makes the first step $W$
# times smaller.

# %%
WARMUP = CLIP_STEPS // 10  # steps of warm-up in the arms that have one: a tenth of the run
steps = np.arange(CLIP_STEPS + 1)
fig, ax = plt.subplots(figsize=(6.4, 3.0), layout="constrained")
for warmup in (WARMUP, 0):
    rate = [warmup_cosine(int(s), 1.0, warmup, CLIP_STEPS, 0.1) for s in steps]
    ax.plot(steps, rate, label=f"warmup_steps = {warmup}")
ax.set_xlabel("step s")
ax.set_ylabel("rate / peak rate")
ax.set_title(f"the trainer's schedule over {CLIP_STEPS} steps, min_lr_ratio 0.1")
ax.legend()
plt.show()
for s in (0, 1, WARMUP - 1, WARMUP, (CLIP_STEPS + WARMUP) // 2, CLIP_STEPS, CLIP_STEPS + 10):
    print(f"step {s:4}: rate / peak {warmup_cosine(s, 1.0, WARMUP, CLIP_STEPS, 0.1):.4f} with warm-up, "
          f"{warmup_cosine(s, 1.0, 0, CLIP_STEPS, 0.1):.4f} without")
router_std = np.sqrt(0.1 / TINY.d_model)
print(f"router weights at initialisation: standard deviation {router_std:.3f}")

# %% [markdown]
# ### The experiment: four arms, two learning rates, three seeds
#
# The tiny MoE of section 2, each seed's runs from the same initial weights and on the same
# batches, in four arms: **both** (clipping at 1.0 and a warm-up of a tenth of the run, 60
# steps), **no clipping** (`grad_clip=None`: the norm is still measured and logged),
# **no warm-up** (`warmup_steps=0`: the peak rate from the first step) and **neither**. The runs
# above use a peak rate of $10^{-2}$; these use 0.05 and 0.2, five and twenty times that, since a
# stabiliser can only show what it does where training is close to unstable. What we measure:
#
# - **router logit size**: the log-sum-exp $\ell$ of section 2 (the batch mean, in the larger of
#   the two MoE layers), at its peak during the first 60 steps — the warm-up window — and its
#   mean over the last 50 steps;
# - **loss spikes**: the number of steps whose training loss exceeds the lowest training loss
#   of all earlier steps by more than **1 nat**. The batch-to-batch noise of the training loss
#   is 0.12 to 0.16 nats (printed below), so a jump of 1 nat is not noise;
# - **dead experts**: the experts (of 16, two layers of 8) whose load — their share of the routed
#   token copies — averaged over the last 50 steps is below **1 % of the fair share** $1/E$,
#   that is below $1/800$;
# - the final **validation loss**; and, to see how often clipping acts at all, the share of steps
#   whose gradient norm was above 1.0.

# %%
ARMS = {"both": dict(grad_clip=1.0, warmup_steps=WARMUP), "no clipping": dict(grad_clip=None, warmup_steps=WARMUP),
        "no warm-up": dict(grad_clip=1.0, warmup_steps=0), "neither": dict(grad_clip=None, warmup_steps=0)}
RATES = (0.05, 0.2)
SPIKE_NATS = 1.0  # a spike: the training loss this far above its lowest value so far
DEAD_SHARE = 0.01  # a dead expert: a load below 1 % of the fair share 1/E
LAST = 10 if FAST else 50  # steps at the end over which the final logit size and the loads are averaged


PEAK_LSE, FINAL_LSE = f"peak lse, first {WARMUP} steps", f"lse, last {LAST} steps"


def stability_config(lr, seed, grad_clip, warmup_steps):
    return TrainConfig(steps=CLIP_STEPS, batch_size=16, lr=lr, warmup_steps=warmup_steps, grad_clip=grad_clip,
                       eval_every=CLIP_STEPS, eval_batches=8, checkpoint_every=CLIP_STEPS, seed=seed)


def stability_measures(run):
    """The measures of one run, and its per-step training loss and router log-sum-exp (S,) each."""
    records = [r for r in run.records if "train_loss" in r]
    loss = np.array([r["train_loss"] for r in records])  # (S,)
    lse = np.array([[layer["mean_logsumexp"] for layer in r["moe"]] for r in records]).max(axis=1)  # (S,)
    load = np.array([[layer["load"] for layer in r["moe"]] for r in records])  # (S, L, E)
    lowest_before = np.minimum.accumulate(loss)[:-1]  # (S - 1,) the lowest loss of the steps before each
    spikes = np.flatnonzero(loss[1:] > lowest_before + SPIKE_NATS) + 2  # step numbers (loss[0] is step 1's)
    measures = {PEAK_LSE: lse[:WARMUP].max(), FINAL_LSE: lse[-LAST:].mean(), "loss spikes": len(spikes),
                "spike steps": spikes.tolist(),
                "dead experts": int((load[-LAST:].mean(axis=0) < DEAD_SHARE / E).sum()),
                "validation loss": run.records[-1]["val_loss"],
                "share of steps clipped": float(np.mean([r["grad_norm"] > 1.0 for r in records]))}
    return measures, (loss, lse)


stability, curves = {}, {}  # (lr, arm, seed) -> measures, and -> (training loss, lse) per step
for lr in RATES:
    began = time.perf_counter()
    for seed in SEEDS:
        for arm, options in ARMS.items():
            run = train_in_memory(TINY, stability_config(lr, seed, **options))
            stability[lr, arm, seed], curves[lr, arm, seed] = stability_measures(run)
    seconds = time.perf_counter() - began
    print(f"peak rate {lr:g}: {len(SEEDS) * len(ARMS)} runs of {CLIP_STEPS} steps in {seconds:.0f} s")
noise = [np.std(np.diff(curves[lr, "both", seed][0][-LAST:])) / np.sqrt(2) for lr in RATES for seed in SEEDS]
print(f"batch-to-batch noise of the training loss (last {LAST} steps): {min(noise):.2f} to {max(noise):.2f} nats")
first_loss = {arm: [curves[0.2, arm, seed][0][1] for seed in SEEDS] for arm in ("both", "no clipping")}
print("training loss at step 2, after one update (peak rate 0.2), per seed:",
      "; ".join(f"{arm} {np.round(v, 4).tolist()}" for arm, v in first_loss.items()))

# %%
fig, axes = plt.subplots(2, 2, figsize=(12, 6.4), layout="constrained", sharex=True)
for column, lr in enumerate(RATES):
    for color, arm in zip(("C0", "C1", "C2", "C3"), ARMS):
        loss, lse = curves[lr, arm, SEEDS[0]]
        step = np.arange(1, len(loss) + 1)
        axes[0, column].plot(step, loss, color=color, lw=0.8, alpha=0.8, label=arm)
        axes[1, column].plot(step, lse, color=color, lw=0.8, alpha=0.8, label=arm)
    axes[0, column].set_title(f"peak rate {lr:g} (seed {SEEDS[0]})")
    axes[0, column].set_ylabel("training loss (nats per character)")
    axes[1, column].set_ylabel("router log-sum-exp (larger layer)")
    axes[1, column].set_xlabel("training step (log scale: the first steps are where warm-up acts)")
    axes[1, column].set_xscale("log")
    axes[1, column].set_yscale("log")
axes[0, 0].legend()
plt.show()

# %% [markdown]
# The tables give every measure on every seed: mean ± spread (half the range) over the three
# seeds, then each seed. Under each, every arm is set against **both** by the course's rule
# (`minimoe.seeds.verdict`): a gap inside the larger spread is "no clear difference".

# %%
def compare(measure, lower_is_better=True):
    for lr in RATES:
        values = {arm: [stability[lr, arm, seed][measure] for seed in SEEDS] for arm in ARMS}
        print(f"peak rate {lr:g}\n" + table(values, measure))
        for arm in list(ARMS)[1:]:
            print("  " + verdict(values[arm], values["both"], arm, "both", lower_is_better))
    print()


for measure in (PEAK_LSE, FINAL_LSE):
    compare(measure)

# %%
for measure in ("loss spikes", "dead experts", "validation loss"):
    compare(measure)
print("the steps of every spike:", "; ".join(f"rate {lr:g}, {arm}, seed {seed}: {m['spike steps']}"
                                            for (lr, arm, seed), m in stability.items() if m["spike steps"]))
for lr in RATES:
    clipped = {arm: np.mean([stability[lr, arm, seed]["share of steps clipped"] for seed in SEEDS]) for arm in ARMS}
    print(f"peak rate {lr:g}: share of steps with a gradient norm above 1.0 (mean over seeds): "
          + ", ".join(f"{arm} {share:.1%}" for arm, share in clipped.items()))

# %% [markdown]
# How to read these results, measure by measure (the numbers are the tables').
#
# **Clipping under AdamW.** The first cell of this section showed AdamW's first step to be the
# same, $\pm 0.2$ per weight, for gradients a factor 10 and $10^4$ apart (in the last one
# $\epsilon = 10^{-8}$ starts to show). Accordingly the training loss after one update is the same
# to four decimals with and without clipping, on every seed. And clipping at 1.0 has little to do:
# the gradient norm is above 1.0 on 2 to 4 % of the steps at the peak rate 0.05 and on 7 to 8 %
# at 0.2 (the last lines above).
#
# **Router logits.** The warm-up is what holds them in the first 60 steps. Without it the peak
# log-sum-exp of that window is 6.1 ± 1.2 at the rate 0.05 (8.3 ± 0.75 with clipping off too),
# against 3.8 ± 0.63 with it; at 0.2 it is 65 ± 28 and 80 ± 13 against 10 ± 2.8 — a clear
# difference in all four comparisons, while switching off clipping alone makes no clear
# difference at either rate. The lower panels (seed 0, log scales) show when: without warm-up
# the log-sum-exp climbs away from $\log 8 \approx 2.1$ from the first steps on, each of them
# taken at the full peak rate; with it, it stays near $\log 8$ while the rate ramps up. At 0.2
# the arms with warm-up go through the same climb later, soon after step 60, when their rate
# reaches the peak (lower right panel). So the effect does not last. Over the last 50 steps no
# arm differs clearly from *both* at 0.2, where the log-sum-exp of *both* alone ranges from 8 to
# 94 over the seeds; at 0.05 only *neither* differs, and it ends *lower* (5.6 ± 0.58 against
# 7.0 ± 1.3), by a gap just past the spread.
#
# **Loss spikes.** A jump of more than 1 nat over the lowest loss so far — about seven times the
# batch noise printed above — never happens with the warm-up, at either rate and with or
# without clipping. Without it, at 0.2 there are 3.7 ± 0.5 (clipping on) and 4 ± 1 (off) such
# steps per run, a clear difference, and the list of spike steps shows where they are: every one
# of them at steps 2 to 7, the first updates of a new model at the full peak rate. At 0.05 one of
# the six runs without warm-up has one spike (at step 7): no clear difference.
#
# **Dead experts.** At 0.05 no arm has any. At 0.2 both safeguards count: *both* ends with
# 1.3 ± 0.5 of its 16 experts dead, *no clipping* with 4 ± 1.5 and *neither* with 6.3 ± 1, both
# clear differences; *no warm-up* has 3 ± 2.5, no clear difference because of one seed with 6.
#
# **Validation loss.** At 0.05 the warm-up is worth about 0.13 nats: 2.58 ± 0.013 against
# 2.71 ± 0.041 without it and 2.70 ± 0.074 with neither, both clear; clipping makes no clear
# difference (2.58 ± 0.059). At 0.2 the picture turns: the warm-up makes no clear difference,
# and *no clipping* is worse than *both* by 0.077 nats with a spread of 0.070 — clear by the
# rule, but only just. Every arm at 0.2 ends 0.36 to 0.56 nats above the
# same arm at 0.05 (3.05 against 2.58 for *both*): neither safeguard makes a rate that is too
# high a good one.
#
# In short, on this model and with AdamW: **warm-up** keeps the router's logits small while the
# model is new, prevents the early loss spikes at a high rate, and at 0.05 gives a clearly lower
# final loss; **clipping** at 1.0 does nothing at the first step and acts on a few per cent of the
# steps, and it made a clear difference only at the rate 0.2, in dead experts and, narrowly, in
# validation loss. These are three seeds of a 2-layer model on 600 steps; the papers' reasons
# for both safeguards come from much larger models and much longer runs.
#
# ## Check your understanding
#
# 1. Add 100 to every router logit of a token. What changes in the softmax, in the top-$k$
#    choice, in the z-loss? What changes if the logits are stored in bfloat16?
# 2. Derive $\partial L_z / \partial z_{t,j} = \frac{2}{T}\ell_t p_{t,j}$. Which logits get the
#    largest push, and when does the push vanish?
# 3. Show that $\max_j z_j \le \log\sum_j e^{z_j} \le \max_j z_j + \log E$. Why does that make the
#    log-sum-exp, rather than $\max_j |z_j|$, the right thing to penalise?
# 4. In the run with the z-loss, `max_logit` did not fall. Explain why that is not a failure.
# 5. A float16 softmax subtracts the maximum first, so it never overflows. Name the failure it
#    still has, and the logit gap at which it starts.
# 6. Why is float32 for the router alone cheap, compared with float32 for the experts? (Count the
#    FLOPs of a router, $2dE$ per token, against an expert's $4dh$.)
# 7. Expert dropout 0.4 and dropout 0.1 elsewhere: why might the experts want more dropout than
#    the attention layers in a sparse model? Would you expect it to help a model pre-trained on a
#    corpus it sees once?
# 8. Gradients $g_1 = (3, 4)$ and $g_2 = (12, 0)$, clipped at $c = 6.5$: what does clipping by
#    the global norm give, and what would clipping each array by its own norm give? Which one
#    keeps the direction of the step?
# 9. Why does clipping not change AdamW's first update at all? When can it change a later one?
# 10. With $W = 60$, $S = 600$, $\eta = 0.2$ and `min_lr_ratio` 0.1, what is the rate at steps 0,
#     59, 60, 330, 600 and 700?
# 11. In section 5, which measures did switching off the warm-up change, and which did switching
#     off clipping change? Why does the warm-up act on the *router's* logits so early?
#
# ## Exercises
#
# In `exercises/ex05_stability.py`: `z_loss` (section 2, *The router z-loss*),
# `round_to_bfloat16` (section 3, *Router precision*: the bit-level rounding that section 1's
# `bfloat16` does with `frexp`), `clip_grad_norm` (section 5, *Clipping by the global norm*: on
# a list of arrays, returning new arrays and the norm before clipping) and `warmup_cosine_lr`
# (section 5, *Linear warm-up, then cosine decay*: the trainer's schedule, vectorised over an
# array of steps). Grade them with
#
# ```
# python -m minimoe.grade ex05
# ```
