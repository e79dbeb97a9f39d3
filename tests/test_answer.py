"""kb_app.answer: the floor, the context budget, the prompt, citation checking and think stripping, on passages
built here (the search is a plain function over them), so each rule is checked exactly. The chat model and the
store in real use are in test_chat.py, test_cli_ask.py and test_chat_vllm.py."""

from __future__ import annotations

import pytest

from ingest.embeddings import LOCAL_MODEL
from ingest.errors import ContextTooLongError
from ingest.settings import Settings
from kb_app.answer import (
    FLOORS,
    NOT_FOUND,
    TEMPLATE_TOKENS,
    CitationChecker,
    Delta,
    Done,
    chat_tokens,
    language_name,
    retrieve,
    stream,
)
from kb_app.chat import ThinkFilter
from kb_app.search import SearchResponse, SearchResult

SENTENCE = "Photovoltaic cells turn sunlight into direct current, and an inverter makes it alternating current. "


def result(n: int, score: float, text: str = SENTENCE * 8) -> SearchResult:
    return SearchResult(rank=n, score=score, text=text, source=f"/docs/file{n}.md", page=None,
                        chunk_id=f"c{n}", title=f"Title {n}", file_type="md", start=0, end=len(text),
                        dense_rank=n, dense_score=score)


def searching(results: list[SearchResult]):
    def search(query: str, k: int) -> SearchResponse:
        return SearchResponse(query, "knowledge", results[:k], 0.01)

    return search


def feed_in_pieces(filter_, text: str, size: int) -> str:
    out = [filter_.feed(text[i : i + size]) for i in range(0, len(text), size)]
    return "".join(out) + filter_.flush()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_think_blocks_are_stripped_however_the_stream_splits_them(size):
    text = "<think>\nThe user asks [3] about panels.\n</think>\n\nPanels make current [1]. A <thing> stays."
    think = ThinkFilter()
    assert feed_in_pieces(think, text, size) == "Panels make current [1]. A <thing> stays."
    assert think.stripped


def test_an_unclosed_think_block_yields_nothing_and_plain_text_passes_untouched():
    assert feed_in_pieces(ThinkFilter(), "<think>still thinking when the tokens ran out", 4) == ""
    plain = ThinkFilter()
    assert feed_in_pieces(plain, "No thinking here, 3 < 4 and <b>.", 2) == "No thinking here, 3 < 4 and <b>."
    assert not plain.stripped


@pytest.mark.parametrize("size", [1, 2, 3, 4, 9, 100])
def test_citations_are_checked_however_the_stream_splits_them(size):
    checker = CitationChecker(passages=6)
    text = "Panels [2][5] work [1, 6]; inverters [9] and 【3】 too [12, 2]. A list [a] and [ 7 ] stay."
    shown = feed_in_pieces(checker, text, size)
    assert shown == "Panels [2][5] work [1, 6]; inverters [9?] and 【3】 too [12?, 2]. A list [a] and [ 7 ] stay."
    assert checker.cited == [2, 5, 1, 6, 3]
    assert checker.invented == [9, 12]


def test_an_unclosed_bracket_is_not_held_forever():
    checker = CitationChecker(passages=3)
    held = checker.feed("see [1")
    assert held == "see "
    assert checker.feed(", 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 and more") .startswith("[1, 2")
    assert checker.flush() == ""


def test_the_floor_refuses_off_topic_questions_and_nothing_is_sent():
    settings = Settings()
    floor = FLOORS[LOCAL_MODEL]
    off = retrieve("What is the capital of Peru?", searching([result(1, floor - 0.01), result(2, 0.1)]),
                   LOCAL_MODEL, settings)
    assert not off.found and off.messages == [] and off.best_score == pytest.approx(floor - 0.01)
    events = list(stream(off, chat=None))  # no chat model at all: it must not be needed
    assert isinstance(events[0], Delta) and events[0].text == NOT_FOUND
    done = events[-1]
    assert isinstance(done, Done) and not done.answer.found and done.answer.model is None
    assert [p.chunk_id for p in done.answer.passages] == ["c1", "c2"]  # the closest passages are still given

    on = retrieve("How do panels work?", searching([result(1, floor + 0.01)]), LOCAL_MODEL, settings)
    assert on.found and on.messages
    unknown_model = retrieve("How?", searching([result(1, 0.05)]), "some/other-model", settings)
    assert unknown_model.found  # no measured floor for that model: no refusal
    assert not retrieve("How?", searching([result(1, 0.5)]), "some/other-model",
                        Settings(answer_floor=0.6)).found  # KB_ANSWER_FLOOR overrides


def test_the_budget_drops_whole_passages_lowest_first():
    passages = [result(n, 0.9 - n / 100) for n in range(1, 11)]
    one = chat_tokens(SENTENCE * 8, "Qwen3-8B")
    settings = Settings(context_tokens=1024 + TEMPLATE_TOKENS + 200 + 3 * (one + 30), answer_tokens=1024)
    kept = retrieve("How do panels work?", searching(passages), LOCAL_MODEL, settings, k=10, chat_model="Qwen3-8B")
    assert 1 <= len(kept.passages) < 10 and kept.dropped == 10 - len(kept.passages)
    assert [p.chunk_id for p in kept.passages] == [f"c{n}" for n in range(1, len(kept.passages) + 1)]
    prompt = kept.messages[1]["content"]
    assert prompt.count(SENTENCE.strip()) == 8 * len(kept.passages)  # every kept passage whole, none cut
    assert f"[{len(kept.passages)}] Title" in prompt and f"[{len(kept.passages) + 1}]" not in prompt
    assert kept.prompt_tokens + 1024 <= settings.context_tokens
    more = retrieve("How do panels work?", searching(passages), LOCAL_MODEL,
                    settings.model_copy(update={"context_tokens": 16384}), k=10, chat_model="Qwen3-8B")
    assert len(more.passages) == 10 and more.dropped == 0


def test_a_budget_with_no_room_says_what_to_change():
    with pytest.raises(ContextTooLongError, match="context-tokens 1100"):
        retrieve("How?", searching([result(1, 0.9)]), LOCAL_MODEL, Settings(context_tokens=1100, answer_tokens=1024))


def test_other_models_are_counted_with_a_margin():
    text = "An inverter turns direct current into alternating current. 逆变器把直流电变成交流电。" * 5
    qwen = chat_tokens(text, "Qwen/Qwen3-8B")
    assert chat_tokens(text, "gpt-4o-mini") > qwen > 40


def test_the_prompt_asks_for_the_questions_language_and_numbered_citations():
    retrieval = retrieve("太阳能电池板是怎样把阳光变成电的？", searching([result(1, 0.6), result(2, 0.5)]), LOCAL_MODEL,
                         Settings())
    system, user = (m["content"] for m in retrieval.messages)
    assert retrieval.language == "zh" and "Answer in Chinese" in system
    assert "[1]" in system and "only the numbered passages" in system and "do not answer" in system
    assert user.startswith("Passages:\n\n[1] Title 1 (file1.md)\n") and "\n\n[2] Title 2 (file2.md)\n" in user
    assert user.endswith("Question: 太阳能电池板是怎样把阳光变成电的？")
    assert language_name("de") == "German" and language_name(None) is None
