"""kb's helper processes: parsing workers and the store process, spawned and named.

Spawned, not forked: a fork of a process with an event loop, HTTP connections and Chroma's native
threads inherits their locks in whatever state they were. Named (`kb-parse`, `kb-store`, what `top` and
`ps -o comm` show) so a user, and `kb bench`'s memory figures, can tell them apart.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

_PR_SET_NAME = 15  # prctl(2)
_PR_SET_PDEATHSIG = 1


def name_this_process(name: str) -> None:
    """Set this process's name as the kernel shows it (Linux; elsewhere nothing happens)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def give_back_memory() -> None:
    """Return freed heap pages to the system (glibc's malloc_trim; elsewhere nothing happens).

    A worker that has just parsed a big PDF keeps its peak heap otherwise: CPython frees the objects
    but glibc keeps the pages, so every worker would sit at the size of the biggest file it ever read.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        pass


def exit_with_parent() -> None:
    """End this helper the moment the process that spawned it dies, even by `kill -9`.

    Otherwise a store process would finish its write, and a parsing worker its file, after kb is gone:
    writing into a store the next run may already be writing to.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    if sys.platform.startswith("linux"):
        # The kernel's own signal when the parent dies: it lands even in the middle of a Chroma write, which
        # holds the GIL for the whole write and so keeps the watcher thread below from running until the
        # write is done, while the next run (or a reader) may already be using the store.
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent.pid:  # the parent died before the signal was asked for
            os._exit(70)

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(70)  # no clean-up: the parent's run is over, and whatever it wrote is whole or rolled back

    threading.Thread(target=watch, name="kb-parent-watch", daemon=True).start()


def _start(name: str, initializer: Callable[..., None] | None, args: tuple) -> None:
    name_this_process(name)
    exit_with_parent()
    if initializer is not None:
        initializer(*args)


def process_pool(name: str, workers: int, initializer: Callable[..., None] | None = None,
                 initargs: tuple[Any, ...] = ()) -> ProcessPoolExecutor:
    """A pool of `workers` spawned processes called `name`, each running `initializer(*initargs)` first."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start, initargs=(name, initializer, initargs))
