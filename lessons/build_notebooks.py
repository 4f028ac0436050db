"""Builds the lesson notebooks from their sources, runs them, and checks what is committed.

The sources in `lessons/src/NN_name.py` are the truth. They are plain Python in jupytext's
"percent" format: `# %%` starts a code cell, `# %% [markdown]` a markdown cell
whose lines start with `# `, and `# %% tags=["parameters"]` a code cell with tags. The notebooks
`lessons/NN_name.ipynb` are generated from them and committed *with the outputs of a full run*, so
a reader sees every plot before running anything.

    python lessons/build_notebooks.py              # every lesson: build, run in full mode, save
    python lessons/build_notebooks.py 01 03        # only these lessons
    python lessons/build_notebooks.py --no-run     # rebuild the cells only: after editing prose, the
                                                   # outputs are kept if no code cell changed
    python lessons/build_notebooks.py --fast 02    # run the committed notebook with MINIMOE_FAST=1
                                                   # (a check, as CI does: nothing is written)
    python lessons/build_notebooks.py --check      # exit 1 if a notebook is out of date with its
                                                   # source, has no outputs, shows an error, is
                                                   # over MAX_NOTEBOOK_BYTES, or has a markdown
                                                   # heading inside a code cell

Each run prints the lesson's wall time, the number the lessons README quotes.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

LESSONS = Path(__file__).resolve().parent
SOURCES = LESSONS / "src"
MAX_NOTEBOOK_BYTES = 2_000_000
CELL_LIMIT_S = {"full": 600, "fast": 90}  # a cell that runs longer than this is stuck, not slow
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}


# ---- source -> notebook ------------------------------------------------------------------------
def read_percent(path: Path) -> list:
    """The cells of a percent-format source, read by jupytext."""
    cells = jupytext.read(path, fmt="py:percent").cells
    for cell in cells:
        cell.pop("id", None)  # ids change on every build; without them diffs show only real changes
        cell.metadata = {"tags": cell.metadata["tags"]} if cell.metadata.get("tags") else {}
    return cells


# A comment line that looks like a markdown heading ("# ## 5. Title"): in a code cell it means a
# `# %% [markdown]` line is missing above it, and the heading would show as a comment in the code.
MARKDOWN_HEADING = re.compile(r"^# {0,3}#{1,6} \S")


def headings_in_code(cells) -> list[str]:
    """The markdown headings that sit inside code cells (empty when every heading is in prose)."""
    return [line for cell in cells if cell.cell_type == "code"
            for line in cell.source.splitlines() if MARKDOWN_HEADING.match(line)]


def notebook_from_source(path: Path):
    """The notebook of a source; refuses a source whose markdown heading landed in a code cell."""
    misplaced = headings_in_code(read_percent(path))
    if misplaced:
        raise SystemExit(f"{path.name}: markdown heading {misplaced[0]!r} is inside a code cell; "
                         "add a '# %% [markdown]' line above it")
    nb = nbformat.v4.new_notebook()
    nb.nbformat_minor = 4  # no cell ids (they arrived in 4.5)
    nb.cells = read_percent(path)
    nb.metadata = {"kernelspec": KERNEL, "language_info": {"name": "python"}}
    return nb


def notebook_path(source: Path) -> Path:
    return LESSONS / (source.stem + ".ipynb")


# ---- running ----------------------------------------------------------------------------------
def run(nb, fast: bool) -> float:
    """Executes `nb` in place in a fresh kernel started in lessons/; returns the wall time."""
    env_backup = dict(os.environ)
    os.environ.pop("MPLBACKEND", None)  # an exported Agg backend would leave the notebook without figures
    if fast:
        os.environ["MINIMOE_FAST"] = "1"
    else:
        os.environ.pop("MINIMOE_FAST", None)
    try:
        client = NotebookClient(nb, timeout=CELL_LIMIT_S["fast" if fast else "full"], kernel_name=KERNEL["name"], record_timing=False,
                                resources={"metadata": {"path": str(LESSONS)}})
        start = time.perf_counter()
        client.execute()
        return time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(env_backup)


def keep_outputs(old, new) -> bool:
    """Copies the outputs of `old` into `new` if their code cells are the same, in the same order
    (only prose changed); returns whether it did. With any code change, every output could be stale."""
    old_code = [c for c in old.cells if c.cell_type == "code"]
    new_code = [c for c in new.cells if c.cell_type == "code"]
    if [c.source for c in old_code] != [c.source for c in new_code]:
        return False
    for o, n in zip(old_code, new_code):
        n.outputs, n.execution_count = o.get("outputs", []), o.get("execution_count")
    return True


# ---- checks on what is committed -------------------------------------------------------------
def problems(source: Path) -> list[str]:
    """What is wrong with the committed notebook of `source` (empty when all is well)."""
    path = notebook_path(source)
    if not path.is_file():
        return [f"{path.name} is missing: run python lessons/build_notebooks.py {source.stem[:2]}"]
    found = []
    nb = nbformat.read(path, as_version=4)
    expected = read_percent(source)
    same = len(nb.cells) == len(expected) and all(
        a.cell_type == b.cell_type and a.source == b.source and a.metadata.get("tags", []) == b.metadata.get("tags", [])
        for a, b in zip(nb.cells, expected))
    if not same:
        found.append(f"{path.name} differs from src/{source.name}: rebuild it from the source")
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not any(c.get("outputs") for c in code):
        found.append(f"{path.name} has no outputs: commit it after a full run")
    if any(o.get("output_type") == "error" for c in code for o in c.get("outputs", [])):
        found.append(f"{path.name} has an error in its outputs")
    for heading in headings_in_code(expected):
        found.append(f"src/{source.name}: markdown heading {heading!r} is inside a code cell; "
                     "add a '# %% [markdown]' line above it")
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        found.append(f"{path.name} is {path.stat().st_size / 1e6:.1f} MB, over {MAX_NOTEBOOK_BYTES / 1e6:.0f} MB")
    return found


def select(names: list[str], found: list[Path]) -> list[Path]:
    """The files of `found` whose names start with one of `names` (all of them if `names` is empty)."""
    if not names:
        return found
    unknown = [n for n in names if not any(f.stem.startswith(n) for f in found)]
    if unknown:
        raise SystemExit(f"no lesson matches {unknown}; the lessons are {[f.stem for f in found]}")
    return [f for f in found if any(f.stem.startswith(n) for n in names)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--no-run", action="store_true",
                      help="rebuild cells from the sources without running them (outputs kept if no code cell changed)")
    mode.add_argument("--fast", action="store_true", help="run the committed notebooks in fast mode; write nothing")
    mode.add_argument("--check", action="store_true", help="check the committed notebooks; run nothing")
    args = parser.parse_args(argv)

    if args.fast:  # every committed notebook, whether or not it has a source here
        for path in select(args.lessons, sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))):
            print(f"{path.name}: fast mode, {run(nbformat.read(path, as_version=4), fast=True):.1f} s", flush=True)
        return 0
    failed = False
    for source in select(args.lessons, sorted(SOURCES.glob("[0-9][0-9]_*.py"))):
        target = notebook_path(source)
        if args.check:
            for problem in problems(source):
                print(problem)
                failed = True
            continue
        nb = notebook_from_source(source)
        if args.no_run:
            kept = target.is_file() and keep_outputs(nbformat.read(target, as_version=4), nb)
            print(f"{target.name}: cells rebuilt, outputs {'kept' if kept else 'dropped (a code cell changed: run it)'}")
        else:
            seconds = run(nb, fast=False)
            print(f"{target.name}: full run, {seconds:.1f} s", flush=True)
        nbformat.write(nb, target)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
