"""Slide decks (.pptx, .odp): one document per slide with its title as a heading, its text boxes, its tables
row by row with headers and its notes; damaged, encrypted and hostile decks refused with the reason; real
decks from python-pptx's and odfpy's/odfdo's source distributions read without error."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

import ingest.formats.slides  # noqa: F401 - registers .pptx and .odp until the registry imports it
from ingest.errors import LoadError
from ingest.formats import SUFFIXES, load, part_name

PEOPLE = [["Name", "Born", "Field"], ["Ada", "1815", "mathematics"], ["Charles", "1791", ""]]
SLIDE_1 = ("# Analytical Engine\n\nBabbage designed it\nLovelace wrote the first program\n\n"
           "Notes:\nMention the Bernoulli numbers")
SLIDE_2 = "# People\n\nName: Ada; Born: 1815; Field: mathematics\nName: Charles; Born: 1791"


def make_pptx(path: Path, title: str = "") -> Path:
    """Four slides: title + bullets + notes, title + table, a text box without title, an empty slide."""
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    deck.core_properties.title = title
    first = deck.slides.add_slide(deck.slide_layouts[1])
    first.shapes.title.text = "Analytical Engine"
    body = first.placeholders[1].text_frame
    body.text = "Babbage designed it"
    body.add_paragraph().text = "Lovelace wrote the first program"
    first.notes_slide.notes_text_frame.text = "Mention the Bernoulli numbers"
    second = deck.slides.add_slide(deck.slide_layouts[5])
    second.shapes.title.text = "People"
    table = second.shapes.add_table(3, 3, Inches(1), Inches(2), Inches(6), Inches(2)).table
    for r, row in enumerate(PEOPLE):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    third = deck.slides.add_slide(deck.slide_layouts[6])
    third.shapes.add_textbox(Inches(1), Inches(1), Inches(4), Inches(1)).text_frame.text = "Untitled slide text"
    deck.slides.add_slide(deck.slide_layouts[6])
    deck.save(path)
    return path


def make_odp(path: Path, title: str = "") -> Path:
    """The same four slides as make_pptx, written by odfdo."""
    from odfdo import Document, DrawPage, Frame, PresentationNotes, Table

    deck = Document("presentation")
    deck.body.clear()
    first = DrawPage("page1", name="Page 1")
    first.append(Frame.text_frame("Analytical Engine", presentation_class="title"))
    first.append(Frame.text_frame(["Babbage designed it", "Lovelace wrote the first program"],
                                  presentation_class="outline"))
    notes = PresentationNotes()
    notes.append(Frame.text_frame("Mention the Bernoulli numbers", presentation_class="notes"))
    first.append(notes)
    second = DrawPage("page2", name="Page 2")
    second.append(Frame.text_frame("People", presentation_class="title"))
    table = Table("People", width=3, height=3)
    for r, row in enumerate(PEOPLE):
        table.set_row_values(r, row)
    frame = Frame(size=("10cm", "5cm"), position=("1cm", "4cm"))
    frame.append(table)
    second.append(frame)
    third = DrawPage("page3", name="Page 3")
    third.append(Frame.text_frame("Untitled slide text"))
    for page in (first, second, third, DrawPage("page4", name="Page 4")):
        deck.body.append(page)
    if title:
        deck.meta.set_title(title)
    deck.save(path)
    return path


MAKERS = {".pptx": make_pptx, ".odp": make_odp}


@pytest.mark.parametrize("suffix", [".pptx", ".odp"])
def test_a_deck_gives_one_document_per_slide_with_headings_tables_and_notes(tmp_path, suffix):
    path = MAKERS[suffix](tmp_path / f"engines{suffix}")
    loaded = load(path)
    assert loaded.file_type == SUFFIXES[suffix] == suffix[1:] and part_name(loaded.file_type) == "slide"
    assert loaded.pages == 4 and loaded.warnings == []
    assert [d.page for d in loaded.documents] == [1, 2, 3]  # the empty 4th slide gives no document
    assert [d.text for d in loaded.documents] == [SLIDE_1, SLIDE_2, "Untitled slide text"]
    assert loaded.title == "Analytical Engine"  # no title in the properties: the first slide's
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and loaded.size == path.stat().st_size
    assert all(d.sha256 == loaded.sha256 and d.title == loaded.title for d in loaded.documents)
    assert loaded.documents[0].language == "en"


@pytest.mark.parametrize("suffix", [".pptx", ".odp"])
def test_the_decks_title_comes_from_its_properties_unless_it_is_a_default(tmp_path, suffix):
    assert load(MAKERS[suffix](tmp_path / f"a{suffix}", title="Engines of 1840")).title == "Engines of 1840"
    assert load(MAKERS[suffix](tmp_path / f"b{suffix}", title="PowerPoint Presentation")).title == "Analytical Engine"


@pytest.mark.parametrize("suffix", [".pptx", ".odp"])
def test_a_deck_changed_since_listed_is_read_and_warned_about(tmp_path, suffix):
    path = MAKERS[suffix](tmp_path / f"a{suffix}")
    assert load(path, sha256="0" * 64).warnings == ["changed while kb was reading it: the version read is stored"]
    assert load(path, sha256=hashlib.sha256(path.read_bytes()).hexdigest()).warnings == []


@pytest.mark.parametrize("suffix", [".pptx", ".odp"])
def test_a_deck_without_text_says_so(tmp_path, suffix):
    if suffix == ".pptx":
        from pptx import Presentation

        deck = Presentation()
        deck.slides.add_slide(deck.slide_layouts[6])
        deck.save(tmp_path / "blank.pptx")
    else:
        from odfdo import Document, DrawPage

        deck = Document("presentation")
        deck.body.clear()
        deck.body.append(DrawPage("page1"))
        deck.save(tmp_path / "blank.odp")
    loaded = load(tmp_path / f"blank{suffix}")
    assert (loaded.documents, loaded.pages, loaded.warnings) == ([], 1, ["no text in file"])


def test_grouped_shapes_and_line_breaks_in_a_pptx_are_read(tmp_path):
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[6])
    group = slide.shapes.add_group_shape()
    group.shapes.add_textbox(Inches(1), Inches(1), Inches(2), Inches(1)).text_frame.text = "inside a group"
    slide.shapes.add_textbox(Inches(1), Inches(3), Inches(2), Inches(1)).text_frame.text = "first line\vsecond line"
    deck.save(tmp_path / "group.pptx")
    assert load(tmp_path / "group.pptx").documents[0].text == "inside a group\n\nfirst line\nsecond line"


# --- bad input --------------------------------------------------------------------------------------------------

def _reason(path: Path) -> str:
    with pytest.raises(LoadError) as caught:
        load(path)
    assert caught.value.path == str(path)
    return caught.value.reason


@pytest.mark.parametrize("suffix", [".pptx", ".odp"])
def test_a_truncated_deck_is_refused(tmp_path, suffix):
    data = MAKERS[suffix](tmp_path / f"whole{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    assert "not a zip archive, or truncated" in _reason(tmp_path / f"cut{suffix}")


def _rewrite(source: Path, target: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of the zip at `source` with members replaced (or, given None, left out)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            if info.filename in change:
                if change[info.filename] is not None:
                    new.writestr(info.filename, change[info.filename])
            else:
                new.writestr(info, old.read(info))
    return target


MAIN_PART = {".pptx": "ppt/slides/slide1.xml", ".odp": "content.xml"}


@pytest.mark.parametrize("suffix", [".pptx", ".odp"])
def test_a_deck_with_a_damaged_part_is_refused(tmp_path, suffix):
    whole = MAKERS[suffix](tmp_path / f"whole{suffix}")
    part = MAIN_PART[suffix]
    cut = _rewrite(whole, tmp_path / f"badxml{suffix}", {part: zipfile.ZipFile(whole).read(part)[:300]})
    assert "damaged" in _reason(cut)
    # A member whose compressed bytes were overwritten: the zip's directory is intact, its data is not.
    data = bytearray(whole.read_bytes())
    info = zipfile.ZipFile(whole).getinfo(part)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 10:start + 60] = b"\xff" * 50
    (tmp_path / f"crc{suffix}").write_bytes(bytes(data))
    assert "damaged" in _reason(tmp_path / f"crc{suffix}")


@pytest.mark.parametrize("suffix", [".pptx", ".odp"])
def test_a_zip_that_is_not_a_deck_is_refused(tmp_path, suffix):
    with zipfile.ZipFile(tmp_path / f"other{suffix}", "w") as other:
        other.writestr("readme.txt", "just a zip")
    assert "damaged" in _reason(tmp_path / f"other{suffix}")


def test_an_odf_file_of_another_kind_named_odp_is_refused(tmp_path):
    from odfdo import Document, Paragraph

    text = Document("text")
    text.body.append(Paragraph("a letter"))
    text.save(tmp_path / "letter.odp")
    assert "not an OpenDocument presentation" in _reason(tmp_path / "letter.odp")


@pytest.mark.parametrize("suffix", [".pptx", ".odp"])
def test_an_entity_bomb_in_a_deck_part_is_refused(tmp_path, suffix):
    whole = MAKERS[suffix](tmp_path / f"whole{suffix}")
    part = MAIN_PART[suffix]
    xml = zipfile.ZipFile(whole).read(part)
    declaration, rest = xml.split(b"?>", 1)
    lol = (b'<!DOCTYPE lolz [<!ENTITY lol "lol">' + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10 if i > 1 else b"&lol;" * 10) for i in range(1, 10))
        + b"]>")
    bomb = _rewrite(whole, tmp_path / f"bomb{suffix}", {part: declaration + b"?>" + lol + rest})
    assert "entity" in _reason(bomb)


@pytest.mark.parametrize("suffix", [".pptx", ".odp"])
def test_a_zip_bomb_deck_is_refused_before_inflating(tmp_path, suffix):
    bomb = MAKERS[suffix](tmp_path / f"bomb{suffix}")
    with zipfile.ZipFile(bomb, "a", zipfile.ZIP_DEFLATED) as deck, deck.open("media/zeros.bin", "w") as member:
        block = b"\0" * (1 << 20)
        for _ in range(300):  # 300 MB declared, a few hundred KB on disk
            member.write(block)
    assert bomb.stat().st_size < 2 << 20
    reason = _reason(bomb)
    assert "archive bomb" in reason and "media/zeros.bin" in reason


@pytest.mark.parametrize("suffix", [".pptx", ".odp"])
def test_an_encrypted_deck_is_refused_as_encrypted(tmp_path, suffix):
    path = tmp_path / f"encrypted{suffix}"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 4088)  # what Office writes with a password
    reason = _reason(path)
    assert "encrypted" in reason and "password" in reason


def test_a_password_protected_odp_is_refused_as_encrypted(tmp_path):
    """LibreOffice encrypts an .odp's parts inside an ordinary zip and says so in its manifest; a deck whose
    manifest has no encryption data reads as before."""
    from tests.test_formats_sheets import (
        make_password_protected_odf,
        refused_as_password_protected,
        unencrypted_manifest,
    )

    refused_as_password_protected(make_password_protected_odf(tmp_path / "locked.odp"))
    plain = unencrypted_manifest(make_odp(tmp_path / "plain.odp"))
    assert [d.text for d in load(plain).documents] == [SLIDE_1, SLIDE_2, "Untitled slide text"]


@pytest.mark.parametrize("suffix", [".pptx", ".odp"])
def test_an_empty_file_is_refused(tmp_path, suffix):
    (tmp_path / f"empty{suffix}").write_bytes(b"")
    assert "not a zip archive" in _reason(tmp_path / f"empty{suffix}")


# --- real third-party decks ---------------------------------------------------------------------------------

@pytest.mark.network
def test_python_pptx_test_decks_are_read():
    from tests.rigs.slides_files import pptx_decks

    decks = {path.name: load(path) for path in sorted(pptx_decks().glob("*.pptx"))}
    assert len(decks) >= 60
    assert decks["test.pptx"].documents[0].text == "# Presentation Title Text\n\nSubtitle Text"
    assert decks["no-slides.pptx"].pages == 0 and decks["no-slides.pptx"].warnings == ["no text in file"]
    notes = decks["ph-inherit-props.pptx"].documents[0].text
    assert notes.startswith("# Title Text\n\nBody Text")
    assert notes.endswith("Notes:\nNotes in inherited position and size.")
    grouped = decks["test_slides.pptx"]
    assert grouped.title == "python-pptx was here!"  # from its core properties
    assert "Group test text" in grouped.documents[0].text and "Col head 1: Cell text 1" in grouped.documents[0].text
    assert decks["missing_rels_item.pptx"].documents  # a deck with a dangling relationship still reads
    for name, loaded in decks.items():
        assert [d.page for d in loaded.documents] == sorted({d.page for d in loaded.documents}), name
        assert all(1 <= d.page <= loaded.pages for d in loaded.documents), name


@pytest.mark.network
def test_odfpy_and_odfdo_presentations_are_read():
    from tests.rigs.slides_files import odp_decks

    decks = {path.name: load(path) for path in sorted(odp_decks().glob("*.odp"))}
    assert set(decks) >= {"cols.odp", "emb_spreadsheet.odp", "ol.odp", "presentation.odp"}
    numbers = decks["ol.odp"].documents[0].text
    assert numbers.startswith("# OL\n\nEins\nTsvey\nDray") and decks["ol.odp"].pages == 1
    assert decks["emb_spreadsheet.odp"].documents[0].text == "# Embedded Spreadsheet"
    assert "Lorem ipsum" in decks["cols.odp"].documents[0].text
    assert decks["presentation.odp"].warnings == ["no text in file"]  # odfdo's empty template


# --- end to end -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_deck_ingested_is_found_by_slide(tmp_path):
    """Ingest a deck with the embedded model; a search finds the slide, and says "slide 2" as the CLI/UI do."""
    from ingest.pipeline import ingest
    from ingest.settings import load_settings
    from kb_app.search import Searcher

    deck = make_pptx(tmp_path / "engines.pptx")
    odp = make_odp(tmp_path / "engines.odp")
    settings = load_settings(chroma_path=tmp_path / "store")
    ingest([deck, odp], settings)
    results = Searcher(settings).search("When was Ada born? Name Born Field", k=4).results
    for source in (deck, odp):
        hit = next(r for r in results if r.source == str(source))
        assert hit.page == 2 and hit.location == "slide 2" and "Born: 1815" in hit.text
        assert json.loads(json.dumps(hit.to_dict()))["page"] == 2
