"""Neural-network building blocks on the engine: `Module` and the usual layers."""
from .gated import GatedMLP
from .heads import repeat_heads
from .layers import MLP, Dropout, Embedding, LayerNorm, Linear, RMSNorm
from .module import Module, ModuleList, Parameter

__all__ = ["MLP", "Dropout", "Embedding", "GatedMLP", "LayerNorm", "Linear", "Module", "ModuleList", "Parameter",
           "RMSNorm", "repeat_heads"]
