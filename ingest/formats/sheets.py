"""Spreadsheets (.xlsx/.xlsm, .ods, .csv): one document per non-empty sheet, numbered from 1 in `page` and named
in `sheet`. Each sheet's text is a `# <sheet name>` heading line, the header row, then one line per row with every
cell labelled by its column header ("Region: North; Q1: 120"), so a passage of a table makes sense on its own.

Workbooks are streamed row by row (openpyxl read-only mode, values only) so that a sheet of a million cells never
sits in memory as cell objects: only the rows' text is kept. Formulas are read as the values Excel cached.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
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
    headers: list[str] | None = None
    lines = [f"# {name}"]
    for row in rows:
        if all(value is None or value == "" for value in row):
            continue
        cells = [cell_text(value) for value in row]
        if not any(cells):
            continue
        if headers is None:
            headers = cells
            lines.append("; ".join(cell for cell in cells if cell))
            continue
        labelled = [f"{headers[i]}: {cell}" if i < len(headers) and headers[i] else cell
                    for i, cell in enumerate(cells) if cell]
        lines.append("; ".join(labelled))
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
    """An OpenDocument spreadsheet (LibreOffice Calc)."""
    source = str(path)
    with archive.open_zip(path, "OpenDocument spreadsheet") as zipped:
        archive.refuse_entities(zipped, source)
        archive.read_part(zipped, "content.xml", source)  # missing or damaged: say so before odfdo does
    digest, size = _hash_file(path)
    from lxml import etree
    from odfdo import Document as OdfDocument

    try:
        document = OdfDocument(path)
        title = (document.get_part("meta").get_title() or "").strip() or path.stem
        tables = document.body.get_tables()
        names = [table.name or f"Sheet{number}" for number, table in enumerate(tables, start=1)]
        sheets = [(name, sheet_text(name, _ods_rows(table))) for name, table in zip(names, tables)]
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError, IndexError, EOFError,
            ArithmeticError, etree.XMLSyntaxError) as exc:  # ArithmeticError: decimal's InvalidOperation
        raise LoadError(source, f"not a readable OpenDocument spreadsheet: {exc}") from None
    return _loaded(path, file_type, title, digest, size, sheets, sha256)


def _ods_rows(table: Any) -> Iterator[list[Any]]:  # noqa: ANN401 - an odfdo Table
    """The table's rows as lists of values, repeated rows and cells written out (at most MAX_REPEAT times,
    and empty ones skipped rather than expanded)."""
    for row in table.get_elements("descendant::table:table-row"):
        values: list[Any] = []
        for cell in row.get_elements("table:table-cell|table:covered-table-cell"):
            value = _ods_value(cell)
            repeat = cell.repeated or 1
            empty = value is None or value == ""
            values.extend([None if empty else value] * min(repeat, MAX_REPEAT))
        while values and values[-1] in (None, ""):
            values.pop()
        if values:
            for _ in range(min(row.repeated or 1, MAX_REPEAT)):
                yield values


def _ods_value(cell: Any) -> Any:  # noqa: ANN401 - an odfdo Cell and its value
    """A cell's value: typed values as such (a formula's cached result), else its text."""
    value = cell.get_value() if cell.tag == "table:table-cell" else None
    if value is None or isinstance(value, str):
        text = cell.text_content if hasattr(cell, "text_content") else ""
        return text or value
    return value


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
