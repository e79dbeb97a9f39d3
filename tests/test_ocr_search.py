"""Scans and photos through `kb ingest` and `kb search`, with the embedded multilingual model: OCR'd text is
found across languages, marked as OCR'd in the store and in results, and read in the parsing processes."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

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
