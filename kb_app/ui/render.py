"""Document text on a page: always HTML-escaped before the only markup kb adds (highlights), so nothing
inside a document renders or runs."""

from __future__ import annotations

import html
import re

import streamlit as st

from ingest.language import CJK_RUN, character_pairs

CARD_STYLE = """
<style>
.kb-text { white-space: pre-wrap; font-family: inherit; line-height: 1.5; margin: 0.2rem 0; }
.kb-text mark { background: #ffe58a; padding: 0 1px; border-radius: 2px; }
.kb-head { font-size: 0.95rem; margin-bottom: 0.2rem; }
.kb-score { font-family: monospace; color: #555; }
.kb-source { color: #2e6b30; }
.kb-ocr { background: #e8eefc; color: #1f3c88; border-radius: 4px; padding: 0 4px; font-size: 0.8rem; }
.kb-stages { font-family: monospace; font-size: 0.8rem; color: #666; margin-bottom: 0.2rem; }
</style>
"""


def query_terms(query: str) -> list[str]:
    """Words of two or more letters; for Chinese, Japanese and Korean runs, every pair of characters (as the
    lexical index cuts them)."""
    terms: set[str] = set()
    for word in re.findall(r"\w+", query):
        for run in CJK_RUN.findall(word):
            terms.update(character_pairs(run))
        terms.update(w for w in CJK_RUN.sub(" ", word).split() if len(w) >= 2)
    return sorted(terms, key=len, reverse=True)


def highlight(text: str, query: str) -> str:
    """`text` escaped as HTML, with the query's terms wrapped in <mark> where they occur."""
    terms = query_terms(query)
    if not terms:
        return html.escape(text)
    pattern = re.compile("|".join(re.escape(t) for t in terms), re.IGNORECASE)
    out, position = [], 0
    for match in pattern.finditer(text):
        out.append(html.escape(text[position : match.start()]))
        out.append(f"<mark>{html.escape(match.group(0))}</mark>")
        position = match.end()
    out.append(html.escape(text[position:]))
    return "".join(out)


def show_text(text: str, query: str = "") -> None:
    st.html(f'{CARD_STYLE}<div class="kb-text">{highlight(text, query)}</div>')
