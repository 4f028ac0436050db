"""The lesson notebooks: each runs top to bottom in fast mode, and the committed ones are in order.

Each notebook runs under nbmake in its own process (`pytest --nbmake`: a fresh kernel,
MINIMOE_FAST=1, fewer steps on the same code path) under a time limit; a notebook that raises
fails its test. A second test checks that every committed notebook was built
from its source in lessons/src, carries the outputs of a run, shows no error and is under 2 MB.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
NOTEBOOKS = sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))
# Fast mode must finish within 60 s on 2 cores; the rest is kernel start-up and head-room.
NOTEBOOK_LIMIT_S = 150
CELL_LIMIT_S = 90


def _build_module():
    spec = importlib.util.spec_from_file_location("build_notebooks", LESSONS / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_in_fast_mode(notebook):
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake",
               f"--nbmake-timeout={CELL_LIMIT_S}", str(notebook)]
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"} | {"MINIMOE_FAST": "1"}
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=NOTEBOOK_LIMIT_S, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{notebook.name} did not finish within {NOTEBOOK_LIMIT_S} s in fast mode")
    assert done.returncode == 0, f"{notebook.name} failed in fast mode:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


SOURCES = sorted((LESSONS / "src").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.stem)
def test_committed_notebook_is_built_from_its_source_and_run(source):
    problems = _build_module().problems(source)
    assert not problems, "\n".join(problems) + f"\n(fix: python lessons/build_notebooks.py {source.stem[:2]}, then commit the notebook)"


def test_a_markdown_heading_in_a_code_cell_is_refused(tmp_path):
    """A heading whose `# %% [markdown]` line is missing would show as a comment in the code."""
    source = tmp_path / "99_example.py"
    source.write_text("# %% [markdown]\n# # Title\n\n# %%\nx = 1\n#\n# ## 2. A lost heading\n\n"
                      "# %% [markdown]\n# ## 3. A heading in prose\n")
    build = _build_module()
    assert build.headings_in_code(build.read_percent(source)) == ["# ## 2. A lost heading"]
    with pytest.raises(SystemExit, match="inside a code cell"):
        build.notebook_from_source(source)
