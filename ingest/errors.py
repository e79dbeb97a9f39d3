"""Errors a kb user can act on. Each message says what went wrong and, where it can, what to do."""

from __future__ import annotations


class KbError(Exception):
    """Base class of every error kb reports to the user (printed without a traceback)."""


class ConfigError(KbError):
    """A setting is missing, contradictory or invalid."""


class LoadError(KbError):
    """A file could not be read into text. Carries the file so reports can name it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # noqa: ANN204 - errors cross process boundaries (parsing workers)
        return (type(self), (self.path, self.reason))


class EmbeddingError(KbError):
    """The embedding model or server failed for good (after retries) or answered something unusable."""


class InputTooLongError(EmbeddingError):
    """The server refused one input as longer than its context: splitting the batch cannot help."""


class StoreError(KbError):
    """The Chroma store refused an operation or is unreachable."""


class ModelMismatchError(StoreError):
    """The collection was built with another model, dimension or instruction: vectors are never mixed."""


class StoreBusyError(StoreError):
    """Another process is writing to the same embedded store, and waiting for it was not wanted or ran out."""
