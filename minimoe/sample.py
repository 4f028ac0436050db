"""Generate text from a trained run.

    python -m minimoe.sample --run runs/laptop-moe --prompt "def " --n 300 --temperature 0.8

`load_model(run_dir)` rebuilds the model from the checkpoint's own config, so it works for any run
folder that `minimoe.train` wrote (lessons 04 and 08 use it to inspect a trained model).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import backend
from .checkpoint import load_checkpoint
from .data import CharTokenizer
from .models import ModelConfig, Transformer, generate
from .train import CHECKPOINT


def load_model(run_dir, backend_name: str | None = None) -> Transformer:
    """The trained model of a run folder, in evaluation mode, on `backend_name` (default: the
    current backend)."""
    checkpoint = load_checkpoint(Path(run_dir) / CHECKPOINT)
    if backend_name is not None:
        backend.use(backend_name)
    model = Transformer(ModelConfig.from_dict(checkpoint.config["model"]))
    model.load_state_dict(checkpoint.model_state)
    return model.eval()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minimoe.sample",
                                     description="Generate text from a run folder written by minimoe.train.")
    parser.add_argument("--run", type=Path, required=True, help="the run folder (holds checkpoint.npz)")
    parser.add_argument("--prompt", default="\n", help="text to continue (newline and printable ASCII only)")
    parser.add_argument("--n", type=int, default=200, help="characters to generate (default 200)")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="0 = always the likeliest character (default 0.8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling draws (default 0)")
    parser.add_argument("--backend", choices=backend.KNOWN_BACKENDS, default="numpy")
    return parser


def main(argv=None) -> str:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n < 0 or args.temperature < 0:
        parser.error(f"--n and --temperature must be 0 or more, got {args.n} and {args.temperature}")
    tokenizer = CharTokenizer()
    try:
        prompt = tokenizer.encode(args.prompt or "\n")  # an empty prompt starts a new line
        model = load_model(args.run, args.backend)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    text = tokenizer.decode(generate(model, prompt, args.n, args.temperature, args.seed))
    print(text)
    return text


if __name__ == "__main__":
    main()
