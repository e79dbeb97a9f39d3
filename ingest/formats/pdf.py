"""PDF: one document per page, read with pypdf while keeping its memory bounded.

pypdf keeps whatever it parses; kb walks the page tree itself, drops each page's content from pypdf's
cache once read, and strips line art from huge pages before extracting their text.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, BinaryIO

from ..documents import Document, LoadedFile, changed_since_listed, sha256_of_stream
from ..errors import LoadError
from ..language import detect_language
from . import register


@register("pdf", ".pdf")
def load_pdf(path: Path, *, file_type: str, sha256: str | None, password: str | None) -> LoadedFile:
    with open(path, "rb") as handle:
        return _load_pdf_file(str(path), handle, sha256, password)


class _PypdfMessages(logging.Handler):
    """pypdf's warnings while this thread reads one file, to report them with the file's name.

    pypdf logs what it repairs or skips ("Object 632 0 not defined.", "incorrect startxref pointer")
    without saying which file; left alone they scroll past by the thousand on a real PDF corpus.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())

    def __enter__(self) -> _PypdfMessages:
        logger = logging.getLogger("pypdf")
        logger.addHandler(self)
        logger.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("pypdf").removeHandler(self)

    def summary(self) -> str | None:
        if not self.messages:
            return None
        first = self.messages[0] if len(self.messages[0]) <= 120 else self.messages[0][:117] + "..."
        return f"pypdf reported {len(self.messages)} problem(s) it worked around (first: {first})"


def _load_pdf_file(source: str, handle: BinaryIO, sha256: str | None, password: str | None) -> LoadedFile:
    """pypdf reads from the open file what it needs: a big PDF is not held in memory whole. The hash is of
    the file as opened; one written to while pypdf reads it (its text a mix of two versions) is refused."""
    before = os.fstat(handle.fileno())
    digest = sha256_of_stream(handle)
    handle.seek(0)
    loaded = _load_pdf(source, handle, before.st_size, digest, password)
    if _version(os.fstat(handle.fileno())) != _version(before):
        raise LoadError(source, "changed while kb was reading it: nothing stored from it; run kb ingest again")
    loaded.warnings[:0] = changed_since_listed(sha256, digest)
    return loaded


def _version(status: os.stat_result) -> tuple[int, int, int]:
    return status.st_size, status.st_mtime_ns, status.st_ctime_ns


def _load_pdf(source: str, stream: BinaryIO, size: int, digest: str, password: str | None) -> LoadedFile:
    with _PypdfMessages() as messages:
        loaded = _read_pdf(source, stream, size, digest, password)
    summary = messages.summary()
    if summary:
        loaded.warnings.append(summary)
    return loaded


# Drawing that text extraction never reads: path construction with its operands ("x y m", "x y l",
# "x1 y1 x2 y2 x3 y3 c", "x y w h re" ...), colours ("r g b rg", "c m y k k", "g G"), and painting
# operators ("f", "S", "n" ...) when alone on their line, where they cannot be letters of a text string.
_PATH_OPERATION = re.compile(rb"(?<![^\s])(?:[-+\d.]+\s+){2}[ml]\s|(?<![^\s])(?:[-+\d.]+\s+){6}c\s"
                             rb"|(?<![^\s])(?:[-+\d.]+\s+){4}(?:[vy]|re)\s"
                             rb"|(?<![^\s])(?:(?:[-+\d.]+\s+){3}(?:rg|RG)|(?:[-+\d.]+\s+){4}[kK]|[-+\d.]+\s+[gG])\s"
                             rb"|(?m:^[ \t]*(?:[fFSsn]|[fBb]\*|[Bb])[ \t]*\r?\n)")
_BIG_CONTENT = 1 << 20  # bytes of decoded page content


def _drop_path_drawing(page) -> None:  # noqa: ANN001 - pypdf.PageObject
    """Strip line art from a page whose content stream is huge, before pypdf reads it for text.

    A map or plot page can hold millions of path operators ("x y l"): pypdf turns every operand into a
    Python object to find the few text blocks among them, which takes minutes and gigabytes on such a
    page. Text extraction never looks at path operators, so the text comes out the same without them,
    in a fraction of the time and memory. Ordinary pages are left exactly as they are.
    """
    from pypdf.filters import decode_stream_data
    from pypdf.generic import ArrayObject, DecodedStreamObject, NameObject

    try:
        contents = page.get("/Contents")
        if contents is None:
            return
        contents = contents.get_object()
        parts = [part.get_object() for part in contents] if isinstance(contents, ArrayObject) else [contents]
        if sum(len(getattr(part, "_data", b"") or b"") for part in parts) < _BIG_CONTENT // 16:
            return  # compressed size says it cannot be big: no need to decode here
        # Decoded without pypdf's cache, which would keep every page's content for the reader's lifetime.
        data = b"\n".join(decode_stream_data(part) for part in parts)
    except Exception:  # a damaged stream: pypdf's own reading decides what becomes of the page
        return
    if len(data) < _BIG_CONTENT:
        return
    lean = DecodedStreamObject()
    lean.set_data(_PATH_OPERATION.sub(b"", data))
    page[NameObject("/Contents")] = lean


# pypdf keeps every object it has parsed for the reader's lifetime, decoded page contents included, and
# pypdf 7 parses each object stream whole: memory grows with the document, not the page. kb clears
# that cache once it holds this many objects (the next pages re-read only the fonts they share).
_CACHED_OBJECTS = 10_000
_INHERITED = ("/Resources", "/MediaBox", "/CropBox", "/Rotate")


def _page_tree(reader) -> list[tuple[Any, dict[str, Any]]]:  # noqa: ANN001 - pypdf.PdfReader
    """The pages in order, as (reference, attributes inherited from the tree), without pypdf's page list.

    `reader.pages` resolves every page up front, and with them every object sharing their object
    streams: a long hyperref manual's link annotations, hundreds of megabytes before the first page is
    read. This walk keeps references only, clearing the cache as it goes. Raises on a tree it does not
    understand; the caller then uses pypdf's own list.
    """
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject

    pages: list[tuple[Any, dict[str, Any]]] = []
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Any, dict[str, Any]]] = [(reader.trailer["/Root"].raw_get("/Pages"), {})]
    while stack:
        ref, inherited = stack.pop()
        if isinstance(ref, IndirectObject):
            if (ref.idnum, ref.generation) in seen or len(seen) > 1_000_000:
                raise ValueError("page tree loops or is implausibly big")
            seen.add((ref.idnum, ref.generation))
        node = ref.get_object()
        if not isinstance(node, DictionaryObject):
            raise ValueError("page tree node is not a dictionary")
        if node.get("/Type") == "/Pages" or (node.get("/Type") != "/Page" and "/Kids" in node):
            inherited = {**inherited, **{name: node.raw_get(name) for name in _INHERITED if name in node}}
            kids = node["/Kids"]
            if not isinstance(kids, ArrayObject):
                raise ValueError("/Kids is not an array")
            stack.extend((kid, inherited) for kid in reversed(kids))
        else:
            pages.append((ref, inherited))
        if len(reader.resolved_objects) > _CACHED_OBJECTS:
            reader.resolved_objects.clear()
    return pages


def _page(reader, ref, inherited: dict[str, Any]):  # noqa: ANN001, ANN202 - pypdf types
    from pypdf import PageObject
    from pypdf.generic import IndirectObject, NameObject

    page = PageObject(reader, ref if isinstance(ref, IndirectObject) else None)
    if not isinstance(ref, IndirectObject):
        page.update(ref)
    for name, value in inherited.items():
        if name not in page:
            page[NameObject(name)] = value
    return page


def _forget(reader, page) -> None:  # noqa: ANN001 - pypdf types
    """Drop a read page's content streams from pypdf's cache (they hold the decoded content, and no other
    page uses them), and the whole cache once it is big."""
    from pypdf.generic import ArrayObject, IndirectObject

    raw = page.raw_get("/Contents") if "/Contents" in page else None
    refs = [raw] if isinstance(raw, IndirectObject) else []
    if refs and isinstance(target := reader.resolved_objects.get((raw.generation, raw.idnum)), ArrayObject):
        refs += [part for part in target if isinstance(part, IndirectObject)]
    for ref in refs:
        reader.resolved_objects.pop((ref.generation, ref.idnum), None)
    if len(reader.resolved_objects) > _CACHED_OBJECTS:
        reader.resolved_objects.clear()


def _read_pdf(source: str, stream: BinaryIO, size: int, digest: str, password: str | None) -> LoadedFile:
    reader, tree = _open(source, stream, password)
    title = _title(reader) or Path(source).stem
    documents: list[Document] = []
    failed_pages: list[int] = []
    for number, (ref, inherited) in enumerate(tree, start=1):
        try:
            text = _page_text(reader, ref, inherited)
        except Exception:  # pypdf raises a wide range on a damaged page: the other pages are still read
            failed_pages.append(number)
            continue
        if text:
            documents.append(Document(source, "pdf", title, digest, text, number, detect_language(text)))
    if failed_pages and not documents:
        raise LoadError(source, f"no page of the PDF could be read (pages {failed_pages[:5]}...)")
    warnings = []
    if failed_pages:
        warnings.append(f"pages {', '.join(map(str, failed_pages))} could not be read")
    if not documents:
        warnings.append("no text layer (scanned PDF?): nothing to index")
    return LoadedFile(source, "pdf", title, digest, size, documents, len(tree), warnings)


def _open(source: str, stream: BinaryIO, password: str | None) -> tuple[Any, list[tuple[Any, dict[str, Any]]]]:
    """The reader (decrypted) and its page tree. Raises LoadError for a PDF that cannot be opened."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(stream)
        if reader.is_encrypted:
            # Many PDFs are "encrypted" with an empty user password and open fine.
            if not reader.decrypt(password or ""):
                hint = "wrong KB_PDF_PASSWORD" if password else "set KB_PDF_PASSWORD to open it"
                raise LoadError(source, f"encrypted PDF: {hint}")
        try:
            tree = _page_tree(reader)
        except Exception:  # an unusual or damaged tree: pypdf's own list copes with more
            tree = [(page, {}) for page in reader.pages]
    except LoadError:
        raise
    except Exception as exc:  # pypdf raises a wide range on damaged files
        raise LoadError(source, f"not a readable PDF ({type(exc).__name__}: {exc})") from None
    return reader, tree


def _title(reader) -> str:  # noqa: ANN001 - pypdf.PdfReader
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:  # damaged metadata: the file name serves as title
        title = None
    return (title or "").strip()


def _page_text(reader, ref, inherited: dict[str, Any]) -> str:  # noqa: ANN001 - pypdf types
    """One page's text; its content is dropped from pypdf's cache once read, whether or not it could be."""
    from pypdf import PageObject
    from pypdf.generic import NameObject

    page = contents = None
    try:
        page = ref if isinstance(ref, PageObject) else _page(reader, ref, inherited)
        contents = page.raw_get("/Contents") if "/Contents" in page else None
        _drop_path_drawing(page)
        text = page.extract_text() or ""
    finally:
        if page is not None:
            if contents is not None:  # the original references (not the lean copy), for _forget
                page[NameObject("/Contents")] = contents
            _forget(reader, page)
    return text.replace("\x00", "").strip()
