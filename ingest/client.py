"""The Chroma client: embedded (a folder) or a server (a URL, with its token, tenant and database).

Also what a client's errors mean to a user (`store_error`), and where a store's BM25 indexes live.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from .errors import StoreError
from .http import auth_headers, is_unreachable
from .settings import Settings

GENERATION_NAME = ".kb-generation"


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
    return open_client(settings)[0]


def tenant_database(settings: Settings) -> tuple[str, str]:
    """A server's tenant and database: the ones set, else Chroma's defaults."""
    from chromadb.config import DEFAULT_DATABASE, DEFAULT_TENANT

    return settings.chroma_tenant or DEFAULT_TENANT, settings.chroma_database or DEFAULT_DATABASE


def open_client(settings: Settings, create: bool = False) -> tuple[Any, StoreView | None]:
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
            tenant, database = tenant_database(settings)
            if create:
                _ensure_database(server, tenant, database, chroma_settings)
            return chromadb.HttpClient(tenant=tenant, database=database, settings=chroma_settings, **server), None
        Path(settings.chroma_path).mkdir(parents=True, exist_ok=True)
        return StoreView.client(str(settings.chroma_path), chroma_settings)
    except StoreError:
        raise
    except Exception as exc:  # chromadb raises bare Exception and ValueError for what a server answered
        raise store_error(settings, exc) from None


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
        except Exception as exc:  # chromadb's bare Exception carries the server's answer
            if "already exists" not in str(exc):  # another worker created it first
                raise


def _token_headers(settings: Settings) -> dict[str, str] | None:
    """The Chroma token as the header the proxy in front of the server checks."""
    if not settings.chroma_token:
        return None
    token = settings.chroma_token.get_secret_value()
    if settings.chroma_token_header == "Authorization":
        return auth_headers(token)
    return {"X-Chroma-Token": token}


def _unreachable(exc: Exception) -> bool:
    """Nothing answered (refused, unknown host): chromadb says so in a ValueError when the client is made;
    later, httpx's connection error comes through as it is."""
    return is_unreachable(exc) or "Could not connect to a Chroma server" in str(exc)


def store_error(settings: Settings, exc: Exception, doing: str = "cannot open the Chroma store") -> StoreError:
    """What a Chroma client's error means, naming the store: a server that does not answer, a refused token,
    a missing tenant or database each say what to do; anything else is told as what kb was `doing` and the
    error. The token itself never appears in the message."""
    if isinstance(exc, StoreError):
        return exc
    where = settings.chroma_url or settings.chroma_path
    text = str(exc)
    if settings.chroma_token:
        text = text.replace(settings.chroma_token.get_secret_value(), "***")
    if settings.chroma_url and _unreachable(exc):
        return StoreError(f"cannot reach the Chroma server at {where}: is it running, and is the URL right? ({text})")
    if settings.chroma_url and re.search(r"Tenant \[.*\] not found", text):
        return StoreError(f"the Chroma server at {where} has no tenant {tenant_database(settings)[0]!r}: create "
                          "it on the server (Chroma's AdminClient.create_tenant), or check --chroma-tenant")
    if settings.chroma_url and re.search(r"Database \[.*\] not found", text):
        tenant, database = tenant_database(settings)
        return StoreError(f"the Chroma server at {where} has no database {database!r} in tenant {tenant!r}: "
                          "kb ingest creates it; check --chroma-database")
    if settings.chroma_url and re.search(r"\b(401|403)\b|unauthori[sz]ed|forbidden", text, re.IGNORECASE):
        given = "the token given was refused" if settings.chroma_token else "no token is set"
        return StoreError(
            f"the Chroma server at {where} refused kb's request (not authorised): {given}. "
            f"Set KB_CHROMA_TOKEN (and KB_CHROMA_TOKEN_HEADER if the server expects X-Chroma-Token)"
        )
    return StoreError(f"{doing} at {where}: {text}")


def lexical_dir(settings: Settings) -> Path:
    """Where the BM25 indexes live: `lexical_path`, else beside an embedded store's files, else (a Chroma
    server) in this user's data folder, one folder per server (never under the working directory, where it
    would be ingested as a document)."""
    if settings.lexical_path is not None:
        return Path(settings.lexical_path)
    if settings.chroma_url:
        url = urlparse(settings.chroma_url)
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        server = re.sub(r"[^\w.-]+", "_", f"{url.hostname}_{url.port or ''}{url.path}").strip("_")
        folder = base / "kb" / "lexical" / server
        if settings.chroma_tenant or settings.chroma_database:  # same collection names, other collections
            folder = folder.joinpath(*tenant_database(settings))
        return folder
    return Path(settings.chroma_path) / "kb-lexical"
