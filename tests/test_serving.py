"""The batch window and the first-come-first-served queue against hand cases and a token-by-token
reference (minimoe/serving.py, lesson 09 section 8)."""
import numpy as np
import pytest

from minimoe.serving import batch_window_schedule, serve_in_order


def schedule_by_hand(times, window, max_batch):
    """The policy as a server would run it: token after token, in order of arrival."""
    order = np.argsort(times, kind="stable")
    batch_id, dispatch = np.empty(len(times), dtype=np.int64), np.empty(len(times))
    batches = []  # (first arrival, members)
    for i in order:
        if batches and len(batches[-1][1]) < max_batch and times[i] <= batches[-1][0] + window:
            batches[-1][1].append(i)
        else:
            batches.append((times[i], [i]))
    for b, (opened, members) in enumerate(batches):
        batch_id[members] = b
        dispatch[members] = times[members[-1]] if len(members) == max_batch else opened + window
    return batch_id, dispatch


def test_hand_case():
    # window 1, at most 3: {0, 0.5} closes at 1; {1.5, 2, 2.25} is full at 2.25; {2.5} closes at 3.5
    batch, when = batch_window_schedule([0.0, 0.5, 1.5, 2.0, 2.25, 2.5], 1.0, 3)
    assert batch.tolist() == [0, 0, 1, 1, 1, 2] and batch.dtype == np.int64
    assert when.tolist() == [1.0, 1.0, 2.25, 2.25, 2.25, 3.5] and when.dtype == np.float64


def test_the_window_is_anchored_at_the_first_token_and_inclusive():
    # 0 opens [0, 1]; 1.0 joins (inclusive); 1.5 is past 0 + 1 and opens its own window
    batch, when = batch_window_schedule([0.0, 1.0, 1.5, 2.4], 1.0, 10)
    assert batch.tolist() == [0, 0, 1, 1]
    assert when.tolist() == [1.0, 1.0, 2.5, 2.5]


def test_unsorted_input_keeps_its_order_and_ties_go_in_input_order():
    batch, when = batch_window_schedule([2.0, 0.0, 0.0, 0.0], 0.5, 2)
    # the three tokens at 0 in input order 1, 2, 3: {1, 2} full at 0, {3} closes at 0.5; 2.0 alone
    assert batch.tolist() == [2, 0, 0, 1]
    assert when.tolist() == [2.5, 0.0, 0.0, 0.5]


@pytest.mark.parametrize("times", [[0.0, 0.1, 0.1, 0.3], [0.3, 0.1, 0.0, 0.1]])
def test_window_zero_and_batch_one(times):
    batch, when = batch_window_schedule(times, 0.0, 5)  # only simultaneous tokens share a batch
    assert np.array_equal(when, times)
    assert len(set(batch.tolist())) == 3
    batch, when = batch_window_schedule(times, 10.0, 1)  # every token alone, at once
    assert sorted(batch.tolist()) == [0, 1, 2, 3] and np.array_equal(when, times)


def test_random_inputs_match_the_token_by_token_server():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 200))
        times = np.round(rng.uniform(0, 5, n), int(rng.integers(0, 3)))  # rounding makes ties
        window, max_batch = float(rng.choice([0.0, 0.1, 0.5, 2.0])), int(rng.integers(1, 12))
        got = batch_window_schedule(times, window, max_batch)
        expected = schedule_by_hand(times, window, max_batch)
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def test_no_token_waits_past_its_window_and_batches_leave_in_order():
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.exponential(1.0, 1000))
    batch, when = batch_window_schedule(times, 3.0, 4)
    assert np.all(when >= times) and np.all(when - times <= 3.0)
    assert np.all(np.diff(when[np.argsort(batch, kind="stable")]) >= 0)
    assert np.bincount(batch).max() == 4


def test_empty_and_bad_inputs():
    batch, when = batch_window_schedule(np.zeros(0), 1.0, 2)
    assert batch.shape == when.shape == (0,)
    for args, message in [(([[0.0]], 1.0, 2), "1-D"), (([np.nan], 1.0, 2), "finite"),
                          (([0.0], -1.0, 2), "window"), (([0.0], np.inf, 2), "window"),
                          (([0.0], 1.0, 0), "max_batch"), (([0.0], 1.0, 2.5), "max_batch")]:
        with pytest.raises(ValueError, match=message):
            batch_window_schedule(*args)


def test_serve_in_order_matches_the_recursion():
    rng = np.random.default_rng(2)
    ready = np.cumsum(rng.exponential(1.0, 300))
    compute = rng.exponential(0.9, 300)  # busy most of the time: the queue builds up and drains
    finish, free = np.empty(300), 0.0
    for b in range(300):
        free = finish[b] = max(ready[b], free) + compute[b]
    np.testing.assert_allclose(serve_in_order(ready, compute), finish, rtol=1e-12)
    # by hand: the second batch waits for the first, the third finds the server idle
    assert serve_in_order([0.0, 1.0, 5.0], [2.0, 1.0, 1.0]).tolist() == [2.0, 3.0, 6.0]
    with pytest.raises(ValueError, match="non-decreasing"):
        serve_in_order([1.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        serve_in_order([0.0], [1.0, 1.0])
