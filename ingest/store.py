"""The Chroma store: one collection of chunks and one of per-document records for each knowledge base.

The chunk collection's metadata records the model, dimension, instruction and chunking, and kb refuses
to add vectors from another model or dimension. A document's record is written after all its chunks,
so a document listed as ingested is complete; chunk ids derive from (source, file hash, index), so
re-running never duplicates. Writes are cut to Chroma's `get_max_batch_size()`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import weakref
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlparse

import numpy as np

from .errors import KbError, ModelMismatchError, StoreError
from .lexical import LexicalIndex
from .lock import write_lock
from .processes import process_pool
from .settings import Settings
from .shards import Shard

DOCS_SUFFIX = ".docs"
SCHEMA = 1
# The vector index of every chunk collection, from bench/scale.py (README "Search latency as the store grows"):
# at a million chunks ef_search 100 (Chroma's default) found 97.2% of the true top 10 and 200 found 99.3%, at
# the same 2-3 ms a search. Chroma's other defaults kept, written out so a change of them cannot change kb's.
HNSW = {"space": "cosine", "max_neighbors": 16, "ef_construction": 100, "ef_search": 200}


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
    def from_metadata(cls, metadata: dict[str, Any] | None) -> CollectionSpec | None:
        metadata = metadata or {}
        if "kb_model" not in metadata:
            return None
        return cls(**{name: metadata[f"kb_{name}"] for name in cls.__dataclass_fields__ if f"kb_{name}" in metadata})


@dataclass
class DocumentWrite:
    """One document's chunks, ready to store, and the record that vouches for them. A big document comes
    in parts: writes without a record (chunks only), then the last with its record and, in `earlier`,
    the ids of the parts, which its record vouches for too."""

    record: DocumentRecord | None
    ids: Sequence[str]
    vectors: np.ndarray
    texts: Sequence[str]
    metadatas: Sequence[dict[str, Any]]
    replacing: bool = False  # the source has a record already (an older version): it goes first
    earlier: Sequence[str] = ()

    @property
    def source(self) -> str:
        return self.record.source if self.record else str(self.metadatas[0]["source"])


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
    language: str | None = None

    @property
    def id(self) -> str:
        return document_id(self.source)

    def to_metadata(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class StoredChunk:
    id: str
    text: str
    metadata: dict[str, Any]
    distance: float | None = None


def document_id(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:32]


def chunk_id(source: str, sha256: str, page: int | None, index: int) -> str:
    """Deterministic: the same file content always gives the same ids."""
    key = f"{source}\0{sha256}\0{page or 0}\0{index}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class StoreView:
    """What this process's Chroma client has seen of an embedded store.

    Chroma keeps one client system per store folder in a process and searches an index it loaded into
    memory: vectors another process adds later are in the store's files but not in that index, and a
    long-lived process (the UI, while `kb ingest` runs in a terminal) would go on searching without
    them. So every kb write leaves a new generation mark in the store folder (GENERATION_NAME), and
    each system is paired with the mark it has seen; once the mark moves on (another process wrote),
    the next `make_client` opens a new system. The old one is stopped when the last client holding it
    is gone, never under a search or a write still using it. Writes by anything other than kb are not
    marked: restart the UI after those.
    """

    _lock = threading.RLock()  # re-entered when a finalizer runs while this thread holds it
    _latest: dict[str, StoreView] = {}  # per folder, as Chroma keys its systems: process-wide like them

    def __init__(self, folder: str, system: Any) -> None:  # noqa: ANN401 - chromadb's System
        self.folder, self._system = folder, system
        self.generation = _generation(folder)
        self._writers = self._clients = 0
        self._retired = False

    def current(self) -> bool:
        """False once another process has written to the store, or a newer system replaced this one."""
        with self._lock:
            return self._latest.get(self.folder) is self and self.generation == _generation(self.folder)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """This process writes through its own system, which sees the write: a new mark for the others,
        not a reason to reopen here."""
        with self._lock:
            self._writers += 1
        try:
            yield
        finally:
            with self._lock:
                self._writers -= 1
                self.generation = _mark(self.folder)

    def _attach(self, client: Any) -> None:  # noqa: ANN401
        self._clients += 1
        weakref.finalize(client, self._detach)

    def _detach(self) -> None:
        with self._lock:
            self._clients -= 1
            if self._retired and self._clients == 0:
                self._system.stop()  # gives back its files and memory

    def _retire(self) -> None:
        """Out of Chroma's cache, so the next client loads the store afresh; stopped once unused."""
        from chromadb.api.shared_system_client import SharedSystemClient

        with SharedSystemClient._refcount_lock:
            SharedSystemClient._identifier_to_system.pop(self.folder, None)
            SharedSystemClient._identifier_to_refcount.pop(self.folder, None)
        self._retired = True
        if self._clients == 0:
            self._system.stop()

    @classmethod
    def client(cls, folder: str, chroma_settings: Any) -> tuple[Any, StoreView]:  # noqa: ANN401
        import chromadb

        with cls._lock:
            view = cls._latest.get(folder)
            if view is not None and not view._writers and view.generation != _generation(folder):
                view._retire()
                view = None
            client = chromadb.PersistentClient(path=folder, settings=chroma_settings)
            if view is None:
                view = cls._latest[folder] = StoreView(folder, client._system)
            view._attach(client)
            return client, view


GENERATION_NAME = ".kb-generation"


def _generation(folder: str) -> str | None:
    try:
        with open(os.path.join(folder, GENERATION_NAME)) as handle:
            return handle.read()
    except OSError:
        return None


def _mark(folder: str) -> str:
    """A new generation mark, written whole (a reader never sees half of one)."""
    mark = os.urandom(8).hex()
    temporary = os.path.join(folder, f"{GENERATION_NAME}.{os.getpid()}.{threading.get_ident()}")
    try:
        with open(temporary, "w") as handle:
            handle.write(mark)
        os.replace(temporary, os.path.join(folder, GENERATION_NAME))
    except OSError:
        return _generation(folder) or ""  # a read-only store is not written either
    return mark


def make_client(settings: Settings):  # noqa: ANN201 - chromadb's client type
    """Embedded PersistentClient at --chroma-path, or HttpClient for --chroma-url. Telemetry off."""
    return _open_client(settings)[0]


def _tenant_database(settings: Settings) -> tuple[str, str]:
    """A server's tenant and database: the ones set, else Chroma's defaults."""
    from chromadb.config import DEFAULT_DATABASE, DEFAULT_TENANT

    return settings.chroma_tenant or DEFAULT_TENANT, settings.chroma_database or DEFAULT_DATABASE


def _open_client(settings: Settings, create: bool = False) -> tuple[Any, StoreView | None]:
    """The client and, embedded, its view. `create` (writers): a server's database is created in its tenant
    if missing."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    try:
        if settings.chroma_url:
            url = urlparse(settings.chroma_url)
            if not url.hostname:
                raise StoreError(f"--chroma-url {settings.chroma_url!r} is not a URL like http://host:8000")
            server = {"host": url.hostname, "port": url.port or (443 if url.scheme == "https" else 8000),
                      "ssl": url.scheme == "https", "headers": _token_headers(settings)}
            tenant, database = _tenant_database(settings)
            if create:
                _ensure_database(server, tenant, database, chroma_settings)
            return chromadb.HttpClient(tenant=tenant, database=database, settings=chroma_settings, **server), None
        Path(settings.chroma_path).mkdir(parents=True, exist_ok=True)
        return StoreView.client(str(settings.chroma_path), chroma_settings)
    except StoreError:
        raise
    except Exception as exc:
        raise _store_error(settings, exc) from None


def _ensure_database(server: dict[str, Any], tenant: str, database: str, chroma_settings: Any) -> None:  # noqa: ANN401
    """Create `database` in `tenant` on the server if it is not there. Tenants are the server admin's to
    create: a missing one is an error (below), not something an ingest should make up from a typo."""
    import chromadb
    from chromadb.errors import NotFoundError

    admin = chromadb.AdminClient(chroma_settings.model_copy(update={
        "chroma_api_impl": "chromadb.api.fastapi.FastAPI", "chroma_server_host": server["host"],
        "chroma_server_http_port": server["port"], "chroma_server_ssl_enabled": server["ssl"],
        "chroma_server_headers": server["headers"]}))
    try:
        admin.get_database(database, tenant)
    except NotFoundError:
        try:
            admin.create_database(database, tenant)
        except Exception as exc:
            if "already exists" not in str(exc):  # another worker created it first
                raise


def _token_headers(settings: Settings) -> dict[str, str] | None:
    """The Chroma token as the header the proxy in front of the server checks."""
    if not settings.chroma_token:
        return None
    token = settings.chroma_token.get_secret_value()
    if settings.chroma_token_header == "Authorization":
        return {"Authorization": f"Bearer {token}"}
    return {"X-Chroma-Token": token}


def _store_error(settings: Settings, exc: Exception) -> StoreError:
    """A refused token, or a missing tenant or database, becomes what to do about it; the token itself never
    appears in the message."""
    where = settings.chroma_url or settings.chroma_path
    text = str(exc)
    if settings.chroma_token:
        text = text.replace(settings.chroma_token.get_secret_value(), "***")
    if settings.chroma_url and re.search(r"Tenant \[.*\] not found", text):
        return StoreError(f"the Chroma server at {where} has no tenant {_tenant_database(settings)[0]!r}: create "
                          "it on the server (Chroma's AdminClient.create_tenant), or check --chroma-tenant")
    if settings.chroma_url and re.search(r"Database \[.*\] not found", text):
        tenant, database = _tenant_database(settings)
        return StoreError(f"the Chroma server at {where} has no database {database!r} in tenant {tenant!r}: "
                          "kb ingest creates it; check --chroma-database")
    if settings.chroma_url and re.search(r"\b(401|403)\b|unauthori[sz]ed|forbidden", text, re.IGNORECASE):
        given = "the token given was refused" if settings.chroma_token else "no token is set"
        return StoreError(
            f"the Chroma server at {where} refused kb's request (not authorised): {given}. "
            f"Set KB_CHROMA_TOKEN (and KB_CHROMA_TOKEN_HEADER if the server expects X-Chroma-Token)"
        )
    return StoreError(f"cannot open the Chroma store at {where}: {text}")


def validate_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,500}[A-Za-z0-9]", name) or ".." in name:
        raise StoreError(
            f"collection name {name!r} is not valid: 3-500 characters from letters, digits, '.', '_' and '-', "
            "starting and ending with a letter or digit"
        )


_FLOATS_PER_WRITE = 1 << 20  # vectors in one Chroma write: 4 MB as float32 (409 chunks at 2,560-d)


class KnowledgeBase:
    """A named knowledge base in a Chroma store: its chunks, its documents, and what built them."""

    def __init__(self, client, name: str, view: StoreView | None = None,  # noqa: ANN001
                 lexical_dir: Path | None = None) -> None:
        validate_name(name)
        if name.endswith(DOCS_SUFFIX):
            raise StoreError(f"collection names ending in {DOCS_SUFFIX!r} are kb's own")
        self.client = client
        self.name = name
        self.view = view
        self.lexical_dir = lexical_dir  # None: this handle keeps no lexical index (hybrid search off)
        self._lexical: LexicalIndex | None = None
        self._chunks = None
        self._docs = None

    @classmethod
    def open(cls, settings: Settings, name: str | None = None, create: bool = False) -> KnowledgeBase:
        """`create`: for a writer, which may create a server's database (see `make_client`)."""
        client, view = _open_client(settings, create)
        return cls(client, name or settings.collection, view, lexical_dir(settings))

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

    def _find(self, name: str):  # noqa: ANN202
        try:
            return self.client.get_collection(name, embedding_function=None)
        except Exception:
            return None

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
        except Exception as exc:
            raise StoreError(f"cannot create collection {self.name!r}: {exc}") from None

    def _ensure_docs(self) -> None:
        if self._docs is None:
            try:
                with self._writing():
                    self._docs = self.client.get_or_create_collection(
                        self.name + DOCS_SUFFIX, embedding_function=None, metadata={"kb_documents_of": self.name}
                    )
            except Exception as exc:
                raise StoreError(f"cannot create collection {self.name + DOCS_SUFFIX!r}: {exc}") from None

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
        total = self._docs.count()
        page = max(1, self.max_batch)
        for offset in range(0, total, page):
            got = self._docs.get(include=["metadatas"], limit=page, offset=offset)
            for metadata in got["metadatas"] or []:
                fields = {k: metadata.get(k) for k in DocumentRecord.__dataclass_fields__}
                fields["warnings"] = fields.get("warnings") or ""
                records[metadata["source"]] = DocumentRecord(**fields)
        return records

    @cached_property
    def max_batch(self) -> int:
        """Chroma's largest write, asked once: a server answers it over the network."""
        try:
            return int(self.client.get_max_batch_size())
        except Exception:
            return 1000

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
        local Chroma call costs ~20 ms of CPU whatever its size, more than embedding a small file.

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
            self._write(writes, names)

    def _write(self, writes: Sequence[DocumentWrite], names: str) -> None:
        try:
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
        except Exception as exc:
            raise StoreError(f"cannot write {names} to collection {self.name!r}: {exc}") from None

    def delete_chunks(self, ids: Sequence[str]) -> None:
        """Remove chunks no record vouches for (the stored parts of a document that then failed)."""
        if ids and self._open_existing():
            try:
                with self._writing():
                    self._delete_ids(list(ids))
            except Exception as exc:
                raise StoreError(f"cannot delete chunks from collection {self.name!r}: {exc}") from None

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
            for got in self._pages(where, ["metadatas"]):
                for chunk_id_, metadata in zip(got["ids"], got["metadatas"] or []):
                    source = str((metadata or {}).get("source", ""))
                    if shard is None or shard.owns(source):
                        found.setdefault(source, []).append(chunk_id_)
            with self._writing():
                self._delete_ids([i for ids in found.values() for i in ids])
        except Exception as exc:
            raise StoreError(f"cannot remove orphan chunks from collection {self.name!r}: {exc}") from None
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
        except Exception as exc:
            raise StoreError(f"cannot delete {source} from collection {self.name!r}: {exc}") from None
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
            page = max(1, self.max_batch)
            for start in range(0, len(missing), page):
                got = self._chunks.get(ids=missing[start:start + page], include=["documents", "metadatas"])  # type: ignore[union-attr]
                index.upsert([lexical_entry(i, t or "", m or {})
                              for i, t, m in zip(got["ids"], got["documents"], got["metadatas"])])
        except KbError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot read collection {self.name!r} to index it: {exc}") from None
        gone = sorted(have - stored)
        index.delete(gone)
        return {"added": len(missing), "removed": len(gone)}

    # -- reading -----------------------------------------------------------------------------

    def count(self) -> int:
        return self._chunks.count() if self._open_existing() else 0

    def query(self, vector: np.ndarray, k: int = 5, where: dict[str, Any] | None = None) -> list[StoredChunk]:
        if not self._open_existing():
            return []
        try:
            result = self._chunks.query(
                query_embeddings=[vector], n_results=k, where=where or None,
                include=["documents", "metadatas", "distances"],
            )
        except Exception as exc:
            raise StoreError(f"search in collection {self.name!r} failed: {exc}") from None
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
        for got in self._pages(None, include):
            texts = got["documents"] if with_text else [""] * len(got["ids"])
            chunks.extend(StoredChunk(i, t or "", m or {}) for i, t, m in zip(got["ids"], texts, got["metadatas"]))
            if with_vectors and got["ids"]:
                vectors.append(np.asarray(got["embeddings"], dtype=np.float32))
        return chunks, np.vstack(vectors) if vectors else None

    def chunks_of(self, source: str) -> list[StoredChunk]:
        if not self._open_existing():
            return []
        return [StoredChunk(i, t or "", m or {}) for got in self._pages({"source": source}, ["documents", "metadatas"])
                for i, t, m in zip(got["ids"], got["documents"], got["metadatas"])]

    def _pages(self, where: dict[str, Any] | None, include: list[str]) -> Iterator[Any]:
        """Chroma's `get` of the chunks matching `where`, a page (the max batch size) at a time: one read of
        a source's 40,000 chunks is past SQLite's limit on a statement's variables ("too many SQL variables")."""
        page, offset = max(1, self.max_batch), 0
        while True:
            got = self._chunks.get(where=where, include=include, limit=page, offset=offset)  # type: ignore[union-attr]
            yield got
            if len(got["ids"]) < page:
                return
            offset += page

    def _ids(self, where: dict[str, Any] | None) -> list[str]:
        return [i for got in self._pages(where, []) for i in got["ids"]]

    def get(self, ids: Sequence[str], where: dict[str, Any] | None = None) -> list[StoredChunk]:
        """The chunks with these ids (those that also match `where`), in the order asked."""
        if not ids or not self._open_existing():
            return []
        try:
            got = self._chunks.get(ids=list(ids), where=where or None, include=["documents", "metadatas"])
        except Exception as exc:
            raise StoreError(f"cannot read from collection {self.name!r}: {exc}") from None
        found = {i: StoredChunk(i, t or "", m or {}) for i, t, m in zip(got["ids"], got["documents"], got["metadatas"])}
        return [found[i] for i in ids if i in found]


def lexical_entry(chunk_id_: str, text: str, metadata: dict[str, Any]) -> tuple[str, str, str, str | None]:
    """A stored chunk as the lexical index holds it: (id, source, text, language). A heading entry's text is
    its heading (what was embedded for it; its stored text is its section's chunk, indexed already)."""
    return (chunk_id_, str(metadata.get("source", "")), str(metadata.get("heading") or text), metadata.get("language"))


def lexical_dir(settings: Settings) -> Path:
    """Where the BM25 indexes live: `lexical_path`, else beside an embedded store's files, else (a Chroma
    server) in this user's data folder, one folder per server (never under the working directory, where it
    would be ingested as a document)."""
    if settings.lexical_path is not None:
        return Path(settings.lexical_path)
    if settings.chroma_url:
        url = urlparse(settings.chroma_url)
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        folder = base / "kb" / "lexical" / re.sub(r"[^\w.-]+", "_", f"{url.hostname}_{url.port or ''}{url.path}").strip("_")
        if settings.chroma_tenant or settings.chroma_database:  # same collection names, other collections
            folder = folder.joinpath(*_tenant_database(settings))
        return folder
    return Path(settings.chroma_path) / "kb-lexical"


# The store process's own knowledge base, opened at its first call (so an error reaches the caller).
_process_settings: Settings | None = None
_process_kb: KnowledgeBase | None = None


def _remember_settings(settings: Settings) -> None:
    global _process_settings
    _process_settings = settings


def _call_in_process(method: str, args: tuple) -> tuple[Any, float]:
    """Run one KnowledgeBase method in the store process; its result and the process's CPU seconds."""
    global _process_kb
    started = time.process_time()
    if _process_kb is None:
        assert _process_settings is not None
        _process_kb = KnowledgeBase.open(_process_settings, create=True)
    result = getattr(_process_kb, method)(*args)
    return result, time.process_time() - started


class StoreProcess:
    """A KnowledgeBase in a process of its own, with the methods an ingest run calls.

    Chroma's embedded client holds the GIL for the whole of every write (~0.5 s per 100 vectors of
    2,560 dimensions once its HNSW index has grown): in the pipeline's process that freezes the event
    loop, and with it every request to the embedding servers. An embedded store must have one owner,
    so for the run this process is it; nothing else in the caller's process may have it open.
    `cpu` adds up the process's CPU seconds, Chroma's native threads included.
    """

    def __init__(self, settings: Settings) -> None:
        validate_name(settings.collection)
        self.name = settings.collection
        self.cpu = 0.0
        self._pool = process_pool("kb-store", 1, _remember_settings, (settings,))

    def _call(self, method: str, *args: Any) -> Any:
        try:
            result, cpu = self._pool.submit(_call_in_process, method, args).result()
        except BrokenProcessPool:
            raise StoreError(f"the store process for collection {self.name!r} died (out of memory?)") from None
        self.cpu += cpu
        return result

    def documents(self) -> dict[str, DocumentRecord]:
        return self._call("documents")

    def check_model(self, model: str, dimension: int | None = None, instruction: str | None = None) -> None:
        self._call("check_model", model, dimension, instruction)

    def ensure(self, spec: CollectionSpec) -> None:
        self._call("ensure", spec)

    def write_documents(self, writes: Sequence[DocumentWrite]) -> None:
        self._call("write_documents", list(writes))

    def delete_document(self, source: str) -> int:
        return self._call("delete_document", source)

    def delete_chunks(self, ids: Sequence[str]) -> None:
        self._call("delete_chunks", list(ids))

    def delete_orphans(self, shard: Shard | None = None) -> dict[str, int]:
        return self._call("delete_orphans", shard)

    def sync_lexical(self) -> dict[str, int]:
        return self._call("sync_lexical")

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def list_knowledge_bases(client) -> list[str]:  # noqa: ANN001
    names = [c if isinstance(c, str) else c.name for c in client.list_collections()]
    return sorted(n for n in names if not n.endswith(DOCS_SUFFIX))


def status(settings: Settings) -> list[dict[str, Any]]:
    """Every knowledge base in the store: counts, model, dimension, instruction, chunking."""
    client = make_client(settings)
    out = []
    for name in list_knowledge_bases(client):
        kb = KnowledgeBase(client, name)
        spec = kb.spec
        docs = kb.documents()
        out.append(
            {
                "collection": name,
                "documents": len(docs),
                "chunks": kb.count(),
                "tokens": sum(d.tokens for d in docs.values()),
                **({k: v for k, v in asdict(spec).items()} if spec else {"model": None}),
                "last_ingest": max((d.ingested_at for d in docs.values()), default=None),
            }
        )
    return out


def delete_documents(settings: Settings, sources: Sequence[str]) -> tuple[dict[str, int], list[str]]:
    """Remove the documents recorded under each of `sources` (a document's source, or a folder: every
    document below it) from the collection `settings` names, with their chunks. A relative path is also
    tried resolved, as ingest recorded it (status and search show sources relative to the working folder).
    How many chunks each removed document had, and the sources that matched nothing."""
    with write_lock(settings):
        kb = KnowledgeBase.open(settings)
        if not kb.exists():
            raise StoreError(f"no collection {settings.collection!r} in {settings.chroma_url or settings.chroma_path}")
        recorded = sorted(kb.documents())
        removed: dict[str, int] = {}
        unknown: list[str] = []
        for given in sources:
            names = {given, str(Path(given).expanduser().resolve())}
            folders = tuple(name.rstrip("/") + "/" for name in names)
            matches = [s for s in recorded if s in names or s.startswith(folders)]
            if not matches:
                unknown.append(given)
            for source in matches:
                if source not in removed:
                    removed[source] = kb.delete_document(source)
        return removed, unknown


def parse_where(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(f"--where is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise StoreError('--where must be a JSON object, e.g. {"file_type": "pdf"}')
    return value
