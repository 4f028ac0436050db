"""A character-level tokenizer with a fixed vocabulary: newline plus the 95 printable ASCII symbols.

Characters, not sub-words, keep the tiny Transformer's input honest and easy to read: every id is
one visible character, so lesson 08 can ask which expert fires for a digit, a space or a `:`.
The vocabulary is fixed rather than learned from the corpus, so a checkpoint never depends on the
text it was trained on.
"""
from __future__ import annotations

import numpy as np

VOCAB = "\n" + "".join(chr(code) for code in range(32, 127))  # id -> character
_ID_OF_CODEPOINT = np.full(128, -1, dtype=np.int64)  # (128,) ASCII codepoint -> id, -1 if absent
_ID_OF_CODEPOINT[[ord(char) for char in VOCAB]] = np.arange(len(VOCAB))
_CODEPOINT_OF_ID = np.array([ord(char) for char in VOCAB], dtype=np.uint8)  # (96,) id -> ASCII


class CharTokenizer:
    """Maps text to int64 ids and back; ids index `VOCAB` ('\\n' is 0, ' ' is 1, '~' is 95).

    Introduced in lesson 04 (a tiny MoE Transformer) and used again in lesson 08.
    """

    vocab = VOCAB
    vocab_size = len(VOCAB)  # 96

    def encode(self, text: str) -> np.ndarray:
        """The ids of `text`, shape (len(text),), dtype int64; ValueError on a foreign character."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}")
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (N,)
        # 127 (DEL) is not in the vocabulary, so clipping sends every non-ASCII character to -1.
        ids = _ID_OF_CODEPOINT[np.minimum(codepoints, 127)]  # (N,)
        unknown = np.flatnonzero(ids < 0)
        if unknown.size:
            raise ValueError(_unknown_characters_message(text, unknown))
        return ids

    def decode(self, ids) -> str:
        """The text of a 1-D sequence of ids (a list or a NumPy array of integers)."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(
                f"decode() takes a 1-D sequence of integer ids, got shape {ids.shape} and dtype "
                f"{ids.dtype}; decode one row at a time, e.g. decode(batch[0])"
            )
        outside = np.flatnonzero((ids < 0) | (ids >= self.vocab_size))
        if outside.size:
            raise ValueError(
                f"id {int(ids[outside[0]])} at position {int(outside[0])} is outside the "
                f"vocabulary 0..{self.vocab_size - 1}"
            )
        return _CODEPOINT_OF_ID[ids.astype(np.int64)].tobytes().decode("ascii")


def _unknown_characters_message(text: str, positions: np.ndarray, shown: int = 5) -> str:
    listed = ", ".join(f"{text[p]!r} at position {p}" for p in positions[:shown].tolist())
    more = f" (and {positions.size - shown} more)" if positions.size > shown else ""
    return (
        f"{positions.size} character(s) outside the vocabulary: {listed}{more}. The vocabulary is "
        "newline plus printable ASCII (chr(32) to chr(126)); replace or remove these characters"
    )
