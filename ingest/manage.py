"""What the CLI and the UI do to a whole store: list its knowledge bases, report on them, delete documents."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from .client import make_client, store_error
from .errors import StoreError
from .knowledge_base import KnowledgeBase
from .lock import write_lock
from .records import DOCS_SUFFIX
from .settings import Settings


def list_knowledge_bases(client) -> list[str]:  # noqa: ANN001 - chromadb's client
    names = [c if isinstance(c, str) else c.name for c in client.list_collections()]
    return sorted(n for n in names if not n.endswith(DOCS_SUFFIX))


def status(settings: Settings) -> list[dict[str, Any]]:
    """Every knowledge base in the store: counts, model, dimension, instruction, chunking."""
    client = make_client(settings)
    try:
        names = list_knowledge_bases(client)
    except Exception as exc:  # whatever the client raises, told with the store's URL or folder
        raise store_error(settings, exc, "cannot list the collections") from None
    out = []
    for name in names:
        kb = KnowledgeBase(client, name, settings=settings)
        spec = kb.spec
        docs = kb.documents()
        out.append(
            {
                "collection": name,
                "documents": len(docs),
                "chunks": kb.count(),
                "tokens": sum(d.tokens for d in docs.values()),
                **(asdict(spec) if spec else {"model": None}),
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
