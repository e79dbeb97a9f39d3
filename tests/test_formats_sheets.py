"""Spreadsheets (.xlsx/.xlsm, .ods, .csv): one document per non-empty sheet, a `# <sheet>` heading and rows
with every cell labelled by its column header; formulas as their cached values; a million-cell workbook read
in bounded memory; damaged, encrypted and hostile workbooks refused with the reason; real workbooks from
pyexcel-xlsx's and odfpy's source distributions read without error."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ingest.formats.sheets  # noqa: F401 - registers .xlsx, .ods and .csv until the registry imports it
from ingest.errors import LoadError
from ingest.formats import SUFFIXES, load, part_name
from tests.rigs.sheets_files import write_million_cells

SALES = [["Region", "Q1", "Q2", "Total"], ["North", 120, 135], ["South", 80, None, "n/a"]]
SALES_TEXT = ("# Sales\nRegion; Q1; Q2; Total\nRegion: North; Q1: 120; Q2: 135; Total: 255\n"
              "Region: South; Q1: 80; Total: n/a")


def make_xlsx(path: Path) -> Path:
    """Sheets "Sales" (a formula whose cached value is 255), "Blank" (empty) and "Notes" (a date, a float,
    a header-less column)."""
    import datetime as dt

    from openpyxl import Workbook

    book = Workbook()
    sales = book.active
    sales.title = "Sales"
    for row in SALES:
        sales.append(row)
    sales["D2"] = "=B2+C2"
    book.create_sheet("Blank")
    notes = book.create_sheet("Notes")
    notes.append([None, "When", "Rate", None])
    notes.append([None, dt.datetime(2024, 3, 1), 2.5, "extra"])
    book.save(path)
    _cache_formula(path, "xl/worksheets/sheet1.xml", "<f>B2+C2</f><v>255</v>")
    return path


def _cache_formula(path: Path, part: str, cached: str) -> None:
    """Give the formula the value Excel would have cached (openpyxl writes formulas without one)."""
    rewrite_part(path, part, lambda xml: re.sub(rb"<f>B2\+C2</f>(<v\s*/>|<v></v>)?", cached.encode(), xml))


def rewrite_part(path: Path, part: str, change) -> None:
    """Rewrite one part of a zip file in place."""
    with zipfile.ZipFile(path) as old:
        items = [(info, old.read(info)) for info in old.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as new:
        for info, data in items:
            new.writestr(info, change(data) if info.filename == part else data)


def make_ods(path: Path) -> Path:
    """The same "Sales" sheet (a formula with its cached value), an empty sheet and a "Notes" sheet."""
    from odfdo import Cell, Document, Table

    doc = Document("spreadsheet")
    doc.body.clear()
    sales = Table("Sales")
    for y, row in enumerate(SALES):
        values = row + [None] * (4 - len(row))
        cells = [Cell(value) if value is not None else Cell() for value in values]
        if y == 1:
            cells[3] = Cell(255, formula="of:=[.B2]+[.C2]")
        sales.append_row(_row(cells))
    doc.body.append(sales)
    doc.body.append(Table("Blank"))
    notes = Table("Notes")
    notes.append_row(_row([Cell(), Cell("When"), Cell("Rate")]))
    notes.append_row(_row([Cell(), Cell("2024-03-01"), Cell(2.5), Cell("extra")]))
    doc.body.append(notes)
    doc.save(path)
    return path


def _row(cells):
    from odfdo import Row

    row = Row()
    for cell in cells:
        row.append_cell(cell)
    return row


def test_registered_as_sheets():
    assert (SUFFIXES[".xlsx"], SUFFIXES[".xlsm"], SUFFIXES[".ods"], SUFFIXES[".csv"]) == ("xlsx", "xlsx", "ods",
                                                                                          "csv")
    assert part_name("xlsx") == part_name("ods") == part_name("csv") == "sheet"


@pytest.mark.parametrize("maker, name", [(make_xlsx, "sales.xlsx"), (make_xlsx, "sales.xlsm"),
                                         (make_ods, "sales.ods")])
def test_one_document_per_non_empty_sheet(tmp_path, maker, name):
    """Sheet 2 is empty: no document, but sheet 3 keeps its number. Rows carry their headers; the formula
    gives its cached value; empty cells are left out."""
    loaded = load(maker(tmp_path / name))
    assert loaded.pages == 3 and loaded.warnings == []
    assert [(d.page, d.sheet) for d in loaded.documents] == [(1, "Sales"), (3, "Notes")]
    assert loaded.documents[0].text == SALES_TEXT
    notes = loaded.documents[1].text.splitlines()
    assert notes[:2] == ["# Notes", "When; Rate"]
    assert notes[2] == "When: 2024-03-01; Rate: 2.5; extra"
    assert {d.file_type for d in loaded.documents} == {loaded.file_type} == {"ods" if name.endswith("ods")
                                                                             else "xlsx"}
    assert loaded.sha256 == loaded.documents[0].sha256 and loaded.size == (tmp_path / name).stat().st_size


@pytest.mark.timeout(120)
def test_a_false_sheet_extent_is_not_trusted(tmp_path):
    """A sheet claiming the whole grid (A1:XFD1048576, 17 billion cells) is read by its real cells."""
    path = make_xlsx(tmp_path / "x.xlsx")
    rewrite_part(path, "xl/worksheets/sheet1.xml",
                 lambda xml: re.sub(rb'<dimension ref="[^"]*"\s*/>', b'<dimension ref="A1:XFD1048576"/>', xml))
    assert b"XFD1048576" in zipfile.ZipFile(path).read("xl/worksheets/sheet1.xml")
    assert load(path).documents[0].text == SALES_TEXT


@pytest.mark.timeout(120)
def test_ods_repeated_empty_rows_and_cells_are_skipped(tmp_path):
    """LibreOffice repeats empty cells and rows to the sheet's edge; a repeated value is written out (capped)."""
    path = make_ods(tmp_path / "x.ods")
    edge = (b'<table:table-row table:number-rows-repeated="1048570"><table:table-cell '
            b'table:number-columns-repeated="16384"/></table:table-row>'
            b'<table:table-row table:number-rows-repeated="3"><table:table-cell office:value-type="string">'
            b'<text:p>again</text:p></table:table-cell></table:table-row></table:table>')
    rewrite_part(path, "content.xml", lambda xml: xml.replace(b"</table:table>", edge, 1))
    text = load(path).documents[0].text
    assert text == SALES_TEXT + "\nRegion: again" * 3


@pytest.mark.timeout(120)
def test_ods_repeated_values_are_bounded(tmp_path):
    """Repetition cannot multiply a few cells into billions: each repeated cell or row is written out at most
    MAX_REPEAT times, and past MAX_REPEATED copies in a file only once. Here 4 rows of 10 cells, each cell
    repeated across 1,000 columns and each row down 1,000 rows, would be 40 million cells."""
    from ingest.formats.sheets import MAX_REPEATED

    path = make_ods(tmp_path / "x.ods")
    cell = ('<table:table-cell table:number-columns-repeated="1000" office:value-type="string">'
            '<text:p>copy</text:p></table:table-cell>')
    rows = (f'<table:table-row table:number-rows-repeated="1000">{cell * 10}</table:table-row>' * 4).encode()
    rewrite_part(path, "content.xml", lambda xml: xml.replace(b"</table:table>", rows + b"</table:table>", 1))
    lines = load(path).documents[0].text.splitlines()
    assert "\n".join(lines[:4]) == SALES_TEXT
    copies = [line.count("copy") for line in lines[4:]]
    assert copies[0] == 10_000  # the first row's cells written out, their columns kept
    assert 40 < sum(copies) <= 40 + MAX_REPEATED


def test_changed_since_listed_is_warned(tmp_path):
    loaded = load(make_xlsx(tmp_path / "s.xlsx"), sha256="0" * 64)
    assert loaded.warnings and "changed while" in loaded.warnings[0]


def test_workbook_with_no_values_says_so(tmp_path):
    from openpyxl import Workbook

    Workbook().save(tmp_path / "empty.xlsx")
    loaded = load(tmp_path / "empty.xlsx")
    assert loaded.documents == [] and loaded.warnings == ["no text in file"] and loaded.pages == 1


# --- CSV ----------------------------------------------------------------------------------------------------------

def test_csv_is_one_sheet_named_after_the_file(tmp_path):
    path = tmp_path / "sales.csv"
    path.write_text("Region,Q1,Q2\nNorth,120,135\n\nSouth,80,\n", encoding="utf-8")
    loaded = load(path)
    assert loaded.file_type == "csv" and loaded.pages == 1
    [doc] = loaded.documents
    assert (doc.page, doc.sheet) == (1, "sales")
    assert doc.text == "# sales\nRegion; Q1; Q2\nRegion: North; Q1: 120; Q2: 135\nRegion: South; Q1: 80"


def test_csv_dialect_and_encoding_are_found(tmp_path):
    """Semicolons in Windows-1252 (a European Excel export), with a quoted field holding the delimiter."""
    path = tmp_path / "villes.csv"
    path.write_bytes('Ville;Région;Note\nParis;Île-de-France;"bien; très"\nLyon;Rhône;élevé\n'.encode("cp1252"))
    [doc] = load(path).documents
    assert doc.text.splitlines()[1:] == ["Ville; Région; Note", "Ville: Paris; Région: Île-de-France; Note: bien; très",
                                         "Ville: Lyon; Région: Rhône; Note: élevé"]


def test_csv_tabs_and_single_column(tmp_path):
    tabs = tmp_path / "t.csv"
    tabs.write_text("a\tb\n1\t2\n3\t4\n")
    assert load(tabs).documents[0].text == "# t\na; b\na: 1; b: 2\na: 3; b: 4"
    single = tmp_path / "names.csv"
    single.write_text("Name\nAda\nCharles\n")
    assert load(single).documents[0].text == "# names\nName\nName: Ada\nName: Charles"


def test_csv_binary_garbage_is_refused(tmp_path):
    import random

    path = tmp_path / "garbage.csv"
    noise = random.Random(7)
    path.write_bytes(bytes(noise.randrange(256) for _ in range(20000)))
    with pytest.raises(LoadError, match="binary"):
        load(path)


def test_empty_csv_says_so(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    loaded = load(path)
    assert loaded.documents == [] and loaded.warnings == ["no text in file"]


# --- bad input ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("maker, name", [(make_xlsx, "x.xlsx"), (make_ods, "x.ods")])
def test_truncated_workbook_is_refused(tmp_path, maker, name):
    path = maker(tmp_path / name)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(LoadError, match="not a zip archive, or truncated"):
        load(path)


@pytest.mark.parametrize("name", ["x.xlsx", "x.ods"])
def test_not_a_zip_is_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"PK\x03\x04 this is not really a zip" * 10)
    with pytest.raises(LoadError, match="not a readable"):
        load(path)


def test_damaged_part_is_refused(tmp_path):
    """A zip whose sheet XML is cut short: refused as damaged, no library exception escapes."""
    path = make_xlsx(tmp_path / "x.xlsx")
    rewrite_part(path, "xl/worksheets/sheet1.xml", lambda xml: xml[: len(xml) // 2])
    with pytest.raises(LoadError, match="damaged"):
        load(path)


def test_ods_damaged_while_streamed_is_refused(tmp_path):
    """content.xml's compressed bytes overwritten (the zip's directory intact): found while it is streamed."""
    path = make_ods(tmp_path / "x.ods")
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo("content.xml")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 10:start + 60] = b"\xff" * 50
    path.write_bytes(bytes(data))
    with pytest.raises(LoadError, match="damaged|not a readable OpenDocument spreadsheet"):
        load(path)


def test_ods_bad_cell_value_is_refused(tmp_path):
    path = make_ods(tmp_path / "x.ods")
    rewrite_part(path, "content.xml", lambda xml: re.sub(rb'office:value="120"', b'office:value="lots"', xml))
    with pytest.raises(LoadError, match="not a readable OpenDocument spreadsheet"):
        load(path)


def test_workbook_without_its_parts_is_refused(tmp_path):
    path = tmp_path / "x.xlsx"
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("hello.txt", "hi")
    with pytest.raises(LoadError, match="not a readable Excel workbook"):
        load(path)
    ods = tmp_path / "x.ods"
    with zipfile.ZipFile(ods, "w") as zipped:
        zipped.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
    with pytest.raises(LoadError, match="'content.xml' is missing"):
        load(ods)


@pytest.mark.parametrize("name", ["bomb.xlsx", "bomb.ods"])
def test_zip_bomb_is_refused(tmp_path, name):
    """A real zip whose one part inflates to 300 MB (a few hundred KB on disk)."""
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        with zipped.open("xl/worksheets/sheet1.xml" if name.endswith("xlsx") else "content.xml", "w",
                         force_zip64=True) as part:
            block = b"\0" * (1 << 20)
            for _ in range(300):
                part.write(block)
    with pytest.raises(LoadError, match="archive bomb"):
        load(path)


ENTITY_BOMB = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
               b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>\n')


def test_entity_bomb_in_a_sheet_is_refused(tmp_path):
    path = make_xlsx(tmp_path / "x.xlsx")
    rewrite_part(path, "xl/worksheets/sheet1.xml", lambda xml: ENTITY_BOMB + xml[xml.index(b"<worksheet"):])
    with pytest.raises(LoadError, match="entity"):
        load(path)


def test_entity_bomb_in_ods_content_is_refused(tmp_path):
    path = make_ods(tmp_path / "x.ods")
    rewrite_part(path, "content.xml", lambda xml: ENTITY_BOMB + xml[xml.index(b"<office:document-content"):])
    with pytest.raises(LoadError, match="entity"):
        load(path)


@pytest.mark.parametrize("name", ["encrypted.xlsx", "encrypted.xlsm", "encrypted.ods"])
def test_encrypted_workbook_is_refused(tmp_path, name):
    """Office saves a password-protected workbook as an OLE2 compound file holding the encrypted zip."""
    path = tmp_path / name
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 4096)
    with pytest.raises(LoadError, match="encrypted"):
        load(path)


ODF_TYPES = {".odt": "application/vnd.oasis.opendocument.text",
             ".ods": "application/vnd.oasis.opendocument.spreadsheet",
             ".odp": "application/vnd.oasis.opendocument.presentation"}
_ODF_KIND = {".odt": "OpenDocument text", ".ods": "OpenDocument spreadsheet", ".odp": "OpenDocument presentation"}


def make_password_protected_odf(path: Path) -> Path:
    """An OpenDocument file as LibreOffice saves it with a password: an ordinary zip, `mimetype` stored first,
    its XML parts ciphertext (random bytes here, stored as LibreOffice stores them), and a manifest that gives
    each encrypted part its encryption data (AES-256-CBC, a SHA-256 start key, PBKDF2)."""
    import base64
    import random

    noise = random.Random(path.name)

    def b64(size: int) -> str:
        return base64.b64encode(noise.randbytes(size)).decode()

    media_type = ODF_TYPES[path.suffix]
    parts = {name: noise.randbytes(size) for name, size in
             (("content.xml", 3795), ("styles.xml", 2406), ("meta.xml", 431), ("settings.xml", 1267),
              ("manifest.rdf", 377))}
    entries = "".join(
        f' <manifest:file-entry manifest:full-path="{name}" manifest:media-type="'
        f'{"application/rdf+xml" if name.endswith(".rdf") else "text/xml"}" manifest:size="{len(data) * 3}">\n'
        f'  <manifest:encryption-data manifest:checksum-type="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0'
        f'#sha256-1k" manifest:checksum="{b64(32)}">\n'
        f'   <manifest:algorithm manifest:algorithm-name="http://www.w3.org/2001/04/xmlenc#aes256-cbc" '
        f'manifest:initialisation-vector="{b64(16)}"/>\n'
        f'   <manifest:start-key-generation manifest:start-key-generation-name="http://www.w3.org/2000/09/'
        f'xmldsig#sha256" manifest:key-size="32"/>\n'
        f'   <manifest:key-derivation manifest:key-derivation-name="PBKDF2" manifest:key-size="32" '
        f'manifest:iteration-count="100000" manifest:salt="{b64(16)}"/>\n'
        f'  </manifest:encryption-data>\n </manifest:file-entry>\n'
        for name, data in parts.items())
    manifest = ('<?xml version="1.0" encoding="UTF-8"?>\n<manifest:manifest xmlns:manifest="urn:oasis:names:tc:'
                'opendocument:xmlns:manifest:1.0" manifest:version="1.3" xmlns:loext="urn:org:documentfoundation:'
                'names:experimental:office:xmlns:loext:1.0">\n'
                f' <manifest:file-entry manifest:full-path="/" manifest:version="1.3" manifest:media-type='
                f'"{media_type}"/>\n{entries}</manifest:manifest>')
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr(zipfile.ZipInfo("mimetype"), media_type, compress_type=zipfile.ZIP_STORED)
        for name, data in parts.items():
            zipped.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_STORED)
        zipped.writestr("META-INF/manifest.xml", manifest, compress_type=zipfile.ZIP_DEFLATED)
    return path


def refused_as_password_protected(path: Path) -> None:
    """Loading `path` raises LoadError naming the file in full and saying it is encrypted, with a password."""
    with pytest.raises(LoadError) as caught:
        load(path)
    assert caught.value.path == str(path)
    assert str(caught.value) == (f"{path}: encrypted (password-protected) {_ODF_KIND[path.suffix]}: kb cannot "
                                 "read it; save it without a password")


def unencrypted_manifest(path: Path) -> Path:
    """`path`, after checking its manifest lists its parts without encryption data (as every unprotected file's)."""
    manifest = zipfile.ZipFile(path).read("META-INF/manifest.xml")
    assert b"manifest:file-entry" in manifest and b"encryption-data" not in manifest
    return path


def test_password_protected_ods_is_refused_as_encrypted(tmp_path):
    """LibreOffice encrypts an .ods's parts inside an ordinary zip; its manifest says so. A manifest without
    encryption data (every unprotected file has one) reads as before."""
    refused_as_password_protected(make_password_protected_odf(tmp_path / "locked.ods"))
    plain = unencrypted_manifest(make_ods(tmp_path / "plain.ods"))
    assert load(plain).documents[0].text == SALES_TEXT


# --- a million cells ------------------------------------------------------------------------------------------------

MEMORY_BOUND_MB = 200  # measured: about 30 MB (.xlsx and .ods alike; .ods took 1,088 MB parsed whole)

# The peak is the process's own high-water mark (VmHWM): its ru_maxrss starts at the peak of the pytest process
# that forked it, so a growth measured with it could never exceed the bound.
_LOAD_AND_MEASURE = """
import re, sys
import ingest.formats.sheets  # noqa
from ingest.formats import load

def peak_kb():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1])

before = peak_kb()
loaded = load(sys.argv[1])
after = peak_kb()
[doc] = loaded.documents
lines = doc.text.splitlines()
print(len(lines), (after - before) // 1024, after // 1024)
print(lines[2])
print(lines[-1])
"""




def write_million_cells_ods(path: Path) -> Path:
    """The .ods twin of write_million_cells: sheet "Big", a header row c0..c9 then 100,000 rows of 10 numbers
    (typed float cells, as LibreOffice writes them), content.xml written a row at a time."""
    spaces = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
              'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
              'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
              'xmlns:dc="http://purl.org/dc/elements/1.1/" office:version="1.3"')
    media_type = ODF_TYPES[".ods"]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr(zipfile.ZipInfo("mimetype"), media_type, compress_type=zipfile.ZIP_STORED)
        zipped.writestr("META-INF/manifest.xml", '<?xml version="1.0" encoding="UTF-8"?>\n<manifest:manifest '
                        'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.3">'
                        f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{media_type}"/>'
                        + "".join(f'<manifest:file-entry manifest:full-path="{name}" manifest:media-type="text/xml"/>'
                                  for name in ("content.xml", "styles.xml", "meta.xml")) + "</manifest:manifest>")
        zipped.writestr("styles.xml", f'<?xml version="1.0" encoding="UTF-8"?>\n<office:document-styles {spaces}/>')
        zipped.writestr("meta.xml", f'<?xml version="1.0" encoding="UTF-8"?>\n<office:document-meta {spaces}>'
                                    "<office:meta/></office:document-meta>")
        with zipped.open("content.xml", "w") as content:
            content.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<office:document-content {spaces}><office:body>'
                          '<office:spreadsheet><table:table table:name="Big">'.encode())
            content.write(("<table:table-row>" + "".join(
                f'<table:table-cell office:value-type="string"><text:p>c{x}</text:p></table:table-cell>'
                for x in range(10)) + "</table:table-row>").encode())
            for y in range(100_000):
                content.write(("<table:table-row>" + "".join(
                    f'<table:table-cell office:value-type="float" office:value="{n}"><text:p>{n}</text:p>'
                    "</table:table-cell>" for n in range(y * 10, y * 10 + 10)) + "</table:table-row>").encode())
            content.write(b"</table:table></office:spreadsheet></office:body></office:document-content>")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name, writer", [("big.xlsx", write_million_cells), ("big.ods", write_million_cells_ods)])
def test_a_million_cells_in_bounded_memory(tmp_path, name, writer):
    """Every row is read, and the peak RSS of a fresh process grows by less than MEMORY_BOUND_MB while it loads
    the workbook (the rows' text is kept, never the cells; an .ods's content.xml is parsed as a stream)."""
    path = writer(tmp_path / name)
    done = subprocess.run([sys.executable, "-c", _LOAD_AND_MEASURE, str(path)], capture_output=True, text=True,
                          timeout=600, check=True)
    counts, second, last = done.stdout.splitlines()
    lines, growth_mb, _peak_mb = (int(n) for n in counts.split())
    assert lines == 100_002  # heading, header row, 100,000 rows
    assert second == "; ".join(f"c{x}: {x}" for x in range(10))
    assert last.endswith("c9: 999999")
    assert growth_mb < MEMORY_BOUND_MB, done.stdout


# --- real third-party workbooks -------------------------------------------------------------------------------------

@pytest.mark.network
@pytest.mark.slow
def test_pyexcel_xlsx_fixtures_read():
    """pyexcel-xlsx's fixtures: merged cells, hidden rows/columns/sheets, dates, an empty sheet in the middle."""
    from tests.rigs.sheets_files import pyexcel_xlsx_fixtures

    folder = pyexcel_xlsx_fixtures()
    books = {path.name: load(path) for path in sorted(folder.glob("*.xlsx"))}
    assert len(books) == 9 and all(book.documents for book in books.values())
    dates = books["date_field.xlsx"].documents[0].text.splitlines()
    assert dates[:3] == ["# Sheet1", "Date; Time", "Date: 2014-12-25; Time: 11:11:11"]
    gap = books["file_with_an_empty_sheet.xlsx"]
    assert gap.pages == 3 and [(d.page, d.sheet) for d in gap.documents] == [(1, "Sheet1"), (3, "Sheet3")]
    assert gap.documents[1].text == "# Sheet3\n7; 8; 9\n7: 10; 8: 11; 9: 12"
    assert [d.sheet for d in books["hidden_sheets.xlsx"].documents] == ["shown", "hidden"]
    assert books["test8.xlsx"].documents[0].sheet == "CNY"


@pytest.mark.network
@pytest.mark.slow
def test_odfpy_spreadsheets_read():
    """odfpy's examples: LibreOffice and KSpread files, Chinese sheet names, an empty spreadsheet."""
    from tests.rigs.sheets_files import odfpy_examples

    folder = odfpy_examples()
    books = {path.name: load(path) for path in sorted(folder.glob("*.ods"))}
    assert set(books) == {"chinese_spreadsheet.ods", "empty.ods", "pythagoras.ods", "pythagoras-kspread.ods"}
    assert books["empty.ods"].documents == [] and books["empty.ods"].warnings == ["no text in file"]
    assert books["chinese_spreadsheet.ods"].documents[0].sheet == "工作表1"
    for name in ("pythagoras.ods", "pythagoras-kspread.ods"):
        first = books[name].documents[0]
        assert (first.page, first.sheet) == (1, "Sheet1") and first.text.startswith("# Sheet1\n3\n3: 4\n3: 5")


# --- end to end -----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_workbook_ingested_is_found_by_sheet(tmp_path):
    """Ingest an .xlsx and a .csv with the embedded model; a search finds the sheet and says "sheet Sales"."""
    from ingest.pipeline import ingest
    from ingest.settings import load_settings
    from kb_app.search import Searcher

    book = make_xlsx(tmp_path / "sales.xlsx")
    table = tmp_path / "people.csv"
    table.write_text("Name,Born,Field\nAda,1815,mathematics\nCharles,1791,engineering\n")
    settings = load_settings(chroma_path=tmp_path / "store")
    ingest([book, table], settings)
    finder = Searcher(settings)
    results = finder.search("Region North Q1 sales", k=5).results
    hit = next(r for r in results if r.source == str(book) and r.page == 1)
    assert (hit.sheet, hit.location, hit.file_type) == ("Sales", "sheet Sales", "xlsx") and "Region: North" in hit.text
    assert {r.location for r in results if r.source == str(book)} == {"sheet Sales", "sheet Notes"}
    assert json.loads(json.dumps(hit.to_dict()))["sheet"] == "Sales"
    hit = next(r for r in finder.search("When was Ada born?", k=5).results if r.source == str(table))
    assert (hit.sheet, hit.location, hit.file_type) == ("people", "sheet people", "csv") and "Born: 1815" in hit.text
