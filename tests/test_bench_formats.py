"""bench.formats and bench.ocr run as a user runs them (`python -m ...`, quick mode): every format kb reads is
timed and gives parts, the hostile files are refused (the million-cell workbook read) within a memory bound,
and both OCR engines' error rates are sane on scans whose text is known. No timed assertions: the figures
themselves are for docs/benchmarks.md."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.formats import SUFFIXES

REPO = Path(__file__).parent.parent


def run_tool(*args: str) -> dict | list:
    done = subprocess.run([sys.executable, "-m", *args, "--json"], capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_every_format_is_timed_and_gives_parts():
    rows = run_tool("bench.formats", "--quick")
    timed_types = {row["format"].split(",")[0].split(" ")[0] for row in rows}
    assert set(SUFFIXES.values()) <= timed_types  # a format kb reads that the tool misses fails here
    names = {row["format"] for row in rows}
    assert {"pdf, text layer", "pdf, scanned (OCR)", "png (OCR)", "jpeg (OCR)", "tiff (OCR)"} <= names
    for row in rows:
        [run] = row["runs"]  # quick: one process only
        assert run["workers"] == 1 and run["failed"] == [], row
        assert row["files"] >= 1 and row["parts"] > 0 and run["parts"] > 0 and run["parts_per_s"] > 0, row
    ocr_pdf = next(row for row in rows if row["format"] == "pdf, scanned (OCR)")
    assert ocr_pdf["parts"] == 1  # the scanned page was read, not skipped as empty


@pytest.mark.slow
def test_bombs_are_refused_in_bounded_memory_but_a_million_cells_are_read():
    report = run_tool("bench.formats", "--bombs")
    base = report["import_only_rss_mb"]
    rows = {row["file"]: row for row in report["bombs"]}
    assert len(rows) == 9 and 0 < base < 1000
    million = rows.pop("xlsx, 1,000,000 cells")
    assert million["loaded"] and million["parts"] == 1
    assert million["peak_rss_mb"] - base < 200  # the tests of the sheet reader bound it so; measured ~30 MB
    expected = {"zip bomb": "archive bomb", "billion laughs": "entity", "20000": "decompression bomb",
                "10000": "past kb's bound"}
    for name, row in rows.items():
        assert not row["loaded"], row
        assert any(key in name and word in row["reason"] for key, word in expected.items()), row
        assert row["peak_rss_mb"] - base < 100, row  # refused before anything big was inflated or decoded


@pytest.mark.slow
@pytest.mark.network  # OCRmyPDF's linn.png and linn.txt, from its sdist on PyPI
def test_ocr_engines_error_rates_are_sane():
    report = run_tool("bench.ocr", "--quick")
    names = [scan["name"] for scan in report["scans"]]
    assert {"en", "zh", "mixed", "linn (OCRmyPDF)"} <= set(names)
    engines = {run["engine"]: run for run in report["engines"]}
    expected = {"RapidOCR (kb)"} | ({"Tesseract, page's language", "Tesseract, chi_sim+eng"}
                                    if shutil.which("tesseract") else set())
    assert expected <= set(engines), report["notes"]  # and "Tesseract (kb)" where kb has that engine
    if not shutil.which("tesseract"):
        assert "Tesseract skipped" in report["notes"][0]
    for run in engines.values():
        assert run["pages_per_s"] > 0 and run["peak_rss_mb"] > 0
        assert [page["page"] for page in run["pages"]] == names
        for page in run["pages"]:
            assert 0 <= page["cer_no_spaces"] <= 1 and 0 <= page["cer"] <= 1 and 0 <= page["words_found"] <= 1, page
    rapid = {page["page"]: page for page in engines["RapidOCR (kb)"]["pages"]}
    # A clean 200 dpi scan is read almost right, in both languages (measured: under 1%).
    assert rapid["en"]["cer_no_spaces"] < 0.05 and rapid["zh"]["cer_no_spaces"] < 0.05, rapid
    assert rapid["linn (OCRmyPDF)"]["words_found"] > 0.9, rapid["linn (OCRmyPDF)"]
