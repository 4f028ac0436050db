"""pytest set-up for the graders: which implementation is graded, points, isolation, and the score file.

    python -m pytest graders                         # grades exercises/ (MINIMOE_IMPL sets the default)
    python -m pytest graders --submission=DIR        # grades the exercise modules in folder DIR
    python -m pytest graders --impl=solutions        # the reference answers: every test passes
    python -m pytest graders --impl=wrong            # every recorded wrong answer, stub, shortcut and
                                                     # alternative (correct) answer
    python -m pytest graders --impl=wrong:softmax/no_max_shift     # one of them
    python -m pytest graders --exercise ex02 --exercise z_loss     # a subset

`python -m minimoe.grade` runs this in a subprocess and prints the table.

Each test is marked `@pytest.mark.exercise(NAME, points=P, uses=(...))`: it grades function NAME of
the test file's MODULE and is worth P points, split evenly across its parametrised cases. The
`fn` fixture hands it the implementation being graded, guarded so that a call to one of the
library's own versions of the exercise (the grader module's `TWINS[NAME]`) fails the test; the
functions named in `uses` (other exercises it builds on) are replaced by the reference answers, so
one failure does not cascade. The `rng` fixture draws the test's random inputs from the run's seed.

The graded code is the learner's: every test runs under a time limit (`--grader-timeout`, 10 s;
after one time-out the exercise's other tests fail at once), and the global state a test can change
(minimoe's backend and random generators, NumPy's random state and error settings, attributes of
numpy and minimoe) is put back after it, so one exercise cannot break the next.
"""
import functools
import importlib
import importlib.util
import json
import math
import os
import signal
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import minimoe
import minimoe.functional
from graders._checks import SEED, SEED_VARIABLE, forbid_calls, notebook_for, random_inputs
from graders.wrong_answers import ALTERNATIVES, WRONG_ANSWERS, WrongAnswer
from minimoe import backend, tensor
from minimoe import rng as minimoe_rng

PACKAGES = ("exercises", "solutions")
RECORDS = pytest.StashKey[dict]()
WRONG = pytest.StashKey[list]()  # the wrong answers under test, or None when grading a package
TIMED_OUT = pytest.StashKey[set]()  # (module, exercise) pairs that already ran out of time
LOADED = pytest.StashKey[dict]()  # module name -> loaded submission module, or the error loading it
DEFAULT_TIMEOUT_S = 10.0
RULES = "see exercises/README.md, 'Rules of the game'"


class SubmissionError(Exception):
    """A learner's module could not be loaded (it raised, exited or is missing)."""


class GraderTimeout(BaseException):
    """The learner's code ran past the per-test time limit (a BaseException, so that a learner's
    `except Exception` cannot swallow it; the alarm also repeats every second until the test ends)."""


def pytest_addoption(parser):
    group = parser.getgroup("minimoe grading")
    group.addoption("--impl", default=os.environ.get("MINIMOE_IMPL", "exercises"),
                    help="what to grade: exercises (default, or $MINIMOE_IMPL), solutions, "
                         "wrong (every recorded wrong answer) or wrong:ID (one of them)")
    group.addoption("--submission", default=None, metavar="DIR",
                    help="grade the exercise modules (ex00_autograd.py, ...) in folder DIR")
    group.addoption("--exercise", action="append", default=[], metavar="NAME",
                    help="grade only NAME: a module (ex02 or ex02_sparse_gating) or an exercise "
                         "(topk_gating); repeat for several")
    group.addoption("--grader-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                    help=f"seconds one test may run the graded code (default {DEFAULT_TIMEOUT_S:g})")
    group.addoption("--score-json", default=None, metavar="PATH",
                    help="write every test's exercise, points and outcome to PATH")


def pytest_configure(config):
    config.addinivalue_line("markers", "exercise(name, points, uses=()): the exercise a grader "
                                       "test checks and the points it is worth")
    impl = config.getoption("--impl")
    config.stash[RECORDS], config.stash[TIMED_OUT], config.stash[LOADED] = {}, set(), {}
    submission = config.getoption("--submission")
    if submission is not None:
        if not Path(submission).is_dir():
            raise pytest.UsageError(f"--submission={submission}: no such folder; give the folder that "
                                    "holds the learner's ex00_autograd.py, ex01_jacobs.py, ...")
        config.stash[WRONG] = None
    elif impl in PACKAGES:
        config.stash[WRONG] = None
    elif impl == "wrong":
        config.stash[WRONG] = WRONG_ANSWERS + ALTERNATIVES
    elif impl.startswith("wrong:"):
        chosen = [w for w in WRONG_ANSWERS + ALTERNATIVES if w.id == impl[len("wrong:"):]]
        if not chosen:
            raise pytest.UsageError(f"--impl={impl}: no such wrong answer; the ids are "
                                    f"{', '.join(w.id for w in WRONG_ANSWERS + ALTERNATIVES)}")
        config.stash[WRONG] = chosen
    else:
        raise pytest.UsageError(f"--impl={impl!r}: choose exercises, solutions, wrong or wrong:ID")


def _impl_name(config):
    submission = config.getoption("--submission")
    return str(Path(submission).resolve()) if submission is not None else config.getoption("--impl")


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
        answer = item.callspec.params["wrong_answer"] if wrong is not None else None
        config.stash[RECORDS][item.nodeid] = {
            "test": item.nodeid, "module": module, "exercise": exercise,
            "lesson": notebook_for(module),
            "points": marker.kwargs["points"] / cases[(module, item.originalname)],
            "outcome": "not run", "exception": None, "message": None,
            "wrong_answer": answer.id if answer is not None else None,
            "kind": answer.kind if answer is not None else None,
        }
    unknown = [n for n in names if not any(_matches(n, *_exercise_of(i)[:2]) for i in items)]
    if unknown:
        known = sorted({f"{m}.{e}" for m, e, _ in map(_exercise_of, items)})
        pytest.exit(f"no exercise called {', '.join(unknown)}; the exercises are: {', '.join(known)}",
                    returncode=4)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# ---- the code under test ------------------------------------------------------------------------

def _load_submission(config, module_name):
    """The learner's module `module_name` from the --submission folder, loaded once (an error
    loading it is kept and raised again for each of its tests)."""
    loaded = config.stash[LOADED]
    if module_name not in loaded:
        path = Path(config.getoption("--submission")) / f"{module_name}.py"
        if not path.is_file():
            loaded[module_name] = SubmissionError(f"the submission has no {module_name}.py")
        else:
            spec = importlib.util.spec_from_file_location(f"submission.{module_name}", path)
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
                loaded[module_name] = module
            except GraderTimeout:
                raise
            except BaseException as error:  # noqa: BLE001  (any failure of the learner's module, exit included)
                loaded[module_name] = SubmissionError(f"{module_name}.py could not be loaded: "
                                                      f"{type(error).__name__}: {error}")
    found = loaded[module_name]
    if isinstance(found, BaseException):
        raise found
    return found


def _graded_module(config, module_name):
    if config.getoption("--submission") is not None:
        return _load_submission(config, module_name)
    package = "solutions" if config.stash[WRONG] is not None else config.getoption("--impl")
    return importlib.import_module(f"{package}.{module_name}")


def _guarded(function, twins, what, see):
    """`function`, failing any call in which it runs one of the library's `twins`."""
    if not twins or isinstance(function, type):
        return function  # engine-op classes: their graders forbid the twins around forward and backward

    @functools.wraps(function)
    def guarded(*args, **kwargs):
        with forbid_calls(twins, what, see):
            return function(*args, **kwargs)

    return guarded


@pytest.fixture
def wrong_answer():
    """None, unless --impl=wrong parametrises it with a WrongAnswer."""
    return None


@pytest.fixture
def fn(request, wrong_answer, monkeypatch):
    """The function (or class) under test, from the implementation being graded."""
    module_name, exercise, marker = _exercise_of(request.node)
    module = _graded_module(request.config, module_name)
    uses = marker.kwargs.get("uses", ())
    if uses:
        reference = importlib.import_module(f"solutions.{module_name}")
        for name in uses:
            monkeypatch.setattr(module, name, getattr(reference, name))
    if wrong_answer is not None:
        function = wrong_answer.function
    elif not hasattr(module, exercise):
        raise NotImplementedError(f"{module_name}.py has no {exercise}")
    else:
        function = getattr(module, exercise)
    twins = getattr(request.module, "TWINS", {}).get(exercise, ())
    return _guarded(function, twins, f"{exercise}", RULES)


@pytest.fixture
def module(request):
    """The module being graded (for the given helpers an exercise takes, e.g. a dataclass)."""
    return _graded_module(request.config, request.module.MODULE)


@pytest.fixture
def rng(request):
    """This test's random inputs: fresh on every run, replayed by the seed printed with a failure."""
    return random_inputs(f"{request.node.module.MODULE}::{request.node.originalname}")


# ---- isolation: time limits and global state ----------------------------------------------------

def _on_main_thread():
    return threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")


def _start_alarm(seconds):
    """Runs the rest of a test phase with an alarm that raises GraderTimeout after `seconds`."""
    def on_alarm(signum, frame):
        raise GraderTimeout(f"the code ran for more than {seconds:g} s (an endless loop? a very slow "
                            f"loop over tokens?)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    return previous


def _stop_alarm(previous):
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    yield from _timed(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    key = _exercise_of(item)[:2]
    if key in item.config.stash[TIMED_OUT]:
        raise GraderTimeout("not run: an earlier test of this exercise ran out of time")
    yield from _timed(item)


def _timed(item):
    if not _on_main_thread():
        return (yield)
    previous = _start_alarm(item.config.getoption("--grader-timeout"))
    try:
        return (yield)
    except GraderTimeout:
        item.config.stash[TIMED_OUT].add(_exercise_of(item)[:2])
        raise
    finally:
        _stop_alarm(previous)


WATCHED_MODULES = (np, np.random, math, minimoe, minimoe.functional, minimoe.tensor, backend, minimoe_rng, tensor)


@pytest.fixture(autouse=True)
def _global_state_restored():
    """Whatever the graded code changes in the global state, the next test starts from the same."""
    attributes = {m: dict(vars(m)) for m in WATCHED_MODULES}
    numpy_random, numpy_errors = np.random.get_state(), np.geterr()
    host_state = minimoe_rng.host_rng().bit_generator.state
    devices, profile, cwd = dict(minimoe_rng._device), sys.getprofile(), os.getcwd()
    yield
    for module_object, saved in attributes.items():
        namespace = vars(module_object)
        for name in [n for n in namespace if n not in saved]:
            delattr(module_object, name)
        for name, value in saved.items():
            if namespace.get(name, object()) is not value:
                setattr(module_object, name, value)
    minimoe_rng._host.bit_generator.state = host_state
    minimoe_rng._device.clear()
    minimoe_rng._device.update(devices)
    np.random.set_state(numpy_random)
    np.seterr(**numpy_errors)
    sys.setprofile(profile)
    os.chdir(cwd)


# ---- records ------------------------------------------------------------------------------------

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
            message = str(call.excinfo.value)
            if "rng" in item.fixturenames and call.excinfo.typename == "AssertionError":
                lines = message.splitlines() or [""]
                lines[0] += f" [random inputs: rerun with {SEED_VARIABLE}={SEED} to reproduce]"
                message = "\n".join(lines)
            record["message"] = message
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
    terminalreporter.write_line(f"minimoe score ({_impl_name(config)}): {earned:g}/{total:g}, random inputs "
                                f"from {SEED_VARIABLE}={SEED} (python -m minimoe.grade shows the table)")


def pytest_sessionfinish(session):
    path = session.config.getoption("--score-json")
    if path:
        records = list(session.config.stash[RECORDS].values())
        document = {"impl": _impl_name(session.config), "seed": SEED, "tests": records}
        Path(path).write_text(json.dumps(document, indent=1))
