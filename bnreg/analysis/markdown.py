"""results.md's pieces: mean ± std cells and GitHub tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bnreg.analysis.statistics import mean_std, seed_values


def cell(values: Any, *, scale: float = 1.0, digits: int = 2, signed: bool = False) -> str:
    """``"88.59 ± 0.23"``: the mean ± sample std (:func:`mean_std`) of ``scale × values`` (one
    number per seed; scaled before the statistics) with ``digits`` decimals; ``signed`` writes
    the mean's sign (``"+0.19 ± 0.05"``). The mean is rounded before it is formatted, so a mean
    that rounds to zero reads ``0.00``, never ``-0.00``. NaN is a ValueError."""
    mean, std = mean_std(scale * seed_values(values))
    mean = round(mean, digits) + 0.0  # + 0.0 turns the -0.0 of a rounded tiny negative into 0.0
    return f"{mean:{'+' if signed else ''}.{digits}f} ± {std:.{digits}f}"


def _markdown_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table: ``| a | b |``, ``|---|---|``, then one line per row, cells
    ``str()``-ed as they are (markdown in them passes through); no trailing newline. Every row
    must have the header's length."""
    if not header:
        raise ValueError("a table needs at least one column")
    lines = [_markdown_row(header), "|" + "---|" * len(header)]
    for index, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(
                f"row {index} has {len(row)} cells, the header {len(header)}: {list(row)}"
            )
        lines.append(_markdown_row(row))
    return "\n".join(lines)
