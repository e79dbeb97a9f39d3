"""The Ask page's logic, run headless with streamlit.testing.v1.AppTest (st.write_stream included) over a store
`kb ingest` built, the chat model a scripted fake server that speaks the real OpenAI API."""

from __future__ import annotations

import shutil

import pytest
from streamlit.testing.v1 import AppTest

from kb_app.answer import Answer
from kb_app.search import SearchResult
from kb_app.ui.ask_page import answer_html
from tests.conftest import DATA, ROOT
from tests.fakechat import FakeChatServer
from tests.test_cli import kb

APP = str(ROOT / "kb_app" / "app.py")
QUESTION = "太阳能电池板是怎样把阳光变成电的？"
HOSTILE = b"# Kites\n\n<script>alert(1)</script> <b>bold</b> text about kites flying high on the wind."


def result(n: int, source: str = "data/en/solar-power.md") -> SearchResult:
    return SearchResult(rank=n, score=0.5, text=f"passage {n}", source=source, page=None, chunk_id=f"c{n}",
                        title="Solar", file_type="md", start=None, end=None)


def test_markers_link_to_their_cards_and_invented_ones_are_flagged():
    answer = Answer("q", "<b>Sun</b> [1][2, 3?] and 【2】, not [4?] nor [x] or [12]", True, [result(1), result(2)])
    shown = answer_html(answer)
    assert "&lt;b&gt;Sun&lt;/b&gt;" in shown and "<b>Sun" not in shown
    assert shown.count('class="kb-cite"') == 3
    assert '[<a class="kb-cite" data-n="1" href="#kb-passage-1">1</a>]' in shown
    assert '【<a class="kb-cite" data-n="2" href="#kb-passage-2">2</a>】' in shown
    for n in (3, 4, 12):  # flagged by kb's check ("3?"), or beyond the passages however written
        assert f'<span class="kb-invented" data-n="{n}"' in shown
    assert "[x]" in shown


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray kb.toml
    for name in ("KB_CHAT_ENDPOINT", "KB_CHAT_MODEL", "KB_CHAT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KB_CHROMA_PATH", str(tmp_path / "chroma"))
    monkeypatch.setenv("KB_UPLOAD_DIR", str(tmp_path / "uploads"))
    return tmp_path


def ask_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.sidebar.radio(key="page").set_value("Ask").run()
    assert not at.exception, at.exception
    return at


def bodies(at: AppTest) -> list[str]:
    return [element.proto.body for element in at.get("html")]


def test_without_a_chat_endpoint_the_page_says_how_to_set_one(app_env):
    at = ask_page()
    assert len(at.info) == 1 and not at.error
    for name in ("KB_CHAT_ENDPOINT", "KB_CHAT_MODEL", "KB_CHAT_API_KEY"):
        assert name in at.info[0].value
    assert not at.text_input  # no question box to type into for nothing


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """A store `kb ingest` built from a copy of data/ and a file whose text is HTML."""
    work = tmp_path_factory.mktemp("ask-page")
    shutil.copytree(DATA, work / "data", ignore=shutil.ignore_patterns("chroma"))
    (work / "data" / "kites.md").write_bytes(HOSTILE)
    kb("ingest", "data/", cwd=work, env={"KB_CHROMA_PATH": str(work / "chroma")}, check=0)
    return work / "chroma"


@pytest.fixture
def chat(app_env, ingested, monkeypatch):
    with FakeChatServer(default="太阳能电池板利用光伏效应发电[1]。另见[9]。") as server:
        monkeypatch.setenv("KB_CHROMA_PATH", str(ingested))
        monkeypatch.setenv("KB_CHAT_ENDPOINT", server.url)
        yield server


@pytest.mark.slow
def test_an_answer_streams_links_its_sources_and_is_kept_across_reruns(chat):
    at = ask_page()
    at.text_input(key="ask_question").set_value(QUESTION).run()
    assert not at.exception and not at.error, (at.exception, at.error)
    answer = next(b for b in bodies(at) if 'class="kb-answer"' in b)
    assert '<a class="kb-cite" data-n="1" href="#kb-passage-1">1</a>' in answer
    assert '<span class="kb-invented" data-n="9"' in answer
    assert "The answer cites [9], which is not one of the 6 passages" in at.warning[0].value
    cards = [b for b in bodies(at) if 'class="kb-passage"' in b]
    assert len(cards) == 6 and 'data-n="1" data-cited="true"' in cards[0] and "solar-power.md" in cards[0]
    cost = next(c.value for c in at.caption if c.value.startswith("Answered by"))
    assert "**fake-chat**" in cost and "completion tokens" in cost
    assert chat.requests == 1 and "Answer in Chinese" in chat.last_prompt()

    at.run()  # a rerun (any widget) shows the kept answer: the chat model is not asked again
    assert chat.requests == 1 and any('class="kb-answer"' in b for b in bodies(at))

    # Text from a document, and an answer quoting it, arrive escaped.
    chat.script("<script>alert(1)</script> Kites fly high [1].")
    at.text_input(key="ask_question").set_value("What do kites do on the wind?").run()
    answer = next(b for b in bodies(at) if 'class="kb-answer"' in b)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Kites fly high [" in answer and "<script>" not in answer
    kites = next(b for b in bodies(at) if "flying high" in b and "kb-neighbour" not in b)
    assert "&lt;script&gt;" in kites and "<b>bold" not in kites

    at.text_input(key="ask_question").set_value("What is the capital of Peru?").run()
    assert at.warning[0].value == "Not found in the knowledge base." and chat.requests == 2
    assert any("under the floor of 0.32" in c.value for c in at.caption)


@pytest.mark.slow
def test_a_failed_answer_keeps_the_passages_and_is_asked_again(chat, monkeypatch):
    monkeypatch.setenv("KB_CHAT_RETRIES", "0")  # one 503 is the server overloaded, at once
    chat.script("503")
    at = ask_page()
    at.text_input(key="ask_question").set_value(QUESTION).run()
    assert not at.exception
    assert "stopped before the answer was complete" in at.error[0].value and "overloaded" in at.error[0].value
    assert len([b for b in bodies(at) if 'class="kb-passage"' in b]) == 6
    at.button(key="ask_again").click().run()
    assert not at.error and chat.requests == 2
    assert any("太阳能电池板利用光伏效应发电" in b for b in bodies(at) if 'class="kb-answer"' in b)
