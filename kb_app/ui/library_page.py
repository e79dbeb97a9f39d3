"""The Library page: every document with its counts, two charts, and deleting or re-indexing one."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from ingest.formats import part_name
from ingest.knowledge_base import KnowledgeBase
from ingest.lock import write_lock
from ingest.records import DocumentRecord
from ingest.settings import Settings
from kb_app.ui.common import describe, display_name, forget_searchers, ingest_here, knowledge_base


def library_page(current: Settings) -> None:
    st.header("Library")
    kb = knowledge_base(current)
    documents = kb.documents()
    if not documents:
        st.info(f"No documents in **{current.collection}** yet.")
        return
    st.dataframe(document_rows(documents), hide_index=True, width="stretch")

    left, right = st.columns(2)
    with left:
        st.caption("Documents by type")
        by_type = dict(Counter(d.file_type for d in documents.values()))
        st.bar_chart({"documents": by_type}, x_label="type", y_label="documents")
    with right:
        st.caption("Passage length (tokens)")
        chunks, _ = kb.all_chunks(with_text=False)
        lengths = [c.meta.tokens for c in chunks]
        if lengths:
            # Bars in the histogram's own order: sorted as text, "106-127" would come before "4-24".
            st.bar_chart(length_histogram(lengths), x="tokens", y="passages", sort=False,
                         x_label="tokens", y_label="passages")
    manage_document(current, kb, documents)


def document_rows(documents: dict[str, DocumentRecord]) -> list[dict[str, Any]]:
    """The library table, by name. "parts" counts what the file is read in ("12 pages", "3 slides", "2 sheets");
    a file read whole has an empty cell, not "None"."""
    return [
        {
            "name": display_name(d.source), "type": d.file_type, "language": d.language or "",
            "parts": parts_of(d), "passages": d.chunks, "tokens": d.tokens,
            "ingested at": d.ingested_at, "source": d.source,
        }
        for d in sorted(documents.values(), key=lambda d: display_name(d.source).lower())
    ]


def parts_of(record: DocumentRecord) -> str:
    """"12 pages", "1 slide", "3 sheets", "4 pages, 2 by OCR", "read by OCR"; empty for a file read whole."""
    if record.pages is None:
        if record.ocr_parts:
            return "read by OCR"
        return ""
    parts = f"{record.pages} {part_name(record.file_type)}{'s' if record.pages != 1 else ''}"
    return parts + (f", {record.ocr_parts} by OCR" if record.ocr_parts else "")


def length_histogram(lengths: list[int]) -> pd.DataFrame:
    """Passages per range of lengths, one row a range ("4-24"), shortest first."""
    counts, edges = np.histogram(lengths, bins=min(12, max(1, len(set(lengths)))))
    return pd.DataFrame({
        "tokens": [f"{int(edges[i])}-{int(edges[i + 1])}" for i in range(len(counts))],
        "passages": [int(c) for c in counts],
    })


def manage_document(current: Settings, kb: KnowledgeBase, documents: dict[str, DocumentRecord]) -> None:
    """Delete a document (and its uploaded copy), or read it again from disk."""
    st.subheader("Manage a document")
    source = st.selectbox("Document", sorted(documents), format_func=display_name, key="manage")
    delete, reindex = st.columns(2)
    if delete.button("Delete", key="delete"):
        with write_lock(current, wait=0):
            removed = kb.delete_document(source)
        path = Path(source)
        if path.parent.resolve() == current.upload_dir.resolve() and path.exists():
            path.unlink()  # an uploaded copy would come back with the next `kb ingest data/`
        forget_searchers()
        st.session_state["library_message"] = f"Deleted {display_name(source)} ({removed} passages)."
        st.rerun()
    if reindex.button("Re-index", key="reindex"):
        if not Path(source).exists():
            st.error(f"{source} no longer exists on disk: delete it instead.")
        else:
            with st.spinner(f"Re-indexing {display_name(source)}…"):
                report = ingest_here([source], current, force=True)
            outcome = report.outcomes[0]
            (st.success if outcome.status == "ingested" else st.error)(f"{display_name(source)}: {describe(outcome)}")
    message = st.session_state.pop("library_message", None)
    if message:
        st.success(message)
