"""Neural-network building blocks on the engine: `Module` and the usual layers."""
from .layers import MLP, Dropout, Embedding, LayerNorm, Linear, RMSNorm
from .module import Module, ModuleList, Parameter

__all__ = ["MLP", "Dropout", "Embedding", "LayerNorm", "Linear", "Module", "ModuleList", "Parameter", "RMSNorm"]
