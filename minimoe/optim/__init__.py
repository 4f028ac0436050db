"""Optimisers, gradient clipping and learning-rate schedules."""
from .clip import clip_grad_norm
from .optimizers import SGD, Adam, AdamW, Optimizer
from .schedules import warmup_cosine

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "clip_grad_norm", "warmup_cosine"]
