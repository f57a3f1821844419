"""The CLI's one text table: columns two spaces apart, each as wide as its widest cell.

``runbook runs``, ``show``, ``locks``, ``list``, ``plugins`` and ``audit`` print their listings
through it, so they line up the same way everywhere, and no line ends in blanks (scripts and
tests compare lines; a terminal shows nothing for them).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence


def table(
    rows: Iterable[Sequence[str]], *, indent: str = "", right: Collection[int] = ()
) -> list[str]:
    """``rows`` (the header first, if there is one) as aligned lines.

    Columns whose index is in ``right`` are right-aligned, for numbers that are compared by eye.
    The last column is left as it is, so one long free-text cell widens nothing.
    """
    rows = [list(row) for row in rows]
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent
        + "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
