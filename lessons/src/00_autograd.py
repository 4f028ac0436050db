# %% [markdown]
# # Lesson 00 — Autograd-lite: how a network computes its own gradients
#
# Every model in this course learns by gradient descent, and every gradient comes from a small
# engine in `minimoe/`. This lesson builds that engine's idea from nothing, on single numbers,
# then opens the real one and uses it to train a network.
#
# **After this lesson you can**
# - build reverse-mode automatic differentiation for scalars in a few dozen lines, and say why it
#   must visit the graph in reverse topological order;
# - read and write an op of minimoe's tensor engine: a `Function` with a vectorised `forward` and a
#   hand-written `backward`;
# - explain why broadcasting in the forward pass becomes a sum in the backward pass;
# - catch a wrong backward pass with a finite-difference gradient check;
# - train a small MLP with `minimoe.nn` and `minimoe.optim`, and run the same code on another
#   backend (CuPy on a GPU).
#
# **Sources.** Rumelhart, Hinton & Williams (1986), *Learning representations by back-propagating
# errors*, Nature 323: the chain rule applied backwards through a layered network. Baydin,
# Pearlmutter, Radul & Siskind (2018), *Automatic differentiation in machine learning: a survey*,
# JMLR 18, §3 (forward and reverse mode). The scalar engine of Part 1 follows Karpathy's
# *micrograd* (2020); the tensor engine's "one class per op, forward beside backward" design follows
# Chainer and early tinygrad. Okuta et al. (2017), *CuPy: a NumPy-compatible library for NVIDIA
# GPU calculations* (LearningSys workshop, NIPS 2017), for the last part.
#
# **Prerequisites.** Python and NumPy (arrays, broadcasting, `@`); the chain rule of calculus.

# %% tags=["parameters"]
import os

FAST = os.environ.get("MINIMOE_FAST") == "1"  # CI runs every lesson with MINIMOE_FAST=1: fewer steps, same code
N_POINTS = 16 if FAST else 64  # batch for the scalar-engine timing
MLP_STEPS = 60 if FAST else 400  # training steps for the MLP

# %%
import inspect
import time

import matplotlib.pyplot as plt
import numpy as np

import minimoe as mm
import minimoe.functional as F

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.4, 3.6), "axes.grid": True, "grid.alpha": 0.3})
print("minimoe", mm.__version__, "| fast mode" if FAST else "| full mode")

# %% [markdown]
# ## 1. The idea: a computation is a graph, and gradients flow backwards through it
#
# Take $f(a, b, c) = \tanh(ab + c)\cdot a$. Evaluating it creates intermediate values: $u = ab$,
# $v = u + c$, $w = \tanh v$, $f = w a$. Each is made by one simple operation whose local
# derivatives we know ($\partial u/\partial a = b$, $\partial w/\partial v = 1 - w^2$, ...). The
# chain rule glues them together. Write $\bar{x} = \partial f / \partial x$ (the *adjoint* of
# $x$). Then for every intermediate $x$,
#
# $$\bar{x} \;=\; \sum_{y \,\text{ uses }\, x} \bar{y}\,\frac{\partial y}{\partial x},$$
#
# a sum over the operations that consumed $x$. Starting from $\bar f = 1$ and walking from the
# output back to the inputs gives the derivative of $f$ with respect to *every* input in one
# backward sweep, for a cost of the same order as the forward pass. That is **reverse-mode**
# automatic differentiation, and backpropagation is its special case for layered networks.
#
# One rule matters: before $x$ passes its adjoint on, *every* consumer $y$ of $x$ must have added
# its share to $\bar{x}$. Above, $a$ is used twice (in $u = ab$ and in $f = wa$), so $\bar a$ is
# only complete after both have reported. Visiting the nodes in **reverse topological order**
# (every node after all the nodes that use it) guarantees this.
#
# ## 2. A scalar engine in a few dozen lines
#
# `Value` wraps one number. Each arithmetic operation returns a new `Value` that remembers its
# inputs and a small closure, `_backward`, that adds its share to its inputs' gradients.

# %%
class Value:
    """A number that remembers how it was made, so it can send gradients back to its inputs."""

    def __init__(self, data, parents=(), op=""):
        self.data = float(data)
        self.grad = 0.0
        self.parents = parents  # the Values this one was computed from
        self.op = op  # for printing
        self._backward = lambda: None  # adds this node's share to its parents' .grad

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward():
            self.grad += out.grad  # d(a+b)/da = 1
            other.grad += out.grad
        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad += other.data * out.grad  # d(ab)/da = b
            other.grad += self.data * out.grad
        out._backward = _backward
        return out

    def __pow__(self, exponent):  # a constant exponent
        out = Value(self.data**exponent, (self,), f"**{exponent}")

        def _backward():
            self.grad += exponent * self.data ** (exponent - 1) * out.grad
        out._backward = _backward
        return out

    def tanh(self):
        t = np.tanh(self.data)
        out = Value(t, (self,), "tanh")

        def _backward():
            self.grad += (1 - t * t) * out.grad
        out._backward = _backward
        return out

    __radd__ = __add__
    __rmul__ = __mul__

    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other**-1

    def backward(self):
        """Fills .grad of every Value this one depends on with d(self)/d(that Value)."""
        self.grad = 1.0
        for node in reversed(topological_order(self)):
            node._backward()

    def __repr__(self):
        return f"Value({self.data:.4f}, grad={self.grad:.4f})"


def topological_order(root):
    """Every node `root` depends on, each after all of its parents (inputs first).

    An explicit stack rather than recursion, so a long chain cannot hit Python's recursion limit:
    a node is appended once all of its parents have been appended.
    """
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
        elif node not in visited:
            visited.add(node)
            stack.append((node, True))
            stack.extend((p, False) for p in node.parents)
    return order


# %% [markdown]
# Let us differentiate $f(a, b, c) = \tanh(ab + c)\cdot a$ and check every derivative against a
# finite difference, $\partial f/\partial a \approx \big(f(a+\varepsilon) - f(a-\varepsilon)\big)/2\varepsilon$.

# %%
def f(a, b, c):
    return (a * b + c).tanh() * a


a, b, c = Value(0.7), Value(-1.3), Value(0.4)
out = f(a, b, c)
out.backward()
print("f =", round(out.data, 6))
print("backward visits:", " -> ".join(n.op or f"input {n.data:g}" for n in reversed(topological_order(out))))

eps = 1e-6
point = {"a": 0.7, "b": -1.3, "c": 0.4}
for name, node in zip("abc", (a, b, c)):
    up, down = dict(point), dict(point)
    up[name] += eps
    down[name] -= eps
    numeric = (f(**{k: Value(v) for k, v in up.items()}).data - f(**{k: Value(v) for k, v in down.items()}).data) / (2 * eps)
    print(f"df/d{name}: engine {node.grad:+.8f}   finite difference {numeric:+.8f}")
    assert abs(node.grad - numeric) < 1e-6

# %% [markdown]
# `a` is used twice, which is why each `_backward` *adds* (`+=`) to the gradient instead of setting
# it: the two contributions, $w$ from $f = wa$ and $(1-w^2)\,b\,a$ through $u = ab$, must be summed.
#
# ### Why not stop here? Count the nodes
#
# The scalar engine is complete, but every multiplication is a Python object and a closure. A
# two-layer MLP (2 inputs, 16 tanh units, 1 output) evaluated on a batch builds one node per
# scalar operation. Below the same network, with the same weights, is evaluated both ways: on
# `Value`s, and on minimoe tensors where a whole matrix product is one node. Both give the same
# loss and the same gradient; look at the node counts and the times.

# %%
rng = np.random.default_rng(0)
X = rng.standard_normal((N_POINTS, 2))
Y = np.sin(2 * X[:, :1]) * X[:, 1:]  # (N, 1) any smooth target
W1, b1 = 0.5 * rng.standard_normal((2, 16)), np.zeros(16)
W2, b2 = 0.5 * rng.standard_normal((16, 1)), np.zeros(1)


def scalar_mlp_loss(W1v, b1v, W2v, b2v):
    total = 0
    for x, y in zip(X, Y):  # one example at a time, one number at a time
        h = [(sum(W1v[i][j] * x[i] for i in range(2)) + b1v[j]).tanh() for j in range(16)]
        out = sum(W2v[j][0] * h[j] for j in range(16)) + b2v[0]
        total = total + (out - y[0]) ** 2
    return total / len(X)


def tensor_mlp_loss(W1t, b1t, W2t, b2t):
    h = (mm.tensor(X, dtype=np.float64) @ W1t + b1t).tanh()  # (N, 16)
    return ((h @ W2t + b2t - mm.tensor(Y, dtype=np.float64)) ** 2).mean()


def count_tensor_nodes(t):
    """Ops in the graph behind tensor t (each node's inputs are in t._ctx.inputs)."""
    seen, stack = set(), [t]
    while stack:
        node = stack.pop()
        if node._ctx is not None and id(node) not in seen:
            seen.add(id(node))
            stack.extend(node._ctx.inputs)
    return len(seen)


start = time.perf_counter()
scalar_params = [[[Value(w) for w in row] for row in W1], [Value(v) for v in b1],
                 [[Value(w) for w in row] for row in W2], [Value(v) for v in b2]]
scalar_loss = scalar_mlp_loss(*scalar_params)
scalar_nodes = len(topological_order(scalar_loss))
scalar_loss.backward()
scalar_seconds = time.perf_counter() - start

start = time.perf_counter()
tensor_params = [mm.tensor(p, dtype=np.float64, requires_grad=True) for p in (W1, b1, W2, b2)]
tensor_loss = tensor_mlp_loss(*tensor_params)
tensor_nodes = count_tensor_nodes(tensor_loss)
tensor_loss.backward()
tensor_seconds = time.perf_counter() - start

scalar_grad_W1 = np.array([[v.grad for v in row] for row in scalar_params[0]])
print(f"batch of {N_POINTS}: loss {scalar_loss.data:.10f} (scalars)  {tensor_loss.item():.10f} (tensors)")
print(f"largest difference in dLoss/dW1: {np.abs(scalar_grad_W1 - tensor_params[0].grad).max():.1e}")
print(f"graph nodes: {scalar_nodes} scalar Values  vs  {tensor_nodes} tensor ops")
print(f"forward + backward: {scalar_seconds * 1e3:.1f} ms (scalars)  vs  {tensor_seconds * 1e3:.2f} ms (tensors), "
      f"{scalar_seconds / tensor_seconds:.0f}x")

# %% [markdown]
# The scalar graph grows with the batch and the layer sizes; the tensor graph does not: its few
# nodes each hand a whole array to NumPy, which loops in compiled code. That is the design of
# minimoe: **coarse ops** (a matrix product, a whole softmax, a whole cross-entropy) with
# hand-written backward passes, so a training step is a few hundred array calls, not millions of
# Python ones.
#
# ## 3. minimoe's tensor engine
#
# A `Tensor` holds an array (`.data`), its gradient (`.grad`, same shape) and, if an op made it,
# that op (`._ctx`). `loss.backward()` does exactly what `Value.backward` did — reverse topological
# order, with an explicit stack — but each node now moves whole arrays. The scalar function from
# Part 2, on tensors:

# %%
ta, tb, tc = (mm.tensor(v, dtype=np.float64, requires_grad=True) for v in (0.7, -1.3, 0.4))
tout = (ta * tb + tc).tanh() * ta
tout.backward()
print("f =", round(tout.item(), 6))
for name, scalar, tensor in zip("abc", (a, b, c), (ta, tb, tc)):
    print(f"df/d{name}: Value engine {scalar.grad:+.8f}   tensor engine {float(tensor.grad):+.8f}")

# %% [markdown]
# ### Writing an op
#
# Each op is a subclass of `mm.Function` with two methods. `forward` receives the input *arrays*
# and may keep on `self` whatever the backward will need; `backward` receives the gradient of the
# output, $\bar y$, and returns one gradient per input. Two of the engine's ops, `exp` and `/`
# (the exercises ask you to write `tanh` and `*` the same way, so their code is not shown here):

# %%
print(inspect.getsource(mm.ops.pointwise.Exp))
print(inspect.getsource(mm.ops.arithmetic.Div))

# %% [markdown]
# `self.xp` is the array module of the inputs (NumPy, or CuPy on a GPU), which is how the same op
# runs on both. `Exp` keeps its output for the backward, because $\partial e^x/\partial x = e^x$.
# `Div` inherits a shape check from `_Binary` (whose `forward` calls `compute`) and passes each
# gradient through `unbroadcast`, the subject of the next section. Writing a new op takes the same
# two methods. Here is $y = x^3$, with $\partial y/\partial x = 3x^2$, checked against the
# engine's own `x ** 3`:

# %%
class Cube(mm.Function):
    def forward(self, x):
        self.x = x  # kept for the backward
        return x * x * x

    def backward(self, grad_output):
        return (grad_output * 3 * self.x * self.x,)  # one gradient per input


x = mm.tensor([[-1.0, 0.5, 2.0]], dtype=np.float64, requires_grad=True)
Cube.apply(x).sum().backward()
ours = x.grad.copy()
x.grad = None
(x**3).sum().backward()
print("Cube.backward:", ours, "  engine x**3:", x.grad)

# %% [markdown]
# ### Broadcasting gradients
#
# NumPy lets `X + b` work for `X` of shape (4, 3) and `b` of shape (3,): `b` is *copied* along a
# new leading axis. Each copy of $b_j$ is used by four outputs, so by the rule of Part 1 its
# gradient is the sum of theirs:
#
# $$Y_{ij} = X_{ij} + b_j \quad\Longrightarrow\quad \bar b_j = \sum_i \bar Y_{ij}.$$
#
# The same holds for a size-1 axis that is stretched: for `b` of shape (4, 1), $\bar b_{i0} =
# \sum_j \bar Y_{ij}$, kept as shape (4, 1). So every binary op ends its backward by summing the
# gradient over the axes broadcasting added or stretched, which is all `unbroadcast(grad, shape)`
# does: it takes a gradient of the output's shape and returns one of the input's shape. (Writing
# it is an exercise, so here we only watch what it returns.) Then the engine's gradients for a
# row and a column broadcast over a (4, 3) matrix, against the sums the rule predicts:

# %%
grad_out = np.arange(12.0).reshape(4, 3)
for shape in ((4, 3), (3,), (1, 3), (4, 1), ()):
    print(f"unbroadcast to {str(shape):7} ->", mm.ops.arithmetic.unbroadcast(grad_out, shape).tolist())

X4 = mm.tensor(rng.standard_normal((4, 3)), dtype=np.float64, requires_grad=True)
row = mm.tensor(rng.standard_normal(3), dtype=np.float64, requires_grad=True)  # (3,)
column = mm.tensor(rng.standard_normal((4, 1)), dtype=np.float64, requires_grad=True)  # (4, 1)
weights = rng.standard_normal((4, 3))  # a probe: loss = sum(weights * Y), so dLoss/dY = weights
((X4 + row + column) * mm.tensor(weights, dtype=np.float64)).sum().backward()
print("row.grad    ", row.grad, "\nweights.sum(axis=0)       ", weights.sum(axis=0))
print("column.grad ", column.grad.ravel(), "\nweights.sum(axis=1)       ", weights.sum(axis=1))
assert np.allclose(row.grad, weights.sum(axis=0)) and np.allclose(column.grad, weights.sum(axis=1, keepdims=True))

# %% [markdown]
# ## 4. Gradient checking
#
# A backward pass is hand-written, so it can be wrong while the forward pass is right; training
# then quietly goes nowhere. The cure is to compare it with a derivative computed from the
# forward pass alone. For a scalar function $L$ and one input entry $x_i$,
#
# $$\frac{\partial L}{\partial x_i} \approx \frac{L(x + \varepsilon e_i) - L(x - \varepsilon e_i)}{2\varepsilon}
# \qquad\text{(central difference, error } O(\varepsilon^2)\text{)},$$
#
# whereas the one-sided $\big(L(x+\varepsilon e_i) - L(x)\big)/\varepsilon$ has error
# $O(\varepsilon)$. But $\varepsilon$ cannot be made arbitrarily small: the two values of $L$
# agree in more and more leading digits, and their difference is swamped by rounding. The plot
# measures both effects on $L(x) = \tanh(x)\,x$ at $x = 0.7$, in float64 and in float32.

# %%
def g(x):
    return np.tanh(x) * x


x0, exact = 0.7, np.tanh(0.7) + 0.7 * (1 - np.tanh(0.7) ** 2)
steps = np.logspace(-12, -1, 45)
fig, ax = plt.subplots()
for dtype, style in ((np.float64, "-"), (np.float32, ":")):
    x_ = dtype(x0)
    central = [abs((g(x_ + dtype(h)) - g(x_ - dtype(h))) / (2 * dtype(h)) - exact) for h in steps]
    forward = [abs((g(x_ + dtype(h)) - g(x_)) / dtype(h) - exact) for h in steps]
    ax.loglog(steps, central, "C0" + style, label=f"central, {np.dtype(dtype).name}")
    ax.loglog(steps, forward, "C1" + style, label=f"one-sided, {np.dtype(dtype).name}")
ax.set_xlabel("step ε")
ax.set_ylabel("|error| of the derivative")
ax.legend(fontsize=8)
ax.set_title("Finite differences: truncation (right) against rounding (left)")
plt.show()
best64 = steps[np.argmin([abs((g(x0 + h) - g(x0 - h)) / (2 * h) - exact) for h in steps])]
print(f"float64 central difference is most accurate near ε = {best64:.0e}")

# %% [markdown]
# The central difference's error falls twice as steeply as the one-sided one's until rounding
# takes over, and float32 hits the rounding floor many orders of magnitude sooner. So gradient
# checks run in **float64** with a central difference. `mm.gradcheck(fn, inputs)` does this for
# every entry of every input: it converts the inputs to float64, reduces the output to a scalar
# with fixed random weights (so every output entry counts), and reports the worst relative error
# $|a - n| / \max(|a|, |n|, \text{floor})$ between the analytic $a$ and numeric $n$ derivative.
# Every op in minimoe passes it at `tol=1e-6`:

# %%
x = rng.standard_normal((3, 5))
print("softmax:      ", mm.gradcheck(F.softmax, [x]))
print("layer_norm:   ", mm.gradcheck(lambda t, w, b: F.layer_norm(t, w, b), [x, rng.standard_normal(5), rng.standard_normal(5)]))
print("matmul + tanh:", mm.gradcheck(lambda t, w: (t @ w).tanh(), [x, rng.standard_normal((5, 2))]))

# %% [markdown]
# Now plant a bug. A sigmoid $y = 1/(1+e^{-x})$ has $\partial y/\partial x = y(1-y)$; this version
# forgets the $(1-y)$. Its forward pass is perfect, so nothing looks wrong until the check runs:

# %%
class BuggySigmoid(mm.Function):
    def forward(self, x):
        self.y = 1 / (1 + self.xp.exp(-x))
        return self.y

    def backward(self, grad_output):
        return (grad_output * self.y,)  # BUG: the derivative is y * (1 - y)


class FixedSigmoid(BuggySigmoid):
    def backward(self, grad_output):
        return (grad_output * self.y * (1 - self.y),)


buggy = mm.gradcheck(BuggySigmoid.apply, [x])
fixed = mm.gradcheck(FixedSigmoid.apply, [x])
print("buggy:", buggy)
print("fixed:", fixed)
assert not buggy.ok and fixed.ok

# %% [markdown]
# The report names the input and the entry where the two derivatives disagree most, which is
# where to start reading the backward. A passing check is strong evidence but not proof: it tests
# one random point, so a backward that is wrong only on a set of measure zero (a ReLU's kink at
# exactly 0, ties in a max) can pass. Tests therefore add hand-picked cases for those.
#
# ## 5. Training an MLP
#
# With gradients we can learn. `minimoe.nn` has PyTorch-like `Module`s (here `MLP`: Linear → tanh
# → Linear) and `minimoe.optim` has the optimisers (here Adam, Kingma & Ba 2015). The task is the
# classic "two moons": two interleaved half-circles that no straight line separates. The whole
# training run is one function of the backend's name, so Part 6 can run it again elsewhere.

# %%
def two_moons(n, noise, rng):
    """n points on two interleaved half-circles, with labels 0 and 1."""
    label = rng.integers(0, 2, n)
    angle = rng.uniform(0, np.pi, n)
    x = np.where(label == 0, np.cos(angle), 1 - np.cos(angle))
    y = np.where(label == 0, np.sin(angle), 0.5 - np.sin(angle))
    return (np.stack([x, y], axis=1) + noise * rng.standard_normal((n, 2))).astype(np.float32), label


points, labels = two_moons(512, 0.15, np.random.default_rng(1))


def train_mlp(backend_name, steps):
    """Trains a 2-32-2 tanh MLP with Adam on the moons, on `backend_name`; returns (model, losses, seconds)."""
    mm.use(backend_name)  # new tensors and parameters are created on this backend
    try:
        mm.manual_seed(0)  # same initial weights on every backend (they are drawn on the host)
        model = mm.nn.MLP(2, 32, 2, activation="tanh")
        optimizer = mm.optim.Adam(model.parameters(), lr=0.03)
        inputs, targets = mm.tensor(points), mm.tensor(labels)
        losses, start = [], time.perf_counter()
        for _ in range(steps):
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return model, np.array(losses), time.perf_counter() - start
    finally:
        mm.use("numpy")


model, losses, seconds = train_mlp("numpy", MLP_STEPS)
with mm.no_grad():
    accuracy = (model(mm.tensor(points)).numpy().argmax(axis=1) == labels).mean()
print(f"{MLP_STEPS} steps in {seconds:.2f} s; loss {losses[0]:.3f} -> {losses[-1]:.3f}; training accuracy {accuracy:.1%}")

# %%
grid_x, grid_y = np.meshgrid(np.linspace(-1.6, 2.6, 200), np.linspace(-1.1, 1.6, 150))
grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(np.float32)
with mm.no_grad():
    prob_1 = F.softmax(model(mm.tensor(grid))).numpy()[:, 1].reshape(grid_x.shape)

fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 3.8))
ax_loss.plot(losses)
ax_loss.set_xlabel("step")
ax_loss.set_ylabel("cross-entropy")
ax_loss.set_title("Training loss")
ax_map.contourf(grid_x, grid_y, prob_1, levels=np.linspace(0, 1, 11), cmap="RdBu", alpha=0.7)
ax_map.contour(grid_x, grid_y, prob_1, levels=[0.5], colors="k", linewidths=1)
ax_map.scatter(points[:, 0], points[:, 1], c=labels, cmap="RdBu", s=6, edgecolors="k", linewidths=0.2)
ax_map.set_title("Decision boundary (black: p = 0.5)")
ax_map.grid(False)
plt.show()

# %% [markdown]
# ## 6. The same code on another backend
#
# Nothing in `train_mlp` mentions NumPy: every op takes its array module from its inputs, and
# `mm.use(name)` decides where *new* tensors go. So the function runs unchanged on any backend.
#
# First the **strict stand-in**, a CPU backend that behaves as CuPy does where it matters: it
# refuses to be silently converted to a NumPy array and refuses NumPy functions applied to its
# arrays. Code that passes under it has no hidden host copies. The losses must match NumPy's
# exactly (it computes with NumPy underneath):

# %%
_, strict_losses, strict_seconds = train_mlp("strict", MLP_STEPS)
print(f"strict stand-in: {strict_seconds:.2f} s; largest loss difference from NumPy: {np.abs(strict_losses - losses).max():.1e}")
assert np.array_equal(strict_losses, losses)

# %% [markdown]
# Then **CuPy**, if this machine has a GPU. `mm.backend.cupy_status()` says whether CuPy is
# installed *and* sees a device, without raising. Where it does, the cell trains the same model on
# the GPU and prints both times. The initial weights are drawn on the host, so the start is
# identical; the losses then differ only by float32 rounding done in a different order. (A model
# this small is a poor advert for a GPU: each step is a few dozen tiny kernel launches, and the
# launch overhead dominates; lesson 09 uses sizes where the device has real work to do.)

# %%
gpu_ok, gpu_reason = mm.backend.cupy_status()
if gpu_ok:
    _, gpu_losses, gpu_seconds = train_mlp("cupy", MLP_STEPS)
    print(f"{gpu_reason}: {gpu_seconds:.2f} s (NumPy: {seconds:.2f} s); "
          f"largest loss difference from NumPy: {np.abs(gpu_losses - losses).max():.1e}")
    fig, ax = plt.subplots()
    ax.plot(losses, label="NumPy (CPU)")
    ax.plot(gpu_losses, "--", label="CuPy (GPU)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.legend()
    plt.show()
else:
    print("No GPU here, so the CuPy run is skipped.")
    print("Reason:", gpu_reason)
    print("On a machine with an NVIDIA GPU and CuPy installed, this cell trains the same MLP with mm.use('cupy').")

# %% [markdown]
# ## Check your understanding
#
# (Short answers, each pointing to the cell that shows it, are in `solutions/answers/00.md`:
# try the questions first.)
#
# 1. In `Value.backward`, what would go wrong for `a` in $f = \tanh(ab+c)\cdot a$ if the nodes
#    were visited in plain depth-first order from the output instead of reverse topological order?
# 2. Why does every `_backward` use `+=`? Build a three-line example whose gradient is wrong with `=`.
# 3. `x` has shape (B, T, d) and `b` has shape (d,). Over which axes is `b`'s gradient summed in
#    `x + b`? And for `b` of shape (1, T, 1)?
# 4. The finite-difference error plot rises again on the left. Why, and why does the float32
#    curve turn up so much earlier?
# 5. A ReLU whose backward uses `x >= 0` instead of `x > 0` passes `mm.gradcheck`. Is it wrong?
#    When could the difference matter?
# 6. The scalar and the tensor engine do the same arithmetic. Where does the speed difference
#    come from, and why would it grow with the batch size?
# 7. `train_mlp("strict", ...)` gave bit-identical losses, a GPU run would not. Why not, and why
#    are the first losses still equal?
#
# ## Exercises
#
# In `exercises/ex00_autograd.py`: `unbroadcast` (the broadcasting rule of section 3), `Tanh` and
# `Mul` as engine ops (see *Writing an op*), and `numerical_gradient` (the central difference of
# section 4). Grade them with
#
# ```
# python -m minimoe.grade ex00
# ```
