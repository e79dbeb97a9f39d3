"""Scans and photos through `kb ingest` and `kb search`, with the embedded multilingual model: OCR'd text is
found across languages, marked as OCR'd in the store and in results, and read in the parsing processes."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from ingest.errors import OcrUnavailable
from ingest.knowledge_base import KnowledgeBase
from ingest.pipeline import ingest
from ingest.records import LEGACY_SCAN_WARNING
from tests.conftest import DATA
from tests.rigs import scans
from tests.test_cli import kb


def _chinese_scan(folder):
    """An image-only PDF of a scanned Chinese page (papermaking in the Han dynasty)."""
    page = scans.scanned(scans.page_image(scans.CHINESE_SCAN_LINES), seed=3)
    return scans.image_only_pdf([page], folder / "造纸术-扫描.pdf")


@pytest.mark.network
@pytest.mark.slow
def test_a_chinese_scan_and_a_photo_of_an_english_page_are_found_from_the_other_language(tmp_path):
    """The issue's acceptance test: an English question finds the Chinese scan, a Chinese question finds the
    photo of OCRmyPDF's real LinnSequencer page (its EXIF says it was taken sideways), among the sample corpus."""
    from PIL import Image

    corpus = tmp_path / "corpus"
    shutil.copytree(DATA, corpus, ignore=shutil.ignore_patterns("chroma"))
    scan = _chinese_scan(corpus)
    with Image.open(scans.ocrmypdf_images() / "linn.png") as linn:
        photo = scans.photo_of(linn.convert("L"), corpus / "linn-photo.jpg", exif_rotation=True)
    store = tmp_path / "chroma"
    run = kb("ingest", str(corpus), "--chroma-path", str(store), "--json", cwd=tmp_path, check=0)
    files = {f["source"]: f for f in json.loads(run.stdout)["files"]}
    assert files[str(scan)]["status"] == files[str(photo)]["status"] == "ingested"

    english = kb("search", "Who improved papermaking in the Han dynasty, and from what materials?", "-k", "3",
                 "--chroma-path", str(store), "--json", cwd=tmp_path, check=0)
    best = json.loads(english.stdout)[0]
    assert (best["source"], best["page"], best["ocr"], best["language"]) == (str(scan), 1, True, "zh"), best
    chinese = kb("search", "这台音序器有多少条音轨？一张软盘能存多少个音符？", "-k", "3",
                 "--chroma-path", str(store), "--json", cwd=tmp_path, check=0)
    best = json.loads(chinese.stdout)[0]
    assert (best["source"], best["ocr"], best["language"]) == (str(photo), True, "en"), best
    assert "LinnSequencer" in best["text"].replace(" ", "")
    shown = kb("search", "这台音序器有多少条音轨？", "-k", "1", "--chroma-path", str(store), cwd=tmp_path, check=0)
    assert "linn-photo.jpg" in shown.stdout and "(read by OCR)" in shown.stdout


@pytest.mark.slow
def test_ocr_runs_in_the_parsing_processes_and_is_recorded(tmp_path, fake_server):
    """With worker processes, the scans are read there (each builds its own engine); the chunks say `ocr`,
    the record counts the OCR'd pages, and text from a text layer is not marked."""
    from tests.test_pipeline import fake_embedder, fake_settings

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _chinese_scan(corpus)
    scans.photo_of(scans.page_image(scans.ENGLISH_PAGE_LINES), corpus / "lighthouse.jpg", exif_rotation=False)
    scans.text_pdf(["A page with a text layer about tidal mills and their sluice gates."], corpus / "mill.pdf")
    settings = fake_settings(fake_server, tmp_path / "chroma", workers=2)
    report = ingest([corpus], settings, embedder=fake_embedder(fake_server))
    assert report.ok and report.stages.prepare_in_workers, [o.reason for o in report.outcomes]
    knowledge = KnowledgeBase.open(settings)
    records = {r.source.rsplit("/", 1)[-1]: r for r in knowledge.documents().values()}
    assert {name: r.ocr_parts for name, r in records.items()} == {"造纸术-扫描.pdf": 1, "lighthouse.jpg": 1,
                                                                    "mill.pdf": None}
    for name, record in records.items():
        marks = {c.metadata.get("ocr") for c in knowledge.chunks_of(record.source)}
        assert marks == ({None} if name == "mill.pdf" else {True}), (name, marks)
    lighthouse = " ".join(c.text for c in knowledge.chunks_of(records["lighthouse.jpg"].source))
    assert "Fresnel" in lighthouse


@pytest.mark.slow
def test_a_small_run_reads_its_scan_in_an_ocr_process_not_beside_the_embedder(tmp_path, fake_server, monkeypatch):
    """A run too small for parsing workers reads its files in a thread of kb's process; the scan's page still
    goes to a process of its own (an engine built here would take the CPU from the embedder and keep half a
    gigabyte), which ends with the run."""
    from ingest import formats, prepare
    from ingest.ocr import OcrProcess
    from tests.test_pipeline import fake_embedder, fake_settings

    def no_engine_here(*args: object) -> None:
        raise AssertionError("an OCR engine was built in kb's own process")

    monkeypatch.setattr(formats, "engine", no_engine_here)
    made: list[OcrProcess] = []

    class Counted(OcrProcess):
        def __init__(self, *args: object) -> None:
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(prepare, "OcrProcess", Counted)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    scan = _chinese_scan(corpus)
    (corpus / "notes.md").write_text("# Paper\n\nCai Lun improved papermaking with bark and hemp.\n")
    settings = fake_settings(fake_server, tmp_path / "chroma")
    report = ingest([corpus], settings, embedder=fake_embedder(fake_server))
    assert report.ok and not report.stages.prepare_in_workers, [o.reason for o in report.outcomes]
    assert len(made) == 1 and made[0].pages == 1
    knowledge = KnowledgeBase.open(settings)
    assert {c.metadata.get("ocr") for c in knowledge.chunks_of(str(scan))} == {True}
    assert "蔡伦" in " ".join(c.text for c in knowledge.chunks_of(str(scan)))
    with pytest.raises(OcrUnavailable, match="the run is over"):  # it ended with the run, for good
        made[0].read(None)


@pytest.mark.slow
def test_ocr_off_names_the_scan_and_the_run_fails(tmp_path):
    """`--ocr never` and KB_OCR=never: a scan is failed with the reason, named in full; the text file beside
    it is ingested; the exit code is not 0."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    scan = _chinese_scan(corpus)
    (corpus / "notes.md").write_text("# Paper\n\nCai Lun improved papermaking with bark and hemp.\n")
    for flags, env in ((["--ocr", "never"], {}), ([], {"KB_OCR": "never"})):
        store = tmp_path / f"chroma-{len(flags)}"
        run = kb("ingest", str(corpus), "--chroma-path", str(store), *flags, cwd=tmp_path, check=1, env=env)
        assert "1 ingested" in run.stderr and "1 failed" in run.stderr, run.stderr
        shown = scan.relative_to(tmp_path)  # the CLI names files under the working folder from there
        assert f"failed {shown}: no text layer; OCR off (--ocr never, KB_OCR=never)" in run.stderr, run.stderr


@pytest.mark.slow
def test_a_scan_recorded_unread_by_an_older_kb_is_read_now(tmp_path, fake_server):
    """kb 0.1 recorded a scanned PDF as ingested with no chunks and a warning; the next run reads it with OCR
    (an ordinary empty file stays unchanged: tests/test_pipeline.py)."""
    from tests.test_pipeline import fake_embedder, fake_settings

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    scan = _chinese_scan(corpus)
    settings = fake_settings(fake_server, tmp_path / "chroma")
    first = ingest([corpus], settings, embedder=fake_embedder(fake_server))
    knowledge = KnowledgeBase.open(settings)
    record = knowledge.documents()[str(scan)]
    # As kb 0.1 left it: the record alone, with no chunks and its warning.
    knowledge.delete_document(str(scan))
    legacy = replace(record, chunks=0, tokens=0, ocr_parts=None, warnings=LEGACY_SCAN_WARNING + ": nothing to index")
    knowledge.write_document(legacy, [], np.zeros((0, 8), np.float32), [], [])
    assert knowledge.documents()[str(scan)].chunks == 0 and knowledge.count() == 0
    again = ingest([corpus], settings, embedder=fake_embedder(fake_server))
    assert [(o.status, o.chunks) for o in again.outcomes] == [("ingested", first.outcomes[0].chunks)]
    assert KnowledgeBase.open(settings).documents()[str(scan)].ocr_parts == 1
