"""Word processor documents: .docx (python-docx) and .odt (odfdo), read whole.

Headings (Word's "Title" and "Heading 1".."Heading 9" styles; ODF's text:h with its outline level and
paragraphs in the "Title" style) become Markdown heading lines for the chunker to cut at (levels past 6 as
6). Paragraphs and tables keep their order in the document, each table row written as "Header: value;
Header: value" with the first row as the header, so a passage from a table makes sense on its own. The
archive is checked first (encryption, truncation, bombs, entity declarations).
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..documents import LoadedFile, whole_file
from ..errors import LoadError
from . import ReadOptions, register
from .archive import read_checked
from .tables import row_lines

_HEADING_STYLE = re.compile(r"heading ([1-9])", re.I)
_DEEPEST = 6  # Markdown's (and kb's chunker's) deepest heading: Word's and ODF's levels 7-9 become 6


def _why(exc: Exception) -> str:
    """A library's error as a reason (KeyError's message comes quoted)."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def _clean(text: str) -> str:
    return " ".join(text.split())


def _join(blocks: Iterable[str]) -> str:
    return "\n\n".join(block for block in blocks if block.strip())


def _first_heading(text: str) -> str | None:
    match = re.search(r"^#{1,9} (.+)$", text, re.M)
    return match.group(1).strip() if match else None


# --- .docx -----------------------------------------------------------------------------------------------


@register("docx", ".docx", headings=True)
def load_docx(path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile:
    """A Word document: headings by style, paragraphs and tables in order, the title from its properties."""
    import docx
    from docx.opc.exceptions import OpcError
    from lxml import etree

    source = str(path)
    data, digest, warnings = read_checked(path, "Word document", sha256)
    try:
        document = docx.Document(io.BytesIO(data))
        text = _join(_docx_blocks(document))
        title = _docx_title(document)
    except (OpcError, KeyError, ValueError, zipfile.BadZipFile, etree.XMLSyntaxError) as exc:
        raise LoadError(source, f"not a readable Word document: {_why(exc)}") from None
    return whole_file(source, file_type, title or _first_heading(text) or path.stem, digest, len(data), text,
                      warnings)


def _docx_title(document: Any) -> str:  # noqa: ANN401 - docx.document.Document
    """The title in the document's core properties; none when it has none (python-docx would make up
    "Word Document" for a file without them)."""
    from docx.opc.constants import RELATIONSHIP_TYPE

    package = document.part.package
    if not any(rel.reltype == RELATIONSHIP_TYPE.CORE_PROPERTIES for rel in package.rels.values()):
        return ""
    return _clean(document.core_properties.title or "")


def _docx_blocks(document: Any) -> Iterator[str]:  # noqa: ANN401 - docx.document.Document
    """The body's paragraphs (headings as Markdown headings) and tables, in document order."""
    from docx.enum.style import WD_STYLE_TYPE
    from docx.table import Table

    # Style names by id, looked up once: python-docx's `paragraph.style` searches every style of the
    # document for each paragraph, most of the time of reading a long document.
    names = {style.style_id: style.name or "" for style in document.styles}
    default = document.styles.default(WD_STYLE_TYPE.PARAGRAPH)
    default_name = (default.name or "") if default is not None else ""
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            yield "\n".join(row_lines(_docx_rows(block)))
        else:
            style_id = block._p.style  # the pStyle of the paragraph's properties, or None
            yield _docx_paragraph(block, names.get(style_id, default_name) if style_id else default_name)


def _docx_paragraph(paragraph: Any, name: str) -> str:  # noqa: ANN401 - docx.text.paragraph.Paragraph
    """A paragraph's text, as a Markdown heading when its style (`name`) is Title or Heading N."""
    text = _clean(paragraph.text)
    if not text:
        return ""
    if name.lower() == "title":
        return f"# {text}"
    match = _HEADING_STYLE.fullmatch(name)
    return f"{'#' * min(int(match.group(1)), _DEEPEST)} {text}" if match else text


def _docx_rows(table: Any) -> Iterator[list[str]]:  # noqa: ANN401 - docx.table.Table
    """Each row's cell texts; a merged cell counted once (python-docx repeats it across the span)."""
    for row in table.rows:
        seen: set[int] = set()
        cells = []
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(_docx_cell(cell))
        yield cells


def _docx_cell(cell: Any) -> str:  # noqa: ANN401 - docx.table._Cell
    """A cell's text; a table nested in it written inline, its rows parted by " / "."""
    from docx.table import Table

    parts = []
    for block in cell.iter_inner_content():
        if isinstance(block, Table):
            parts.append(" / ".join(row_lines(_docx_rows(block))))
        else:
            parts.append(_clean(block.text))
    return _clean(" ".join(parts))


# --- .odt ------------------------------------------------------------------------------------------------

_ODT_ROWS = "table:table-row|table:table-header-rows/table:table-row|table:table-rows/table:table-row"
_ODT_SKIP = {"text:sequence-decls", "office:forms", "table:table-columns", "table:table-column",
             "text:tracked-changes", "text:variable-decls", "text:user-field-decls",
             # generated from the text itself: a table of contents repeats the headings
             "text:table-of-content", "text:illustration-index", "text:table-index", "text:object-index",
             "text:user-index", "text:alphabetical-index", "text:bibliography"}


@register("odt", ".odt", headings=True)
def load_odt(path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile:
    """An OpenDocument text: headings by outline level, paragraphs, lists and tables in order."""
    from lxml import etree
    from odfdo import Document

    source = str(path)
    data, digest, warnings = read_checked(path, "OpenDocument text", sha256)
    try:
        document = Document(io.BytesIO(data))
        text = _join(_odt_blocks(document.body, _odt_title_styles(document)))
        title = _clean(document.meta.get_title() or "")
    except (KeyError, ValueError, TypeError, AttributeError, zipfile.BadZipFile, etree.XMLSyntaxError) as exc:
        raise LoadError(source, f"not a readable OpenDocument text: {_why(exc)}") from None
    return whole_file(source, file_type, title or _first_heading(text) or path.stem, digest, len(data), text,
                      warnings)


def _odt_title_styles(document: Any) -> set[str]:  # noqa: ANN401 - odfdo Document
    """Paragraph style names that mean the document's title: "Title" and the automatic styles based on it."""
    names = {"Title"}
    for style in document.content.get_elements("//office:automatic-styles/style:style"):
        if style.get_attribute_string("style:parent-style-name") == "Title":
            names.add(style.get_attribute_string("style:name") or "Title")
    return names


def _odt_blocks(element: Any, titles: set[str]) -> Iterator[str]:  # noqa: ANN401 - an odfdo Element
    """Headings, paragraphs and table rows under `element`, in document order (sections and lists walked);
    a paragraph in a `titles` style is a level-1 heading."""
    for child in element.children:
        tag = child.tag
        if tag == "text:h":
            text = _clean(child.text_recursive)
            level = min(max(child.get_attribute_integer("text:outline-level") or 1, 1), _DEEPEST)
            yield f"{'#' * level} {text}" if text else ""
        elif tag == "text:p":
            text = _clean(child.text_recursive)
            yield f"# {text}" if text and child.get_attribute_string("text:style-name") in titles else text
        elif tag == "table:table":
            yield "\n".join(row_lines(_odt_rows(child)))
        elif tag not in _ODT_SKIP:
            yield from _odt_blocks(child, titles)


def _odt_rows(table: Any) -> Iterator[list[str]]:  # noqa: ANN401 - odfdo Table
    """Each row's cell texts (header rows included, repeated rows and cells not expanded)."""
    for row in table.xpath(_ODT_ROWS):
        cells = row.xpath("table:table-cell|table:covered-table-cell")
        yield [_clean(" ".join(_clean(p.text_recursive) for p in cell.xpath(".//text:p|.//text:h")))
               for cell in cells if cell.tag == "table:table-cell"]
