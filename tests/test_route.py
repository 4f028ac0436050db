"""`python -m minimoe.route`: the experts each token chose, on a minimoe run folder."""
import dataclasses

import numpy as np
import pytest

import minimoe as mm
from minimoe import route
from minimoe.data import CharTokenizer
from minimoe.models import ModelConfig, Transformer
from minimoe.moe import MoE, MoEConfig
from minimoe.sample import load_model
from minimoe.train import PRESETS, train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    model_config, train_config = PRESETS["ci"]
    out = tmp_path_factory.mktemp("route") / "run"
    train(model_config, dataclasses.replace(train_config, steps=6, eval_every=3, checkpoint_every=3),
          out, progress=False, verbose=False, plots=False)
    return out


def test_route_prints_choices_and_writes_the_picture_and_table(run_dir, tmp_path, capsys):
    out = tmp_path / "routing"
    routed = route.main(["--model", str(run_dir), "--out", str(out)])
    printed = capsys.readouterr().out
    assert [r.name for r in routed] == list(route.DEFAULT_TEXTS)
    for r in routed:  # every character of each default text is routed, longer than the context of 32
        assert len(r.tokens) == len(route.DEFAULT_TEXTS[r.name]) > 32
        assert r.experts.shape == r.gates.shape == (2, len(r.tokens), 2)
        assert ((r.experts >= 0) & (r.experts < 4)).all()
        np.testing.assert_allclose(r.gates.sum(axis=-1), 1, rtol=1e-5)  # top-2, renormalised, dropless
        shares = route.expert_share(r, 4)
        np.testing.assert_allclose(shares.sum(axis=1), 1)
    assert "MoE layer 1: share of assignments (%)" in printed and "arithmetic" in printed
    assert (out / route.PICTURE).stat().st_size > 1000
    rows = (out / route.TABLE).read_text().splitlines()
    assert rows[0] == "layer,expert,code,poem,arithmetic" and len(rows) == 1 + 2 * 4


def test_routing_matches_the_model_window_by_window(run_dir):
    model = load_model(run_dir)
    text = "x = 1 + 2\n" * 5  # 50 characters: a window of 32, then one of 18
    routed = route.route(model, route._Tokens(), "t", text)
    ids = CharTokenizer().encode(text)
    with mm.no_grad():
        model(ids[None, 32:])
    np.testing.assert_array_equal(routed.experts[:, 32:], np.stack([r.expert_index[0] for r in model.routing_reports()]))
    assert routed.tokens == list(text)


def test_reported_gates_are_the_routers_and_zero_where_dropped():
    mm.manual_seed(0)
    layer = MoE(MoEConfig(d_model=8, n_experts=4, top_k=2, expert_hidden=16, capacity_factor=0.5))
    x = mm.randn(2, 10, 8)
    routing = layer.router(x.reshape(-1, 8))
    layer(x)
    report = layer.report
    kept = report.expert_index >= 0
    assert (~kept).any() and kept.any()  # capacity 0.5 drops some assignments
    np.testing.assert_array_equal(report.expert_gate[~kept], 0)
    np.testing.assert_allclose(report.expert_gate[kept], routing.gates.data.reshape(2, 10, 2)[kept])


def test_route_explains_what_it_cannot_use(tmp_path, run_dir):
    with pytest.raises(SystemExit, match="neither checkpoint.npz"):
        route.main(["--model", str(tmp_path)])
    with pytest.raises(SystemExit, match="no such file"):
        route.main(["--model", str(run_dir), "--file", str(tmp_path / "missing.txt")])
    with pytest.raises(SystemExit, match="empty"):
        route.main(["--model", str(run_dir), "--text", "", "--out", str(tmp_path / "o")])
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit, match="is a file"):
        route.main(["--model", str(run_dir), "--text", "ab", "--out", str(tmp_path / "afile")])
    dense = Transformer(ModelConfig(d_model=16, n_layers=1, n_heads=2, context=8, dense=True))
    with pytest.raises(ValueError, match="no MoE layers"):
        route.route(dense, route._Tokens(), "t", "abc")


def test_route_reads_a_hugging_face_directory_with_its_tokenizer(tmp_path):
    pytest.importorskip("safetensors", reason="Hugging Face directories need safetensors: pip install safetensors")
    tokenizers = pytest.importorskip("tokenizers", reason="tokenizer.json needs tokenizers: pip install tokenizers")
    from minimoe.hub import load_pretrained, save_pretrained
    mm.manual_seed(0)
    config = ModelConfig(vocab_size=40, d_model=16, n_layers=2, n_heads=2, context=16, n_experts=4, top_k=2,
                         expert_hidden=8, norm="rms", positions="rotary", activation="swiglu", ffn_bias=False,
                         balance_loss=None)
    folder = tmp_path / "hf"
    save_pretrained(Transformer(config), folder)
    with pytest.raises(SystemExit, match="no tokenizer.json"):
        route.main(["--model", str(folder), "--text", "ab"])
    words = {w: i for i, w in enumerate(["[UNK]", "the", "cat", "sat", "on", "a", "mat"])}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(words, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))

    [routed] = route.main(["--model", str(folder), "--text", "the cat sat on a mat", "--out", str(tmp_path / "o")])
    assert routed.tokens == ["the", "cat", "sat", "on", "a", "mat"]
    model = load_pretrained(folder)
    with mm.no_grad():
        model(np.array([[1, 2, 3, 4, 5, 6]]))
    np.testing.assert_array_equal(routed.experts, np.stack([r.expert_index[0] for r in model.routing_reports()]))
