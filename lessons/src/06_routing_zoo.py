# %% [markdown]
# # Lesson 06 — The routing zoo: expert choice, hash routing and Soft MoE
#
# Every router so far was **token choice**: each token picks its $k$ experts. That is simple and
# causal, but it leaves the load to chance — some experts are asked for more than they can take,
# so lessons 02 and 03 needed balancing losses, capacities and dropped tokens. Three later designs
# change who decides. In **expert choice** each expert picks its tokens, so the load is perfect by
# construction. In **hash routing** nobody learns anything: a fixed table sends each token id to
# an expert. In **Soft MoE** nothing is picked at all: every expert reads a learned weighted
# average of *all* the tokens. This lesson puts the four side by side on the same data and the
# same budget, in one table, and then shows concretely why two of them cannot be used as they are
# in a model that writes text one token at a time.
#
# **After this lesson you can**
# - write expert-choice routing, hash routing and Soft MoE as equations and in code, and say what
#   each guarantees: balance, drops, compute per token;
# - train the four on the tiny Transformer and compare balance, dropped tokens, validation loss
#   and cost in one table;
# - test any MoE layer for causality by changing a future token, and explain why expert choice and
#   Soft MoE fail that test while top-$k$ passes it;
# - see what a non-causal router does to a language model's validation loss.
#
# **Papers.**
# - Zhou, Lei, Liu, Du, Huang, Zhao, Dai, Chen, Le & Laudon (2022), *Mixture-of-experts with
#   expert choice routing*, NeurIPS 2022 (arXiv 2202.09368): §3.2, eqs. 1–4; capacity factor
#   $c = 2$ by default (§3.4).
# - Roller, Sukhbaatar, Szlam & Weston (2021), *Hash layers for large sparse models*, NeurIPS
#   2021 (arXiv 2106.04426): a fixed hash of the current token "outperforms or is competitive
#   with" learned routing at equal compute in their experiments; §3 describes the balanced
#   assignment built from the token frequencies of the training text.
# - Puigcerver, Riquelme, Mustafa & Houlsby (2023), *From sparse to soft mixtures of experts*,
#   ICLR 2024 (arXiv 2308.00951): §2.1 and Algorithm 1 (dispatch and combine weights), §2.3
#   (normalisation), and their remark that Soft MoE is not causal.
# - The baseline is top-$k$ token choice (Shazeer et al. 2017; lessons 02 and 03).
#
# **Library files used.** `minimoe/moe/routers/expert_choice.py`, `minimoe/moe/routers/hash.py`,
# `minimoe/moe/soft_moe.py`, `minimoe/moe/layer.py` (the three forward paths and the routing
# report), `minimoe/train.py` (`train_in_memory`, `evaluate`).
#
# **Prerequisites.** Lessons 02 and 03 (top-$k$ routing, capacity, the balancing loss) and 04
# (the tiny MoE Transformer).

# %% tags=["parameters"]
import os

FAST = os.environ.get("MINIMOE_FAST") == "1"  # CI runs every lesson with MINIMOE_FAST=1: fewer steps, same code
SEEDS = (0, 1, 2)  # every router is trained from each of these seeds (at least three)
TRAIN_STEPS = 20 if FAST else 400  # steps of each router's run: the same budget for all six
CAUSAL_BATCHES = 1 if FAST else 2  # validation batches for the prefix-only ("causal") evaluation

# %%
# The tiny model's matrices are far too small for BLAS threads to pay off, and on a busy machine
# the threads cost much more than they give; one thread per process (set before NumPy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dataclasses

import matplotlib.pyplot as plt
import numpy as np

import minimoe as mm
from minimoe.data import CharTokenizer, load_corpus, split
from minimoe.models import ModelConfig, model_summary
from minimoe.moe import MoE, MoEConfig, expert_capacity
from minimoe.moe.routers import HashRouter
from minimoe.optim import AdamW
from minimoe.seeds import table, verdict
from minimoe.train import TrainConfig, evaluate, train_in_memory

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.4, 3.6), "axes.grid": True, "grid.alpha": 0.3})
np.set_printoptions(precision=3, suppress=True)
print("fast mode" if FAST else "full mode")

# %% [markdown]
# ## 1. Token choice, the baseline
#
# A token-choice router scores $T$ tokens against $E$ experts, $S = \mathrm{softmax}(X W_r) \in
# \mathbb R^{T \times E}$, and each token — each *row* of $S$ — keeps its $k$ largest entries.
# Every token gets exactly $k$ experts, so the compute per token is fixed. The load is not: expert
# $e$ receives $n_e = \#\{t : e \in \mathrm{TopK}(S_t)\}$ tokens, and nothing bounds $n_e$ except
# the balancing loss. With a capacity $C = \lceil k T c / E \rceil$ (lesson 03) the overflow is
# dropped. Two numbers summarise the load in this lesson: **max/mean**, $\max_e n_e / \bar n$
# (1 is perfect balance; it is also the capacity factor that would drop nothing), and the
# **coefficient of variation** $\mathrm{CV} = \mathrm{std}(n) / \mathrm{mean}(n)$.
#
# The routers below differ only in how the $T \times E$ decision is made. One more property will
# matter at the end: in a decoder, the output at position $t$ may depend only on positions
# $\le t$. Token choice has it for free: token $t$'s row of $S$ depends on token $t$ alone.
#
# ## 2. Expert choice
#
# Zhou et al. turn the matrix around: each *column* — each expert — keeps its $C$ best tokens
# (eqs. 1–2):
#
# $$C = \frac{T\,c}{E}, \qquad G, I = \mathrm{TopK}(S^\top, C), \qquad
# y_t = \sum_{e}\sum_{j:\, I_{e,j} = t} G_{e,j}\, \mathrm{FFN}_e(x_t),$$
#
# where $c$ is the capacity factor, the *average* number of experts per token ($c = 2$ matches
# top-2's compute). Every expert processes exactly $C$ tokens, so the load is perfect and nothing
# overflows — but a token may be taken by several experts, by one, or by **none** (it then passes
# through on the residual connection only). No balancing loss is needed. minimoe's router rounds
# $C$ up, $C = \lceil Tc/E \rceil$. Here it is on random tokens:

# %%
mm.manual_seed(0)
T, D, E = 64, 16, 8
x = mm.randn(T, D)
layer = MoE(MoEConfig(d_model=D, n_experts=E, expert_hidden=32, router="expert_choice", capacity_factor=2.0))
choice = layer.router(x)  # ExpertChoiceRouting: token_index (E, C), gates (E, C)
experts_per_token = np.bincount(choice.token_index.ravel(), minlength=T)  # (T,)
print("token_index shape (E, C):", choice.token_index.shape, "-> C =", choice.token_index.shape[1])
print("tokens per expert:", np.bincount(np.repeat(np.arange(E), choice.token_index.shape[1]), minlength=E))
print("experts per token: mean", experts_per_token.mean(), " histogram (0, 1, 2, ...):",
      np.bincount(experts_per_token))
y = layer(x)
print(f"layer report: load {layer.report.load}, share of tokens no expert took {layer.report.dropped_fraction:.3f}")

# %% [markdown]
# The price is hidden in "each expert keeps its $C$ best tokens *of the batch*": whether token
# $t$ is taken depends on how all the other tokens score, the later ones included. Section 6
# comes back to this.
#
# ## 3. Hash routing
#
# Roller et al. drop the learned router entirely: expert$(t) = h(\text{id}_t)$, a fixed table
# from the vocabulary to the experts, with $k = 1$ and gate 1. There are no router parameters, no
# balancing loss, and the routing of a token never changes during training, so each expert
# becomes the FFN of its own fixed set of token types. How should the table be built? Two ways:
#
# - a **shuffled round-robin** over the vocabulary (`shuffled_round_robin_table`, what
#   `HashRouter` builds when it is given no text): every expert owns the same number of token
#   *types*, $V/E$;
# - the paper's **balanced assignment** (§3, `frequency_balanced_table`): count every token in
#   the training text, then take the tokens from the most frequent down and give each to the
#   expert that carries the least text so far. This balances the *text*, which is what the
#   experts' loads are made of.
#
# Character frequencies are very uneven, so the two differ. The cell counts the training split,
# builds both tables, and measures each expert's share of the whole corpus under each.

# %%
tokenizer = CharTokenizer()
corpus = load_corpus()
train_text, _ = split(corpus)
TRAIN_COUNTS = np.bincount(train_text.ids, minlength=tokenizer.vocab_size)  # (V,) how often each id occurs
HASH_TABLES = {
    "balanced (frequencies)": HashRouter(tokenizer.vocab_size, E, token_counts=TRAIN_COUNTS).table,
    "shuffled round-robin": HashRouter(tokenizer.vocab_size, E).table,
}
corpus_load = {}
for name, hash_table in HASH_TABLES.items():
    corpus_load[name] = np.bincount(hash_table[corpus.ids], minlength=E) / corpus.ids.size  # (E,)
    print(f"{name:24} token types per expert {np.bincount(hash_table, minlength=E)}")
    print(f"{'':24} share of the corpus      {corpus_load[name]}  max/mean = {corpus_load[name].max() * E:.2f}")
frequent = np.argsort(-TRAIN_COUNTS)[:6]
for token in frequent:
    share = np.mean(corpus.ids == token)
    experts = ", ".join(f"{hash_table[token]} ({name.split()[0]})" for name, hash_table in HASH_TABLES.items())
    print(f"  {tokenizer.decode([token])!r:6} is {share:5.1%} of the text and always goes to expert {experts}")

fig, ax = plt.subplots(figsize=(7, 2.8), layout="constrained")
for i, (name, load) in enumerate(corpus_load.items()):
    ax.bar(np.arange(E) + (i - 0.5) * 0.4, load, width=0.4, color=f"C{i + 2}", label=name)
ax.axhline(1 / E, color="k", ls="--", lw=1, label="perfect balance")
ax.set_xlabel("expert")
ax.set_ylabel("share of the corpus")
ax.set_title("Hash routing: load of each expert on the whole corpus")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The balanced table evens the load as far as a fixed table can: its busiest expert is the one
# that holds the space, and a single character's share of the text is a floor that no assignment
# of whole token types can go below (the space alone is about a fifth of the text, so about 1.7
# times an expert's fair share). The round-robin table leaves the frequent characters where chance
# put them. Either way the table cannot adapt: the expert that owns the space carries all the spaces
# for ever. Hash routing is nonetheless *causal* — expert$(t)$ reads token $t$ only — and cheap:
# no router matmul, no sort by score.
#
# ## 4. Soft MoE
#
# Puigcerver et al. replace the discrete choice with two softmaxes over one matrix of logits.
# With $m$ tokens $X \in \mathbb R^{m\times d}$ (one sequence), $n$ experts with $p$ *slots* each,
# and slot parameters $\Phi \in \mathbb R^{d \times np}$ (Algorithm 1):
#
# $$L = X\Phi,\qquad D_{ij} = \frac{e^{L_{ij}}}{\sum_{i'} e^{L_{i'j}}}\ (\text{softmax over tokens}),\qquad
# C_{ij} = \frac{e^{L_{ij}}}{\sum_{j'} e^{L_{ij'}}}\ (\text{softmax over slots}),$$
#
# $$\tilde X = D^\top X, \qquad \tilde Y_s = f_{\text{expert}(s)}(\tilde X_s), \qquad Y = C\,\tilde Y .$$
#
# Each slot is a weighted average of *all* the tokens ($D$'s columns sum to one); each expert
# processes its $p$ slots; each token reads a weighted average of all the slot outputs ($C$'s rows
# sum to one). Nothing is dropped, every expert does the same work, everything is differentiable,
# and the cost is set by the number of slots $np$, not by the number of tokens. The paper
# normalises both $X$ and $\Phi$ before the product (§2.3) with a learned scale; the library does
# the same. The slots per expert are a choice; $p = kT/E$ gives every token, on average, the
# compute of $k$ experts.

# %%
mm.manual_seed(0)
soft_layer = MoE(MoEConfig(d_model=D, n_experts=E, expert_hidden=32, router="soft", slots_per_expert=2))
sequence = mm.randn(1, 12, D)  # (B, m, d): one sequence of 12 tokens
dispatch, combine, _ = soft_layer.soft.weights(sequence)  # (B, m, S) each, S = E * p = 16 slots
print("dispatch D:", dispatch.shape, " column sums (over tokens):", dispatch.numpy()[0].sum(axis=0)[:4], "...")
print("combine  C:", combine.shape, " row sums (over slots):   ", combine.numpy()[0].sum(axis=1)[:4], "...")
print("tokens that weigh at least 5% in slot 0:", np.flatnonzero(dispatch.numpy()[0, :, 0] > 0.05))

# %% [markdown]
# Slot 0 mixes many tokens of the sequence — including the *last* ones. Hold that thought too.
#
# ## 5. Four routers, one budget
#
# Now the comparison the lesson is about. The model is the tiny Transformer of lesson 04, made
# small so that each run takes seconds: two blocks of width 32, each with an MoE layer of $E = 8$
# experts of width 64. Six variants, each trained on the same batches for the same number of
# steps with the library's own training step, and each from three seeds — a few hundredths of a
# nat between two routers is within what a change of seed moves, so only the spread over seeds
# can say whether a gap is real:
#
# | variant | router | experts per token | balancing |
# | --- | --- | --- | --- |
# | top-2 | token choice, softmax, top-2, renormalise (the Hugging Face Mixtral code) | 2 | Switch loss, $\alpha = 0.01$ |
# | Switch top-1 | token choice, top-1 | 1 | Switch loss, $\alpha = 0.01$ |
# | hash | fixed table, balanced by frequency (the paper's) | 1 | none (nothing to learn) |
# | hash, round-robin | fixed table, shuffled round-robin | 1 | none |
# | expert choice | experts pick, $c = 2$ | 2 on average | none (balanced by construction) |
# | Soft MoE | $p = 2T/E = 8$ slots per expert | 2 on average | none (balanced by construction) |
#
# Switch top-1 is there because hash routing is top-1: the two together separate "learned or
# fixed?" from "one expert or two?". All runs are **dropless**, so that every variant computes
# what its router decided. The drops a capacity would cause are then *computed* from the measured
# load: with a capacity factor of 1.25 (lesson 03), $C = \lceil 1.25\,kN/E\rceil$ for $N$ tokens in
# the batch, and each expert would drop $\max(0, n_e - C)$ of its $n_e$ assignments. For expert
# choice the analogue is the share of tokens that no expert took.
#
# `ModelConfig` has no field for Soft MoE's slots, so for that run we build the MoE layers
# ourselves (`MoEConfig(..., slots_per_expert=8)`) and hand the new parameters to the optimiser
# before the first step. The paper's hash table needs the training text's counts, which a config
# does not hold, so that run swaps each layer's router for one built from `TRAIN_COUNTS`.

# %%
TINY = ModelConfig(d_model=32, n_layers=2, n_heads=4, context=32, n_experts=E, top_k=2, expert_hidden=64)
VARIANTS = {
    "top-2": TINY,
    "Switch top-1": dataclasses.replace(TINY, router="switch"),
    "hash": dataclasses.replace(TINY, router="hash", balance_loss=None),
    "hash, round-robin": dataclasses.replace(TINY, router="hash", balance_loss=None),
    "expert choice": dataclasses.replace(TINY, router="expert_choice", capacity_factor=2.0, balance_loss=None),
    "Soft MoE": dataclasses.replace(TINY, router="soft", balance_loss=None),
}
SLOTS_PER_EXPERT = TINY.top_k * TINY.context // TINY.n_experts  # p = kT/E: two experts' compute per token
TRAIN = TrainConfig(steps=TRAIN_STEPS, batch_size=16, lr=1e-2, warmup_steps=min(20, TRAIN_STEPS // 4),
                    eval_every=max(TRAIN_STEPS // 8, 1), eval_batches=8, checkpoint_every=TRAIN_STEPS)
SEED = SEEDS[0]  # the plots show this seed; the tables show all


def soft_moe_layers(run):
    """Rebuilds every MoE layer of the run's model as a Soft MoE with SLOTS_PER_EXPERT slots per
    expert, and gives the optimiser the new parameters (before any step has been taken)."""
    moe = dataclasses.replace(run.model_config.moe_config(), slots_per_expert=SLOTS_PER_EXPERT)
    for block in run.model.blocks:
        block.ffn = MoE(moe)
    tc = run.train_config
    run.optimizer = AdamW(run.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)


def frequency_hash_layers(run):
    """Gives every MoE layer the paper's hash table, balanced by the training text's frequencies."""
    for layer in run.model.moe_layers():
        layer.router = HashRouter(tokenizer.vocab_size, E, token_counts=TRAIN_COUNTS)


SETUP = {"Soft MoE": soft_moe_layers, "hash": frequency_hash_layers}
runs = {}  # (variant, seed) -> run
for name, config in VARIANTS.items():
    for seed in SEEDS:
        runs[name, seed] = train_in_memory(config, dataclasses.replace(TRAIN, seed=seed), SETUP.get(name))
    print(f"{name:18} {len(SEEDS)} x {TRAIN_STEPS} steps in {sum(runs[name, s].seconds for s in SEEDS):5.1f} s, "
          "validation loss " + ", ".join(f"{runs[name, s].records[-1]['val_loss']:.3f}" for s in SEEDS))

# %% [markdown]
# Before the table, the last column needs explaining. The validation loss of a language model is
# computed on whole windows of text: the model reads 32 characters and predicts each next one.
# That is fair when position $t$'s prediction depends only on positions $\le t$. For a router that
# is not causal it is not, so we also compute a **prefix-only** loss: for every $t$, run the model
# on the first $t$ characters alone and score its prediction of character $t+1$ — what the model
# would actually see while generating. For a causal model the two are the same number.

# %%
def prefix_only_loss(model, batches):
    """Mean next-character loss when position t is predicted from the first t characters only
    (T forward passes per batch, one per prefix length)."""
    model.eval()
    losses = []
    with mm.no_grad():
        for x, y, _ in batches:
            for t in range(1, x.shape[1] + 1):
                logits = model(x[:, :t]).numpy()[:, -1].astype(np.float64)  # (B, V): the last position
                top = logits.max(axis=1)
                log_z = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
                losses.append(log_z - logits[np.arange(len(y)), y[:, t - 1]])
    model.train()
    return float(np.mean(losses))


def flops_per_token(config):
    """Forward FLOPs per token from the calculator; Soft MoE adds what it computes besides experts:
    the slot logits, the dispatch D^T X and the combine C Y, 2*d*S each per token and layer (S
    slots), in place of a token-choice router's 2*d*E."""
    flops = model_summary(config).flops_per_token
    if config.router == "soft":
        slots = config.n_experts * SLOTS_PER_EXPERT
        flops += config.n_layers * (3 * 2 * config.d_model * slots - 2 * config.d_model * config.n_experts)
    return flops


def load_statistics(run, last=50):
    """Over the last `last` steps and all MoE layers: max/mean load, CV of the load, and the share
    of assignments a capacity factor of 1.25 would drop (for expert choice: tokens no expert took)."""
    config = run.model_config
    reports = [layer for r in run.records[-last:] if "moe" in r for layer in r["moe"]]
    loads = np.array([layer["load"] for layer in reports])  # (steps * layers, E), rows sum to 1
    n = TRAIN.batch_size * config.context
    if config.router == "expert_choice":
        dropped = np.mean([layer["dropped_fraction"] for layer in reports])
    elif config.router == "soft":
        dropped = 0.0
    else:
        k = config.experts_per_token
        counts = np.rint(loads * k * n)  # (steps * layers, E) assignments per expert
        capacity = expert_capacity(n, config.n_experts, k, 1.25)
        dropped = (np.maximum(counts - capacity, 0).sum(axis=1) / (k * n)).mean()
    max_over_mean = (loads.max(axis=1) * config.n_experts).mean()
    cv = (loads.std(axis=1) / loads.mean(axis=1)).mean()
    return max_over_mean, cv, dropped


per_seed = {}  # (variant, seed) -> the measures of one run
for (name, seed), run in runs.items():
    config = run.model_config
    ms = 1e3 * np.median([run.tokens_per_step / r["tokens_per_s"] for r in run.records if "tokens_per_s" in r])
    balance, cv, dropped = load_statistics(run)
    full = evaluate(run.model, run.val_batches[:CAUSAL_BATCHES])
    prefix = prefix_only_loss(run.model, run.val_batches[:CAUSAL_BATCHES])
    per_seed[name, seed] = (ms, balance, cv, dropped, run.records[-1]["val_loss"], full, prefix)

print(f"mean over {len(SEEDS)} seeds (the tables below give each seed and the spread)")
print(f"{'':18} {'experts':>7} {'kFLOPs':>7} {'ms per':>7} {'max /':>6} {'CV of':>6} {'dropped':>8} "
      f"{'val':>6} | {'same batches:':>13} {'':>7}")
print(f"{'router':18} {'/token':>7} {'/token':>7} {'step':>7} {'mean':>6} {'load':>6} {'cf 1.25':>8} "
      f"{'loss':>6} | {'full windows':>13} {'prefix':>7}")
for name, config in VARIANTS.items():
    per_token = SLOTS_PER_EXPERT * config.n_experts / config.context if config.router == "soft" else config.experts_per_token
    ms, balance, cv, dropped, val, full, prefix = np.mean([per_seed[name, seed] for seed in SEEDS], axis=0)
    print(f"{name:18} {per_token:7.2f} {flops_per_token(config) / 1e3:7.1f} {ms:7.1f} {balance:6.2f} {cv:6.2f} "
          f"{dropped:8.1%} {val:6.3f} | {full:13.3f} {prefix:7.3f}")


def over_seeds(column):
    """{variant: [the measure in `column` of per_seed, one per seed]}."""
    return {name: [per_seed[name, seed][column] for seed in SEEDS] for name in VARIANTS}


VALIDATION, PREFIX, BALANCE = over_seeds(4), over_seeds(6), over_seeds(1)
print("\n" + table(VALIDATION, "validation loss"))
print("\n" + table(BALANCE, "max/mean load"))

fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
for name in VARIANTS:
    run = runs[name, SEED]
    ax.plot(*zip(*[(r["step"], r["val_loss"]) for r in run.records if "val_loss" in r]), "o-", ms=3, label=name)
ax.set_xlabel("training step")
ax.set_ylabel("validation loss (nats per character)")
ax.set_title(f"Same data, same steps: validation loss (seed {SEED})")
ax.set_ylim(top=min(4.0, ax.get_ylim()[1]))
ax.legend()
plt.show()

# %% [markdown]
# The comparisons that are fair — equal expert compute per token — each by the course's rule
# (`minimoe.seeds.verdict`: a gap inside the larger spread over seeds is "no clear difference"),
# and the two hash tables against each other. The last two lines compare each non-causal router's
# prefix-only loss with its own full-window loss.

# %%
for a, b in (("expert choice", "top-2"), ("Soft MoE", "top-2"), ("hash", "Switch top-1"),
             ("hash", "hash, round-robin")):
    print("validation loss:", verdict(VALIDATION[a], VALIDATION[b], a, b))
print("max/mean load:  ", verdict(BALANCE["hash"], BALANCE["hash, round-robin"], "hash", "hash, round-robin"))
FULL = over_seeds(5)
for name in ("expert choice", "Soft MoE"):
    print(f"{name}, prefix-only against full windows:", verdict(PREFIX[name], FULL[name], "prefix", "full"))

# %% [markdown]
# What the table says, column by column:
#
# - **Cost.** Top-2, expert choice and Soft MoE spend about the same expert compute per token;
#   Switch and hash half of it. The FLOPs column adds Soft MoE's dispatch and combine matmuls,
#   which are not small next to experts this narrow. The wall time per step is what this machine
#   measured, and includes everything the FLOP count leaves out — the sort, the gather and
#   scatter, the top-$k$ over tokens.
# - **Balance.** Expert choice and Soft MoE are perfectly balanced by construction (max/mean
#   exactly 1). The learned token-choice routers are held closer to balance by the Switch loss,
#   though not all the way (about 1.4 for top-2, 1.6 for Switch). The hash tables have no loss that
#   could fix their load: the paper's frequency-balanced table sits near the floor of section 3
#   (about 1.7), the round-robin table far above it (about 2.35) — a clear difference.
# - **Drops.** With a capacity factor of 1.25, the imbalance of the token-choice routers turns into
#   dropped assignments: the round-robin hash table would drop about three times as much as any
#   other router, the balanced table about as much as Switch. Expert choice drops nothing, but
#   leaves some tokens without any expert — the same loss of compute, moved to other tokens.
# - **Quality.** At equal cost, the verdicts above: expert choice and top-2 show no clear
#   difference; Soft MoE's full-window loss is clearly lower than top-2's (but see below); the
#   balanced hash is clearly better than Switch top-1 here, which agrees with Roller et al.'s
#   "outperforms or is competitive with"; and the two hash tables show no clear difference in
#   loss — the better balance of the paper's table buys fewer drops, not a better model, in this
#   dropless run.
#
# For the causal routers the two right-hand columns agree to every printed digit. For **Soft
# MoE** they do not: its prefix-only loss is far *higher* than its loss on full windows, clearly
# so on every seed, and higher than every other router's. Its full-window advantage was bought by
# reading characters that a generating model would not yet have. For **expert choice** the gap
# between the two is inside the spread here — no clear difference — although the next section
# shows that it, too, can read the future: the leak exists, it is just too small in this model to
# move the loss.
#
# ## 6. Which routers are causal?
#
# The test is simple: change one token at the **last** position and see whether the output at
# any *earlier* position moves. First on single layers with random weights and random inputs — one
# per router, plus top-2 with a capacity factor of 1.0 (drops).

# %%
def future_leak(layer, x, ids=None):
    """Largest change of the layer's output at positions 0..T-2 when only position T-1 changes."""
    changed = x.numpy().copy()
    changed[:, -1] = mm.randn(*changed[:, -1].shape).numpy()  # (B, d): a new last token
    kwargs, kwargs_changed = {}, {}
    if ids is not None:  # hash routing reads token ids: the last id changes too
        ids_changed = ids.copy()
        ids_changed[:, -1] = (ids[:, -1] + 1) % tokenizer.vocab_size
        kwargs, kwargs_changed = {"token_ids": ids}, {"token_ids": ids_changed}
    with mm.no_grad():
        before = layer(x, **kwargs).numpy()
        after = layer(mm.tensor(changed), **kwargs_changed).numpy()
    return np.abs(after[:, :-1] - before[:, :-1]).max()


ROUNDING = 1e-5  # float32 arithmetic may round a row differently when its batch changes: below this, no leak
mm.manual_seed(1)
LAYER_ROUTERS = {
    "top-2": {"router": "topk"},
    "top-2, cf 1.0": {"router": "topk", "capacity_factor": 1.0},
    "Switch top-1": {"router": "switch"},
    "hash": {"router": "hash", "balance_loss": None},
    "expert choice": {"router": "expert_choice", "capacity_factor": 2.0, "balance_loss": None},
    "Soft MoE": {"router": "soft", "slots_per_expert": 2, "balance_loss": None},
}
x = mm.randn(2, 16, D)  # (B, T, d): two sequences of 16 tokens
ids = np.random.default_rng(0).integers(0, tokenizer.vocab_size, size=(2, 16))
for name, options in LAYER_ROUTERS.items():
    layer = MoE(MoEConfig(d_model=D, n_experts=E, top_k=2, expert_hidden=32, **options)).eval()
    leak = future_leak(layer, x, ids if options["router"] == "hash" else None)
    print(f"{name:14} largest change at an earlier position: {leak:.2e}" + ("   <- not causal" if leak > ROUNDING else ""))

# %% [markdown]
# Top-2, Switch and hash change earlier positions by no more than float32 rounding (around
# $10^{-7}$: the engine may group the rows of a batch differently when one of them changes, which
# moves the last bit, not the routing). Expert choice leaks because the new last token
# competes for the experts' $C$ places and can push an earlier token out of an expert (or let one
# in). Soft MoE leaks because every slot averages the whole sequence, the last token included, and
# every token reads every slot.
#
# The capacity line is the subtle one: top-2 with a capacity factor may leak too. First choices
# fill the experts' buffers before second choices (GShard's rule, lesson 03), so a *later* token's
# first choice can take the place an *earlier* token's second choice needed. Whether it happens
# depends on the batch — whether some expert is over capacity — which is why ST-MoE uses its
# batch-prioritised routing only in the encoder, and why dropless routing, as in DeepSeek-V3
# (lesson 07), is the clean answer for decoders.
#
# Now the trained models: take a validation window, replace its last character, and measure how
# much the predicted next-character logits move at each earlier position.

# %%
x_val = runs["top-2", SEED].val_batches[0][0][:4]  # (4, T) ids: four validation windows
x_changed = x_val.copy()
x_changed[:, -1] = (x_val[:, -1] + 7) % tokenizer.vocab_size  # another character in the last place
fig, ax = plt.subplots(figsize=(7, 3.4), layout="constrained")
for name in VARIANTS:
    run = runs[name, SEED]
    run.model.eval()
    with mm.no_grad():
        change = np.abs(run.model(x_changed).numpy() - run.model(x_val).numpy()).max(axis=(0, 2))  # (T,)
    run.model.train()
    print(f"{name:14} largest change of the logits at positions 0..{len(change) - 2}: {change[:-1].max():.2e}")
    ax.plot(np.arange(len(change) - 1), np.maximum(change[:-1], 1e-12), "o-", ms=3, label=name)
ax.set_yscale("log")
ax.set_xlabel("position (the last one, not shown, was changed)")
ax.set_ylabel("largest |change| of the logits")
ax.set_title(f"Trained models (seed {SEED}): does an earlier prediction see the last character?")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The causal models sit at the bottom of the plot, at float32 rounding (about $10^{-6}$ of a
# logit); expert choice and Soft MoE move predictions everywhere in the window by about one nat. Together with
# the table this is the whole story: a decoder trained with these routers can learn to use the
# future — flaxformer's documentation warns that such a decoder "will learn to cheat" — and its
# full-window validation loss then overstates how well it will generate. Soft MoE was introduced
# for vision, where every patch may see every other; expert choice was trained on decoder language
# models (GLaM-style) and evaluated by fine-tuning, where the leak goes unnoticed. Making them
# causal takes real changes: expert choice over the tokens of *previous* steps only, or Soft MoE
# with slots that mix only the past; neither is a drop-in router.
#
# ## Check your understanding
#
# 1. Expert choice with $T = 64$ tokens, $E = 8$ and $c = 2$: how many tokens does each expert
#    take? What is the largest number of experts a single token can get? The smallest?
# 2. Why does expert choice need no balancing loss? What does it give up in exchange?
# 3. Hash routing has no router gradient at all. Which parameters still learn, and what can an
#    expert specialise in?
# 4. Compute, from character frequencies alone, the capacity factor that hash routing would need
#    on this corpus to drop nothing.
# 5. In Soft MoE, which softmax makes every slot a weighted average of tokens, and which makes every
#    token a weighted average of slots? Why can nothing be dropped?
# 6. Soft MoE with $p$ slots per expert on sequences of $T$ tokens: how many expert evaluations per
#    token? What happens to the cost per token if $T$ doubles and $p$ stays fixed?
# 7. Explain how top-2 with a capacity limit can let a later token change an earlier token's
#    output. Why does the same not happen with top-1 within one sequence — and what can still leak
#    when the capacity is counted over a batch of several sequences flattened into one?
# 8. Why is a lower full-window validation loss for Soft MoE not evidence that it is a better
#    language model?
#
# ## Exercises
#
# In `exercises/ex06_routing_zoo.py`: `expert_choice` (section 2, *Expert choice*), `hash_routing`
# (section 3, *Hash routing*) and `soft_moe_weights` (section 4, *Soft MoE*). Grade them with
#
# ```
# python -m minimoe.grade ex06
# ```
