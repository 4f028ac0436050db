"""Generate text from a trained run.

    python -m minimoe.sample --run runs/laptop-moe --prompt "def " --n 300 --temperature 0.8

`load_model(run_dir)` rebuilds the model from the checkpoint's own config, so it works for any run
folder that `minimoe.train` wrote (lessons 04 and 08 use it to inspect a trained model). The
command prints each character as it is drawn.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from . import backend
from .data import CharTokenizer
from .models import Transformer
from .models.transformer import generate_stream
from .train import CHECKPOINT, MAX_SAMPLE_LENGTH, MAX_SEED, check_parameters, read_checkpoint


def load_model(run_dir, backend_name: str | None = None) -> Transformer:
    """The trained model of a run folder, in evaluation mode, on `backend_name` (default: the
    current backend). The checkpoint is checked first (configs, shapes, finite weights)."""
    path = Path(run_dir) / CHECKPOINT
    checkpoint, model_config, _ = read_checkpoint(path)
    if backend_name is not None:
        backend.use(backend_name)
    model = Transformer(model_config)
    check_parameters(path, checkpoint, model)
    model.load_state_dict(checkpoint.model_state)
    return model.eval()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minimoe.sample",
                                     description="Generate text from a run folder written by minimoe.train.")
    parser.add_argument("--run", type=Path, required=True, help="the run folder (holds checkpoint.npz)")
    parser.add_argument("--prompt", default="\n", help="text to continue (newline and printable ASCII only)")
    parser.add_argument("--n", type=int, default=200,
                        help=f"characters to generate, 0 to {MAX_SAMPLE_LENGTH:,} (default 200)")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="0 = always the likeliest character (default 0.8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling draws (default 0)")
    parser.add_argument("--backend", choices=backend.KNOWN_BACKENDS, default="numpy")
    return parser


def check_options(n, temperature, seed) -> None:
    """ValueError naming the first option out of range."""
    if not 0 <= n <= MAX_SAMPLE_LENGTH:
        raise ValueError(f"--n must be between 0 and {MAX_SAMPLE_LENGTH:,} characters (each costs a forward "
                         f"pass; sample longer texts in pieces, continuing each from the last), got {n:,}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"--temperature must be a finite number >= 0 (0 picks the likeliest character), "
                         f"got {temperature}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"--seed must be between 0 and {MAX_SEED}, got {seed}")


def main(argv=None, out=None) -> str:
    """Prints the prompt, then each character as it is generated; returns the whole text."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = out or sys.stdout
    tokenizer = CharTokenizer()
    try:
        check_options(args.n, args.temperature, args.seed)
        prompt_text = args.prompt or "\n"  # an empty prompt starts a new line
        prompt = tokenizer.encode(prompt_text)
        model = load_model(args.run, args.backend)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    pieces = [prompt_text]
    out.write(prompt_text)
    for token in generate_stream(model, prompt, args.n, args.temperature, args.seed):
        pieces.append(tokenizer.decode([token]))
        out.write(pieces[-1])
        out.flush()
    out.write("\n")
    return "".join(pieces)


if __name__ == "__main__":
    main()
