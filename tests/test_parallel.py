"""Expert parallelism (minimoe.parallel).

* The single-process simulation of the all-to-all: hand-computed counts and bytes, and the same
  kept assignments as the single-process dispatch however the batch is split.
* The MPI layer, run as `mpiexec -n 2` and `-n 4` subprocesses of `python -m minimoe.parallel
  --check --json`: outputs and gradients equal to the single-process layer's, counts conserved
  and equal to the simulation's, a rank whose experts get no token, E not divisible by R; and
  `--train` on 2 ranks: the tiny Transformer's losses equal to one process's.
  Skipped, with the reason, where mpi4py or mpiexec cannot start.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minimoe.moe import MoEConfig, expert_capacity, plan_dispatch
from minimoe.parallel import ExpertParallelMoE, experts_per_rank, simulate_all_to_all
from minimoe.parallel.__main__ import main

REPO = Path(__file__).resolve().parents[1]


# ---- the simulation: no MPI ----------------------------------------------------------------------
def test_hand_example_counts_drops_and_bytes():
    # 4 tokens on 2 ranks (tokens 0-1 on rank 0, 2-3 on rank 1), experts 0 (rank 0) and 1 (rank 1).
    index = np.array([[0], [0], [1], [0]])
    dropless = simulate_all_to_all(index, n_ranks=2, n_experts=2, d_model=4)
    np.testing.assert_array_equal(dropless.send_counts, [[2, 0], [1, 1]])  # token 3 crosses to rank 0
    np.testing.assert_array_equal(dropless.rows_out, [0, 1])
    np.testing.assert_array_equal(dropless.rows_in, [1, 0])
    assert dropless.bytes_per_forward == 2 * 1 * 4 * 4  # there and back, 4 float32 values
    assert dropless.bytes_per_step == 2 * dropless.bytes_per_forward
    # C = ceil(1 * 4 / 2 * 1.0) = 2: expert 0's queue is tokens 0, 1, 3, so token 3 is dropped
    capped = simulate_all_to_all(index, n_ranks=2, n_experts=2, capacity_factor=1.0)
    assert capped.capacity == 2 and capped.n_dropped == 1
    np.testing.assert_array_equal(capped.send_counts, [[2, 0], [0, 1]])
    np.testing.assert_array_equal(capped.orders[1], [0])  # rank 1 sends only its token 0 (global 2)


def test_later_ranks_lose_to_earlier_ranks_and_first_choices_win():
    # 2 ranks of 2 tokens, top-2 over 2 experts, C = ceil(2 * 4 / 2 * 0.5) = 2 per expert.
    index = np.array([[1, 0], [1, 0], [0, 1], [1, 0]])
    sim = simulate_all_to_all(index, n_ranks=2, n_experts=2, capacity_factor=0.5)
    # expert 1's queue: first choices of tokens 0, 1, 3, then the second choice of token 2
    # expert 0's queue: the first choice of token 2, then second choices of tokens 0, 1, 3
    np.testing.assert_array_equal(sim.sent_per_expert, [[1, 2], [1, 0]])
    np.testing.assert_array_equal(sim.orders[0], [2, 0, 1])  # local: token 0 choice 2, tokens 0 and 1 choice 1
    np.testing.assert_array_equal(sim.orders[1], [0])  # token 2's first choice only
    assert sim.n_dropped == 4


@pytest.mark.parametrize("n_ranks", [1, 2, 4])
@pytest.mark.parametrize("k, capacity_factor", [(1, 1.0), (2, 1.0), (2, 0.5), (3, 1.25), (2, None)])
def test_any_split_keeps_what_the_single_process_keeps(n_ranks, k, capacity_factor):
    rng = np.random.default_rng(7 * n_ranks + k)
    n, e = 48, 8
    skew = np.arange(e, 0, -1) / np.arange(e, 0, -1).sum()  # expert 0 popular: capacity bites
    index = np.stack([rng.choice(e, size=k, replace=False, p=skew) for _ in range(n)])
    keep = rng.random((n, k)) > 0.2
    reference = plan_dispatch(index, e, expert_capacity(n, e, k, capacity_factor) if capacity_factor else None, keep)
    sim = simulate_all_to_all(index, n_ranks, e, capacity_factor, keep)
    shard = n // n_ranks
    kept = np.concatenate([(order // shard) * n + rank * shard + order % shard  # local -> global numbering
                           for rank, order in enumerate(sim.orders)])
    np.testing.assert_array_equal(np.sort(kept), np.sort(reference.order))
    np.testing.assert_array_equal(sim.expert_load, reference.group_sizes)
    assert sim.n_dropped == reference.n_dropped
    # conservation: what the ranks send is what the experts receive, rank by rank
    assert sim.send_counts.sum() == len(kept)
    np.testing.assert_array_equal(sim.send_counts.sum(axis=0), sim.expert_load.reshape(n_ranks, -1).sum(axis=1))


def test_simulation_refuses_uneven_splits():
    with pytest.raises(ValueError, match="do not split evenly over 3 ranks"):
        simulate_all_to_all(np.zeros((6, 1), dtype=int), n_ranks=3, n_experts=8)
    with pytest.raises(ValueError, match="splits the 6 tokens evenly"):
        simulate_all_to_all(np.zeros((6, 1), dtype=int), n_ranks=4, n_experts=8)
    with pytest.raises(ValueError, match="integer array"):
        simulate_all_to_all(np.zeros(6), n_ranks=2, n_experts=8)
    assert experts_per_rank(8, 4) == 2


def test_routers_that_decide_over_the_whole_batch_are_refused():
    # both checks come before the communicator is used, so no MPI is needed here
    for router in ("expert_choice", "soft"):
        with pytest.raises(ValueError, match="decides over the whole batch"):
            ExpertParallelMoE(MoEConfig(d_model=8, n_experts=4, router=router), comm=None)
    with pytest.raises(TypeError, match="needs a MoEConfig or a single-process MoE"):
        ExpertParallelMoE({"d_model": 8}, comm=None)


def test_without_mpi_the_module_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `import mpi4py` fail
    assert main(["--check"]) == 2
    assert "pip install mpi4py mpich" in capsys.readouterr().err


def test_help_lists_the_tasks(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--check" in out and "--train" in out and "mpiexec" in out


# ---- the MPI layer, under mpiexec --------------------------------------------------------------
def _mpiexec():
    beside_python = Path(sys.executable).parent / "mpiexec"
    return str(beside_python) if beside_python.exists() else shutil.which("mpiexec")


ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _mpirun(n_ranks, *args, timeout=60):
    command = [_mpiexec(), "-n", str(n_ranks), sys.executable, "-m", "minimoe.parallel", *args]
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def mpi_ready():
    if _mpiexec() is None:
        pytest.skip("no mpiexec beside the Python executable or on PATH (pip install mpi4py mpich)")
    probe = subprocess.run([_mpiexec(), "-n", "1", sys.executable, "-c", "from mpi4py import MPI"],
                           env=ENV, capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode:
        pytest.skip(f"MPI cannot start here (pip install mpi4py mpich): {probe.stderr.strip()[-300:]}")


def _json_result(run):
    lines = run.stdout.strip().splitlines()
    assert lines, f"no output (exit {run.returncode}):\n{run.stderr[-3000:]}"
    return json.loads(lines[-1])


@pytest.fixture(scope="module", params=[2, 4], ids=lambda n: f"{n}ranks")
def check(request, mpi_ready):
    """`--check` on 2 ranks with the strict device stand-in and on 4 ranks with NumPy."""
    backend = "strict" if request.param == 2 else "numpy"
    run = _mpirun(request.param, "--check", "--json", "--quiet", "--backend", backend)
    result = _json_result(run)
    result["returncode"] = run.returncode
    return result


def _case(check, name):
    return next(c for c in check["cases"] if c["case"] == name)


@pytest.mark.parametrize("name", ["top1", "top2-capacity", "dropless-shared", "qwen2-shared-gate", "gshard-eval", "noisy-importance",
                                  "deepseek-sequence", "idle-rank"])
def test_forward_and_backward_equal_the_single_process_layer(check, name):
    case = _case(check, name)
    for quantity, error in case["errors"].items():
        assert error <= 1e-5, f"{name} on {check['n_ranks']} ranks: {quantity} differs by {error:.1e}"


def test_capacity_cases_drop_tokens(check):
    assert _case(check, "top2-capacity")["dropped_fraction"] > 0  # the queue order across ranks matters
    assert _case(check, "top1")["dropped_fraction"] > 0


def test_counts_are_conserved_and_equal_the_simulation(check):
    for case in check["cases"]:
        sent, received = np.array(case["sent"]), np.array(case["received"])
        np.testing.assert_array_equal(sent, received.T)  # what s sent to q is what q got from s
        assert sent.sum() == received.sum() > 0
        assert case["matches_simulation"], case["case"]
    assert all(row["matches_simulation"] for row in check["traffic"])


def test_a_rank_whose_experts_get_no_token(check):
    case = _case(check, "idle-rank")
    last = check["n_ranks"] - 1
    assert case["idle_ranks"] == [last]
    assert np.array(case["sent"])[:, last].sum() == 0


def test_traffic_grows_with_top_k_and_capacity(check):
    rows = {(t["top_k"], t["capacity_factor"]): t["rows_across"] for t in check["traffic"]}
    for k in (1, 2):
        assert rows[(k, 1.0)] <= rows[(k, 1.25)] <= rows[(k, None)]
    assert rows[(2, None)] > rows[(1, None)]


def test_experts_not_divisible_by_ranks_is_a_clear_error(check):
    n = check["n_ranks"]
    assert f"{2 * n + 1} experts do not split evenly over {n} ranks" in check["indivisible_error"]


def test_check_exits_zero(check):
    assert check["ok"] and check["returncode"] == 0


def test_training_loss_matches_one_process(mpi_ready):
    run = _mpirun(2, "--train", "--steps", "3", "--capacity-factor", "1.0", "--backend", "strict", "--json", "--quiet")
    result = _json_result(run)
    assert run.returncode == 0 and result["ok"], result
    assert max(result["relative_differences"]) <= 1e-4
    assert result["expert_parallel"][-1] < result["expert_parallel"][0]  # it learns
