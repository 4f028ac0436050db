"""Write the bundled multi-domain corpus: `python -m minimoe.data.make_corpus [--out DIR]`.

Four domains that look nothing alike, character by character, so that lesson 08 can ask whether
experts specialise by domain. (On real text, Mixtral's routing analysis -- Jiang et al. 2024,
section 5 -- found little specialisation by topic; here the domains are deliberately far apart.)

    0 code        Python-like functions, loops and classes
    1 prose       English sentences composed from phrase lists (nature, cities, science,
                  travel, stories)
    2 arithmetic  lines like `37 + 48 = 85`, always correct
    3 records     `key: value | ...` lines, or CSV tables with a header

Every document is a few hundred to about two thousand characters and ends with a blank line; no
document holds a blank line of its own, so "\\n\\n" marks every document boundary. The domains
have equally many documents, shuffled together.

Output: `corpus.txt` (ASCII) and `corpus_domains.npz` (`domain`: uint8, one label per character
of the text; `names`: the domain names), both written next to this file unless `--out` says
otherwise. The output is a pure function of the seed: all randomness comes from
`random.Random.random()`, whose sequence Python promises not to change between versions.
"""
from __future__ import annotations

import argparse
import operator
import random
import textwrap
import zipfile
from functools import partial
from pathlib import Path

import numpy as np

from minimoe.data import corpus_words as words
from minimoe.data.corpus import DATA_DIR, LABELS_FILE, TEXT_FILE
from minimoe.data.tokenizer import CharTokenizer

SEED = 1991
DOMAIN_NAMES = ("code", "prose", "arithmetic", "records")  # index = label in corpus_domains.npz
DOCUMENTS_PER_DOMAIN = 270
MIN_DOCUMENT_CHARS, MAX_DOCUMENT_CHARS = 300, 1800  # a document stops growing past its target
PROSE_WIDTH = 76
ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul}


class Dice:
    """Seeded choices built only on `random.Random.random()`, the one stream Python keeps stable
    across versions (`choice` and `shuffle` have no such promise), so the corpus never drifts."""

    def __init__(self, seed: int):
        self._rng = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        """A whole number from low to high, both included."""
        return low + int(self._rng.random() * (high - low + 1))

    def pick(self, options):
        return options[self.integer(0, len(options) - 1)]

    def pick_two(self, options) -> tuple:
        """Two different options."""
        first = self.integer(0, len(options) - 1)
        second = (first + self.integer(1, len(options) - 1)) % len(options)
        return options[first], options[second]

    def chance(self, probability: float) -> bool:
        return self._rng.random() < probability

    def shuffle(self, items: list) -> None:
        """Fisher-Yates, in place."""
        for i in range(len(items) - 1, 0, -1):
            j = self.integer(0, i)
            items[i], items[j] = items[j], items[i]


# --- domain 0: code -----------------------------------------------------------------------------

def code_document(dice: Dice, target_chars: int) -> str:
    """A header line now and then, then functions, classes and snippets with fresh identifiers."""
    blocks = [_fill_code(dice.pick(words.CODE_HEADERS), dice)] if dice.chance(0.6) else []
    while _length(blocks) < target_chars:
        blocks.append(_fill_code(dice.pick(words.CODE_TEMPLATES), dice))
    return "\n".join(blocks) + "\n"


def _fill_code(template: str, dice: Dice) -> str:
    noun, other = dice.pick_two(words.CODE_NOUNS)
    adjective = dice.pick(words.CODE_ADJECTIVES)
    slots = dict(
        noun=noun, nouns=_add_s(noun), other=other, adj=adjective, verb=dice.pick(words.CODE_VERBS),
        attr=dice.pick(words.CODE_ATTRIBUTES), Class=adjective.title() + noun.title(),
        n=dice.integer(2, 9), limit=dice.integer(0, 100), index=dice.integer(0, 3),
        cmp=dice.pick(words.CODE_COMPARISONS), op=dice.pick(words.CODE_OPERATORS),
        sep=dice.pick(words.CODE_SEPARATORS),
        numbers=", ".join(str(dice.integer(0, 99)) for _ in range(dice.integer(3, 8))),
    )
    slots["message"] = dice.pick(words.CODE_MESSAGES).format(**slots)
    return template.format(**slots)


# --- domain 1: prose ----------------------------------------------------------------------------

def prose_document(dice: Dice, target_chars: int) -> str:
    """Sentences on one topic, grouped into paragraphs of 3-6 sentences, wrapped and indented."""
    topic = dice.pick(tuple(words.PRESENT_TOPICS) + tuple(words.PAST_TOPICS))
    if topic in words.PRESENT_TOPICS:
        sentence = partial(_present_sentence, dice, words.PRESENT_TOPICS[topic])
        first_patterns = patterns = words.PRESENT_PATTERNS
    else:
        cast = (*dice.pick_two(words.FIRST_NAMES), dice.pick(words.PRONOUNS))
        sentence = partial(_past_sentence, dice, words.PAST_TOPICS[topic], cast)
        first_patterns, patterns = words.PAST_PATTERNS[:1], words.PAST_PATTERNS  # name them first
    sentences = [sentence(first_patterns)]
    while _length(sentences) < target_chars:
        sentences.append(sentence(patterns))
    paragraphs = []
    while sentences:
        size = dice.integer(3, 6)
        paragraph, sentences = " ".join(sentences[:size]), sentences[size:]
        paragraphs.append(textwrap.fill(paragraph, width=PROSE_WIDTH, initial_indent="  "))
    return "\n".join(paragraphs) + "\n"


def _present_sentence(dice: Dice, topic: dict, patterns: tuple) -> str:
    """Any subject with any predicate; the predicate takes its -s after a singular subject."""
    slots = {"opener": dice.pick(topic["openers"])}
    for suffix, predicate in zip(("", "2"), dice.pick_two(topic["predicates"])):
        singular = dice.chance(0.5)
        slots["s" + suffix] = dice.pick(topic["singular"] if singular else topic["plural"])
        slots["p" + suffix] = _third_person(predicate) if singular else predicate
    return _capitalise(dice.pick(patterns).format(**slots))


def _past_sentence(dice: Dice, topic: dict, cast: tuple, patterns: tuple) -> str:
    name, friend, pronoun = cast
    predicate, other_predicate = dice.pick_two(topic["predicates"])
    adjective, other_adjective = dice.pick_two(words.PLACE_ADJECTIVES)
    slots = dict(
        name=name, friend=friend, pronoun=pronoun, p=predicate, p2=other_predicate,
        adj=adjective, adj2=other_adjective, opener=dice.pick(topic["openers"]),
        place=dice.pick(topic["places"]), quote=dice.pick(topic["quotes"]),
    )
    return _capitalise(dice.pick(patterns).format(**slots))


def _third_person(predicate: str) -> str:
    verb, rest = predicate.split(" ", 1)
    return f"{_add_s(verb)} {rest}"


def _add_s(word: str) -> str:
    """The -s of plural nouns and third-person verbs: city -> cities, catch -> catches."""
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh", "o")):
        return word + "es"
    return word + "s"


def _capitalise(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


# --- domain 2: arithmetic -----------------------------------------------------------------------

def arithmetic_document(dice: Dice, target_chars: int) -> str:
    """A drill of `a op b = c` lines, always correct, keeping to one set of operators and sizes."""
    operators = dice.pick(("+", "-", "*", "+-", "+-*"))
    largest = dice.pick((9, 99, 999))
    lines = []
    while _length(lines) < target_chars:
        op = dice.pick(operators)
        a = dice.integer(0, largest)
        b = dice.integer(0, 12) if op == "*" and largest > 9 else dice.integer(0, largest)
        if op == "-" and a < b:  # drills stay non-negative
            a, b = b, a
        lines.append(f"{a} {op} {b} = {ARITHMETIC[op](a, b)}")
    return "\n".join(lines) + "\n"


# --- domain 3: records --------------------------------------------------------------------------

def records_document(dice: Dice, target_chars: int) -> str:
    """Records of one kind, as `key: value | ...` lines or as a CSV table with a header row."""
    make_record = dice.pick((_person, _book, _order, _weather, _stock))
    as_csv = dice.chance(0.4)
    lines = []
    while _length(lines) < target_chars:
        fields = make_record(dice)
        if as_csv and not lines:
            lines.append(",".join(key for key, _ in fields))  # the header row
        lines.append(",".join(value for _, value in fields) if as_csv
                     else " | ".join(f"{key}: {value}" for key, value in fields))
    return "\n".join(lines) + "\n"


def _person(dice: Dice) -> list[tuple[str, str]]:
    return [("name", f"{dice.pick(words.FIRST_NAMES)} {dice.pick(words.LAST_NAMES)}"),
            ("city", dice.pick(words.CITIES)), ("age", str(dice.integer(18, 90))),
            ("id", f"{dice.integer(0, 99999):05d}")]


def _book(dice: Dice) -> list[tuple[str, str]]:
    adjective = dice.pick(words.BOOK_ADJECTIVES)
    noun, other_noun = dice.pick_two(words.BOOK_NOUNS)
    title = dice.pick((f"The {adjective} {noun}", f"{adjective} {noun}",
                       f"The {noun} and the {other_noun}"))
    return [("title", title),
            ("author", f"{dice.pick(words.FIRST_NAMES)[0]}. {dice.pick(words.LAST_NAMES)}"),
            ("year", str(dice.integer(1900, 2024))), ("pages", str(dice.integer(80, 900)))]


def _order(dice: Dice) -> list[tuple[str, str]]:
    quantity, unit_cents = dice.integer(1, 12), dice.integer(99, 9999)
    return [("order_id", str(dice.integer(10000, 99999))), ("item", dice.pick(words.PRODUCTS)),
            ("qty", str(quantity)), ("unit_price", _money(unit_cents)),
            ("total", _money(quantity * unit_cents))]


def _weather(dice: Dice) -> list[tuple[str, str]]:
    date = f"{dice.integer(2015, 2024)}-{dice.integer(1, 12):02d}-{dice.integer(1, 28):02d}"
    return [("station", f"{dice.pick(words.CITIES)}-{dice.integer(1, 20):02d}"), ("date", date),
            ("temp_c", f"{dice.integer(-150, 380) / 10:.1f}"),
            ("rain_mm", f"{dice.integer(0, 400) / 10:.1f}")]


def _stock(dice: Dice) -> list[tuple[str, str]]:
    letters = "".join(dice.pick("ABCDEFGHKLMNPRSTVWXZ") for _ in range(2))
    return [("sku", f"{letters}-{dice.integer(0, 9999):04d}"),
            ("product", dice.pick(words.PRODUCTS)), ("stock", str(dice.integer(0, 500))),
            ("warehouse", dice.pick(words.WAREHOUSES))]


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


# --- the whole corpus ---------------------------------------------------------------------------

def _length(pieces: list[str]) -> int:
    """Characters of the pieces once joined by newlines."""
    return sum(len(piece) + 1 for piece in pieces)


def generate_corpus(seed: int = SEED) -> tuple[str, np.ndarray]:
    """The corpus text and its domain labels, (len(text),) uint8, as a pure function of `seed`."""
    dice = Dice(seed)
    writers = (code_document, prose_document, arithmetic_document, records_document)
    order = [domain for domain in range(len(writers)) for _ in range(DOCUMENTS_PER_DOMAIN)]
    dice.shuffle(order)
    documents = [writers[domain](dice, dice.integer(MIN_DOCUMENT_CHARS, MAX_DOCUMENT_CHARS)) + "\n"
                 for domain in order]  # each ends with its blank line
    text = "".join(documents)
    if text.count("\n\n") != len(documents):
        raise RuntimeError("a document template holds a blank line, which would split its document")
    CharTokenizer().encode(text)  # raises, naming the character, if a template strays outside
    labels = np.repeat(np.array(order, dtype=np.uint8), [len(doc) for doc in documents])  # (N,)
    return text, labels


def save_corpus(text: str, labels: np.ndarray, out_dir: str | Path = DATA_DIR) -> None:
    """Write `corpus.txt` and `corpus_domains.npz` into `out_dir`, creating it if needed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TEXT_FILE).write_bytes(text.encode("ascii"))  # bytes: "\n" stays "\n" everywhere
    _save_npz_reproducibly(out_dir / LABELS_FILE, domain=labels, names=np.array(DOMAIN_NAMES))


def _save_npz_reproducibly(path: Path, **arrays: np.ndarray) -> None:
    """`np.savez_compressed` with a fixed timestamp on each member (NumPy stamps the current time),
    so that regenerating the corpus leaves the file byte for byte the same (with the same zlib)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w") as stream:
                np.lib.format.write_array(stream, array, allow_pickle=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=f"Write the bundled multi-domain corpus, {TEXT_FILE} and {LABELS_FILE}.")
    parser.add_argument("--out", default=DATA_DIR, type=Path, metavar="DIR",
                        help="folder to write corpus.txt and corpus_domains.npz to "
                             "(default: the minimoe/data package, where load_corpus looks)")
    args = parser.parse_args(argv)
    text, labels = generate_corpus()
    save_corpus(text, labels, args.out)
    shares = np.bincount(labels, minlength=len(DOMAIN_NAMES)) / len(labels)
    print(f"wrote {TEXT_FILE} and {LABELS_FILE} to {args.out}: {len(text):,} characters; "
          + ", ".join(f"{name} {share:.1%}" for name, share in zip(DOMAIN_NAMES, shares)))


if __name__ == "__main__":
    main()
