"""Word (.docx), OpenDocument text (.odt) and RTF: structure kept (headings, tables in place, titles), bad files
refused with a reason, real third-party files read, and one document ingested and found end to end."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

import ingest.formats.rtf  # noqa: F401 - registers .rtf until the registry imports it
import ingest.formats.word  # noqa: F401 - registers .docx and .odt until the registry imports it
from ingest.errors import LoadError
from ingest.formats import load

ROWS = [["Name", "Born", "Field"], ["Ada", "1815", "mathematics"], ["Alan", "1912", "computing"]]


def make_docx(path: Path, title: str | None = "Kb report") -> Path:
    """A Word document written by python-docx: a Title, headings, a paragraph, a table between two headings."""
    import docx

    document = docx.Document()
    if title:
        document.core_properties.title = title
    document.add_heading("Annual report", 0)
    document.add_paragraph("The year in review: lighthouses of the northern coast.")
    document.add_heading("Members", 1)
    table = document.add_table(rows=len(ROWS), cols=len(ROWS[0]))
    for r, row in enumerate(ROWS):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_heading("Keepers", 2)
    document.add_paragraph("After the table comes this paragraph.")
    document.add_heading("Deep level", 9)
    document.save(path)
    return path


def make_odt(path: Path, title: str | None = "Odt meta title") -> Path:
    """An OpenDocument text written by odfdo: a Title paragraph, headings of levels 1 and 3, paragraphs, a
    table, a list."""
    from odfdo import Document, Header, List, Paragraph, Table

    document = Document("text")
    body = document.body
    body.clear()
    body.append(Paragraph("Harbour book", style="Title"))
    body.append(Header(1, "Harbour guide"))
    body.append(Paragraph("Boats leave at dawn."))
    table = Table("Crew", width=3, height=3)
    table.set_values(ROWS)
    body.append(table)
    body.append(Header(3, "Tides"))
    body.append(Paragraph("High water at noon."))
    body.append(List(["first item", "second item"]))
    if title:
        document.meta.set_title(title)
    document.save(path)
    return path


# --- structure ----------------------------------------------------------------------------------------------


def test_docx_keeps_headings_by_style_and_tables_in_place(tmp_path):
    loaded = load(make_docx(tmp_path / "report.docx"))
    assert (loaded.file_type, loaded.title, loaded.warnings, loaded.pages) == ("docx", "Kb report", [], None)
    [document] = loaded.documents
    assert document.text.split("\n\n") == [
        "# Annual report",
        "The year in review: lighthouses of the northern coast.",
        "# Members",
        "Name; Born; Field\nName: Ada; Born: 1815; Field: mathematics\nName: Alan; Born: 1912; Field: computing",
        "## Keepers",
        "After the table comes this paragraph.",
        "###### Deep level",  # Heading 9: Markdown stops at 6
    ]
    assert document.language == "en" and len(loaded.sha256) == 64


def test_headings_are_ones_the_chunker_finds(tmp_path):
    from ingest.chunking import find_headings

    for path in (make_docx(tmp_path / "report.docx"), make_odt(tmp_path / "guide.odt")):
        found = [heading for _, _, heading in find_headings(load(path).documents[0].text)]
        assert found == (["Annual report", "Members", "Keepers", "Deep level"] if path.suffix == ".docx"
                         else ["Harbour book", "Harbour guide", "Tides"])


def test_docx_and_odt_headings_get_heading_entries():
    from ingest.formats import marks_headings

    assert marks_headings("docx") and marks_headings("odt") and not marks_headings("txt")


def test_docx_title_falls_back_to_the_first_heading(tmp_path):
    assert load(make_docx(tmp_path / "report.docx", title=None)).title == "Annual report"


def test_docx_merged_cells_and_nested_tables(tmp_path):
    import docx

    document = docx.Document()
    table = document.add_table(rows=2, cols=3)
    for c, value in enumerate(["Item", "Note", "Extra"]):
        table.cell(0, c).text = value
    merged = table.cell(1, 0).merge(table.cell(1, 1))
    merged.text = "wide cell"
    inner = table.cell(1, 2).add_table(rows=2, cols=1)
    inner.cell(0, 0).text = "Inner head"
    inner.cell(1, 0).text = "inner value"
    document.save(tmp_path / "merged.docx")
    text = load(tmp_path / "merged.docx").documents[0].text
    assert text.splitlines() == ["Item; Note; Extra", "Item: wide cell; Note: Inner head / Inner head: inner value"]


def test_odt_keeps_outline_levels_tables_and_lists(tmp_path):
    loaded = load(make_odt(tmp_path / "guide.odt"))
    assert (loaded.file_type, loaded.title, loaded.warnings) == ("odt", "Odt meta title", [])
    assert loaded.documents[0].text.split("\n\n") == [
        "# Harbour book",
        "# Harbour guide",
        "Boats leave at dawn.",
        "Name; Born; Field\nName: Ada; Born: 1815; Field: mathematics\nName: Alan; Born: 1912; Field: computing",
        "### Tides",
        "High water at noon.",
        "first item",
        "second item",
    ]


def test_odt_title_falls_back_to_the_first_heading(tmp_path):
    assert load(make_odt(tmp_path / "guide.odt", title=None)).title == "Harbour book"


def test_rtf_decodes_the_code_page_it_names(tmp_path):
    western = tmp_path / "cafe.rtf"
    western.write_bytes(rb"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0 Arial;}}{\info{\title Caf\'e9 notes}}"
                        rb"\f0 Caf\'e9 au lait, na\'efve cr\'e8me.\par Price \u8364? four.\par}")
    loaded = load(western)
    assert (loaded.file_type, loaded.title) == ("rtf", "Café notes")
    assert loaded.documents[0].text == "Café au lait, naïve crème.\nPrice € four.\n"
    cyrillic = tmp_path / "privet.rtf"
    cyrillic.write_bytes(rb"{\rtf1\ansi\ansicpg1251\deff0 \'cf\'f0\'e8\'e2\'e5\'f2 \'ec\'e8\'f0.\par}")
    loaded = load(cyrillic)
    assert loaded.documents[0].text == "Привет мир.\n" and loaded.title == "privet"


def test_an_rtf_table_reads_row_by_row_with_its_column_headers(tmp_path):
    """A table as Word saves it to RTF (\\trowd ... \\cell ... \\row): the header row, then each cell named by
    its column, as in every other format; the text around the table is unchanged."""
    row = rb"\trowd\trgaph108\cellx2000\cellx4000\cellx6000 \pard\intbl %s\row "
    cells = [rb"Keeper\cell Light\cell Since\cell", rb"Grace Darling\cell Longstone\cell 1815\cell",
             rb"Ida Lewis\cell Lime Rock\cell\cell"]
    path = tmp_path / "keepers.rtf"
    path.write_bytes(rb"{\rtf1\ansi\deff0{\fonttbl{\f0 Arial;}}\pard Lighthouse keepers:\par "
                     + b"".join(row % c for c in cells) + rb"\pard Both were famous.\par}")
    assert load(path).documents[0].text.split("\n")[:5] == [
        "Lighthouse keepers:", "Keeper; Light; Since", "Keeper: Grace Darling; Light: Longstone; Since: 1815",
        "Keeper: Ida Lewis; Light: Lime Rock", "Both were famous."]


def test_changed_file_is_flagged(tmp_path):
    loaded = load(make_docx(tmp_path / "report.docx"), sha256="0" * 64)
    assert loaded.warnings == ["changed while kb was reading it: the version read is stored"]


def test_documents_without_text_say_so(tmp_path):
    import docx

    docx.Document().save(tmp_path / "empty.docx")
    rtf = tmp_path / "empty.rtf"
    rtf.write_bytes(rb"{\rtf1\ansi }")
    for path in (tmp_path / "empty.docx", rtf):
        loaded = load(path)
        assert (loaded.documents, loaded.warnings) == ([], ["no text in file"])


# --- bad inputs ---------------------------------------------------------------------------------------------


def reason(path: Path) -> str:
    with pytest.raises(LoadError) as caught:
        load(path)
    assert caught.value.path == str(path)
    return caught.value.reason


@pytest.mark.parametrize("maker, suffix", [(make_docx, ".docx"), (make_odt, ".odt")])
def test_truncated_and_corrupt_archives_are_refused(tmp_path, maker, suffix):
    whole = maker(tmp_path / f"whole{suffix}").read_bytes()
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(whole[: len(whole) // 2])
    assert "not a zip archive, or truncated" in reason(truncated)
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    assert "not a zip archive, or truncated" in reason(garbage)


@pytest.mark.parametrize("suffix, main", [(".docx", "word/document.xml"), (".odt", "content.xml")])
def test_damaged_main_part_is_refused(tmp_path, suffix, main):
    """A valid zip whose main XML part is cut in half: a damaged document, not a crash."""
    maker = make_docx if suffix == ".docx" else make_odt
    source = maker(tmp_path / f"whole{suffix}")
    damaged = tmp_path / f"damaged{suffix}"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(damaged, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            new.writestr(info, data[: len(data) // 2] if info.filename == main else data)
    assert "not a readable" in reason(damaged)


def test_docx_without_its_document_part_is_refused(tmp_path):
    source = make_docx(tmp_path / "whole.docx")
    broken = tmp_path / "nobody.docx"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(broken, "w") as new:
        for info in old.infolist():
            if info.filename != "word/document.xml":
                new.writestr(info, old.read(info))
    assert "not a readable Word document" in reason(broken)


def test_zip_that_is_not_a_word_document_is_refused(tmp_path):
    plain = tmp_path / "plain.docx"
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("hello.txt", "hello")
    assert "not a readable Word document" in reason(plain)
    odt = tmp_path / "plain.odt"
    odt.write_bytes(plain.read_bytes())
    assert "not a readable OpenDocument text" in reason(odt)


def test_docx_zip_bomb_is_refused_before_reading(tmp_path):
    """A real zip whose part inflates to 300 MB (declared), over the 256 MB bound."""
    bomb = tmp_path / "bomb.docx"
    with zipfile.ZipFile(make_docx(tmp_path / "whole.docx")) as old, \
            zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info))
        with new.open("word/media/padding.bin", "w", force_zip64=True) as part:
            block = b"\0" * (4 << 20)
            for _ in range(75):
                part.write(block)
    assert bomb.stat().st_size < 2 << 20
    assert "archive bomb" in reason(bomb)


@pytest.mark.parametrize("suffix, main", [(".docx", "word/document.xml"), (".odt", "content.xml")])
def test_entity_bomb_is_refused(tmp_path, suffix, main):
    laughs = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
              + "".join(f'<!ENTITY lol{n} "{("&lol" + str(n - 1) + ";") * 10 if n > 1 else "&lol;" * 10}">'
                        for n in range(1, 10))
              + "]>\n")
    maker = make_docx if suffix == ".docx" else make_odt
    source = maker(tmp_path / f"whole{suffix}")
    bomb = tmp_path / f"bomb{suffix}"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(bomb, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename == main:
                data = laughs.encode() + data.split(b"?>", 1)[1].replace(b">", b">&lol9;", 1)
            new.writestr(info, data)
    assert "entity" in reason(bomb)


@pytest.mark.parametrize("suffix", [".docx", ".odt"])
def test_encrypted_office_file_is_refused_as_encrypted(tmp_path, suffix):
    locked = tmp_path / f"encrypted{suffix}"
    locked.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 4096)
    assert "encrypted (password-protected)" in reason(locked)


def test_password_protected_odt_is_refused_as_encrypted(tmp_path):
    """LibreOffice encrypts an .odt's parts inside an ordinary zip and says so in its manifest; an .odt whose
    manifest has no encryption data reads as before."""
    from tests.test_formats_sheets import (
        make_password_protected_odf,
        refused_as_password_protected,
        unencrypted_manifest,
    )

    refused_as_password_protected(make_password_protected_odf(tmp_path / "locked.odt"))
    plain = unencrypted_manifest(make_odt(tmp_path / "plain.odt"))
    assert "Boats leave at dawn." in load(plain).documents[0].text


def test_binary_garbage_named_rtf_is_refused(tmp_path):
    garbage = tmp_path / "garbage.rtf"
    garbage.write_bytes(bytes(range(256)) * 16)
    assert "not an RTF file" in reason(garbage)
    docx_inside = tmp_path / "word.rtf"
    docx_inside.write_bytes(make_docx(tmp_path / "w.docx").read_bytes())
    assert "not an RTF file" in reason(docx_inside)


def test_damaged_rtf_still_gives_its_text(tmp_path):
    """RTF cut off mid-group (unbalanced braces, an escape with no hex): the text before the cut is read."""
    cut = tmp_path / "cut.rtf"
    cut.write_bytes(rb"{\rtf1\ansi\ansicpg1252 {\b Bold words} and plain words \'e")
    assert "Bold words and plain words" in load(cut).documents[0].text


# --- real third-party files ---------------------------------------------------------------------------------


@pytest.mark.network
@pytest.mark.slow
def test_python_docx_test_files_all_load():
    from tests.rigs.word_files import python_docx_files

    folder = python_docx_files()
    files = sorted(folder.glob("*.docx"))
    assert len(files) >= 40
    for path in files:
        loaded = load(path)  # none raises: every one is a real Word file
        assert loaded.file_type == "docx" and loaded.title
    assert load(folder / "test.docx").documents[0].text.startswith("# python-docx was here!")
    assert load(folder / "doc-coreprops.docx").title == "Title"
    assert load(folder / "doc-no-coreprops.docx").title == "doc-no-coreprops"  # not python-docx's made-up one
    known = load(folder / "par-known-styles.docx").documents[0].text
    assert "# Heading 1\n\nBody Text" in known
    table = load(folder / "tbl-having-applied-style.docx").documents[0].text
    assert "foobar: foo to you; barfoo: and a hearty foo to you too sir!" in table
    inner = load(folder / "blk-inner-content.docx").documents[0].text
    assert inner.split("\n\n") == ["P1", "T2", "P3"]  # paragraph, table, paragraph: in document order


@pytest.mark.network
@pytest.mark.slow
def test_odfdo_template_documents_load():
    from tests.rigs.word_files import odfdo_files

    folder = odfdo_files()
    loaded = load(folder / "lpod_styles.odt")
    text = loaded.documents[0].text
    assert loaded.file_type == "odt" and "\n# Title One\n" in text and "\n## Title Two\n" in text
    assert "Paragraph with bold." in text and "Table of Content" not in text  # the generated TOC is left out


# --- end to end ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_docx_ingested_and_found(tmp_path):
    from ingest.pipeline import ingest
    from ingest.settings import load_settings
    from kb_app.search import Searcher

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    make_docx(corpus / "report.docx")
    (corpus / "notes.rtf").write_bytes(rb"{\rtf1\ansi Volcanoes erupt when magma rises through the crust.\par}")
    settings = load_settings(chroma_path=tmp_path / "store")
    ingest([corpus / "report.docx", corpus / "notes.rtf"], settings)
    finder = Searcher(settings)
    top = finder.search("When was Ada born?", k=3).results[0]
    assert top.source.endswith("report.docx") and "Name: Ada; Born: 1815" in top.text
    assert (top.file_type, top.title) == ("docx", "Kb report")
    top = finder.search("How do volcanoes erupt?", k=3).results[0]
    assert top.source.endswith("notes.rtf")
