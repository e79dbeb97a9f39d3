"""The stored layout: what kb writes in Chroma, as typed records, each with its to/from metadata.

A knowledge base NAME is two collections: NAME holds the chunks (one entry per chunk and per heading
entry, with `ChunkMetadata`) and records what built them (`CollectionSpec`, in the collection's own
metadata); NAME + DOCS_SUFFIX holds one `DocumentRecord` per ingested file. Every writer and reader of
these goes through the records here, so the layout is written down once. Reading is lenient (a key an
older kb did not write reads as its default); writing gives exactly what kb has always stored.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, Mapping

DOCS_SUFFIX = ".docs"
SCHEMA = 1  # the layout's version, recorded as `kb_schema` in each chunk collection's metadata
# The warning kb 0.1 recorded, with no chunks, for a scanned PDF it could not read: such records are read again.
LEGACY_SCAN_WARNING = "no text layer (scanned PDF?)"


@dataclass(frozen=True)
class CollectionSpec:
    """What every vector in a collection shares. Recorded when the collection is created."""

    model: str
    dimension: int
    instruction: str
    query_task: str
    tokenizer: str
    chunk_tokens: int
    overlap: int
    requested_dimensions: int = 0  # `dimensions` sent with every request (Matryoshka), 0 for none

    def to_metadata(self) -> dict[str, Any]:
        return {f"kb_{key}": value for key, value in asdict(self).items()} | {"kb_schema": SCHEMA}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> CollectionSpec | None:
        """None for a collection kb did not make (no `kb_model`)."""
        metadata = metadata or {}
        if "kb_model" not in metadata:
            return None
        return cls(**{name: metadata[f"kb_{name}"] for name in cls.__dataclass_fields__ if f"kb_{name}" in metadata})


@dataclass
class DocumentRecord:
    """One ingested file: written last, so its presence means all its chunks are stored."""

    source: str
    sha256: str
    file_type: str
    title: str
    chunks: int
    tokens: int
    pages: int | None
    size: int
    chunking: str
    ingested_at: str
    warnings: str = ""
    language: str | None = None  # not written before kb recorded languages: None
    ocr_parts: int | None = None  # pages read by OCR (written only when there are any)

    @property
    def id(self) -> str:
        return document_id(self.source)

    def to_metadata(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> DocumentRecord:
        """A stored record; a key not written (None: no pages, no language) reads as None."""
        fields = {key: metadata.get(key) for key in cls.__dataclass_fields__}
        fields["warnings"] = fields["warnings"] or ""
        return cls(**fields)


@dataclass(frozen=True)
class ChunkMetadata:
    """The metadata of one stored entry: a chunk, or a heading entry (its vector is the heading's, its
    stored text the chunk of the section it heads, `section` that chunk's index).

    `start`/`end` are character offsets of the shown text in the document (its page, for a PDF);
    `tokens` counts what was embedded (the heading, for a heading entry).
    """

    source: str = ""
    name: str = ""  # the file's name, for `where` filters
    title: str = ""
    file_type: str = ""
    sha256: str = ""
    chunk: int = 0
    start: int | None = None
    end: int | None = None
    tokens: int = 0
    heading: str | None = None  # set together with `section`, on heading entries only
    section: int | None = None
    page: int | None = None  # the part, from 1: a PDF's page, a deck's slide, a sheet, a chapter
    language: str | None = None  # ISO 639-1, when it could be told
    sheet: str | None = None  # spreadsheets: the sheet's name
    chapter: str | None = None  # e-books: the chapter's title
    ocr: bool | None = None  # True when the text was read by OCR (written only then)
    # `input_key` of what was embedded: entries with the same key have interchangeable vectors (chunk-level reuse).
    # Not written before kb reused vectors: such entries are never reused.
    input_key: str | None = None

    def to_metadata(self) -> dict[str, Any]:
        """As stored: keys with no value are left out (Chroma keeps no None)."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> ChunkMetadata:
        """Keys kb does not write are ignored; keys missing (entries written by other tools) read as defaults."""
        metadata = metadata or {}
        return cls(**{key: metadata[key] for key in cls.__dataclass_fields__ if key in metadata})

    @property
    def is_heading(self) -> bool:
        return self.section is not None

    @property
    def passage(self) -> tuple[Any, ...]:
        """Which passage the entry shows: its own chunk, or for a heading entry the chunk it stands for.
        A heading entry and its section's chunk are one passage in search results."""
        return (self.source, self.sha256, self.page, self.section if self.section is not None else self.chunk)


@dataclass(frozen=True)
class StoredChunk:
    """One entry as read back: `metadata` as Chroma returns it, `meta` the same as a `ChunkMetadata`."""

    id: str
    text: str
    metadata: dict[str, Any]
    distance: float | None = None

    @cached_property
    def meta(self) -> ChunkMetadata:
        return ChunkMetadata.from_metadata(self.metadata)


def document_id(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:32]


def chunk_id(source: str, sha256: str, page: int | None, index: int) -> str:
    """Deterministic: the same file content always gives the same ids."""
    key = f"{source}\0{sha256}\0{page or 0}\0{index}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def input_key(model: str, dimensions: int, instruction: str, embedded: str) -> str:
    """What a document vector depends on: the model, the dimension asked of it (0: its own), the instruction
    profile and the text exactly as sent. Equal keys, equal vectors: only then is a stored vector reused."""
    key = f"{model}\0{dimensions}\0{instruction}\0{embedded}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def now() -> str:
    """A record's `ingested_at`: UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def documents_collection_metadata(name: str) -> dict[str, Any]:
    """The metadata of NAME + DOCS_SUFFIX, the collection of `DocumentRecord`s: whose records they are."""
    return {"kb_documents_of": name}
