"""The data pipeline: tokenizer, bundled corpus, train/validation split and batch sampler."""
import json
import operator
import re

import numpy as np
import pytest

from minimoe.data import BatchSampler, CharTokenizer, eval_batches, load_corpus, make_corpus, split
from minimoe.data.corpus import DATA_DIR, LABELS_FILE, TEXT_FILE

DOMAINS = ("code", "prose", "arithmetic", "records")


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


# --- tokenizer ----------------------------------------------------------------------------------

def test_vocabulary_is_newline_then_printable_ascii():
    tokenizer = CharTokenizer()
    assert tokenizer.vocab_size == 96
    assert tokenizer.encode("\n ~A").tolist() == [0, 1, 95, ord("A") - 31]


def test_round_trip_over_the_whole_vocabulary():
    tokenizer = CharTokenizer()
    text = "".join(tokenizer.vocab) + "def f(x):\n    return x * 2  # ok\n"
    ids = tokenizer.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids.tolist()) == text
    assert tokenizer.encode("").shape == (0,) and tokenizer.decode([]) == ""


def test_unknown_characters_are_named_with_their_positions():
    with pytest.raises(ValueError, match=r"'é' at position 3.*'\\t' at position 5.*newline plus "
                                         r"printable ASCII"):
        CharTokenizer().encode("café \t!")


def test_decode_rejects_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="id 96 at position 1 is outside"):
        CharTokenizer().decode([5, 96])


# --- corpus -------------------------------------------------------------------------------------

def test_corpus_labels_every_character(corpus):
    assert corpus.domain_names == DOMAINS
    assert 1_000_000 <= len(corpus.text) <= 1_500_000
    assert corpus.ids.shape == corpus.domains.shape == (len(corpus.text),)
    assert corpus.ids.dtype == np.int64 and corpus.domains.dtype == np.uint8
    assert CharTokenizer().decode(corpus.ids) == corpus.text


def test_every_domain_has_a_fair_share(corpus):
    shares = np.bincount(corpus.domains, minlength=4) / len(corpus)
    assert np.all((shares >= 0.15) & (shares <= 0.35)), dict(zip(DOMAINS, shares))


def test_documents_are_whole_single_domain_and_sized(corpus):
    starts = corpus.document_starts  # (D,)
    assert len(starts) > 500
    assert np.array_equal(np.minimum.reduceat(corpus.domains, starts),
                          np.maximum.reduceat(corpus.domains, starts))
    lengths = np.diff(np.append(starts, len(corpus)))
    assert lengths.min() >= 300 and lengths.max() <= 3000
    assert corpus.text.endswith("\n\n") and "\n\n\n" not in corpus.text


def test_arithmetic_lines_are_all_correct(corpus):
    text_bytes = np.frombuffer(corpus.text.encode("ascii"), dtype=np.uint8)
    arithmetic = text_bytes[corpus.domains == DOMAINS.index("arithmetic")].tobytes().decode()
    lines = [line for line in arithmetic.split("\n") if line]
    assert len(lines) > 10_000
    apply = {"+": operator.add, "-": operator.sub, "*": operator.mul}
    for line in lines:
        match = re.fullmatch(r"(\d+) ([-+*]) (\d+) = (-?\d+)", line)
        assert match, f"not an `a op b = c` line: {line!r}"
        a, op, b, c = match.groups()
        assert apply[op](int(a), int(b)) == int(c), line


def test_regenerating_gives_the_shipped_files(tmp_path, corpus, capsys):
    make_corpus.main(["--out", str(tmp_path)])
    assert f"{len(corpus):,} characters" in capsys.readouterr().out
    shipped_text = (DATA_DIR / TEXT_FILE).read_bytes()
    assert (tmp_path / TEXT_FILE).read_bytes() == shipped_text
    regenerated = load_corpus(tmp_path)
    assert np.array_equal(regenerated.domains, corpus.domains)
    assert regenerated.domain_names == corpus.domain_names


def test_label_file_is_written_byte_for_byte_the_same(tmp_path):
    text, labels = "1 + 1 = 2\n\n", np.full(11, 2, dtype=np.uint8)
    for folder in ("first", "second"):
        make_corpus.save_corpus(text, labels, tmp_path / folder)
    file = LABELS_FILE
    assert (tmp_path / "first" / file).read_bytes() == (tmp_path / "second" / file).read_bytes()


def test_missing_files_say_how_to_rebuild(tmp_path):
    rebuild = "python -m minimoe.data.make_corpus"
    with pytest.raises(FileNotFoundError, match=f"corpus.txt is missing.*{rebuild}"):
        load_corpus(tmp_path)


def test_labels_out_of_step_with_text_say_how_to_rebuild(tmp_path):
    make_corpus.save_corpus("1 + 1 = 2\n\n", np.zeros(10, dtype=np.uint8), tmp_path)
    with pytest.raises(ValueError, match="11 characters but .* 10 labels.*make_corpus"):
        load_corpus(tmp_path)


# --- split --------------------------------------------------------------------------------------

def test_split_holds_out_the_last_tenth_of_documents(corpus):
    train, val = split(corpus, val_fraction=0.1)
    assert train.text + val.text == corpus.text
    assert corpus.text[len(train) - 2:len(train)] == "\n\n"  # the cut falls between documents
    assert len(val.document_starts) == round(0.1 * len(corpus.document_starts))
    assert np.array_equal(val.ids, corpus.ids[len(train):])
    assert set(np.unique(val.domains).tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_fractions_outside_zero_one(corpus, fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        split(corpus, val_fraction=fraction)


# --- sampler ------------------------------------------------------------------------------------

IDS = np.arange(50)  # id i sits at position i, so a window is easy to recognise
LABELS = (np.arange(50) // 10).astype(np.uint8)  # positions 0-9 are domain 0, 10-19 domain 1, ...


def test_sample_gives_windows_targets_and_domains():
    x, y, d = BatchSampler(IDS, LABELS, batch_size=8, context=5, seed=0).sample()
    for array in (x, y, d):
        assert array.shape == (8, 5) and array.dtype == np.int64
    assert np.array_equal(x, x[:, :1] + np.arange(5))  # contiguous windows
    assert np.array_equal(y, x + 1)  # each target is the next character
    assert np.array_equal(d, x // 10)  # the domain of each input character


def test_sampler_reaches_both_ends_of_the_stream_and_no_further():
    sampler = BatchSampler(IDS, LABELS, batch_size=8, context=5, seed=0)
    starts = np.concatenate([sampler.sample()[0][:, 0] for _ in range(200)])  # (1600,)
    assert starts.min() == 0 and starts.max() == 50 - 5 - 1  # the last target is id 49


def test_same_seed_same_batches():
    first = BatchSampler(IDS, LABELS, batch_size=4, context=6, seed=7)
    second = BatchSampler(IDS, LABELS, batch_size=4, context=6, seed=7)
    other = BatchSampler(IDS, LABELS, batch_size=4, context=6, seed=8)
    for _ in range(3):
        batch, again, different = first.sample(), second.sample(), other.sample()
        assert all(np.array_equal(a, b) for a, b in zip(batch, again))
    assert not np.array_equal(batch[0], different[0])


def test_state_restored_through_json_reproduces_the_next_batch():
    sampler = BatchSampler(IDS, LABELS, batch_size=4, context=6, seed=3)
    sampler.sample()
    saved = json.loads(json.dumps(sampler.state()))
    expected = sampler.sample()
    resumed = BatchSampler(IDS, LABELS, batch_size=4, context=6, seed=123)
    resumed.set_state(saved)
    assert all(np.array_equal(a, b) for a, b in zip(resumed.sample(), expected))


def test_set_state_rejects_something_else():
    sampler = BatchSampler(IDS, LABELS, batch_size=4, context=6, seed=3)
    with pytest.raises(ValueError, match="BatchSampler.state"):
        sampler.set_state({"bit_generator": "MT19937"})


def test_eval_batches_are_fixed_and_span_the_stream():
    batches = eval_batches(IDS, LABELS, batch_size=3, context=5, n_batches=4)
    again = eval_batches(IDS, LABELS, batch_size=3, context=5, n_batches=4)
    assert len(batches) == 4
    for batch, same in zip(batches, again):
        assert all(np.array_equal(a, b) for a, b in zip(batch, same))
    x_first, _, _ = batches[0]
    _, y_last, d_last = batches[-1]
    assert x_first[0, 0] == 0 and y_last[-1, -1] == 49 and d_last[-1, -1] == 4


@pytest.mark.parametrize("batch_size, context, message", [
    (0, 5, "batch_size must be"),
    (4, 0, "context must be"),
    (4, 50, "context 50 needs at least 51 ids"),
    (4, 80, "use a context below 50"),
])
def test_sampler_rejects_bad_sizes(batch_size, context, message):
    with pytest.raises(ValueError, match=message):
        BatchSampler(IDS, LABELS, batch_size=batch_size, context=context, seed=0)


def test_sampler_and_eval_reject_mismatched_labels_and_no_batches():
    with pytest.raises(ValueError, match="domains must label every id"):
        BatchSampler(IDS, LABELS[:-1], batch_size=2, context=4, seed=0)
    with pytest.raises(ValueError, match="n_batches"):
        eval_batches(IDS, LABELS, batch_size=2, context=4, n_batches=0)
