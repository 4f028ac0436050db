"""`python -m minimoe.grade`: grades your exercises and prints the score.

    python -m minimoe.grade                  # every exercise in exercises/
    python -m minimoe.grade ex02 z_loss      # lesson 02's exercises, and the z-loss
    python -m minimoe.grade --solutions      # the reference answers in solutions/ (full marks)
    python -m minimoe.grade --json           # one JSON document, for instructors

The graders are pytest tests in `graders/` at the root of the repository. They run here in a fresh
Python process, so the code graded is always what is saved on disk now. The table gives each
exercise's points, whether it passed, and for a failure the first thing that went wrong with the
lesson section that explains it; the last line is `score: N/M`. The exit code is 0 whenever
grading ran, whatever the score, and 2 when the graders could not run.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GRADER_TIMEOUT_S = 120  # per test, where pytest-timeout is installed: an endless loop fails, not hangs


class GradingError(Exception):
    """The graders could not run (as opposed to: they ran and some exercises failed)."""


def run_graders(impl: str, names: list[str]) -> dict:
    """Runs `python -m pytest graders` on `impl` and returns its per-test records."""
    if not (REPO_ROOT / "graders" / "conftest.py").is_file():
        raise GradingError(
            f"graders/ was not found next to the minimoe package (looked in {REPO_ROOT}). "
            "Grading needs a clone of the repository installed with `pip install -e .`, "
            "not a copy of the package alone.")
    with tempfile.TemporaryDirectory() as scratch:
        score_file = Path(scratch) / "score.json"
        command = [sys.executable, "-m", "pytest", "graders", "-q", "--tb=no", "--no-header",
                   "-p", "no:cacheprovider", "-o", "addopts=", f"--impl={impl}",
                   f"--score-json={score_file}"]
        command += [arg for name in names for arg in ("--exercise", name)]
        if importlib.util.find_spec("pytest_timeout") is not None:
            command += ["-p", "pytest_timeout", f"--timeout={GRADER_TIMEOUT_S}"]
        # Other plugins (notebook runners, ...) are not needed and slow pytest's start-up.
        env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        output = (done.stdout + done.stderr).strip()
        unknown = [line for line in output.splitlines() if "no exercise called" in line]
        if unknown:  # the graders' own message, without pytest's decoration
            raise GradingError(unknown[0].strip("! ").split("Exit: ")[-1])
        if done.returncode not in (0, 1) or not score_file.is_file():
            raise GradingError(f"the graders could not run (pytest exit code {done.returncode}):\n"
                               + "\n".join(output.splitlines()[-15:]))
        return json.loads(score_file.read_text())


def hint_for(test: dict) -> str:
    """One line for the table: what the failing test expected, or why the code did not run."""
    message = (test["message"] or "").strip().splitlines()
    first = message[0] if message else ""
    if test["exception"] == "NotImplementedError":
        stub_hint = first.split(": ", 1)[-1] if first.startswith(test["module"][:4]) else first
        return f"not done yet; hint: {stub_hint}" if stub_hint else "not done yet"
    if test["exception"] in (None, "AssertionError"):
        return first or f"failed; see {test['lesson']}"
    return f"{test['exception']}: {first} (in {test['test'].split('::')[-1]}; see {test['lesson']})"


def summarise(document: dict) -> dict:
    """Per-exercise points, result and hint, in the graders' order."""
    exercises: dict[tuple[str, str], dict] = {}
    for test in document["tests"]:
        key = (test["module"], test["exercise"])
        entry = exercises.setdefault(key, {
            "module": test["module"], "exercise": test["exercise"], "lesson": test["lesson"],
            "points": 0.0, "earned": 0.0, "passed": True, "hint": None, "tests": []})
        entry["points"] += test["points"]
        if test["outcome"] == "passed":
            entry["earned"] += test["points"]
        else:
            entry["passed"] = False
            entry["hint"] = entry["hint"] or hint_for(test)
        entry["tests"].append({k: test[k] for k in ("test", "points", "outcome", "exception", "message")})
    rows = list(exercises.values())
    for row in rows:
        row["points"], row["earned"] = round(row["points"], 6), round(row["earned"], 6)
    return {"impl": document["impl"], "score": round(sum(r["earned"] for r in rows), 6),
            "max_score": round(sum(r["points"] for r in rows), 6), "exercises": rows}


def print_table(summary: dict) -> None:
    rows = summary["exercises"]
    names = [f"{r['module']}.{r['exercise']}" for r in rows]
    width = max(len("exercise"), *map(len, names))
    print(f"grading {summary['impl']}/ ({len(rows)} exercises)\n")
    print(f"{'exercise':<{width}}  {'points':>7}  {'result':<6}  hint")
    for name, row in zip(names, rows):
        points = f"{row['earned']:g}/{row['points']:g}"
        result = "passed" if row["passed"] else "failed"
        print(f"{name:<{width}}  {points:>7}  {result:<6}  {row['hint'] or ''}")
    print(f"\nscore: {summary['score']:g}/{summary['max_score']:g}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minimoe.grade",
        description="Grade the exercises: a table of exercises, points, passed or failed and a hint, "
                    "then the line 'score: N/M'.")
    parser.add_argument("exercises", nargs="*", metavar="EXERCISE",
                        help="grade only these: a lesson (ex02), a module (ex02_sparse_gating) or an "
                             "exercise (topk_gating); default: all")
    parser.add_argument("--solutions", action="store_true",
                        help="grade the reference answers in solutions/ instead of exercises/")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (score, each exercise and each test) instead of the table")
    args = parser.parse_args(argv)
    try:
        document = run_graders("solutions" if args.solutions else "exercises", args.exercises)
    except GradingError as error:
        print(f"minimoe.grade: {error}", file=sys.stderr)
        return 2
    summary = summarise(document)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
