# %% [markdown]
# # Lesson 10 — Scaling with experts, sparse upcycling, fine-tuning an MoE
#
# The earlier lessons built the MoE layer and asked how to route, balance and run it. This one
# asks three questions a practitioner meets next. **What do more experts buy** when the compute
# per token stays the same? **How are MoE models made from dense ones** that already exist —
# sparse upcycling, which copies a trained dense FFN into every expert? And **why is fine-tuning
# an MoE harder** than fine-tuning its dense twin: which parameters a step updates, how the
# routing moves, how fast a small set is over-fitted, and what helps?
#
# **After this lesson you can**
# - hold the active compute fixed while the number of experts grows, and read validation loss
#   against $E$ on a log axis with its spread over seeds;
# - state the routed scaling law of Clark et al. (2022) and where a toy run departs from it;
# - upcycle a dense model (`minimoe.models.upcycle`) and say when the upcycled model computes
#   exactly what the dense one did;
# - compare upcycling with continuing the dense model and with training the MoE from scratch, at
#   equal steps;
# - measure what fine-tuning does to an MoE: the share of experts a step updates, routing drift,
#   over-fitting on a small set, and the effect of freezing the router or of expert dropout.
#
# **Papers.**
# - Clark, de las Casas, Guy, Mensch, Paganini, Hoffmann, et al. (2022), *Unified scaling laws
#   for routed language models*, ICML, arXiv 2202.01169: eq. 1, the loss as a function of the
#   dense size $N$ and the expert count $E$.
# - Komatsuzaki, Puigcerver, Lee-Thorp, Riquelme Ruiz, Mustafa, Ainslie, Tay, Dehghani & Houlsby
#   (2023), *Sparse upcycling: training mixture-of-experts from dense checkpoints*, ICLR, arXiv
#   2212.05055.
# - Fedus, Zoph & Shazeer (2021), *Switch Transformers*, §2.4 and Table 4: expert dropout for
#   fine-tuning. Zoph et al. (2022), *ST-MoE*, arXiv 2202.08906, §4: fine-tuning sparse models.
#
# **Library files used.** `minimoe/models/upcycle.py` (`upcycle`), `minimoe/finetune.py`
# (`start_from`, `fine_tune`, `domain_stream`, `first_choices`, `routing_drift`,
# `expert_gradient_share`), `minimoe/train.py` (`train_in_memory`), `minimoe/seeds.py`.
#
# **Prerequisites.** Lessons 03 (Switch top-1), 04 (the tiny Transformer and its dense twin),
# 05 (expert dropout) and 08 (what experts serve).

# %% tags=["parameters"]
import os

FAST = os.environ.get("MINIMOE_FAST") == "1"  # CI runs every lesson with MINIMOE_FAST=1: fewer steps, same code
SEEDS = (0, 1, 2)  # every comparison is trained from these seeds
SCALING_STEPS = 20 if FAST else 300  # steps of each run at E = 1 ... 32
PRETRAIN_STEPS = 20 if FAST else 150  # steps of the dense model before it is upcycled
CONTINUE_STEPS = 20 if FAST else 150  # steps after the upcycling (and of the dense model continued)
FINETUNE_STEPS = 20 if FAST else 200  # fine-tuning steps on one domain
FINETUNE_CHARS = 2000  # the size of the fine-tuning set, in characters

# %%
# The tiny model's matrices are far too small for BLAS threads to pay off, and on a busy machine
# the threads cost much more than they give; one thread per process (set before NumPy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np

import minimoe as mm
from minimoe.data import eval_batches, load_corpus, split
from minimoe.finetune import (domain_stream, expert_gradient_share, fine_tune, first_choices, routing_drift,
                              start_from)
from minimoe.models import ModelConfig, model_summary, upcycle
from minimoe.seeds import summarize, table, verdict
from minimoe.train import TrainConfig, evaluate, train_in_memory

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.4, 3.6), "axes.grid": True, "grid.alpha": 0.3})
np.set_printoptions(precision=3, suppress=True)
print("fast mode" if FAST else "full mode")
began = time.perf_counter()


def train_config(steps, seed, lr=3e-3):
    """The recipe of every run in this lesson: batches of 16 x 32 characters, AdamW with a short
    warm-up and cosine decay, six evaluations on the same 8 validation batches."""
    return TrainConfig(steps=steps, batch_size=16, lr=lr, warmup_steps=min(20, steps // 4),
                       eval_every=max(steps // 6, 1), eval_batches=8, checkpoint_every=steps, sample_length=0,
                       seed=seed)


def val_curve(run, offset=0):
    """(steps, validation losses) of a run, its steps shifted by `offset`."""
    return zip(*[(r["step"] + offset, r["val_loss"]) for r in run.records if "val_loss" in r])


def final_val(run):
    return run.records[-1]["val_loss"]


# %% [markdown]
# ## 1. More experts at fixed active compute
#
# A dense Transformer gets better as it grows: its loss falls as a power law in its parameter
# count $N$ (Kaplan et al. 2020). An MoE has two sizes — the parameters a token uses and the
# parameters the model holds — so Clark et al. (2022) fit the loss on both: the dense model's
# size $N$ (the parameters of the equivalent dense model, which set the compute per token) and the
# number of experts $E$. Their eq. 1 is bilinear in the logarithms:
#
# $$\log L(N, E) = a \log N + b \log E + c \,\log N \log E + d .$$
#
# At a fixed $N$ this is a straight line in $\log E$: the loss falls as a power law in the number
# of experts, $L \propto E^{\,b + c \log N}$, each doubling of $E$ taking off the same *fraction*
# of the loss. In their fits $b < 0$ and $c > 0$, so the slope flattens as $N$ grows: experts help
# small models most. Their data span 5 orders of magnitude of size with up to hundreds of experts, and the law
# bends at its ends — the dense model ($E = 1$) and very large $E$, where the gains saturate —
# which they model with a saturating transform of $E$ in place of $E$ itself.
#
# Here is the toy version. Every model has two blocks of width 64 with a Switch top-1 MoE layer
# (lesson 03) whose experts are all 128 wide, so a token always passes through one expert of
# the same size: the **active** parameters and FLOPs per token stay the same for every $E$; only
# the router's $d \times E$ matrix grows. $E = 1$ *is* the dense model: a single expert whose
# gate is the softmax over one logit, exactly 1.

# %%
SCALING = ModelConfig(d_model=64, n_layers=2, n_heads=4, context=32, n_experts=1, top_k=1,
                      expert_hidden=128, router="switch")
EXPERT_COUNTS = (1, 2, 4, 8, 16, 32)
print(f"{'E':>3} {'total params':>13} {'active params':>14} {'FLOPs per token (forward)':>26}")
for n_experts in EXPERT_COUNTS:
    s = model_summary(dataclasses.replace(SCALING, n_experts=n_experts))
    print(f"{n_experts:3} {s.total_params:13,} {s.active_params:14,} {s.flops_per_token:26,.0f}")

# %% [markdown]
# The total grows almost 14-fold from $E = 1$ to $E = 32$; the active parameters grow only by the
# router (64 weights per expert per layer) and the FLOPs by twice that. Each model is trained
# for the same number of steps on the same batches, from each of three seeds.

# %%
scaling_runs = {}
for n_experts in EXPERT_COUNTS:
    config = dataclasses.replace(SCALING, n_experts=n_experts)
    for seed in SEEDS:
        scaling_runs[n_experts, seed] = train_in_memory(config, train_config(SCALING_STEPS, seed))
    print(f"E = {n_experts:2}: {len(SEEDS)} x {SCALING_STEPS} steps, "
          f"{1e3 * scaling_runs[n_experts, seed].seconds / SCALING_STEPS:.0f} ms per step")

scaling_val = {n_experts: [final_val(scaling_runs[n_experts, seed]) for seed in SEEDS] for n_experts in EXPERT_COUNTS}
print()
print(table({f"E = {n}": values for n, values in scaling_val.items()}, "validation loss"))

# %%
means = np.array([summarize(scaling_val[n]).mean for n in EXPERT_COUNTS])
spreads = np.array([summarize(scaling_val[n]).spread for n in EXPERT_COUNTS])
fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
for n_experts in EXPERT_COUNTS:
    ax.plot([n_experts] * len(SEEDS), scaling_val[n_experts], "o", color="C0", alpha=0.3, ms=4)
ax.errorbar(EXPERT_COUNTS, means, yerr=spreads, fmt="s-", color="C0", capsize=4,
            label=f"mean ± spread over {len(SEEDS)} seeds")
ax.set_xscale("log", base=2)
ax.set_xticks(EXPERT_COUNTS, [str(n) for n in EXPERT_COUNTS])
ax.set_xlabel("experts E (top-1, each 128 wide: the same active compute)")
ax.set_ylabel("validation loss (nats per character)")
ax.set_title(f"More experts at fixed active compute ({SCALING_STEPS} steps)")
ax.legend()
plt.show()

print("each doubling of E:")
for small, large in zip(EXPERT_COUNTS, EXPERT_COUNTS[1:]):
    gain = summarize(scaling_val[small]).mean - summarize(scaling_val[large]).mean
    print(f"  E {small:2} -> {large:2}: loss down by {gain:+.3f}; "
          + verdict(scaling_val[large], scaling_val[small], f"E={large}", f"E={small}"))
print("end to end:", verdict(scaling_val[EXPERT_COUNTS[-1]], scaling_val[1], f"E={EXPERT_COUNTS[-1]}", "E=1 (dense)"))

# %% [markdown]
# Read the table, the plot and the doublings together. From one expert to 32 the validation loss
# falls by about 0.06 nats (2.337 to 2.278), a clear difference over three seeds, at the same
# compute per token: more experts do buy quality here. But the path is not the paper's straight
# line. Two experts end clearly *worse* than one; 8 and 16 are indistinguishable; the doublings
# that help take off 0.03, 0.035 and 0.02 nats in no steady order, so these runs show neither a
# constant gain per doubling nor gains that shrink. (The exercise `fit_power_law` fits
# $L = cE^{\alpha}$ to this table anyway: what fraction of the loss does its $\alpha$ take off per
# doubling, and how well does one straight line describe these six points?)
#
# What separates the toy from Clark et al.'s experiments, plainly:
# - **data per expert**: 300 steps of 512 characters give each of 32 top-1 experts about 5,000
#   tokens in all; the paper's models read billions of tokens, so its experts are not starved;
# - **scale**: two blocks of width 64 reading characters, far below the paper's smallest models;
#   and its law says the benefit of experts depends on $N$, so a fit at one tiny $N$ says little
#   about another;
# - **noise**: the spread over seeds (up to 0.025 nats) is as large as one doubling's gain, so
#   three seeds settle the end-to-end gain but not the shape of the curve; the paper's curves are
#   fits over many sizes. (That two experts do worse than one is this run's finding; why, it does
#   not measure.)
#
# ## 2. Sparse upcycling
#
# Training an MoE from scratch throws away something valuable: the dense checkpoints that already
# exist. Komatsuzaki et al. (2023) start the MoE *from* one. Their recipe, sparse upcycling:
#
# 1. take a trained dense model;
# 2. in each block to be made sparse, replace the FFN by an MoE layer whose $E$ experts are all
#    **exact copies** of that FFN; carry every other weight (attention, norms, embeddings,
#    read-out) over unchanged;
# 3. add a **fresh router** (the only new weights), and continue training.
#
# At the moment of the copy every expert computes the same $\mathrm{FFN}(x)$, so the MoE layer
# outputs $\sum_{i \in \text{top-}k} g_i(x)\,\mathrm{FFN}(x) = \big(\sum_i g_i(x)\big)\mathrm{FFN}(x)$.
# When the gates of a token sum to one — top-$k$ with renormalised gates, as `upcycle` builds by
# default — that is exactly $\mathrm{FFN}(x)$: the upcycled model starts as the dense model, with
# no loss of what it learned. With Switch's top-1 gate (the unrenormalised probability $p_i$,
# lesson 03) the output starts scaled by $p_i < 1$, near $1/E$ while the fresh router is nearly
# uniform, and the model starts worse than the dense one it came from. Training then breaks the symmetry: the router sends different tokens
# to different copies, so their gradients differ and the copies drift apart.
#
# The paper upcycles T5 language models and Vision Transformers and reports, at its scale, that
# the upcycled models beat continued dense training for the same extra compute, and beat MoE
# models trained from scratch on a budget equal to the dense pre-training (its abstract). Here,
# first the claim about the start: a dense model of FFN width 128 is trained, then upcycled to 8
# experts of width 128 with top-2 routing, and, for comparison, with Switch's top-1.

# %%
MOE = ModelConfig(d_model=64, n_layers=2, n_heads=4, context=32, n_experts=8, top_k=2, expert_hidden=128)
DENSE = dataclasses.replace(MOE, dense=True, ffn_hidden=128)  # the model to upcycle: one FFN of width 128
TWIN = MOE.dense_twin()  # the MoE's dense twin of matched active compute: width 2 x 128

dense_runs = {seed: train_in_memory(DENSE, train_config(PRETRAIN_STEPS, seed)) for seed in SEEDS}
dense_model, val_batches = dense_runs[SEEDS[0]].model, dense_runs[SEEDS[0]].val_batches
mm.manual_seed(100)
top2 = upcycle(dense_model, 8, 2)
mm.manual_seed(100)
switch = upcycle(dense_model, 8, 1, router="switch")
print(f"validation loss of the dense model after {PRETRAIN_STEPS} steps: {evaluate(dense_model, val_batches):.6f}")
print(f"  upcycled, 8 experts, top-2 (gates renormalised): {evaluate(top2, val_batches):.6f}")
print(f"  upcycled, 8 experts, Switch top-1 (gate p_i):    {evaluate(switch, val_batches):.6f}")
with mm.no_grad():
    x = val_batches[0][0]
    difference = np.abs(top2(x).numpy() - dense_model(x).numpy()).max()
print("largest |logit difference|, top-2 upcycled vs dense, on one batch:", difference)
gate = switch.routing_reports()[0].expert_gate  # from the Switch model's last forward (the evaluation)
print(f"Switch top-1 gates after upcycling: mean {gate.mean():.3f} (1/E = {1 / 8:.3f})")

# %% [markdown]
# The top-2 upcycled model's validation loss equals the dense model's to all six decimals, and its
# logits differ by about $10^{-6}$, float32 rounding of two gated copies added up: it *is* the dense
# model. The Switch version starts 0.155 nats worse (2.786 against 2.631): its gate, about 0.19
# on average, scales each FFN output down to a fifth, and training must first undo that. The
# library's `upcycle` therefore defaults to top-$k$ with renormalised gates. (A top-1 router with
# renormalised gates would also start exact — its gate is always 1 — but, as lesson 03 showed,
# such a router gets no gradient from the task loss.)
#
# Now the comparison, at equal total steps. From each seed:
#
# | run | steps |
# | --- | --- |
# | dense model (width 128) | 150 steps, then **either** |
# | → upcycled to 8 experts, top-2 | 150 more |
# | → dense, continued | 150 more |
# | MoE (8 × 128, top-2) from scratch | 300 |
# | dense twin (width 256) from scratch | 300, for reference and for section 3 |
#
# Both continuations get a fresh AdamW state and a fresh warm-up and cosine schedule over their
# 150 steps, and the same batches; they differ only in the FFN. Note what "equal steps" hides:
# an upcycled top-2 layer runs two experts of width 128 per token, so from the copy on it costs
# what the width-256 twin costs, twice the FFN FLOPs of the dense model it came from:

# %%
for name, config in (("dense, width 128", DENSE), ("MoE 8 x 128, top-2", MOE), ("dense twin, width 256", TWIN)):
    s = model_summary(config)
    print(f"{name:22} {s.total_params:9,} parameters, {s.active_params:8,} active, "
          f"{s.training_flops_per_token / 1e6:.2f} MFLOP per token to train")

upcycled_runs, continued_runs, scratch_runs, twin_runs = {}, {}, {}, {}
for seed in SEEDS:
    dense = dense_runs[seed].model
    mm.manual_seed(100 + seed)  # the fresh routers
    upcycled_state = upcycle(dense, 8, 2).state_dict()
    # The continuations draw other batches than the pre-training did (seed + 100), the same for both.
    continuation = train_config(CONTINUE_STEPS, seed + 100)
    upcycled_runs[seed] = train_in_memory(MOE, continuation, setup=start_from(upcycled_state))
    continued_runs[seed] = train_in_memory(DENSE, continuation, setup=start_from(dense.state_dict()))
    scratch_runs[seed] = train_in_memory(MOE, train_config(PRETRAIN_STEPS + CONTINUE_STEPS, seed))
    twin_runs[seed] = train_in_memory(TWIN, train_config(PRETRAIN_STEPS + CONTINUE_STEPS, seed))
    print(f"seed {seed}: five runs, the MoE from scratch at {1e3 * scratch_runs[seed].seconds / 300:.0f} ms per step"
          if not FAST else f"seed {seed} done")

# %%
SEED = SEEDS[0]
fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
ax.plot(*val_curve(dense_runs[SEED]), "o-", color="k", ms=3, label="dense (width 128), pre-training")
ax.plot(*val_curve(continued_runs[SEED], PRETRAIN_STEPS), "o-", color="C7", ms=3, label="dense, continued")
ax.plot(*val_curve(upcycled_runs[SEED], PRETRAIN_STEPS), "o-", color="C3", ms=3, label="upcycled (8 x 128, top-2)")
ax.plot(*val_curve(scratch_runs[SEED]), "s--", color="C0", ms=3, label="MoE (8 x 128, top-2) from scratch")
ax.plot(*val_curve(twin_runs[SEED]), "^:", color="C2", ms=3, label="dense twin (width 256) from scratch")
ax.axvline(PRETRAIN_STEPS, color="k", lw=0.8, ls=":")
ax.set_ylim(top=3.0)
ax.set_xlabel("total training steps")
ax.set_ylabel("validation loss (nats per character)")
ax.set_title(f"Sparse upcycling against its alternatives (seed {SEED})")
ax.legend(fontsize=8)
plt.show()

upcycling_val = {"upcycled": [final_val(upcycled_runs[s]) for s in SEEDS],
                 "dense continued": [final_val(continued_runs[s]) for s in SEEDS],
                 "MoE from scratch": [final_val(scratch_runs[s]) for s in SEEDS],
                 "dense twin (256)": [final_val(twin_runs[s]) for s in SEEDS]}
print(table(upcycling_val, "validation loss"))
for a, b in (("upcycled", "dense continued"), ("upcycled", "MoE from scratch"), ("MoE from scratch", "dense continued"),
             ("upcycled", "dense twin (256)")):
    print(verdict(upcycling_val[a], upcycling_val[b], a, b))
print("\nthe same comparisons within each seed (the runs of a seed share the dense start and the batches):")
for a, b in (("upcycled", "dense continued"), ("upcycled", "MoE from scratch")):
    gaps = np.subtract(upcycling_val[a], upcycling_val[b])
    print(f"  {a} - {b}: " + "  ".join(f"{g:+.3f}" for g in gaps) + f"   {summarize(gaps)}")

# %% [markdown]
# By the course's rule, upcycling against continuing the dense model is *no clear difference*:
# the seeds spread by ±0.038, more than the gap of 0.016. Within each seed, though — where both
# runs start from the same dense model and see the same batches — the upcycled model ends lower on
# all three seeds, by 0.010 to 0.019: a consistent hint in the paper's direction, which three
# seeds cannot turn into a verdict. The MoE trained from scratch for 300 steps ends lowest on
# average and clearly ahead of the dense model continued; against the upcycled model its lead of
# 0.028 is inside the spread, and the per-seed gaps disagree in sign (the upcycled model is ahead
# by about 0.01 on two seeds, 0.10 behind on the third).
#
# So, at this scale: upcycling keeps what the dense model learned (it starts exactly there) and
# ends at least as low as continuing the dense model, for twice the FFN compute from the copy on;
# it is not shown to beat an MoE trained from scratch for the same steps. The paper's advantage
# over training from scratch is for models whose dense pre-training cost far more than the
# continuation; here the two phases are 150 steps each, so the from-scratch MoE loses little by
# not having a head start.
#
# ## 3. Fine-tuning an MoE
#
# Fine-tuning takes a model trained on everything and trains it further on a little data of one
# kind. For an MoE the sources warn about three things. **Sparse updates**: each token's
# gradient reaches only its $k$ experts, so on a small set some experts learn from few tokens.
# **Routing drift**: the router is trained too, and the assignment of tokens to experts that
# pre-training settled can move. **Over-fitting**: an MoE has several times the parameters of its
# dense twin at the same compute (here nearly three times), and Switch (§2.4) and ST-MoE (§4) both
# report that sparse models over-fit small fine-tuning tasks more readily than dense ones. The
# remedies tried in the literature include a higher dropout inside the experts — Switch fine-tunes
# with 0.4 in the experts against 0.1 elsewhere (Table 4; lesson 05 measured it) — and keeping
# part of the model fixed, such as the router, so that the routing cannot move.
#
# The set-up: the MoE trained from scratch in section 2 (8 × 128, top-2, 300 steps) and its dense
# twin (width 256, 300 steps), from each seed, fine-tuned on the first 2,000 characters of the
# *prose* documents of the training split, and validated on the prose of the held-out documents.
# First, before any fine-tuning, what a step on that data can update:

# %%
train_text, val_text = split(load_corpus())
DOMAIN = "prose"
finetune_set = domain_stream(train_text, DOMAIN, FINETUNE_CHARS)
domain_val = eval_batches(*domain_stream(val_text, DOMAIN), 16, MOE.context, 8)
probe = domain_val[0][0]  # (16, 32): the prose tokens whose routing is followed below
trained = scratch_runs[SEED].model
n_experts, k = MOE.n_experts, MOE.top_k

print(f"per token: {k} of {n_experts} experts, {k / n_experts:.0%} of the expert parameters, get a gradient")
for name, x in (("prose", probe), ("all domains", val_batches[0][0])):
    trained.eval()
    with mm.no_grad():
        trained(x)
    trained.train()
    for layer, report in enumerate(trained.routing_reports()):
        index = report.expert_index  # (16, 32, k)
        per_sequence = np.mean([len(set(row.ravel().tolist())) / n_experts for row in index])  # 16 sequences
        counts = report.tokens_per_expert
        print(f"{name:11} layer {layer}: experts reached by one sequence of 32 characters {per_sequence:.0%}, "
              f"by the batch of 16 {np.mean(counts > 0):.0%}; busiest expert {counts.max() / counts.mean():.2f}x "
              f"the mean load, quietest {counts.min() / counts.mean():.2f}x")

# %% [markdown]
# One token updates a quarter of the expert parameters; one step does not stop there. A single
# sequence of 32 characters already reaches 79–92% of a layer's experts, and a batch of 16 reaches
# all of them, on prose as on text of every domain. What one domain changes is the balance: on prose
# the busiest expert of layer 0 takes 2.1 times its share and the quietest 2% of it, against 1.45
# and 0.62 times on the mixed text. With batches of this size, "sparse updates" means that the
# gradient is shared out very unevenly over the experts, not that some get none — the per-step
# share measured during the fine-tuning below says the same.
#
# Now four fine-tunings from each seed, each for the same steps on the same batches of the 2,000
# characters (seen about fifty times over), at the pre-training learning rate:
#
# | run | what changes |
# | --- | --- |
# | MoE | everything is trained |
# | MoE, router frozen | the routers are left out of the optimiser |
# | MoE, expert dropout 0.4 | dropout 0.4 on the experts' hidden units (Switch's value; no other dropout) |
# | dense twin | everything is trained |
#
# After every step we record the share of the experts whose weights got a gradient; at every
# evaluation, the loss on the fine-tuning set itself beside the loss on held-out prose.

# %%
VARIANTS = {"MoE": (MOE, ()), "MoE, router frozen": (MOE, (".router.",)),
            "MoE, expert dropout 0.4": (dataclasses.replace(MOE, expert_dropout=0.4), ()),
            "dense twin": (TWIN, ())}


def share_recorder(shares):
    """An `after_step` that appends the share of the experts each step updated (none for a dense model)."""
    def record(run):
        if not run.model_config.dense:
            shares.append(expert_gradient_share(run.model))

    return record


finetune_runs, gradient_shares, drift = {}, {}, {}
for seed in SEEDS:
    pretrained = {"MoE": scratch_runs[seed].model, "dense twin": twin_runs[seed].model}
    before = first_choices(pretrained["MoE"], probe)  # (layers, 16, 32)
    for name, (config, frozen) in VARIANTS.items():
        gradient_shares[name, seed] = []
        state = pretrained["dense twin" if config.dense else "MoE"].state_dict()
        run = finetune_runs[name, seed] = fine_tune(config, train_config(FINETUNE_STEPS, seed + 200), state,
                                                    finetune_set, domain_val, frozen,
                                                    after_step=share_recorder(gradient_shares[name, seed]))
        if not config.dense:
            after = first_choices(run.model, probe)
            drift[name, seed] = [routing_drift(b, a) for b, a in zip(before, after)]  # one per MoE layer
    print(f"seed {seed}: four fine-tunings of {FINETUNE_STEPS} steps")


def curve(run, key):
    return zip(*[(r["step"], r[key]) for r in run.records if key in r])


fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
for i, name in enumerate(VARIANTS):
    axes[0].plot(*curve(finetune_runs[name, SEED], "fit_loss"), "o-", ms=3, color=f"C{i}", label=name)
    axes[1].plot(*curve(finetune_runs[name, SEED], "val_loss"), "o-", ms=3, color=f"C{i}", label=name)
axes[0].set_title(f"Loss on the 2,000 fine-tuning characters (seed {SEED})")
axes[1].set_title(f"Loss on held-out prose (seed {SEED})")
for ax in axes:
    ax.set_xlabel("fine-tuning step")
axes[0].set_ylabel("loss (nats per character)")
axes[1].set_ylabel("loss (nats per character)")
axes[1].legend()
plt.show()

# %%
moe_names = [name for name in VARIANTS if name != "dense twin"]
print("share of the experts updated per step (mean over steps and layers, then over seeds):")
for name in moe_names:
    print(f"  {name:24} {summarize([np.mean(gradient_shares[name, s]) for s in SEEDS])}, "
          f"lowest single step {min(min(gradient_shares[name, s]) for s in SEEDS):.3f}")
print("\nrouting drift: share of the probe's prose tokens whose first-choice expert changed")
for name in moe_names:
    for layer in range(MOE.n_layers):
        print(f"  {name:24} layer {layer}: {summarize([drift[name, s][layer] for s in SEEDS])}")
mean_drift = {name: [np.mean(drift[name, s]) for s in SEEDS] for name in moe_names}  # over the layers
print("  " + verdict(mean_drift["MoE, router frozen"], mean_drift["MoE"], "router frozen", "all trained"))


def best_val(run):
    return min(r["val_loss"] for r in run.records if "val_loss" in r)


final_fit = {name: [finetune_runs[name, s].records[-1]["fit_loss"] for s in SEEDS] for name in VARIANTS}
final = {name: [final_val(finetune_runs[name, s]) for s in SEEDS] for name in VARIANTS}
best = {name: [best_val(finetune_runs[name, s]) for s in SEEDS] for name in VARIANTS}
start = {name: [finetune_runs[name, s].records[0]["val_loss"] for s in SEEDS] for name in VARIANTS}
print("\n" + table(start, "prose loss before"))
print("\n" + table(final_fit, "loss on the set, end"))
print("\n" + table(best, "best held-out loss"))
print("\n" + table(final, "held-out loss, end"))
gap = {name: np.subtract(final[name], final_fit[name]) for name in VARIANTS}  # held-out minus set, at the end
print("\n" + table(gap, "held-out - set, end"))
print("\nMoE against its dense twin:")
print("  best held-out: " + verdict(best["MoE"], best["dense twin"], "MoE", "dense twin"))
print("  held-out, end: " + verdict(final["MoE"], final["dense twin"], "MoE", "dense twin"))
print("  set, end:      " + verdict(final_fit["MoE"], final_fit["dense twin"], "MoE", "dense twin"))
print("  held-out - set, end: " + verdict(gap["MoE"], gap["dense twin"], "MoE", "dense twin"))
print("the remedies against the plain MoE fine-tuning:")
for name in ("MoE, router frozen", "MoE, expert dropout 0.4"):
    print(f"  {name}, held-out, end: " + verdict(final[name], final["MoE"], name, "MoE"))
    print(f"  {name}, best held-out: " + verdict(best[name], best["MoE"], name, "MoE"))
print("  MoE, expert dropout 0.4 against the dense twin, held-out, end: "
      + verdict(final["MoE, expert dropout 0.4"], final["dense twin"], "dropout 0.4", "dense twin"))
print(f"\nthe whole lesson ran in {time.perf_counter() - began:.0f} s")

# %% [markdown]
# What the numbers show, in the order of the warnings:
#
# - **Sparse updates.** Nearly every expert gets a gradient at nearly every step (99.4–99.7% on
#   average, 87.5% at the lowest single step): with 512 tokens a step, sparsity of the update is
#   the uneven share of the gradient seen above, not experts left out.
# - **Routing drift.** After 200 steps on prose, 40% (layer 0) and 46% (layer 1) of the probe's
#   prose tokens have a new first-choice expert, with wide spreads over seeds. Freezing the router
#   leaves 37% and 42%: no clear difference. The router's weights stay fixed, but its *input* — the
#   residual stream, shaped by the embeddings, the attention and the block below, all still
#   trained — does not, so the choices move anyway.
# - **Over-fitting.** Both models learn the 2,000 characters far below their held-out loss, and
#   the MoE much faster: at the end its loss on its own set is 0.87 against the twin's 1.30, while on
#   held-out prose it is 2.50 against 2.42 (both clear differences), and its gap between the two
#   is clearly the wider. The MoE ends where it started on held-out prose (2.50 before and after,
#   via a best of 2.37 on the way); the twin ends 0.12 below its start. Their *best* held-out
#   losses are level (2.366 against 2.364). That is the warning of Switch and ST-MoE, measured at
#   toy scale: with nearly three times the twin's parameters at the same compute, the MoE memorises a
#   small set sooner and gives back its held-out gains sooner; stopped at its best step, it is
#   no worse here.
# - **Remedies.** Expert dropout 0.4 ends clearly lower on held-out prose than plain fine-tuning
#   (2.449 against 2.500) and fits its set less tightly (1.07 against 0.87): it slows the
#   over-fitting, as Switch intends. Its best held-out loss is no clear difference from plain
#   fine-tuning's, and the twin still ends lower. Freezing the router changes neither the drift
#   nor the held-out loss clearly. At this scale the remedy that works is a regulariser on the
#   experts (or simply early stopping), not holding the router still.
#
# ## Check your understanding
#
# (Short answers, each pointing to the cell that shows it, are in `solutions/answers/10.md`:
# try the questions first.)
#
# 1. In section 1 the active parameters barely change with $E$. Which parameter count *does* grow,
#    and by how much from $E = 1$ to $E = 32$? Why is $E = 1$ with Switch's gate exactly the
#    dense model?
# 2. Clark et al.'s law says each doubling of $E$ multiplies the loss by the same factor. What
#    would the per-doubling gains of section 1 look like if that held here? Name two reasons a
#    300-step run of a tiny model may depart from it.
# 3. Why does the top-2 upcycled model start at exactly the dense model's loss, and the Switch
#    top-1 upcycled model above it? What would a top-1 router with renormalised gates do, and what
#    would it cost the router (lesson 03)?
# 4. Upcycling and the dense continuation take the same number of steps. Do they cost the same
#    compute? Which run of section 2 is the fair comparison for the FLOPs?
# 5. Right after the copy every expert is identical. What breaks the symmetry, and why could it
#    not break if every token went to every expert with equal gates?
# 6. With 512 tokens per step almost every expert gets a gradient at every step. At which batch
#    sizes do sparse updates bite? What does a single sequence reach?
# 7. Freezing the router does not stop the routing from drifting. Why not? What else would have
#    to be frozen to keep every token's first choice?
# 8. Over-fitting on 2,000 characters: what does the best held-out loss measure that the final
#    one does not? Which would you report for a fine-tuning, and why does the answer change which
#    model "wins"?
#
# ## Exercises
#
# In `exercises/ex10_scaling.py`: `fit_power_law` (section 1, *More experts at fixed active
# compute*: fit $L = cE^{\alpha}$ to the table above), `upcycle` (section 2, *Sparse upcycling*)
# and `routing_drift` (section 3, *Fine-tuning an MoE*, with a variant that compares the whole
# set of $k$ choices). Grade them with
#
# ```
# python -m minimoe.grade ex10
# ```
