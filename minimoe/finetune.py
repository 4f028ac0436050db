"""Training that starts from given weights: continuing from a checkpoint, and fine-tuning on one domain.

Sparse upcycling continues training from a converted dense checkpoint; fine-tuning continues a
trained model on a small set of text from one domain. Both are `train_in_memory` with a `setup`
that puts the weights (and, for fine-tuning, the data) in place before the first step. Also the two
measures lesson 10 reads off a fine-tuned MoE: routing drift, the share of tokens whose first-choice
expert changed, and the share of the experts that one step updates. Introduced in lesson 10
(scaling with experts, upcycling, fine-tuning).
"""
from __future__ import annotations

import numpy as np

from .backend import to_numpy
from .data import BatchSampler, Corpus, eval_batches
from .models import ModelConfig, Transformer
from .optim import AdamW
from .tensor import no_grad
from .train import Run, TrainConfig, evaluate, train_in_memory


def start_from(state: dict, sampler: BatchSampler | None = None, val_batches: list | None = None,
               frozen: tuple[str, ...] = ()):
    """A `setup` for `train_in_memory`: the run starts from the weights `state` (a state dict of a
    model of the run's config), optionally on other training batches (`sampler`) and another
    validation set; parameters whose name contains one of `frozen` (say ".router.") are left out of
    the optimiser, so they keep their values. The step-0 validation loss is measured again, on the
    weights the run now starts from."""
    def setup(run: Run) -> None:
        run.model.load_state_dict(state)
        run.sampler = sampler or run.sampler
        run.val_batches = val_batches or run.val_batches
        if frozen:
            trained = [p for name, p in run.model.named_parameters() if not any(part in name for part in frozen)]
            tc = run.train_config
            run.optimizer = AdamW(trained, lr=tc.lr, weight_decay=tc.weight_decay)
        run.records[0]["val_loss"] = evaluate(run.model, run.val_batches)

    return setup


def domain_stream(corpus: Corpus, domain: str, n_chars: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, domains): the characters of one domain of `corpus` (a split of the bundled corpus), in
    order, the first `n_chars` of them. Documents are whole and each ends with a blank line, so the
    joined text reads as a run of that domain's documents."""
    if domain not in corpus.domain_names:
        raise ValueError(f"unknown domain {domain!r}; the corpus has {corpus.domain_names}")
    keep = corpus.domains == corpus.domain_names.index(domain)  # (N,)
    return corpus.ids[keep][:n_chars], corpus.domains[keep][:n_chars]


def fine_tune(model_config: ModelConfig, train_config: TrainConfig, state: dict, stream, val_batches: list,
              frozen: tuple[str, ...] = (), after_step=None) -> Run:
    """Trains the weights `state` for `train_config.steps` on random windows of `stream` (ids,
    domains: the fine-tuning set), validating on `val_batches`. Every evaluation also records
    "fit_loss", the loss on fixed batches spread over the fine-tuning set itself: the training
    loss without batch noise or dropout, to set beside the validation loss. `model_config` may
    differ from the one `state` was trained with in what has no weights (expert dropout, say)."""
    ids, domains = stream
    tc = train_config
    fit_batches = eval_batches(ids, domains, tc.batch_size, model_config.context, tc.eval_batches)
    sampler = BatchSampler(ids, domains, tc.batch_size, model_config.context, seed=tc.seed)

    def record_fit_loss(run: Run) -> None:
        if "val_loss" in run.records[-1]:
            run.records[-1]["fit_loss"] = evaluate(run.model, fit_batches)
        if after_step is not None:
            after_step(run)

    def setup(run: Run) -> None:
        start_from(state, sampler, val_batches, frozen)(run)
        run.records[0]["fit_loss"] = evaluate(run.model, fit_batches)

    return train_in_memory(model_config, tc, setup=setup, after_step=record_fit_loss)


def first_choices(model: Transformer, ids) -> np.ndarray:
    """(MoE layers, B, T): the expert each token of `ids` (B, T) ranks first in every MoE layer, in
    evaluation mode and without a graph (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    with no_grad():
        model(ids)
    model.train(was_training)
    return np.stack([to_numpy(report.expert_index)[..., 0] for report in model.routing_reports()])


def routing_drift(before: np.ndarray, after: np.ndarray) -> float:
    """The share of tokens whose first-choice expert differs between two `first_choices` arrays of
    the same tokens (one MoE layer, or several: then the share over every layer's tokens)."""
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape or before.size == 0:
        raise ValueError(f"routing_drift compares the choices of the same tokens: got shapes {before.shape} "
                         f"and {after.shape}")
    return float(np.mean(before != after))


def expert_gradient_share(model: Transformer) -> float:
    """After a backward pass: the share of the routed experts whose weights got a non-zero gradient,
    averaged over the MoE layers. An expert that no token of the batch was sent to gets exactly zero,
    so this is the share of the expert parameters the next optimiser step moves by the gradient."""
    shares = []
    for layer in model.moe_layers():
        grad = layer.experts.w_in.grad  # (E, d, h); None before any backward
        if grad is None:
            raise ValueError("expert_gradient_share reads the gradients of the last backward pass; there was none")
        shares.append(float((to_numpy(grad).reshape(grad.shape[0], -1) != 0).any(axis=1).mean()))
    return float(np.mean(shares))
