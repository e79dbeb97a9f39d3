"""One writer at a time for an embedded store: `kb ingest`, the UI's uploads and deletes take turns.

Embedded Chroma keeps each collection's vector index in the memory of the process that writes it and
saves it whole: two processes writing the same store would each save an index without the other's
vectors. So writers take an exclusive lock (`filelock`, an OS lock the kernel releases when its
holder dies, even by `kill -9`) next to the store, and a writer that finds it taken either waits
(`kb ingest`, up to `--lock-wait` seconds, saying who holds it) or says at once that the store is
busy (the UI). A Chroma server orders concurrent writers itself: no lock there.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from .errors import StoreBusyError
from .settings import Settings

LOCK_NAME = ".kb-write.lock"


def _holder(owner: Path) -> str:
    try:
        info = json.loads(owner.read_text())
        return f"{info['command']} (pid {info['pid']}, since {info['since']})"
    except (OSError, ValueError, KeyError):
        return "another kb process"


@contextmanager
def write_lock(settings: Settings, wait: float | None = None,
               waiting: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the store's write lock for the block. `wait`: seconds to wait for another writer (None:
    `settings.lock_wait`; 0: fail at once). `waiting` is told, once, who is being waited for."""
    if settings.chroma_url:
        yield
        return
    folder = Path(settings.chroma_path)
    folder.mkdir(parents=True, exist_ok=True)
    lock, owner = FileLock(folder / LOCK_NAME), folder / (LOCK_NAME + ".owner")
    wait = settings.lock_wait if wait is None else wait
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _holder(owner)
        if wait <= 0:
            raise StoreBusyError(
                f"store {folder} is busy: {holder} is writing to it; try again when it is done") from None
        if waiting is not None:
            waiting(f"store {folder} is busy: waiting up to {wait:.0f} s for {holder} to finish")
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            raise StoreBusyError(f"store {folder} is still busy after {wait:.0f} s: {holder} is writing to it "
                                 "(--lock-wait sets how long to wait)") from None
    try:
        command = os.path.basename(sys.argv[0]) + (f" {sys.argv[1]}" if len(sys.argv) > 1 else "")
        owner.write_text(json.dumps({"pid": os.getpid(), "command": command,
                                     "since": time.strftime("%H:%M:%S")}))
        yield
    finally:
        lock.release()
