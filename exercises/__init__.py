"""Your exercises, one module per lesson: replace each `raise NotImplementedError` and grade with
`python -m minimoe.grade` (see exercises/README.md)."""
