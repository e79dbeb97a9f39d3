"""Spreadsheets (.xlsx/.xlsm, .ods, .csv): one document per non-empty sheet, numbered from 1 in `page` and named
in `sheet`. Each sheet's text is a `# <sheet name>` heading line, the header row, then one line per row with every
cell labelled by its column header ("Region: North; Q1: 120"), so a passage of a table makes sense on its own.

Workbooks are streamed row by row (openpyxl read-only mode, values only; an OpenDocument spreadsheet's content.xml
parsed as a stream with lxml, each row dropped once read) so that a sheet of a million cells never sits in memory
as cells: only the rows' text is kept. Formulas are read as the values their application cached.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..documents import Document, LoadedFile, changed_since_listed, sha256_of_stream
from ..errors import LoadError
from ..language import detect_language
from . import ReadOptions, archive, register
from .text import decode

# A row or cell that an OpenDocument file repeats (table:number-*-repeated) is written out at most this many
# times: LibreOffice repeats empty rows and cells up to the sheet's edge (a million rows, 16,384 columns).
MAX_REPEAT = 1000
_SNIFF_BYTES = 64 << 10


def _hash_file(path: Path) -> tuple[str, int]:
    """The sha256 and size of the file's bytes, read a block at a time."""
    with open(path, "rb") as handle:
        digest = sha256_of_stream(handle)
        return digest, handle.tell()


def cell_text(value: Any) -> str:  # noqa: ANN401 - any cell value
    """A cell's value as a reader would write it: whole floats without ".0", dates without a midnight time, one
    line (rows are one per line)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value() and abs(value) < 10**15:
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time(0):
        return value.date().isoformat()
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return " ".join(str(value).split())


def sheet_text(name: str, rows: Iterable[Sequence[Any]]) -> str:
    """A sheet's text: its name as a heading, its first non-empty row (the column headers), then each row with
    every non-empty cell labelled by its column's header. Empty text when the sheet has no value."""
    return cells_text(name, ([(column, value) for column, value in enumerate(row) if value is not None and value != ""]
                             for row in rows))


def cells_text(name: str, rows: Iterable[Iterable[tuple[int, Any]]]) -> str:
    """`sheet_text` for rows given as their non-empty cells, each with its column's number (from 0)."""
    headers: dict[int, str] | None = None
    lines = [f"# {name}"]
    for row in rows:
        cells = [(column, text) for column, value in row if (text := cell_text(value))]
        if not cells:
            continue
        if headers is None:
            headers = dict(cells)
            lines.append("; ".join(text for _, text in cells))
            continue
        lines.append("; ".join(f"{headers[column]}: {text}" if headers.get(column) else text
                               for column, text in cells))
    return "\n".join(lines) if headers is not None else ""


def _loaded(path: Path, file_type: str, title: str, digest: str, size: int, sheets: Iterable[tuple[str, str]],
            sha256: str | None) -> LoadedFile:
    """One document per sheet with text, numbered by the sheet's place in the file."""
    source = str(path)
    documents = []
    count = 0
    for count, (name, text) in enumerate(sheets, start=1):
        if text:
            documents.append(Document(source, file_type, title, digest, text, count, detect_language(text),
                                      sheet=name))
    warnings = changed_since_listed(sha256, digest) + ([] if documents else ["no text in file"])
    return LoadedFile(source, file_type, title, digest, size, documents, count, warnings)


@register("xlsx", ".xlsx", ".xlsm", parts="sheet", headings=True)
def load_xlsx(path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile:
    """An Excel workbook, streamed sheet by sheet and row by row."""
    source = str(path)
    with archive.open_zip(path, "Excel workbook") as zipped:
        archive.refuse_entities(zipped, source)
    digest, size = _hash_file(path)
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True, keep_links=False)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError,
            IndexError, EOFError, SyntaxError) as exc:  # SyntaxError: xml.etree's ParseError
        raise LoadError(source, f"not a readable Excel workbook: {exc}") from None
    try:
        title = (book.properties.title or "").strip() or path.stem
        return _loaded(path, file_type, title, digest, size, _xlsx_sheets(book, source), sha256)
    finally:
        book.close()


def _xlsx_sheets(book: Any, source: str) -> Iterator[tuple[str, str]]:  # noqa: ANN401 - an openpyxl Workbook
    """Each worksheet's name and text, its rows streamed as values."""
    for sheet in book.worksheets:
        try:
            # The stored extent (<dimension ref="A1:XFD1048576">) can lie: trusting it pads every row to it.
            sheet.reset_dimensions()
            text = sheet_text(sheet.title, sheet.iter_rows(values_only=True))
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError, IndexError, EOFError,
                SyntaxError, OSError) as exc:
            raise LoadError(source, f"sheet {sheet.title!r} is damaged: {exc}") from None
        yield sheet.title, text


@register("ods", ".ods", parts="sheet", headings=True)
def load_ods(path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile:
    """An OpenDocument spreadsheet (LibreOffice Calc), its content.xml streamed row by row."""
    from lxml import etree

    source = str(path)
    kind = "OpenDocument spreadsheet"
    with archive.open_zip(path, kind) as zipped:
        archive.refuse_entities(zipped, source)
        if "content.xml" not in zipped.namelist():
            raise LoadError(source, "part 'content.xml' is missing")
        digest, size = _hash_file(path)
        part = "meta.xml"
        try:
            title = _ods_title(zipped) or path.stem
            part = "content.xml"
            with zipped.open(part) as content:
                sheets = list(_ods_sheets(content))
        except archive.DAMAGED as exc:
            raise LoadError(source, f"part {part!r} is damaged: {exc}") from None
        except (ValueError, TypeError, ArithmeticError, etree.XMLSyntaxError) as exc:
            # ValueError and ArithmeticError (decimal's InvalidOperation): a cell's value that is not one
            raise LoadError(source, f"not a readable {kind}: {exc}") from None
    return _loaded(path, file_type, title, digest, size, sheets, sha256)


# OpenDocument's namespaces, as lxml spells a tag ("{uri}local")
_OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_XLINK = "{http://www.w3.org/1999/xlink}"
_DC = "{http://purl.org/dc/elements/1.1/}"
_CELLS = (f"{_TABLE}table-cell", f"{_TABLE}covered-table-cell")
_P = f"{_TEXT}p"
# Copies that repetition (table:number-columns-repeated, table:number-rows-repeated) may add to a file's cells
# beyond those it writes: past it, a repeated cell or row is read once. Empty cells cost nothing (LibreOffice
# repeats them to a sheet's edge), so only a file repeating values a million times meets the bound.
MAX_REPEATED = 1_000_000


def _ods_title(zipped: zipfile.ZipFile) -> str:
    """The title in meta.xml (its first dc:title), streamed; none when the file has no meta.xml."""
    if "meta.xml" not in zipped.namelist():
        return ""
    with zipped.open("meta.xml") as meta:
        for _, element in archive.iterparse(meta):
            if element.tag == f"{_DC}title":
                return (element.text or "").strip()
            archive.forget(element)
    return ""


def _ods_sheets(content: Any) -> Iterator[tuple[str, str]]:  # noqa: ANN401 - a binary file
    """Each sheet's name and text from content.xml, parsed as a stream of elements: a row's cells are read
    once the row is parsed, then dropped. Sheets are the tables that are not inside another table's cell."""
    events = archive.iterparse(content, events=("start", "end"))
    budget = [MAX_REPEATED]
    number = 0
    for event, element in events:
        if event == "start" and element.tag == f"{_TABLE}table":
            number += 1
            name = element.get(f"{_TABLE}name") or f"Sheet{number}"
            yield name, cells_text(name, _ods_rows(events, element, budget))
            archive.forget(element)
        elif event == "end":
            archive.forget(element)  # styles, settings: nothing kb reads


def _ods_rows(events: Any, table: Any, budget: list[int]) -> Iterator[list[tuple[int, Any]]]:  # noqa: ANN401
    """The rows of `table` (read from its start event to its end) as their non-empty cells and columns.
    A repeated row or cell is written out at most MAX_REPEAT times, and only while the file's `budget` of
    repeated cells lasts; a repeated empty cell only moves the next cell's column (by at most MAX_REPEAT).
    A table inside a cell is part of that cell's text."""
    open_cells = 0
    cells: list[tuple[int, Any]] = []
    column = 0
    for event, element in events:
        tag = element.tag
        if tag in _CELLS:
            if event == "start":
                open_cells += 1
                continue
            open_cells -= 1
            if open_cells:
                continue
            value = _ods_value(element)
            repeat = _repeat(element.get(f"{_TABLE}number-columns-repeated"))
            archive.forget(element)
            if value is not None and value != "":
                cells.extend((column + copy, value) for copy in range(_spend(budget, repeat, 1)))
            column += repeat
        elif event == "end" and open_cells == 0:
            if tag == f"{_TABLE}table-row":
                repeat = _repeat(element.get(f"{_TABLE}number-rows-repeated"))
                archive.forget(element)
                if cells:
                    for _ in range(_spend(budget, repeat, len(cells))):
                        yield cells
                cells, column = [], 0
            elif element is table:
                return
            else:
                archive.forget(element)  # column definitions, row groups (their rows already read)


def _repeat(count: str | None) -> int:
    """A number-*-repeated attribute as the copies to write: at most MAX_REPEAT (none when negative)."""
    return max(0, min((int(count) if count is not None else 1) or 1, MAX_REPEAT))


def _spend(budget: list[int], copies: int, width: int) -> int:
    """How many of `copies` (each of `width` cells) to write: the first, and the others while the budget of
    repeated cells lasts (they are taken from it)."""
    if copies <= 1:
        return copies
    extra = min(copies - 1, budget[0] // max(width, 1))
    budget[0] -= extra * width
    return 1 + extra


def _ods_value(cell: Any) -> Any:  # noqa: ANN401 - an lxml element and a cell's value
    """A cell's value: typed values as such (a formula's cached result), else its text."""
    value = _ods_typed(cell) if cell.tag == _CELLS[0] else None
    if value is None or isinstance(value, str):
        return _text_content(cell) or value
    return value


def _ods_typed(cell: Any) -> Any:  # noqa: ANN401 - an lxml element and a cell's value
    """The value its office:value-type says (ValueError, or decimal's InvalidOperation, for a value that is not
    one); None for an untyped cell or a type OpenDocument does not define."""
    kind = cell.get(f"{_OFFICE}value-type")
    if kind in ("float", "percentage", "currency"):
        return _number(cell.get(f"{_OFFICE}value"))
    if kind == "string":
        value = cell.get(f"{_OFFICE}string-value")
        if value is not None:
            return value
        paragraphs = [_inner_text(p) for p in cell.iterchildren(_P)]
        return "\n".join(paragraphs) if paragraphs else None
    if kind == "date":
        return _date(cell.get(f"{_OFFICE}date-value"))
    if kind == "time":
        return _duration(cell.get(f"{_OFFICE}time-value"))
    if kind == "boolean":
        flag = cell.get(f"{_OFFICE}boolean-value")
        if flag not in (None, "true", "false"):
            raise ValueError(f"Boolean {flag!r} is invalid")
        return flag == "true"
    return None


def _number(text: str | None) -> int | Decimal:
    """office:value as a number: an int when it is whole (and short enough to write out), else a Decimal."""
    if text is None:
        raise ValueError('"office:value" has None value')
    value = Decimal(text)
    if value.is_finite() and value.adjusted() < 4000 and value == value.to_integral_value():
        return int(value)
    return value


def _date(text: str | None) -> dt.date | dt.datetime:
    if text is None:
        raise ValueError('"office:date-value" has None value')
    text = text.strip()
    if "T" in text:
        return dt.datetime.fromisoformat(text)
    if " " in text:
        try:
            return dt.datetime.fromisoformat(text.replace(" ", "T")).date()
        except ValueError:
            pass
    return dt.date.fromisoformat(text)


_DURATION = re.compile(r"(-)?P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:[.,]\d+)?)S)?)?")


def _duration(text: str | None) -> dt.timedelta:
    """office:time-value (an ISO 8601 duration, "PT13H45M00S") as a timedelta."""
    match = _DURATION.fullmatch((text or "").strip())
    if not match or not any(match.groups()[1:]):
        raise ValueError(f"Duration not valid {text!r}")
    sign, days, hours, minutes, seconds = match.groups()
    value = dt.timedelta(days=int(days or 0), hours=int(hours or 0), minutes=int(minutes or 0),
                         seconds=float((seconds or "0").replace(",", ".")))
    return -value if sign else value


def _text_content(element: Any) -> str:  # noqa: ANN401 - an lxml element
    """The text of every paragraph (text:p) under `element`, one per line."""
    return "".join(_inner_text(p) + "\n" for p in element.iter(_P)).removesuffix("\n")


def _inner_text(element: Any) -> str:  # noqa: ANN401 - an lxml element
    """An element's text with its children's: spaces (text:s), tabs, line breaks, spans; a link as
    "[text](address)"; a note as "citation. body"; a comment (office:annotation) as its body and author."""
    parts = [element.text or ""]
    for child in element:
        parts.append(_child_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _child_text(child: Any) -> str:  # noqa: ANN401 - an lxml element
    tag = child.tag
    if not isinstance(tag, str):
        return ""
    if tag == f"{_TEXT}s":
        count = child.get(f"{_TEXT}c")
        return " " if not count or not count.strip().isdigit() or int(count) > 0 else ""  # one: cells are one line
    if tag == f"{_TEXT}tab":
        return "\t"
    if tag == f"{_TEXT}line-break":
        return "\n"
    if tag in (_P, f"{_TEXT}h"):
        return _inner_text(child) + "\n"
    if tag == f"{_TEXT}a":
        text, address = _inner_text(child).strip(), child.get(f"{_XLINK}href") or ""
        return f"[{text}]({address})" if text else f"({address})"
    if tag == f"{_TEXT}note":
        citation = child.find(f"{_TEXT}note-citation")
        body = child.find(f"{_TEXT}note-body")
        body_text = _text_content(body) if body is not None else ""
        cited = citation.text if citation is not None and citation.text else ""
        return f"{cited}. {body_text}" if cited else body_text
    if tag == f"{_OFFICE}annotation":
        author = " ".join((part.text or "") for part in child.iterchildren(f"{_DC}creator", f"{_DC}date"))
        return f"{_text_content(child)}\n{author}"
    return _inner_text(child)


@register("csv", ".csv", parts="sheet", headings=True)
def load_csv(path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile:
    """A CSV file: one sheet named after the file; its delimiter sniffed (comma when it cannot be told)."""
    source = str(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    text = decode(source, data)
    try:
        dialect: Any = csv.Sniffer().sniff(text[:_SNIFF_BYTES], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        body = sheet_text(path.stem, csv.reader(io.StringIO(text), dialect))
    except csv.Error as exc:
        raise LoadError(source, f"not a readable CSV file: {exc}") from None
    return _loaded(path, file_type, path.stem, digest, len(data), [(path.stem, body)], sha256)
