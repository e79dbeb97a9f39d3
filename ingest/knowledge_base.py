"""A knowledge base in a Chroma store: one collection of chunks and one of per-document records.

The chunk collection's metadata records the model, dimension, instruction and chunking, and kb refuses
to add vectors from another model or dimension. A document's record is written after all its chunks,
so a document listed as ingested is complete; chunk ids derive from (source, file hash, index), so
re-running never duplicates. Writes are cut to Chroma's `get_max_batch_size()`. What is stored is
written down in ingest.records.

chromadb raises bare `Exception` (and ValueError) for what a server answered, so its calls here are
translated whole into a StoreError that says what kb was doing and, for a server, names it.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .client import StoreView, lexical_dir, open_client, store_error
from .errors import KbError, ModelMismatchError, StoreError
from .lexical import LexicalIndex, lexical_entry
from .records import (
    DOCS_SUFFIX,
    ChunkMetadata,
    CollectionSpec,
    DocumentRecord,
    StoredChunk,
    document_id,
    documents_collection_metadata,
)
from .settings import Settings
from .shards import Shard

# The vector index of every chunk collection. ef_search is raised from Chroma's 100 to 200: more of the true
# nearest neighbours found at about the same search time (bench/scale.py; docs/benchmarks.md, "Search latency
# as the store grows"). Chroma's other defaults are kept, written out so a change of them cannot change kb's.
# The inner product: kb stores unit vectors (embeddings.normalise), for which it is the cosine, and Chroma keeps
# them bit for bit, where its "cosine" space normalises them again and may move a last bit; a vector reused from
# the store (chunk-level reuse) is then exactly the one the model gave. Collections made before keep "cosine".
HNSW = {"space": "ip", "max_neighbors": 16, "ef_construction": 100, "ef_search": 200}

_FLOATS_PER_WRITE = 1 << 20  # vectors in one Chroma write: 4 MB as float32 (409 chunks at 2,560-d)


def validate_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,500}[A-Za-z0-9]", name) or ".." in name:
        raise StoreError(
            f"collection name {name!r} is not valid: 3-500 characters from letters, digits, '.', '_' and '-', "
            "starting and ending with a letter or digit"
        )


_KEYS_PER_READ = 200  # input keys asked at once: Chroma's `$in` becomes one SQL variable per key


@dataclass
class DocumentWrite:
    """One document's chunks, ready to store, and the record that vouches for them. A big document comes
    in parts: writes without a record (chunks only), then the last with its record and, in `earlier`,
    the ids of the parts, which its record vouches for too. `metadatas` are `ChunkMetadata.to_metadata()`."""

    record: DocumentRecord | None
    ids: Sequence[str]
    vectors: np.ndarray
    texts: Sequence[str]
    metadatas: Sequence[dict[str, Any]]
    replacing: bool = False  # the source has a record already (an older version): it goes first
    earlier: Sequence[str] = ()

    @property
    def source(self) -> str:
        return self.record.source if self.record else ChunkMetadata.from_metadata(self.metadatas[0]).source


class KnowledgeBase:
    """A named knowledge base in a Chroma store: its chunks, its documents, and what built them.

    `settings` (given by `open`) lets errors name the store and tell a server that does not answer or
    refuses the token from anything else."""

    def __init__(self, client, name: str, view: StoreView | None = None,  # noqa: ANN001 - chromadb's client
                 lexical_dir: Path | None = None, settings: Settings | None = None) -> None:
        validate_name(name)
        if name.endswith(DOCS_SUFFIX):
            raise StoreError(f"collection names ending in {DOCS_SUFFIX!r} are kb's own")
        self.client = client
        self.name = name
        self.view = view
        self.lexical_dir = lexical_dir  # None: this handle keeps no lexical index (hybrid search off)
        self.settings = settings
        self._lexical: LexicalIndex | None = None
        self._chunks = None
        self._docs = None

    @classmethod
    def open(cls, settings: Settings, name: str | None = None, create: bool = False) -> KnowledgeBase:
        """`create`: for a writer, which may create a server's database (see `open_client`)."""
        client, view = open_client(settings, create)
        return cls(client, name or settings.collection, view, lexical_dir(settings), settings)

    def _failed(self, doing: str, exc: Exception) -> StoreError:
        """`doing` failed because of `exc`, told as a user can act on it. A StoreError raised below (by
        `max_batch` or `_find` inside a paged read) already says so: it is passed on, not wrapped again."""
        if isinstance(exc, StoreError):
            return exc
        if self.settings is None:
            return StoreError(f"{doing}: {exc}")
        return store_error(self.settings, exc, doing)

    @property
    def lexical(self) -> LexicalIndex | None:
        """The collection's BM25 index (ingest.lexical), kept in step with every write and delete below."""
        if self._lexical is None and self.lexical_dir is not None:
            self._lexical = LexicalIndex(self.lexical_dir / f"{self.name}.sqlite3")
        return self._lexical

    def current(self) -> bool:
        """False when another process has written to this embedded store since it was opened here:
        open it again to search what it wrote. A server's store is always current."""
        return self.view is None or self.view.current()

    def _writing(self) -> AbstractContextManager[None]:
        return self.view.writing() if self.view is not None else nullcontext()

    # -- collections -----------------------------------------------------------------------

    def exists(self) -> bool:
        return self._find(self.name) is not None

    def _find(self, name: str):  # noqa: ANN202 - chromadb's Collection
        """The collection, or None when the store has none of that name. Anything else (a server that does
        not answer, a refused token) is an error, never "not there"."""
        from chromadb.errors import NotFoundError

        try:
            return self.client.get_collection(name, embedding_function=None)
        except NotFoundError:
            return None
        except Exception as exc:  # see the module's docstring
            raise self._failed(f"cannot open collection {name!r}", exc) from None

    @property
    def spec(self) -> CollectionSpec | None:
        collection = self._chunks or self._find(self.name)
        return CollectionSpec.from_metadata(collection.metadata) if collection else None

    def check_model(self, model: str, dimension: int | None = None, instruction: str | None = None) -> None:
        """Refuse to mix vectors: the collection's model, dimension and instruction must match."""
        spec = self.spec
        if spec is None:
            return
        if spec.model != model:
            raise ModelMismatchError(
                f"collection {self.name!r} was built with model {spec.model!r}; refusing to add vectors from "
                f"{model!r}. Use another --collection, or the same model"
            )
        if dimension is not None and spec.dimension != dimension:
            raise ModelMismatchError(
                f"collection {self.name!r} holds {spec.dimension}-dimensional vectors of {spec.model!r}; refusing "
                f"{dimension}-dimensional ones. Use another --collection, or --dimensions {spec.dimension}"
            )
        if instruction is not None and spec.instruction != instruction:
            raise ModelMismatchError(
                f"collection {self.name!r} was built with instruction profile {spec.instruction!r}, not "
                f"{instruction!r}: documents would be embedded differently. Use another --collection"
            )

    def ensure(self, spec: CollectionSpec) -> None:
        """Create the collections for `spec`, or check the existing ones match it (and record new chunking)."""
        self.check_model(spec.model, spec.dimension, spec.instruction)
        current = self.spec
        with self._writing():
            self._create(spec, current)
        self._ensure_docs()

    def _create(self, spec: CollectionSpec, current: CollectionSpec | None) -> None:
        try:
            self._chunks = self.client.get_or_create_collection(
                self.name,
                embedding_function=None,
                configuration={"hnsw": dict(HNSW)},
                metadata=spec.to_metadata(),
            )
            # A collection made with a lower ef_search (Chroma's 100, before kb set its own) is raised to kb's:
            # searches find more of the true neighbours for the same time. Only search reads it.
            hnsw = (self._chunks.configuration_json or {}).get("hnsw") or {}
            if hnsw.get("ef_search", HNSW["ef_search"]) < HNSW["ef_search"]:
                self._chunks.modify(configuration={"hnsw": {"ef_search": HNSW["ef_search"]}})
            if current is not None and current != spec:
                # Same model and dimension, new chunking or query task: keep the record true. The distance
                # function may not be passed again (Chroma refuses any change to it).
                self._chunks.modify(metadata=spec.to_metadata())
        except Exception as exc:  # see the module's docstring
            raise self._failed(f"cannot create collection {self.name!r}", exc) from None

    def _ensure_docs(self) -> None:
        if self._docs is None:
            try:
                with self._writing():
                    self._docs = self.client.get_or_create_collection(
                        self.name + DOCS_SUFFIX, embedding_function=None,
                        metadata=documents_collection_metadata(self.name),
                    )
            except Exception as exc:  # see the module's docstring
                raise self._failed(f"cannot create collection {self.name + DOCS_SUFFIX!r}", exc) from None

    def _open_existing(self) -> bool:
        """Open what exists; True when the chunk collection does."""
        if self._chunks is None:
            self._chunks = self._find(self.name)
        if self._docs is None:
            self._docs = self._find(self.name + DOCS_SUFFIX)
        return self._chunks is not None

    # -- documents ---------------------------------------------------------------------------

    def documents(self) -> dict[str, DocumentRecord]:
        """Every ingested document, by source path."""
        self._open_existing()
        if self._docs is None:
            return {}
        records: dict[str, DocumentRecord] = {}
        try:
            for got in self._pages(self._docs, None, ["metadatas"]):
                for metadata in got["metadatas"] or []:
                    record = DocumentRecord.from_metadata(metadata)
                    records[record.source] = record
        except Exception as exc:  # see the module's docstring
            raise self._failed(f"cannot read the documents of collection {self.name!r}", exc) from None
        return records

    @cached_property
    def max_batch(self) -> int:
        """Chroma's largest write, asked once: a server answers it over the network."""
        try:
            return int(self.client.get_max_batch_size())
        except Exception as exc:  # see the module's docstring
            raise self._failed("cannot ask the Chroma store its largest batch", exc) from None

    def _delete_ids(self, ids: list[str]) -> None:
        # Vectors first: an entry left in the lexical index by a crash between the two is skipped at search
        # (its chunk is gone) and removed by the next sync_lexical.
        for start in range(0, len(ids), self.max_batch):
            self._chunks.delete(ids=ids[start : start + self.max_batch])
        if self.lexical is not None:
            self.lexical.delete(ids)

    def write_document(
        self, record: DocumentRecord, ids: Sequence[str], vectors: np.ndarray,
        texts: Sequence[str], metadatas: Sequence[dict[str, Any]],
    ) -> None:
        """Store a document's chunks, drop any other chunks of its source (older versions, other chunking),
        then commit its record. A document without chunks needs no chunk collection."""
        self.write_documents([DocumentWrite(record, ids, vectors, texts, metadatas)])

    def write_documents(self, writes: Sequence[DocumentWrite]) -> None:
        """`write_document` for several documents, in as few Chroma calls as their size allows: every
        local Chroma call costs a fixed share of CPU whatever its size, more than embedding a small file.

        Records of the versions being replaced first, then all chunks, then stale chunks of the same
        sources, then the new records: each record is written after every chunk it vouches for, and
        no record outlives the chunks it vouched for (a run killed midway leaves the source without a
        record, so the next run ingests it again, never one claiming a version whose chunks are gone).
        """
        if not writes:
            return
        self._open_existing()
        if any(w.ids for w in writes) and self._chunks is None:
            raise StoreError("collection not created: call ensure() first")
        self._ensure_docs()
        names = ", ".join(w.source for w in writes[:3]) + (f" and {len(writes) - 3} more" if len(writes) > 3 else "")
        with self._writing():
            try:
                self._write(writes)
            except Exception as exc:  # see the module's docstring
                raise self._failed(f"cannot write {names} to collection {self.name!r}", exc) from None

    def _write(self, writes: Sequence[DocumentWrite]) -> None:
        finals = [w for w in writes if w.record is not None]
        replaced = [w.record.id for w in finals if w.replacing]
        if replaced:
            self._docs.delete(ids=replaced)
        if self._chunks is not None:
            ids = [i for w in writes for i in w.ids]
            vectors = np.vstack([w.vectors for w in writes if w.ids]) if ids else None
            texts = [t for w in writes for t in w.texts]
            metadatas = [m for w in writes for m in w.metadatas]
            # Cut in calls of ~4 MB of vectors as well: a 3,000-chunk PDF in one call would be copied
            # whole into Chroma's request (base64 and JSON for a server) at once.
            step = max(1, min(self.max_batch, _FLOATS_PER_WRITE // vectors.shape[1])) if vectors is not None else 1
            if self.lexical is not None:  # before the vectors: a record never vouches for unindexed text
                self.lexical.upsert(lexical_entry(i, t, m) for i, t, m in zip(ids, texts, metadatas))
            for start in range(0, len(ids), step):
                end = start + step
                self._chunks.upsert(ids=ids[start:end], embeddings=vectors[start:end],  # type: ignore[index]
                                    documents=texts[start:end], metadatas=metadatas[start:end])
            if finals:  # what a finished document's record does not vouch for: older versions, parts of failed runs
                keep = set(ids).union(*(w.earlier for w in finals))
                sources = [w.source for w in finals]
                where = {"source": sources[0]} if len(sources) == 1 else {"source": {"$in": sources}}
                stale = [i for i in self._ids(where) if i not in keep]
                self._delete_ids(stale)
        if finals:
            self._docs.upsert(
                ids=[w.record.id for w in finals], embeddings=[[1.0]] * len(finals),
                documents=[w.record.title for w in finals], metadatas=[w.record.to_metadata() for w in finals],
            )

    def delete_chunks(self, ids: Sequence[str]) -> None:
        """Remove chunks no record vouches for (the stored parts of a document that then failed)."""
        if ids and self._open_existing():
            try:
                with self._writing():
                    self._delete_ids(list(ids))
            except Exception as exc:  # see the module's docstring
                raise self._failed(f"cannot delete chunks from collection {self.name!r}", exc) from None

    def delete_orphans(self, shard: Shard | None = None) -> dict[str, int]:
        """Remove chunks no record vouches for (left by a run killed or failed between a big file's parts);
        how many went, by source. With `shard`, only the sources it owns: the other workers may be in
        the middle of a big file, its parts stored and its record not yet."""
        if not self._open_existing():
            return {}
        sources = sorted(self.documents())
        where = {"source": {"$nin": sources}} if sources else None
        try:
            found: dict[str, list[str]] = {}
            for got in self._pages(self._chunks, where, ["metadatas"]):
                for chunk_id_, metadata in zip(got["ids"], got["metadatas"] or []):
                    source = ChunkMetadata.from_metadata(metadata).source
                    if shard is None or shard.owns(source):
                        found.setdefault(source, []).append(chunk_id_)
            with self._writing():
                self._delete_ids([i for ids in found.values() for i in ids])
        except Exception as exc:  # see the module's docstring
            raise self._failed(f"cannot remove orphan chunks from collection {self.name!r}", exc) from None
        return {source: len(ids) for source, ids in found.items()}

    def delete_document(self, source: str) -> int:
        """Remove a document and its chunks. Returns how many chunks went."""
        self._open_existing()
        removed: list[str] = []
        try:
            with self._writing():
                if self._chunks is not None:
                    removed = self._ids({"source": source})
                    self._delete_ids(removed)
                if self._docs is not None:
                    self._docs.delete(ids=[document_id(source)])
        except Exception as exc:  # see the module's docstring
            raise self._failed(f"cannot delete {source} from collection {self.name!r}", exc) from None
        return len(removed)

    def sync_lexical(self) -> dict[str, int]:
        """Bring the lexical index level with the chunks: index what it lacks (a collection built before it
        existed, a run killed between the two writes, chunks other machines wrote to a Chroma server), drop
        what is gone. Counts first, so a store already in step costs two counts; then the ids alone are
        read, and the text only of the chunks missing. How many entries were added and removed."""
        index = self.lexical
        if index is None or not self._open_existing():
            return {"added": 0, "removed": 0}
        if index.count() == self.count():
            return {"added": 0, "removed": 0}
        have = index.ids()
        try:
            stored = set(self._ids(None))
            missing = sorted(stored - have)
            for got in self._by_ids(missing, ["documents", "metadatas"]):
                index.upsert([lexical_entry(i, t or "", m or {})
                              for i, t, m in zip(got["ids"], got["documents"], got["metadatas"])])
        except KbError:
            raise
        except Exception as exc:  # see the module's docstring
            raise self._failed(f"cannot read collection {self.name!r} to index it", exc) from None
        gone = sorted(have - stored)
        index.delete(gone)
        return {"added": len(missing), "removed": len(gone)}

    # -- reading -----------------------------------------------------------------------------

    def count(self) -> int:
        if not self._open_existing():
            return 0
        try:
            return self._chunks.count()
        except Exception as exc:  # see the module's docstring
            raise self._failed(f"cannot count the chunks of collection {self.name!r}", exc) from None

    def query(self, vector: np.ndarray, k: int = 5, where: dict[str, Any] | None = None) -> list[StoredChunk]:
        if not self._open_existing():
            return []
        try:
            result = self._chunks.query(
                query_embeddings=[vector], n_results=k, where=where or None,
                include=["documents", "metadatas", "distances"],
            )
        except Exception as exc:  # see the module's docstring
            raise self._failed(f"cannot search collection {self.name!r}", exc) from None
        return [
            StoredChunk(id_, text or "", metadata or {}, distance)
            for id_, text, metadata, distance in zip(
                result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0]
            )
        ]

    def all_chunks(
        self, with_vectors: bool = False, with_text: bool = True
    ) -> tuple[list[StoredChunk], np.ndarray | None]:
        """Every chunk (paged by the max batch size), and their vectors when asked. Without text, only
        ids and metadata are read (enough for counts and charts)."""
        if not self._open_existing():
            return [], None
        include = ["metadatas"] + (["documents"] if with_text else []) + (["embeddings"] if with_vectors else [])
        chunks: list[StoredChunk] = []
        vectors: list[np.ndarray] = []
        for got in self._pages(self._chunks, None, include):
            texts = got["documents"] if with_text else [""] * len(got["ids"])
            chunks.extend(StoredChunk(i, t or "", m or {}) for i, t, m in zip(got["ids"], texts, got["metadatas"]))
            if with_vectors and got["ids"]:
                vectors.append(np.asarray(got["embeddings"], dtype=np.float32))
        return chunks, np.vstack(vectors) if vectors else None

    def chunks_of(self, source: str) -> list[StoredChunk]:
        if not self._open_existing():
            return []
        return [StoredChunk(i, t or "", m or {})
                for got in self._pages(self._chunks, {"source": source}, ["documents", "metadatas"])
                for i, t, m in zip(got["ids"], got["documents"], got["metadatas"])]

    def vectors_for(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """A stored vector for each of `keys` (`ChunkMetadata.input_key`) the collection holds, for chunk-level
        reuse. A key many entries share (a heading in every file) is asked again alone, so it cannot crowd the
        others out of a page."""
        if not keys or not self._open_existing():
            return {}
        found: dict[str, np.ndarray] = {}
        missing = list(dict.fromkeys(keys))
        for _ in range(3):
            asked, missing = missing, []
            for start in range(0, len(asked), _KEYS_PER_READ):
                part = asked[start : start + _KEYS_PER_READ]
                try:
                    got = self._chunks.get(where={"input_key": {"$in": part}}, include=["embeddings", "metadatas"],
                                           limit=4 * len(part))
                except Exception as exc:  # see the module's docstring
                    raise self._failed(f"cannot read vectors from collection {self.name!r}", exc) from None
                for vector, metadata in zip(got["embeddings"], got["metadatas"]):
                    key = (metadata or {}).get("input_key")
                    if key and key not in found:
                        found[key] = np.asarray(vector, dtype=np.float32)
                if len(got["ids"]) >= 4 * len(part):  # the page was full: some keys may not have come
                    missing += [key for key in part if key not in found]
            if not missing:
                break
        return found

    def get(self, ids: Sequence[str], where: dict[str, Any] | None = None) -> list[StoredChunk]:
        """The chunks with these ids (those that also match `where`), in the order asked."""
        if not ids or not self._open_existing():
            return []
        try:
            found = {i: StoredChunk(i, t or "", m or {}) for got in self._by_ids(ids, ["documents", "metadatas"], where)
                     for i, t, m in zip(got["ids"], got["documents"], got["metadatas"])}
        except Exception as exc:  # see the module's docstring
            raise self._failed(f"cannot read from collection {self.name!r}", exc) from None
        return [found[i] for i in ids if i in found]

    # -- paging: one read of a source's 40,000 chunks is past SQLite's limit on a statement's variables
    #    ("too many SQL variables"), so reads go a page (the max batch size) at a time.

    def _pages(self, collection: Any, where: dict[str, Any] | None, include: list[str]) -> Iterator[Any]:  # noqa: ANN401
        """Chroma's `get` of the entries of `collection` matching `where`, a page at a time."""
        page, offset = max(1, self.max_batch), 0
        while True:
            got = collection.get(where=where, include=include, limit=page, offset=offset)
            yield got
            if len(got["ids"]) < page:
                return
            offset += page

    def _by_ids(self, ids: Sequence[str], include: list[str], where: dict[str, Any] | None = None) -> Iterator[Any]:
        """Chroma's `get` of the chunks with these ids (and matching `where`), a page of ids at a time."""
        page = max(1, self.max_batch)
        for start in range(0, len(ids), page):
            yield self._chunks.get(ids=list(ids[start:start + page]), where=where or None, include=include)  # type: ignore[union-attr]

    def _ids(self, where: dict[str, Any] | None) -> list[str]:
        return [i for got in self._pages(self._chunks, where, []) for i in got["ids"]]
