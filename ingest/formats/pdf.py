"""PDF: one document per page, read with pypdf while keeping its memory bounded; scanned pages by OCR.

pypdf keeps whatever it parses; kb walks the page tree itself, drops each page's content from pypdf's
cache once read, and strips line art from huge pages before extracting their text. Pages without a text
layer (or every page, with `--ocr always`) are rendered by pypdfium2 and read by `ingest.ocr`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, BinaryIO

from ..documents import Document, LoadedFile, changed_since_listed, pages_phrase, sha256_of_stream
from ..errors import LoadError, OcrUnavailable
from ..language import detect_language
from ..ocr import READ_SIDE, SCANNED_BELOW, SPARSE_BELOW
from . import ReadOptions, register


@register("pdf", ".pdf")
def load_pdf(path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile:
    with open(path, "rb") as handle:
        return _load_pdf_file(str(path), handle, sha256, options)


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


def _load_pdf_file(source: str, handle: BinaryIO, sha256: str | None, options: ReadOptions) -> LoadedFile:
    """pypdf reads from the open file what it needs: a big PDF is not held in memory whole. The hash is of
    the file as opened; one written to while pypdf reads it (its text a mix of two versions) is refused."""
    before = os.fstat(handle.fileno())
    digest = sha256_of_stream(handle)
    handle.seek(0)
    loaded = _load_pdf(source, handle, before.st_size, digest, options)
    if _version(os.fstat(handle.fileno())) != _version(before):
        raise LoadError(source, "changed while kb was reading it: nothing stored from it; run kb ingest again")
    loaded.warnings[:0] = changed_since_listed(sha256, digest)
    return loaded


def _version(status: os.stat_result) -> tuple[int, int, int]:
    return status.st_size, status.st_mtime_ns, status.st_ctime_ns


def _load_pdf(source: str, stream: BinaryIO, size: int, digest: str, options: ReadOptions) -> LoadedFile:
    with _PypdfMessages() as messages:
        loaded = _read_pdf(source, stream, size, digest, options)
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


def _read_pdf(source: str, stream: BinaryIO, size: int, digest: str, options: ReadOptions) -> LoadedFile:
    reader, tree = _open(source, stream, options.password)
    title = _title(reader) or Path(source).stem
    layer: dict[int, str] = {}  # page number -> its text layer, for the pages pypdf could read
    for number, (ref, inherited) in enumerate(tree, start=1):
        try:
            layer[number] = _page_text(reader, ref, inherited)
        except Exception:  # pypdf raises a wide range on a damaged page: the other pages are still read
            continue
    failed = [number for number in range(1, len(tree) + 1) if number not in layer]
    visible = {number: len("".join(text.split())) for number, text in layer.items()}
    scanned = [number for number, count in visible.items() if count < SCANNED_BELOW]
    sparse = {number for number, count in visible.items() if SCANNED_BELOW <= count < SPARSE_BELOW}
    wanted = {"auto": scanned + failed + sorted(sparse), "always": list(range(1, len(tree) + 1)),
              "never": []}[options.ocr]
    read, unavailable = _ocr(source, stream, sorted(wanted), options, sparse if options.ocr == "auto" else set())
    documents: list[Document] = []
    for number in range(1, len(tree) + 1):
        text, ocr = layer.get(number, ""), False
        if read.get(number) and (options.ocr == "always" or len(read[number]) > len(text)):
            text, ocr = read[number], True
        if text:
            documents.append(Document(source, "pdf", title, digest, text, number, detect_language(text), ocr=ocr))
    found = {doc.page for doc in documents}
    failed = [number for number in failed if number not in found]
    missed = [number for number in scanned if number not in found]  # no text layer, and none from OCR
    if not documents:
        raise LoadError(source, _nothing_read(failed, missed, options, unavailable))
    warnings = []
    if failed:
        warnings.append(f"{pages_phrase(failed)} could not be read")
    if missed:
        why = ("OCR off (--ocr never, KB_OCR=never)" if options.ocr == "never" else unavailable
               or "OCR found no text")
        warnings.append(f"{pages_phrase(missed)} {'has' if len(missed) == 1 else 'have'} no text layer; {why}: "
                        "not indexed")
    return LoadedFile(source, "pdf", title, digest, size, documents, len(tree), warnings)


def _nothing_read(failed: list[int], missed: list[int], options: ReadOptions, unavailable: str | None) -> str:
    """Why a PDF gave no text at all."""
    if not missed:
        return f"no page of the PDF could be read ({pages_phrase(failed)})"
    if options.ocr == "never":
        return "no text layer; OCR off (--ocr never, KB_OCR=never): nothing to index"
    return f"no text layer; {unavailable}" if unavailable else "no text layer, and OCR found no text: nothing to index"


def _ocr(source: str, stream: BinaryIO, pages: list[int], options: ReadOptions,
         if_pictured: set[int]) -> tuple[dict[int, str], str | None]:
    """OCR of `pages` (numbered from 1), rendered by pypdfium2 at the size the engine reads; those in
    `if_pictured` only when pictures cover half the page. Returns the text of each, and why OCR could not
    run (None when it could)."""
    if not pages:
        return {}, None
    import pypdfium2

    try:
        ocr = options.engine()
    except OcrUnavailable as exc:
        return {}, str(exc)
    stream.seek(0)
    try:
        document = pypdfium2.PdfDocument(stream, password=options.password)
    except pypdfium2.PdfiumError as exc:
        return {}, f"the page images could not be rendered ({exc})"
    read: dict[int, str] = {}
    try:
        for number in pages:
            if number > len(document):
                break
            page = document[number - 1]
            try:
                width, height = page.get_size()
                if number in if_pictured and _pictured(page) < 0.5 * width * height:
                    continue
                # At most READ_SIDE pixels a side whatever the page's size (a poster cannot be a pixel
                # bomb); up to 300 dpi for small pages (receipts, cards).
                scale = min(300 / 72, READ_SIDE / max(width, height, 1.0))
                image = page.render(scale=scale).to_pil()
            except pypdfium2.PdfiumError:
                continue
            finally:
                page.close()
            try:
                read[number] = ocr.read(image).strip()
            except OcrUnavailable as exc:  # the engine failed (Tesseract's program): the pages left unread
                return read, str(exc)
    finally:
        document.close()
    return read, None


def _pictured(page) -> float:  # noqa: ANN001 - a pypdfium2 page
    """The area of the page under pictures (in square points, overlaps counted twice)."""
    import pypdfium2.raw as pdfium

    area = 0.0
    for picture in page.get_objects(filter=[pdfium.FPDF_PAGEOBJ_IMAGE], max_depth=3):
        left, bottom, right, top = picture.get_bounds()
        area += max(0.0, right - left) * max(0.0, top - bottom)
    return area


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
