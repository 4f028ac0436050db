"""Training end to end on the `ci` preset: the loss falls, seeded runs repeat exactly, resuming
continues bit for bit, the strict CuPy stand-in runs, checkpoints and run folders are guarded,
and the commands answer bad input with clear messages."""
import dataclasses
import json

import numpy as np
import pytest

import minimoe as mm
from minimoe import checkpoint as ckpt
from minimoe import sample, train
from minimoe.models import ModelConfig

CI_MODEL, CI_TRAIN = train.PRESETS["ci"]


def run(out, steps=CI_TRAIN.steps, **options):
    options = {"progress": False, "verbose": False, "plots": False, **options}
    return train.train(CI_MODEL, dataclasses.replace(CI_TRAIN, steps=steps), out, **options)


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    """One full `ci` run, with plots, shared by the tests that only read it."""
    mm.use("numpy")
    return run(tmp_path_factory.mktemp("ci") / "run", plots=True)


@pytest.fixture
def numpy_afterwards():
    yield
    mm.use("numpy")


def test_ci_preset_learns_and_writes_its_run_folder(ci_run):
    (_, start), (_, end) = ci_run["val_losses"][0], ci_run["val_losses"][-1]
    assert start == pytest.approx(np.log(96), abs=0.1)  # untrained: about uniform over 96 characters
    assert end < start - 1.0
    out = train.Path(ci_run["out_dir"])
    for name in train.RUN_FILES:
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["model"] == CI_MODEL.to_dict()
    records = train.read_metrics(out)
    assert [r["step"] for r in records] == list(range(61))
    last = records[-1]
    assert len(last["moe"]) == 2
    assert all(sum(layer["load"]) == pytest.approx(1, abs=1e-4) for layer in last["moe"])
    assert last["moe"][0]["dropped_fraction"] == 0.0 and "balance" in last["moe"][0]["losses"]
    assert last["flops"] == 60 * 8 * 32 * ci_run["summary"].training_flops_per_token
    assert ci_run["sample"].startswith(CI_TRAIN.sample_prompt)


def test_interrupted_then_resumed_run_repeats_the_uninterrupted_one(ci_run, tmp_path):
    out = tmp_path / "run"
    first = run(out, stop_at=30)
    assert first["steps"] == 30 and "sample" not in first
    with open(out / "metrics.jsonl", "a") as f:  # lines written after the checkpoint, then a crash
        f.write(json.dumps({"step": 31, "train_loss": 99.0}) + "\n")
    resumed = run(out, resume=True)
    assert resumed["steps"] == 60
    assert resumed["train_losses"] == ci_run["train_losses"]  # bit for bit, the first half included
    assert resumed["val_losses"] == ci_run["val_losses"]
    assert [r["step"] for r in train.read_metrics(out)] == list(range(61))


def test_resuming_restores_the_random_draws_of_dropout_and_router_noise(tmp_path):
    noisy = dataclasses.replace(CI_MODEL, dropout=0.1, expert_dropout=0.1, router="noisy_topk",
                                balance_loss="importance_load")
    short = dataclasses.replace(CI_TRAIN, steps=8)
    options = {"progress": False, "verbose": False, "plots": False}
    whole = train.train(noisy, short, tmp_path / "whole", **options)
    train.train(noisy, short, tmp_path / "halves", stop_at=4, **options)
    resumed = train.train(None, None, tmp_path / "halves", resume=True, **options)
    assert resumed["train_losses"] == whole["train_losses"]


def test_a_different_seed_gives_a_different_run(ci_run, tmp_path):
    other = train.train(CI_MODEL, dataclasses.replace(CI_TRAIN, steps=3, seed=1), tmp_path / "run",
                        progress=False, verbose=False, plots=False)
    assert other["train_losses"] != ci_run["train_losses"][:3]


def test_a_few_steps_run_under_the_strict_cupy_stand_in(tmp_path, numpy_afterwards):
    result = run(tmp_path / "run", steps=3, backend_name="strict")
    assert len(result["train_losses"]) == 3 and all(np.isfinite(result["train_losses"]))
    assert result["model"].token_embedding.weight.backend == "strict"


def test_dense_twin_trains_from_the_same_code(tmp_path):
    result = train.train(CI_MODEL.dense_twin(), dataclasses.replace(CI_TRAIN, steps=5), tmp_path / "run",
                         progress=False, verbose=False, plots=False)
    assert result["model"].moe_layers() == [] and "moe" not in result["records"][-1]


# ---- the run folder and checkpoints --------------------------------------------------------------

def test_an_existing_run_folder_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--resume.*--force"):
        run(out, steps=1)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        run(out, resume=True)
    run(out, steps=2, force=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "checkpoint.npz").is_file()


def test_resuming_with_another_config_names_the_difference(ci_run):
    other = dataclasses.replace(CI_MODEL, d_model=64)
    with pytest.raises(ValueError, match="d_model: 32 in the checkpoint, 64 here"):
        train.train(other, None, ci_run["out_dir"], resume=True, progress=False, verbose=False)


def test_checkpoint_round_trip_and_bad_files(ci_run, tmp_path):
    good = train.Path(ci_run["out_dir"]) / "checkpoint.npz"
    loaded = ckpt.load_checkpoint(good)
    assert loaded.step == 60 and loaded.config["model"] == CI_MODEL.to_dict()
    state = ci_run["model"].state_dict()
    assert set(loaded.model_state) == set(state)
    assert all((loaded.model_state[k] == v).all() for k, v in state.items())
    assert "sampler" in loaded.state and "host" in loaded.state and "step_count" in loaded.optimizer_state

    data = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.npz").write_bytes(b"not a checkpoint at all")
    for name in ("truncated.npz", "garbage.npz"):
        with pytest.raises(ValueError, match="corrupt or truncated"):
            ckpt.load_checkpoint(tmp_path / name)
    np.savez(tmp_path / "partial.npz", step=np.asarray(3))
    with pytest.raises(ValueError, match=r"lacks \['config', 'state', 'format'\]"):
        ckpt.load_checkpoint(tmp_path / "partial.npz")
    with pytest.raises(ValueError, match="another model config"):
        ckpt.check_config(loaded, dataclasses.replace(CI_MODEL, n_experts=8).to_dict())


def test_an_interrupted_save_keeps_the_previous_checkpoint(ci_run, tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.npz"
    loaded = ckpt.load_checkpoint(train.Path(ci_run["out_dir"]) / "checkpoint.npz")
    ckpt.save_checkpoint(path, loaded)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, dataclasses.replace(loaded, step=99))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]


# ---- the commands ---------------------------------------------------------------------------------

def test_train_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--preset", "--backend", "--dense", "--steps", "--seed", "--out", "--resume", "--force"):
        assert option in out


@pytest.mark.parametrize("argv, message", [
    (["--preset", "huge"], "invalid choice: 'huge' (choose from 'ci', 'gpu', 'laptop')"),
    (["--backend", "tpu"], "invalid choice: 'tpu'"),
    (["--steps", "-5"], "--steps: must be at least 1, got -5"),
    (["--resume", "--out", "x", "--dense"], "drop --dense"),
])
def test_train_refuses_bad_input_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_sample_command_continues_a_prompt_and_refuses_foreign_characters(ci_run, capsys):
    text = sample.main(["--run", ci_run["out_dir"], "--prompt", "x = ", "--n", "20", "--seed", "1"])
    assert text.startswith("x = ") and len(text) == 24
    with pytest.raises(SystemExit):
        sample.main(["--run", ci_run["out_dir"], "--prompt", "naïve"])
    assert "outside the vocabulary: 'ï' at position 2" in capsys.readouterr().err


def test_model_config_and_presets_are_consistent():
    for name, (model_config, train_config) in train.PRESETS.items():
        assert isinstance(model_config, ModelConfig) and not model_config.dense, name
        assert train.TrainConfig.from_dict(train_config.to_dict()) == train_config


def test_evaluate_leaves_the_model_in_its_mode():
    from minimoe.data import eval_batches, load_corpus
    from minimoe.models import ModelConfig, Transformer
    from minimoe.train import evaluate

    model = Transformer(ModelConfig(d_model=16, n_layers=1, n_heads=2, context=8, n_experts=2, top_k=1, expert_hidden=8))
    corpus = load_corpus()
    batches = eval_batches(corpus.ids[:2000], corpus.domains[:2000], 2, 8, 1)
    model.eval()
    evaluate(model, batches)
    assert not model.training
    model.train()
    evaluate(model, batches)
    assert model.training


def test_train_in_memory_runs_the_steps_and_calls_the_hooks():
    from minimoe.train import PRESETS, train_in_memory

    model_config, train_config = PRESETS["ci"]
    seen = []
    run = train_in_memory(model_config, dataclasses.replace(train_config, steps=3), setup=lambda r: seen.append("setup"),
                          after_step=lambda r: seen.append(r.step))
    assert seen == ["setup", 1, 2, 3]
    assert [r["step"] for r in run.records][-3:] == [1, 2, 3]
    assert run.seconds > 0


def test_clipping_and_warm_up_can_be_switched_off():
    from minimoe.train import PRESETS, TrainConfig, train_in_memory

    model_config, train_config = PRESETS["ci"]
    short = dataclasses.replace(train_config, steps=4, warmup_steps=0, eval_every=4)
    runs = {clip: train_in_memory(model_config, dataclasses.replace(short, grad_clip=clip)) for clip in (None, 1e-3)}
    unclipped, clipped = ([r for r in runs[clip].records if "train_loss" in r] for clip in (None, 1e-3))
    assert unclipped[0]["lr"] == short.lr  # no warm-up: the peak rate at the first step
    assert unclipped[0]["grad_norm"] == clipped[0]["grad_norm"] > 1e-3  # the same first step, the norm logged
    assert unclipped[-1]["train_loss"] != clipped[-1]["train_loss"]  # clipping at 1e-3 changed the updates
    assert TrainConfig.from_dict({**short.to_dict(), "grad_clip": None}).grad_clip is None  # JSON null
