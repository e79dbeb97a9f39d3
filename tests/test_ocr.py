"""The OCR engine (ingest.ocr): RapidOCR's lines laid out as paragraphs, and the real engine reading rendered pages
of known text, English and Chinese."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ingest.errors import OcrUnavailable
from ingest.ocr import Ocr, TesseractOcr, _tidy, engine, lines_to_text
from tests.rigs.scans import CHINESE_SCAN_LINES, ENGLISH_PAGE_LINES, cer, page_image, page_text, scanned


def _line(top: float, height: float, text: str, left: float = 100, right: float = 900, tilt: float = 0) -> list:
    """One of RapidOCR's found lines: [box (four corners clockwise from top left), text, score]; `tilt` lowers
    the right end by that many pixels, as on a page scanned a little turned."""
    box = [[left, top], [right, top + tilt], [right, top + height + tilt], [left, top + height]]
    return [box, text, 0.95]


def test_lines_follow_each_other_and_a_tall_gap_starts_a_paragraph():
    found = [_line(100, 30, "first line"), _line(145, 30, "second line"), _line(190, 30, "third line"),
             _line(280, 30, "new paragraph"), _line(325, 30, "its second line")]
    assert lines_to_text(found) == "first line\nsecond line\nthird line\n\nnew paragraph\nits second line"


def test_no_lines_and_blank_lines_give_no_text():
    assert lines_to_text([]) == ""
    assert lines_to_text([_line(100, 30, "  "), _line(145, 30, "")]) == ""
    assert lines_to_text([_line(100, 30, " one "), _line(145, 30, "\t"), _line(145, 30, "two ")]) == "one\ntwo"


def test_paragraph_gaps_are_measured_against_the_usual_line_height():
    # A tall heading does not make the body's line gaps look small, nor the body's gaps look tall.
    found = [_line(100, 80, "Heading"), _line(230, 30, "body one"), _line(275, 30, "body two"),
             _line(320, 30, "body three")]
    assert lines_to_text(found) == "Heading\n\nbody one\nbody two\nbody three"
    # Small print: gaps of 20 pixels between 12-pixel lines are paragraphs.
    small = [_line(100, 12, "a"), _line(118, 12, "b"), _line(150, 12, "c")]
    assert lines_to_text(small) == "a\nb\n\nc"


def test_boxes_side_by_side_on_one_line_are_not_paragraphs():
    # Two columns (or a line RapidOCR split in two) overlap vertically: the gap is negative.
    found = [_line(100, 30, "left column", right=400), _line(102, 30, "right column", left=500),
             _line(145, 30, "next line")]
    assert lines_to_text(found) == "left column\nright column\nnext line"


def test_paragraphs_survive_a_turned_scan():
    # 2 degrees across an 800-pixel line lowers its right end by 28 pixels.
    found = [_line(100, 30, "one", tilt=28), _line(145, 30, "two", tilt=28), _line(235, 30, "three", tilt=28)]
    assert lines_to_text(found) == "one\ntwo\n\nthree"


def test_the_engine_is_built_once_per_process():
    first = engine(1)
    assert isinstance(first, Ocr)
    assert engine(1) is first


def test_the_engine_is_the_same_however_its_threads_are_given():
    assert engine() is engine(1) is engine(threads=1)


def test_the_engine_reads_an_english_page():
    lines = ENGLISH_PAGE_LINES[:5]
    text = engine(1).read(page_image(lines, size=(1100, 450), font_px=30, margin=50))
    assert cer(page_text(lines), text) < 0.03  # measured 0.0
    assert text.splitlines()[0].replace(" ", "").startswith("Beforeelectriclight")


@pytest.mark.slow
def test_the_engine_reads_a_scanned_english_page():
    truth = page_text(ENGLISH_PAGE_LINES)
    text = engine(1).read(scanned(page_image(ENGLISH_PAGE_LINES)).resize((1414, 2000)))
    # RapidOCR leaves out many spaces between English words: compared without whitespace, then with.
    assert cer(truth, text) < 0.03  # measured 0.002
    assert cer(truth, text, spaces=True) < 0.05  # measured 0.010
    assert text.count("\n\n") == 2  # the page's three paragraphs


@pytest.mark.slow
def test_the_engine_reads_a_scanned_chinese_page():
    truth = page_text(CHINESE_SCAN_LINES)
    text = engine(1).read(scanned(page_image(CHINESE_SCAN_LINES, font_px=40), seed=1).resize((1414, 2000)))
    # RapidOCR drops most full stops at the ends of Chinese lines at this size: 10 of the 173 characters.
    assert cer(truth, text) < 0.1  # measured 0.064
    assert cer(truth.replace("。", ""), text.replace("。", "")) < 0.02  # measured 0.0
    assert "蔡伦" in text and "渔网" in text and "105" in text


def test_the_engine_reads_a_grey_picture_as_given():
    # read() takes any mode Pillow has; a grey page is what image loaders hand it most.
    lines = ["Fog signal", "Fresnel lens"]
    grey = page_image(lines, size=(600, 220), font_px=40, margin=40)
    assert engine(1).read(grey).replace(" ", "") == "Fogsignal\nFresnellens"


def test_two_columns_are_read_one_after_the_other():
    """Lines of two columns, level with each other, after a full-width title: the left column whole, then the
    right (sorting by height would interleave them), each column's start a paragraph."""
    found = [_line(50, 30, "Title across the page", left=100, right=1500)]
    for row in range(4):
        found.append(_line(120 + 40 * row, 30, f"left column, line {row}", left=100, right=700))
        found.append(_line(122 + 40 * row, 30, f"right column, line {row}", left=800, right=1500))
    text = lines_to_text(found)
    assert text == ("Title across the page\n\n" + "\n".join(f"left column, line {row}" for row in range(4))
                    + "\n\n" + "\n".join(f"right column, line {row}" for row in range(4)))


def test_a_table_row_split_in_boxes_is_read_left_to_right():
    found = [_line(100, 30, "Port", left=100, right=300), _line(101, 30, "High tide", left=600, right=900),
             _line(145, 30, "Brest", left=100, right=300), _line(144, 30, "06:40", left=600, right=800)]
    assert lines_to_text(found).split("\n") == ["Port", "High tide", "Brest", "06:40"]


@pytest.mark.slow
def test_tesseract_reads_english_and_chinese_pages():
    """kb's other engine: Debian's tesseract with the eng and chi_sim packs (.ci/run installs them). Its
    Chinese comes out without the spaces its model puts between Han characters."""
    tesseract = engine(1, "tesseract", "eng+chi_sim")
    assert isinstance(tesseract, TesseractOcr) and engine(1, "tesseract", "eng+chi_sim") is tesseract
    # Without the speckle of `scanned`'s default, which Tesseract reads as letters (docs/benchmarks.md).
    english = tesseract.read(scanned(page_image(ENGLISH_PAGE_LINES), noise=0.0))
    assert cer(page_text(ENGLISH_PAGE_LINES), english, spaces=True) < 0.05, english
    chinese = tesseract.read(scanned(page_image(CHINESE_SCAN_LINES), noise=0.0))
    assert cer(page_text(CHINESE_SCAN_LINES), chinese) < 0.15, chinese
    assert not re.search(r"[\u4e00-\u9fff] [\u4e00-\u9fff]", chinese)


def test_tesseract_without_a_language_pack_or_the_program_says_what_to_install(tmp_path):
    with pytest.raises(OcrUnavailable, match="no language pack for klingon"):
        TesseractOcr("eng+klingon")
    missing = subprocess.run(
        [sys.executable, "-c", "from ingest.ocr import TesseractOcr\nTesseractOcr()"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": str(tmp_path)},
    )
    assert "tesseract program is not installed (apt-get install tesseract-ocr" in missing.stderr


def test_tesseracts_text_is_tidied():
    assert _tidy("知 识 库 读 取 文 件 。\n\n\n\nThe lens  rotates.\f") == "知识库读取文件。\n\nThe lens  rotates."
