"""Folder sync: keep a collection in step with folders while their files change (`kb watch`, `kb serve --watch`).

At start the sync catches up (an incremental ingest of the folders, and removal of the documents recorded under
them whose files are gone); then each change is taken in a round of its own once the folder is quiet: new and
changed files ingested, deleted files' documents removed. Only the documents under the watched folders are ever
removed: another folder's documents in the same collection are never touched. Events come from `watchfiles`
(inotify on Linux); a burst of saves waits for `debounce_ms` of quiet, and a file is read only once its size and
modification time have stood still for `settle_ms` (a copy still being written is not read half-way). A file that
fails to read is reported and waits for its next change; a round that fails as a whole (the store busy or down) is
reported and tried again, 5 s later, then less and less often.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from watchfiles import Change, watch

from .client import lexical_dir
from .discover import discover, glob_filter
from .embeddings import LOCAL_MODEL, EmbedStats
from .errors import ConfigError, KbError
from .formats import file_type_of
from .knowledge_base import KnowledgeBase
from .manage import delete_documents
from .metrics import Metrics
from .pipeline import ingest
from .report import FileOutcome, IngestReport
from .settings import Settings

log = logging.getLogger(__name__)

# watchfiles hands back control at least this often (ms), so pending files are checked and a stop is seen soon.
_TICK_MS = 200
_STEP_MS = 50
_DIR = ("dir",)  # a path's signature when it is a folder
_RETRY_S, _RETRY_MAX_S = 5.0, 300.0  # a failed round's paths are tried again after 5 s, 10 s, ... up to 5 minutes

Signature = tuple | None  # (size, mtime_ns) of a file, _DIR, or None when the path is gone


@dataclass
class SyncRound:
    """One round of a folder sync: the catch-up at start, or the files changed before a quiet moment."""

    catch_up: bool
    report: IngestReport  # files ingested, unchanged or failed; documents of deleted files as "pruned"


@dataclass
class _Pending:
    """A changed path waiting for quiet: its last event, and since when its signature has stood still."""

    last_event: float
    signature: Signature
    stable_since: float
    not_before: float = 0.0  # a failed round's path waits for its retry


def _signature(path: str) -> Signature:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return _DIR if stat.S_ISDIR(found.st_mode) else (found.st_size, found.st_mtime_ns)


def _folders(paths: Sequence[str | Path]) -> list[Path]:
    """The folders to watch, resolved as ingest records sources; one inside another is watched through it."""
    if not paths:
        raise ConfigError("name at least one folder to watch")
    folders = []
    for raw in paths:
        folder = Path(raw).expanduser().resolve()
        if not folder.exists():
            raise ConfigError(f"cannot watch {raw}: no such folder")
        if not folder.is_dir():
            raise ConfigError(f"cannot watch {raw}: not a folder (name its folder, or ingest it with kb ingest)")
        folders.append(folder)
    return [f for f in dict.fromkeys(folders) if not any(o != f and o in f.parents for o in folders)]


class FolderSync:
    """Keeps the collection `settings` names in step with `paths` (folders) until `run`'s stop event is set.

    `on_report` is called with each round's `SyncRound` (always for the catch-up, even when nothing changed;
    afterwards only for rounds that did something). Each file's outcome is also logged, one line per file.
    """

    def __init__(self, paths: Sequence[str | Path], settings: Settings, *, debounce_ms: int = 500,
                 settle_ms: int = 1000, on_report: Callable[[SyncRound], None] | None = None,
                 metrics: Metrics | None = None) -> None:
        self.roots = _folders(paths)
        self.metrics = metrics  # kb serve --watch: its rounds counted in the server's /metrics
        self.settings = settings
        self.debounce, self.settle = debounce_ms / 1000, settle_ms / 1000
        self.on_report = on_report
        store = ([] if settings.chroma_url else [Path(settings.chroma_path)]) + [lexical_dir(settings)]
        # Compared as strings with a separator: a store folder's own writes never start a round.
        self._store = tuple(str(Path(s).expanduser().resolve()) + os.sep for s in store)
        self._globs = glob_filter(settings.include, settings.exclude)
        self._pending: dict[str, _Pending] = {}
        self._failures: dict[str, int] = {}  # failed rounds in a row, per path: how long its retry waits
        self.caught_up = threading.Event()  # set once the catch-up round is done (servers, tests)

    def run(self, stop: threading.Event | None = None) -> None:
        """Catch up, then sync each change until `stop` is set (or Ctrl-C, in the main thread)."""
        # The catch-up runs once the watch is armed: what changes during it comes as events afterwards.
        for changes in watch(*self.roots, watch_filter=self._relevant, debounce=_TICK_MS, step=_STEP_MS,
                             stop_event=stop, rust_timeout=_TICK_MS, yield_on_timeout=True):
            if not self.caught_up.is_set():
                self._round([str(r) for r in self.roots], catch_up=True)
                self.caught_up.set()
            now = time.monotonic()
            for _change, path in changes:
                self._note(path, now)
            ready = self._ready(now)
            if ready:
                self._round(ready, catch_up=False)

    # -- which events count ----------------------------------------------------------------

    def _root_of(self, path: Path) -> Path | None:
        return next((root for root in self.roots if root == path or root in path.parents), None)

    def _relevant(self, change: Change, raw: str) -> bool:
        """Whether an event may change the collection: not in the store, not hidden, a type kb reads (or a
        folder added); every deletion is kept, as it may be a folder's (its documents are then removed)."""
        if (raw + os.sep).startswith(self._store):
            return False
        path = Path(raw)
        root = self._root_of(path)
        if root is None or any(part.startswith(".") for part in path.relative_to(root).parts):
            return False
        if change == Change.deleted:
            return True
        if path.is_dir():
            return change == Change.added  # a folder moved in; its entries' own events say the rest
        return file_type_of(path) is not None

    def _wanted(self, path: Path) -> bool:
        """A file a round ingests: as `discover` takes files in a folder (type, hidden, globs on the path
        relative to the watched folder)."""
        root = self._root_of(path)
        if root is None or file_type_of(path) is None or (str(path) + os.sep).startswith(self._store):
            return False
        relative = path.relative_to(root)
        return not any(part.startswith(".") for part in relative.parts) and self._globs(str(relative))

    # -- when a changed path is ready --------------------------------------------------------

    def _note(self, path: str, now: float) -> None:
        entry = self._pending.get(path)
        signature = _signature(path)
        if entry is None:
            self._pending[path] = _Pending(now, signature, now)
            return
        entry.last_event = now
        if signature != entry.signature:
            entry.signature, entry.stable_since = signature, now

    def _ready(self, now: float) -> list[str]:
        """Paths quiet for the debounce whose file is settled (gone paths and folders need no settling);
        taken out of the pending set."""
        ready = []
        for path, entry in list(self._pending.items()):
            if now - entry.last_event < self.debounce or now < entry.not_before:
                continue
            signature = _signature(path)
            if signature != entry.signature:  # still being written, without events (or between them)
                entry.signature, entry.stable_since = signature, now
                continue
            if signature is None or signature == _DIR or self._settled(signature, now - entry.stable_since):
                ready.append(path)
                del self._pending[path]
        return sorted(ready)

    def _settled(self, signature: tuple, still_for: float) -> bool:
        """Whether a file is complete: seen standing still for the settle time, or last written longer ago than
        that (a file renamed or moved in keeps its time: it need not wait)."""
        return still_for >= self.settle or time.time() - signature[1] / 1e9 >= self.settle

    # -- rounds ------------------------------------------------------------------------------

    def _sync(self, paths: list[str]) -> IngestReport | None:
        """Documents of gone files removed (a rename is a removal and an addition), then present files ingested
        (unchanged ones skipped by hash). A folder (a watched one at the catch-up, or one moved in) is walked: its
        files ingested, the documents recorded under it whose files are gone removed."""
        started = time.perf_counter()
        files: list[Path] = []
        failed: list[FileOutcome] = []
        gone = []
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                found, errors = discover([path], skip=[s.rstrip(os.sep) for s in self._store])
                files += [f for f in found if self._wanted(f)]
                failed += [FileOutcome(e.path, "failed", reason=e.reason) for e in errors]
                gone.append(raw)  # what was recorded under it and is no longer there
            elif path.exists():
                if self._wanted(path):
                    files.append(path)
            else:
                gone.append(raw)
        outcomes = self._remove(gone) + failed
        if files:
            run = self.metrics.ingest if self.metrics is not None else ingest
            report = run(sorted(set(files)), self.settings, store_process=False)
            report.outcomes[:0] = outcomes
            return report
        return self._report(outcomes, started) if outcomes else None

    def _remove(self, gone: list[str]) -> list[FileOutcome]:
        """Remove the documents recorded at or under the `gone` paths whose files no longer exist (only those:
        never another folder's, as `ingest(prune=True)` would)."""
        if not gone:
            return []
        kb = KnowledgeBase.open(self.settings)
        if not kb.exists():
            return []
        under = tuple(g.rstrip(os.sep) + os.sep for g in gone)
        victims = [s for s in sorted(kb.documents()) if (s in gone or s.startswith(under)) and not os.path.exists(s)]
        if not victims:
            return []
        removed, _unknown = delete_documents(self.settings, victims)
        return [FileOutcome(source, "pruned", chunks=chunks) for source, chunks in removed.items()]

    def _report(self, outcomes: list[FileOutcome], started: float) -> IngestReport:
        """A round's report when nothing was ingested (only removals, or a round that failed)."""
        model = self.settings.model or LOCAL_MODEL
        return IngestReport(self.settings.collection, model, outcomes, time.perf_counter() - started, EmbedStats())

    def _round(self, paths: list[str], catch_up: bool) -> None:
        """Sync `paths` and report it. A round that fails (a store error) is reported as each of its paths failing
        and tried again later, sooner first; the watch goes on meanwhile."""
        started = time.perf_counter()
        try:
            report = self._sync(paths)
        except Exception as exc:  # a store error, a bug: this round fails, its paths are tried again
            if not isinstance(exc, KbError):
                log.exception("folder sync round failed")
            delay = self._retry_later(paths)
            reason = str(exc) if isinstance(exc, KbError) else f"{type(exc).__name__}: {exc}"
            reason += f" (kb tries again in {delay:.0f} s)"
            report = self._report([FileOutcome(p, "failed", reason=reason) for p in paths], started)
        else:
            for path in paths:
                self._failures.pop(path, None)
        if report is None and not catch_up:
            return
        report = report or self._report([], started)
        _log_outcomes(report)
        if self.on_report is not None:
            try:
                self.on_report(SyncRound(catch_up, report))
            except Exception:  # the caller's callback must not end the watch
                log.exception("folder sync: the on_report callback failed")

    def _retry_later(self, paths: list[str]) -> float:
        """Put a failed round's paths back, to be taken again after a delay that doubles with each failure."""
        now = time.monotonic()
        delay = 0.0
        for path in paths:
            failures = self._failures[path] = self._failures.get(path, 0) + 1
            delay = min(_RETRY_S * 2 ** (failures - 1), _RETRY_MAX_S)
            entry = self._pending.setdefault(path, _Pending(now, _signature(path), now))
            entry.not_before = now + delay
        return delay


def _log_outcomes(report: IngestReport) -> None:
    """One line per file: ingested and removed files at INFO, failures at WARNING, unchanged ones at DEBUG."""
    for outcome in report.outcomes:
        warnings = f" ({'; '.join(outcome.warnings)})" if outcome.warnings else ""
        if outcome.status == "ingested":
            log.info("ingested %s: %d chunks%s", outcome.source, outcome.chunks, warnings)
        elif outcome.status == "pruned":
            log.info("removed %s: file gone, %d chunks removed", outcome.source, outcome.chunks)
        elif outcome.status == "failed":
            log.warning("failed %s: %s", outcome.source, outcome.reason)
        else:
            log.debug("unchanged %s", outcome.source)


class Watching:
    """A FolderSync running in a thread of its own (beside a server). `stop()` ends it after its current round."""

    def __init__(self, sync: FolderSync) -> None:
        self.sync = sync
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="kb-watch", daemon=True)

    def _run(self) -> None:
        try:
            self.sync.run(self.stop_event)
        except Exception:  # the watch itself failed (its folder removed): the server goes on without it
            log.exception("folder sync stopped: %s are no longer watched", ", ".join(map(str, self.sync.roots)))

    def start(self) -> Watching:
        self.thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop watching; waits (up to `timeout` s) for a round in progress to finish its writes."""
        self.stop_event.set()
        self.thread.join(timeout)

    def __enter__(self) -> Watching:
        return self.start() if self.thread.ident is None else self  # watch_in_thread's is started already

    def __exit__(self, *exc: object) -> None:
        self.stop()


def watch_in_thread(paths: Sequence[str | Path], settings: Settings, **options: object) -> Watching:
    """Start syncing `paths` in a background thread; `options` are FolderSync's. Bad folders raise ConfigError
    here, in the caller's thread."""
    return Watching(FolderSync(paths, settings, **options)).start()  # type: ignore[arg-type]
