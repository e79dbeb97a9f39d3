"""Scanned PDF pages (ingest/formats/pdf.py with ingest/ocr.py): pages without a text layer read by OCR, in each
`--ocr` mode; mixed PDFs; blank scans; OCRmyPDF's real scans, including pages far bigger than the engine reads."""

from __future__ import annotations

import pytest

from ingest.errors import LoadError
from ingest.formats import ReadOptions, load
from tests.rigs.scans import (
    CHINESE_SCAN_LINES,
    ENGLISH_PAGE_LINES,
    cer,
    image_only_pdf,
    joined_pdf,
    load_in_fresh_python,
    ocrmypdf_images,
    page_image,
    page_text,
    scanned,
    text_pdf,
    word_recall,
)
from tests.rigs.thirdparty import ocrmypdf_resources

SHORT = ENGLISH_PAGE_LINES[6:10]  # the Fresnel lines: a strip of a page, one OCR call of about a second
TYPED = ["Keepers kept a daily log of weather,", "lamp oil used and ships that passed."]  # page 1's text layer


def _strip_pdf(path, lines=SHORT):  # noqa: ANN001, ANN202 - Paths
    """A one-page scan (no text layer) of `lines`, the page the size of the strip at 200 dpi."""
    return image_only_pdf([page_image(lines, size=(1100, 400), font_px=30, margin=50)], path)


def _mixed(tmp_path):  # noqa: ANN001, ANN202
    """Page 1 with a text layer, page 2 a scan without one."""
    return joined_pdf([text_pdf(["\n".join(TYPED)], tmp_path / "typed.pdf"), _strip_pdf(tmp_path / "scan.pdf")],
                      tmp_path / "mixed.pdf")


def test_ocr_never_on_a_scan_says_there_is_nothing_to_index(tmp_path):
    path = _strip_pdf(tmp_path / "scan.pdf")
    with pytest.raises(LoadError) as caught:
        load(path, options=ReadOptions(ocr="never"))
    assert caught.value.reason == "no text layer; OCR off (--ocr never, KB_OCR=never): nothing to index"


def test_ocr_never_keeps_the_text_pages_and_names_the_scanned_ones(tmp_path):
    loaded = load(_mixed(tmp_path), options=ReadOptions(ocr="never"))
    assert loaded.pages == 2 and [doc.page for doc in loaded.documents] == [1]
    assert loaded.documents[0].text == "\n".join(TYPED) and not loaded.documents[0].ocr
    assert loaded.warnings == ["page 2 has no text layer; OCR off (--ocr never, KB_OCR=never): not indexed"]


def test_blank_scans_have_no_text_to_index(tmp_path):
    from PIL import Image

    blank = Image.new("L", (500, 700), 240)
    path = image_only_pdf([blank, blank], tmp_path / "blank.pdf")
    with pytest.raises(LoadError) as caught:
        load(path)
    assert caught.value.reason == "no text layer, and OCR found no text: nothing to index"


def test_auto_reads_only_the_page_without_a_text_layer(tmp_path):
    loaded = load(_mixed(tmp_path))
    assert [(doc.page, doc.ocr) for doc in loaded.documents] == [(1, False), (2, True)]
    assert loaded.documents[0].text == "\n".join(TYPED)
    assert cer(page_text(SHORT), loaded.documents[1].text) < 0.03  # measured 0.0
    assert loaded.ocr_parts == 1 and loaded.warnings == []


@pytest.mark.slow
def test_always_reads_every_page_by_ocr(tmp_path):
    loaded = load(_mixed(tmp_path), options=ReadOptions(ocr="always"))
    assert [(doc.page, doc.ocr) for doc in loaded.documents] == [(1, True), (2, True)]
    assert cer("\n".join(TYPED), loaded.documents[0].text) < 0.03  # measured 0.0: Helvetica read off the render
    assert cer(page_text(SHORT), loaded.documents[1].text) < 0.03
    assert loaded.ocr_parts == 2


@pytest.mark.slow
def test_an_image_only_pdf_is_read_page_by_page(tmp_path):
    english = scanned(page_image(ENGLISH_PAGE_LINES))
    chinese = scanned(page_image(CHINESE_SCAN_LINES, font_px=40), seed=1)
    loaded = load(image_only_pdf([english, chinese], tmp_path / "scans.pdf"))
    assert loaded.file_type == "pdf" and loaded.pages == 2 and loaded.ocr_parts == 2
    assert [(doc.page, doc.ocr, doc.language) for doc in loaded.documents] == [(1, True, "en"), (2, True, "zh")]
    assert cer(page_text(ENGLISH_PAGE_LINES), loaded.documents[0].text) < 0.03  # measured 0.0085
    chinese_truth, chinese_read = page_text(CHINESE_SCAN_LINES), loaded.documents[1].text
    assert cer(chinese_truth, chinese_read) < 0.12  # measured 0.069: most full stops at line ends are lost
    assert cer(chinese_truth.replace("。", ""), chinese_read.replace("。", "")) < 0.03
    assert loaded.documents[0].text.count("\n\n") == 2  # rendered at the engine's size: paragraphs kept


@pytest.mark.slow
def test_a_scanners_stamp_is_not_a_text_layer(tmp_path):
    from pypdf import PdfReader, PdfWriter

    # A scan whose text layer is only a stamp ("Scan 0042", fewer than 16 characters) is still read by OCR.
    stamp = PdfReader(text_pdf(["Scan 0042"], tmp_path / "stamp.pdf")).pages[0]
    writer = PdfWriter(clone_from=_strip_pdf(tmp_path / "scan.pdf"))
    writer.pages[0].merge_page(stamp)
    with open(tmp_path / "stamped.pdf", "wb") as out:
        writer.write(out)
    [doc] = load(tmp_path / "stamped.pdf").documents
    assert doc.ocr and cer(page_text(SHORT), doc.text) < 0.03


@pytest.mark.slow
def test_a_scanners_header_over_a_page_sized_picture_is_not_a_text_layer(tmp_path):
    """A longer line of text ("Scanned by ... on ...", 16 to 200 characters) over a picture covering the
    page is read by OCR; the same line on a page without a picture is the page's text, and no OCR runs."""
    from pypdf import PdfReader, PdfWriter

    header = "Scanned by the front desk copier on 30 November 2026"
    stamp = PdfReader(text_pdf([header], tmp_path / "header.pdf")).pages[0]
    writer = PdfWriter(clone_from=_strip_pdf(tmp_path / "scan.pdf"))
    writer.pages[0].merge_page(stamp)
    with open(tmp_path / "headed.pdf", "wb") as out:
        writer.write(out)
    [doc] = load(tmp_path / "headed.pdf").documents
    assert doc.ocr and cer(page_text(SHORT), doc.text) < 0.05, doc.text
    [plain] = load(text_pdf([header], tmp_path / "plain.pdf")).documents
    assert not plain.ocr and plain.text == header



@pytest.mark.network
@pytest.mark.slow
def test_ocrmypdfs_linn_scan_is_read_as_its_true_text():
    truth = (ocrmypdf_images() / "linn.txt").read_text()
    loaded = load(ocrmypdf_resources() / "linn.pdf")
    [doc] = loaded.documents
    assert doc.page == 1 and doc.ocr and doc.language == "en"
    # The two columns come out in another order than linn.txt's, which costs most of the error rate.
    assert cer(truth, doc.text) < 0.2  # measured 0.148
    assert word_recall(truth, doc.text) > 0.92  # measured 0.959


@pytest.mark.network
@pytest.mark.slow
def test_ocrmypdfs_skewed_scans_are_read():
    truth = (ocrmypdf_images() / "linn.txt").read_text()
    for name in ("skew.pdf", "rotated_skew.pdf"):  # linn turned a few degrees; the second also /Rotate 90
        [doc] = load(ocrmypdf_resources() / name).documents
        assert word_recall(truth, doc.text) > 0.75, name  # measured 0.816 and 0.809


@pytest.mark.network
@pytest.mark.slow
def test_ocrmypdfs_page_in_four_rotations_gives_its_words_on_each():
    truth = (ocrmypdf_images() / "linn.txt").read_text()
    loaded = load(ocrmypdf_resources() / "cardinal.pdf")  # linn at 0, 90, 180 and 270 degrees
    assert [doc.page for doc in loaded.documents] == [1, 2, 3, 4] and loaded.ocr_parts == 4
    recalls = [word_recall(truth, doc.text) for doc in loaded.documents]
    # Measured 0.959, 0.978, 0.925, 0.768: RapidOCR turns each line upright, not the page, so the lines of the
    # turned pages come out of order, and at 270 degrees a quarter of the words are lost.
    assert min(recalls) > 0.7, recalls
    assert "LinnSequencer" in loaded.documents[0].text


@pytest.mark.network
@pytest.mark.slow
def test_ocrmypdfs_huckleberry_finn_page_is_read():
    [doc] = load(ocrmypdf_resources() / "c03-29.pdf").documents  # a book page photographed at 72 dpi
    squeezed = doc.text.replace(" ", "")  # RapidOCR drops many spaces between English words
    for words in ("old Miss Watson", "she took me in the closet and prayed", "fish-line", "snuff-box",
                  "spiritual gifts"):
        assert words.replace(" ", "") in squeezed, words
    assert doc.language == "en"


@pytest.mark.network
@pytest.mark.slow
def test_ocrmypdfs_huge_pages_are_read_in_bounded_memory():
    # enormous.pdf: a 9000 x 9000 RGB image (243 MB decoded) on a 30-inch page; hugemono.pdf: a 35000 x 35000
    # one-bit image (1.2 billion pixels) on a 117-inch page. Each is rendered at the size the engine reads.
    folder = ocrmypdf_resources()
    measured = load_in_fresh_python(folder / "enormous.pdf", folder / "hugemono.pdf")
    texts = [measured["files"][str(folder / name)]["text"] for name in ("enormous.pdf", "hugemono.pdf")]
    assert "9000x9000pixelsat300DPI" in texts[0].replace(" ", "")
    assert "This is a very big image with a tiny amount of text." in texts[1]
    assert measured["peak_mb"] < 1400  # measured 1020 MB (874 and 905 each alone); the engine takes 400-650
