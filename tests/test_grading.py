"""The graders have teeth: the reference answers score full marks, every grader test fails on the
untouched stubs with NotImplementedError, every recorded wrong answer loses points, every stub and
shortcut earns nothing, every alternative correct answer scores full marks, and a class of
submissions (solutions, stubs, a mix, one that loops, prints, exits and changes global state) gets
the expected scoreboard.

The graders run the way a learner and an instructor run them, in subprocesses (`python -m
minimoe.grade`, and `python -m pytest graders --impl=wrong` for the wrong answers), started together
at the beginning, all with one seed for the random inputs (printed, to replay a failure). A
learner's own work in exercises/ does not break this file: an exercise whose body is no longer the
stub is left out of the stub checks.
"""
import ast
import csv
import importlib
import inspect
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from graders.wrong_answers import ALTERNATIVES, WRONG_ANSWERS
from minimoe import grade

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(path.stem for path in (ROOT / "solutions").glob("ex*.py"))
CLASS_TIMEOUT_S = 2  # the looping learner costs this once, not the run


def _make_class(folder):
    """Four learners: the reference answers, the stubs as handed out, a mix (lessons 05 and 09
    solved), and one whose softmax loops forever and whose modules print, change global state
    (NumPy's seed and error settings, minimoe's backend) and, for lesson 08, exit at import."""
    for learner in ("solutions", "stubs", "mix", "loops"):
        (folder / learner).mkdir(parents=True)
    for module in MODULES:
        shutil.copy(ROOT / "solutions" / f"{module}.py", folder / "solutions")
        shutil.copy(ROOT / "exercises" / f"{module}.py", folder / "stubs")
        source = "solutions" if module[:4] in ("ex05", "ex09") else "exercises"
        shutil.copy(ROOT / source / f"{module}.py", folder / "mix")
        shutil.copy(ROOT / "solutions" / f"{module}.py", folder / "loops")
    looping = folder / "loops" / "ex01_jacobs.py"
    text = looping.read_text().replace(
        "    shifted = x - x.max(axis=axis, keepdims=True)",
        "    while True:\n        pass\n    shifted = x - x.max(axis=axis, keepdims=True)")
    text = text.replace("import numpy as np\n", "import numpy as np\n\nimport minimoe.backend\n"
                        "print('a learner printing')\nnp.random.seed(3)\nnp.seterr(all='raise')\n"
                        "minimoe.backend.use('strict')\n", 1)
    looping.write_text(text)
    (folder / "loops" / "ex08_specialisation.py").write_text("import sys\nsys.exit(3)\n")
    with open(folder / "loops" / "ex00_autograd.py", "a") as handle:
        handle.write("\nprint('x' * 100000)\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Starts every grading run at once and returns {name: (exit code, stdout, stderr)}."""
    wrong_json = tmp_path_factory.mktemp("wrong") / "wrong.json"
    class_dir = tmp_path_factory.mktemp("class")
    _make_class(class_dir)
    commands = {
        "solutions_json": ["-m", "minimoe.grade", "--solutions", "--json"],
        "exercises_json": ["-m", "minimoe.grade", "--json"],
        "solutions_table": ["-m", "minimoe.grade", "--solutions"],
        "exercises_table": ["-m", "minimoe.grade"],
        "unknown_name": ["-m", "minimoe.grade", "no_such_exercise"],
        "submission": ["-m", "minimoe.grade", "--json", "--submission", str(class_dir / "mix")],
        "class": ["-m", "minimoe.grade", "--class", str(class_dir), "--timeout", str(CLASS_TIMEOUT_S)],
        "wrong": ["-m", "pytest", "graders", "--impl=wrong", "-q", "--tb=no", "-p", "no:cacheprovider",
                  "-o", "addopts=", f"--score-json={wrong_json}"],
    }
    seed = os.environ.get(grade.SEED_VARIABLE) or str(secrets.randbelow(2**31))
    print(f"grading runs with {grade.SEED_VARIABLE}={seed}")
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", **{grade.SEED_VARIABLE: seed})
    started = {name: subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name, args in commands.items()}
    done = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=300)
        done[name] = (process.returncode, stdout, stderr)
    done["wrong_records"] = json.loads(wrong_json.read_text())["tests"] if wrong_json.is_file() else None
    done["class_dir"] = class_dir
    return done


def _summary(runs, name):
    code, stdout, stderr = runs[name]
    assert code == 0, f"python -m minimoe.grade exited with {code}:\n{stderr}"
    return json.loads(stdout)


def _is_stub(function):
    body = function.body[1:] if ast.get_docstring(function) is not None else function.body
    return (len(body) == 1 and isinstance(body[0], ast.Raise)
            and "NotImplementedError" in ast.unparse(body[0]))


def untouched_stubs():
    """(module, exercise) pairs whose code is still the stub: only `raise NotImplementedError(...)`."""
    stubs = set()
    for path in (ROOT / "exercises").glob("ex*.py"):
        try:
            tree = ast.parse(path.read_text())
        except SyntaxError:  # a learner's work in progress: none of its exercises is a stub
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and _is_stub(node):
                stubs.add((path.stem, node.name))
            elif isinstance(node, ast.ClassDef):
                methods = [n for n in node.body if isinstance(n, ast.FunctionDef)]
                if methods and all(map(_is_stub, methods)):
                    stubs.add((path.stem, node.name))
    return stubs


# ---- (a) the reference answers score full marks --------------------------------------------------

def test_solutions_score_full_marks(runs):
    summary = _summary(runs, "solutions_json")
    failed = [t["test"] for e in summary["exercises"] for t in e["tests"] if t["outcome"] != "passed"]
    assert not failed, f"the reference answers fail these graders: {failed}"
    assert summary["score"] == summary["max_score"] > 0
    assert len(summary["exercises"]) >= 25, "the course promises at least 25 exercises"
    assert {e["module"] for e in summary["exercises"]} == set(MODULES), "every lesson has graded exercises"


# ---- (b) every grader fails on the untouched stubs, for the right reason ------------------------

def test_every_grader_fails_on_the_stubs_with_not_implemented_error(runs):
    stubs = untouched_stubs()
    summary = _summary(runs, "exercises_json")
    graded = {(e["module"], e["exercise"]) for e in summary["exercises"]}
    reference = {(e["module"], e["exercise"]) for e in _summary(runs, "solutions_json")["exercises"]}
    assert graded == reference, "the same exercises are graded in exercises/ and solutions/"
    wrong_reason = [(t["test"], t["outcome"], t["exception"])
                    for e in summary["exercises"] if (e["module"], e["exercise"]) in stubs
                    for t in e["tests"] if (t["outcome"], t["exception"]) != ("failed", "NotImplementedError")]
    assert not wrong_reason, f"graders that do not fail on an untouched stub with NotImplementedError: {wrong_reason}"


# ---- (c) every recorded wrong answer loses points; stubs and shortcuts earn nothing -------------

def _records_of(runs):
    code, stdout, stderr = runs["wrong"]
    records = runs["wrong_records"]
    assert code in (0, 1) and records is not None, f"pytest graders --impl=wrong could not run:\n{stdout}\n{stderr}"
    by_answer = {}
    for record in records:
        by_answer.setdefault(record["wrong_answer"], []).append(record)
    unused = [w.id for w in WRONG_ANSWERS + ALTERNATIVES if w.id not in by_answer]
    assert not unused, f"wrong answers that no grader ran (misspelt exercise?): {unused}"
    return by_answer


def test_every_wrong_answer_loses_points(runs):
    by_answer = _records_of(runs)
    accepted = [f"{w.id} ({w.why})" for w in WRONG_ANSWERS if w.kind == "wrong" and not any(
        r["outcome"] == "failed" and r["exception"] != "NotImplementedError" for r in by_answer[w.id])]
    assert not accepted, f"wrong answers the graders accept: {accepted}"


def test_every_stub_and_shortcut_earns_nothing(runs):
    """A stub (zeros of the right shape, uniform weights, always raising) or a call to the library's
    own version must fail every test of its exercise: no test awards points for a gradient, an
    invariant or an error alone."""
    by_answer = _records_of(runs)
    earning = [f"{w.id} passes {r['test'].split('::')[-1]}" for w in WRONG_ANSWERS
               if w.kind in ("stub", "shortcut") for r in by_answer[w.id] if r["outcome"] != "failed"]
    assert not earning, f"stubs and shortcuts that earn points: {earning}"
    graded = {(e["module"], e["exercise"]) for e in _summary(runs, "solutions_json")["exercises"]}
    stubbed = {(w.module, w.exercise) for w in WRONG_ANSWERS if w.kind == "stub"}
    assert graded <= stubbed, f"exercises without generated stubs: {sorted(graded - stubbed)}"
    assert sum(w.kind == "shortcut" for w in WRONG_ANSWERS) >= 10


def test_alternative_correct_answers_score_full_marks(runs):
    """The tolerances admit every correct method the lessons teach (Phi from the engine's normal_cdf)."""
    by_answer = _records_of(runs)
    failing = [f"{w.id}: {r['message']}" for w in ALTERNATIVES for r in by_answer[w.id] if r["outcome"] != "passed"]
    assert not failing, f"correct answers the graders reject: {failing}"


def test_every_exercise_has_a_wrong_answer(runs):
    exercises = {(e["module"], e["exercise"]) for e in _summary(runs, "solutions_json")["exercises"]}
    covered = {(w.module, w.exercise) for w in WRONG_ANSWERS if w.kind == "wrong"}
    assert exercises <= covered, f"exercises with no recorded wrong answer: {sorted(exercises - covered)}"


# ---- (d) the command a learner runs ---------------------------------------------------------------

def test_grade_prints_the_score_line(runs):
    max_score = _summary(runs, "solutions_json")["max_score"]
    for name in ("solutions_table", "exercises_table"):
        code, stdout, stderr = runs[name]
        assert code == 0, f"{name}: exit code {code}\n{stderr}"
        assert re.fullmatch(r"score: \d+(\.\d+)?/\d+", stdout.strip().splitlines()[-1]), stdout[-300:]
    assert runs["solutions_table"][1].strip().endswith(f"score: {max_score:g}/{max_score:g}")
    all_stubs = {(e["module"], e["exercise"]) for e in _summary(runs, "solutions_json")["exercises"]}
    if all_stubs <= untouched_stubs():  # a fresh clone; a learner's work scores more
        assert runs["exercises_table"][1].strip().endswith(f"score: 0/{max_score:g}")


def test_grade_explains_a_missing_graders_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(grade, "REPO_ROOT", tmp_path)
    assert grade.main([]) == 2
    assert "graders/ was not found" in capsys.readouterr().err


def test_grade_rejects_an_unknown_exercise_name(runs):
    code, _, stderr = runs["unknown_name"]
    assert code == 2 and "no exercise called no_such_exercise" in stderr


# ---- the stubs and the answers describe the same functions --------------------------------------

@pytest.mark.parametrize("module_name", MODULES)
def test_stubs_match_their_solutions(module_name):
    """Same names, signatures and docstrings (the contract), so the two cannot drift apart."""
    solution = importlib.import_module(f"solutions.{module_name}")
    stubs = sorted(name for module, name in untouched_stubs() if module == module_name)
    if not stubs:
        pytest.skip(f"every exercise in exercises/{module_name}.py has been worked on")
    exercise = importlib.import_module(f"exercises.{module_name}")
    answers = {n for n, v in vars(solution).items()
               if not n.startswith("_") and getattr(v, "__module__", None) == solution.__name__}
    assert answers <= set(vars(exercise)), f"missing from exercises/{module_name}.py: {answers - set(vars(exercise))}"
    for name in stubs:
        mine, reference = getattr(exercise, name), getattr(solution, name)
        assert inspect.getdoc(mine) == inspect.getdoc(reference), f"{module_name}.{name}: docstrings differ"
        if inspect.isfunction(reference):
            assert inspect.signature(mine) == inspect.signature(reference), f"{module_name}.{name}: signatures differ"


def test_the_exercises_readme_lists_every_exercise_with_its_points(runs):
    listed = {name: int(points) for name, points in
              re.findall(r"`(\w+)` \((\d+)\)", (ROOT / "exercises" / "README.md").read_text())}
    graded = {e["exercise"]: e["points"] for e in _summary(runs, "solutions_json")["exercises"]}
    assert listed == graded


@pytest.mark.parametrize("module_name", MODULES)
def test_the_lesson_sections_the_graders_cite_exist(module_name):
    """Every failure names a lesson section; once the lesson exists, it must have that heading."""
    from graders._checks import notebook_for

    notebook = ROOT / notebook_for(module_name)
    if not notebook.is_file():
        pytest.skip(f"lesson {module_name[2:4]} is not written yet")
    cited = set(re.findall(r'see\("([^"]+)"\)', (ROOT / "graders" / f"test_{module_name}.py").read_text()))
    cells = json.loads(notebook.read_text())["cells"]
    headings = {line.lstrip("#").strip().lower() for cell in cells if cell["cell_type"] == "markdown"
                for line in "".join(cell["source"]).splitlines() if line.startswith("#")}
    missing = sorted(s for s in cited if not any(s.lower() in heading for heading in headings))
    assert not missing, f"{notebook.name} has no heading for the sections its graders cite: {missing}"


# ---- (e) an instructor grades a submission and a class --------------------------------------------

def _module_points(summary):
    points = {}
    for e in summary["exercises"]:
        points[e["module"]] = points.get(e["module"], 0) + e["points"]
    return points


def _expected_mix(reference, exercises):
    """Lessons 05 and 09 at full marks, the rest what exercises/ scores (0 on a fresh clone)."""
    points = _module_points(reference)
    earned = sum(e["earned"] for e in exercises["exercises"] if e["module"][:4] not in ("ex05", "ex09"))
    return points["ex05_stability"] + points["ex09_scale"] + earned


def test_grade_a_submission_folder(runs):
    mix = _summary(runs, "submission")
    assert mix["score"] == pytest.approx(_expected_mix(_summary(runs, "solutions_json"), _summary(runs, "exercises_json")))
    assert mix["impl"] == str((runs["class_dir"] / "mix").resolve()) and isinstance(mix["seed"], int)


def test_grade_a_class_writes_the_scoreboard(runs):
    code, stdout, stderr = runs["class"]
    assert code == 0, f"python -m minimoe.grade --class exited with {code}:\n{stdout}\n{stderr}"
    board = json.loads((runs["class_dir"] / "scoreboard.json").read_text())
    with open(runs["class_dir"] / "scoreboard.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    reference, exercises = _summary(runs, "solutions_json"), _summary(runs, "exercises_json")
    max_score, points = reference["max_score"], _module_points(reference)
    columns = [f"{e['module']}.{e['exercise']}" for e in reference["exercises"]]
    assert board["exercises"] == columns and board["max_score"] == max_score
    assert [row["learner"] for row in table] == ["loops", "mix", "solutions", "stubs"], "one row per learner"
    assert list(table[0]) == ["learner", *columns, "total", "error"], "one column per exercise, then the total"
    totals = {row["learner"]: float(row["total"]) for row in table}
    assert totals["solutions"] == max_score
    assert totals["stubs"] == pytest.approx(exercises["score"])
    assert totals["mix"] == pytest.approx(_expected_mix(reference, exercises))
    # The looping softmax and the module that exits cost their own points only: nothing else breaks,
    # whatever the learner printed or changed in the global state.
    softmax = next(e["points"] for e in reference["exercises"] if e["exercise"] == "softmax")
    assert totals["loops"] == pytest.approx(max_score - softmax - points["ex08_specialisation"])
    loops = next(r for r in board["learners"] if r["learner"] == "loops")
    assert loops["hints"]["ex01_jacobs.softmax"].startswith("GraderTimeout")
    assert all(not row["error"] for row in table)
