"""Which experts fire on your own text: the routing of every MoE layer, token by token.

    python -m minimoe.route --model runs/laptop-moe --text "def f(x):"
    python -m minimoe.route --model path/to/hf-model --file notes.txt --out routing/
    python -m minimoe.route --model runs/laptop-moe        # a code snippet, a poem and arithmetic

The model is a minimoe run folder (it holds `checkpoint.npz`) or a Hugging Face model directory
(it holds `config.json` and `*.safetensors`; read by `minimoe.hub`). For each input the command
prints, per MoE layer, the experts each token chose with their gates, then a table of each expert's
share of the assignments, inputs side by side, the question lesson 08 asks: do code, poetry and
arithmetic use different experts? Into `--out` it writes `routing.png` (each token coloured by its
first-choice expert, as lesson 08 draws it) and `load.csv` (the table).
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import no_grad
from .data import CharTokenizer

DEFAULT_TEXTS = {
    "code": "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total / len(xs)\n",
    "poem": "The river bends below the hill,\nthe evening light lies soft and still;\n"
            "a heron waits where reeds grow tall.\n",
    "arithmetic": "12 + 30 = 42\n7 * 8 = 56\n100 - 64 = 36\n81 / 9 = 9\n3 * (4 + 5) = 27\n",
}
PICTURE, TABLE = "routing.png", "load.csv"
SHOWN = {" ": "·", "\n": "↵"}  # how a space and a newline are drawn
ROW_WIDTH = 64  # character cells per row of the picture


@dataclass
class RoutedText:
    """One input's routing: `experts` and `gates` are (layers, tokens, k); -1 / 0 where an
    assignment was dropped."""

    name: str
    tokens: list[str]
    experts: np.ndarray
    gates: np.ndarray


class _Tokens:
    """The model's tokenizer seen one way: `encode(text)` gives the ids and each token's text."""

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer  # a `tokenizers.Tokenizer`, or None for minimoe's characters

    def encode(self, text: str) -> tuple[np.ndarray, list[str]]:
        if self.tokenizer is None:
            return CharTokenizer().encode(text), list(text)
        encoding = self.tokenizer.encode(text)
        return np.asarray(encoding.ids, dtype=np.int64), [text[a:b] for a, b in encoding.offsets]


def load(model_dir) -> tuple[object, _Tokens]:
    """The model of a minimoe run folder or of a Hugging Face directory (or hub id), and its tokenizer."""
    path = Path(model_dir)
    if not path.exists():
        from .hub.download import local_folder
        path = local_folder(model_dir)  # a hub id, downloaded (or an error that says how)
    if (path / "checkpoint.npz").is_file():
        from .sample import load_model
        return load_model(path), _Tokens()
    if (path / "config.json").is_file():
        from .hub import load_pretrained, load_tokenizer
        tokenizer = load_tokenizer(path)
        if tokenizer is None:
            raise FileNotFoundError(f"{path} has no tokenizer.json, so its text cannot be turned into token ids; "
                                    "copy the model's tokenizer.json into it (minimoe reads it with the tokenizers "
                                    "library)")
        return load_pretrained(path), _Tokens(tokenizer)
    raise FileNotFoundError(f"{path} holds neither checkpoint.npz (a minimoe run folder) nor config.json "
                            "(a Hugging Face model directory); give --model one of those")


def route(model, tokens: _Tokens, name: str, text: str) -> RoutedText:
    """Runs `text` through `model` (no gradients) and collects every MoE layer's choices. A text
    longer than the model's context is read in consecutive windows of the context's length, each
    on its own, as the model saw its training text."""
    ids, pieces = tokens.encode(text)
    if len(ids) == 0:
        raise ValueError(f"input {name!r} is empty: give some text to route")
    if not model.moe_layers():
        raise ValueError("the model has no MoE layers (a dense model): there is no routing to show")
    context = model.config.context
    experts, gates = [], []
    for start in range(0, len(ids), context):  # a text longer than the context: window by window
        with no_grad():
            model(ids[None, start:start + context])
        reports = model.routing_reports()
        if any(report.expert_gate is None for report in reports):
            raise ValueError("this model's router (Soft MoE) sends no whole token to an expert: there is "
                             "no per-token choice to show")
        experts.append(np.stack([report.expert_index[0] for report in reports]))  # (L, window, k)
        gates.append(np.stack([report.expert_gate[0] for report in reports]))
    experts, gates = np.concatenate(experts, axis=1), np.concatenate(gates, axis=1)  # (L, T, k)
    return RoutedText(name, pieces, experts, gates)


def expert_share(routed: RoutedText, n_experts: int) -> np.ndarray:
    """(L, E) each expert's share of a layer's kept assignments, in [0, 1]."""
    shares = np.zeros((routed.experts.shape[0], n_experts))
    for layer, chosen in enumerate(routed.experts):
        kept = chosen[chosen >= 0]
        shares[layer] = np.bincount(kept, minlength=n_experts) / max(1, kept.size)
    return shares


def choices_text(routed: RoutedText) -> str:
    """One line per token: its text, then per layer the experts it chose and their gates."""
    lines = [f"== {routed.name}: {len(routed.tokens)} tokens, {routed.experts.shape[0]} MoE layers"]
    for t, piece in enumerate(routed.tokens):
        layers = "  ".join(
            f"L{layer}: " + " ".join(f"{e}({g:.2f})" for e, g in zip(routed.experts[layer, t], routed.gates[layer, t]))
            for layer in range(routed.experts.shape[0]))
        lines.append(f"{t:4d} {_shown(piece)!s:>8}  {layers}")
    return "\n".join(lines)


def load_table(routed: list[RoutedText], n_experts: int) -> str:
    """Per layer, each expert's share (%) of every input's assignments, inputs side by side."""
    shares = [expert_share(r, n_experts) for r in routed]
    names = [r.name for r in routed]
    width = max(8, *(len(n) for n in names))
    lines = []
    for layer in range(shares[0].shape[0]):
        lines.append(f"MoE layer {layer}: share of assignments (%)")
        lines.append("expert  " + "".join(f"{n:>{width + 2}}" for n in names))
        for e in range(n_experts):
            lines.append(f"{e:>6}  " + "".join(f"{100 * s[layer, e]:>{width + 2}.1f}" for s in shares))
        lines.append("max/mean" + "".join(f"{s[layer].max() * n_experts:>{width + 2}.2f}" for s in shares))
    return "\n".join(lines)


def write_table(routed: list[RoutedText], n_experts: int, path: Path) -> None:
    shares = [expert_share(r, n_experts) for r in routed]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", "expert"] + [r.name for r in routed])
        for layer in range(shares[0].shape[0]):
            for e in range(n_experts):
                writer.writerow([layer, e] + [f"{s[layer, e]:.6f}" for s in shares])


def draw(routed: list[RoutedText], n_experts: int, path: Path) -> None:
    """Each input's tokens on coloured cells (first-choice expert), one band of rows per layer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab20" if n_experts > 10 else "tab10").colors
    rows = []  # (label, [(column, width, text, expert)])
    for r in routed:
        for layer in range(r.experts.shape[0]):
            cells, column, line = [], 0, 0
            for t, piece in enumerate(r.tokens):
                shown = "".join(SHOWN.get(c, c) for c in piece) or "∅"
                width = len(shown)
                if column + width > ROW_WIDTH and cells:
                    rows.append((f"{r.name}, layer {layer}" if line == 0 else "", cells))
                    cells, column, line = [], 0, line + 1
                cells.append((column, width, shown, int(r.experts[layer, t, 0])))
                column += width
            rows.append((f"{r.name}, layer {layer}" if line == 0 else "", cells))
    fig, ax = plt.subplots(figsize=(12, 0.32 * len(rows) + 0.8))
    for row, (label, cells) in enumerate(rows):
        for column, width, shown, expert in cells:
            colour = colours[expert % len(colours)] if expert >= 0 else (1, 1, 1)
            ax.add_patch(plt.Rectangle((column, row), width, 0.9, facecolor=colour, edgecolor="white", lw=0.5))
            ax.text(column + width / 2, row + 0.48, shown, ha="center", va="center", fontsize=8, family="monospace")
        ax.text(-0.8, row + 0.45, label, ha="right", va="center", fontsize=8)
    ax.set_xlim(-14, ROW_WIDTH)
    ax.set_ylim(len(rows), 0)
    ax.axis("off")
    shown_experts = min(n_experts, len(colours))
    ax.set_title("first-choice expert of each token" + (" (colours repeat every 20 experts)" if n_experts > 20 else ""),
                 fontsize=9)
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=colours[e]) for e in range(shown_experts)],
              labels=[f"expert {e}" for e in range(shown_experts)], ncol=min(shown_experts, 10),
              loc="upper center", bbox_to_anchor=(0.55, 0.0), fontsize=7, frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _shown(piece: str) -> str:
    return "".join(SHOWN.get(c, c) for c in piece)


def _inputs(args) -> dict[str, str]:
    texts = {}
    for i, text in enumerate(args.text or []):
        texts[f"text {i + 1}" if len(args.text) > 1 else "text"] = text
    for name in args.file or []:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"--file {path}: no such file")
        texts[path.name] = path.read_text(encoding="utf-8")
    return texts or dict(DEFAULT_TEXTS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minimoe.route", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path,
                        help="a minimoe run folder or a Hugging Face model directory")
    parser.add_argument("--text", action="append", help="a text to route (repeat for several)")
    parser.add_argument("--file", action="append", help="a UTF-8 text file to route (repeat for several)")
    parser.add_argument("--out", type=Path, default=Path("routing"),
                        help=f"folder for {PICTURE} and {TABLE} (default: routing/)")
    parser.add_argument("--quiet", action="store_true", help="print the load table only, not every token")
    return parser


def main(argv=None) -> list[RoutedText]:
    args = build_parser().parse_args(argv)
    try:
        texts = _inputs(args)
        model, tokens = load(args.model)
        routed = [route(model, tokens, name, text) for name, text in texts.items()]
        if args.out.exists() and not args.out.is_dir():
            raise NotADirectoryError(f"--out {args.out} is a file; give a folder")
        args.out.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError, TypeError) as err:
        raise SystemExit(f"minimoe.route: {err}") from None
    n_experts = model.moe_layers()[0].cfg.n_experts
    if not args.quiet:
        for r in routed:
            print(choices_text(r))
            print()
    print(load_table(routed, n_experts))
    write_table(routed, n_experts, args.out / TABLE)
    draw(routed, n_experts, args.out / PICTURE)
    print(f"\nwrote {args.out / PICTURE} and {args.out / TABLE}")
    return routed


if __name__ == "__main__":
    main()
