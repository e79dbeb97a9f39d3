"""Read files into documents: text with where it came from.

A PDF gives one document per page (with its 1-based page number); other formats give one document.
A file kb cannot read raises LoadError naming the file and the reason; callers go on with the next file.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable

from .errors import LoadError

TEXT_TYPES = {".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md", ".rst": "rst"}
HTML_TYPES = {".html": "html", ".htm": "html", ".xhtml": "html"}
PDF_TYPES = {".pdf": "pdf"}
FILE_TYPES = {**TEXT_TYPES, **HTML_TYPES, **PDF_TYPES}


@dataclass(frozen=True)
class Document:
    """Text of one file, or of one page of a PDF."""

    source: str
    file_type: str
    title: str
    sha256: str
    text: str
    page: int | None = None
    language: str | None = None


@dataclass
class LoadedFile:
    """Everything read from one file: its documents and anything worth warning about."""

    source: str
    file_type: str
    title: str
    sha256: str
    size: int
    documents: list[Document]
    pages: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def language(self) -> str | None:
        """The language most of the file's text is in (by pages), if it could be told."""
        counts: dict[str, int] = {}
        for doc in self.documents:
            if doc.language:
                counts[doc.language] = counts.get(doc.language, 0) + len(doc.text)
        return max(counts, key=counts.get) if counts else None


# Characters CLD2 refuses as "invalid UTF-8": C0/C1 controls (but tab and newlines), surrogates, noncharacters.
_NOT_FOR_CLD2 = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")


_LETTERS = re.compile(r"(?:[^\W\d_][\W\w]*?){20}")  # twenty letters, anywhere


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text's main language, or None when it cannot be told.

    Google's CLD2 (pycld2, its tables compiled in): ~0.07 ms a page where langdetect took ~6, which
    mattered for PDFs, detected page by page. Chinese variants are reported as `zh`.
    """
    sample = text[:2000]
    if not _LETTERS.search(sample):
        return None
    import pycld2

    try:
        _, _, details = pycld2.detect(_NOT_FOR_CLD2.sub(" ", sample), bestEffort=True)
    except pycld2.error:
        return None
    code = details[0][1]
    return None if code in ("un", "xxx", "") else code.split("-")[0]


def file_type_of(path: str | Path) -> str | None:
    return FILE_TYPES.get(Path(path).suffix.lower())


def sha256_of(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return _sha256_of_stream(handle)


def _sha256_of_stream(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


CHANGED_WHILE_READ = "changed while kb was reading it: the version read is stored"


def discover(
    paths: Iterable[str | Path],
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    skip: Iterable[str | Path] = (),
) -> tuple[list[Path], list[LoadError]]:
    """Files to ingest under `paths` (folders walked recursively), and errors for paths that can't be.

    In folders only supported types are taken (others are not documents), hidden files and folders
    are passed over, and so are the `skip` folders (kb's own store); a file named explicitly with an
    unsupported type is an error, and so is a folder that cannot be read. Globs match the path
    relative to the folder, or the name.
    """
    found: dict[str, Path] = {}
    errors: list[LoadError] = []
    skipped = {str(Path(p).resolve()) for p in skip}

    def unreadable(error: OSError) -> None:
        errors.append(LoadError(str(error.filename), f"cannot read folder: {error.strerror or error}"))

    def wanted(relative: str) -> bool:
        name = os.path.basename(relative)
        matches = lambda patterns: any(  # noqa: E731
            fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in patterns
        )
        if include and not matches(include):
            return False
        return not (exclude and matches(exclude))

    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            # followlinks=False: a symlinked folder loop cannot make the walk endless.
            for folder, dirs, files in os.walk(path, onerror=unreadable):
                dirs[:] = sorted(
                    d for d in dirs if not d.startswith(".") and str(Path(folder, d).resolve()) not in skipped
                )
                for name in sorted(files):
                    file = Path(folder, name)
                    if name.startswith(".") or file_type_of(file) is None:
                        continue
                    if wanted(str(file.relative_to(path))):
                        problem = _not_a_document(file)
                        if problem:
                            errors.append(LoadError(str(file), problem))
                        else:
                            found.setdefault(str(file.resolve()), file.resolve())
        elif path.is_file():
            if file_type_of(path) is None:
                errors.append(LoadError(str(path), f"unsupported file type {path.suffix or '(none)'!r}"))
            elif wanted(path.name):
                found.setdefault(str(path.resolve()), path.resolve())
        elif path.is_symlink() or path.exists():
            errors.append(LoadError(str(path), _not_a_document(path) or "cannot read"))
        else:
            errors.append(LoadError(str(path), "no such file or folder"))
    return list(found.values()), errors


def _not_a_document(path: Path) -> str | None:
    """Why `path` cannot be read as a file, or None. A pipe would block the run forever on its first read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "broken symbolic link" if path.is_symlink() else "file disappeared before it could be read"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if not stat.S_ISREG(mode):
        return "not a regular file (a pipe, socket or device): not read"
    return None


def load(path: str | Path, sha256: str | None = None, pdf_password: str | None = None) -> LoadedFile:
    """Read one file. Raises LoadError with the reason when it cannot be read."""
    path = Path(path)
    source = str(path)
    kind = file_type_of(path)
    if kind is None:
        raise LoadError(source, f"unsupported file type {path.suffix or '(none)'!r}")
    try:
        if kind == "pdf":
            with open(path, "rb") as handle:
                return _load_pdf_file(source, handle, sha256, pdf_password)
        data = path.read_bytes()
    except IsADirectoryError:
        raise LoadError(source, "is a folder, not a file") from None
    except PermissionError:
        raise LoadError(source, "permission denied") from None
    except FileNotFoundError:
        raise LoadError(source, "file disappeared before it could be read") from None
    except OSError as exc:
        raise LoadError(source, f"cannot read: {exc.strerror or exc}") from None
    # The hash of the bytes read, not of what was there when the run listed the file: a file written to
    # in between is recorded as the version whose text is stored.
    digest = hashlib.sha256(data).hexdigest()
    changed = [CHANGED_WHILE_READ] if sha256 and sha256 != digest else []
    text = _decode(source, data)
    if kind == "html":
        title, text = _html_to_text(text)
        title = title or path.stem
    else:
        title = _text_title(text, kind) or path.stem
    documents = [Document(source, kind, title, digest, text, None, detect_language(text))] if text.strip() else []
    warnings = changed + ([] if documents else ["no text in file"])
    return LoadedFile(source, kind, title, digest, len(data), documents, None, warnings)


def _decode(source: str, data: bytes) -> str:
    """Bytes to text: UTF-8 first (with or without BOM), else the detected encoding; binary is refused."""
    if not data:
        return ""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise LoadError(source, "binary content, not text") from None
        text = _guess_decode(source, data, from_bytes(data))
    if "\x00" in text:
        raise LoadError(source, "binary content, not text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


_SINGLE_BYTE_LATIN = ("cp125", "iso8859", "latin", "mac_", "cp775", "cp850", "cp437")


def _guess_decode(source: str, data: bytes, matches) -> str:  # noqa: ANN001 - charset_normalizer's matches
    """The detected encoding, except that among near-equal single-byte Latin guesses Windows-1252,
    by far the most common, wins (charset-normalizer alone reads French as Baltic cp1257)."""
    candidates = list(matches)
    if not candidates:
        raise LoadError(source, "binary content or unknown text encoding")
    best = candidates[0]
    if best.encoding.startswith(_SINGLE_BYTE_LATIN):
        for match in candidates:
            if match.encoding == "cp1252" and match.chaos <= best.chaos + 0.15:
                return str(match)
    return str(best)


def _text_title(text: str, kind: str) -> str | None:
    lines = [line.strip() for line in text.splitlines()[:50]]
    if kind == "md":
        for line in lines:
            if line.startswith("# "):
                return line[2:].strip()
    if kind == "rst":
        for line, underline in zip(lines, lines[1:]):
            if line and len(underline) >= len(line) and re.fullmatch(r"([=\-~^*#])\1+", underline or ""):
                return line
    return None


_BLOCKS = {
    "p", "div", "section", "article", "header", "footer", "li", "tr", "table", "ul", "ol", "pre",
    "blockquote", "br", "dt", "dd", "figcaption", "main", "aside", "nav",
}


@functools.lru_cache(maxsize=1)
def _html_parser():  # noqa: ANN202 - lxml.html.HTMLParser
    import lxml.html

    return lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True)


_DROP = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object"}
_HEADINGS = {f"h{level}": level for level in range(1, 7)}


def _html_to_text(html: str) -> tuple[str | None, str]:
    """Visible text of an HTML page: headings kept as markdown headings, scripts and styles dropped.

    lxml's C parser and one walk over the tree: bs4 took 20x the CPU, more than embedding client and
    Chroma together at a GPU's rate.
    """
    import lxml.html
    from lxml import etree

    try:
        root = lxml.html.document_fromstring(html.encode("utf-8"), parser=_html_parser())
    except (etree.ParserError, ValueError):  # nothing parseable: an empty or blank page
        return None, ""
    title_tag = root.find(".//title")
    title = " ".join(title_tag.text_content().split()) if title_tag is not None else None
    # Not visible to a reader: not indexed either.
    for element in [e for e in root.iter() if not isinstance(e.tag, str) or e.tag in _DROP
                    or e.get("hidden") is not None or e.get("aria-hidden") == "true"]:
        if element.getparent() is not None:
            element.drop_tree()  # keeps the text that follows it
    parts: list[str] = []
    walk = etree.iterwalk(root, events=("start", "end"))
    for event, element in walk:
        tag = element.tag
        if event == "start":
            if tag in _HEADINGS:
                text = " ".join(element.text_content().split())
                parts.append(f"\n\n{'#' * _HEADINGS[tag]} {text}\n\n")
                walk.skip_subtree()
            elif element.text:
                parts.append(element.text)
            continue
        if tag in ("td", "th"):
            parts.append(" | ")
        if tag in _BLOCKS:
            parts.append("\n")
        if element.tail:
            parts.append(element.tail)
    text = "".join(parts)
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    if not title:
        match = re.search(r"^# (.+)$", text, re.M)
        title = match.group(1) if match else None
    return title or None, text


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
    """pypdf reads from the open file what it needs: a 60 MB PDF is not held in memory whole. The hash is of
    the file as opened; one written to while pypdf reads it (its text a mix of two versions) is refused."""
    before = os.fstat(handle.fileno())
    digest = _sha256_of_stream(handle)
    handle.seek(0)
    loaded = _load_pdf(source, handle, before.st_size, digest, password)
    after = os.fstat(handle.fileno())
    if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (before.st_size, before.st_mtime_ns, before.st_ctime_ns):
        raise LoadError(source, "changed while kb was reading it: nothing stored from it; run kb ingest again")
    if sha256 and sha256 != digest:
        loaded.warnings.insert(0, CHANGED_WHILE_READ)
    return loaded


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
    Python object to find the two text blocks among them (texlive's pst-geo-doc.pdf: 19 MB pages, 144 s
    and 650 MB for 45 pages). Text extraction never looks at path operators, so the text comes out the
    same without them, in ~1/20 of the time and memory. Ordinary pages are left exactly as they are.
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
    streams: a hyperref manual's link annotations (glossaries-extra-manual.pdf: 1,049 pages, 72,000
    objects, 240 MB before the first page is read). This walk keeps references only, clearing the
    cache as it goes. Raises on a tree it does not understand; the caller then uses pypdf's own list.
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
    from pypdf import PageObject, PdfReader
    from pypdf.errors import PdfReadError
    from pypdf.generic import NameObject

    try:
        reader = PdfReader(stream)
        if reader.is_encrypted:
            # Many PDFs are "encrypted" with an empty user password and open fine.
            if not reader.decrypt(password or ""):
                hint = "wrong --pdf-password" if password else "pass --pdf-password to open it"
                raise LoadError(source, f"encrypted PDF: {hint}")
        try:
            tree = _page_tree(reader)
        except Exception:  # an unusual or damaged tree: pypdf's own list copes with more
            tree = [(page, {}) for page in reader.pages]
        pages = len(tree)
    except LoadError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise LoadError(source, f"not a readable PDF ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # pypdf raises a wide range on damaged files
        raise LoadError(source, f"not a readable PDF ({type(exc).__name__}: {exc})") from None
    title = None
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:
        title = None
    title = (title or "").strip() or Path(source).stem
    documents: list[Document] = []
    failed_pages: list[int] = []
    for number, (ref, inherited) in enumerate(tree, start=1):
        page = contents = None
        try:
            page = ref if isinstance(ref, PageObject) else _page(reader, ref, inherited)
            contents = page.raw_get("/Contents") if "/Contents" in page else None
            _drop_path_drawing(page)
            text = page.extract_text() or ""
        except Exception:
            failed_pages.append(number)
            continue
        finally:
            if page is not None:
                if contents is not None:  # the original references (not the lean copy), for _forget
                    page[NameObject("/Contents")] = contents
                _forget(reader, page)
        text = text.replace("\x00", "").strip()
        if text:
            documents.append(Document(source, "pdf", title, digest, text, number, detect_language(text)))
    if failed_pages and not documents:
        raise LoadError(source, f"no page of the PDF could be read (pages {failed_pages[:5]}...)")
    warnings = []
    if failed_pages:
        warnings.append(f"pages {', '.join(map(str, failed_pages))} could not be read")
    if not documents:
        warnings.append("no text layer (scanned PDF?): nothing to index")
    return LoadedFile(source, "pdf", title, digest, size, documents, pages, warnings)
