"""The gated feed-forward block of Llama-style models: SwiGLU (Shazeer 2020, "GLU Variants
Improve Transformer", eq. 6 with Swish_1 = SiLU):

    y = (silu(x W_gate) * (x W_up)) W_down

Mixtral's, OLMoE's, Qwen2-MoE's and DeepSeek's dense FFNs (and their experts) have this form
without biases. `up` is the un-gated branch; swapping it with `gate` changes the function.
"""
from .. import functional as F
from .layers import Linear
from .module import Module


class GatedMLP(Module):
    def __init__(self, d_model: int, hidden: int, bias: bool = False):
        self.gate = Linear(d_model, hidden, bias=bias)
        self.up = Linear(d_model, hidden, bias=bias)
        self.down = Linear(hidden, d_model, bias=bias)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))
