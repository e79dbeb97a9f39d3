"""The Ask page end to end in a real browser: Debian's Chromium driven by Playwright against `streamlit run`, over
a store `kb ingest` built from a copy of data/, the chat model a scripted fake server in this process (it speaks
the real OpenAI API; a real model cannot be told which passages to cite).

A Chinese question over English documents: the answer streams, its [1] links to the card of data/en/solar-power.md,
the invented [9] is flagged, the model and the tokens are named, a card opens on its neighbours, and the chat
server was told to answer in Chinese from the passages. An off-topic question is "not found" without a call to
the chat server. A stream cut mid-answer shows the error, keeps what came and the passages, and can be asked again.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import DATA, ROOT
from tests.fakechat import FakeChatServer, words
from tests.rigs.browser import chromium_page, streamlit_ui
from tests.test_cli import kb

pytestmark = pytest.mark.browser

SHOTS = ROOT / "artifacts" / "screenshots"
QUESTION = "太阳能电池板是怎样把阳光变成电的？"
ANSWER = "太阳能电池板利用光伏效应把阳光变成直流电[1]，逆变器再把它变成交流电[2]。另见[9]。"
SHOWN = "太阳能电池板利用光伏效应把阳光变成直流电[1]，逆变器再把它变成交流电[2]。另见[9?]。"


@pytest.fixture(scope="module")
def chat():
    with FakeChatServer(default=ANSWER) as server:
        server.delay = 0.1  # between pieces of three characters: the answer takes seconds to arrive
        yield server


@pytest.fixture(scope="module")
def ui(tmp_path_factory, chat):
    work = tmp_path_factory.mktemp("ask-ui")
    shutil.copytree(DATA, work / "data", ignore=shutil.ignore_patterns("chroma"))
    env = {name: value for name, value in os.environ.items() if not name.startswith("KB_CHAT_")}
    env |= {"KB_CHROMA_PATH": str(work / "chroma"), "KB_UPLOAD_DIR": str(work / "uploads"),
            "KB_CHAT_ENDPOINT": chat.url}
    result = kb("ingest", "data/", cwd=work, env=env, check=0)
    assert "8 ingested" in result.stderr and "0 failed" in result.stderr
    with streamlit_ui(work, env) as url:
        yield url


@pytest.fixture(scope="module")
def page(ui):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(ui) as page:
        page.get_by_test_id("stSidebar").get_by_text("Ask", exact=True).click()
        page.get_by_role("heading", name="Ask", exact=True).wait_for()
        yield page


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


def ask(page, question: str) -> None:
    box = page.get_by_label("Ask a question in any language")
    box.fill(question)
    box.press("Enter")


def answered(page, question: str) -> str:
    """The whole answer's text, once the page shows it for `question` and the run is over."""
    answer = page.locator(f'.kb-answer[data-question="{question}"]')
    answer.wait_for(timeout=180_000)
    wait_idle(page)
    return answer.inner_text()


def test_a_chinese_question_streams_an_answer_citing_english_passages(page, chat):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    # Streaming: part of the answer is on the page before the whole answer (with its links) replaces it. The
    # server holds the stream after four pieces until the page has shown them.
    chat.hold_after = 4
    ask(page, QUESTION)
    try:
        page.wait_for_function(
            """() => [...document.querySelectorAll('[data-testid="stMarkdown"]')]
                        .some(m => m.innerText.includes('太阳能电池板')) && !document.querySelector('.kb-answer')""",
            timeout=180_000,
        )
    except PlaywrightTimeout:
        pytest.fail(f"no partial answer on the page after {chat.requests} chat request(s); the page shows:\n"
                    + page.inner_text("body")[:3000])
    finally:
        page.screenshot(path=str(SHOTS / "ask-streaming.png"), full_page=True)
        chat.release.set()
        chat.hold_after = None
    assert answered(page, QUESTION) == SHOWN
    page.screenshot(path=str(SHOTS / "ask.png"), full_page=True)

    # The chat server got the English passages, numbered, and the instruction to answer in Chinese.
    assert chat.requests == 1
    body = chat.bodies[-1]
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    assert "Answer in Chinese" in system
    assert user.startswith("Passages:\n\n[1] ") and "solar-power.md" in user and "[6] " in user
    assert user.endswith(f"Question: {QUESTION}")

    # Markers: [1] and [2] link to their cards, [9] is flagged and listed.
    links = page.locator(".kb-answer .kb-cite")
    assert [links.nth(i).get_attribute("data-n") for i in range(links.count())] == ["1", "2"]
    assert links.first.get_attribute("href") == "#kb-passage-1"
    assert page.locator('.kb-answer .kb-invented[data-n="9"]').inner_text() == "9?"
    assert page.get_by_text("The answer cites [9], which is not one of the 6 passages").count() == 1

    # The cited cards come first, in number order; the four others were sent but are collapsed.
    cards = page.locator(".kb-passage")
    assert [cards.nth(i).get_attribute("data-n") for i in range(cards.count())] == [str(n) for n in range(1, 7)]
    first = page.locator('.kb-passage[data-n="1"]')
    assert first.get_attribute("data-cited") == "true" and first.get_attribute("data-source").endswith(
        "data/en/solar-power.md")
    assert first.locator(".kb-source").inner_text() == "solar-power.md"
    assert page.locator('.kb-passage[data-cited="true"]').count() == 2
    assert not page.locator('.kb-passage[data-n="3"]').is_visible()

    # Which model answered, and what it cost: the token counts are the server's usage for this request.
    prompt = sum(words(m["content"]) for m in body["messages"])
    cost = page.get_by_text("Answered by fake-chat")
    assert f"{prompt} prompt + {words(ANSWER)} completion tokens" in cost.inner_text()
    assert "search " in cost.inner_text() and "first token " in cost.inner_text()

    # The link takes the reader to the card; the card opens on the whole chunk and its neighbours.
    card = page.locator('.kb-passage[data-n="2"]')
    top = card.evaluate("e => e.getBoundingClientRect().top")
    page.locator('.kb-answer .kb-cite[data-n="2"]').click()
    page.wait_for_function("() => location.hash === '#kb-passage-2'")
    expect(card).to_be_in_viewport()
    assert card.evaluate("e => e.getBoundingClientRect().top") < top  # the page scrolled towards the card
    expander = page.get_by_test_id("stExpander").filter(has=page.locator('.kb-neighbour[data-n="1"]'))
    neighbours = expander.locator(".kb-neighbour")
    assert not neighbours.first.is_visible()
    expander.get_by_text("Full chunk and its neighbours").click()
    neighbours.first.wait_for(state="visible")
    assert neighbours.count() >= 2
    assert all("solar" in text.lower() or "photovoltaic" in text.lower() for text in neighbours.all_inner_texts())
    page.screenshot(path=str(SHOTS / "ask-neighbours.png"), full_page=True)
    assert chat.requests == 1  # opening a card asked nothing


def test_an_off_topic_question_is_not_found_without_the_chat_model(page, chat):
    before = chat.requests
    ask(page, "What is the capital of Peru?")
    page.get_by_text("Not found in the knowledge base.").wait_for(timeout=180_000)
    wait_idle(page)
    assert page.get_by_text("under the floor of 0.32").count() == 1
    assert page.get_by_text("The chat model was not asked").count() == 1
    assert page.locator(".kb-passage").count() == 6 and page.locator(".kb-answer").count() == 0
    page.screenshot(path=str(SHOTS / "ask-not-found.png"), full_page=True)
    assert chat.requests == before


def test_a_stream_cut_mid_answer_shows_the_error_and_keeps_the_passages(page, chat):
    before = chat.requests
    chat.script("cut:太阳能电池板利用光伏效应[1]")
    ask(page, QUESTION)
    assert answered(page, QUESTION) == "太阳能电池板利用光伏效应[1]"
    assert chat.requests == before + 1
    error = page.get_by_test_id("stAlertContentError")
    assert "stopped before the answer was complete" in error.inner_text()
    assert page.locator('.kb-passage[data-cited="true"]').count() == 1  # [1] came before the cut
    assert page.locator(".kb-passage").count() == 6
    page.screenshot(path=str(SHOTS / "ask-error.png"), full_page=True)

    # Asked again, the server answers whole: the error is gone.
    page.get_by_role("button", name="Ask again").click()
    page.wait_for_function(
        "(shown) => { const a = document.querySelector('.kb-answer'); return a && a.innerText === shown; }",
        arg=SHOWN, timeout=180_000)
    wait_idle(page)
    assert chat.requests == before + 2
    assert page.get_by_test_id("stAlertContentError").count() == 0
