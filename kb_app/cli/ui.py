"""`kb ui`: the Streamlit app (kb_app/app.py) in this process's place, with the options given."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Mapping

import typer
from rich.markup import escape

from ingest.settings import load_settings
from kb_app.cli.options import ChromaDatabase, ChromaPath, ChromaTenant, ChromaUrl, Collection, Config, Endpoint, Model
from kb_app.cli.output import err

APP = Path(__file__).resolve().parent.parent / "app.py"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def streamlit_command(host: str, port: int, max_upload_mb: int) -> list[str]:
    """`streamlit run` for kb's app: headless, no usage statistics, and the minimal toolbar (a user has no
    use for Streamlit's developer menu and its Deploy button)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.maxUploadSize", str(max_upload_mb),
        "--client.toolbarMode", "minimal",
    ]


def streamlit_env(environ: Mapping[str, str], **options: Any) -> dict[str, str]:  # noqa: ANN401 - any setting
    """`environ` with each option given (not None) as the `KB_*` variable the app reads its settings from;
    a list joined by commas, as KB_ENDPOINT takes it."""
    env = dict(environ)
    for name, value in options.items():
        if value is not None:
            env[f"KB_{name.upper()}"] = ",".join(value) if isinstance(value, list) else str(value)
    return env


def ui_command(
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8501,
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only)")] = "127.0.0.1",
    collection: Collection = None,
    endpoint: Endpoint = None,
    model: Model = None,
    chroma_path: ChromaPath = None,
    chroma_url: ChromaUrl = None,
    chroma_tenant: ChromaTenant = None,
    chroma_database: ChromaDatabase = None,
    config: Config = None,
) -> None:
    """Start the browser UI (Streamlit): search, upload, library, settings."""
    options = {"collection": collection, "endpoint": endpoint or None, "model": model, "chroma_path": chroma_path,
               "chroma_url": chroma_url, "chroma_tenant": chroma_tenant, "chroma_database": chroma_database}
    settings = load_settings(config, **options)  # refused here, not in the browser
    env = streamlit_env(os.environ, config=config, **options)
    err.print(f"kb UI on http://{host}:{port} (collection {settings.collection}); Ctrl-C to stop")
    if host not in LOOPBACK:
        if settings.ui_password is None:
            err.print(f"[bold yellow]warning:[/] listening on {escape(host)} with no password: anyone who can reach "
                      "this address can search, upload and delete. Set KB_UI_PASSWORD.")
        else:
            err.print("[yellow]note:[/] the password travels in clear over http: put a TLS proxy in front "
                      "for use beyond a trusted network")
    sys.stderr.flush()
    # Streamlit takes this process's place: a signal that stops `kb ui` stops the server, not just its parent.
    os.execve(sys.executable, streamlit_command(host, port, settings.max_upload_mb), env)
