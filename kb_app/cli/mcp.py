"""`kb mcp`: the knowledge base as an MCP server over stdio, for an agent (Claude Desktop, an IDE) that starts
it as a child process. Over HTTP, `kb serve` serves the same tools at /mcp."""

from __future__ import annotations

from ingest.settings import load_settings
from kb_app.cli.options import (
    ChromaDatabase,
    ChromaPath,
    ChromaTenant,
    ChromaUrl,
    Collection,
    Config,
    Endpoint,
    Mode,
    Model,
)
from kb_app.cli.output import err


def mcp_command(
    collection: Collection = None,
    mode: Mode = None,
    endpoint: Endpoint = None,
    model: Model = None,
    chroma_path: ChromaPath = None,
    chroma_url: ChromaUrl = None,
    chroma_tenant: ChromaTenant = None,
    chroma_database: ChromaDatabase = None,
    config: Config = None,
) -> None:
    """Serve the knowledge base to an AI agent over MCP (stdio): search, list_collections and get_passage."""
    from kb_app.mcp_server import build_mcp
    from kb_app.service import KnowledgeService

    settings = load_settings(
        config, collection=collection, endpoint=endpoint, model=model, chroma_path=chroma_path,
        chroma_url=chroma_url, chroma_tenant=chroma_tenant, chroma_database=chroma_database, search_mode=mode,
    )
    service = KnowledgeService(settings)
    # Load the default collection's searcher (store and model) now: a missing collection or a model that does
    # not load is said here, on stderr with exit 2, and the agent's first search does not wait for it.
    with service.searcher():
        pass
    mcp = build_mcp(service)
    # stdout is the protocol's: what kb says goes to stderr, which MCP clients keep as the server's log.
    err.print(f"kb mcp: serving collection {settings.collection!r} over stdio", highlight=False)
    mcp.run()
