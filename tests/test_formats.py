"""Reading files into documents: the registry by suffix, and each format family (text, HTML, PDF)."""

import re
from pathlib import Path

import pytest

from ingest.discover import sha256_of
from ingest.documents import Document, LoadedFile
from ingest.errors import LoadError
from ingest.formats import load
from tests.conftest import DATA


def test_pdf_one_document_per_page_with_page_numbers():
    loaded = load(DATA / "en" / "volcanoes.pdf")
    assert loaded.file_type == "pdf" and loaded.pages == 2
    assert [d.page for d in loaded.documents] == [1, 2]
    assert "subduction" in loaded.documents[0].text.lower()
    assert "explosivity" in loaded.documents[1].text.lower()
    assert loaded.sha256 == sha256_of(DATA / "en" / "volcanoes.pdf")
    assert all(d.sha256 == loaded.sha256 and d.source == str(DATA / "en" / "volcanoes.pdf") for d in loaded.documents)


def test_html_keeps_headings_drops_scripts_and_styles():
    loaded = load(DATA / "en" / "coffee-brewing.html")
    text = loaded.documents[0].text
    assert loaded.title == "A Practical Guide to Brewing Coffee"
    assert "junk" not in text.lower()  # script and style bodies
    assert "# A Practical Guide to Brewing Coffee" in text
    assert "\n## " in text  # h2 kept as headings the splitter can cut at
    assert "90 to 96" in text


@pytest.mark.parametrize(
    ("name", "kind", "title"),
    [
        ("en/solar-power.md", "md", None),
        ("en/sourdough.txt", "txt", "sourdough"),
        ("en/honeybees.rst", "rst", None),
        ("zh/great-wall.md", "md", "长城的历史与修建"),
    ],
)
def test_text_formats(name, kind, title):
    loaded = load(DATA / name)
    assert loaded.file_type == kind
    assert len(loaded.documents) == 1 and loaded.documents[0].page is None
    assert loaded.documents[0].text.strip()
    if title:
        assert loaded.title == title
    else:
        assert loaded.title and loaded.title != Path(name).stem


def test_html_tables_and_hidden_elements(tmp_path):
    path = tmp_path / "t.html"
    path.write_text("<table><tr><th>Name</th><th>Temp</th></tr><tr><td>green tea</td><td>80°C</td></tr></table>"
                    "<p hidden>secret</p><div aria-hidden='true'>decoration</div><p>visible</p>")
    text = load(path).documents[0].text
    assert "Name; Temp\nName: green tea; Temp: 80°C" in text  # each cell with its column's header
    assert "secret" not in text and "decoration" not in text and "visible" in text


def test_non_utf8_text_is_decoded(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("Café crème brûlée, déjà vu, naïve façade. ".encode("cp1252") * 20)
    assert "Café crème" in load(path).documents[0].text


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "not a readable PDF"),
        ("binary.txt", bytes(range(256)) * 50, "binary"),
        ("notes.docx", b"PK\x03\x04", "not a zip archive, or truncated"),
        ("notes.xyz", b"PK\x03\x04", "unsupported file type"),
    ],
)
def test_unreadable_files_raise_load_error_naming_file(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LoadError) as info:
        load(path)
    assert reason in info.value.reason
    assert str(path) in str(info.value)


def test_empty_file_has_no_documents_and_a_warning(tmp_path):
    path = tmp_path / "empty.md"
    path.write_bytes(b"")
    loaded = load(path)
    assert loaded.documents == [] and loaded.warnings


def test_load_error_survives_pickling():
    """Parsing runs in worker processes: its errors must come back intact."""
    import pickle

    error = pickle.loads(pickle.dumps(LoadError("/a/b.pdf", "encrypted PDF")))
    assert (error.path, error.reason, str(error)) == ("/a/b.pdf", "encrypted PDF", "/a/b.pdf: encrypted PDF")


def test_what_pypdf_repairs_is_reported_with_the_file_not_printed(tmp_path, capfd):
    """pypdf logs repairs without a file name; kb reports them as the file's warning instead."""
    data = (DATA / "en" / "volcanoes.pdf").read_bytes()
    xref = list(re.finditer(rb"startxref\s+(\d+)", data))[-1]
    damaged = tmp_path / "damaged xref.pdf"
    damaged.write_bytes(data[:xref.start(1)] + str(int(xref.group(1)) + 7).encode() + data[xref.end(1):])
    loaded = load(damaged)
    assert len(loaded.documents) == len(load(DATA / "en" / "volcanoes.pdf").documents)
    assert any(w.startswith("pypdf reported") and "startxref" in w for w in loaded.warnings), loaded.warnings
    assert "startxref" not in capfd.readouterr().err


def test_line_art_is_stripped_before_text_extraction_with_the_same_text(tmp_path):
    """A page with a huge drawing (a map, a plot) gives the same text without pypdf parsing every path."""
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import DecodedStreamObject

    from ingest.formats.pdf import _drop_path_drawing

    original = DATA / "en" / "volcanoes.pdf"
    writer = PdfWriter(clone_from=original)
    page = writer.pages[0]
    drawing = b"".join(f"q 0.5 w {i % 500} {i % 700}.5 m -{i % 300} .{i % 200} l 1 2 3 4 5 6 c 0 0 10 10 re "
                       f"7 8 9 1 v S Q\n0 1 0.{i % 97} rg\n{i} 0 m 2 2 l\nf\n.5 g\n1 0 0 1 K\nn\n".encode()
                       for i in range(25_000))
    content = DecodedStreamObject()
    content.set_data(drawing + page.get_contents().get_data() + drawing)
    page.replace_contents(content)
    page.compress_content_streams()
    drawn = tmp_path / "drawn.pdf"
    writer.write(drawn)

    reader = PdfReader(drawn)
    before = len(reader.pages[0].get_contents().get_data())
    assert before > 2_000_000
    _drop_path_drawing(reader.pages[0])
    after = reader.pages[0].get_contents().get_data()
    assert len(after) < before // 4 and b"BT" in after and b" re " not in after and b" l " not in after
    assert b" rg" not in after and b" K" not in after and b"\nf\n" not in after
    assert [d.text for d in load(drawn).documents] == [d.text for d in load(original).documents]


def test_pdf_pages_are_read_with_pypdfs_cache_bounded(tmp_path, monkeypatch):
    """pypdf parses object streams whole and keeps every object: listing a hyperref manual's pages loads
    all its link annotations. kb walks the page tree itself and keeps the cache under a bound, with the
    same text page by page (resources inherited from the tree included)."""
    from pypdf import PdfReader

    import ingest.formats.pdf as pdf_format
    from tests.pdfmaker import hyperref_pdf

    path = tmp_path / "manual.pdf"
    texts = hyperref_pdf(path, pages=60, links_per_page=40)
    plain = PdfReader(path)
    assert len(plain.pages) == 60 and len(plain.resolved_objects) > 2400  # what pypdf's own page list holds

    monkeypatch.setattr(pdf_format, "_CACHED_OBJECTS", 300)
    seen = []
    forget = pdf_format._forget
    monkeypatch.setattr(pdf_format, "_forget", lambda reader, page: (
        seen.append(len(reader.resolved_objects)), forget(reader, page)))
    loaded = load(path)
    assert loaded.pages == 60 and not loaded.warnings
    assert [d.text for d in loaded.documents] == texts == [p.extract_text() for p in plain.pages]
    assert [d.page for d in loaded.documents] == list(range(1, 61))
    assert len(seen) == 60 and max(seen) <= 300 + 100  # the bound, plus one object stream read whole


def test_a_page_tree_kb_cannot_walk_falls_back_to_pypdfs_list(tmp_path):
    """A null among /Kids stops kb's walk; pypdf's list skips it, and the pages are read all the same."""
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import NullObject

    from ingest.formats.pdf import _page_tree

    original = DATA / "en" / "volcanoes.pdf"
    writer = PdfWriter(clone_from=original)
    writer._root_object["/Pages"].get_object()["/Kids"].insert(1, NullObject())
    odd = tmp_path / "odd.pdf"
    writer.write(odd)
    with pytest.raises(ValueError):
        _page_tree(PdfReader(odd))
    loaded = load(odd)
    assert [d.text for d in loaded.documents] == [d.text for d in load(original).documents]
    assert loaded.pages == 2 and not loaded.warnings


def test_a_pdf_written_to_while_pypdf_reads_it_is_refused(tmp_path, monkeypatch):
    """Its text would mix two versions: nothing is stored from it, and the message says to run again."""
    import shutil

    import ingest.formats.pdf as pdf_format

    pdf = tmp_path / "report.pdf"
    shutil.copy(DATA / "en" / "volcanoes.pdf", pdf)
    parse = pdf_format._load_pdf

    def parse_while_another_program_appends(*args):
        loaded = parse(*args)
        with open(pdf, "ab") as handle:  # a real write to the file kb has open
            handle.write(b"\n%% an incremental update saved by an editor\n")
        return loaded

    monkeypatch.setattr(pdf_format, "_load_pdf", parse_while_another_program_appends)
    with pytest.raises(LoadError, match="changed while kb was reading it: nothing stored from it; run kb ingest again"):
        load(pdf)


def test_a_pdf_changed_since_it_was_listed_is_stored_with_the_hash_of_what_was_read(tmp_path):
    import shutil

    pdf = tmp_path / "report.pdf"
    shutil.copy(DATA / "en" / "volcanoes.pdf", pdf)
    loaded = load(pdf, sha256="0" * 64)  # the hash the run computed when it listed the file, before an edit
    assert loaded.sha256 == sha256_of(pdf) and loaded.documents
    assert all(d.sha256 == loaded.sha256 for d in loaded.documents)
    assert loaded.warnings[0] == "changed while kb was reading it: the version read is stored"
    assert not load(pdf, sha256=sha256_of(pdf)).warnings


@pytest.mark.slow
def test_a_pdf_of_thousands_of_pages_is_read_page_by_page_within_the_cache_bound(tmp_path, monkeypatch):
    import ingest.formats.pdf as pdf_format
    from tests.pdfmaker import hyperref_pdf

    path = tmp_path / "thousands.pdf"
    texts = hyperref_pdf(path, pages=3000, links_per_page=4)  # ~15,000 objects in object streams
    seen = []
    forget = pdf_format._forget
    monkeypatch.setattr(pdf_format, "_forget", lambda reader, page: (seen.append(len(reader.resolved_objects)),
                                                                  forget(reader, page)))
    loaded = load(path)
    assert loaded.pages == 3000 and [d.text for d in loaded.documents] == texts
    assert [d.page for d in loaded.documents] == list(range(1, 3001))
    assert max(seen) <= pdf_format._CACHED_OBJECTS + 200  # the bound, plus one object stream read whole
    assert min(seen[-100:]) < max(seen)  # the cache was cleared as it went, not only at the end



def test_a_format_plugs_in_by_registering_its_suffixes(tmp_path):
    """What #10's formats do: a module registers its suffixes; kb then lists, loads and reports them."""
    import ingest.formats as formats
    from ingest.discover import discover
    from ingest.documents import whole_file

    @formats.register("note", ".note", ".notes")
    def load_note(path, *, file_type, sha256, options):
        text = path.read_text()
        return whole_file(str(path), file_type, "a note", sha256_of(path), len(text), text.upper(), [])

    try:
        (tmp_path / "a.note").write_text("remember the milk")
        (tmp_path / "b.NOTES").write_text("")
        files, errors = discover([tmp_path])
        assert sorted(f.name for f in files) == ["a.note", "b.NOTES"] and errors == []
        assert formats.SUFFIXES[".notes"] == formats.file_type_of(tmp_path / "b.NOTES") == "note"
        loaded = load(tmp_path / "a.note")
        assert (loaded.file_type, loaded.title, loaded.documents[0].text) == ("note", "a note", "REMEMBER THE MILK")
        assert load(tmp_path / "b.NOTES").warnings == ["no text in file"]
        (tmp_path / "c.note").mkdir()
        with pytest.raises(LoadError, match="is a folder, not a file"):  # the OS's errors, reported as for any format
            load(tmp_path / "c.note")
        with pytest.raises(ValueError, match="registered twice"):
            formats.register("other", ".note")(load_note)
    finally:
        for suffix in (".note", ".notes"):
            formats._FORMATS.pop(suffix, None)
            formats._TYPES.pop(suffix, None)
    assert ".note" not in formats.SUFFIXES


def test_a_files_language_is_that_of_most_of_its_text():
    """By text, not by pages: one long English page outweighs two short German ones."""
    pages = [Document("a.pdf", "pdf", "A", "0", "x" * 900, 1, "en"),
             Document("a.pdf", "pdf", "A", "0", "x" * 100, 2, "de"),
             Document("a.pdf", "pdf", "A", "0", "x" * 100, 3, "de"),
             Document("a.pdf", "pdf", "A", "0", "x" * 5000, 4, None)]
    assert LoadedFile("a.pdf", "pdf", "A", "0", 1, pages, 4).language == "en"
    assert LoadedFile("a.pdf", "pdf", "A", "0", 1, pages[3:], 4).language is None
