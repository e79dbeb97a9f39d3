"""HTML: the visible text of a page, its headings kept as Markdown headings for the chunker to cut at, its tables
with column headers read a row a line with each cell named by its header (see "tables" below)."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from ..documents import LoadedFile, whole_file
from . import ReadOptions, register
from .text import read_text


@register("html", ".html", ".htm", ".xhtml", headings=True)
def load_html(path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile:
    text, digest, size, warnings = read_text(path, sha256)
    title, text = html_to_text(text)
    return whole_file(str(path), file_type, title or path.stem, digest, size, text, warnings)


_BLOCKS = {
    "p", "div", "section", "article", "header", "footer", "li", "tr", "table", "ul", "ol", "pre",
    "blockquote", "br", "dt", "dd", "figcaption", "main", "aside", "nav", "caption",
}
_DROP = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object"}
_HEADINGS = {f"h{level}": level for level in range(1, 7)}


@functools.lru_cache(maxsize=1)
def _html_parser():  # noqa: ANN202 - lxml.html.HTMLParser
    import lxml.html

    return lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True)


def html_to_text(html: str) -> tuple[str | None, str]:
    """The page's title and visible text: headings kept as markdown headings, scripts and styles dropped.

    lxml's C parser and one walk over the tree: bs4 cost many times the CPU, more than the embedding
    client and Chroma together at a GPU's rate.
    """
    import lxml.html
    from lxml import etree

    try:
        root = lxml.html.document_fromstring(html.encode("utf-8"), parser=_html_parser())
    except (etree.ParserError, ValueError):  # nothing parseable: an empty or blank page
        return None, ""
    title_tag = root.find(".//title")
    title = " ".join(title_tag.text_content().split()) if title_tag is not None else None
    _drop_invisible(root)
    text = _tidy(_visible_text(root))
    if not title:
        match = re.search(r"^# (.+)$", text, re.M)
        title = match.group(1) if match else None
    return title or None, text


def _drop_invisible(root) -> None:  # noqa: ANN001 - lxml.html.HtmlElement
    """Not visible to a reader: not indexed either."""
    for element in [e for e in root.iter() if not isinstance(e.tag, str) or e.tag in _DROP
                    or e.get("hidden") is not None or e.get("aria-hidden") == "true"]:
        if element.getparent() is not None:
            element.drop_tree()  # keeps the text that follows it


def _visible_text(root, *, cell: bool = False, depth: int = 0) -> str:  # noqa: ANN001 - lxml.html.HtmlElement
    """The text under `root`, one block a line. `cell`: the text of a table cell (headings as plain text, a table
    in it one line, its rows parted by " / "), `depth` tables deep."""
    from lxml import etree

    parts: list[str] = []
    walk = etree.iterwalk(root, events=("start", "end"))
    for event, element in walk:
        tag = element.tag
        if event == "start":
            if tag == "table" and element is not root and depth < _MAX_NESTING:
                lines = _table_lines(element, depth + 1, headless=cell)
                if lines is not None:
                    parts.append(" / ".join(lines) if cell else "\n" + "\n".join(lines) + "\n")
                    walk.skip_subtree()
                    continue
            if tag in _HEADINGS:
                text = " ".join(element.text_content().split())
                parts.append(f"\n{text}\n" if cell else f"\n\n{'#' * _HEADINGS[tag]} {text}\n\n")
                walk.skip_subtree()
            elif element.text:
                parts.append(element.text)
            continue
        if element is root:
            break
        if tag in ("td", "th"):
            parts.append(" | ")
        if tag in _BLOCKS:
            parts.append("\n")
        if element.tail:
            parts.append(element.tail)
    return "".join(parts)


# --- tables ---------------------------------------------------------------------------------------------------
#
# A table with column headers is written one row a line, each cell named by its column's header, as kb writes the
# tables of Word, OpenDocument, slide decks and spreadsheets: the header row "Name; Born", then "Name: Ada; Born:
# 1815". The header is the table's <thead> rows, else its first rows made of <th> cells only; a header row that is
# one cell across the whole table is the table's title, written as a line. A table without one is read as before,
# "cell | cell |" a row: in HTML a first row of <td> cells is most often data or a page's layout (a navigation
# bar, an e-mail's columns), not column names, unlike a Word table's first row.

_MAX_NESTING = 8  # tables in cells of tables deeper than this: read as plain cells
_MAX_COLSPAN = 1000  # HTML's own bounds on colspan and rowspan
_MAX_ROWSPAN = 65534
_MAX_COLUMNS = 1000  # columns past this one share its header (and its place)
_MAX_STEPS = 1_000_000  # columns a table's rowspans may take and skip; past it (a crafted table) they are ignored


def _table_lines(table, depth: int, *, headless: bool) -> list[str] | None:  # noqa: ANN001 - an lxml element
    """The table one line a row, each cell named by its column header (its caption and title first). For a table
    with no header: None, or with `headless` its rows as "cell | cell"."""
    groups = _row_groups(table)
    if not groups:
        return None
    if any(head for _, head in groups):  # <thead> first, wherever it is
        groups = [group for group in groups if group[1]] + [group for group in groups if not group[1]]
    rows = [cells for group, _ in groups for cells in group]
    heads = sum(len(group) for group, head in groups if head)
    if not heads:
        while heads < len(rows) and rows[heads] and all(cell.tag == "th" for cell in rows[heads]):
            heads += 1
    if not heads and not headless:
        return None  # no column headers: read as the page's text is
    spans = [[_span(cell.get("colspan"), _MAX_COLSPAN) or 1 for cell in cells] for cells in rows]
    width = max(sum(row) for row in spans)
    titles = {number for number in range(heads) if width > 1 and len(rows[number]) == 1}
    if len(titles) == heads and not headless:
        return None
    texts = [[_cell_text(cell, depth) for cell in cells] for cells in rows]
    caption = next((" ".join(c.text_content().split()) for c in table if c.tag == "caption"), "")
    lines = [caption] + [texts[number][0] for number in sorted(titles)]
    if len(titles) == heads:
        lines += [" | ".join(text for text in row if text) for row in texts[heads:]]
        return [line for line in lines if line]
    placed: list[list[tuple[int, int, str]]] = []
    for group, _ in groups:
        at = len(placed)
        placed += _place(group, spans[at:at + len(group)], texts[at:at + len(group)])
    names: list[list[str]] = []
    for number, cells in enumerate(placed[:heads]):
        for column, span, text in cells if number not in titles else ():
            for at in range(column, min(column + span, _MAX_COLUMNS)):
                names += [[] for _ in range(at + 1 - len(names))]
                if text and text not in names[at]:
                    names[at].append(text)
    header = [" / ".join(parts) for parts in names]
    lines.append("; ".join(name for at, name in enumerate(header) if name and (at == 0 or header[at - 1] != name)))
    for cells in placed[heads:]:
        pairs = []
        for column, span, text in cells:
            if not text:
                continue
            if span == 1:
                label = header[column] if column < len(header) else ""
            elif len(header) > 1 and column == 0 and span >= len(header):
                label = ""  # across the whole table: a group's title ("Europe"), not a value
            else:
                label = ", ".join(dict.fromkeys(name for name in header[column:column + span] if name))
            pairs.append(f"{label}: {text}" if label else text)
        lines.append("; ".join(pairs))
    return [line for line in lines if line]


def _row_groups(table) -> list[tuple[list[list], bool]]:  # noqa: ANN001 - an lxml element
    """The table's own rows (not a nested table's) as their cells, in groups a rowspan cannot leave (<thead>,
    each <tbody>, <tfoot>, rows straight in the table), each group with whether it is the <thead>."""
    groups: list[tuple[list[list], bool]] = []
    loose: list[list] = []
    for child in table:
        if child.tag == "tr":
            loose.append([cell for cell in child if cell.tag in ("td", "th")])
            continue
        if loose:
            groups.append((loose, False))
            loose = []
        if child.tag in ("thead", "tbody", "tfoot"):
            rows = [[cell for cell in row if cell.tag in ("td", "th")] for row in child if row.tag == "tr"]
            if rows:
                groups.append((rows, child.tag == "thead"))
    if loose:
        groups.append((loose, False))
    return groups


def _place(rows: list[list], spans: list[list[int]], texts: list[list[str]]) -> list[list[tuple[int, int, str]]]:
    """Each row's cells as (first column, columns spanned, text): a cell goes past the columns that cells of the
    rows above still take (rowspan)."""
    placed = []
    taken: dict[int, int] = {}  # column -> the last row a cell above takes it down to
    steps = _MAX_STEPS
    for number, (cells, row_spans, row_texts) in enumerate(zip(rows, spans, texts)):
        column = 0
        out = []
        for cell, span, text in zip(cells, row_spans, row_texts):
            while steps and taken.get(column, -1) >= number:
                column += 1
                steps -= 1
            out.append((column, span, text))
            down = _span(cell.get("rowspan"), _MAX_ROWSPAN) if cell.get("rowspan") else 1
            if down != 1 and steps:
                last = number + down - 1 if down else len(rows) - 1  # rowspan="0": to the group's end
                for at in range(column, min(column + span, _MAX_COLUMNS)):
                    taken[at] = last
                steps = max(steps - span, 0)
            column = min(column + span, _MAX_COLUMNS)
        placed.append(out)
    return placed


def _span(value: str | None, bound: int) -> int:
    """A colspan or rowspan as browsers read it: the leading digits, 1 when there are none, at most `bound`
    (0 stays 0: a rowspan of 0 runs to the end of its group)."""
    if value is None:
        return 1
    match = re.match(r"\s*(\d+)", value)
    return min(int(match.group(1)), bound) if match else 1


def _cell_text(cell, depth: int) -> str:  # noqa: ANN001 - an lxml element
    if not len(cell):  # text only, as most cells are
        return " ".join((cell.text or "").split())
    return " ".join(_visible_text(cell, cell=True, depth=depth).split())


def _tidy(text: str) -> str:
    """Runs of spaces to one, no spaces around line breaks, at most one blank line."""
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
