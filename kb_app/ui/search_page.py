"""The Search page: a question in any language, filters, and result cards with the passage's neighbours."""

from __future__ import annotations

import html
import time
from typing import Any

import streamlit as st

from ingest.errors import KbError
from ingest.settings import Settings
from kb_app.search import Searcher, SearchResult
from kb_app.ui.common import display_name, knowledge_base, searcher
from kb_app.ui.render import CARD_STYLE, show_text


def where_filter(types: list[str], sources: list[str], languages: list[str]) -> dict[str, Any] | None:
    """The Chroma `where` clause for the chosen filters (any of the values within a field, every field)."""
    clauses = [
        {field: {"$in": values}}
        for field, values in (("file_type", types), ("source", sources), ("language", languages))
        if values
    ]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def show_result(result: SearchResult, query: str, finder: Searcher) -> None:
    """One result card: rank, score, title and source (and each stage's rank when there are several), a
    preview with the query's terms marked, and the whole passage with its neighbours in an expander.
    The head names its query (data-query) so a browser can tell a card from a previous search's."""
    where = display_name(result.source) + (f", {result.location}" if result.location else "")
    with st.container(border=True):
        st.html(
            f'{CARD_STYLE}<div class="kb-head" data-query="{html.escape(query, quote=True)}">'
            f'<b>{result.rank}.</b> <span class="kb-score">{result.score:.3f}</span>'
            f" &nbsp; <b>{html.escape(result.title)}</b> &middot; "
            f'<span class="kb-source">{html.escape(where)}</span>'
            + (f' &middot; <span class="kb-heading">matched the heading “{html.escape(result.heading)}”</span>'
               if result.heading else "")
            + (' &middot; <span class="kb-ocr" title="The text was read by OCR from a scan or a photo: check '
               'names and figures against the page.">read by OCR</span>' if result.ocr else "")
            + "</div>"
            + (f'<div class="kb-stages">{html.escape(result.stages())}</div>' if result.fused_score is not None
               or result.rerank_score is not None else "")
        )
        preview = result.text if len(result.text) <= 600 else result.text[:600] + " …"
        show_text(preview, query)
        if result.ocr:
            st.caption("Read by OCR from a scan or a photo: check names and figures against the page.")
        with st.expander("Full chunk and its neighbours"):
            st.caption(html.escape(result.source))
            for text in finder.neighbours(result) or [result.text]:
                show_text(text, query)
                st.divider()


def search_page(current: Settings) -> None:
    """The question box, the ranking switch and the filters; then the results, or why there are none."""
    st.header("Search")
    kb = knowledge_base(current)
    documents = kb.documents()
    if not documents or kb.count() == 0:
        st.info(
            f"The collection **{current.collection}** has no documents yet. Add some on the **Upload** page, "
            "or run `kb ingest PATH` in a terminal."
        )
        return
    query = st.text_input("Ask a question in any language", key="query", placeholder="e.g. 太阳能电池板是怎样发电的？")
    modes = ["dense", "hybrid"] + (["hybrid + rerank"] if current.rerank_endpoint else [])
    default = "hybrid + rerank" if current.rerank and current.rerank_endpoint else current.search_mode
    ranking = st.radio("Ranking", modes, index=modes.index(default), horizontal=True, key="ranking",
                       help="dense: vectors alone · hybrid: vectors and BM25 keywords, fused by reciprocal rank"
                            + (" · hybrid + rerank: the best of those reordered by the reranker"
                               if current.rerank_endpoint else " · reranking needs KB_RERANK_ENDPOINT"))
    with st.expander("Filters", expanded=False):
        k = st.slider("Results", 1, 20, 5, key="top_k")
        types = st.multiselect("File type", sorted({d.file_type for d in documents.values()}), key="types")
        sources = st.multiselect(
            "Document", sorted(documents), format_func=display_name, key="sources"
        )
        languages = st.multiselect(
            "Language", sorted({d.language for d in documents.values() if d.language}), key="languages"
        )
    if not query.strip():
        st.caption(f"{len(documents)} documents, {kb.count()} passages in **{current.collection}**.")
        return
    finder = searcher(current)
    started = time.perf_counter()
    try:
        response = finder.search(query, k, where_filter(types, sources, languages),
                                 mode=ranking.split(" ")[0], rerank=ranking.endswith("rerank"))
    except KbError as exc:
        st.error(str(exc))
        return
    elapsed = (time.perf_counter() - started) * 1000
    if not response.results:
        st.warning("No results: no passage matches these filters. Clear some filters and search again.")
        return
    st.caption(f"{len(response.results)} results in {elapsed:.0f} ms ({response.mode}: {response.timing_summary()})")
    for result in response.results:
        show_result(result, query, finder)
