"""Plots of a training run: losses, expert load per layer over time, dropped-token fraction.

Each function takes metric records (the dicts of a run's `metrics.jsonl`, see `minimoe.train`),
returns a matplotlib `Figure` and, given `path`, also saves it as a PNG. Figures are built
without `pyplot`, so nothing here needs a display or touches global plotting state; in Jupyter,
a returned figure shows as the cell's result. Used by `minimoe.train` and lessons 02-08.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def plot_losses(runs, x: str = "step", path=None) -> Figure:
    """Training loss (thin line) and validation loss (dots) against `x` ("step", "tokens" or
    "flops": training FLOPs so far, for comparing models of different cost).

    `runs` is one run's records, or a dict {label: records} to compare runs in one plot.
    """
    runs = runs if isinstance(runs, dict) else {"": runs}
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for i, (label, records) in enumerate(runs.items()):
        color = f"C{i}"
        train = [(r[x], r["train_loss"]) for r in records if "train_loss" in r]
        val = [(r[x], r["val_loss"]) for r in records if "val_loss" in r]
        if train:
            ax.plot(*zip(*train, strict=True), color=color, alpha=0.4, lw=1, label=f"{label} train".strip())
        if val:
            ax.plot(*zip(*val, strict=True), "o-", color=color, ms=4, label=f"{label} validation".strip())
    ax.set_xlabel({"flops": "training FLOPs", "tokens": "tokens seen"}.get(x, x))
    ax.set_ylabel("cross-entropy (nats per character)")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _finish(fig, path)


def plot_expert_load(records, path=None) -> Figure:
    """A heatmap per MoE layer: the share of routed assignments each expert got, over steps.
    A balanced layer is a flat colour at 1/E; a collapsed one shows a bright band on few experts."""
    steps, loads = _moe_series(records, "load")  # (S,), (S, L, E)
    n_layers, n_experts = loads.shape[1], loads.shape[2]
    fig = Figure(figsize=(7, 1.2 + 1.6 * n_layers), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_layers, 1, sharex=True, squeeze=False)[:, 0])
    extent = (steps[0], steps[-1], n_experts - 0.5, -0.5)
    for layer, ax in enumerate(axes):
        image = ax.imshow(loads[:, layer].T, aspect="auto", extent=extent, cmap="viridis",
                          vmin=0, vmax=max(2 / n_experts, float(loads.max())), interpolation="nearest")
        ax.set_ylabel(f"MoE layer {layer}\nexpert")
        fig.colorbar(image, ax=ax, label="load")
    axes[0].set_title(f"Expert load per layer (balanced = {1 / n_experts:.3f})")
    axes[-1].set_xlabel("step")
    return _finish(fig, path)


def plot_dropped_fraction(records, path=None) -> Figure:
    """Fraction of token-expert assignments dropped by the capacity limit, per MoE layer."""
    steps, dropped = _moe_series(records, "dropped_fraction")  # (S,), (S, L)
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.subplots()
    for layer in range(dropped.shape[1]):
        ax.plot(steps, dropped[:, layer], label=f"MoE layer {layer}")
    ax.set_xlabel("step")
    ax.set_ylabel("dropped fraction")
    ax.set_ylim(bottom=0)
    ax.set_title("Tokens dropped by the capacity limit (0 when dropless)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _finish(fig, path)


def save_run_plots(records, out_dir) -> list[Path]:
    """The run folder's PNGs: loss.png, and for an MoE run expert_load.png and dropped.png."""
    out_dir = Path(out_dir)
    paths = [out_dir / "loss.png"]
    plot_losses(records, path=paths[0])
    if any(r.get("moe") for r in records):
        paths += [out_dir / "expert_load.png", out_dir / "dropped.png"]
        plot_expert_load(records, path=paths[1])
        plot_dropped_fraction(records, path=paths[2])
    return paths


def _moe_series(records, key: str):
    """Steps (S,) and the per-layer values of `key` stacked as (S, L, ...)."""
    moe_records = [r for r in records if r.get("moe")]
    if not moe_records:
        raise ValueError("these records hold no MoE routing reports (a dense run?): nothing to plot")
    steps = np.array([r["step"] for r in moe_records])
    values = np.array([[layer[key] for layer in r["moe"]] for r in moe_records], dtype=float)
    return steps, values


def _finish(fig: Figure, path) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
