"""A finite-difference check of a whole model's gradients, on a few entries of every parameter:
the full `minimoe.gradcheck` over every weight of a Transformer would take minutes."""
import numpy as np


def check_sampled_gradients(model, loss, rng, per_tensor=3, eps=1e-6, skip=lambda name: False):
    """Central differences of `loss()` (a scalar Tensor of a float64 model) at `per_tensor` random
    entries of every parameter, against the gradient `loss().backward()` leaves."""
    loss().backward()
    for name, p in model.named_parameters():
        if skip(name):
            continue
        for flat in rng.choice(p.size, size=min(per_tensor, p.size), replace=False):
            index = np.unravel_index(flat, p.shape)
            original = p.data[index]
            p.data[index] = original + eps
            up = loss().item()
            p.data[index] = original - eps
            down = loss().item()
            p.data[index] = original
            numeric, analytic = (up - down) / (2 * eps), p.grad[index]
            assert abs(numeric - analytic) <= 1e-6 * max(1e-2, abs(numeric)), (name, index, numeric, analytic)
