"""Modules (naming, checkpoints, modes, devices), the layers' values, and the optimisers' steps
against hand-computed numbers; then an MLP that has to learn a task."""
import math
import time

import numpy as np
import pytest

import minimoe as mm
import minimoe.functional as F
from minimoe import nn, optim


def host(array):
    return mm.backend.to_numpy(array)


class TinyNet(nn.Module):
    """Nested children, a ModuleList and a bias-free layer: every way a name is built."""

    def __init__(self):
        self.embed = nn.Embedding(5, 3)
        self.blocks = nn.ModuleList([nn.Linear(3, 3, bias=False), nn.LayerNorm(3)])
        self.head = nn.MLP(3, 4, 2)
        self.drop = nn.Dropout(0.5)

    def forward(self, ids):
        h = self.embed(ids)
        for block in self.blocks:
            h = block(h)
        return self.head(self.drop(h))


def test_parameters_are_registered_with_dotted_names(backend_name):
    net = TinyNet()
    assert [name for name, _ in net.named_parameters()] == [
        "embed.weight", "blocks.0.weight", "blocks.1.weight", "blocks.1.bias",
        "head.fc1.weight", "head.fc1.bias", "head.fc2.weight", "head.fc2.bias",
    ]
    assert net.num_parameters() == 15 + 9 + 3 + 3 + 12 + 4 + 8 + 2
    assert all(p.requires_grad and p.backend == backend_name for p in net.parameters())
    net.head = None  # re-assigning a child to something else unregisters it
    assert not any(name.startswith("head.") for name, _ in net.named_parameters())


def test_state_dict_round_trip(backend_name):
    mm.manual_seed(0)
    source, target = TinyNet().eval(), TinyNet().eval()
    ids = mm.tensor([[0, 4, 2]])
    assert not np.allclose(source(ids).numpy(), target(ids).numpy())
    state = source.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())  # host copies: what .npz stores
    target.load_state_dict(state)
    np.testing.assert_array_equal(source(ids).numpy(), target(ids).numpy())
    assert target.embed.weight.backend == backend_name
    state["embed.weight"][:] = 0  # copies both ways: editing the dict leaves both models alone
    assert np.abs(source.embed.weight.numpy()).sum() > 0
    assert np.abs(target.embed.weight.numpy()).sum() > 0


def test_train_and_eval_reach_every_module(backend_name):
    net = TinyNet()
    assert all(m.training for m in net.modules())
    net.eval()
    assert not any(m.training for m in net.modules()) and len(list(net.modules())) == 9
    ids = mm.tensor([[1, 2, 3, 4]])
    np.testing.assert_array_equal(net(ids).numpy(), net(ids).numpy())  # no dropout in eval
    net.train()
    assert all(m.training for m in net.modules())


def test_to_moves_every_parameter(backend_name):
    net = TinyNet()
    other = "numpy" if backend_name != "numpy" else "strict"
    ids = [[0, 1, 2]]
    expected = net.eval()(mm.tensor(ids)).numpy()
    assert net.to(other) is net
    assert {p.backend for p in net.parameters()} == {other}
    np.testing.assert_allclose(net(mm.tensor(ids, backend_name=other)).numpy(), expected, rtol=1e-6)
    net.to(backend_name)
    assert {p.backend for p in net.parameters()} == {backend_name}


def test_linear_is_x_times_weight_plus_bias(backend_name):
    layer = nn.Linear(3, 2)
    x = np.arange(12.0).reshape(2, 2, 3) / 10
    y = layer(mm.tensor(x))
    assert y.shape == (2, 2, 2)
    np.testing.assert_allclose(y.numpy(), x @ layer.weight.numpy() + layer.bias.numpy(), rtol=1e-6)
    assert np.abs(layer.weight.numpy()).max() <= 1 / math.sqrt(3)  # PyTorch's init bound


def test_embedding_picks_rows_and_its_gradient_counts_repeats(backend_name):
    table = nn.Embedding(4, 3)
    ids = mm.tensor([[2, 0, 2]])
    out = table(ids)
    assert out.shape == (1, 3, 3)
    np.testing.assert_array_equal(out.numpy()[0], table.weight.numpy()[[2, 0, 2]])
    out.sum().backward()
    np.testing.assert_array_equal(host(table.weight.grad)[:, 0], [1, 0, 2, 0])


def test_layer_norm_output_has_mean_zero_and_variance_one(backend_name):
    x = mm.tensor(np.random.default_rng(0).normal(3.0, 5.0, size=(4, 6, 32)))
    y = nn.LayerNorm(32)(x).numpy()
    assert y.shape == (4, 6, 32)
    np.testing.assert_allclose(y.mean(axis=-1), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=-1), 1, rtol=1e-3)  # eps = 1e-5 against a variance of 25


def test_rms_norm_output_has_mean_square_one(backend_name):
    x = mm.tensor(np.random.default_rng(0).normal(3.0, 5.0, size=(4, 32)))
    y = nn.RMSNorm(32)(x).numpy()
    np.testing.assert_allclose((y * y).mean(axis=-1), 1, rtol=1e-5)
    rms = np.sqrt((x.numpy() ** 2).mean(axis=-1, keepdims=True))
    np.testing.assert_allclose(y, x.numpy() / rms, rtol=1e-5)


def test_dropout_layer_drops_in_training_only(backend_name):
    layer, x = nn.Dropout(0.5), mm.tensor(np.ones((20, 50)))
    y = layer(x).numpy()
    assert y.shape == (20, 50) and set(np.unique(y).tolist()) == {0.0, 2.0}
    assert 0.4 < (y == 0).mean() < 0.6
    assert layer.eval()(x) is x


def test_mlp_is_linear_activation_linear(backend_name):
    mlp = nn.MLP(3, 5, 2, activation="tanh")
    x = np.random.default_rng(0).standard_normal((4, 3))
    hidden = np.tanh(x @ mlp.fc1.weight.numpy() + mlp.fc1.bias.numpy())
    expected = hidden @ mlp.fc2.weight.numpy() + mlp.fc2.bias.numpy()
    y = mlp(mm.tensor(x))
    assert y.shape == (4, 2)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-6)


# ---- optimisers on a 2-element parameter, p = [1, -2], with hand-computed steps ---------------

def two_element_parameter(grad):
    p = nn.Parameter(mm.backend.asarray(np.array([1.0, -2.0])))  # float64: exact comparisons
    p.grad = mm.backend.asarray(np.array(grad))
    return p


def test_sgd_with_momentum_two_steps(backend_name):
    p = two_element_parameter([0.5, 1.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.step()  # v = g = [0.5, 1];              p = [1 - 0.05, -2 - 0.1]
    np.testing.assert_allclose(p.numpy(), [0.95, -2.1], rtol=1e-12)
    opt.step()  # v = 0.9 v + g = [0.95, 1.9];   p = [0.95 - 0.095, -2.1 - 0.19]
    np.testing.assert_allclose(p.numpy(), [0.855, -2.29], rtol=1e-12)


def test_adam_first_step_moves_each_entry_by_lr(backend_name):
    """After bias correction m_hat = g and v_hat = g^2: the first step is lr * g / (|g| + eps)."""
    p = two_element_parameter([0.5, -4.0])
    optim.Adam([p], lr=0.1).step()
    expected = [1 - 0.1 * 0.5 / (0.5 + 1e-8), -2 + 0.1 * 4 / (4 + 1e-8)]
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12)


def test_adam_second_step_uses_bias_corrected_moments(backend_name):
    p = two_element_parameter([0.5, -4.0])
    opt = optim.Adam([p], lr=0.1)
    opt.step()
    p.grad = mm.backend.asarray(np.array([1.0, 2.0]))
    before = p.numpy()
    opt.step()
    # m = 0.9 * 0.1 * g1 + 0.1 * g2 = [0.145, -0.16];  v = 0.999 * 0.001 * g1^2 + 0.001 * g2^2
    m_hat = np.array([0.145, -0.16]) / (1 - 0.9**2)
    v_hat = np.array([0.999e-3 * 0.25 + 1e-3, 0.999e-3 * 16 + 4e-3]) / (1 - 0.999**2)
    expected = before - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8)
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12)


def test_adamw_decays_the_weights_apart_from_the_gradient(backend_name):
    p = two_element_parameter([0.5, 1.0])
    optim.AdamW([p], lr=0.1, weight_decay=0.1).step()  # p * (1 - 0.01), then -lr * sign(g)
    np.testing.assert_allclose(p.numpy(), [0.99 - 0.1, -1.98 - 0.1], rtol=1e-7)
    q = two_element_parameter([0.5, 1.0])
    optim.Adam([q], lr=0.1, weight_decay=0.1).step()  # L2 in the gradient: [0.6, 0.8], same signs
    np.testing.assert_allclose(q.numpy(), [0.9, -2.1], rtol=1e-7)


def test_optimiser_skips_parameters_without_gradient_and_zero_grad_clears(backend_name):
    p, q = two_element_parameter([1.0, 1.0]), two_element_parameter([1.0, 1.0])
    q.grad = None
    opt = optim.SGD([p, q], lr=0.5)
    opt.step()
    np.testing.assert_array_equal(q.numpy(), [1.0, -2.0])
    np.testing.assert_array_equal(p.numpy(), [0.5, -2.5])
    opt.zero_grad()
    assert p.grad is None


def test_clip_grad_norm_returns_the_norm_and_scales_to_max_norm(backend_name):
    p, q = two_element_parameter([3.0, 4.0]), two_element_parameter([12.0, 0.0])
    assert optim.clip_grad_norm([p, q], max_norm=6.5) == pytest.approx(13.0)
    np.testing.assert_allclose(host(p.grad), [1.5, 2.0], rtol=1e-6)
    np.testing.assert_allclose(host(q.grad), [6.0, 0.0], rtol=1e-6)
    assert optim.clip_grad_norm([p, q], max_norm=100) == pytest.approx(6.5, rel=1e-6)  # under it
    np.testing.assert_allclose(host(p.grad), [1.5, 2.0], rtol=1e-6)


def test_clip_grad_norm_measures_only_with_none_and_leaves_non_finite_gradients_alone(backend_name):
    p, q = two_element_parameter([3.0, 4.0]), two_element_parameter([12.0, 0.0])
    assert optim.clip_grad_norm([p, q], max_norm=None) == pytest.approx(13.0)  # measured, not clipped
    np.testing.assert_array_equal(host(p.grad), [3.0, 4.0])
    assert optim.clip_grad_norm([p, q], max_norm=13.0) == pytest.approx(13.0)  # at max_norm: unchanged
    np.testing.assert_array_equal(host(q.grad), [12.0, 0.0])
    q.grad = q.grad + np.inf  # the norm is not finite: it is returned, and nothing is rescaled
    assert not math.isfinite(optim.clip_grad_norm([p, q], max_norm=1.0))
    np.testing.assert_array_equal(host(p.grad), [3.0, 4.0])
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="max_norm must be positive"):
            optim.clip_grad_norm([p], max_norm=bad)


def test_warmup_cosine_schedule():
    def lr(step):
        return optim.warmup_cosine(step, base_lr=1.0, warmup_steps=10, total_steps=110,
                                   min_lr_ratio=0.1)

    assert lr(0) == pytest.approx(0.1)  # the first step already moves: 1/10 of the way up
    assert lr(4) == pytest.approx(0.5)
    assert lr(9) == pytest.approx(1.0) and lr(10) == pytest.approx(1.0)  # the end of warm-up
    assert lr(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way down the cosine
    assert lr(110) == pytest.approx(0.1) and lr(500) == pytest.approx(0.1)  # the end, and after it


def test_warmup_cosine_without_warm_up_starts_at_the_peak():
    assert optim.warmup_cosine(0, base_lr=2.0, warmup_steps=0, total_steps=100, min_lr_ratio=0.1) == 2.0
    assert optim.warmup_cosine(50, base_lr=2.0, warmup_steps=0, total_steps=100, min_lr_ratio=0.1) == \
        pytest.approx(2.0 * (0.1 + 0.9 * 0.5))


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.AdamW(ps, lr=0.1)], ids=["sgd", "adamw"])
def test_optimiser_state_dict_round_trip(make, backend_name):
    grads = [[0.5, -1.0], [2.0, 0.25], [-1.0, 1.0]]
    p = two_element_parameter(grads[0])
    opt = make([p])
    for g in grads[:2]:
        p.grad = mm.backend.asarray(np.array(g))
        opt.step()
    state = opt.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values()) and int(state["step_count"]) == 2
    saved = {key: value.copy() for key, value in state.items()}

    q = two_element_parameter(grads[2])
    q.data = mm.backend.asarray(p.numpy())
    resumed = make([q])
    resumed.load_state_dict(state)
    p.grad = mm.backend.asarray(np.array(grads[2]))
    opt.step()
    resumed.step()
    np.testing.assert_array_equal(q.numpy(), p.numpy())
    assert resumed.step_count == 3
    for key, value in state.items():  # a snapshot: later steps of either optimiser leave it alone
        np.testing.assert_array_equal(value, saved[key], err_msg=key)


def quadrants(rng, n):
    """XOR-like task: points of the unit square, class 1 where x and y have the same sign."""
    points = rng.uniform(-1, 1, size=(n, 2))
    return points, (points[:, 0] * points[:, 1] > 0).astype(np.int64)


def test_an_mlp_learns_the_quadrant_task_to_95_percent(backend_name):
    start = time.perf_counter()
    mm.manual_seed(0)
    rng = np.random.default_rng(0)
    (x, y), (x_test, y_test) = quadrants(rng, 512), quadrants(rng, 512)
    model = nn.MLP(2, 32, 2, activation="tanh")
    opt = optim.Adam(model.parameters(), lr=0.05)
    inputs, targets = mm.tensor(x), mm.tensor(y)
    for _ in range(300):  # full batch
        loss = F.cross_entropy(model(inputs), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with mm.no_grad():
        accuracy = (model(mm.tensor(x_test)).numpy().argmax(axis=-1) == y_test).mean()
    assert accuracy >= 0.95, f"held-out accuracy {accuracy:.3f} (final loss {loss.item():.3f})"
    assert time.perf_counter() - start < 5.0
