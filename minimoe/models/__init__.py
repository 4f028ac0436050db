"""Models built from the engine and the MoE layers: the tiny Transformer and its dense twin."""
from .config import ModelConfig
from .transformer import ModelSummary, Transformer, generate, model_summary
from .upcycle import upcycle

__all__ = ["ModelConfig", "ModelSummary", "Transformer", "generate", "model_summary", "upcycle"]
