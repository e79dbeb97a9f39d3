"""Ingest files into a knowledge base: files -> documents -> chunks -> vectors -> Chroma.

Stages overlap: while one file is read and chunked, chunks of earlier files are embedded in batches
that span files (bounded in inputs and tokens, several in flight), and a single writer stores each
file once all its vectors are back. Unchanged files (same sha256, same chunking) are skipped without
touching the model. A file that fails is reported with its reason and the run goes on.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Sequence

from .backlog import Backlog, InFlight, Write
from .changes import files_to_read, hashes
from .chunking import Chunker, ChunkerSpec
from .client import lexical_dir
from .discover import discover
from .embeddings import Embedder, make_embedder
from .errors import ConfigError, EmbeddingError, KbError, LoadError, StoreError
from .formats import file_type_of
from .formats.image import IMAGE_TYPES
from .inflight import Gate
from .knowledge_base import DocumentWrite, KnowledgeBase
from .lock import write_lock
from .prepare import Workers, is_big, load_chunker_early, timed
from .processes import give_back_memory
from .records import DocumentRecord
from .report import FileOutcome, IngestReport, Progress, Silent, StageTimes
from .reuse import Twins, VectorReuse
from .settings import Settings
from .store_process import StoreProcess
from .writes import collection_spec, document_write

_WRITE_BACKLOG = 1024  # chunks (~10 MB of vectors at 2,560-d, drained after the last request); half a write
_PART_CHUNKS = _WRITE_BACKLOG // 2  # a file with more is written in parts as its vectors come back


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # reported as unreadable when it is read


def ingest(
    paths: Sequence[str | Path],
    settings: Settings,
    *,
    prune: bool = False,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
    force: bool = False,
    store_process: bool | None = None,
) -> IngestReport:
    """Ingest `paths` (files or folders) into the knowledge base `settings` names.

    `force` re-reads and re-embeds files even when they are unchanged (re-index). `store_process`:
    write an embedded store from a process of its own (see `StoreProcess`); None decides by the run's
    size. A caller that keeps the same embedded store open in its own process (the UI) passes False.
    """
    return asyncio.run(
        ingest_async(paths, settings, prune=prune, progress=progress, embedder=embedder,
                     force=force, store_process=store_process)
    )


def reembed(source: Settings, target: Settings, progress: Progress | None = None) -> IngestReport:
    """Build collection `target.collection` with `target`'s model from the files behind `source.collection`.

    The files are read and chunked again (the new model's tokenizer bounds the chunks), and the source
    collection is left exactly as it was: searches keep working on it until the new one is complete and
    the user switches (`--collection`, `KB_COLLECTION`). Running it again resumes: files already in the
    target are unchanged. Files gone from disk are reported as failed; their chunks stay in the source.
    """
    if (source.collection, source.chroma_url, source.chroma_path) == (target.collection, target.chroma_url,
                                                                      target.chroma_path):
        raise ConfigError("kb reembed needs a new collection name (--to): "
                          "the old one is kept until the new one is done")
    old = KnowledgeBase.open(source)
    if not old.exists():
        raise ConfigError(f"no collection {source.collection!r} to re-embed")
    sources = sorted(old.documents())
    present = [s for s in sources if os.path.exists(s)]
    report = ingest(present, target, progress=progress)
    for gone in sorted(set(sources) - set(present)):
        report.outcomes.append(FileOutcome(gone, "failed", reason=f"file gone: cannot re-embed it (its chunks stay "
                                                                   f"in {source.collection!r})"))
    return report


async def ingest_async(
    paths: Sequence[str | Path],
    settings: Settings,
    *,
    prune: bool = False,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
    force: bool = False,
    store_process: bool | None = None,
) -> IngestReport:
    started, cpu_started = time.perf_counter(), time.process_time()
    progress = progress or Silent()
    own_embedder = embedder is None
    embedder = embedder or make_embedder(settings)
    try:
        spec = ChunkerSpec.of(settings, embedder)
        run = _Run(embedder, spec, settings, progress)
        outcomes = await run.go(paths, prune, force, store_process)
    finally:
        if own_embedder:
            await embedder.aclose()
    run.stages.process_cpu = time.process_time() - cpu_started
    embedder.stats.in_flight = embedder.limits()
    ended = time.perf_counter()
    if run.first_sent is not None and run.last_answer is not None:
        run.stages.to_first_request = run.first_sent - started
        run.stages.after_last_answer = ended - run.last_answer
    return IngestReport(settings.collection, embedder.model, outcomes, ended - started,
                        embedder.stats, run.stages, run.todo_bytes, settings.shard, run.other_shards)


class _Run:
    """One ingest run's state; `go` drives the stages."""

    def __init__(self, embedder: Embedder, spec: ChunkerSpec, settings: Settings,
                 progress: Progress) -> None:
        self.kb: KnowledgeBase | StoreProcess | None = None  # opened once the run's size is known
        self.embedder, self.spec, self.settings = embedder, spec, settings
        self.chunker = spec.build()  # this process's own: signatures, token counts, small runs
        self.progress = progress
        self.outcomes: list[FileOutcome] = []
        self.records: dict[str, DocumentRecord] = {}  # what the store held when the run began
        self.sizes: dict[str, int] = {}
        self.todo_bytes = 0
        self.shard = settings.shard_spec
        self.other_shards = 0
        self.queue: asyncio.Queue[tuple[InFlight, int] | None] = asyncio.Queue(
            maxsize=max(256, settings.batch_inputs * embedder.concurrency * 2)
        )
        self.writes = Backlog(_WRITE_BACKLOG)
        self.partial: dict[int, InFlight] = {}  # files with parts sent to the store and no record yet
        self.slots = Gate(embedder.in_flight_limit)
        self.ensured = False
        self.stages = StageTimes()
        self.group: asyncio.TaskGroup | None = None
        self.workers: Workers | None = None  # opened once the files to read are known
        self.early: Future[Chunker] | None = None  # this process's tokenizer, loading while the store opens
        self.first_sent: float | None = None  # perf_counter when the first embedding request left
        self.last_answer: float | None = None  # and when the last answer came back
        self.reuse = VectorReuse(embedder)  # on once the records are read
        self.new_store = False  # no store on disk when the run began
        self.twins = Twins()  # chunks waiting for an answer another chunk with the same input is getting
        self.opening: asyncio.Task[dict[str, DocumentRecord]] | None = None  # reading the records, if not done

    def _finish(self, outcome: FileOutcome) -> None:
        self.outcomes.append(outcome)
        self.progress.file_done(outcome, self.sizes.get(outcome.source, 0))

    async def go(self, paths: Sequence[str | Path], prune: bool, force: bool = False,
                 store_process: bool | None = None) -> list[FileOutcome]:
        # First, what the first file will need and takes a while to load (the tokenizer, langchain's splitter):
        # it loads while the files are listed and the store opens.
        self.early = load_chunker_early(self.chunker)
        store = ([] if self.settings.chroma_url else [self.settings.chroma_path]) + [lexical_dir(self.settings)]
        files, errors = discover(paths, self.settings.include, self.settings.exclude, skip=store)
        if self.shard is not None:  # decided by path alone: the other workers make the same split
            mine = [path for path in files if self.shard.owns(str(path))]
            self.other_shards = len(files) - len(mine)
            files = mine
            given = {str(path) for path in paths}  # a bad argument is every worker's to report
            errors = [error for error in errors if str(error.path) in given or self.shard.owns(str(error.path))]
        for error in errors:
            self.outcomes.append(FileOutcome(error.path, "failed", reason=error.reason))
        found_bytes = sum(_size(p) for p in files)
        if store_process is None:
            store_process = is_big(len(files), found_bytes) and not self.settings.chroma_url
        # Taken before the store is opened, so the records this run reads are the last writer's.
        with write_lock(self.settings, waiting=getattr(self.progress, "waiting", None)):
            # No store on disk yet: it has no records to wait for (the first write waits for it to open).
            self.new_store = not self.settings.chroma_url and not (
                Path(self.settings.chroma_path) / "chroma.sqlite3").exists()
            self.kb = StoreProcess(self.settings) if store_process else KnowledgeBase.open(self.settings, create=True)
            self.stages.store_in_process = store_process
            try:
                return await self._go(files, prune, force)
            finally:
                if isinstance(self.kb, StoreProcess):
                    self.kb.close()

    async def _go(self, files: list[Path], prune: bool, force: bool) -> list[FileOutcome]:
        todo = await self._start(files, force)
        self.todo_bytes = sum(self.sizes.get(str(p), 0) for p, _ in todo)
        self.progress.start(len(todo), self.todo_bytes)
        images = sum(file_type_of(path) in IMAGE_TYPES for path, _ in todo)
        self.workers = Workers(self.settings, self.spec, self.chunker,
                               is_big(len(todo), self.todo_bytes, images), self.early)
        self.early = None  # the workers hold it while they need it
        self.stages.prepare_in_workers = bool(self.workers.processes)
        try:
            if todo:
                async with asyncio.TaskGroup() as group:
                    self.group = group  # embedding tasks join it, so a failure cancels them all
                    group.create_task(self._produce(todo))
                    group.create_task(self._batch())
                    group.create_task(self._write())
        except BaseExceptionGroup as errors:
            # A stage failed for the whole run (a model mismatch found at the first write, a store error):
            # report the kb error itself, not asyncio's wrapper.
            first = next((e for e in errors.exceptions if isinstance(e, KbError)), None)
            if first is None:
                raise
            raise first from None
        finally:
            self.workers.close()
            if self.opening is not None:  # the run failed: the store finishes opening before it is closed
                await asyncio.wait([self.opening])
        await self._opened()
        if prune:
            await self._prune(self.records, {str(p) for p in files})
        try:  # a collection from before the lexical index, or a run killed between its two writes
            await asyncio.to_thread(self.kb.sync_lexical)
        except KbError as exc:
            self.outcomes.append(FileOutcome("(lexical index)", "failed", reason=str(exc)))
        return self.outcomes

    async def _start(self, files: list[Path], force: bool) -> list[tuple[Path, str]]:
        """Read the store's records, and meanwhile hash the files and probe the endpoint (the tokenizer is
        loading since the run began). A store not yet on disk has no records: its opening goes on behind the
        first files, and the first write waits for it. The files to read."""
        assert self.kb is not None
        hashing = asyncio.create_task(asyncio.to_thread(hashes, files))
        probe = asyncio.create_task(self.embedder.probe())
        probe.add_done_callback(lambda task: task.cancelled() or task.exception())  # raised below, or not wanted
        try:
            self.opening = asyncio.create_task(asyncio.to_thread(self._records, force))
            if self.new_store:
                self.opening.add_done_callback(lambda task: task.cancelled() or task.exception())  # awaited later
            else:
                self.records, self.opening = await self.opening, None
            self.reuse.kb, self.reuse.enabled = self.kb, not force and bool(self.records)
            todo, outcomes, self.sizes = files_to_read(files, await hashing, self.records, self.chunker.signature,
                                                       force)
            self.outcomes += outcomes
            if todo:
                # Before any file is parsed: a server that is not there is one message, not retries for every
                # batch. A run with nothing to embed (all unchanged, a prune) needs no server.
                await probe
        finally:
            probe.cancel()
        return todo

    def _records(self, force: bool = False) -> dict[str, DocumentRecord]:
        """The store's records, once it has checked the run's model against the collection's. One call in
        one thread: the event loop, slowed meanwhile by the tokenizer loading, is not woken in between.
        A collection with documents then has its vectors read once: the first read of a freshly opened store
        is slow, and the files' reuse lookups would each wait for it."""
        assert self.kb is not None
        self.kb.check_model(self.embedder.model, self.settings.dimensions, self.embedder.instruction.name)
        records = self.kb.documents()
        if records and not force:
            self.kb.vectors_for(["0" * 32])
        return records

    async def _produce(self, todo: list[tuple[Path, str]]) -> None:
        assert self.group is not None and self.workers is not None
        ahead = asyncio.Semaphore(max(2, 2 * self.workers.processes))  # files read ahead of the embedder
        tasks = []
        for path, digest in todo:
            await ahead.acquire()
            tasks.append(self.group.create_task(self._prepare(path, digest, ahead)))
        if tasks:
            await asyncio.gather(*tasks)
        # Every file is read: the workers' exit overlaps the last requests instead of following them.
        await asyncio.to_thread(self.workers.close)
        # Only a finished producer marks the end: if the run is cancelled, every stage is being cancelled.
        await self.queue.put(None)

    async def _prepare(self, path: Path, digest: str, ahead: asyncio.Semaphore) -> None:
        assert self.workers is not None
        try:
            try:
                (loaded, pieces, parse_cpu), wall, cpu = await self.workers.prepare(path, digest)
            except LoadError as exc:
                self._finish(FileOutcome(str(path), "failed", reason=exc.reason))
                return
            except ConfigError:  # a tokenizer that cannot load fails every file alike: end the run with it
                raise
            except Exception as exc:  # a parser bug or a crashed worker must not end the run: report it on the file
                self._finish(FileOutcome(str(path), "failed", reason=f"{type(exc).__name__}: {exc}"))
                return
            self.stages.prepare_wall += wall
            self.stages.prepare_cpu += cpu
            self.stages.parse_cpu += parse_cpu
            item = InFlight(loaded, pieces, [None] * len(pieces), len(pieces))
            item.keys = [self.reuse.key(chunk.text) for _, chunk in pieces]
            self.progress.planned(len(pieces), sum(c.tokens for _, c in pieces))
            reused_tokens = await self.reuse.take(item)
            if item.reused:  # told as reused first: a display (metrics) may subtract them from the embedded count
                self.progress.reused(item.reused, reused_tokens)
                self.progress.embedded(item.reused, reused_tokens)
            if item.remaining == 0:  # no chunks, or every vector reused: straight to the writer
                ready, item.ready = item.ready, []
                await self.writes.put(Write(item, ready, final=True))
            for index in range(len(pieces)):
                if item.vectors[index] is None and self.twins.send(item, index):
                    await self.queue.put((item, index))
        finally:
            ahead.release()

    async def _batch(self) -> None:
        """Group queued chunks into requests bounded in inputs and tokens; keep `concurrency` in flight."""
        max_inputs, max_tokens = self.settings.batch_inputs, self.settings.batch_tokens
        assert self.group is not None
        pending: set[asyncio.Task] = set()
        carry: tuple[InFlight, int] | None = None
        done = False
        while not done:
            await self.slots.acquire()  # released by the request when it ends
            batch: list[tuple[InFlight, int]] = []
            tokens = 0
            while len(batch) < max_inputs:
                if carry is not None:
                    entry, carry = carry, None
                elif batch:
                    try:  # a short wait fills a batch when chunks are arriving; an idle queue sends it
                        entry = await asyncio.wait_for(self.queue.get(), timeout=0.005)
                    except TimeoutError:
                        break
                else:
                    entry = await self.queue.get()
                if entry is None:
                    done = True
                    break
                item, index = entry
                if item.failed and not self.twins.needed(item, index):
                    continue
                cost = item.pieces[index][1].tokens
                if batch and tokens + cost > max_tokens:
                    carry = entry
                    break
                batch.append(entry)
                tokens += cost
            if not batch:
                await self.slots.release()
                continue
            task = self.group.create_task(self._embed(batch, tokens))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        await self.writes.put(None)

    async def _embed(self, batch: list[tuple[InFlight, int]], tokens: int) -> None:
        try:
            texts = [item.pieces[index][1].text for item, index in batch]
            requested = time.perf_counter()
            self.first_sent = self.first_sent or requested
            try:
                vectors, too_long = await self.embedder.embed_partial(texts, "document")
                self.last_answer = time.perf_counter()
                self.stages.embed_wall += self.last_answer - requested
            except EmbeddingError as exc:
                self._fail(self.twins.with_waiting(batch), str(exc))
                return
            except Exception as exc:  # an embedder bug must not end the run: report it on the files
                self._fail(self.twins.with_waiting(batch), f"embedding failed: {type(exc).__name__}: {exc}")
                return
            for position, error in too_long.items():
                item, index = batch[position]
                doc, chunk = item.pieces[index]
                page = f"page {doc.page}, " if doc.page else ""
                self._fail(self.twins.with_waiting([batch[position]]),
                           f"chunk {chunk.index} ({page}chars {chunk.start}-{chunk.end}, "
                           f"{chunk.tokens} tokens by {self.chunker.counter.name}): {error}")
            self.progress.embedded(len(batch) - len(too_long), tokens)
            touched: dict[int, InFlight] = {}
            for (item, index), vector in zip(batch, vectors):
                if vector is None:
                    continue
                self.reuse.remember(item.keys[index], vector)
                twins = self.twins.answered(item, index)
                if twins:
                    cost = item.pieces[index][1].tokens
                    self.progress.reused(len(twins), cost * len(twins))  # as reused first: see `_prepare`
                    self.progress.embedded(len(twins), cost * len(twins))
                for twin, (owner, at) in enumerate([(item, index), *twins]):
                    if owner.failed:
                        continue
                    owner.vectors[at] = vector
                    owner.remaining -= 1
                    owner.ready.append(at)
                    owner.reused += twin > 0  # the first is the chunk that was sent
                    touched[id(owner)] = owner
            for item in touched.values():
                if item.remaining == 0 and not item.ready:
                    continue  # another request's task handed the last vectors over meanwhile, and reports it
                # A big file goes to the store in parts, so its vectors never pile up whole (they can take
                # several times the text's size); its record still goes last, with its last part.
                if item.remaining == 0 or len(item.ready) >= _PART_CHUNKS:
                    ready, item.ready = item.ready, []
                    await self.writes.put(Write(item, ready, final=item.remaining == 0))
                self.progress.file_progress(item.loaded.source, len(item.pieces) - item.remaining, len(item.pieces))
        finally:
            await self.slots.release()

    def _fail(self, batch: list[tuple[InFlight, int]], reason: str) -> None:
        for item, _ in batch:
            if not item.failed:
                item.failed = reason
                self._finish(FileOutcome(item.loaded.source, "failed", reason=reason, warnings=item.loaded.warnings))

    async def _opened(self) -> None:
        """Wait for a new store to have opened (`_start` did not): before the first write, and the end."""
        if self.opening is not None:
            opening, self.opening = self.opening, None
            self.records = await opening

    async def _write(self) -> None:
        finished = False
        while not finished:
            items = await self.writes.take()
            await self._opened()
            if items[-1] is None:  # the end mark is the last thing ever queued
                finished = True
                items.pop()
            writes = [item for item in items if item is not None]
            live = [write for write in writes if not write.item.failed]
            # A file without chunks needs only its record; the chunk collection waits for a known dimension.
            if any(write.indices for write in live):
                await self._ensure()
            if live:
                await self._store(live)
            await self.writes.stored(writes)
            for item in [item for item in self.partial.values() if item.failed]:
                await self._take_out(item)
            give_back_memory()  # the written vectors' pages, or this process keeps its peak for the run

    async def _take_out(self, item: InFlight) -> None:
        """A file that failed after some of its parts were sent to the store: those chunks go (its
        earlier version's record and chunks, if any, stay: the parts never replaced them)."""
        assert self.kb is not None
        self.partial.pop(id(item), None)
        record = self.records.get(item.loaded.source)
        if record is None or record.sha256 != item.loaded.sha256:  # same hash: the same ids, still vouched for
            try:
                await asyncio.to_thread(self.kb.delete_chunks, item.stored)
            except StoreError as exc:
                for outcome in self.outcomes:
                    if outcome.source == item.loaded.source and outcome.status == "failed":
                        outcome.reason += f"; its {len(item.stored)} chunks stored so far could not be removed " \
                                          f"({exc}): kb ingest --prune removes them"
        item.stored = []

    async def _ensure(self) -> None:
        if self.ensured:
            return
        assert self.kb is not None
        # ModelMismatchError ends the run: never mix vectors
        await asyncio.to_thread(self.kb.ensure, collection_spec(self.embedder, self.chunker))
        self.ensured = True

    async def _store(self, items: list[Write]) -> None:
        assert self.kb is not None
        # Built in order: a part's ids are in `stored` before a later write of its file is built, so that
        # file's last write keeps (and its record vouches for) every part, in this call or before.
        writes = [self._document_write(item) for item in items]
        try:
            _, wall, cpu = await asyncio.to_thread(timed, self.kb.write_documents, writes)
        except StoreError as exc:
            if len(writes) == 1:
                self._fail([(items[0].item, 0)], str(exc))
            else:  # tell which file it was: write them one by one, in order
                for queued, write in zip(items, writes):
                    if queued.item.failed:
                        continue  # a part of it failed: its last write must not vouch for the rest
                    try:
                        await asyncio.to_thread(self.kb.write_documents, [write])
                    except StoreError as single:
                        self._fail([(queued.item, 0)], str(single))
            wall = cpu = 0.0
        self.stages.store_wall += wall
        self.stages.store_cpu = self.kb.cpu if isinstance(self.kb, StoreProcess) else self.stages.store_cpu + cpu
        for queued, write in zip(items, writes):
            item, loaded = queued.item, queued.item.loaded
            if write.record is not None and not item.failed:
                self.partial.pop(id(item), None)
                self._finish(FileOutcome(loaded.source, "ingested", write.record.chunks, write.record.tokens,
                                         warnings=loaded.warnings, reused=item.reused))

    def _document_write(self, queued: Write) -> DocumentWrite:
        self.partial[id(queued.item)] = queued.item  # parts in the store, and no record yet
        return document_write(queued, self.chunker.signature, self.embedder.dimension,
                              replacing=queued.item.loaded.source in self.records)

    async def _prune(self, records: dict[str, DocumentRecord], seen: set[str]) -> None:
        assert self.kb is not None
        for source in sorted(records):
            if source in seen or os.path.exists(source) or (self.shard and not self.shard.owns(source)):
                continue
            try:
                removed = await asyncio.to_thread(self.kb.delete_document, source)
            except KbError as exc:
                self.outcomes.append(FileOutcome(source, "failed", reason=f"prune: {exc}"))
                continue
            self.outcomes.append(FileOutcome(source, "pruned", removed))
        try:
            # Only this shard's: another worker's big file has parts stored before its record.
            orphans = await asyncio.to_thread(self.kb.delete_orphans, self.shard)
        except KbError as exc:
            self.outcomes.append(FileOutcome("(chunks without a record)", "failed", reason=f"prune: {exc}"))
            return
        for source, removed in sorted(orphans.items()):
            self.outcomes.append(FileOutcome(source, "pruned", removed, warnings=[
                "chunks without a record, left by a run killed or failed between the file's parts"]))
