"""What the UI's pages share: the settings, the cached searcher, the store, and ingesting as the UI does."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import streamlit as st

from ingest.knowledge_base import KnowledgeBase
from ingest.pipeline import ingest
from ingest.query_cache import QueryCache
from ingest.report import FileOutcome, IngestReport, Progress
from ingest.settings import Settings, load_settings
from kb_app.search import Searcher


def settings() -> Settings:
    """The process's settings, with the collection chosen on the Settings page."""
    base = load_settings()
    chosen = st.session_state.get("collection")
    return base.model_copy(update={"collection": chosen}) if chosen else base


@st.cache_resource(show_spinner=False)
def query_cache() -> QueryCache:
    """The server process's query vectors, shared by its searchers and sessions, and kept when searchers are
    dropped after a write: a vector depends on the question and the collection's model, not on what is stored."""
    return QueryCache.from_settings(load_settings())


@st.cache_resource(show_spinner=False)
def _searcher(key: str, _settings: Settings) -> Searcher:
    return Searcher(_settings, cache=query_cache())


def searcher(current: Settings) -> Searcher:
    """One searcher per store, collection and model, kept across reruns and sessions (it holds the model)."""
    key = f"{current.chroma_url or current.chroma_path}|{current.collection}|{current.endpoint}|{current.model}"
    return _searcher(key, current)


def forget_searchers() -> None:
    """Drop the cached searchers after a write, so the next search sees it."""
    _searcher.clear()


def knowledge_base(current: Settings) -> KnowledgeBase:
    return KnowledgeBase.open(current)


def display_name(source: str) -> str:
    return Path(source).name


def ingest_here(paths: Sequence[str | Path], current: Settings, *, progress: Progress | None = None,
                force: bool = False, prune: bool = False) -> IngestReport:
    """`ingest` as the UI runs it. This process keeps the embedded store open for searches, so writes go
    through the same client; and a browser does not wait behind another writer (`kb ingest` on the same
    store): it says so at once."""
    return ingest(paths, current.model_copy(update={"lock_wait": 0.0}), store_process=False,
                  progress=progress, force=force, prune=prune)


def describe(outcome: FileOutcome) -> str:
    """A file's outcome in a few words, for a progress bar or a message."""
    if outcome.status == "ingested":
        text = f"ingested, {outcome.chunks} passages"
        return text + (f" ({'; '.join(outcome.warnings)})" if outcome.warnings else "")
    if outcome.status == "unchanged":
        return f"unchanged, already in the library ({outcome.chunks} passages)"
    return f"{outcome.status}: {outcome.reason}"
