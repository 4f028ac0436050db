"""What the three demos (`--check`, `--train`, `--bench`) share: their layers' number of experts,
which the number of ranks must divide, and plain-text tables for their output."""

N_EXPERTS = 8  # every demo's MoE layers have 8 experts: run them on 1, 2, 4 or 8 ranks


def table(headers, rows, left: int = 1) -> str:
    """Columns as wide as their widest cell; the first `left` left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    return "\n".join(lines[:1] + ["-" * len(lines[0])] + lines[1:])
