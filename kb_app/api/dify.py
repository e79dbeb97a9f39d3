"""Dify's external knowledge API (`POST /retrieval`), which RAGFlow speaks too: `knowledge_id` is the collection.

Scores are similarities in [-1, 1] (dense cosine, or the reranker's), so Dify's `score_threshold` means what its
users expect; a hybrid search's fused score is a rank statistic and is not what is compared. Metadata
conditions are checked on kb's chunk metadata (source, name, title, file_type, language, page, heading, sheet,
chapter) over a deeper search, then cut to `top_k`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from anyio import to_thread
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from kb_app.api.app import error
from kb_app.api.rest import MAX_QUERY, service_of
from kb_app.search import SearchResult

router = APIRouter()

Operator = Literal["contains", "not contains", "start with", "end with", "is", "is not", "in", "not in", "empty",
                   "not empty", "=", "≠", ">", "<", "≥", "≤", "before", "after"]
FIELDS = ("source", "name", "title", "file_type", "language", "page", "heading", "sheet", "chapter", "location")


class RetrievalSetting(BaseModel):
    top_k: int = Field(default=5, ge=1, le=100)
    score_threshold: float = Field(default=0.0, ge=-1.0, le=1.0)


class Condition(BaseModel):
    name: str | list[str] = Field(description="A metadata field, or a list of them (an older form): any may match")
    comparison_operator: Operator
    value: str | int | float | list[str] | None = None


class MetadataCondition(BaseModel):
    logical_operator: Literal["and", "or"] = "and"
    conditions: list[Condition] = Field(default_factory=list)


class RetrievalRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Dify may add fields; they do not change the answer

    knowledge_id: str = Field(min_length=1)
    query: str = Field(min_length=1, max_length=MAX_QUERY)
    retrieval_setting: RetrievalSetting = Field(default_factory=RetrievalSetting)
    metadata_condition: MetadataCondition | None = None


@router.post("/retrieval")
async def retrieval(body: RetrievalRequest, request: Request) -> Any:  # noqa: ANN401 - records or an error
    """Dify's contract: `{"records": [{content, score, title, metadata}]}`, best first; `{"records": []}`
    when nothing clears the threshold or the conditions."""
    service = service_of(request)
    if not body.query.strip():
        return error(request, 400, "the query is empty", 400)
    if not await to_thread.run_sync(service.exists, body.knowledge_id):
        names = [c["collection"] for c in await to_thread.run_sync(service.collections)]
        return error(request, 404, f"the knowledge base {body.knowledge_id!r} does not exist (kb's collections: "
                                   f"{', '.join(names) or 'none'})", 2001)
    setting, condition = body.retrieval_setting, body.metadata_condition
    depth = setting.top_k * 5 + 20 if condition and condition.conditions else setting.top_k
    response = await to_thread.run_sync(lambda: service.search(body.query, min(depth, 200), body.knowledge_id))
    records = []
    for result in response.results:
        score = similarity(result)
        if score < setting.score_threshold or (condition and not matches(result, condition)):
            continue
        records.append({"content": result.text, "score": round(score, 4), "title": result.title,
                        "metadata": metadata(result)})
        if len(records) == setting.top_k:
            break
    return {"records": records}


def similarity(result: SearchResult) -> float:
    """The score Dify compares with its threshold: the reranker's when it ran, else the dense cosine."""
    if result.rerank_score is not None:
        return result.rerank_score
    return result.dense_score if result.dense_score is not None else 0.0


def metadata(result: SearchResult) -> dict[str, Any]:
    """kb's metadata for one record; always an object, without empty values."""
    fields = {"path": result.source, "source": result.source, "chunk_id": result.chunk_id,
              "file_type": result.file_type, "language": result.language, "page": result.page,
              "location": result.location or None, "heading": result.heading, "sheet": result.sheet,
              "chapter": result.chapter, "ocr": result.ocr or None}
    return {key: value for key, value in fields.items() if value is not None}


def matches(result: SearchResult, condition: MetadataCondition) -> bool:
    """Whether the result satisfies the conditions, joined by `and` or `or`."""
    checks = [_holds(result, each) for each in condition.conditions]
    return all(checks) if condition.logical_operator == "and" else any(checks)


def _holds(result: SearchResult, condition: Condition) -> bool:
    names = condition.name if isinstance(condition.name, list) else [condition.name]
    return any(_compare(_field(result, name), condition.comparison_operator, condition.value) for name in names)


def _field(result: SearchResult, name: str) -> Any:  # noqa: ANN401 - a metadata value
    if name == "name":
        return re.split(r"[\\/]", result.source)[-1]
    if name == "path":
        return result.source
    return getattr(result, name, None) if name in FIELDS else None


def _compare(actual: Any, operator: str, expected: Any) -> bool:  # noqa: ANN401, C901 - Dify's operators
    """One of Dify's comparisons; a missing field satisfies only "empty" and the negations."""
    if operator in ("empty", "not empty"):
        return (actual in (None, "")) == (operator == "empty")
    if actual is None:
        return operator in ("not contains", "is not", "not in", "≠")
    text, wanted = str(actual), expected if isinstance(expected, list) else str(expected)
    if operator in ("in", "not in"):
        values = expected if isinstance(expected, list) else [v.strip() for v in str(expected).split(",")]
        return (text in [str(v) for v in values]) == (operator == "in")
    if operator in ("contains", "not contains"):
        return (str(wanted) in text) == (operator == "contains")
    if operator == "start with":
        return text.startswith(str(wanted))
    if operator == "end with":
        return text.endswith(str(wanted))
    if operator in ("is", "=", "is not", "≠"):
        same = _number(actual) == _number(expected) if _number(expected) is not None else text == str(wanted)
        return same == (operator in ("is", "="))
    left, right = _number(actual), _number(expected)
    if left is None or right is None:  # dates and other text compare as ISO strings do
        left, right = text, str(wanted)
    return {">": left > right, "<": left < right, "≥": left >= right, "≤": left <= right,
            "after": left > right, "before": left < right}[operator]


def _number(value: Any) -> float | None:  # noqa: ANN401
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
