"""What a file's chunks and vectors become in the store: each entry's metadata, and with the file's last part
its record, in the layout `records` writes down. The pipeline's writer sends them; this builds them."""

from __future__ import annotations

import os

import numpy as np

from .backlog import Write
from .chunking import Chunker
from .embeddings import Embedder
from .knowledge_base import DocumentWrite
from .records import ChunkMetadata, CollectionSpec, DocumentRecord, chunk_id, now


def collection_spec(embedder: Embedder, chunker: Chunker) -> CollectionSpec:
    """The spec a run's collection is created with, or checked against: model, dimension, instruction, chunking."""
    dimension = embedder.dimension
    assert dimension is not None, "vectors arrived, so the dimension is known"
    return CollectionSpec(
        model=embedder.model,
        dimension=dimension,
        instruction=embedder.instruction.name,
        query_task=embedder.instruction.task,
        tokenizer=chunker.counter.name,
        chunk_tokens=chunker.chunk_tokens,
        overlap=chunker.overlap,
        requested_dimensions=getattr(embedder, "dimensions", None) or 0,
    )


def document_write(queued: Write, chunking: str, dimension: int | None, replacing: bool) -> DocumentWrite:
    """The store write of `queued`'s chunks (their vectors are dropped from the file's state once taken), and
    with its final part the file's record. `replacing`: the store holds an earlier version of the file."""
    item = queued.item
    loaded = item.loaded
    ids, texts, metadatas = [], [], []
    for index in queued.indices:
        doc, chunk = item.pieces[index]
        ids.append(chunk_id(loaded.source, loaded.sha256, doc.page, chunk.index))
        shown = chunk
        if chunk.section is not None:
            # A heading entry: its vector is the heading's, its passage the chunk it stands for (a
            # document's entries follow its chunks in `pieces`, so that chunk is found by position).
            shown = item.pieces[index - chunk.index + chunk.section][1]
        texts.append(shown.text)
        metadatas.append(ChunkMetadata(
            source=loaded.source, name=os.path.basename(loaded.source), title=loaded.title,
            file_type=loaded.file_type, sha256=loaded.sha256, chunk=chunk.index, start=shown.start,
            end=shown.end, tokens=chunk.tokens, heading=chunk.text if chunk.section is not None else None,
            section=chunk.section, page=doc.page, language=doc.language or None, sheet=doc.sheet,
            chapter=doc.chapter, ocr=doc.ocr or None, input_key=item.keys[index],
        ).to_metadata())
    vectors = (np.vstack([item.vectors[index] for index in queued.indices]) if ids
               else np.zeros((0, dimension or 1), np.float32))
    for index in queued.indices:
        item.vectors[index] = None
    # Counted before the write, so one that fails halfway is taken out whole (the writer, `_take_out`);
    # a file's last write keeps, and its record vouches for, every part counted before it.
    earlier = tuple(item.stored)
    item.stored.extend(ids)
    if not queued.final:  # a part: chunks only, vouched for by the record of the final write
        return DocumentWrite(None, ids, vectors, texts, metadatas)
    record = DocumentRecord(
        source=loaded.source, sha256=loaded.sha256, file_type=loaded.file_type, title=loaded.title,
        chunks=len(item.pieces), tokens=sum(c.tokens for _, c in item.pieces), pages=loaded.pages,
        size=loaded.size, chunking=chunking, ingested_at=now(),
        warnings="; ".join(loaded.warnings), language=loaded.language, ocr_parts=loaded.ocr_parts or None,
    )
    return DocumentWrite(record, ids, vectors, texts, metadatas, replacing=replacing, earlier=earlier)
