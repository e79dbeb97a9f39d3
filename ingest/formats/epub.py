"""EPUB e-books: one document per chapter (each XHTML file of the spine, in reading order), titled from the
book's table of contents, its text read the way kb reads HTML (headings kept as Markdown headings).

An EPUB is a zip: META-INF/container.xml names the package (OPF) file, whose manifest lists the files and whose
spine orders them; the table of contents is an EPUB 3 nav document or an EPUB 2 NCX file.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ..documents import Document, LoadedFile, changed_since_listed, sha256_of_stream
from ..errors import LoadError
from ..language import detect_language
from . import ReadOptions, archive, register
from .html import html_to_text
from .text import decode

_KIND = "EPUB book"
_CHAPTER_TYPES = {"application/xhtml+xml", "text/html", "application/x-dtbook+xml"}
# encryption.xml also lists fonts obfuscated (not DRM-encrypted) by these algorithms.
_FONT_OBFUSCATION = {"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"}
_HEADING = re.compile(r"^#{1,6} (.+)$", re.M)
# The printed edition's page numbers (`<span epub:type="pagebreak" title="169">169</span>`): noise in a passage.
_PAGEBREAK = re.compile(r"""<(\w+)\b[^>]*?\b(?:epub:type|role)=["'](?:doc-)?pagebreak["'][^>]*?(?:/>|>[^<]*</\1>)""")


@register("epub", ".epub", parts="chapter", headings=True)
def load_epub(path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile:
    source = str(path)
    with open(path, "rb") as handle:
        digest = sha256_of_stream(handle)
        size = handle.tell()
    warnings = changed_since_listed(sha256, digest)
    with archive.open_zip(path, _KIND) as book:
        opf_path = _package_path(book, source)
        opf = archive.parse_xml(archive.read_part(book, opf_path, source), source)
        manifest = _manifest(opf, posixpath.dirname(opf_path))
        title = _first_text(opf, "metadata", "title") or path.stem
        spine = _spine(opf, manifest)
        _refuse_drm(book, source, {name for name, _ in spine})
        toc = _toc(book, opf, manifest, source)
        documents: list[Document] = []
        for name, _media in spine:
            chapter = _chapter(book, name, toc.get(name), source, file_type, title, digest, len(documents) + 1)
            if chapter is not None:
                documents.append(chapter)
    if not documents:
        warnings.append("no text in file")
    return LoadedFile(source, file_type, title, digest, size, documents, len(documents), warnings)


def _local(element: Any) -> str:  # noqa: ANN401 - an lxml element
    """The tag's name without its namespace ("rootfile" for "{urn:...}rootfile")."""
    tag = element.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _find_all(root: Any, name: str) -> list[Any]:  # noqa: ANN401
    return [element for element in root.iter() if _local(element) == name]


def _first_text(root: Any, parent: str, name: str) -> str | None:  # noqa: ANN401
    """The text of the first `name` element inside a `parent` element (namespace-blind), spaces tidied."""
    for holder in _find_all(root, parent):
        for element in _find_all(holder, name):
            text = " ".join("".join(element.itertext()).split())
            if text:
                return text
    return None


def _package_path(book: zipfile.ZipFile, source: str) -> str:
    """Where the OPF package file is, from META-INF/container.xml."""
    if "META-INF/container.xml" not in book.namelist():
        raise LoadError(source, "not a valid EPUB book: META-INF/container.xml is missing")
    container = archive.parse_xml(archive.read_part(book, "META-INF/container.xml", source), source)
    for rootfile in _find_all(container, "rootfile"):
        full_path = rootfile.get("full-path")
        if full_path and rootfile.get("media-type", "application/oebps-package+xml").endswith("package+xml"):
            return unquote(full_path)
    raise LoadError(source, "not a valid EPUB book: META-INF/container.xml names no package (OPF) file")


def _resolve(base: str, href: str) -> str:
    """A manifest or table-of-contents link, as a name inside the zip (fragment dropped)."""
    return posixpath.normpath(posixpath.join(base, unquote(href.split("#", 1)[0]))).lstrip("/")


def _manifest(opf: Any, base: str) -> dict[str, tuple[str, str, str]]:  # noqa: ANN401
    """Manifest id -> (name in the zip, media type, properties)."""
    items = {}
    for item in _find_all(opf, "item"):
        if item.get("id") and item.get("href"):
            items[item.get("id")] = (_resolve(base, item.get("href")), item.get("media-type", ""),
                                     item.get("properties", ""))
    return items


def _spine(opf: Any, manifest: dict[str, tuple[str, str, str]]) -> list[tuple[str, str]]:  # noqa: ANN401
    """The (name, media type) of each spine item that holds text, in reading order; not the navigation
    document (a list of the chapter titles, which each chapter carries anyway)."""
    spine = []
    for itemref in _find_all(opf, "itemref"):
        name, media, properties = manifest.get(itemref.get("idref", ""), ("", "", ""))
        if name and media in _CHAPTER_TYPES and "nav" not in properties.split():
            spine.append((name, media))
    return spine


def _refuse_drm(book: zipfile.ZipFile, source: str, chapters: set[str]) -> None:
    """A book whose chapters are encrypted (DRM) cannot be read: say so rather than index ciphertext."""
    if "META-INF/encryption.xml" not in book.namelist():
        return
    encryption = archive.parse_xml(archive.read_part(book, "META-INF/encryption.xml", source), source)
    for data in _find_all(encryption, "EncryptedData"):
        methods = [m.get("Algorithm", "") for m in _find_all(data, "EncryptionMethod")]
        uris = {unquote(r.get("URI", "")).lstrip("/") for r in _find_all(data, "CipherReference")}
        if uris & chapters and not set(methods) <= _FONT_OBFUSCATION:
            raise LoadError(source, "DRM-protected (encrypted) EPUB book: kb cannot read it")


def _toc(book: zipfile.ZipFile, opf: Any, manifest: dict[str, tuple[str, str, str]],  # noqa: ANN401
         source: str) -> dict[str, str]:
    """Chapter file -> its title in the book's table of contents: the EPUB 3 nav document, else the NCX."""
    titles: dict[str, str] = {}
    nav = next((name for name, _, props in manifest.values() if "nav" in props.split()), None)
    if nav and nav in book.namelist():
        root = archive.parse_xml(archive.read_part(book, nav, source), source)
        navs = _find_all(root, "nav")
        tocs = [n for n in navs if "toc" in (n.get("{http://www.idpf.org/2007/ops}type") or "").split()]
        for link in _find_all((tocs or navs or [root])[0], "a"):
            _add_title(titles, _resolve(posixpath.dirname(nav), link.get("href", "")), link)
    spine = _find_all(opf, "spine")
    ncx_id = spine[0].get("toc") if spine else None
    ncx = manifest.get(ncx_id or "", ("", "", ""))[0] or next(
        (name for name, media, _ in manifest.values() if media == "application/x-dtbncx+xml"), None)
    if not titles and ncx and ncx in book.namelist():
        root = archive.parse_xml(archive.read_part(book, ncx, source), source)
        for point in _find_all(root, "navPoint"):
            content = next(iter(_find_all(point, "content")), None)
            label = next(iter(_find_all(point, "navLabel")), None)
            if content is not None and label is not None:
                _add_title(titles, _resolve(posixpath.dirname(ncx), content.get("src", "")), label)
    return titles


def _add_title(titles: dict[str, str], name: str, element: Any) -> None:  # noqa: ANN401
    """The first entry that points into a file titles it (later ones point at sections within it)."""
    text = " ".join("".join(element.itertext()).split())
    if text and name and name not in titles:
        titles[name] = text


def _chapter(book: zipfile.ZipFile, name: str, toc_title: str | None, source: str, file_type: str,
             book_title: str, digest: str, number: int) -> Document | None:
    """One spine item as a document, or None when it has no text (a cover image page)."""
    data = archive.read_part(book, name, source)
    archive.refuse_declared_entities(data, source, f"chapter {name!r}")
    head_title, text = html_to_text(_PAGEBREAK.sub("", decode(source, data)))
    if not text.strip():
        return None
    heading = _HEADING.search(text)
    chapter = toc_title or (heading.group(1).strip() if heading else None) or head_title or f"Chapter {number}"
    if not any(line.strip() == chapter for line in _HEADING.findall(text)):
        text = f"# {chapter}\n\n{text}"  # the chunker cuts at headings and names the chapter in each passage
    return Document(source, file_type, book_title, digest, text, number, detect_language(text), chapter=chapter)
