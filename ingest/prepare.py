"""Read and chunk files, the CPU-bound part of a run: in worker processes for big runs, a thread for small ones."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, TypeVar

from .chunking import Chunk, Chunker, ChunkerSpec
from .documents import Document, LoadedFile
from .formats import ReadOptions, load, marks_headings
from .ocr import OcrProcess
from .processes import give_back_memory, process_pool
from .settings import Settings

Prepared = tuple[LoadedFile, list[tuple[Document, Chunk]], float]
Result = TypeVar("Result")


def prepare(path: Path, sha256: str, chunker: Chunker, options: ReadOptions | None = None) -> Prepared:
    """Read and chunk one file (CPU-bound: runs in a worker); also returns the CPU seconds reading took."""
    started = time.thread_time()
    loaded = load(path, sha256=sha256, options=options)
    parse_cpu = time.thread_time() - started
    pieces = []
    for doc in loaded.documents:
        chunks = chunker.split(doc.text)
        pieces += [(doc, chunk) for chunk in chunks]
        if marks_headings(doc.file_type):
            pieces += [(doc, entry) for entry in chunker.heading_entries(doc.text, chunks)]
    return loaded, pieces, parse_cpu


def timed(function: Callable[..., Result], *args: Any) -> tuple[Result, float, float]:  # noqa: ANN401 - any call
    """Run `function` (in a worker thread or process), returning its result with its wall and CPU seconds."""
    wall, cpu = time.perf_counter(), time.thread_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.thread_time() - cpu


def is_big(files: int, size: int, images: int = 0) -> bool:
    """Worth worker processes (each costs a second or two to start and load a tokenizer). An image costs
    seconds of OCR, which in this process would take CPU and the GIL from the embedder and the store: an
    image with anything else to do is worth them too."""
    return files + 30 * images >= 32 or size >= 8 * 1024 * 1024


def load_chunker_early(chunker: Chunker) -> Future[Chunker]:
    """`chunker` with its tokenizer loaded (at its first count, which takes a fraction of a second), in a
    daemon thread started before the run knows whether it needs it: a run that turns out to have little or
    nothing to read does not wait for it to finish."""
    future: Future[Chunker] = Future()

    def load() -> None:
        try:
            import langchain_text_splitters  # noqa: F401 - the splitter's import, done here and not at the first file

            chunker.counter.count("")
            future.set_result(chunker)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the chunker
            future.set_exception(exc)

    threading.Thread(target=load, name="kb-tokenizer", daemon=True).start()
    return future


class Workers:
    """Where a run's files are read and chunked. Parsing and chunking are CPU-bound Python: worker processes
    for big runs (or when --workers says so), one thread for small ones (starting a process costs more than
    a few files take).

    A worker takes seconds to be of use (spawned, kb imported, a tokenizer loaded): until the first one is,
    files are read here, in a thread, with `early`'s chunker (loaded meanwhile), so the first embedding
    request does not wait for the workers. `prepared_here` lists those files.
    """

    def __init__(self, settings: Settings, spec: ChunkerSpec, chunker: Chunker, big: bool,
                 early: Future[Chunker] | None = None) -> None:
        self.chunker = chunker
        self.processes = self.processes_for(settings, big)
        # One OCR thread per worker process (one process per core); the one parsing thread of a small run
        # may use the cores.
        self.options = ReadOptions(
            password=settings.pdf_password.get_secret_value() if settings.pdf_password else None,
            ocr=settings.ocr, ocr_threads=1 if self.processes else min(os.cpu_count() or 1, 4),
            ocr_engine=settings.ocr_engine, ocr_languages=settings.ocr_languages)
        # Files read in this process (a small run's thread, the first files of a big one) send their scans
        # and images to a process of their own: never OCR beside the embedder and the store.
        self.ocr_process = OcrProcess(self.options.ocr_threads, settings.ocr_engine, settings.ocr_languages)
        self.here_options = replace(self.options, ocr_process=self.ocr_process)
        self.pool: Executor = (process_pool("kb-parse", self.processes, _init_worker, (spec,)) if self.processes
                               else ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb-prepare"))
        self.prepared_here: list[Path] = []
        self._early = early if self.processes else None
        self._here: ThreadPoolExecutor | None = None
        if self._early is not None:
            self._here = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb-prepare-early")
        # One call each spawns every worker now (the pool spawns one per call it cannot hand to an idle one).
        self._up = [self.pool.submit(_load_tokenizer) for _ in range(self.processes)]

    @staticmethod
    def processes_for(settings: Settings, big: bool) -> int:
        """How many worker processes a run of this size gets (0: a thread of this process)."""
        wanted = settings.workers or min(os.cpu_count() or 1, 4)
        return wanted if wanted > 1 and (settings.workers > 1 or big) else 0

    @property
    def started(self) -> bool:
        """A worker process is up, its tokenizer loaded (or failed to: its own calls then say why)."""
        return any(up.done() for up in self._up)

    def prepare(self, path: Path, sha256: str) -> asyncio.Future[tuple[Prepared, float, float]]:
        """`prepare` of one file, timed, in a worker (or here, while the workers start)."""
        loop = asyncio.get_running_loop()
        if self._early is not None and self._here is not None:
            if not self.started:
                self.prepared_here.append(path)
                return asyncio.wrap_future(self._here.submit(_prepare_early, self._early, path, sha256,
                                                             self.here_options))
            self._early = None  # the files read here hold it until they are done; then its memory goes
        if self.processes:
            return loop.run_in_executor(self.pool, _prepare_in_worker, path, sha256, self.options)
        return loop.run_in_executor(self.pool, timed, prepare, path, sha256, self.chunker, self.here_options)

    def close(self) -> None:
        """Stop the workers and the OCR process (waiting for processes to exit; a second call does nothing)."""
        if self._here is not None:
            self._here.shutdown(wait=False, cancel_futures=True)
        self.pool.shutdown(wait=bool(self.processes), cancel_futures=True)
        self.ocr_process.close()


def _prepare_early(early: Future[Chunker], path: Path, sha256: str,
                   options: ReadOptions) -> tuple[Prepared, float, float]:
    return timed(prepare, path, sha256, early.result(), options)


# A worker process's chunker, built once by the pool's initializer (tokenizers load slowly).
_worker_chunker: Chunker | None = None


def _init_worker(spec: ChunkerSpec) -> None:
    global _worker_chunker
    _worker_chunker = spec.build()


def _load_tokenizer() -> None:
    """Load the worker's tokenizer (not in the initializer: a failure there would break the pool, and the
    run would report a crashed worker for every file instead of the tokenizer's own error)."""
    assert _worker_chunker is not None
    _worker_chunker.counter.count("")


def _prepare_in_worker(path: Path, sha256: str, options: ReadOptions) -> tuple[Prepared, float, float]:
    assert _worker_chunker is not None
    try:
        return timed(prepare, path, sha256, _worker_chunker, options)
    finally:
        give_back_memory()
