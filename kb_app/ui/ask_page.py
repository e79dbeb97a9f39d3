"""The Ask page: a question answered by the chat model from the passages kb's search finds, each citation linked
to its passage's card.

Every step is `kb_app.answer.ask`, as `kb ask` runs it: the page only shows its events. The answer streams as it
arrives; once whole, it is shown again with each marker `[n]` a link to passage n's card and each invented one
flagged. Document text is HTML-escaped before any markup the page adds, so nothing inside a document (or an
answer that quotes one) renders or runs.
"""

from __future__ import annotations

import hashlib
import html
import re

import streamlit as st

from ingest.errors import KbError
from ingest.settings import Settings
from kb_app.answer import NOT_FOUND, Answer, Delta, Done, Retrieved, ask
from kb_app.chat import ChatModel
from kb_app.search import Searcher, SearchResult
from kb_app.ui.common import display_name, knowledge_base, searcher
from kb_app.ui.render import CARD_STYLE

ASK_STYLE = """
<style>
.kb-answer { white-space: pre-wrap; line-height: 1.6; font-size: 1.05rem; margin: 0.2rem 0 0.6rem 0; }
.kb-cite { font-weight: 600; text-decoration: none; color: #1f5fbf; }
.kb-invented { background: #fde2e1; color: #a1231b; border-radius: 3px; padding: 0 2px; font-weight: 600; }
.kb-passage { font-size: 0.95rem; }
.kb-n { font-weight: 700; color: #1f5fbf; }
.kb-neighbour { opacity: 0.75; }
.kb-neighbour.kb-this { opacity: 1; border-left: 3px solid #1f5fbf; padding-left: 0.5rem; }
</style>
"""
# A citation group as the answer shows it after kb's check: "[1]", "[2, 5]", "【3】", "[9?]".
_GROUP = re.compile(r"[\[【]\s*\d{1,4}\??(?:\s*[,，、;]\s*\d{1,4}\??)*\s*[\]】]")
_NUMBER = re.compile(r"(\d{1,4})(\?)?")
HOW_TO_SET = (
    "The Ask page needs a chat model: any OpenAI-compatible endpoint (SGLang, vLLM, llama.cpp, a hosted API). "
    "Set it in the environment or in `kb.toml`, then restart `kb ui`:\n\n"
    "- `KB_CHAT_ENDPOINT`: its base URL, e.g. `http://127.0.0.1:30000/v1`\n"
    "- `KB_CHAT_MODEL`: the model's name (optional: else the first model the endpoint serves)\n"
    "- `KB_CHAT_API_KEY`: its key, if it needs one"
)


@st.cache_resource(show_spinner=False)
def _chat(key: str, _settings: Settings) -> ChatModel:
    return ChatModel.from_settings(_settings)


def chat_model(current: Settings) -> ChatModel:
    """One chat client per endpoint, model and limits, kept across reruns and sessions (it holds a connection
    pool and the served model's name). The key holds a digest of the API key, never the key."""
    secret = current.chat_api_key.get_secret_value() if current.chat_api_key else ""
    digest = hashlib.sha256(secret.encode()).hexdigest()[:16]
    key = (f"{current.chat_endpoint}|{current.chat_model}|{current.answer_tokens}|{current.chat_timeout}|"
           f"{current.chat_retries}|{digest}")
    return _chat(key, current)


def answer_html(answer: Answer) -> str:
    """The answer escaped as HTML, with each valid marker a link to its passage's card and each invented one
    (already `[n?]` from kb's check) flagged."""

    def number(match: re.Match[str]) -> str:
        n = int(match.group(1))
        if match.group(2) or not 1 <= n <= len(answer.passages):
            return (f'<span class="kb-invented" data-n="{n}" title="Not one of the passages: the model made this '
                    f'number up">{n}?</span>')
        return f'<a class="kb-cite" data-n="{n}" href="#kb-passage-{n}">{n}</a>'

    def group(match: re.Match[str]) -> str:
        return _NUMBER.sub(number, match.group())

    question = html.escape(answer.question, quote=True)  # names the question, so a browser can tell answers apart
    return (f'{CARD_STYLE}{ASK_STYLE}<div class="kb-answer" data-question="{question}">'
            f"{_GROUP.sub(group, html.escape(answer.answer))}</div>")


def passage_card(n: int, result: SearchResult, finder: Searcher, *, cited: bool) -> None:
    """Passage n: number, title, source and place, the heading it matched, OCR; the whole chunk and its neighbours
    in an expander."""
    where = display_name(result.source) + (f", {result.location}" if result.location else "")
    with st.container(border=True):
        st.html(
            f'{CARD_STYLE}{ASK_STYLE}<div class="kb-passage" id="kb-passage-{n}" data-n="{n}" '
            f'data-cited="{str(cited).lower()}" data-source="{html.escape(result.source, quote=True)}">'
            f'<span class="kb-n">[{n}]</span> <b>{html.escape(result.title)}</b> &middot; '
            f'<span class="kb-source">{html.escape(where)}</span>'
            + (f' &middot; <span class="kb-heading">matched the heading “{html.escape(result.heading)}”</span>'
               if result.heading else "")
            + (' &middot; <span class="kb-ocr" title="The text was read by OCR from a scan or a photo: check '
               'names and figures against the page.">read by OCR</span>' if result.ocr else "")
            + (f' &middot; <span class="kb-score">{result.score:.3f}</span>')
            + "</div>"
        )
        preview = result.text if len(result.text) <= 300 else result.text[:300] + " …"
        st.html(f'{CARD_STYLE}<div class="kb-text">{html.escape(preview)}</div>')
        with st.expander("Full chunk and its neighbours"):
            st.caption(result.source)
            for text in finder.neighbours(result, 1) or [result.text]:
                this = " kb-this" if text == result.text else ""
                st.html(f'{CARD_STYLE}{ASK_STYLE}<div class="kb-text kb-neighbour{this}" data-n="{n}">'
                        f"{html.escape(text)}</div>")


def cost_line(answer: Answer) -> str:
    """Who answered and what the question cost: milliseconds per step and the tokens."""
    latency = answer.latency_ms
    times = [f"search {latency.get('search') or 0:.0f} ms"]
    if latency.get("first_token") is not None:
        times.append(f"first token {latency['first_token']:.0f} ms")
    if latency.get("total") is not None:
        times.append(f"total {latency['total']:.0f} ms")
    if not answer.found:
        return "The chat model was not asked · " + " · ".join(times)
    usage = answer.usage or {}
    tokens = (f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion tokens"
              if usage else "no token usage reported")
    retries = f" · {answer.retries} retries" if answer.retries else ""
    return f"Answered by **{answer.model or 'unknown'}** · " + " · ".join(times) + f" · {tokens}{retries}"


def show_passages(answer: Answer, finder: Searcher) -> None:
    """The cited passages' cards, in number order; then the others that were sent, collapsed."""
    cited = [c.n for c in answer.citations]
    if cited:
        st.subheader("Sources")
        for n in cited:
            passage_card(n, answer.passages[n - 1], finder, cited=True)
    others = [n for n in range(1, len(answer.passages) + 1) if n not in cited]
    if others:
        label = "Passages sent to the chat model" if not cited else "Other passages sent, not cited"
        with st.expander(f"{label} ({len(others)})", expanded=not cited):
            for n in others:
                passage_card(n, answer.passages[n - 1], finder, cited=False)


def show_answer(answer: Answer, finder: Searcher) -> None:
    """Everything under the answer's text: its faults, its cost, its passages."""
    if answer.invented:
        listed = ", ".join(f"[{n}]" for n in answer.invented)
        one = len(answer.invented) == 1
        st.warning(f"The answer cites {listed}, which {'is' if one else 'are'} not one of the "
                   f"{len(answer.passages)} passages: the model made {'it' if one else 'them'} up (marked “?” "
                   "in the answer).")
    if answer.error:
        st.error(f"The chat model stopped before the answer was complete: {answer.error.rstrip('.')}. "
                 "The passages found are below.")
        st.button("Ask again", key="ask_again")  # a click reruns the page, and a failed answer is not kept
    elif answer.finish_reason == "length":
        st.warning("The answer was cut at its token limit (KB_ANSWER_TOKENS).")
    st.caption(cost_line(answer))
    show_passages(answer, finder)


def not_found(answer: Answer, finder: Searcher) -> None:
    """No passage cleared the floor: say so, how close the best came, and show the closest passages."""
    st.warning(NOT_FOUND)
    if answer.best_score is not None and answer.floor is not None:
        st.caption(f"The best passage scored {answer.best_score:.3f}, under the floor of {answer.floor:.2f} for "
                   "this embedding model: the passages do not answer the question.")
    st.caption(cost_line(answer))
    if answer.passages:
        st.subheader("Closest passages")
        for n, result in enumerate(answer.passages, start=1):
            passage_card(n, result, finder, cited=False)


def stream_answer(question: str, finder: Searcher, current: Settings, k: int, ranking: str) -> Answer | None:
    """Ask, with the answer streaming into the page as it arrives; the whole answer, or None if the search
    failed (the error is shown)."""
    done: list[Answer] = []
    events = ask(question, finder, chat_model(current), current, k=k, mode=ranking.split(" ")[0],
                 rerank=ranking.endswith("rerank"))

    def texts():  # noqa: ANN202 - the answer's pieces, for st.write_stream
        for event in events:
            if isinstance(event, Retrieved):
                continue
            if isinstance(event, Delta):
                yield event.text
            elif isinstance(event, Done):
                done.append(event.answer)

    holder = st.empty()
    try:
        with holder.container():
            st.write_stream(texts())
    except KbError as exc:
        holder.empty()
        st.error(str(exc))
        return None
    holder.empty()
    return done[0] if done else None


def ask_page(current: Settings) -> None:
    """The question box, the ranking and the number of passages; then the answer, its sources and its cost."""
    st.header("Ask")
    if not current.chat_endpoint:
        st.info(HOW_TO_SET)
        return
    kb = knowledge_base(current)
    if kb.count() == 0:
        st.info(f"The collection **{current.collection}** has no documents yet. Add some on the **Upload** page, "
                "or run `kb ingest PATH` in a terminal.")
        return
    question = st.text_input("Ask a question in any language", key="ask_question",
                             placeholder="e.g. 太阳能电池板是怎样把阳光变成电的？")
    modes = ["dense", "hybrid"] + (["hybrid + rerank"] if current.rerank_endpoint else [])
    default = "hybrid + rerank" if current.rerank and current.rerank_endpoint else current.search_mode
    left, right = st.columns([3, 2])
    ranking = left.radio("Ranking", modes, index=modes.index(default), horizontal=True, key="ask_ranking",
                         help="dense: vectors alone · hybrid: vectors and BM25 keywords, fused by reciprocal rank")
    k = right.slider("Passages", 1, 20, 6, key="ask_k", help="How many passages the chat model is given, at most")
    if not question.strip():
        st.caption(f"{kb.count()} passages in **{current.collection}**. The answer cites them as [1], [2], …")
        return
    finder = searcher(current)
    # The last answer is kept for this session: a rerun (a widget, a page switch) shows it again, and only a new
    # question, ranking or k asks the chat model again; a failed answer is asked again.
    asked = (current.collection, question.strip(), ranking, k)
    last = st.session_state.get("ask_last")
    if last and last[0] == asked:
        answer = last[1]
    else:
        answer = stream_answer(question, finder, current, k, ranking)
        if answer is None:
            return
        st.session_state["ask_last"] = (asked, answer) if answer.complete else None
    if not answer.found:
        not_found(answer, finder)
        return
    st.html(answer_html(answer))
    show_answer(answer, finder)
