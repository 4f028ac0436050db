"""The consecutive-token repeat rate of lesson 08 (Mixtral, Jiang et al. 2024, §5 Table 5), its
random-assignment baseline and the shuffled-positions baseline, on hand-computed cases."""
import itertools

import numpy as np
import pytest

from minimoe.moe.locality import consecutive_same_expert_rate, random_repeat_rate, shuffle_positions


def looped_rate(index):
    """The definition written out pair by pair: the reference for random inputs."""
    index = np.asarray(index)
    index = index[:, :, None] if index.ndim == 2 else index
    hits = [bool(set(index[b, t][index[b, t] >= 0]) & set(index[b, t + 1][index[b, t + 1] >= 0]))
            for b in range(index.shape[0]) for t in range(index.shape[1] - 1)]
    return sum(hits) / len(hits)


def test_first_choice_rate_on_a_hand_case():
    # row 0: (0,0) (0,1) (1,1) -> 2 repeats; row 1: (1,2) (2,2) (2,2) -> 2; 4 of 6 pairs
    assert consecutive_same_expert_rate(np.array([[0, 0, 1, 1], [1, 2, 2, 2]])) == pytest.approx(4 / 6)


def test_pairs_across_sequence_boundaries_do_not_count():
    # no repeat inside either row; flattened, the 1 ending row 0 and the 1 starting row 1 would be one
    index = np.array([[0, 1], [1, 0]])
    assert consecutive_same_expert_rate(index) == 0.0
    assert looped_rate(index.reshape(1, -1)) == pytest.approx(1 / 3)


def test_top_k_rate_counts_any_shared_expert_in_either_position():
    index = np.array([[[0, 1], [1, 2], [3, 4], [4, -1], [-1, 5], [6, -1]]])
    # (0,1)-(1,2): 1 shared as second then first; (1,2)-(3,4): none; (3,4)-(4,-1): 4;
    # (4,-1)-(-1,5): -1 is no expert, none; (-1,5)-(6,-1): none -> 2 of 5
    assert consecutive_same_expert_rate(index) == pytest.approx(2 / 5)


def test_dropped_assignments_match_nothing():
    assert consecutive_same_expert_rate(np.array([[-1, -1, 3, 3]])) == pytest.approx(1 / 3)


def test_top_1_equals_first_choice_and_random_inputs_match_the_loop():
    rng = np.random.default_rng(0)
    first = rng.integers(0, 4, (5, 9))
    assert consecutive_same_expert_rate(first[:, :, None]) == consecutive_same_expert_rate(first)
    for k in (1, 2, 3):
        index = np.stack([rng.permutation(6)[:k] for _ in range(7 * 11)]).reshape(7, 11, k)
        index[rng.random(index.shape) < 0.1] = -1
        assert consecutive_same_expert_rate(index) == pytest.approx(looped_rate(index), abs=1e-15)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64])
def test_any_integer_dtype_gives_the_same_float(dtype):
    rate = consecutive_same_expert_rate(np.array([[0, 0, 1], [2, 2, 2]], dtype=dtype))
    assert type(rate) is float and rate == pytest.approx(3 / 4)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="no consecutive pairs"):
        consecutive_same_expert_rate(np.zeros((3, 1), dtype=int))
    with pytest.raises(ValueError, match="no consecutive pairs"):
        consecutive_same_expert_rate(np.zeros((0, 5), dtype=int))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        consecutive_same_expert_rate(np.zeros(5, dtype=int))
    with pytest.raises(TypeError, match="integer"):
        consecutive_same_expert_rate(np.zeros((2, 5)))


def test_random_baseline_is_mixtrals_and_matches_sampling():
    assert random_repeat_rate(8) == 1 / 8
    assert random_repeat_rate(8, 2) == pytest.approx(1 - 6 / 8 * 5 / 7) == pytest.approx(13 / 28)
    assert random_repeat_rate(4, 3) == 1.0  # two 3-sets of 4 experts always meet
    # exhaustively: every ordered pair of k-sets of E experts
    sets = list(itertools.combinations(range(6), 2))
    meets = np.mean([bool(set(a) & set(b)) for a in sets for b in sets])
    assert random_repeat_rate(6, 2) == pytest.approx(meets)
    with pytest.raises(ValueError, match="1 <= k <= n_experts"):
        random_repeat_rate(4, 5)


def test_shuffled_positions_keep_each_rows_tokens_and_their_experts():
    rng = np.random.default_rng(1)
    index = np.stack([rng.permutation(8)[:2] for _ in range(4 * 50)]).reshape(4, 50, 2)
    mixed = shuffle_positions(index, rng)
    assert mixed.shape == index.shape and not np.array_equal(mixed, index)
    for row, mixed_row in zip(index, mixed):  # the same (first, second) tokens, in another order
        assert sorted(map(tuple, row)) == sorted(map(tuple, mixed_row))
    first = rng.integers(0, 8, (3, 20))
    assert np.array_equal(np.sort(shuffle_positions(first, rng), axis=1), np.sort(first, axis=1))
