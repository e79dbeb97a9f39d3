"""Tables as text a passage can carry on its own: the header row, then a line per row with each cell named by
its column header ("Name: Ada; Born: 1815"). Word, OpenDocument text and RTF tables are read through it."""

from __future__ import annotations

from typing import Iterable, Iterator


def row_lines(rows: Iterable[list[str]]) -> Iterator[str]:
    """Table rows as lines, each cell named by its column's header (the first row)."""
    header: list[str] | None = None
    for cells in rows:
        if not any(cells):
            continue
        if header is None:
            header = cells
            yield "; ".join(cell for cell in cells if cell)
            continue
        pairs = []
        for number, cell in enumerate(cells):
            if not cell:
                continue
            name = header[number] if number < len(header) and header[number] else f"Column {number + 1}"
            pairs.append(f"{name}: {cell}")
        yield "; ".join(pairs)
