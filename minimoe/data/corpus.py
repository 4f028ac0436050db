"""The bundled multi-domain corpus, loaded with a domain label for every character.

The files ship inside the package (written by `python -m minimoe.data.make_corpus`), so nothing
is downloaded. Lesson 08 uses the labels to ask which expert serves which domain.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minimoe.data.tokenizer import CharTokenizer

DATA_DIR = Path(__file__).parent  # the corpus files ship inside the package
TEXT_FILE, LABELS_FILE = "corpus.txt", "corpus_domains.npz"
REBUILD_HINT = f"run `python -m minimoe.data.make_corpus` to rebuild {TEXT_FILE} and {LABELS_FILE}"
NEWLINE_ID = 0


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class Corpus:
    """Text, token ids and domain labels, aligned character by character.

    Introduced in lesson 04 (a tiny MoE Transformer); its labels drive lesson 08.
    """

    text: str
    ids: np.ndarray  # (N,) int64, CharTokenizer ids of `text`
    domains: np.ndarray  # (N,) uint8, index into `domain_names` for each character
    domain_names: tuple[str, ...]  # ("code", "prose", "arithmetic", "records")

    def __len__(self) -> int:
        return len(self.text)

    @property
    def document_starts(self) -> np.ndarray:
        """(D,) int64 index of each document's first character. A document ends with a blank
        line and holds none of its own, so each one starts right after a "\\n\\n"."""
        is_newline = self.ids == NEWLINE_ID  # (N,)
        blank_line_ends = np.flatnonzero(is_newline[:-1] & is_newline[1:])
        starts = blank_line_ends + 2  # (D - 1,) or (D,) when the text ends with a blank line
        return np.concatenate([[0], starts[starts < len(self)]]).astype(np.int64)


def load_corpus(data_dir: str | Path | None = None) -> Corpus:
    """Load `corpus.txt` and `corpus_domains.npz` from `data_dir` (default: this package)."""
    directory = DATA_DIR if data_dir is None else Path(data_dir)
    text = _read_text(directory / TEXT_FILE)
    domains, names = _read_labels(directory / LABELS_FILE)
    if domains.shape != (len(text),):
        raise ValueError(
            f"{TEXT_FILE} has {len(text):,} characters but {LABELS_FILE} has {domains.size:,} "
            f"labels (shape {domains.shape}); the files are out of step: {REBUILD_HINT}"
        )
    if domains.size and int(domains.max()) >= len(names):
        raise ValueError(
            f"{LABELS_FILE} holds label {int(domains.max())} but names only {len(names)} "
            f"domains {names}: {REBUILD_HINT}"
        )
    try:
        ids = CharTokenizer().encode(text)
    except ValueError as err:
        raise ValueError(f"{TEXT_FILE} is not a valid corpus ({err}): {REBUILD_HINT}") from err
    return Corpus(text=text, ids=ids, domains=domains, domain_names=names)


def split(corpus: Corpus, val_fraction: float = 0.1) -> tuple[Corpus, Corpus]:
    """(train, val): the last `val_fraction` of the documents, whole, are held out.

    Cutting between documents keeps any document from straddling both sets; the generator
    shuffles the domains' documents together, so the held-out tail still holds every domain.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    starts = corpus.document_starts  # (D,)
    n_val = max(1, round(len(starts) * val_fraction))
    if n_val >= len(starts):
        raise ValueError(
            f"cannot hold out {n_val} of {len(starts)} documents and still train on some; "
            "use a smaller val_fraction or a corpus with more documents"
        )
    cut = int(starts[-n_val])
    return _slice(corpus, 0, cut), _slice(corpus, cut, len(corpus))


def _slice(corpus: Corpus, start: int, stop: int) -> Corpus:
    return Corpus(corpus.text[start:stop], corpus.ids[start:stop], corpus.domains[start:stop],
                  corpus.domain_names)


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path.name} is missing from {path.parent}: {REBUILD_HINT}")
    try:
        return path.read_bytes().decode("ascii")  # bytes, so "\r\n" would be caught, not hidden
    except UnicodeDecodeError as err:
        raise ValueError(f"{path.name} is not plain ASCII ({err}): {REBUILD_HINT}") from err


def _read_labels(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path.name} is missing from {path.parent}: {REBUILD_HINT}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            domains, names = archive["domain"], archive["names"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{path.name} is unreadable or lacks its arrays 'domain' and 'names' ({err}): "
            f"{REBUILD_HINT}"
        ) from err
    if domains.dtype != np.uint8 or names.dtype.kind != "U":
        raise ValueError(
            f"{path.name} should hold uint8 'domain' and unicode 'names', got {domains.dtype} and "
            f"{names.dtype}: {REBUILD_HINT}"
        )
    return domains, tuple(str(name) for name in names)
