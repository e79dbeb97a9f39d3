"""One `kb ingest` over a folder of everything that goes wrong in real folders: each bad file gets its own
clear outcome naming it, the good ones go in, nothing is silently dropped, the exit code says some failed."""

import io
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from pypdf import PdfWriter

from ingest.knowledge_base import KnowledgeBase
from ingest.settings import load_settings
from tests.conftest import DATA
from tests.rigs import scans
from tests.test_cli import kb

PDF = DATA / "en" / "volcanoes.pdf"
ODD_NAMES = ["with space.md", "quote'and\"double.md", "new\nline.md", "中文 名字.md", "émoji 😀.txt"]


def _bad_corpus(root: Path) -> dict[str, tuple[str, str]]:
    """Writes the files; returns name -> (expected status, words the reason or warning must contain)."""
    root.mkdir()
    expect: dict[str, tuple[str, str]] = {}

    def put(name: str, data: bytes, status: str, words: str = "") -> None:
        (root / name).write_bytes(data)
        expect[name] = (status, words)

    pdf = PDF.read_bytes()
    put("truncated.pdf", pdf[: len(pdf) * 2 // 3], "failed", "not a readable PDF")
    put("garbage.pdf", b"%PDF-1.7\n" + random.Random(1).randbytes(5000), "failed", "PDF")
    writer = PdfWriter(clone_from=PDF)
    writer.encrypt("s3cret")
    with open(root / "locked.pdf", "wb") as handle:
        writer.write(handle)
    expect["locked.pdf"] = ("failed", "encrypted PDF: set KB_PDF_PASSWORD")
    scan = PdfWriter()
    scan.add_blank_page(595, 842)
    scan.add_blank_page(595, 842)
    with open(root / "scan.pdf", "wb") as handle:
        scan.write(handle)
    expect["scan.pdf"] = ("failed", "no text layer, and OCR found no text")  # blank pages: never "ingested"
    put("empty.txt", b"", "ingested", "no text")
    put("blob.md", bytes(range(256)) * 64, "failed", "binary")
    put("latin1.txt", "Crème brûlée, façade, déjà vu: ".encode("cp1252") * 40, "ingested")
    put("shift-jis.txt", "日本語の文書です。富士山は日本で一番高い山です。".encode("shift_jis") * 30, "ingested")
    words = ["river", "stone", "lantern", "harvest", "copper", "meadow"]
    rng = random.Random(2)
    put("one-line.txt", " ".join(rng.choice(words) for _ in range(400_000)).encode(), "ingested")  # ~2.6 MB, no newline
    for name in ODD_NAMES:
        put(name, f"# Odd name\n\nA note filed under an awkward name: {name}.\n".encode(), "ingested")
    os.mkfifo(root / "pipe.txt")  # reading it would block the run forever
    expect["pipe.txt"] = ("failed", "not a regular file")
    (root / "dangling.md").symlink_to(root / "nowhere.md")
    expect["dangling.md"] = ("failed", "broken symbolic link")
    (root / "loop").mkdir()
    (root / "loop" / "back").symlink_to(root)  # a folder loop: walked once, not forever
    put("good.md", b"# Good\n\nA perfectly ordinary document about volcanoes and lava.\n", "ingested")
    scans.png_bomb(root / "bomb.png")  # 20,000 x 20,000 pixels declared: refused before a pixel is decoded
    expect["bomb.png"] = ("failed", "past kb's bound of 80 million pixels (a decompression bomb?)")
    page = io.BytesIO()
    scans.page_image(["A page cut off halfway through."]).save(page, "PNG")
    put("truncated.png", page.getvalue()[: len(page.getvalue()) // 2], "failed", "damaged or truncated image")
    put("garbage.jpg", random.Random(3).randbytes(4000), "failed", "not a readable JPEG image")
    return expect


@pytest.mark.slow
def test_every_bad_file_is_named_with_its_reason_and_the_rest_goes_in(tmp_path, fake_server):
    corpus, store = tmp_path / "corpus", tmp_path / "chroma"
    expect = _bad_corpus(corpus)
    run = kb("ingest", str(corpus), "--endpoint", fake_server.url, "--model", "fake-embed", "--tokenizer", "qwen3",
             "--chroma-path", str(store), "--json", cwd=tmp_path, check=1)
    report = json.loads(run.stdout)
    outcomes = {Path(f["source"]).name: f for f in report["files"]}
    assert set(outcomes) == set(expect)  # every file accounted for: none dropped, none twice (the loop)
    for name, (status, words) in expect.items():
        outcome = outcomes[name]
        said = outcome["reason"] + " " + "; ".join(outcome["warnings"])
        assert outcome["status"] == status, (name, outcome)
        assert words in said, (name, said)
    assert "Traceback" not in run.stderr
    for name in ("truncated.pdf", "locked.pdf", "pipe.txt", "dangling.md", "blob.md", "bomb.png"):
        assert name in run.stderr  # the terminal names each failed file too
    assert outcomes["scan.pdf"]["chunks"] == 0 and outcomes["empty.txt"]["chunks"] == 0  # no empty chunks
    assert outcomes["one-line.txt"]["chunks"] > 100

    knowledge = KnowledgeBase.open(load_settings(chroma_path=store))
    stored = {Path(source).name for source in knowledge.documents()}
    assert stored == {name for name, (status, _) in expect.items() if status == "ingested"}
    for name in ODD_NAMES:  # names survive exactly, as stored sources and in the chunks' metadata
        chunks = knowledge.chunks_of(str(corpus / name))
        assert chunks and chunks[0].metadata["name"] == name and name in chunks[0].text
    assert "富士山" in " ".join(c.text for c in knowledge.chunks_of(str(corpus / "shift-jis.txt")))

    # The password is a secret: from the environment (or the config file), never a flag, and never printed.
    again = kb("ingest", str(corpus / "locked.pdf"), "--endpoint", fake_server.url, "--model", "fake-embed",
               "--tokenizer", "qwen3", "--chroma-path", str(store), "--json", cwd=tmp_path,
               env={"KB_PDF_PASSWORD": "s3cret"})
    assert json.loads(again.stdout)["ingested"] == 1
    assert "s3cret" not in again.stdout + again.stderr
    wrong = kb("ingest", str(corpus / "locked.pdf"), "--endpoint", fake_server.url, "--model", "fake-embed",
               "--tokenizer", "qwen3", "--chroma-path", str(tmp_path / "other"), cwd=tmp_path, check=1,
               env={"KB_PDF_PASSWORD": "nope"})
    assert "wrong KB_PDF_PASSWORD" in " ".join(wrong.stderr.split())
    assert "nope" not in wrong.stdout + wrong.stderr
    flag = kb("ingest", str(corpus / "locked.pdf"), "--pdf-password", "s3cret", cwd=tmp_path, check=2)
    assert "No such option" in flag.stderr


def test_a_file_that_changes_while_it_is_read_is_stored_as_read(tmp_path, store, fake_server):
    from ingest.pipeline import ingest
    from tests.test_pipeline import fake_embedder, fake_settings

    note = tmp_path / "docs" / "note.md"
    note.parent.mkdir()
    note.write_text("# Note\n\nThe first version of the note.\n")

    class Meddler:  # rewrites the file after kb has hashed it, before it is read
        def start(self, files, total_bytes):
            note.write_text("# Note\n\nThe second version, written while kb was busy.\n")

        def planned(self, *args): ...
        def embedded(self, *args): ...
        def file_progress(self, *args): ...
        def file_done(self, *args): ...

    settings = fake_settings(fake_server, store)
    report = ingest([note.parent], settings, embedder=fake_embedder(fake_server), progress=Meddler())
    outcome = report.of("ingested")[0]
    assert "changed while kb was reading it" in outcome.warnings[0]
    knowledge = KnowledgeBase.open(settings)
    assert "second version" in knowledge.chunks_of(str(note))[0].text
    again = ingest([note.parent], settings, embedder=fake_embedder(fake_server))
    assert len(again.of("unchanged")) == 1  # the record matches the file as it now is: nothing to redo


@pytest.mark.parametrize("vanish", ["deleted", "replaced by a folder"])
def test_a_file_that_vanishes_mid_run_is_reported(tmp_path, store, fake_server, vanish):
    from ingest.pipeline import ingest
    from tests.test_pipeline import fake_embedder, fake_settings

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "stays.md").write_text("# Stays\n\nThis one is still here.\n")
    leaving = folder / "leaves.md"
    leaving.write_text("# Leaves\n\nThis one will be gone.\n")

    class Remover:
        def start(self, files, total_bytes):
            leaving.unlink()
            if vanish != "deleted":
                leaving.mkdir()

        def planned(self, *args): ...
        def embedded(self, *args): ...
        def file_progress(self, *args): ...
        def file_done(self, *args): ...

    report = ingest([folder], fake_settings(fake_server, store), embedder=fake_embedder(fake_server),
                    progress=Remover())
    failed = report.of("failed")
    assert [o.source for o in failed] == [str(leaving)]
    assert "disappeared" in failed[0].reason or "folder" in failed[0].reason
    assert [o.source for o in report.of("ingested")] == [str(folder / "stays.md")]


def test_unreadable_files_and_folders_are_named(tmp_path, fake_server):
    """chmod 000 on a file and on a folder. Root reads through permissions, so as root kb runs as `nobody`
    (setpriv), in folders made reachable for it."""

    as_root = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="kb-perm-"))
    try:
        corpus, store, home = root / "corpus", root / "chroma", root / "home"
        for folder in (root, corpus, store, home):
            folder.mkdir(exist_ok=True)
            folder.chmod(0o777 if folder != corpus else 0o755)
        (corpus / "fine.md").write_text("# Fine\n\nAnyone may read this note about tides.\n")
        (corpus / "secret.md").write_text("# Secret\n\nNot for kb's eyes.\n")
        (corpus / "locked").mkdir()
        (corpus / "locked" / "inside.md").write_text("# Inside\n\nIn a folder kb cannot list.\n")
        for path in (corpus / "fine.md", corpus / "secret.md", corpus / "locked" / "inside.md"):
            path.chmod(0o644)
        (corpus / "secret.md").chmod(0)
        (corpus / "locked").chmod(0)
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if as_root else []
        run = subprocess.run(
            [*prefix, str(Path(sys.executable).parent / "kb"), "ingest", str(corpus), "--endpoint", fake_server.url,
             "--model", "fake-embed", "--tokenizer", "qwen3", "--chroma-path", str(store), "--json"],
            capture_output=True, text=True, timeout=300, cwd=root,
            env={**os.environ, "HOME": str(home), "COLUMNS": "200"},
        )
        assert run.returncode == 1, run.stdout + run.stderr
        outcomes = {f["source"]: f for f in json.loads(run.stdout)["files"]}
        assert outcomes[str(corpus / "fine.md")]["status"] == "ingested"
        assert outcomes[str(corpus / "secret.md")]["status"] == "failed"
        assert "permission denied" in outcomes[str(corpus / "secret.md")]["reason"].lower()
        assert outcomes[str(corpus / "locked")]["status"] == "failed"
        assert "permission denied" in outcomes[str(corpus / "locked")]["reason"].lower()
        said = " ".join(run.stderr.split())
        assert "secret.md" in said and "locked" in said and "Traceback" not in said
    finally:
        for path in (corpus / "secret.md", corpus / "locked"):
            path.chmod(stat.S_IRWXU)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_a_single_50_mb_line(tmp_path, fake_server):
    """No newline in 50 MB: chunked in segments, embedded and stored in parts, every chunk once."""
    words = ["river", "stone", "lantern", "harvest", "copper", "meadow", "signal", "orchard"]
    rng = random.Random(50)
    line = tmp_path / "docs" / "one line.txt"
    line.parent.mkdir()
    with line.open("w") as handle:
        written = 0
        while written < 50 * 1024 * 1024:
            block = " ".join(rng.choice(words) for _ in range(20_000)) + " "
            handle.write(block)
            written += len(block)
    store = tmp_path / "chroma"
    run = kb("ingest", str(line.parent), "--endpoint", fake_server.url, "--model", "fake-embed", "--tokenizer", "qwen3",
             "--chroma-path", str(store), "--json", cwd=tmp_path, check=0)
    outcome = json.loads(run.stdout)["files"][0]
    assert outcome["status"] == "ingested" and outcome["chunks"] > 20_000
    knowledge = KnowledgeBase.open(load_settings(chroma_path=store))
    assert knowledge.count() == outcome["chunks"] == knowledge.documents()[str(line)].chunks
    assert fake_server.requests >= outcome["chunks"] // 32  # every chunk went to the server (32 inputs a request)
    chunks = knowledge.chunks_of(str(line))
    assert max(int(c.metadata["tokens"]) for c in chunks) <= 512
    # From the first character to the last, with no gap between one chunk and the next.
    spans = sorted((c.metadata["start"], c.metadata["end"]) for c in chunks)
    assert spans[0][0] == 0 and spans[-1][1] == line.stat().st_size
    assert all(start <= previous_end for (_, previous_end), (start, _) in zip(spans, spans[1:]))


@pytest.mark.network
def test_real_third_party_pdfs(tmp_path, fake_server):
    """pypdf's and OCRmyPDF's own test PDFs (114 files: RC4 and AES encryption R2 to R6, repaired and
    invalid files, scans, forms, CAD drawings): each gets a clear outcome, none an internal error."""
    from tests.rigs.thirdparty import ocrmypdf_resources, pypdf_resources

    corpus = tmp_path / "pdfs"
    shutil.copytree(pypdf_resources(), corpus / "pypdf")
    shutil.copytree(ocrmypdf_resources(), corpus / "ocrmypdf")
    files = {str(p) for p in corpus.rglob("*.pdf")}
    store = tmp_path / "chroma"
    flags = ["--endpoint", fake_server.url, "--model", "fake-embed", "--tokenizer", "qwen3",
             "--chroma-path", str(store), "--json"]
    run = kb("ingest", str(corpus), *flags, cwd=tmp_path, check=1)
    outcomes = {f["source"]: f for f in json.loads(run.stdout)["files"]}
    assert set(outcomes) == files
    clear = ("encrypted PDF: set KB_PDF_PASSWORD to open it", "not a readable PDF (",
             "no text layer, and OCR found no text")
    for source, outcome in outcomes.items():
        if outcome["status"] == "failed":
            assert outcome["reason"].startswith(clear), (source, outcome["reason"])
            assert "DependencyError" not in outcome["reason"]  # AES needs `cryptography`: a dependency of kb
        else:
            assert outcome["status"] == "ingested", (source, outcome)
            assert outcome["chunks"] > 0, (source, outcome)  # a scan is read by OCR, or fails saying why
    failed = {Path(s).name for s, o in outcomes.items() if o["status"] == "failed"}
    assert "invalid.pdf" in failed and {"r4-aes-user-password.pdf", "r6-user-password.pdf"} <= {
        Path(s).name for s, o in outcomes.items() if "password" in Path(s).name and o["status"] != "failed"
    } | failed
    from pypdf import PdfReader

    for source, outcome in outcomes.items():  # "encrypted" only for files that are, and only those fail
        if outcome["status"] == "failed" and Path(source).name != "invalid.pdf" and "OCR" not in outcome["reason"]:
            assert outcome["reason"].startswith("encrypted PDF") and PdfReader(source).is_encrypted, source
    records = KnowledgeBase.open(load_settings(chroma_path=store)).documents()
    scans = [r for r in records.values() if "/ocrmypdf/" in r.source and r.ocr_parts]
    assert len(scans) > 20  # OCRmyPDF's image-only scans are read by OCR, and say so
    assert "Traceback" not in run.stderr

    # The user password of pypdf's R2..R6 files opens them, RC4 and AES alike.
    encrypted = corpus / "pypdf" / "encryption"
    again = kb("ingest", str(encrypted), *flags, cwd=tmp_path, env={"KB_PDF_PASSWORD": "asdfzxcv"})
    opened = {Path(f["source"]).name: f for f in json.loads(again.stdout)["files"]}
    for name in ("r2-user-password.pdf", "r3-user-password.pdf", "r4-user-password.pdf", "r4-aes-user-password.pdf",
                 "r5-user-password.pdf", "r6-user-password.pdf"):
        assert opened[name]["status"] in ("ingested", "unchanged") and opened[name]["chunks"] > 0, (name, opened[name])
    knowledge = KnowledgeBase.open(load_settings(chroma_path=store))
    text = " ".join(c.text for c in knowledge.chunks_of(str(encrypted / "r6-user-password.pdf")))
    assert text.strip() and all(c.text.strip() for c in knowledge.chunks_of(str(encrypted / "r6-user-password.pdf")))


def _office_corpus(root: Path) -> dict[str, str]:
    """Good and bad Office, OpenDocument and e-book files; for each bad one, the reason kb must give."""
    import zipfile

    import docx

    good = docx.Document()
    good.add_heading("Harbour report", 1)
    good.add_paragraph("The harbour dredging finished in March.")
    good.save(root / "good.docx")
    with zipfile.ZipFile(root / "bomb.docx", "w", zipfile.ZIP_DEFLATED) as bomb:  # 300 MB of zeros, 300 kB on disk
        with bomb.open("word/document.xml", "w", force_zip64=True) as part:
            for _ in range(300):
                part.write(b"\0" * (1 << 20))
    (root / "encrypted.xlsx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 4096)
    laughs = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
              b"<d>&b;</d>")
    with zipfile.ZipFile(root / "laughs.odt", "w") as odt:
        odt.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        odt.writestr("content.xml", laughs)
    (root / "truncated.pptx").write_bytes((root / "good.docx").read_bytes()[:600])
    (root / "garbage.epub").write_bytes(os.urandom(2048))
    return {"bomb.docx": "archive bomb", "encrypted.xlsx": "encrypted", "laughs.odt": "entity",
            "truncated.pptx": "not a zip archive, or truncated", "garbage.epub": "not a readable EPUB"}


@pytest.mark.slow
def test_bad_office_files_are_named_and_the_rest_goes_in(tmp_path):
    """Each bad file is named with its reason and nothing is stored for it; the good one goes in; exit code 1."""
    corpus = tmp_path / "office"
    corpus.mkdir()
    bad = _office_corpus(corpus)
    run = kb("ingest", str(corpus), "--chroma-path", str(tmp_path / "store"), "--json", cwd=tmp_path, check=1)
    outcomes = {Path(f["source"]).name: f for f in json.loads(run.stdout)["files"]}
    assert outcomes["good.docx"]["status"] == "ingested" and outcomes["good.docx"]["chunks"] >= 1
    for name, reason in bad.items():
        assert outcomes[name]["status"] == "failed", outcomes[name]
        assert reason in outcomes[name]["reason"], outcomes[name]
        assert f"failed office/{name}: " in run.stderr, name  # named on the terminal (relative to the working folder)
    stored = KnowledgeBase.open(load_settings(chroma_path=tmp_path / "store")).documents()
    assert {Path(source).name for source in stored} == {"good.docx"}
    assert "Traceback" not in run.stderr
