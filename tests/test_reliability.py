"""A trainer that never loses work, checkpoints that are checked before they are trusted, an engine
that refuses nonsense, and sampling options that are checked: each probe a hostile user would try."""
import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minimoe as mm
from minimoe import checkpoint as ckpt
from minimoe import sample, train
from minimoe.models import Transformer
from minimoe.moe import MoE, MoEConfig
from minimoe.moe.losses import z_loss
from minimoe.optim import warmup_cosine

REPO = Path(__file__).resolve().parents[1]
CI_MODEL, CI_TRAIN = train.PRESETS["ci"]
QUIET = {"progress": False, "verbose": False, "plots": False}


def run(out, model=CI_MODEL, **train_options):
    options = {key: train_options.pop(key) for key in ("resume", "force", "stop_at") if key in train_options}
    return train.train(model, dataclasses.replace(CI_TRAIN, **train_options), out, **options, **QUIET)


def folder_bytes(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted `ci` run."""
    mm.use("numpy")
    return run(tmp_path_factory.mktemp("reference") / "run")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A `ci` run stopped after 6 steps: a good checkpoint to spoil."""
    out = tmp_path_factory.mktemp("saved") / "run"
    run(out, steps=10, stop_at=6)
    return out


# ---- a run that diverges stops, and its last good checkpoint survives ------------------------

def test_a_diverging_run_stops_naming_the_step_and_keeps_a_finite_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.warns(RuntimeWarning), pytest.raises(train.TrainingDiverged) as stopped:
        run(out, model=CI_MODEL.dense_twin(), lr=1e3, warmup_steps=0, checkpoint_every=2)
    message = str(stopped.value)
    step = int(message.split("diverged at step ")[1].split()[0])
    assert "first non-finite value:" in message and "lower learning rate" in message
    assert "checkpoint.npz (the last good one) is as it was" in message
    saved = ckpt.load_checkpoint(out / "checkpoint.npz")  # loads: every array finite
    assert 0 < saved.step < step
    assert all(np.isfinite(a).all() for a in saved.model_state.values())
    assert not any(p.name.endswith(".partial") for p in out.iterdir())


def test_divergence_names_the_first_non_finite_parameter():
    def spoil(run):
        run.model.blocks[1].ffn_norm.weight.data[0] = np.nan

    short = dataclasses.replace(CI_TRAIN, steps=2)
    with pytest.raises(train.TrainingDiverged, match=r"step 1 \(in the forward pass: router logits contain NaN"
                                                     r".*first non-finite value: parameter blocks\.1\.ffn_norm\.weight"):
        train.train_in_memory(CI_MODEL, short, setup=spoil)  # the MoE router stops at NaN logits
    with pytest.raises(train.TrainingDiverged, match=r"step 1 \(train loss nan.*parameter blocks\.1\.ffn_norm\.weight"):
        train.train_in_memory(CI_MODEL.dense_twin(), short, setup=spoil)  # the dense twin reaches the loss


def test_a_non_finite_checkpoint_is_never_written(saved, tmp_path):
    path = tmp_path / "checkpoint.npz"
    shutil.copy(saved / "checkpoint.npz", path)
    before = path.read_bytes()
    good = ckpt.load_checkpoint(path)
    bad = dataclasses.replace(good, model_state={**good.model_state, "head.weight": good.model_state["head.weight"] * np.inf})
    with pytest.raises(ckpt.NonFiniteError, match="model/head.weight hold NaN or infinite values"):
        ckpt.save_checkpoint(path, bad)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]


# ---- a signal finishes the step, saves, and the run resumes bit for bit ----------------------------

@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_run_and_resume_repeats_the_uninterrupted_one(sent, reference, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-m", "minimoe.train", "--preset", "ci", "--out", str(out),
                                "--no-progress"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:  # wait for step 3 to be logged
        lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
        if len(lines) > 3:
            break
        time.sleep(0.02)
    process.send_signal(sent)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    stopped_at = int(err.split("after step ")[1].split()[0])
    assert 3 <= stopped_at < 60 and "Traceback" not in err
    command = f"python -m minimoe.train --out {out} --resume"
    assert command in err and f"stopped by {sent.name}" in err
    assert ckpt.load_checkpoint(out / "checkpoint.npz").step == stopped_at
    resumed = train.main([*command.split()[3:], "--no-progress"])
    assert resumed["train_losses"] == reference["train_losses"]  # bit for bit
    assert resumed["val_losses"] == reference["val_losses"]


# ---- options are checked before any file is touched -----------------------------------------------

def test_force_with_a_bad_option_leaves_the_old_run_intact(saved, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(saved, out)
    before = folder_bytes(out)
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--preset", "ci", "--out", str(out), "--force", "--seed", "-1"])
    assert exit_info.value.code == 2
    assert "TrainConfig.seed must be a whole number between 0 and 4294967295, got -1" in capsys.readouterr().err
    for bad in (dict(lr=float("nan")), dict(grad_clip=0.0), dict(sample_prompt="naïve")):
        with pytest.raises(ValueError):
            run(out, force=True, **bad)
    with pytest.raises(ValueError, match="context 10000000 needs at least"):  # found when the data is cut
        train.train(dataclasses.replace(CI_MODEL, context=10**7), CI_TRAIN, out, force=True, **QUIET)
    with pytest.raises(TypeError, match="expected a TrainConfig"):
        train.train(CI_MODEL, CI_TRAIN.to_dict(), out, force=True, **QUIET)
    assert folder_bytes(out) == before


@pytest.mark.parametrize("field, value, message", [
    ("lr", float("nan"), r"TrainConfig\.lr must be a finite number in \(0, inf\), got nan"),
    ("lr", 0.0, r"TrainConfig\.lr must be a finite number in \(0, inf\)"),
    ("lr", "0.01", r"TrainConfig\.lr must be a finite number"),
    ("grad_clip", 0, r"TrainConfig\.grad_clip must be a finite number in \(0, inf\)"),
    ("weight_decay", -0.1, r"TrainConfig\.weight_decay must be a finite number in \[0, inf\)"),
    ("seed", -1, r"TrainConfig\.seed must be a whole number between 0 and"),
    ("seed", 1.5, r"TrainConfig\.seed must be a whole number"),
    ("steps", 0, r"TrainConfig\.steps must be a whole number of at least 1, got 0"),
    ("steps", "60", r"TrainConfig\.steps must be a whole number of at least 1, got '60'"),
    ("warmup_steps", -1, r"TrainConfig\.warmup_steps must be a whole number of at least 0"),
    ("temperature", float("nan"), r"TrainConfig\.temperature must be a finite number in \[0, inf\)"),
    ("temperature", -1.0, r"TrainConfig\.temperature must be a finite number in \[0, inf\)"),
    ("sample_length", 10**9, r"TrainConfig\.sample_length must be a whole number between 0 and 100000"),
    ("sample_prompt", "", r"TrainConfig\.sample_prompt must be a non-empty str"),
    ("sample_prompt", "naïve", r"TrainConfig\.sample_prompt: 1 character\(s\) outside the vocabulary: 'ï'"),
    ("min_lr_ratio", 1.5, r"TrainConfig\.min_lr_ratio must be a finite number in \[0, 1\]"),
])
def test_every_train_option_is_checked(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CI_TRAIN, **{field: value})
    with pytest.raises(ValueError, match=message):  # from JSON too (a config.json, a checkpoint)
        train.TrainConfig.from_dict({**CI_TRAIN.to_dict(), field: value})


def test_numpy_numbers_in_a_config_become_json_numbers():
    config = dataclasses.replace(CI_TRAIN, steps=np.int64(5), lr=np.float32(0.5))
    assert type(config.steps) is int and type(config.lr) is float
    json.dumps(config.to_dict())


@pytest.mark.parametrize("options, message", [
    (dict(n_experts="8"), r"MoEConfig\.n_experts must be a whole number of at least 1, got '8'"),
    (dict(expert_hidden=2.5), r"MoEConfig\.expert_hidden must be a whole number of at least 1, got 2\.5"),
    (dict(top_k=1.5), r"MoEConfig\.top_k must be a whole number, got 1\.5"),
    (dict(n_shared_experts=-1), r"MoEConfig\.n_shared_experts must be a whole number of at least 0"),
    (dict(z_loss_coef=float("inf")), r"MoEConfig\.z_loss_coef must be a finite number in \[0, inf\)"),
    (dict(router_jitter=1.0), r"MoEConfig\.router_jitter must be a finite number in \[0, 1\)"),
    (dict(capacity_factor=float("nan")), r"capacity_factor must be > 0, got nan"),
    (dict(d_model="32"), r"ModelConfig\.d_model must be a whole number of at least 1, got '32'"),
    (dict(n_layers=2.0), r"ModelConfig\.n_layers must be a whole number of at least 1, got 2\.0"),
    (dict(dropout=float("nan")), r"ModelConfig\.dropout must be a finite number in \[0, 1\)"),
    (dict(dense="yes"), r"ModelConfig\.dense must be True or False, got 'yes'"),
    (dict(ffn_hidden=0), r"ModelConfig\.ffn_hidden must be a whole number of at least 1"),
])
def test_model_and_moe_sizes_must_be_whole_numbers_in_range(options, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CI_MODEL, **options)
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CI_MODEL.dense_twin(), **options)  # the dense twin is checked too


def test_file_system_errors_become_one_clear_line(saved, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--preset", "ci", "--out", str(blocker / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert f"cannot make the run folder {blocker / 'run'}: {blocker} is a file" in err

    def disk_full(path, checkpoint):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(train, "save_checkpoint", disk_full)
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--preset", "ci", "--steps", "2", "--out", str(tmp_path / "full"), "--no-progress"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1
    assert f"error: No space left on device ({tmp_path / 'full' / 'checkpoint.npz'})" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs file permissions that bind")
def test_a_folder_without_write_permission_is_refused_before_anything_runs(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SystemExit):
            train.main(["--preset", "ci", "--out", str(locked / "run")])
    finally:
        locked.chmod(0o700)
    assert f"no permission to write in {locked}" in capsys.readouterr().err


# ---- resuming: more steps, stale files, torn metrics ----------------------------------------------

def test_resume_may_raise_the_step_count_and_logs_the_learning_rate_jump(tmp_path, capsys):
    out = tmp_path / "run"
    run(out, steps=20)
    with pytest.raises(ValueError, match="can raise the run's step count, not lower it: it is 20, asked for 10"):
        train.train(None, None, out, resume=True, steps=10, **QUIET)
    extended = train.main(["--out", str(out), "--resume", "--steps", "30", "--no-progress"])
    assert extended["steps"] == 30 and "sample" in extended
    assert "step count raised from 20 to 30" in capsys.readouterr().out
    records = train.read_metrics(out)
    assert [r["step"] for r in records] == list(range(31))
    change = records[21]["schedule_change"]
    lr = dict(base_lr=CI_TRAIN.lr, warmup_steps=CI_TRAIN.warmup_steps, min_lr_ratio=CI_TRAIN.min_lr_ratio)
    assert change == {"steps_before": 20, "steps_after": 30, "lr_before": warmup_cosine(20, total_steps=20, **lr),
                      "lr_after": warmup_cosine(20, total_steps=30, **lr)}
    assert change["lr_after"] > change["lr_before"] and records[21]["lr"] == change["lr_after"]
    assert ckpt.load_checkpoint(out / "checkpoint.npz").config["train"]["steps"] == 30
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 30
    with pytest.raises(ValueError, match="steps= raises the step count of a resumed run"):
        train.train(CI_MODEL, CI_TRAIN, tmp_path / "new", steps=5, **QUIET)


def test_a_stale_partial_file_is_removed_on_the_next_start(saved, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(saved, out)
    (out / "checkpoint.npz.partial").write_bytes(b"half a checkpoint")
    train.train(None, None, out, resume=True, stop_at=7, progress=False, plots=False)
    assert not (out / "checkpoint.npz.partial").exists()
    assert "removed checkpoint.npz.partial, left by a run that stopped while writing" in capsys.readouterr().out


def test_a_torn_last_metrics_line_is_skipped_with_a_warning_naming_the_file(saved, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(saved, out)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "train_lo')  # the crash came mid-line
    with pytest.warns(UserWarning, match=rf"{out / 'metrics.jsonl'}: skipped the torn last line 8"):
        records = train.read_metrics(out)
    assert [r["step"] for r in records] == list(range(7))
    with pytest.warns(UserWarning, match="torn last line"):
        resumed = train.train(None, None, out, resume=True, **QUIET)
    assert [r["step"] for r in train.read_metrics(out)] == list(range(11)) and resumed["steps"] == 10
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(lines[:3] + ["not json"] + lines[3:]) + "\n")
    with pytest.raises(ValueError, match=rf"{out / 'metrics.jsonl'}, line 4, is not a metric record"):
        train.read_metrics(out)


# ---- a checkpoint is checked whole before anything is trusted -----------------------------------

def spoiled(saved: Path, tmp_path: Path, change) -> Path:
    """A copy of the saved run whose checkpoint's arrays went through `change(arrays)`."""
    out = tmp_path / "run"
    shutil.copytree(saved, out)
    with np.load(out / "checkpoint.npz") as archive:
        arrays = {name: archive[name] for name in archive.files}
    change(arrays)
    with open(out / "checkpoint.npz", "wb") as f:
        np.savez(f, **arrays)
    return out


def set_json(key, edit):
    def change(arrays):
        value = json.loads(str(arrays[key]))
        value = edit(value)
        arrays[key] = np.asarray(json.dumps(value))
    return change


def drop(*names):
    def change(arrays):
        for name in [n for n in arrays if n in names or any(n.startswith(p) for p in names if p.endswith("/"))]:
            del arrays[name]
    return change


def assign(name, value):
    def change(arrays):
        arrays[name] = value(arrays)
    return change


def without(section):
    def edit(config):
        del config[section]
        return config
    return edit


def with_field(section, key, value):
    def edit(config):
        config[section][key] = value
        return config
    return edit


def without_state(name):
    def edit(state):
        del state[name]
        return state
    return edit


SPOILED = [
    pytest.param(drop("step"), r"lacks \['step'\]", id="no-step"),
    pytest.param(drop("config"), r"lacks \['config'\]", id="no-config"),
    pytest.param(drop("state"), r"lacks \['state'\]", id="no-state"),
    pytest.param(drop("format"), r"lacks \['format'\]", id="no-format"),
    pytest.param(drop("model/"), r"lacks \['model/\* \(the parameters\)'\]", id="no-parameters"),
    pytest.param(drop("model/head.weight"), r"lacks model/head\.weight", id="no-head"),
    pytest.param(drop("optim/"), r"lacks optim/m\.0", id="no-optimiser"),
    pytest.param(drop("optim/v.3"), r"lacks optim/v\.3", id="no-moment"),
    pytest.param(set_json("config", without("train")), r"its config lacks the 'train' section", id="no-train"),
    pytest.param(set_json("config", lambda c: [c]), r"entry 'config' must be a JSON object, got list", id="config-list"),
    pytest.param(set_json("config", with_field("model", "d_model", "32")),
                 r"its model config is not valid \(ModelConfig\.d_model must be a whole number", id="config-type"),
    pytest.param(set_json("config", with_field("train", "lr", -1)), r"its train config is not valid", id="config-lr"),
    pytest.param(set_json("config", with_field("model", "colour", "red")), r"unknown ModelConfig field\(s\) \['colour'\]",
                 id="config-unknown"),
    pytest.param(set_json("state", without_state("sampler")), r"the sampler random state is missing", id="no-sampler"),
    pytest.param(set_json("state", without_state("host")), r"the host random state is missing", id="no-host-rng"),
    pytest.param(assign("step", lambda a: np.asarray(11)), r"step 11 is outside 0\.\.10", id="step-too-far"),
    pytest.param(assign("step", lambda a: np.asarray(-1)), r"step -1 is negative", id="step-negative"),
    pytest.param(assign("step", lambda a: np.asarray(2.5)), r"entry 'step' must be one integer", id="step-float"),
    pytest.param(assign("optim/step_count", lambda a: np.asarray(5)), r"step count .* is 5, not the checkpoint's step 6",
                 id="step-count"),
    pytest.param(assign("model/head.weight", lambda a: a["model/head.weight"][:3]),
                 r"model/head\.weight has shape \(3, 96\), expected \(32, 96\)", id="shape"),
    pytest.param(assign("optim/m.0", lambda a: a["optim/m.0"][:1]), r"optim/m\.0 has shape", id="moment-shape"),
    pytest.param(assign("model/final_norm.weight", lambda a: a["model/final_norm.weight"] * np.nan),
                 r"model/final_norm\.weight hold NaN or infinite values", id="nan-weight"),
    pytest.param(assign("model/final_norm.weight", lambda a: a["model/final_norm.weight"].astype(str)),
                 r"model/final_norm\.weight are not numeric arrays", id="text-weight"),
    pytest.param(assign("format", lambda a: np.asarray(2)), r"has format 2; this minimoe reads format 1", id="format"),
]


@pytest.mark.parametrize("change, message", SPOILED)
def test_a_spoiled_checkpoint_is_refused_by_name_and_changes_nothing(change, message, saved, tmp_path):
    out = spoiled(saved, tmp_path, change)
    before = folder_bytes(out)
    with pytest.raises(ValueError, match=message) as refused:
        train.train(None, None, out, resume=True, **QUIET)
    assert str(out / "checkpoint.npz") in str(refused.value)
    assert folder_bytes(out) == before
    if "optim" not in message:  # sampling needs no optimiser state; the rest it refuses too
        with pytest.raises(SystemExit):
            sample.main(["--run", str(out), "--n", "1"])


def test_random_bytes_and_python_objects_never_suggest_allow_pickle(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "random.npz").write_bytes(rng.bytes(5000))
    (tmp_path / "starts-like-a-p.npz").write_bytes(b"\x80\x04" + rng.bytes(100))  # what a pickle starts with
    np.savez(tmp_path / "objects.npz", step=np.asarray([{"a": 1}], dtype=object))
    for name in ("random.npz", "starts-like-a-p.npz", "objects.npz"):
        with pytest.raises(ValueError) as refused:
            ckpt.load_checkpoint(tmp_path / name)
        assert "pickle" not in str(refused.value) and str(tmp_path / name) in str(refused.value)
    with pytest.raises(ValueError, match="holds an entry of Python objects"):
        ckpt.load_checkpoint(tmp_path / "objects.npz")


# ---- the engine refuses nonsense ------------------------------------------------------------------------

def test_a_float_constant_promotes_an_integer_tensor_as_numpy_does(backend_name):
    ints, host = mm.tensor([1, 2, 3]), np.array([1, 2, 3])
    for ours, numpys in ((ints * 0.5, host * 0.5), (0.5 * ints, 0.5 * host), (ints + 0.25, host + 0.25),
                         (ints - np.float32(0.5), host - np.float32(0.5))):
        assert ours.dtype == numpys.dtype
        np.testing.assert_array_equal(ours.numpy(), numpys)
    assert (ints * 2).dtype == ints.dtype  # an int constant keeps the integer dtype


def test_an_integer_tensor_cannot_require_grad(backend_name):
    with pytest.raises(TypeError, match="only a float tensor can require grad; this one is int64"):
        mm.tensor([1, 2], requires_grad=True)
    ints = mm.tensor([1, 2])
    with pytest.raises(TypeError, match="only a float tensor can require grad"):
        ints.requires_grad = True
    x = mm.tensor([1.5, 2.5], requires_grad=True)
    rounded = x.astype("int64")  # the graph stops at an integer output
    assert not rounded.requires_grad and rounded.is_leaf


def test_a_float64_gradient_into_a_float32_leaf_keeps_the_leafs_dtype():
    x = mm.tensor([1.0, 2.0, 3.0], requires_grad=True)  # float32
    (x * np.array([1.0, 2.0, 3.0])).sum().backward()  # a float64 array beside it
    (x * np.array([1.0, 1.0, 1.0])).sum().backward()  # accumulated
    assert x.dtype == np.float32 and x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [2.0, 3.0, 4.0])


@pytest.mark.parametrize("data", [np.array([1, "a"], dtype=object), np.array(["a", "b"]), ["a", "b"]])
def test_object_and_string_arrays_are_refused(data):
    with pytest.raises(TypeError, match="a tensor holds numbers"):
        mm.tensor(data)


def test_float_token_ids_are_refused_not_truncated():
    model = Transformer(dataclasses.replace(CI_MODEL, n_layers=1))
    with pytest.raises(TypeError, match="token ids must be integers, got float64"):
        model(np.array([[1.7, 2.2]]))
    with pytest.raises(TypeError, match="Embedding takes integer ids, got float32"):
        model.token_embedding(mm.tensor([1.7]))
    with pytest.raises(ValueError, match=r"attention takes a \(batch, time, d_model\) tensor with at least one position"):
        model(np.zeros((1, 0), dtype=np.int64))


def test_use_none_is_refused_and_changes_nothing():
    for name in (None, 3, ["numpy"]):
        with pytest.raises(ValueError, match="unknown backend"):
            mm.use(name)
    assert mm.backend.current() == "numpy"
    assert mm.tensor([1.0]).backend == "numpy"
    with pytest.raises(TypeError, match="to\\(\\) takes a backend name"):
        mm.nn.Linear(2, 2).to(None)


@pytest.mark.parametrize("make, kind, message", [
    (lambda: mm.nn.Linear("3", 2), ValueError, "Linear d_in must be a whole number of at least 1, got '3'"),
    (lambda: mm.nn.Linear(0, 3), ValueError, "Linear d_in must be a whole number of at least 1, got 0"),
    (lambda: mm.nn.Linear(3, 2.5), ValueError, "Linear d_out must be a whole number of at least 1, got 2.5"),
    (lambda: mm.nn.Linear(3, 2)([1.0, 2.0, 3.0]), TypeError, "Linear takes a Tensor, got list"),
    (lambda: mm.nn.Linear(3, 2)(np.ones(3)), TypeError, "Linear takes a Tensor, got ndarray"),
    (lambda: mm.nn.Linear(1, 2)(mm.tensor(1.0)), ValueError, "Linear takes a tensor with a feature axis, got a 0-d"),
    (lambda: mm.nn.Embedding(0, 4), ValueError, r"Embedding n \(rows\) must be a whole number"),
    (lambda: mm.nn.LayerNorm(4, eps=0), ValueError, "LayerNorm eps must be a finite number > 0"),
    (lambda: mm.nn.Dropout(1.5), ValueError, r"Dropout p must be a number in \[0, 1\), got 1.5"),
    (lambda: MoE(MoEConfig(d_model=4, n_experts=2))(np.ones((3, 4))), TypeError, "MoE takes a Tensor x, got ndarray"),
    (lambda: MoE(MoEConfig(d_model=4, n_experts=2, router="hash", vocab_size=10))(
        mm.tensor(np.ones((1, 3, 4))), token_ids=np.array([[1, 2, 10]])),
     ValueError, r"token_ids must lie in \[0, 10\) \(the hash table has vocab_size=10 rows\), got ids from 1 to 10"),
    (lambda: MoE(MoEConfig(d_model=4, n_experts=2, router="hash", vocab_size=10))(
        mm.tensor(np.ones((1, 3, 4))), token_ids=np.array([[1, 2]])),
     ValueError, r"token_ids has shape \(1, 2\); x needs one id per token, shape \(1, 3\)"),
])
def test_layers_name_the_bad_argument(make, kind, message):
    with pytest.raises(kind, match=message):
        make()


@pytest.mark.parametrize("scale", [10.0, 100.0, 1e4, 1e8])
def test_z_loss_stays_finite_and_exact_in_float32_for_large_logits(scale):
    """exp(89) already overflows float32: the log-sum-exp must subtract the max first."""
    logits = np.array([[1.0, 0.5, -1.0], [0.0, 2.0, 1.0]]) * scale  # (T=2, E=3)
    x = mm.tensor(logits, dtype=np.float32, requires_grad=True)
    loss = z_loss(x)
    loss.backward()
    shifted = logits - logits.max(axis=-1, keepdims=True)
    lse = logits.max(axis=-1) + np.log(np.exp(shifted).sum(axis=-1))  # float64 reference
    assert loss.item() == pytest.approx(np.mean(lse**2), rel=1e-6)
    softmax = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(x.grad, 2 * lse[:, None] * softmax / 2, rtol=1e-5, atol=1e-6 * scale)
    assert np.isfinite(x.grad).all()


# ---- sampling checks its options and streams -----------------------------------------------------

@pytest.mark.parametrize("options, message", [
    (["--temperature", "nan"], "--temperature must be a finite number >= 0"),
    (["--temperature", "-1"], "--temperature must be a finite number >= 0"),
    (["--seed", "-1"], "--seed must be between 0 and 4294967295, got -1"),
    (["--n", "1000000000"], "--n must be between 0 and 100,000 characters"),
    (["--n", "-3"], "--n must be between 0 and 100,000 characters"),
])
def test_sample_checks_its_options(options, message, saved, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--run", str(saved), *options])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_sample_prints_each_character_as_it_is_drawn(saved):
    class Recorder:
        def __init__(self):
            self.writes = []

        def write(self, text):
            self.writes.append(text)

        def flush(self):
            pass

    out = Recorder()
    text = sample.main(["--run", str(saved), "--prompt", "def ", "--n", "12", "--seed", "3"], out=out)
    assert out.writes[0] == "def " and len(out.writes) == 1 + 12 + 1 and out.writes[-1] == "\n"
    assert "".join(out.writes) == text + "\n"
    model = sample.load_model(saved)
    from minimoe.data import CharTokenizer
    from minimoe.models import generate

    tokenizer = CharTokenizer()
    assert text == tokenizer.decode(generate(model, tokenizer.encode("def "), 12, 0.8, 3))  # the same draws
