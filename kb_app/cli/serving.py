"""`kb serve`: the knowledge base over HTTP for other programs (REST, Dify's external knowledge API, MCP)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from ingest.errors import ConfigError
from ingest.settings import Settings, load_settings
from kb_app.cli.options import ChromaDatabase, ChromaPath, ChromaTenant, ChromaUrl, Collection, Config, Endpoint, Model
from kb_app.cli.output import err


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_exposure(host: str, settings: Settings, insecure: bool) -> str | None:
    """The bearer token, after refusing to listen beyond loopback without one (unless `insecure`)."""
    token = settings.api_token.get_secret_value() if settings.api_token else None
    if not token and not is_loopback(host) and not insecure:
        raise ConfigError(f"refusing to listen on {host} with no KB_API_TOKEN: anyone who can reach it could "
                          "read and change the knowledge base; set KB_API_TOKEN (environment or config file), "
                          "or pass --insecure")
    return token


def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    insecure: Annotated[bool, typer.Option(
        help="Listen beyond loopback without KB_API_TOKEN (anyone who can reach the port can use it)")] = False,
    watch: Annotated[Optional[list[Path]], typer.Option(
        help="Keep the collection in step with this folder while serving (repeatable; as kb watch)")] = None,
    collection: Collection = None,
    endpoint: Endpoint = None,
    model: Model = None,
    chroma_path: ChromaPath = None,
    chroma_url: ChromaUrl = None,
    chroma_tenant: ChromaTenant = None,
    chroma_database: ChromaDatabase = None,
    config: Config = None,
) -> None:
    """Serve the knowledge base over HTTP: /v1/search, /v1/documents, Dify's /retrieval, MCP at /mcp, OpenAPI
    at /docs."""
    import uvicorn

    from kb_app.api import create_app
    from kb_app.mcp_server import build_mcp, mcp_http_app
    from kb_app.service import KnowledgeService

    settings = load_settings(config, collection=collection, endpoint=endpoint or None, model=model,
                             chroma_path=chroma_path, chroma_url=chroma_url, chroma_tenant=chroma_tenant,
                             chroma_database=chroma_database)
    token = check_exposure(host, settings, insecure)
    service = KnowledgeService(settings)
    mcp = build_mcp(service)
    # MCP's streamable HTTP at /mcp: its session manager runs with the server (a mounted app's own lifespan
    # does not), behind the same bearer token as every other route.
    app = create_app(service, token, lifespans=(lambda _app: mcp.session_manager.run(),),
                     mounts={"/mcp": mcp_http_app(mcp, host=host)})
    where = f"[{host}]" if ":" in host else host
    err.print(f"kb serve on http://{where}:{port} (collection {settings.collection}; API docs at /docs"
              f"{'; bearer token required' if token else ''}); Ctrl-C to stop")
    watching = None
    if watch:
        from ingest.watch import watch_in_thread

        synced = logging.getLogger("ingest.watch")  # one line per file synced, as uvicorn's lines look
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        synced.addHandler(handler)
        synced.setLevel(logging.INFO)
        synced.propagate = False
        logging.getLogger("watchfiles").setLevel(logging.WARNING)  # not "1 change detected" per event
        watching = watch_in_thread(watch, settings, metrics=service.metrics)  # a missing folder is refused here
        err.print(f"watching {', '.join(map(str, watch))}: new and changed files are ingested, deleted ones removed")
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
    finally:
        if watching is not None:
            watching.stop()
