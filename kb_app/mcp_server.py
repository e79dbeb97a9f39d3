"""kb as an MCP server: the tools an agent needs to search a knowledge base and cite what it found.

Three tools over `KnowledgeService` (so the MCP server has no search logic of its own): `search` (passages with
source, page, heading, score and chunk_id), `list_collections`, and `get_passage` (a chunk by id with the text
around it). The search tool's description names the collections and their documents' languages, so a model
knows what it can ask about before it asks. `kb mcp` serves these over stdio; `kb serve` mounts `mcp_http_app`.

The service is synchronous: each call runs in a worker thread, off the event loop. Input a user can fix (an
empty or huge query, k out of range, an unknown collection or chunk id) comes back as a tool error with a
message, never a traceback.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Callable, Sequence, TypeVar

from anyio import to_thread
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field
from starlette.applications import Starlette

from ingest.errors import KbError
from ingest.knowledge_base import KnowledgeBase
from kb_app.service import KnowledgeService

MAX_QUERY = 10_000  # characters: a question, not a document (as kb serve's REST search)
MAX_K = 100
MAX_NEIGHBOURS = 10
MODES = ("dense", "hybrid")
# Host names that mean this machine only; a server listening on one of them answers only them (DNS rebinding).
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ALL_INTERFACES = ("0.0.0.0", "::", "")

T = TypeVar("T")


class Hit(BaseModel):
    """One passage found, with what an agent needs to cite it."""

    rank: int
    score: float = Field(description="The last ranking stage's score (cosine similarity for dense search)")
    chunk_id: str = Field(description="Pass to get_passage for the text around this passage")
    source: str = Field(description="The file the passage comes from")
    title: str
    page: int | None = Field(description="Page, slide or sheet number; null for a file read whole")
    location: str = Field(description='Where in the file, as a reader says it ("page 4", "slide 3"); may be empty')
    heading: str | None = Field(description="The section heading that matched, when the passage was found by it")
    language: str | None
    text: str


class SearchAnswer(BaseModel):
    query: str
    collection: str
    mode: str
    results: list[Hit]


class CollectionInfo(BaseModel):
    name: str
    default: bool = Field(description="Searched when a tool is given no collection")
    documents: int
    chunks: int
    model: str | None = Field(description="The embedding model the collection was built with")
    languages: dict[str, int] = Field(description="Documents per language (ISO 639-1), most first")
    last_ingest: str | None


class Collections(BaseModel):
    collections: list[CollectionInfo]


class PassageAnswer(BaseModel):
    chunk_id: str
    source: str
    title: str
    page: int | None
    location: str
    heading: str | None
    text: str
    neighbours: list[str] = Field(description="The passage with the passages just before and after it, in order")


def _limits(description: str, **schema: Any) -> Any:  # noqa: ANN401 - a pydantic FieldInfo
    """A parameter's description, with its limits in the JSON schema the model reads; the tool checks them
    itself so that a wrong value gets kb's own message, not a validation dump."""
    return Field(description=description, json_schema_extra=schema or None)


Query = Annotated[str, _limits("A question or keywords, in any language", minLength=1, maxLength=MAX_QUERY)]
TopK = Annotated[int, _limits("How many passages", minimum=1, maximum=MAX_K)]
CollectionName = Annotated[str | None, Field(description="A collection from list_collections; null: the default")]
Mode = Annotated[str | None, _limits("dense (vectors) or hybrid (vectors and BM25 keywords); null: kb's setting",
                                     enum=[*MODES, None])]
ChunkId = Annotated[str, Field(description="A chunk_id from search results")]
Neighbours = Annotated[int, _limits("Passages to add before and after it", minimum=0, maximum=MAX_NEIGHBOURS)]


def languages_of(service: KnowledgeService, collection: str) -> dict[str, int]:
    """Documents per language in a collection, most first ("unknown" for documents kb read before it
    recorded languages)."""
    documents = KnowledgeBase.open(service.settings_for(collection)).documents()
    return dict(Counter(d.language or "unknown" for d in documents.values()).most_common())


def collection_infos(service: KnowledgeService) -> list[CollectionInfo]:
    """Every collection in the store with its counts, model and languages."""
    default = service.settings.collection
    return [
        CollectionInfo(name=c["collection"], default=c["collection"] == default, documents=c["documents"],
                       chunks=c["chunks"], model=c.get("model"), languages=languages_of(service, c["collection"]),
                       last_ingest=c.get("last_ingest"))
        for c in service.collections()
    ]


def search_description(collections: Sequence[CollectionInfo]) -> str:
    """The search tool's description: what it does, and what there is to search (as RAGFlow's MCP server
    does, so that a model can tell whether the knowledge base can answer before it calls)."""
    lines = [
        "Search the knowledge base for the passages that best answer a question. Ask in any language: "
        "passages in other languages are found too. Each result has its source file, page, heading, score and "
        "chunk_id, to cite it; get_passage(chunk_id) returns the text around a passage.",
        "Collections:" if collections else "No collections yet (documents are added with kb ingest).",
    ]
    for c in collections:
        languages = ", ".join(f"{language} ({n})" for language, n in c.languages.items()) or "none"
        default = ", the default" if c.default else ""
        lines.append(f"- {c.name}{default}: {c.documents} documents; languages: {languages}")
    return "\n".join(lines)


class KbTools:
    """The tools, bound to one service. Each checks its input, then calls the service in a worker thread."""

    def __init__(self, service: KnowledgeService) -> None:
        self.service = service

    async def search(self, query: Query, k: TopK = 5, collection: CollectionName = None,
                     mode: Mode = None) -> SearchAnswer:
        """The k passages that best answer `query`."""
        if not query.strip():
            raise ToolError("the query is empty: give a question or keywords")
        if len(query) > MAX_QUERY:
            raise ToolError(f"the query is {len(query):,} characters; at most {MAX_QUERY:,}: ask a question, "
                            "not a document")
        if not 1 <= k <= MAX_K:
            raise ToolError(f"k is {k}; it must be between 1 and {MAX_K}")
        if mode is not None and mode not in MODES:
            raise ToolError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        response = await self._call(lambda: self.service.search(query, k, collection, mode=mode), collection)
        hits = [Hit(rank=r.rank, score=r.score, chunk_id=r.chunk_id, source=r.source, title=r.title, page=r.page,
                    location=r.location, heading=r.heading, language=r.language, text=r.text)
                for r in response.results]
        return SearchAnswer(query=query, collection=response.collection, mode=response.mode, results=hits)

    async def list_collections(self) -> Collections:
        """The knowledge base's collections: documents, passages, languages and embedding model of each."""
        return Collections(collections=await self._call(lambda: collection_infos(self.service), None))

    async def get_passage(self, chunk_id: ChunkId, neighbours: Neighbours = 1,
                          collection: CollectionName = None) -> PassageAnswer:
        """A passage by its chunk_id (from search), with the passages just before and after it."""
        if not chunk_id.strip():
            raise ToolError("chunk_id is empty: pass a chunk_id from search results")
        if not 0 <= neighbours <= MAX_NEIGHBOURS:
            raise ToolError(f"neighbours is {neighbours}; it must be between 0 and {MAX_NEIGHBOURS}")
        found = await self._call(lambda: self.service.passage(chunk_id, neighbours, collection), collection)
        return PassageAnswer(chunk_id=found.chunk_id, source=found.source, title=found.title, page=found.page,
                             location=found.location, heading=found.heading, text=found.text,
                             neighbours=found.neighbours)

    async def _call(self, work: Callable[[], T], collection: str | None) -> T:
        """`work` in a worker thread; kb's errors as tool errors, with their message."""
        try:
            return await to_thread.run_sync(work)
        except KbError as exc:
            raise ToolError(await to_thread.run_sync(self._explain, exc, collection)) from None

    def _explain(self, exc: KbError, collection: str | None) -> str:
        """The error's message; for a collection that does not exist, the ones that do (the service would
        say "ingest documents first", which is no help to an agent that mistyped a name)."""
        if not collection or collection == self.service.settings.collection:
            return str(exc)
        try:
            if self.service.exists(collection):
                return str(exc)
            names = [c["collection"] for c in self.service.collections()]
        except KbError as other:
            return str(other)
        return f"no collection {collection!r}: the collections are {', '.join(map(repr, names)) or 'none yet'}"


def build_mcp(service: KnowledgeService) -> MCPServer:
    """kb's MCP server over `service`: search, list_collections and get_passage. Reads the store's collections
    once, for the search tool's description (list_collections tells what is there now)."""
    mcp = MCPServer(
        "kb",
        instructions="Search a multilingual knowledge base and cite its passages: search, then get_passage for "
                     "more context; list_collections tells what each collection holds.",
        # The SDK configures the root logger at this level: INFO would also log every failed tool call.
        log_level="WARNING",
    )
    tools = KbTools(service)
    # Reading only, from this knowledge base alone: a client may run them without asking the user each time.
    reading = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    mcp.add_tool(tools.search, name="search", description=search_description(collection_infos(service)),
                 annotations=reading)
    mcp.add_tool(tools.list_collections, name="list_collections", annotations=reading)
    mcp.add_tool(tools.get_passage, name="get_passage", annotations=reading)
    return mcp


def transport_security(host: str, allowed_hosts: Sequence[str] = ()) -> TransportSecuritySettings:
    """Which Host (and Origin) headers the MCP endpoint answers. The SDK answers only loopback names by default
    (421 otherwise), which guards a local server from DNS rebinding; a server listening on a name or address
    also answers that name, and `allowed_hosts` add more (a proxy's public name). A server on all interfaces
    (0.0.0.0) is reached by names it cannot know: unless `allowed_hosts` lists them, the check is off there,
    and its bearer token is what keeps strangers out."""
    if host in ALL_INTERFACES and not allowed_hosts:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    names = dict.fromkeys([*LOOPBACK, *([] if host in ALL_INTERFACES else [host]), *allowed_hosts])
    hosts = [f"[{name}]" if ":" in name else name for name in names]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[pattern for h in hosts for pattern in (h, f"{h}:*")],
        allowed_origins=[f"{scheme}://{h}{port}" for h in hosts for scheme in ("http", "https") for port in ("", ":*")],
    )


def mcp_http_app(mcp: MCPServer, host: str = "127.0.0.1", allowed_hosts: Sequence[str] = ()) -> Starlette:
    """The streamable HTTP endpoint at the app's root, to mount at /mcp. Stateless, with JSON answers: each
    request stands alone, so a restarted server or a second worker serves any client. Whoever mounts it must
    run `mcp.session_manager.run()` in its lifespan (a mounted app's own lifespan does not run)."""
    return mcp.streamable_http_app(streamable_http_path="/", stateless_http=True, json_response=True,
                                   transport_security=transport_security(host, allowed_hosts), host=host)
