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


class OcrUnavailable(KbError):
    """The OCR engine cannot run in this Python (rapidocr-onnxruntime is not installed): scans and images
    cannot be read. Loaders report it per file, as a LoadError."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"OCR is unavailable: {reason}; kb reads scans and images on Python 3.11 and 3.12, "
                         "where pip installs rapidocr-onnxruntime")
        self.reason = reason

    def __reduce__(self):  # noqa: ANN204 - raised in parsing workers
        return (type(self), (self.reason,))


class EmbeddingError(KbError):
    """The embedding model or server failed for good (after retries) or answered something unusable."""


class InputTooLongError(EmbeddingError):
    """The server refused one input as longer than its context: splitting the batch cannot help."""


class BadAnswerError(EmbeddingError):
    """An answer that does not fit the request (count, order, dimension, values): retried like a transient
    fault, never stored."""


class EndpointUnreachableError(EmbeddingError):
    """Nothing answers at the server's URL (connection refused, unknown host): retrying cannot help, so kb
    stops before reading any file. Carries the URLs so the message names them."""

    def __init__(self, urls: list[str], reason: str) -> None:
        super().__init__(f"nothing answers at {', '.join(urls)} ({reason}): is the server running there, "
                         "and is the URL right?")
        self.urls = urls
        self.reason = reason

    def __reduce__(self):  # noqa: ANN204 - raised in parsing workers too (the tokenizer probe)
        return (type(self), (self.urls, self.reason))


class StoreError(KbError):
    """The Chroma store refused an operation or is unreachable."""


class ModelMismatchError(StoreError):
    """The collection was built with another model, dimension or instruction: vectors are never mixed."""


class StoreBusyError(StoreError):
    """Another process is writing to the same embedded store, and waiting for it was not wanted or ran out."""


class SearchError(KbError):
    """A search cannot run as asked: an empty query, a bad k, or a collection with nothing in it."""


class RerankError(KbError):
    """The rerank endpoint failed for good (after retries), or answered something that is not a ranking."""


class ChatError(KbError):
    """The chat endpoint that writes answers failed: unreachable, refusing, overloaded after retries, or a stream
    cut short. The passages were found all the same; the message says what the chat server did."""


class ChatBusyError(ChatError):
    """The chat server stayed overloaded (429, 503) through every retry."""


class ContextTooLongError(ChatError):
    """The prompt and the answer's room exceed what the chat model can take: lower --context-tokens or -k."""


class EvalError(KbError):
    """A query set cannot be read or scored: a missing file, a malformed line, nothing to ask."""
