# %% [markdown]
# # Lesson 08 — Do experts specialise? By domain, or by token?
#
# The name "mixture of experts" suggests a committee of specialists: an expert for code, one for
# arithmetic, one for prose. The 1991 mixture was built to make that happen — its competitive loss
# rewards an expert for owning a region of the input (lesson 01). But a modern router is trained
# only to lower the language-modelling loss, under a balancing loss that asks every expert to take
# its fair share. Nothing in that objective mentions domains. So what *do* the experts of a trained
# MoE Transformer divide between them?
#
# The bundled corpus lets us ask this cleanly: every character carries a label saying which of four
# domains it came from (code, prose, arithmetic, structured records). We train the tiny MoE
# Transformer three times from three seeds, record which expert every validation character is sent
# to in every layer, and measure how much the expert depends on the domain, on the kind of
# character, and on the character itself.
#
# **After this lesson you can**
# - record a routing trace (character, domain, experts per layer) from the layers' routing reports;
# - build contingency tables and measure dependence with the mutual information, the conditional
#   mutual information, and a shuffled-label baseline that separates signal from estimator bias;
# - show that expert indices are arbitrary (a permutation symmetry), and match experts across seeds
#   to ask whether the *partition* they learn is reproducible;
# - colour a text by the expert each character went to, and read it;
# - measure Mixtral's locality — how often consecutive tokens share an expert — against the
#   uniform rate and against the same routing with the positions shuffled;
# - give a measured answer to "domain or token?", with its spread over seeds.
#
# **Papers.**
# - Jacobs, Jordan, Nowlan & Hinton (1991), *Adaptive mixtures of local experts*, Neural
#   Computation 3:79–87, §1: the competitive loss, designed so that experts specialise.
# - Jiang et al. (2024), *Mixtral of experts*, arXiv 2401.04088, §5 "Routing analysis": on
#   subsets of The Pile the experts show no obvious topic specialisation; the routing follows
#   syntax (indentation, `self` in Python), and consecutive tokens often share an expert (Table 5:
#   the share of consecutive tokens with the same first expert, or with top-2 sets that meet).
# - Zoph et al. (2022), *ST-MoE: designing stable and transferable sparse expert models*,
#   arXiv 2202.08906, §7: encoder experts specialise in groups of tokens (punctuation, proper
#   nouns, ...), and in multilingual models experts do not specialise by language.
# - Cover & Thomas (2006), *Elements of Information Theory*, 2nd ed., ch. 2: entropy, mutual
#   information, the chain rule and conditional mutual information.
#
# **Library files used.** `minimoe/train.py` (the runs), `minimoe/moe/report.py`
# (`RoutingReport.expert_index`, the experts each token went to), `minimoe/data/corpus.py` (the
# domain labels), `minimoe/data/sampler.py` (`eval_batches`), `minimoe/moe/locality.py` (the
# consecutive-token repeat rate and its baselines).
#
# **Prerequisites.** Lessons 01 (specialisation under the competitive loss), 03 (the Switch
# balancing loss) and 04 (the tiny MoE Transformer).

# %% tags=["parameters"]
import os

FAST = os.environ.get("MINIMOE_FAST") == "1"  # CI runs every lesson with MINIMOE_FAST=1: fewer steps, same code
SEEDS = (0, 1, 2)  # at least three: the spread over seeds is part of the answer
TRAIN_STEPS = 40 if FAST else 400  # optimiser steps per seed
TRACE_BATCHES = 8 if FAST else 32  # validation batches traced, each 16 windows of 64 characters
SHUFFLES = 3 if FAST else 10  # shuffled-label repeats for the baselines

# %%
# The tiny model's matrices are far too small for BLAS threads to pay off, and on a busy machine
# the threads cost much more than they give; one thread per process (set before NumPy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import itertools
import tempfile
import time
from html import escape
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import HTML, display

import minimoe as mm
from minimoe.data import CharTokenizer, eval_batches, load_corpus, split
from minimoe.models import ModelConfig, Transformer, model_summary
from minimoe.seeds import summarize, verdict
from minimoe.train import TrainConfig, evaluate, train

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.4, 3.6)})
np.set_printoptions(precision=3, suppress=True)
print("fast mode" if FAST else "full mode")

# %% [markdown]
# ## 1. Three models, three seeds
#
# The model is the tiny Transformer of lesson 04, made smaller so that three of them train in
# about a minute: two blocks, each with an MoE feed-forward layer of $E = 8$ experts and top-2
# routing (softmax, top-$k$, renormalise: the order of the Hugging Face Mixtral code, which gives
# the same gates as the Mixtral paper's $\mathrm{Softmax}(\mathrm{TopK}(xW))$), the Switch balancing loss with
# $\alpha = 0.01$, no capacity limit (nothing is dropped). Each seed changes the initial weights
# and the order of the training batches, nothing else.
#
# For each seed we also keep the **untrained** model — the exact weights the run starts from
# (`train` seeds the generator the same way before it builds the model). Whatever the untrained
# router already does with the characters is not something training taught it.

# %%
MODEL = ModelConfig(d_model=64, n_layers=2, n_heads=4, context=64, n_experts=8, top_k=2, expert_hidden=128)
E, LAYERS = MODEL.n_experts, MODEL.n_layers
print(model_summary(MODEL))


def train_config(seed):
    return TrainConfig(steps=TRAIN_STEPS, batch_size=16, lr=3e-3, warmup_steps=min(20, TRAIN_STEPS // 4),
                       eval_every=TRAIN_STEPS, eval_batches=4, log_every=10, checkpoint_every=TRAIN_STEPS,
                       sample_length=1, seed=seed)


trained, untrained = {}, {}
with tempfile.TemporaryDirectory() as runs:
    for seed in SEEDS:
        mm.manual_seed(seed)
        untrained[seed] = Transformer(MODEL).eval()  # the weights the run below starts from
        began = time.perf_counter()
        result = train(MODEL, train_config(seed), Path(runs) / f"seed{seed}",
                       progress=False, verbose=False, plots=False)
        trained[seed] = result["model"].eval()
        (_, first), (_, last) = result["val_losses"][0], result["val_losses"][-1]
        print(f"seed {seed}: validation loss {first:.3f} -> {last:.3f} nats per character "
              f"after {TRAIN_STEPS} steps ({time.perf_counter() - began:.0f} s)")

# %% [markdown]
# ## 2. Counting who serves whom
#
# Every forward pass of an MoE layer leaves a `RoutingReport`; its `expert_index` has shape
# $(B, T, k)$: the experts each of the $B \times T$ tokens went to, best first ($-1$ where an
# assignment was dropped by a capacity limit; there is none here). A **routing trace** is that
# array for every layer, next to what we know about each token: the character itself, and the
# domain of the document it came from. We run fixed validation windows (the same for every seed),
# in evaluation mode and without a graph.
#
# Besides the domain we sort characters into six **classes**: lower-case letters, upper-case
# letters, digits, the space, the newline, and everything else (punctuation and symbols). The
# domains use these classes very differently — arithmetic is digits and `+ - =`, records are
# `key: value | ...` lines full of digits and capitals, code has brackets and indentation — and
# that is the trap of this lesson: an expert that takes every digit would *look* like "the
# arithmetic expert" without knowing anything about arithmetic.

# %%
tokenizer = CharTokenizer()
_, val_text = split(load_corpus())
DOMAINS = val_text.domain_names
CLASSES = ("lower", "upper", "digit", "space", "newline", "other")
V = tokenizer.vocab_size


def class_of(char):
    if char.islower():
        return 0
    if char.isupper():
        return 1
    if char.isdigit():
        return 2
    return {" ": 3, "\n": 4}.get(char, 5)


CLASS_OF_ID = np.array([class_of(char) for char in tokenizer.vocab])  # (V,): one entry per vocabulary id
trace_batches = eval_batches(val_text.ids, val_text.domains, batch_size=16, context=MODEL.context,
                             n_batches=TRACE_BATCHES)


def routing_trace(model, batches):
    """(ids (N,), domains (N,), experts (L, N, k)) for every character of `batches`."""
    experts = []
    with mm.no_grad():
        for x, _, _ in batches:
            model(x)
            experts.append(np.stack([report.expert_index for report in model.routing_reports()]))  # (L, B, T, k)
    experts = np.concatenate(experts, axis=1)  # (L, batches * B, T, k)
    ids = np.concatenate([x for x, _, _ in batches]).ravel()  # (N,)
    domains = np.concatenate([d for _, _, d in batches]).ravel()  # (N,)
    return ids, domains, experts.reshape(LAYERS, ids.size, -1)


traces = {(state, seed): routing_trace(models[seed], trace_batches)
          for state, models in (("trained", trained), ("untrained", untrained)) for seed in SEEDS}
ids, domains, experts = traces["trained", SEEDS[0]]
print(f"{ids.size:,} characters traced; experts array {experts.shape} (layers, characters, k)")
print("characters per domain:", dict(zip(DOMAINS, np.bincount(domains, minlength=4).tolist())))
print("characters per class: ", dict(zip(CLASSES, np.bincount(CLASS_OF_ID[ids], minlength=6).tolist())))
print("first 12 characters:", repr(tokenizer.decode(ids[:12])), "-> layer-0 experts (best first):",
      experts[0, :12].tolist())

# %% [markdown]
# The basic object is a **contingency table**: $n_{x,e}$ = how many times a character with label
# $x$ (its domain, its class, or its id) was sent to expert $e$. With top-2 routing each character
# makes two assignments and both count here. One vectorised way to count pairs is to turn each
# pair into a single index of the flattened table, $x \cdot E + e$, and let `np.bincount` count
# them: the same trick works for three labels at once, and we will need that. (Exercise
# `domain_expert_counts` asks you for the same table with `np.add.at`.)

# %%
def joint_counts(columns, sizes):
    """A table of shape `sizes` counting how often each combination of the label columns occurs."""
    flat = np.ravel_multi_index(tuple(columns), sizes)  # (N,) one index per combination
    return np.bincount(flat, minlength=int(np.prod(sizes))).reshape(sizes)


def assignment_counts(labels, n_labels, expert_index):
    """(n_labels, E): every kept (character, choice) pair, counted by the character's label."""
    kept = expert_index >= 0  # (N, k)
    rows = np.broadcast_to(labels[:, None], expert_index.shape)  # (N, k): each assignment's label
    return joint_counts((rows[kept], expert_index[kept]), (n_labels, E))


def share_per_row(counts):
    """p(expert | row): each row of the table divided by its total."""
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


counts = assignment_counts(domains, len(DOMAINS), experts[0])
print("layer 0, seed 0: assignments (domain x expert)\n", counts)
print("the same as shares of each domain's assignments, p(expert | domain)\n", share_per_row(counts))

# %% [markdown]
# A heatmap per seed and per layer reads faster. Each row is a domain (left) or a character class
# (right); each cell the share of that row's assignments taken by one expert. A balanced router
# with no preference would give every cell $1/E = 0.125$; a dark cell means an expert the row
# avoids, a bright one an expert it crowds into. Since a character's two experts are always
# different, no cell can exceed $0.5$: that is the top of the colour scale.

# %%
def draw_table(ax, shares, row_names, title):
    image = ax.imshow(shares, cmap="magma", vmin=0, vmax=0.5, aspect="auto")
    ax.set_yticks(range(len(row_names)), row_names, fontsize=8)
    ax.set_xticks(range(E), range(E), fontsize=8)
    ax.set_title(title, fontsize=9)
    return image


fig, axes = plt.subplots(len(SEEDS), 2 * LAYERS, figsize=(12, 2.1 * len(SEEDS)), layout="constrained")
for row, seed in enumerate(SEEDS):
    ids_s, domains_s, experts_s = traces["trained", seed]
    for layer in range(LAYERS):
        by_domain = share_per_row(assignment_counts(domains_s, len(DOMAINS), experts_s[layer]))
        by_class = share_per_row(assignment_counts(CLASS_OF_ID[ids_s], len(CLASSES), experts_s[layer]))
        image = draw_table(axes[row, 2 * layer], by_domain, DOMAINS, f"seed {seed}, layer {layer}: by domain")
        draw_table(axes[row, 2 * layer + 1], by_class, CLASSES, f"seed {seed}, layer {layer}: by class")
for ax in axes[-1]:
    ax.set_xlabel("expert")
fig.colorbar(image, ax=axes, shrink=0.6, label="p(expert | row)")
plt.show()

# %% [markdown]
# Two things stand out, and both need a number before we believe them. First, the class tables
# (right) are more contrasted than the domain tables (left): whole classes — digits, the space,
# the newline, capitals — crowd into one or two experts. Second, the rows of the domain tables
# differ too, and often the class table next to them shows why: the experts where digits crowd
# are bright for arithmetic and records, the two domains full of digits. An expert that cares
# about characters makes the domain rows differ through the characters each domain uses, whether
# or not it knows anything about the domain. The next section separates the two.
#
# ## 3. Mutual information
#
# Let $X$ be a label of a character (its domain $D$, its class $C$, or its id $T$) and $\mathcal E$
# the expert it is sent to (for this section the *first* choice, the one with the larger gate, so
# that every character gives one sample of the pair). The **mutual information**
#
# $$I(X; \mathcal E) = \sum_{x, e} p(x, e)\,\log \frac{p(x, e)}{p(x)\,p(e)}
#   = H(X) + H(\mathcal E) - H(X, \mathcal E) = H(\mathcal E) - H(\mathcal E \mid X)$$
#
# is the number of nats by which knowing $X$ reduces the uncertainty about the expert. It is zero
# exactly when the two are independent, and at most $\min(H(X), H(\mathcal E))$; with 8 experts,
# $H(\mathcal E) \le \log 8 \approx 2.08$ nats. Here $p$ are the frequencies of the contingency
# table, and $H(p) = -\sum p \log p$ (with $0 \log 0 = 0$).
#
# The three labels are nested: the id determines the class, and the class says a lot about the
# domain. To ask whether the domain matters **beyond the character**, we use the conditional
# mutual information, the average over characters $t$ of the mutual information between domain
# and expert among the occurrences of $t$ alone:
#
# $$I(D; \mathcal E \mid T) = \sum_t p(t)\, I(D; \mathcal E \mid T = t)
#   = H(D, T) + H(\mathcal E, T) - H(D, \mathcal E, T) - H(T).$$
#
# By the chain rule, $I(D, T; \mathcal E) = I(T; \mathcal E) + I(D; \mathcal E \mid T)$: what the
# character and its domain together say about the expert splits exactly into what the character
# says, plus what the domain adds once the character is known. If the experts were purely token
# experts, the second term would be zero: a space would go to the same expert in code and in prose.
# It can only be non-zero if the router sees context — and it does, since each block's attention
# runs before its MoE layer.
#
# **A baseline.** Estimated from a finite sample, the mutual information is biased upwards: even
# independent labels give a small positive value, roughly $(|X| - 1)(E - 1) / (2N)$ nats for
# $N$ samples, larger for labels with many values (96 character ids) than for few (4 domains).
# Rather than trust the formula, we measure the bias: shuffle the labels at random (which destroys
# any dependence on the expert and keeps every count of the table's margins) and compute the same
# quantity again. For the conditional measure, the domains are shuffled *among the occurrences of
# each character*, so the character–expert dependence survives and only the domain's extra is
# destroyed.
#
# **The previous character.** A non-zero $I(D; \mathcal E \mid T)$ says the router reads more than
# the current character, not *what* more. The cheapest context there is, the character just
# before, differs between domains too (a digit follows a digit in arithmetic, a letter in prose),
# so we also condition on the pair: $I(D; \mathcal E \mid T, T_{-1})$, with $T_{-1}$ the previous
# character of the window ("none" at its first position). What is left of the domain's extra once
# the pair is known needs more than one character of context. There are $96 \times 97$ pairs, so
# the estimator's bias is much larger here: only the shuffled baseline (domains shuffled within
# each pair) makes the number readable.
#
# **Untrained routers.** The untrained routers have attention too, and random attention already
# mixes neighbouring characters into each position. So "the routers use context" needs more than
# a measure above its baseline: it needs the *trained* router above the *untrained* one, over
# seeds.
#
# The code computes every measure through the conditional form, written as a sum over the cells
# of a three-way table; the plain $I(X; \mathcal E)$ is the special case of a condition with a
# single value. (Exercise `mutual_information` asks you for that two-way sum written out
# directly; it is not printed here.)

# %%
def entropy(counts):
    """H in nats of the distribution given by a table of counts (any shape)."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def conditional_mutual_information(counts):
    """I(X; E | T) in nats from a (T, X, E) table of counts, as the sum over its non-empty cells of
    p(t, x, e) log[p(t) p(t, x, e) / (p(t, x) p(t, e))]."""
    p = counts / counts.sum()  # (T, X, E)
    p_t = p.sum(axis=(1, 2), keepdims=True)  # (T, 1, 1)
    p_tx, p_te = p.sum(axis=2, keepdims=True), p.sum(axis=1, keepdims=True)  # (T, X, 1), (T, 1, E)
    cells = p > 0
    ratio = (p_t * p) / (p_tx * p_te)  # inf or nan only in empty cells, which are left out
    with np.errstate(divide="ignore", invalid="ignore"):
        return float((p[cells] * np.log(ratio[cells])).sum())


def mutual_information_of(counts):
    """I(X; E) from an (X, E) table: the conditional one given a label with a single value."""
    return conditional_mutual_information(counts[None])


# Checks on tables whose answer we know: independence gives 0, one expert per domain log 4, and
# the conditional measure agrees with the entropy form H(T,X) + H(T,E) - H(T,X,E) - H(T).
assert abs(mutual_information_of(np.outer([1, 2, 3, 4], [5, 1, 1, 2, 3, 1, 1, 2]))) < 1e-12
assert np.isclose(mutual_information_of(np.eye(4) * 100), np.log(4))
_table = np.random.default_rng(0).integers(0, 9, size=(3, 4, 5))
assert np.isclose(conditional_mutual_information(_table),
                  entropy(_table.sum(axis=2)) + entropy(_table.sum(axis=1)) - entropy(_table)
                  - entropy(_table.sum(axis=(1, 2))))


def shuffled(labels, rng, within=None):
    """`labels` in a random order; with `within`, shuffled only among positions of equal `within`."""
    if within is None:
        return rng.permutation(labels)
    grouped = np.argsort(within, kind="stable")  # positions grouped by their `within` value
    mixed = np.lexsort((rng.random(labels.size), within))  # the same groups, each in a random order
    out = np.empty_like(labels)
    out[grouped] = labels[mixed]
    return out


MEASURES = ("H(expert)", "I(domain; expert)", "I(class; expert)", "I(character; expert)",
            "I(domain; expert | character)", "I(domain; expert | char, prev)")


def previous_ids(batches):
    """(N,) the character before each traced character in its window; V (\"none\") at position 0."""
    return np.concatenate([np.concatenate([np.full((len(x), 1), V), x[:, :-1]], axis=1)
                           for x, _, _ in batches]).ravel()


PREVIOUS = previous_ids(trace_batches)  # the same windows for every model


def no_shuffle(labels, within=None):
    return labels


def measures(ids, domains, expert, shuffle=no_shuffle):
    """The quantities of MEASURES for one layer's first-choice experts (N,), with the labels
    passed through `shuffle` (for the baselines)."""
    pair = ids * (V + 1) + PREVIOUS  # (N,) one label per (character, previous character)
    return np.array([
        entropy(np.bincount(expert, minlength=E)),
        mutual_information_of(joint_counts((shuffle(domains), expert), (len(DOMAINS), E))),
        mutual_information_of(joint_counts((shuffle(CLASS_OF_ID[ids]), expert), (len(CLASSES), E))),
        mutual_information_of(joint_counts((shuffle(ids), expert), (V, E))),
        conditional_mutual_information(
            joint_counts((ids, shuffle(domains, within=ids), expert), (V, len(DOMAINS), E))),
        conditional_mutual_information(
            joint_counts((pair, shuffle(domains, within=pair), expert), (V * (V + 1), len(DOMAINS), E))),
    ])


rng = np.random.default_rng(0)


def random_shuffle(labels, within=None):
    return shuffled(labels, rng, within)


values = {}  # (state, seed) -> (L, measures); ("shuffled" / "untrained shuffled", seed): baselines
for (state, seed), (ids_s, domains_s, experts_s) in traces.items():
    first_choice = experts_s[:, :, 0]  # (L, N)
    values[state, seed] = np.stack([measures(ids_s, domains_s, first_choice[layer]) for layer in range(LAYERS)])
    baseline = "shuffled" if state == "trained" else "untrained shuffled"
    values[baseline, seed] = np.stack([
        np.mean([measures(ids_s, domains_s, first_choice[layer], random_shuffle) for _ in range(SHUFFLES)], axis=0)
        for layer in range(LAYERS)])
STATES = ("trained", "untrained", "shuffled", "untrained shuffled")
stats = {state: np.stack([values[state, seed] for seed in SEEDS]) for state in STATES}

for layer in range(LAYERS):
    print(f"layer {layer}, in nats{'':20}trained: mean ± spread over {len(SEEDS)} seeds   shuffled   untrained (shuffled)")
    for m, name in enumerate(MEASURES):
        trained_m = summarize(stats["trained"][:, layer, m])
        shuffled_m = "-" if m == 0 else f"{stats['shuffled'][:, layer, m].mean():.4f}"
        untrained_base = "" if m == 0 else f" ({stats['untrained shuffled'][:, layer, m].mean():.4f})"
        print(f"  {name:32} {trained_m.mean:6.3f} ± {trained_m.spread:.3f}"
              f"  (seeds: {', '.join(f'{v:.3f}' for v in trained_m.values)})   {shuffled_m:>8}"
              f"   {stats['untrained'][:, layer, m].mean():9.3f}{untrained_base}")

# %% [markdown]
# The plot shows the same numbers: a bar per measure, the mean over seeds with one dot per seed,
# beside the untrained routers and the shuffled-label baseline. The dashed line is
# $H(\mathcal E)$ of the trained routers, the ceiling no label can exceed.

# %%
fig, axes = plt.subplots(1, LAYERS, figsize=(12, 3.8), sharey=True, layout="constrained")
names = ["I(domain;E)", "I(class;E)", "I(char;E)", "I(domain;E|char)", "I(domain;E|char,prev)"]
where = np.arange(len(names))
for layer, ax in enumerate(axes):
    for offset, state, color in ((-0.27, "trained", "C0"), (0.0, "untrained", "C7"), (0.27, "shuffled", "C3")):
        per_seed = stats[state][:, layer, 1:]  # (seeds, 5)
        ax.bar(where + offset, per_seed.mean(axis=0), width=0.27, color=color, label=f"{state}")
        ax.plot(np.repeat(where + offset, len(SEEDS)), per_seed.T.ravel(), "k.", ms=4)
    ax.axhline(stats["trained"][:, layer, 0].mean(), color="C0", ls="--", lw=1, label="H(expert), trained")
    ax.set_xticks(where, names, rotation=20, fontsize=8)
    ax.set_title(f"layer {layer}")
    ax.grid(axis="y", alpha=0.3)
axes[0].set_ylabel("nats")
axes[0].legend(fontsize=8)
plt.show()

for layer in range(LAYERS):
    h = stats["trained"][:, layer, 0]
    share = stats["trained"][:, layer, 1:] / h[:, None]  # (seeds, 5) share of H(expert) each label explains
    print(f"layer {layer}: share of the expert's entropy explained (mean over seeds): "
          + ", ".join(f"{n} {s:.0%}" for n, s in zip(names, share.mean(axis=0))))

# %% [markdown]
# How to read it:
#
# - **Every measure is far above its shuffled baseline**, on every seed: none of this is
#   estimator bias. The baseline is largest for the character id (96 values), as the bias formula
#   predicts, and still tiny.
# - **The character explains most of the router's choice.** $I(\text{character}; \mathcal E)$ is
#   the largest measure by far and takes most of $H(\mathcal E)$; the six coarse classes alone
#   already explain more than the domain does.
# - **The domain adds something beyond the character**, much less than the character itself but
#   far above its baseline: the same character is routed somewhat differently in different
#   domains, which only the context read by attention can tell the router. But the untrained
#   routers already show part of it (in layer 0 about half: 0.12 of 0.24 nats): random attention
#   mixes the neighbours into every position. And once the previous character is known too, the
#   trained and untrained routers keep similar raw amounts of domain information (0.09 to 0.10
#   nats, the last row). Section 7 puts verdicts on both comparisons.
# - **Most of the rest is learned.** The untrained routers already depend on the character a little
#   (a random linear map of an embedding still separates characters), but far less, and their
#   $H(\mathcal E)$ is lower: at initialisation a few experts take most tokens, and training with
#   the balancing loss spreads them out.
# - **The spread over seeds** is small next to the gaps between the measures, so the ordering
#   $I(\text{character}) > I(\text{class}) > I(\text{domain}) > I(\text{domain} \mid \text{character})$
#   is a property of the setup, not of one lucky run.
#
# One concrete case makes the conditional measure tangible: the **space**, which all four domains
# use, and the **digits**, which both arithmetic and records are full of. If the router ignored
# context, each row below would be the same in every domain.

# %%
SPACE, DIGITS = tokenizer.encode(" ")[0], tokenizer.encode("0123456789")
fig, axes = plt.subplots(1, 2 * LAYERS, figsize=(12, 2.2), layout="constrained")
for layer in range(LAYERS):
    for column, (what, chosen) in enumerate((("space", ids == SPACE), ("digits", np.isin(ids, DIGITS)))):
        present = np.bincount(domains[chosen], minlength=4) > 50  # domains where this character is common
        table = share_per_row(assignment_counts(domains[chosen], len(DOMAINS), experts[layer][chosen]))[present]
        image = draw_table(axes[2 * layer + column], table, [DOMAINS[d] for d in np.flatnonzero(present)],
                           f"seed {SEEDS[0]}, layer {layer}: {what}")
fig.colorbar(image, ax=axes, shrink=0.8, label="p(expert | domain)")
plt.show()

# %% [markdown]
# ## 4. The same partition under other names: experts across seeds
#
# Is "expert 3" the same thing in every seed? It cannot be, by construction. Take a trained layer,
# permute its experts (their weights) and the router's columns by the same permutation: every
# token still reaches the same *functions* with the same gates, so the model computes exactly the
# same thing, with the same loss — only the indices in the routing trace change. The loss is
# symmetric under the $E!$ relabellings, the random initialisation breaks the symmetry, and which
# index ends up with which job is an accident of the seed. The cell checks this on seed 0.

# %%
permutation = np.random.default_rng(1).permutation(E)  # new expert j is old expert permutation[j]
relabelled = Transformer(MODEL)
relabelled.load_state_dict(trained[SEEDS[0]].state_dict())
relabelled.eval()
for layer in relabelled.moe_layers():
    for weight in (layer.experts.w_in, layer.experts.b_in, layer.experts.w_out, layer.experts.b_out):
        weight.data = weight.data[permutation]  # (E, ...) rows reordered
    layer.router.weight.data = layer.router.weight.data[:, permutation]  # (d, E) columns reordered

loss_before = evaluate(trained[SEEDS[0]], trace_batches[:4])
loss_after = evaluate(relabelled, trace_batches[:4])
trained[SEEDS[0]].eval(), relabelled.eval()  # evaluate() leaves a model in training mode
_, _, experts_after = routing_trace(relabelled, trace_batches[:4])
_, _, experts_before = routing_trace(trained[SEEDS[0]], trace_batches[:4])
new_index_of = np.argsort(permutation)  # old expert e is now called new_index_of[e]
print("permutation:", permutation.tolist())
print(f"validation loss before {loss_before:.6f}, after relabelling {loss_after:.6f}")
print("every routing decision is the old one under the new names:",
      bool(np.array_equal(new_index_of[experts_before], experts_after)))

# %% [markdown]
# So comparing seeds index by index is meaningless. The sensible question is whether the seeds
# learn the same **partition** of the characters under different names. Describe each expert by
# the distribution of characters it receives, $p(t \mid e)$ (all its assignments), and compare two
# experts by the Bhattacharyya coefficient $\sum_t \sqrt{p(t \mid e)\,p(t \mid e')}$, which is 1
# for identical distributions and 0 for disjoint ones. Then find the relabelling of one seed's
# experts that best matches the other's: with 8 experts there are $8! = 40\,320$ permutations, few
# enough to try them all at once. Three reference points:
#
# - **same index**: expert $e$ of one seed against expert $e$ of the other, as if indices meant
#   something;
# - **best relabelling**: after the matching;
# - **same model, two halves of the data**: one seed's experts measured on two halves of the
#   trace, the ceiling that sampling noise allows.

# %%
ALL_PERMUTATIONS = np.array(list(itertools.permutations(range(E))))  # (E!, E)


def expert_profiles(ids, expert_index):
    """(E, V): p(character | expert) over all of each expert's assignments."""
    counts = assignment_counts(ids, V, expert_index).T  # (E, V)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def similarity(profiles_a, profiles_b):
    """(E, E) Bhattacharyya coefficients between the experts of a and those of b."""
    return np.sqrt(profiles_a[:, None, :] * profiles_b[None, :, :]).sum(axis=-1)


def best_relabelling(sim):
    """The permutation p maximising sum_e sim[e, p[e]]: b's expert p[e] plays a's expert e."""
    return ALL_PERMUTATIONS[sim[np.arange(E), ALL_PERMUTATIONS].sum(axis=1).argmax()]


profiles = {seed: [expert_profiles(traces["trained", seed][0], traces["trained", seed][2][layer])
                   for layer in range(LAYERS)] for seed in SEEDS}
half = ids.size // 2
print(f"{'layer':5} {'pair':14} {'same index':>10} {'best relabelling':>17} {'any pair (chance)':>18}")
matches = {}
for layer in range(LAYERS):
    for a, b in itertools.combinations(SEEDS, 2):
        sim = similarity(profiles[a][layer], profiles[b][layer])
        matches[layer, a, b] = best_relabelling(sim)
        print(f"{layer:5} seeds {a} and {b}  {np.diag(sim).mean():10.2f} "
              f"{sim[np.arange(E), matches[layer, a, b]].mean():17.2f} {sim.mean():18.2f}")
    halves = similarity(expert_profiles(ids[:half], experts[layer][:half]),
                        expert_profiles(ids[half:], experts[layer][half:]))
    print(f"{layer:5} {'seed ' + str(SEEDS[0]) + ', halves':14} {np.diag(halves).mean():10.2f}"
          f" {'(identity)':>17} {halves.mean():18.2f}")

# %%
a, b = SEEDS[0], SEEDS[1]
sim = similarity(profiles[a][0], profiles[b][0])
fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained")
for ax, order, title in ((axes[0], np.arange(E), f"seed {b}'s experts in their own order"),
                         (axes[1], matches[0, a, b], f"seed {b}'s experts relabelled")):
    image = ax.imshow(sim[:, order], cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(E), order)
    ax.set_yticks(range(E))
    ax.set_xlabel(f"expert of seed {b}")
    ax.set_ylabel(f"expert of seed {a}")
    ax.set_title(f"layer 0: {title}", fontsize=10)
fig.colorbar(image, ax=axes, shrink=0.8, label="Bhattacharyya coefficient")
plt.show()
print(f"layer 0, seed {a} expert -> seed {b} expert: "
      + ", ".join(f"{e}->{m}" for e, m in enumerate(matches[0, a, b])))

# %% [markdown]
# The indices are arbitrary — the same-index column is close to chance, sometimes above it,
# sometimes below — but the best relabelling
# recovers experts that receive clearly similar characters in both seeds, though not as similar
# as one model measured twice. Read that as: the *kind* of partition (digits here, spaces and
# newlines there, letters split among several experts) is driven by the data and comes back in
# every seed; its exact boundaries, and all the names, are chosen by symmetry breaking.
#
# ## 5. Seeing it: text coloured by expert
#
# Mixtral's §5 shows text with each token highlighted by its expert. Here is the same for one
# window of each domain from the validation set, for both layers of seed 0: each character's
# background is the colour of its first-choice expert (a space is drawn as `·`, a newline as `↵`).

# %%
windows = []
for d in range(len(DOMAINS)):
    start = next(s for s in val_text.document_starts if val_text.domains[s] == d)  # first document of domain d
    windows.append(val_text.ids[start:start + MODEL.context])
window_ids = np.stack(windows)  # (4, T)
with mm.no_grad():
    trained[SEEDS[0]](window_ids)
window_experts = np.stack([r.expert_index for r in trained[SEEDS[0]].routing_reports()])  # (L, 4, T, k)
COLOURS = plt.get_cmap("tab10").colors[:E]
SHOWN = {" ": "·", "\n": "↵"}

fig, ax = plt.subplots(figsize=(12, 0.55 * len(DOMAINS) * LAYERS + 0.6))
for d in range(len(DOMAINS)):
    text = tokenizer.decode(window_ids[d])
    for layer in range(LAYERS):
        row = d * LAYERS + layer
        for col, char in enumerate(text):
            ax.add_patch(plt.Rectangle((col, row), 1, 0.9, color=COLOURS[window_experts[layer, d, col, 0]]))
            ax.text(col + 0.5, row + 0.48, SHOWN.get(char, char), ha="center", va="center",
                    fontsize=9, family="monospace")
        ax.text(-0.8, row + 0.45, f"{DOMAINS[d]}, layer {layer}", ha="right", va="center", fontsize=8)
ax.set_xlim(-11, MODEL.context)
ax.set_ylim(len(DOMAINS) * LAYERS, 0)
ax.axis("off")
ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS], labels=[f"expert {e}" for e in range(E)],
          ncol=E, loc="upper center", bbox_to_anchor=(0.55, 0.0), fontsize=8, frameon=False)
plt.show()

# %% [markdown]
# In a notebook the same can be written as HTML, with the expert and the second choice shown when
# the pointer rests on a character (a rendered page may strip the colours; the figure above is the
# version that survives everywhere):

# %%
def coloured_html(text, first, second):
    """`text` as HTML spans whose background is the colour of each character's first expert."""
    spans = []
    for char, e1, e2 in zip(text, first, second):
        r, g, b = (int(255 * c) for c in COLOURS[e1])
        shown = "↵<br>" if char == "\n" else escape(char).replace(" ", "&nbsp;")
        spans.append(f'<span style="background: rgba({r},{g},{b},0.55)" title="experts {e1}, {e2}">{shown}</span>')
    return "".join(spans)


last_layer = window_experts[-1]  # (4, T, k)
display(HTML("<div style='font-family: monospace; line-height: 1.5'>" + "<br><br>".join(
    f"<b>{DOMAINS[d]}</b> (layer {LAYERS - 1})<br>"
    + coloured_html(tokenizer.decode(window_ids[d]), last_layer[d, :, 0], last_layer[d, :, 1])
    for d in range(len(DOMAINS))) + "</div>"))

# %% [markdown]
# And the list behind the colours: for each expert of seed 0, the characters that make up most of
# its assignments, and the share of its assignments from each domain.

# %%
for layer in range(LAYERS):
    print(f"layer {layer} (seed {SEEDS[0]}):")
    profile = expert_profiles(ids, experts[layer])  # (E, V)
    by_domain = share_per_row(assignment_counts(domains, len(DOMAINS), experts[layer]).T)  # (E, D)
    for e in range(E):
        top = np.argsort(-profile[e])[:6]
        chars = "  ".join(f"{SHOWN.get(tokenizer.vocab[t], tokenizer.vocab[t])}:{profile[e, t]:.0%}" for t in top)
        domain_mix = " ".join(f"{name[:4]} {share:.0%}" for name, share in zip(DOMAINS, by_domain[e]))
        print(f"  expert {e}: {chars:52} | {domain_mix}")

# %% [markdown]
# ## 6. Neighbours share experts: Mixtral's locality
#
# The coloured text above has runs: stretches of neighbouring characters painted the same colour.
# Mixtral (§5) saw the same in its Figure 8 and measured it (Table 5): per layer, "the proportion
# of times the same expert is assigned to a token $i$ and its following token $i+1$", in two
# forms. **First choice**: the two tokens' first experts are equal. **First or second choice**:
# the same expert appears among the two experts of both tokens, that is, the two tokens' top-2
# sets meet. For a sequence of $T$ tokens with first experts $e_t$, or sets of experts $S_t$,
#
# $$r_1 = \frac{1}{T-1} \sum_{t=1}^{T-1} \mathbb 1\{e_t = e_{t+1}\}, \qquad
#   r_k = \frac{1}{T-1} \sum_{t=1}^{T-1} \mathbb 1\{S_t \cap S_{t+1} \neq \emptyset\},$$
#
# pooled over all the pairs of all the sequences (here every window has $T = 64$). A pair never
# spans two sequences: the last character of one window and the first of the next are not
# neighbours. If every token drew its experts uniformly and independently, $r_1 = 1/E$ and
# $r_k = 1 - \binom{E-k}{k} / \binom{E}{k}$, the chance that two random $k$-sets meet: the paper's
# reference values, $1/8 = 12.5\%$ and $1 - \frac{6}{8}\cdot\frac{5}{7} \approx 46\%$ at $E = 8$,
# $k = 2$ — ours as well. On eight subsets of The Pile, Mixtral's Table 5 finds layer 0 close to
# random and layers 15 and 31 clearly above it ("expert choice exhibits high temporal locality").
#
# The uniform rate is a weak baseline. A router that sends more tokens to some experts repeats
# itself more often by chance alone, and what counts is the load *within a sequence*: a window
# of arithmetic sends most of its characters to the experts that take digits. So we add the
# **shuffled positions** baseline: the characters of each window in a random order, every
# character keeping its experts. The window's load survives, the order does not; locality is what
# the routing has beyond it. (Under a random order two neighbours are a random pair of distinct
# positions of the window, so the expected first-choice rate is exactly
# $\sum_e n_e (n_e - 1) / (T (T - 1))$ for a window whose first choices put $n_e$ characters on
# expert $e$; the cell checks the shuffles against it.) The untrained routers get the same
# measures and the same baseline.
#
# `minimoe.moe.locality` has the rate, the uniform value and the shuffle. (Exercise
# `consecutive_same_expert_rate` asks you for the rate.)

# %%
from minimoe.moe.locality import consecutive_same_expert_rate, random_repeat_rate, shuffle_positions

WINDOW_SHAPE = (TRACE_BATCHES * 16, MODEL.context)  # the traced windows: the rows of every trace
K = MODEL.top_k
FORMS = ("first choice", f"top-{K} sets meet")
UNIFORM = (random_repeat_rate(E), random_repeat_rate(E, K))
locality_rng = np.random.default_rng(8)


def both_rates(routing):
    """(first-choice rate, top-k rate) of a (windows, T, k) routing."""
    return consecutive_same_expert_rate(routing[:, :, 0]), consecutive_same_expert_rate(routing)


def shuffled_expectation(first_choice):
    """The exact mean first-choice rate over random orders of each (windows, T) window."""
    n = (first_choice[:, :, None] == np.arange(E)).sum(axis=1)  # (windows, E): each window's load
    T = first_choice.shape[1]
    return float((n * (n - 1)).sum() / (len(first_choice) * T * (T - 1)))


def locality(expert_index):
    """(2, forms): the repeat rates of one layer's (N, k) routing as routed, and with the positions
    of each window shuffled (the mean of SHUFFLES draws)."""
    routed = expert_index.reshape(WINDOW_SHAPE + (K,))  # (windows, T, k)
    shuffles = [both_rates(shuffle_positions(routed, locality_rng)) for _ in range(SHUFFLES)]
    return np.array([both_rates(routed), np.mean(shuffles, axis=0)])


ROUTERS = ("trained", "untrained")
repeats = {state: np.stack([[locality(traces[state, seed][2][layer]) for layer in range(LAYERS)] for seed in SEEDS])
           for state in ROUTERS}  # state -> (seeds, L, as routed / shuffled, forms)
expected = np.array([[shuffled_expectation(traces["trained", seed][2][layer, :, 0].reshape(WINDOW_SHAPE))
                      for layer in range(LAYERS)] for seed in SEEDS])  # (seeds, L)
window_domains = domains.reshape(WINDOW_SHAPE)
print(f"{WINDOW_SHAPE[0]} windows of {WINDOW_SHAPE[1]} characters: "
      f"{WINDOW_SHAPE[0] * (WINDOW_SHAPE[1] - 1):,} consecutive pairs per layer and seed; "
      f"{np.mean((window_domains == window_domains[:, :1]).all(axis=1)):.1%} of the windows lie in one domain")
print("trained, first choice, shuffled positions (seeds x layers): mean of the shuffles "
      f"{repeats['trained'][:, :, 1, 0].ravel().round(4).tolist()}, "
      f"exact expectation {expected.ravel().round(4).tolist()}")
for layer in range(LAYERS):
    print(f"layer {layer}: share of consecutive pairs sharing an expert, mean ± spread over {len(SEEDS)} seeds")
    print(f"  {'':18} {'trained':>14} {'shuffled':>14} {'untrained':>15} {'shuffled':>14} {'uniform':>8}")
    for f, form in enumerate(FORMS):
        cells = [summarize(repeats[state][:, layer, v, f]) for state in ROUTERS for v in (0, 1)]
        print(f"  {form:18} " + " ".join(f"{c.mean:7.1%} ± {c.spread:4.1%}".rjust(w)
                                         for c, w in zip(cells, (14, 14, 15, 14))) + f" {UNIFORM[f]:8.1%}")

# %% [markdown]
# The same numbers per layer: a bar for the mean over seeds, a dot per seed, a dashed line at
# the uniform rate of each form.

# %%
fig, axes = plt.subplots(1, LAYERS, figsize=(10, 3.8), sharey=True, layout="constrained")
bars = (("trained", "trained", 0, "C0"), ("trained, positions shuffled", "trained", 1, "C3"),
        ("untrained", "untrained", 0, "C7"), ("untrained, positions shuffled", "untrained", 1, "C1"))
width = 0.2
for layer, ax in enumerate(axes):
    for b, (label, state, v, colour) in enumerate(bars):
        where = np.arange(len(FORMS)) + (b - 1.5) * width
        per_seed = repeats[state][:, layer, v, :]  # (seeds, forms)
        ax.bar(where, per_seed.mean(axis=0), width=width, color=colour, label=label)
        ax.plot(np.repeat(where, len(SEEDS)), per_seed.T.ravel(), "k.", ms=4)
    for f in range(len(FORMS)):
        ax.hlines(UNIFORM[f], f - 2 * width, f + 2 * width, colors="k", linestyles="--", lw=1,
                  label="uniform random" if f == 0 else None)
    ax.set_xticks(range(len(FORMS)), FORMS)
    ax.set_ylim(0, 1)
    ax.set_title(f"layer {layer}")
    ax.grid(axis="y", alpha=0.3)
axes[0].set_ylabel("consecutive pairs sharing an expert")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=5, fontsize=8, frameon=False)
plt.show()

# %% [markdown]
# Next to Mixtral's Table 5 as multiples of the uniform rate (the paper's lowest and highest over
# its eight Pile subsets; our mean over seeds), with a verdict over seeds on the comparison that
# decides whether there is locality at all: each router against its own shuffled positions.

# %%
MIXTRAL_TABLE_5 = {  # Jiang et al. 2024, Table 5: (lowest, highest) over the eight Pile subsets, layers of 32
    (0, 0): (0.136, 0.149), (0, 15): (0.236, 0.284), (0, 31): (0.197, 0.263),  # (0, layer): first choice
    (1, 0): (0.449, 0.499), (1, 15): (0.616, 0.670), (1, 31): (0.445, 0.536),  # (1, layer): first or second
}
for (f, layer), (low, high) in MIXTRAL_TABLE_5.items():
    print(f"Mixtral layer {layer:2} of 32, {FORMS[f]:17}: {low:.1%} to {high:.1%}, "
          f"{low / UNIFORM[f]:.2f} to {high / UNIFORM[f]:.2f} x uniform")
for layer in range(LAYERS):
    for f, form in enumerate(FORMS):
        rate = repeats["trained"][:, layer, 0, f]
        print(f"ours layer {layer} of {LAYERS}, {form:17}: {rate.mean():.1%}, "
              f"{rate.mean() / UNIFORM[f]:.2f} x uniform, "
              f"{rate.mean() / repeats['trained'][:, layer, 1, f].mean():.2f} x its shuffled positions")
        for state in ROUTERS:
            in_order, shuffled_rate = repeats[state][:, layer, 0, f], repeats[state][:, layer, 1, f]
            print(f"    {state:9} in order minus shuffled, per seed: "
                  f"{', '.join(f'{round(100 * gap, 1) + 0.0:+.1f}' for gap in in_order - shuffled_rate)} points; "
                  + verdict(in_order, shuffled_rate, "in order", "shuffled", lower_is_better=False))

# %% [markdown]
# What a repeat is at our scale: a token here is one character, and neighbouring characters are
# often alike. The cell splits the consecutive pairs of the traces by kind — the same character
# twice, two characters of the same class, two classes — and gives the share of pairs of each kind,
# in order and after shuffling each window, and how often a pair of each kind shares its first
# expert under the trained routers.

# %%
def pair_kinds(windows):
    """(same character, same class but another character, different classes): (windows, T-1) masks."""
    same_char = windows[:, 1:] == windows[:, :-1]
    same_class = (CLASS_OF_ID[windows[:, 1:]] == CLASS_OF_ID[windows[:, :-1]]) & ~same_char
    return same_char, same_class, ~(same_char | same_class)


KIND_NAMES = ("same character", "same class, other character", "different classes")
trace_windows = ids.reshape(WINDOW_SHAPE)  # (windows, T): the same characters for every seed
KINDS = pair_kinds(trace_windows)
shuffled_kinds = [pair_kinds(shuffle_positions(trace_windows, locality_rng)) for _ in range(SHUFFLES)]
print("share of pairs: " + "; ".join(
    f"{name} {mask.mean():.1%} in order, {np.mean([kinds[i].mean() for kinds in shuffled_kinds]):.1%} shuffled"
    for i, (name, mask) in enumerate(zip(KIND_NAMES, KINDS))))
for layer in range(LAYERS):
    first = [traces["trained", seed][2][layer, :, 0].reshape(WINDOW_SHAPE) for seed in SEEDS]
    shared = np.stack([f[:, 1:] == f[:, :-1] for f in first])  # (seeds, windows, T-1)
    print(f"layer {layer}: " + "; ".join(
        f"{kind} {mask.mean():.1%} of pairs, share the first expert {summarize(shared[:, mask].mean(axis=1))}"
        for kind, mask in zip(KIND_NAMES, KINDS)))

# %% [markdown]
# How to read it:
#
# - **Against the uniform rate, our routers look as local as Mixtral's.** The trained routers'
#   first choices repeat on 27% (layer 0) and 30% (layer 1) of consecutive pairs, 2.2 and 2.4
#   times the uniform 12.5% — the multiples Table 5 reports for Mixtral's layers 15 and 31 (1.6 to
#   2.3), not for its layer 0 (1.1 to 1.2). The top-2 form reads the same way: 63% and 64%
#   against 46%, 1.35 and 1.38 times, like Mixtral's layer 15 (1.3 to 1.4).
# - **Against shuffled positions, the trained routers show no locality.** Shuffling each window
#   leaves the rate within 6% of itself (0.99 to 1.06 times), and on both layers and in both
#   forms the verdict is "no clear difference". The gaps per seed are under 5 points, of both
#   signs except in layer 1's first choice (three small positive gaps, under 4 points). What
#   lifts the rate above $1/E$ is the load of each window — nearly every window lies in one
#   domain, and a window of arithmetic or of records sends most of its characters to a few
#   experts — not which character follows which. The shuffles match their exact expectation
#   $\sum_e n_e(n_e - 1)/(T(T-1))$ to within 0.002.
# - **The untrained routers are the ones whose order matters.** Their rates are far higher (61%
#   and 69%), because at initialisation a few experts take most tokens, and so are their shuffled
#   baselines (50% and 59%). In order they beat their shuffles on every seed, by 7 to 13 points in
#   the first-choice form; the verdict is clear in layer 0 and, over seeds' large spread, not clear
#   in layer 1. One reading, consistent with section 3's untrained baselines: random attention
#   mixes each character with its neighbours, so neighbouring positions look alike to a random
#   router. Training spreads the load over the experts (section 3's $H(\mathcal E)$), and the
#   trained routers keep no clear excess.
# - **At our scale a repeat is mostly two alike characters.** Two identical neighbours share
#   their first expert 95% to 98% of the time, two of the same class 37% to 39%, two of different
#   classes 11% to 15%: the routing follows the character (section 3: the character explains 67%
#   to 70% of $H(\mathcal E)$). Shuffling a window does not remove alike neighbours: they still make
#   43% of the pairs (8% the same character, 35% the same class) against 50% in order.
#
# **What differs from Mixtral.** Mixtral's tokens are sub-words, 32 layers deep; its Table 5 gives
# only the uniform reference, so it does not say how much of its excess a shuffle of positions
# would keep. Ours are characters in two layers, run on windows that nearly all lie in one domain,
# and each window's load is so uneven that its shuffle alone repeats at 2.2 times $1/E$. The
# measure and its baselines carry over unchanged; at our scale the shuffle is the baseline that
# decides. Where locality is real, Mixtral (§5) notes two consequences: it can overload some
# experts under expert parallelism, and it can be used for caching experts (the offloading work
# it cites; lesson 09 simulates such a cache).

# %% [markdown]
# ## 7. The answer, with its numbers
#
# The cell below states the verdict from the measurements of this run, layer by layer, so that
# the words cannot drift from the numbers.

# %%
for layer in range(LAYERS):
    t, s = stats["trained"][:, layer], stats["shuffled"][:, layer]
    u, us = stats["untrained"][:, layer], stats["untrained shuffled"][:, layer]
    char, domain, extra, h = t[:, 3], t[:, 1], t[:, 4], t[:, 0]
    print(f"layer {layer}: the character explains {np.mean(char / h):.0%} of the expert's entropy "
          f"(I = {summarize(char)} nats); the domain alone {np.mean(domain / h):.0%} ({summarize(domain)}); "
          f"the domain beyond the character {np.mean(extra / h):.0%} ({summarize(extra)}, "
          f"shuffled baseline {s[:, 4].mean():.3f}).")
    print(f"  by token more than by domain on every seed: {bool(np.all(char > domain))}; "
          f"domain adds beyond the token on every seed (over 3x its baseline): {bool(np.all(extra > 3 * s[:, 4]))}")
    for m, what in ((4, "I(D; E | T)"), (5, "I(D; E | T, T-1)")):
        print(f"  {what:17} trained against untrained: "
              + verdict(t[:, m], u[:, m], "trained", "untrained", lower_is_better=False))
        print(f"  {what:17} above its shuffled baseline: "
              + verdict(t[:, m] - s[:, m], u[:, m] - us[:, m], "trained", "untrained", lower_is_better=False))
ordered = np.all(np.diff(stats["trained"][:, :, [3, 2, 1, 4]], axis=-1) < 0)  # per seed and layer
print("I(character) > I(class) > I(domain) > I(domain | character) on every seed and layer:", bool(ordered))

# %% [markdown]
# **Do experts specialise by domain or by token?** In this model, mostly by token. The identity of
# the character (and even its coarse class) tells far more about the expert than the domain does;
# part of why the domain tables differ at all is that the domains are written with different
# characters; and the experts' indices carry no meaning across seeds, only the rough shape of the
# partition returns. This agrees with what Mixtral (§5) and ST-MoE (§7) report for large models:
# syntactic, token-level specialisation rather than experts for topics or languages.
#
# **Do the routers use context?** Read the verdicts line by line. What the domain adds once the
# character is known, $I(D; \mathcal E \mid T)$, is far above its shuffled baseline, and in both
# layers the trained routers hold clearly more of it than the untrained ones — but the untrained
# routers already hold part of it (about half in layer 0, under a third in layer 1), because even
# random attention mixes each character with its neighbours. Once the previous character is known
# as well, $I(D; \mathcal E \mid T, T_{-1})$, layer 0 shows no clear difference between trained and
# untrained, raw or above baseline: what training added to the first router's use of context is
# the character just before. Layer 1 is the one hint of more: its raw values show no clear
# difference, but above each one's own (large) shuffled baseline the trained router holds clearly
# more (about 0.09 against 0.04 nats). So the careful sentence is: the routers depend on more than
# the current character; in the first layer what training added is explained by the previous
# character, and only the deeper layer shows a small, learned dependence on longer context.
#
# Keep the limits of this experiment in mind: two layers, a character vocabulary, a few minutes
# of training, and a corpus whose domains differ strongly in their characters. Deeper layers of
# larger models, with sub-word tokens, have more room for context to shape the routing; the
# measures of this lesson — a conditional mutual information against a shuffled baseline, over
# several seeds — are the ones to use there too.
#
# **Do neighbours share experts?** More often than uniform routing would (2.2 to 2.4 times in the
# first choice, as in Mixtral's middle and last layers), but for the trained routers no more than
# the same characters in a shuffled order: section 6's verdicts are "no clear difference" on both
# layers and in both forms. The excess over $1/E$ is each window's uneven load, and at the level of
# characters a repeat mostly means two alike characters. Only the untrained routers repeat more in
# order than shuffled (clearly in layer 0). A repeat rate means little without the shuffled
# baseline beside it.
#
# ## Check your understanding
#
# 1. Why does a high $I(\text{domain}; \mathcal E)$, taken alone, not show that experts specialise
#    by domain in this corpus? Which measure answers the question, and why does the chain rule
#    $I(D, T; \mathcal E) = I(T; \mathcal E) + I(D; \mathcal E \mid T)$ make it the right one?
# 2. The shuffled baseline of $I(\text{character}; \mathcal E)$ is larger than that of
#    $I(\text{domain}; \mathcal E)$. Why, and roughly by what factor?
# 3. For the conditional measure, why shuffle the domains *within each character* rather than over
#    all characters? What would the global shuffle measure instead?
# 4. A hash router (lesson 06) sends each character id to a fixed expert. What are
#    $I(\text{character}; \mathcal E)$ and $I(\text{domain}; \mathcal E \mid \text{character})$
#    for it? Could it ever show domain specialisation?
# 5. After relabelling the experts, which numbers of this lesson change and which stay the same:
#    the validation loss, the heatmaps, the mutual informations, the same-index similarity?
# 6. We used only the first choice for the mutual information. What would change if each
#    character contributed both of its experts?
# 7. The first layer's router sees the character embedding plus one attention layer's output.
#    Why might a deeper layer depend more on context? How would you test it with this notebook?
# 8. Why is the chance that two random top-2 sets of 8 experts meet $1 - \frac{6}{8}\cdot\frac{5}{7}$,
#    and why is it equal to $1 - \binom{6}{2}/\binom{8}{2}$? What is it for top-1, and for top-4?
# 9. A router sends every character of a window to expert $a$ with probability $q$ and to expert
#    $b$ otherwise, independently of the order. What is its expected first-choice repeat rate, and
#    what does that say about comparing a repeat rate with $1/E$?
# 10. Why must the repeat rate not count the pair (last token of one window, first token of the
#    next)? Give a routing where counting it changes the rate.
#
# ## Exercises
#
# In `exercises/ex08_specialisation.py`: `domain_expert_counts` (the table of section 2, with
# `np.add.at`), `mutual_information` (section 3, written as the sum over cells) and
# `consecutive_same_expert_rate` (section 6, both forms, pairs inside each sequence only). Grade
# them with
#
# ```
# python -m minimoe.grade ex08
# ```
#
# To go further (not graded): rerun the notebook with `router="switch"` (top-1) or with more
# training steps, and see whether $I(\text{domain}; \mathcal E \mid \text{character})$ grows.
