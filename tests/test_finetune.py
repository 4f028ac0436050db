"""Training from given weights (minimoe.finetune): a continued run starts where it is told, frozen
weights stay put, fine-tuning reads only its domain and records the loss on its own set, and the
two measures of lesson 10 (routing drift, the share of experts a step updates) on cases counted
by hand."""
import dataclasses

import numpy as np
import pytest

import minimoe as mm
from minimoe.data import eval_batches, load_corpus, split
from minimoe.finetune import (domain_stream, expert_gradient_share, fine_tune, first_choices, routing_drift,
                              start_from)
from minimoe.models import ModelConfig, Transformer
from minimoe.train import TrainConfig, evaluate, train_in_memory

TINY = ModelConfig(d_model=16, n_layers=2, n_heads=2, context=8, n_experts=4, top_k=2, expert_hidden=8)
STEPS = TrainConfig(steps=6, batch_size=4, lr=1e-2, warmup_steps=1, eval_every=3, eval_batches=2, sample_length=0)


@pytest.fixture(scope="module")
def corpus_split():
    return split(load_corpus())


def trained_state(seed=0):
    mm.manual_seed(seed)
    return Transformer(TINY).state_dict()


def test_a_continued_run_starts_from_the_given_weights_and_frozen_weights_stay(corpus_split):
    state = trained_state(seed=7)
    run = train_in_memory(TINY, STEPS, setup=start_from(state, frozen=(".router.",)))
    model = Transformer(TINY)
    model.load_state_dict(state)
    assert run.records[0]["val_loss"] == pytest.approx(evaluate(model, run.val_batches), rel=1e-6)
    after = run.model.state_dict()
    for name, value in state.items():
        if ".router." in name:
            np.testing.assert_array_equal(after[name], value)
        elif name.endswith("experts.w_in"):
            assert not np.allclose(after[name], value)


def test_domain_stream_holds_one_domain_only(corpus_split):
    train, _ = corpus_split
    ids, domains = domain_stream(train, "prose", n_chars=500)
    assert ids.shape == domains.shape == (500,)
    assert np.all(domains == train.domain_names.index("prose"))
    np.testing.assert_array_equal(ids, train.ids[train.domains == train.domain_names.index("prose")][:500])
    with pytest.raises(ValueError, match="unknown domain"):
        domain_stream(train, "poetry")


def test_fine_tuning_trains_on_its_set_and_records_the_loss_there(corpus_split):
    train, val = corpus_split
    stream = domain_stream(train, "arithmetic", n_chars=200)
    val_batches = eval_batches(*domain_stream(val, "arithmetic"), 4, TINY.context, 2)
    tc = dataclasses.replace(STEPS, steps=30, eval_every=10)
    run = fine_tune(TINY, tc, trained_state(), stream, val_batches)
    fit = [r["fit_loss"] for r in run.records if "val_loss" in r]
    assert len(fit) == 4  # steps 0, 10, 20, 30
    assert fit[-1] < fit[0] - 0.3  # 30 steps on 200 characters: the model learns its set
    assert run.val_batches is val_batches


def test_first_choices_and_routing_drift_on_a_hand_case():
    mm.manual_seed(1)
    model = Transformer(TINY).train()
    ids = np.random.default_rng(0).integers(0, 96, (3, TINY.context))
    choices = first_choices(model, ids)
    assert choices.shape == (2, 3, TINY.context) and model.training
    np.testing.assert_array_equal(choices[1], model.routing_reports()[1].expert_index[..., 0])
    before = np.array([[0, 1, 2, 3], [1, 1, 1, 1]])
    after = np.array([[0, 2, 2, 0], [1, 1, 1, 1]])
    assert routing_drift(before, after) == pytest.approx(2 / 8)
    assert routing_drift(before[0], after[0]) == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="same tokens"):
        routing_drift(before, after[:1])


def test_the_gradient_share_counts_the_experts_that_got_tokens():
    config = dataclasses.replace(TINY, n_experts=16, top_k=1, router="switch")
    shares, counted = [], []

    def after_step(run):
        shares.append(expert_gradient_share(run.model))
        counted.append(np.mean([(np.array(layer["load"]) > 0).mean() for layer in run.records[-1]["moe"]]))

    train_in_memory(config, dataclasses.replace(STEPS, batch_size=1, steps=4), after_step=after_step)
    assert shares == pytest.approx(counted)  # 8 tokens over 16 experts: a step moves at most half of them
    assert max(shares) <= 0.5
    with pytest.raises(ValueError, match="backward"):
        expert_gradient_share(Transformer(config))
