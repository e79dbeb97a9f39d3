"""Truncated files of every format (a download or a copy that stopped): each one, cut at a few points (its header
only, half, 90%, its last byte missing), either gives the text that is there or is refused with LoadError naming
the file in full with a reason. Never another exception (IndexError, KeyError, UnicodeDecodeError...), never a
hang, never the format's own markup read as text (RTF control words, base64, MIME headers).

"The text that is there": every line a truncated file gives is the start of a line the whole file gives."""

from __future__ import annotations

import re
from email.message import EmailMessage
from pathlib import Path
from typing import Callable

import pytest

from ingest.errors import LoadError
from ingest.formats import load

ROWS = [["Name", "Born", "Field"], ["Ada", "1815", "mathematics"], ["Alan", "1912", "computing"]]


# --- one small valid file of each format --------------------------------------------------------------------


def make_rtf(path: Path) -> Path:
    """Header groups (fonts, colours, info), formatting, an escape, a destination to skip, a table."""
    path.write_bytes(
        rb"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0\froman Times New Roman;}{\f1\fswiss Arial;}}"
        rb"{\colortbl;\red0\green0\blue0;\red255\green0\blue0;}{\info{\title Harbour notes}{\author Ada}}"
        rb"\pard\plain\f0\fs24 The harbour dredging finished in March.\par"
        rb"{\b Keepers} trimmed the wicks every night at caf\'e9 hours.\par"
        rb"{\*\generator Writer}\pard Second paragraph with {\i italic} text, \u21482?\u23478? and a tab\tab here.\par"
        rb"{\field{\*\fldinst HYPERLINK \"http://example.org\"}{\fldrslt the harbour site}}\par"
        rb"\trowd\cellx2000\cellx4000 Name\cell Born\cell\row\trowd\cellx2000\cellx4000 Ada\cell 1815\cell\row"
        rb"\pard Last line of the document.\par}")
    return path


def make_csv(path: Path) -> Path:
    """A header row, a quoted field with a comma, one with a line break, Latin-1 letters in UTF-8."""
    path.write_text('Name,Born,Field\nAda,1815,mathematics\nAlan,1912,computing\n"Hopper, Grace",1906,'
                    '"compilers\nand COBOL"\nRené,1966,"café, crème"\n', encoding="utf-8")
    return path


def make_eml(path: Path) -> Path:
    """What a mail client sends: an encoded subject, a base64 plain body and a quoted-printable HTML one, a
    base64 text attachment, a forwarded message, a binary attachment."""
    msg = EmailMessage()
    msg["Subject"] = "Lighthouse survey — results"
    msg["From"] = "Ada Keeper <ada@example.org>"
    msg["Date"] = "Mon, 30 Nov 2026 09:15:00 +0000"
    msg.set_content("Les phares: café crème, 42 feux en état de marche.\n" * 4, cte="base64")
    msg.add_alternative("<html><body><p>The survey found <b>42</b> working lights — café.</p><table><tr><th>Light"
                        "</th><th>Height</th></tr><tr><td>Bell Rock</td><td>35</td></tr></table></body></html>",
                        subtype="html", cte="quoted-printable")
    msg.add_attachment("Notes on the Fresnel lenses, née 1822.\n" * 5, filename="notes.txt", cte="base64")
    forwarded = EmailMessage()
    forwarded["Subject"] = "Old report"
    forwarded["From"] = "bob@example.org"
    forwarded.set_content("The 1990 report — 40 lights.\n", cte="quoted-printable")
    msg.add_attachment(forwarded, filename="old report.eml")
    msg.add_attachment(bytes(range(256)) * 2, maintype="application", subtype="octet-stream", filename="blob.bin")
    path.write_bytes(msg.as_bytes())
    return path


def make_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Harbour report", 1)
    document.add_paragraph("The harbour dredging finished in March.")
    table = document.add_table(rows=len(ROWS), cols=len(ROWS[0]))
    for r, row in enumerate(ROWS):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.save(path)
    return path


def make_xlsx(path: Path) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    book.active.title = "People"
    for row in ROWS:
        book.active.append(row)
    book.save(path)
    return path


def make_pptx(path: Path) -> Path:
    from pptx import Presentation

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Analytical Engine"
    slide.placeholders[1].text_frame.text = "Babbage designed it"
    deck.save(path)
    return path


def make_odt(path: Path) -> Path:
    from odfdo import Document, Header, Paragraph

    document = Document("text")
    document.body.clear()
    document.body.append(Header(1, "Harbour guide"))
    document.body.append(Paragraph("Boats leave at dawn."))
    document.save(path)
    return path


def make_ods(path: Path) -> Path:
    from odfdo import Document, Table

    document = Document("spreadsheet")
    document.body.clear()
    table = Table("People", width=3, height=3)
    table.set_values(ROWS)
    document.body.append(table)
    document.save(path)
    return path


def make_odp(path: Path) -> Path:
    from odfdo import Document, DrawPage, Frame

    deck = Document("presentation")
    deck.body.clear()
    page = DrawPage("page1", name="Page 1")
    page.append(Frame.text_frame("Analytical Engine", presentation_class="title"))
    deck.body.append(page)
    deck.save(path)
    return path


def make_epub(path: Path) -> Path:
    from tests.rigs.epub_files import XHTML, nav, opf, write_epub

    items = [("nav", "nav.xhtml", "application/xhtml+xml", "nav"), ("c1", "one.xhtml", "application/xhtml+xml", "")]
    return write_epub(path, {
        "OEBPS/content.opf": opf("Lenses", items, ["c1"]),
        "OEBPS/nav.xhtml": nav([("one.xhtml", "Fresnel")]),
        "OEBPS/one.xhtml": XHTML.format(title="one", body="<p>Fresnel built a lens of rings in 1822.</p>" * 20)})


def make_pdf(path: Path) -> Path:
    from tests.rigs.scans import text_pdf

    lines = "The harbour dredging finished in March.\nThe keepers left the lighthouse in May.\n" * 3
    return text_pdf([f"Page one.\n{lines}", f"Page two.\n{lines}"], path)  # enough text not to need OCR


def make_png(path: Path) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new("L", (400, 100), 255)
    ImageDraw.Draw(image).text((10, 40), "Harbour", fill=0)
    image.save(path)
    return path


MAKERS: dict[str, Callable[[Path], Path]] = {
    "rtf": make_rtf, "csv": make_csv, "eml": make_eml, "docx": make_docx, "xlsx": make_xlsx, "pptx": make_pptx,
    "odt": make_odt, "ods": make_ods, "odp": make_odp, "epub": make_epub, "pdf": make_pdf, "png": make_png}
# The bytes of the start that hold nothing but the format's header: an RTF's header groups, an e-mail's headers
# (and its first part's), a CSV's header row, a zip's first local file header, a PDF's version line, a PNG's
# signature and IHDR chunk.
HEADER_ONLY = {"rtf": 180, "eml": 300, "csv": 16, "pdf": 15, "png": 33}
ZIPS = {"docx", "xlsx", "pptx", "odt", "ods", "odp", "epub"}


# --- the check ----------------------------------------------------------------------------------------------


def text_of(path: Path) -> str:
    return "\n".join(document.text for document in load(path).documents)


def read_or_refused(path: Path) -> str | None:
    """The text of the file, or None when kb refuses it with LoadError naming the file in full and a reason. Any
    other exception fails the test."""
    try:
        return text_of(path)
    except LoadError as exc:
        assert exc.path == str(path) and exc.reason.strip(), (exc.path, exc.reason)
        return None


def assert_text_that_is_there(text: str, whole: str, where: str) -> None:
    """Every line of `text` is the start of a line of `whole` (the text of the complete file)."""
    lines = whole.splitlines()
    for line in text.splitlines():
        assert any(full.startswith(line) for full in lines), f"{where}: {line!r} is not in the whole file's text"


def cuts(size: int) -> list[int]:
    return sorted({1, size // 2, size * 9 // 10, size - 1})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_a_truncated_file_gives_the_text_that_is_there_or_is_refused_with_a_reason(tmp_path, kind):
    whole_path = MAKERS[kind](tmp_path / f"whole.{kind}")
    data = whole_path.read_bytes()
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(data)
    whole = text_of(path)  # the same name: a CSV's sheet is named after its file
    assert whole.strip()
    points = cuts(len(data)) + ([HEADER_ONLY[kind]] if kind in HEADER_ONLY else [])
    if kind == "png":
        points.remove(len(data) - 1)  # a PNG without the end of its IEND chunk decodes whole: OCR, not a cut
    for cut in points:
        path.write_bytes(data[:cut])
        text = read_or_refused(path)
        if text is not None:
            assert_text_that_is_there(text, whole, f"{kind} cut at {cut} of {len(data)} bytes")
        elif kind in ZIPS:  # a zip's directory is at its end: any cut loses it, and the reason says so
            with pytest.raises(LoadError, match=r"not a zip archive, or truncated"):
                load(path)


@pytest.mark.timeout(120)
def test_an_rtf_cut_anywhere_gives_its_text_without_control_words_and_says_it_was_cut(tmp_path):
    """At every byte: the text before the cut, never a control word or a lone backslash (striprtf keeps one);
    a warning that the file ends with groups open, or, when the cut comes before any text, refused as truncated
    (not loaded as an empty document)."""
    data = make_rtf(tmp_path / "whole.rtf").read_bytes()
    path = tmp_path / "cut.rtf"
    path.write_bytes(data)
    whole = text_of(path)
    assert load(path).warnings == [] and "Keepers trimmed the wicks every night at café hours." in whole
    started = False  # past the first character of text
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        try:
            loaded = load(path)
        except LoadError as exc:
            assert exc.path == str(path)
            if cut >= 5:  # "{\rtf" whole
                assert not started and exc.reason.startswith("truncated RTF: the file ends before any text ("), cut
            continue
        started = True
        text = "\n".join(document.text for document in loaded.documents)
        assert "\\" not in text and "Arial" not in text and "HYPERLINK" not in text, (cut, text)
        assert_text_that_is_there(text, whole, f"rtf cut at {cut}")
        assert len(loaded.warnings) == 1 and loaded.warnings[0].startswith("truncated RTF: the file ends with "), cut
    path.write_bytes(data[:data.index(b"The harbour")] + b"}")  # header groups, no text, braces closed: not cut
    assert load(path).warnings == ["no text in file"]
    path.write_bytes(b"{\\rtf1\\ansi A brace \\} and a backslash \\\\")  # ends with an escape: kept
    assert load(path).documents[0].text == "A brace } and a backslash \\"
    path.write_bytes(b"{\\rtf1\\ansi {\\b The harbour}\\par \\")  # ends with a lone backslash: dropped
    assert load(path).documents[0].text == "The harbour\n"


@pytest.mark.timeout(120)
def test_an_eml_cut_anywhere_gives_its_text_without_mime_markup(tmp_path):
    """Cut every 7 bytes: headers, bodies and attachments up to the cut, never base64 or quoted-printable
    left encoded (a base64 body cut one character past a quantum comes back encoded from the standard library),
    a MIME header or boundary taken for text, or a character the cut split read as an encoding error."""
    data = make_eml(tmp_path / "whole.eml").read_bytes()
    path = tmp_path / "cut.eml"
    path.write_bytes(data)
    whole = text_of(path)
    assert load(path).warnings == [] and "# Attachment: notes.txt" in whole and "40 lights" in whole
    markup = re.compile(r"[A-Za-z0-9+/]{24,}|=[0-9A-F]{2}|=[0-9A-F]\Z|=\?|Content-|MIME-|={6,}")
    for cut in range(10, len(data), 7):
        path.write_bytes(data[:cut])
        try:
            loaded = load(path)
        except LoadError:
            raise AssertionError(f"eml cut at {cut}: refused with its headers there") from None
        text = "\n".join(document.text for document in loaded.documents)
        # An address the cut ends in is rewritten by the library ("Ada K" as '"Ada K"'), an unnamed part named.
        # A subject cut in the first two bytes of an encoded word keeps them ("... =?"), as a subject may end so.
        kept = [re.sub(r"^(Subject: .*) =\??$", r"\1", line) for line in text.splitlines()
                if not line.startswith(("From: ", "Attachment (not read): ", "# Attachment: part "))]
        assert not markup.search("\n".join(kept)) and "\ufffd" not in text, (cut, text[-200:])
        assert_text_that_is_there("\n".join(kept), whole, f"eml cut at {cut}")
        assert [w for w in loaded.warnings if not w.startswith("truncated e-mail: ")] == [], (cut, loaded.warnings)


def test_an_eml_cut_in_a_base64_body_or_a_header_gives_the_text_up_to_the_cut(tmp_path):
    data = make_eml(tmp_path / "whole.eml").read_bytes()
    path = tmp_path / "cut.eml"
    body = data.index(b"TGVz")  # the base64 plain body, in lines of 76 characters
    plain = ("Les phares: café crème, 42 feux en état de marche.\n" * 4).encode()
    for count in range(76, 96):  # each remainder of 4: 1 is the one the library gives back still encoded
        path.write_bytes(data[:body + count + count // 76])
        loaded = load(path)
        there = plain[:count * 3 // 4].decode("utf-8", errors="ignore")  # a character the cut split: dropped
        assert loaded.documents[0].text.split("\n\n", 1)[1] == there.strip(), count
        assert loaded.warnings == ["truncated e-mail: a MIME part has no closing boundary (the file may be cut "
                                   "short); the text up to there is read"]
    date = data.index(b"09:15")
    path.write_bytes(data[:date + 4])  # a date cut short, as written (the library rewrites it to 09:01:00 -0000)
    assert load(path).documents[0].text.endswith("\nDate: Mon, 30 Nov 2026 09:1")
    subject = data.index(b"=?utf-8?")
    path.write_bytes(data[:subject + 12])  # inside an RFC 2047 encoded word
    assert load(path).documents[0].text == "Subject: Lighthouse survey"


@pytest.mark.timeout(120)
def test_a_csv_cut_anywhere_gives_the_rows_that_are_there(tmp_path):
    data = make_csv(tmp_path / "whole.csv").read_bytes()
    path = tmp_path / "cut.csv"
    path.write_bytes(data)
    whole = text_of(path)
    assert "Name: Hopper, Grace; Born: 1906; Field: compilers and COBOL" in whole
    split = {at for at, byte in enumerate(data) if 0x80 <= byte < 0xC0}  # inside a character of two bytes
    for cut in range(1, len(data)):
        if cut in split:
            continue  # test_a_csv_cut_inside_a_character below
        path.write_bytes(data[:cut])
        text = read_or_refused(path)
        assert text is not None, cut
        assert_text_that_is_there(text, whole, f"csv cut at {cut}")


def test_a_csv_cut_inside_a_character_is_read_as_utf8(tmp_path):
    path = tmp_path / "people.csv"
    path.write_bytes("Name,Note\nAda,café crème\nLin,建筑师\n".encode()[:-2])
    assert text_of(path) == "# people\nName; Note\nName: Ada; Note: café crème\nName: Lin; Note: 建筑"
