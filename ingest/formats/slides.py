"""Slide decks: PowerPoint (.pptx, read with python-pptx) and OpenDocument presentations (.odp, read with odfdo).

One document per slide, `page` = the slide's number from 1. A slide's text is its title as a Markdown heading
(so the chunker gives its passages a heading), its other text boxes in order, its tables one row per line with
each cell named by its column header, then its speaker notes after a line "Notes:". The deck's title is the
one in its properties, else the first slide's title, else the file name.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..documents import Document, LoadedFile
from ..errors import LoadError
from ..language import detect_language
from . import ReadOptions, archive, register

_PPTX = "PowerPoint presentation"
# Titles that PowerPoint, LibreOffice and python-pptx's template write into a deck's properties by default:
# they say nothing about the deck, so the first slide's title is taken instead.
_DEFAULT_TITLES = {"", "presentation", "powerpoint presentation", "powerpoint-präsentation", "untitled",
                   "slide 1", "presentation1"}
_ODP = "OpenDocument presentation"


class _Slide:
    """What one slide says: its title, its other blocks of text (boxes, table rows), its notes."""

    def __init__(self) -> None:
        self.title = ""
        self.blocks: list[str] = []
        self.notes = ""

    def text(self) -> str:
        parts = [f"# {self.title}"] if self.title else []
        parts += [block for block in self.blocks if block.strip()]
        if self.notes.strip():
            parts.append("Notes:\n" + self.notes.strip())
        return "\n\n".join(parts)


@register("pptx", ".pptx", parts="slide", headings=True)
def load_pptx(path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile:
    data, digest, warnings = archive.read_checked(path, _PPTX, sha256)
    title, slides = _pptx_slides(str(path), data)
    return _deck(str(path), file_type, title or path.stem, digest, len(data), slides, warnings)


@register("odp", ".odp", parts="slide", headings=True)
def load_odp(path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile:
    data, digest, warnings = archive.read_checked(path, _ODP, sha256)
    title, slides = _odp_slides(str(path), data)
    return _deck(str(path), file_type, title or path.stem, digest, len(data), slides, warnings)


def _deck(source: str, file_type: str, title: str, digest: str, size: int, slides: list[_Slide],
          warnings: list[str]) -> LoadedFile:
    """One document per slide that has text; slides keep their numbers whether or not others are empty."""
    documents = []
    for number, slide in enumerate(slides, 1):
        text = slide.text()
        if text.strip():
            documents.append(Document(source, file_type, title, digest, text, number, detect_language(text)))
    if not documents:
        warnings = warnings + ["no text in file"]
    return LoadedFile(source, file_type, title, digest, size, documents, len(slides), warnings)


def _title(stored: str, slides: list[_Slide]) -> str:
    """The deck's title: the one in its properties unless it is a writer's default, else the first slide title."""
    if stored.strip().lower() not in _DEFAULT_TITLES:
        return stored.strip()
    return next((slide.title for slide in slides if slide.title), "")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def table_rows(rows: list[list[str]]) -> list[str]:
    """A table as lines, one per row after the header row, each cell named by its column header
    ("Name: Ada; Born: 1815"), so a passage cut from the table reads on its own."""
    rows = [[_one_line(cell) for cell in row] for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        return []
    if len(rows) == 1:
        return ["; ".join(cell for cell in rows[0] if cell)]
    header, lines = rows[0], []
    for row in rows[1:]:
        cells = []
        for index, cell in enumerate(row):
            name = header[index] if index < len(header) else ""
            if cell:
                cells.append(f"{name}: {cell}" if name else cell)
        lines.append("; ".join(cells))
    return lines


# --- PowerPoint ---------------------------------------------------------------------------------------------

def _pptx_slides(source: str, data: bytes) -> tuple[str, list[_Slide]]:
    """The deck's title and slides, read with python-pptx; its errors on a damaged deck become LoadError."""
    from lxml import etree
    from pptx import Presentation
    from pptx.exc import PythonPptxError

    try:
        deck = Presentation(io.BytesIO(data))
        slides = [_pptx_slide(slide) for slide in deck.slides]
        title = (deck.core_properties.title or "").strip()
    except (PythonPptxError, KeyError, ValueError, IndexError, AttributeError, TypeError, zipfile.BadZipFile,
            zlib.error, EOFError, etree.LxmlError) as exc:
        raise LoadError(source, f"damaged {_PPTX}: {type(exc).__name__}: {exc}") from None
    return _title(title, slides), slides


def _pptx_slide(slide: Any) -> _Slide:  # noqa: ANN401 - a python-pptx Slide
    read = _Slide()
    title_shape = slide.shapes.title
    if title_shape is not None and title_shape.has_text_frame:
        read.title = _one_line(title_shape.text_frame.text)
    for shape in _pptx_shapes(slide.shapes):
        if title_shape is not None and shape.shape_id == title_shape.shape_id:
            continue
        if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            read.blocks.append(_pptx_text(shape.text_frame))
        elif getattr(shape, "has_table", False) and shape.has_table:
            rows = [[_pptx_text(cell.text_frame) for cell in row.cells] for row in shape.table.rows]
            read.blocks.append("\n".join(table_rows(rows)))
    if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
        read.notes = _pptx_text(slide.notes_slide.notes_text_frame)
    return read


def _pptx_shapes(shapes: Iterable[Any]) -> Iterator[Any]:
    """Shapes in the slide's order, those inside groups in place of their group."""
    from pptx.shapes.group import GroupShape

    for shape in shapes:
        if isinstance(shape, GroupShape):
            yield from _pptx_shapes(shape.shapes)
        else:
            yield shape


def _pptx_text(frame: Any) -> str:  # noqa: ANN401 - a python-pptx TextFrame
    """A text frame's paragraphs, one per line (python-pptx gives a soft line break as a vertical tab)."""
    lines = [line.strip() for paragraph in frame.paragraphs for line in paragraph.text.split("\v")]
    return "\n".join(line for line in lines if line)


# --- OpenDocument -------------------------------------------------------------------------------------------

def _odp_slides(source: str, data: bytes) -> tuple[str, list[_Slide]]:
    """The deck's title and slides, read with odfdo; its errors on a damaged deck become LoadError."""
    from lxml import etree
    from odfdo import Document as OdfDocument

    try:
        deck = OdfDocument(io.BytesIO(data))
        if deck.get_type() not in ("presentation", "presentation-template"):
            raise LoadError(source, f"not an {_ODP} (it is an OpenDocument {deck.get_type()})")
        slides = [_odp_slide(page) for page in deck.body.get_draw_pages()]
        title = (deck.meta.get_title() or "").strip()
    except LoadError:
        raise
    except (KeyError, ValueError, IndexError, AttributeError, TypeError, zipfile.BadZipFile, zlib.error, EOFError,
            OSError, etree.LxmlError) as exc:
        raise LoadError(source, f"damaged {_ODP}: {type(exc).__name__}: {exc}") from None
    return _title(title, slides), slides


def _odp_slide(page: Any) -> _Slide:  # noqa: ANN401 - an odfdo DrawPage
    read = _Slide()
    for element in page.children:
        if element.tag == "presentation:notes":
            read.notes = "\n".join(_odp_blocks(element, read, notes=True))
        else:
            read.blocks.extend(_odp_blocks(element, read, notes=False))
    return read


_TEXT = ("text:p", "text:h")
_CONTAINERS = ("draw:frame", "draw:text-box", "draw:g", "draw:custom-shape", "draw:rect", "draw:ellipse",
               "draw:polygon", "draw:path", "text:list", "text:list-item", "text:list-header", "text:section")


def _odp_blocks(element: Any, slide: _Slide, *, notes: bool) -> list[str]:  # noqa: ANN401 - an odfdo Element
    """The text of one element of a page, in order; a frame of class "title" sets the slide's title instead.
    Images, thumbnails and other non-text elements give nothing."""
    tag = element.tag
    if tag in _TEXT:
        return [_odp_text(element)]
    if tag == "table:table":
        return ["\n".join(table_rows(_odp_table(element)))]
    if tag == "presentation:notes" or tag in _CONTAINERS:
        blocks = []
        for child in element.children:
            blocks.extend(_odp_blocks(child, slide, notes=notes))
        if tag == "draw:frame" and not notes and element.get_attribute("presentation:class") == "title":
            if not slide.title:
                slide.title = _one_line(" ".join(blocks))
                return []
        if tag in ("draw:frame", "draw:custom-shape", "draw:rect", "draw:ellipse") and len(blocks) > 1:
            return ["\n".join(block for block in blocks if block.strip())]
        return blocks
    return []


def _odp_text(paragraph: Any) -> str:  # noqa: ANN401 - an odfdo Paragraph or Header
    return str(paragraph).strip()


def _odp_table(table: Any) -> list[list[str]]:  # noqa: ANN401 - an odfdo Table
    rows = []
    for row in table.get_elements("descendant::table:table-row"):
        cells = [" ".join(_odp_text(p) for p in cell.get_elements("descendant::text:p"))
                 for cell in row.get_elements("table:table-cell")]
        rows.append(cells)
    return rows
