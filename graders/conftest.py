"""pytest set-up for the graders: which implementation is graded, points, and the score file.

    python -m pytest graders                         # grades exercises/ (MINIMOE_IMPL sets the default)
    python -m pytest graders --impl=solutions        # the reference answers: every test passes
    python -m pytest graders --impl=wrong            # every recorded wrong answer: each must fail
    python -m pytest graders --impl=wrong:softmax/no_max_shift     # one of them
    python -m pytest graders --exercise ex02 --exercise z_loss     # a subset

`python -m minimoe.grade` runs this in a subprocess and prints the table.

Each test is marked `@pytest.mark.exercise(NAME, points=P, uses=(...))`: it grades function NAME of
the test file's MODULE and is worth P points, split evenly across its parametrised cases. The
`fn` fixture hands it the implementation being graded; the functions named in `uses` (other
exercises it builds on) are replaced by the reference answers, so one failure does not cascade.
"""
import importlib
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from graders._checks import notebook_for
from graders.wrong_answers import WRONG_ANSWERS, WrongAnswer

PACKAGES = ("exercises", "solutions")
RECORDS = pytest.StashKey[dict]()
WRONG = pytest.StashKey[list]()  # the wrong answers under test, or None when grading a package


def pytest_addoption(parser):
    group = parser.getgroup("minimoe grading")
    group.addoption("--impl", default=os.environ.get("MINIMOE_IMPL", "exercises"),
                    help="what to grade: exercises (default, or $MINIMOE_IMPL), solutions, "
                         "wrong (every recorded wrong answer) or wrong:ID (one of them)")
    group.addoption("--exercise", action="append", default=[], metavar="NAME",
                    help="grade only NAME: a module (ex02 or ex02_sparse_gating) or an exercise "
                         "(topk_gating); repeat for several")
    group.addoption("--score-json", default=None, metavar="PATH",
                    help="write every test's exercise, points and outcome to PATH")


def pytest_configure(config):
    config.addinivalue_line("markers", "exercise(name, points, uses=()): the exercise a grader "
                                       "test checks and the points it is worth")
    impl = config.getoption("--impl")
    config.stash[RECORDS] = {}
    if impl in PACKAGES:
        config.stash[WRONG] = None
    elif impl == "wrong":
        config.stash[WRONG] = list(WRONG_ANSWERS)
    elif impl.startswith("wrong:"):
        chosen = [w for w in WRONG_ANSWERS if w.id == impl[len("wrong:"):]]
        if not chosen:
            raise pytest.UsageError(f"--impl={impl}: no such wrong answer; the ids are "
                                    f"{', '.join(w.id for w in WRONG_ANSWERS)}")
        config.stash[WRONG] = chosen
    else:
        raise pytest.UsageError(f"--impl={impl!r}: choose exercises, solutions, wrong or wrong:ID")


def _package(config):
    """Wrong answers are swapped into the reference package, one exercise at a time."""
    return "solutions" if config.stash[WRONG] is not None else config.getoption("--impl")


def _exercise_of(node):
    marker = node.get_closest_marker("exercise")
    if marker is None:
        raise pytest.UsageError(f"{node.nodeid} has no @pytest.mark.exercise(name, points=...) mark")
    return node.module.MODULE, marker.args[0], marker


def pytest_generate_tests(metafunc):
    """Under --impl=wrong, runs each test once per recorded wrong answer to its exercise."""
    wrong = metafunc.config.stash[WRONG]
    if wrong is None or "wrong_answer" not in metafunc.fixturenames:
        return
    module, exercise, _ = _exercise_of(metafunc.definition)
    cases = [w for w in wrong if (w.module, w.exercise) == (module, exercise)]
    metafunc.parametrize("wrong_answer", cases, ids=[w.id for w in cases])


def _matches(name, module, exercise):
    return name in (module, module[:4], exercise, f"{module}.{exercise}")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Gives every test its share of points, then keeps only what --exercise (and --impl=wrong) ask for."""
    cases = Counter((item.module.MODULE, item.originalname) for item in items)
    names = config.getoption("--exercise")
    wrong = config.stash[WRONG]
    keep, drop = [], []
    for item in items:
        module, exercise, marker = _exercise_of(item)
        selected = not names or any(_matches(name, module, exercise) for name in names)
        if wrong is not None:
            params = getattr(item, "callspec", None)
            selected = selected and params is not None and isinstance(params.params.get("wrong_answer"), WrongAnswer)
        if not selected:
            drop.append(item)
            continue
        keep.append(item)
        config.stash[RECORDS][item.nodeid] = {
            "test": item.nodeid, "module": module, "exercise": exercise,
            "lesson": notebook_for(module),
            "points": marker.kwargs["points"] / cases[(module, item.originalname)],
            "outcome": "not run", "exception": None, "message": None,
            "wrong_answer": item.callspec.params["wrong_answer"].id if wrong is not None else None,
        }
    unknown = [n for n in names if not any(_matches(n, *_exercise_of(i)[:2]) for i in items)]
    if unknown:
        known = sorted({f"{m}.{e}" for m, e, _ in map(_exercise_of, items)})
        pytest.exit(f"no exercise called {', '.join(unknown)}; the exercises are: {', '.join(known)}",
                    returncode=4)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def wrong_answer():
    """None, unless --impl=wrong parametrises it with a WrongAnswer."""
    return None


@pytest.fixture
def fn(request, wrong_answer, monkeypatch):
    """The function (or class) under test, from the package being graded."""
    module_name, exercise, marker = _exercise_of(request.node)
    module = importlib.import_module(f"{_package(request.config)}.{module_name}")
    uses = marker.kwargs.get("uses", ())
    if uses:
        reference = importlib.import_module(f"solutions.{module_name}")
        for name in uses:
            monkeypatch.setattr(module, name, getattr(reference, name))
    if wrong_answer is not None:
        return wrong_answer.function
    return getattr(module, exercise)


@pytest.fixture
def module(request):
    """The module being graded (for the given helpers an exercise takes, e.g. a dataclass)."""
    return importlib.import_module(f"{_package(request.config)}.{request.module.MODULE}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    record = item.config.stash[RECORDS].get(item.nodeid)
    if record is None or record["outcome"] == "failed":
        return report
    if report.failed:
        record["outcome"] = "failed"
        if call.excinfo is not None:
            record["exception"] = call.excinfo.typename
            record["message"] = str(call.excinfo.value)
    elif report.skipped:
        record["outcome"] = "skipped"
    elif report.when == "call":
        record["outcome"] = "passed"
    return report


def pytest_terminal_summary(terminalreporter, config):
    records = config.stash[RECORDS].values()
    if not records or config.stash[WRONG] is not None:
        return
    earned = sum(r["points"] for r in records if r["outcome"] == "passed")
    total = sum(r["points"] for r in records)
    terminalreporter.write_line(f"minimoe score ({config.getoption('--impl')}): {earned:g}/{total:g} "
                                f"(python -m minimoe.grade shows the table)")


def pytest_sessionfinish(session):
    path = session.config.getoption("--score-json")
    if path:
        records = list(session.config.stash[RECORDS].values())
        document = {"impl": session.config.getoption("--impl"), "tests": records}
        Path(path).write_text(json.dumps(document, indent=1))
