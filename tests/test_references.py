"""No learner-facing file names a file that is not in the repository.

A learner who follows a reference ("see docs/formulas.md §8", "run lessons/build_notebooks.py")
must find the file. This scans the READMEs, the lesson sources, the exercises, the solutions and
answer keys, the docs, the tests and the library's docstrings and comments for names that look
like files (a name ending in .md, .py, .ipynb, ...) and resolves each against the repository:
from its root, from the naming file's folder, or, for a bare name, anywhere in it. A path whose
first folder is neither in the repository nor beside the naming file is a path of the learner's
own (a class folder `alice/...`, a run folder `runs/...`) and is not checked.

Two kinds of names are not references to the repository and are allowed: the files a run writes
(a training run's `config.json`, `checkpoint.npz`, ...; listed in RUN_OUTPUTS), and scratch files
that a test or the code builds as a path itself (`tmp_path / "garbage.npz"`).
"""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LEARNER_FACING = ("README.md", "lessons/README.md", "lessons/src/", "exercises/", "docs/", "solutions/",
                  "minimoe/", "tests/")
SCANNED_SUFFIXES = (".py", ".md")
FILE_NAME = re.compile(
    r"(?<![\w./-])((?:[\w-]+/)*[\w.-]*\w\.(?:md|py|ipynb|txt|json|jsonl|npz|toml|ya?ml|csv|png|svg|sh))(?![\w/])")
# Files a run writes (a training run, the bench, the grader), named in docs and messages, never committed.
RUN_OUTPUTS = {"config.json", "checkpoint.npz", "metrics.jsonl", "sample.txt", "loss.png", "expert_load.png",
               "dropped.png", "args.json", "score.json", "bench-results.json", "scoreboard.csv", "scoreboard.json",
               "routing.png", "load.csv",
               "tokenizer.json", "model.safetensors", "model.safetensors.index.json"}  # ... and a checkpoint folder holds
# Placeholders in documented commands: a name pattern, papermill's input and output, a text of your own.
PLACEHOLDERS = {"lessons/src/NN_name.py", "in.ipynb", "out.ipynb", "notes.txt"}
# A name the file itself builds as a path (`folder / "name"`): a scratch or output file.
BUILT_PATH = re.compile(r"/\s*f?[\"']([^\"'\s]+)[\"']")
# Names of files in other projects' repositories that the library cites as the source of a
# convention (with the project named beside them).
OTHER_PROJECTS = {"modeling_deepseek.py"}


def repository_files() -> list[str]:
    """Tracked files and untracked files git does not ignore (the working tree as committed next)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    return [name for name in listed if name and (ROOT / name).exists()]


FILES = repository_files()
NAMES = {Path(name).name for name in FILES}


def learner_facing(files) -> list[str]:
    return sorted(name for name in files if name.endswith(SCANNED_SUFFIXES)
                  and (name in LEARNER_FACING or name.startswith(tuple(p for p in LEARNER_FACING if p.endswith("/")))))


def missing_references(name: str, text: str) -> list[str]:
    """The file names in `text` (the contents of repository file `name`) that resolve to nothing."""
    built = set(BUILT_PATH.findall(text))
    allowed = RUN_OUTPUTS | PLACEHOLDERS | OTHER_PROJECTS | built
    missing = []
    for reference in sorted(set(FILE_NAME.findall(text))):
        if reference in allowed or Path(reference).name in RUN_OUTPUTS:
            continue
        if (ROOT / reference).exists() or (ROOT / name).parent.joinpath(reference).exists():
            continue
        top = reference.split("/")[0]
        if "/" in reference and not (ROOT / top).exists() and not (ROOT / name).parent.joinpath(top).exists():
            continue  # a path in the learner's own folders (`alice/ex00_autograd.py`), not in the repository
        if "/" not in reference and reference in NAMES:
            continue
        missing.append(reference)
    return missing


def test_the_scan_finds_what_it_should():
    """The rule itself: a real path resolves, a missing one is reported, run outputs and built paths pass."""
    assert missing_references("README.md", "see docs/formulas.md and lessons/build_notebooks.py") == []
    absent = "docs/no_such_sheet" + ".md"  # spelled in two parts, so that this file does not name it
    assert missing_references("README.md", f"see {absent}") == [absent]
    assert missing_references("tests/test_train.py", 'path = tmp_path / "scratch.npz"; load("scratch.npz")') == []
    assert missing_references("README.md", "the run writes config.json and checkpoint.npz") == []
    assert missing_references("exercises/README.md", "a class folder: alice/ex00_autograd.py") == []
    assert missing_references("README.md", f"see lessons/{absent}") == [f"lessons/{absent}"]
    assert missing_references("lessons/src/03_switch_gshard.py", "model.moe.cfg and self.layer.py_thing") == []
    assert "docs/formulas.md" in FILES, "the course's formula sheet is part of the repository"


@pytest.mark.parametrize("name", learner_facing(FILES))
def test_every_named_file_exists(name):
    missing = missing_references(name, (ROOT / name).read_text(encoding="utf-8", errors="replace"))
    assert not missing, (f"{name} names {missing}, which is not in the repository: point the reference at a "
                         "file that is (the formula sheet is docs/formulas.md, the benchmark's workload "
                         "docs/performance.md), or add it to RUN_OUTPUTS here if a run writes it")
