"""kb's own REST routes: /health, /v1/collections, /v1/search, /v1/documents (upload, delete)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from anyio import to_thread
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from ingest.errors import ConfigError
from kb_app import uploads
from kb_app.api.app import error
from kb_app.search import check_where
from kb_app.service import KnowledgeService

router = APIRouter()
MAX_QUERY = 10_000  # characters: a question, not a document


def _checked_where(where: dict[str, Any] | None) -> dict[str, Any] | None:
    if where is not None:
        try:
            check_where(where)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return where


# A request's `where`: a Chroma metadata filter, refused (422 with the reason) when Chroma would refuse it.
WhereFilter = Annotated[dict[str, Any] | None, AfterValidator(_checked_where),
                        Field(description="A Chroma metadata filter on kb's chunk metadata")]


class SearchRequest(BaseModel):
    """A search: the fields of `kb search`."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_QUERY)
    k: int = Field(default=5, ge=1, le=100)
    collection: str | None = None
    mode: Literal["dense", "hybrid"] | None = None
    where: WhereFilter = None
    rerank: bool | None = None

    @field_validator("query")
    @classmethod
    def _not_blank(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("the query is empty")
        return query


class DeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(min_length=1, max_length=10_000)
    collection: str | None = None


def service_of(request: Request) -> KnowledgeService:
    return request.app.state.service


async def known(request: Request, collection: str | None) -> JSONResponse | None:
    """404 for a collection that does not exist (naming those that do), else None."""
    service = service_of(request)
    if await to_thread.run_sync(service.exists, collection):
        return None
    names = [c["collection"] for c in await to_thread.run_sync(service.collections)]
    return error(request, 404, f"no collection {collection or service.settings.collection!r} "
                               f"(collections: {', '.join(names) or 'none yet: ingest documents first'})", 2001)


@router.get("/health")
async def health() -> dict[str, str]:
    """Always answers, without auth: the process is up."""
    return {"status": "ok"}


@router.get("/v1/collections")
async def collections(request: Request) -> dict[str, Any]:
    """Each collection's documents, chunks, model, dimension and chunking (what `kb status --json` says)."""
    return {"collections": await to_thread.run_sync(service_of(request).collections)}


@router.post("/v1/search")
async def search(body: SearchRequest, request: Request) -> Any:  # noqa: ANN401 - a JSON answer or an error
    """The k best passages, each with the fields of `kb search --json`; `latency_ms` is the server's time."""
    missing = await known(request, body.collection)
    if missing:
        return missing
    started = time.perf_counter()
    service = service_of(request)
    response = await to_thread.run_sync(
        lambda: service.search(body.query, body.k, body.collection, mode=body.mode, where=body.where,
                               rerank=body.rerank))
    return {
        "query": body.query, "collection": response.collection, "mode": response.mode,
        "results": [result.to_dict() for result in response.results],
        "timings_ms": {stage: round(seconds * 1000, 2) for stage, seconds in response.timings.items()},
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }


@router.post("/v1/documents")
async def upload(request: Request, files: list[UploadFile] = File(...),  # noqa: B008 - FastAPI's form
                 collection: str | None = Form(None)) -> Any:  # noqa: ANN401, B008
    """Files ingested with the UI's limits (KB_MAX_UPLOAD_MB, KB_MAX_UPLOAD_FILES), kept in KB_UPLOAD_DIR;
    each file's outcome."""
    settings = service_of(request).settings
    if len(files) > settings.max_upload_files:
        return error(request, 413, f"{len(files)} files is more than the {settings.max_upload_files} accepted "
                                   "at once (KB_MAX_UPLOAD_FILES)")
    outcomes, saved = await to_thread.run_sync(_save, files, settings.upload_dir, settings.max_upload_mb)
    if saved:
        report = await to_thread.run_sync(service_of(request).ingest, list(saved), collection)
        for outcome in report.outcomes:
            outcomes.append({"file": saved.get(outcome.source, Path(outcome.source).name), "path": outcome.source,
                             "status": outcome.status, "chunks": outcome.chunks, "reason": outcome.reason or None,
                             "warnings": outcome.warnings})
    status = 200 if any(o["status"] in ("ingested", "unchanged") for o in outcomes) else 400
    return JSONResponse({"files": outcomes}, status_code=status)


def _save(files: list[UploadFile], folder: Path, max_mb: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each upload written under `folder` if within the limits; the refusals, and what was saved by path."""
    folder.mkdir(parents=True, exist_ok=True)
    refused: list[dict[str, Any]] = []
    saved: dict[str, str] = {}
    for upload in files:
        name = upload.filename or "upload"
        size = upload.size if upload.size is not None else _size(upload)
        reason = uploads.check(name, size, max_mb)
        if reason is None:
            try:
                target = uploads.place(folder, name)
                with tempfile.NamedTemporaryFile(dir=folder, delete=False, prefix=".upload-") as part:
                    shutil.copyfileobj(upload.file, part)
                Path(part.name).replace(target)  # whole or not at all: a watcher never sees half a file
                saved[str(target)] = name
                continue
            except (ValueError, OSError) as exc:
                reason = str(exc)
        refused.append({"file": name, "path": None, "status": "refused", "chunks": 0, "reason": reason,
                        "warnings": []})
    return refused, saved


def _size(upload: UploadFile) -> int:
    upload.file.seek(0, 2)
    size = upload.file.tell()
    upload.file.seek(0)
    return size


@router.delete("/v1/documents")
async def delete(body: DeleteRequest, request: Request) -> Any:  # noqa: ANN401 - a JSON answer or an error
    """Documents removed by source (or every document below a folder), with their passages."""
    missing = await known(request, body.collection)
    if missing:
        return missing
    removed, unknown = await to_thread.run_sync(service_of(request).delete, body.sources, body.collection)
    answer = {"removed": removed, "unknown": unknown}
    return JSONResponse(answer, status_code=200 if removed else 404)
