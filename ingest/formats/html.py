"""HTML: the visible text of a page, its headings kept as Markdown headings for the chunker to cut at."""

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
    "blockquote", "br", "dt", "dd", "figcaption", "main", "aside", "nav",
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


def _visible_text(root) -> str:  # noqa: ANN001 - lxml.html.HtmlElement
    from lxml import etree

    parts: list[str] = []
    walk = etree.iterwalk(root, events=("start", "end"))
    for event, element in walk:
        tag = element.tag
        if event == "start":
            if tag in _HEADINGS:
                text = " ".join(element.text_content().split())
                parts.append(f"\n\n{'#' * _HEADINGS[tag]} {text}\n\n")
                walk.skip_subtree()
            elif element.text:
                parts.append(element.text)
            continue
        if tag in ("td", "th"):
            parts.append(" | ")
        if tag in _BLOCKS:
            parts.append("\n")
        if element.tail:
            parts.append(element.tail)
    return "".join(parts)


def _tidy(text: str) -> str:
    """Runs of spaces to one, no spaces around line breaks, at most one blank line."""
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
