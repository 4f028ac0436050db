"""`python -m minimoe.grade`: grades exercises and prints the score; grades a whole class.

    python -m minimoe.grade                  # every exercise in exercises/
    python -m minimoe.grade ex02 z_loss      # lesson 02's exercises, and the z-loss
    python -m minimoe.grade --solutions      # the reference answers in solutions/ (full marks)
    python -m minimoe.grade --json           # one JSON document, for instructors
    python -m minimoe.grade --submission DIR # one learner's exercise modules, anywhere on disk
    python -m minimoe.grade --class DIR      # every learner folder under DIR: a scoreboard

The graders are pytest tests in `graders/` at the root of the repository. They run here in a fresh
Python process, so the code graded is always what is saved on disk now, and a learner's code that
hangs, prints or changes global state cannot reach the next learner. The table gives each
exercise's points, whether it passed, and for a failure the first thing that went wrong with the
lesson section that explains it; the last line is `score: N/M`. The exit code is 0 whenever
grading ran, whatever the score, and 2 when the graders could not run.

Values are checked on random inputs drawn afresh on every run; the seed is printed (and set with
MINIMOE_GRADER_SEED or --seed), so a failure can be replayed. A class is graded with one seed.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SEED_VARIABLE = "MINIMOE_GRADER_SEED"
DEFAULT_TIMEOUT_S = 10.0  # per test: an endless loop fails that exercise, not the run
SCOREBOARD = "scoreboard"  # --class writes scoreboard.csv and scoreboard.json


class GradingError(Exception):
    """The graders could not run (as opposed to: they ran and some exercises failed)."""


def run_graders(impl: str, names: list[str], submission: Path | None = None,
                timeout_s: float = DEFAULT_TIMEOUT_S, seed: int | None = None) -> dict:
    """Runs `python -m pytest graders` on `impl` (or on the folder `submission`) in a fresh process
    and returns its per-test records."""
    if not (REPO_ROOT / "graders" / "conftest.py").is_file():
        raise GradingError(
            f"graders/ was not found next to the minimoe package (looked in {REPO_ROOT}). "
            "Grading needs a clone of the repository installed with `pip install -e .`, "
            "not a copy of the package alone.")
    if not timeout_s > 0:
        raise GradingError(f"the per-test timeout must be positive, got {timeout_s}")
    seed = seed_of_run() if seed is None else seed
    with tempfile.TemporaryDirectory() as scratch:
        score_file = Path(scratch) / "score.json"
        command = [sys.executable, "-m", "pytest", "graders", "-q", "--tb=no", "--no-header",
                   "-p", "no:cacheprovider", "-o", "addopts=", f"--impl={impl}",
                   f"--score-json={score_file}", f"--grader-timeout={timeout_s:g}"]
        if submission is not None:
            command.append(f"--submission={submission}")
        command += [arg for name in names for arg in ("--exercise", name)]
        # Other plugins (notebook runners, ...) are not needed and slow pytest's start-up.
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
                   **{SEED_VARIABLE: str(seed)})
        # A backstop above the per-test alarms: every exercise timing out once, plus start-up.
        limit_s = 120 + 60 * timeout_s
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the learner's code may have started processes too
            process.communicate()
            raise GradingError(f"grading did not finish within {limit_s:g} s (code that ignores the "
                               f"per-test timeout of {timeout_s:g} s)") from None
        output = output.strip()
        unknown = [line for line in output.splitlines() if "no exercise called" in line]
        if unknown:  # the graders' own message, without pytest's decoration
            raise GradingError(unknown[0].strip("! ").split("Exit: ")[-1])
        if process.returncode not in (0, 1) or not score_file.is_file():
            raise GradingError(f"the graders could not run (pytest exit code {process.returncode}):\n"
                               + "\n".join(output.splitlines()[-15:]))
        return json.loads(score_file.read_text())


def seed_of_run() -> int:
    """MINIMOE_GRADER_SEED if set, else a fresh one (printed with the results)."""
    return int(os.environ.get(SEED_VARIABLE) or secrets.randbelow(2**31))


def exercise_folder(path: Path) -> Path:
    """The folder holding a learner's exxx_*.py: the folder itself, or its exercises/ subfolder."""
    path = Path(path)
    if not path.is_dir():
        raise GradingError(f"{path} is not a folder; give the folder holding ex00_autograd.py, ex01_jacobs.py, ...")
    if not any(path.glob("ex[0-9][0-9]_*.py")) and (path / "exercises").is_dir():
        return path / "exercises"
    return path


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
    return {"impl": document["impl"], "seed": document.get("seed"), "score": round(sum(r["earned"] for r in rows), 6),
            "max_score": round(sum(r["points"] for r in rows), 6), "exercises": rows}


def print_table(summary: dict) -> None:
    rows = summary["exercises"]
    names = [f"{r['module']}.{r['exercise']}" for r in rows]
    width = max(len("exercise"), *map(len, names))
    print(f"grading {summary['impl']}/ ({len(rows)} exercises; random inputs from "
          f"{SEED_VARIABLE}={summary['seed']})\n")
    print(f"{'exercise':<{width}}  {'points':>7}  {'result':<6}  hint")
    for name, row in zip(names, rows):
        points = f"{row['earned']:g}/{row['points']:g}"
        result = "passed" if row["passed"] else "failed"
        print(f"{name:<{width}}  {points:>7}  {result:<6}  {row['hint'] or ''}")
    print(f"\nscore: {summary['score']:g}/{summary['max_score']:g}")


def grade_class(class_dir: Path, out_dir: Path, names: list[str], timeout_s: float, jobs: int = 1,
                seed: int | None = None) -> dict:
    """Grades every learner folder under `class_dir`, each in its own process, with one seed, and
    writes the scoreboard (CSV and JSON: one row per learner, one column per exercise, the total)."""
    class_dir = Path(class_dir)
    if not class_dir.is_dir():
        raise GradingError(f"--class {class_dir}: no such folder; give the folder holding one folder per learner")
    learners = sorted(p for p in class_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not learners:
        raise GradingError(f"{class_dir} holds no learner folders (expected {class_dir}/<learner>/ex00_autograd.py, ...)")
    seed = seed_of_run() if seed is None else seed

    def grade_one(folder):
        try:
            return folder.name, summarise(run_graders("exercises", names, exercise_folder(folder), timeout_s, seed)), None
        except GradingError as error:
            return folder.name, None, str(error)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(grade_one, learners))
    columns = list(dict.fromkeys(f"{e['module']}.{e['exercise']}" for _, summary, _ in results if summary
                                 for e in summary["exercises"]))
    max_points = {}
    for _, summary, _ in results:
        for e in summary["exercises"] if summary else ():
            max_points[f"{e['module']}.{e['exercise']}"] = e["points"]
    rows = []
    for name, summary, error in results:
        earned = {f"{e['module']}.{e['exercise']}": e["earned"] for e in summary["exercises"]} if summary else {}
        hints = {f"{e['module']}.{e['exercise']}": e["hint"] for e in summary["exercises"] if e["hint"]} if summary else {}
        scores = {column: earned.get(column, 0.0) for column in columns}
        rows.append({"learner": name, "scores": scores, "total": round(sum(scores.values()), 6),
                     "error": error, "hints": hints})
    board = {"seed": seed, "timeout_s": timeout_s, "exercises": columns,
             "max_points": max_points, "max_score": round(sum(max_points.values()), 6), "learners": rows}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{SCOREBOARD}.json").write_text(json.dumps(board, indent=1))
    with open(out_dir / f"{SCOREBOARD}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["learner", *columns, "total", "error"])
        for row in rows:
            writer.writerow([row["learner"], *(f"{row['scores'][c]:g}" for c in columns), f"{row['total']:g}",
                             row["error"] or ""])
    return board


def print_scoreboard(board: dict, out_dir: Path) -> None:
    width = max(len("learner"), *(len(r["learner"]) for r in board["learners"]))
    print(f"graded {len(board['learners'])} learners ({len(board['exercises'])} exercises; random inputs from "
          f"{SEED_VARIABLE}={board['seed']}; {board['timeout_s']:g} s per test)\n")
    print(f"{'learner':<{width}}  {'total':>9}")
    for row in board["learners"]:
        note = f"  could not be graded: {row['error'].splitlines()[0]}" if row["error"] else ""
        print(f"{row['learner']:<{width}}  {row['total']:>5g}/{board['max_score']:g}{note}")
    print(f"\nscoreboard: {Path(out_dir) / SCOREBOARD}.csv and .json")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minimoe.grade",
        description="Grade the exercises: a table of exercises, points, passed or failed and a hint, "
                    "then the line 'score: N/M'. With --class, a scoreboard for every learner.")
    parser.add_argument("exercises", nargs="*", metavar="EXERCISE",
                        help="grade only these: a lesson (ex02), a module (ex02_sparse_gating) or an "
                             "exercise (topk_gating); default: all")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--solutions", action="store_true",
                        help="grade the reference answers in solutions/ instead of exercises/")
    source.add_argument("--submission", type=Path, metavar="DIR",
                        help="grade the exercise modules (ex00_autograd.py, ...) in folder DIR, anywhere on disk")
    source.add_argument("--class", dest="class_dir", type=Path, metavar="DIR",
                        help="grade every learner folder DIR/<learner>/ and write DIR/scoreboard.csv and .json")
    parser.add_argument("--out", type=Path, metavar="DIR", help="with --class: where the scoreboard goes "
                        "(default: the class folder)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"seconds one test may run the graded code (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="with --class: learners graded at once, each in its own process (default 1)")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"the seed of the random inputs (default ${SEED_VARIABLE}, else a fresh one)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (score, each exercise and each test) instead of the table")
    args = parser.parse_args(argv)
    try:
        if args.class_dir is not None:
            out_dir = args.out or args.class_dir
            board = grade_class(args.class_dir, out_dir, args.exercises, args.timeout, args.jobs, args.seed)
            if args.json:
                print(json.dumps(board, indent=1))
            else:
                print_scoreboard(board, out_dir)
            return 0
        submission = exercise_folder(args.submission) if args.submission is not None else None
        impl = "solutions" if args.solutions else "exercises"
        document = run_graders(impl, args.exercises, submission, args.timeout, args.seed)
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
