"""Learning-rate schedules, as functions of the step."""
import math


def warmup_cosine(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Linear warm-up from 0 over `warmup_steps`, then cosine decay to `min_lr_ratio * base_lr` at
    `total_steps` (the schedule of GPT-3, Brown et al. 2020, App. B)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return base_lr * (min_lr_ratio + (1 - min_lr_ratio) * cosine)
