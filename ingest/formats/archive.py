"""Zip-based documents (Office Open XML, OpenDocument, EPUB) opened safely: refused when encrypted (an Office
file's OLE2 wrapper, a zip's own encryption, an OpenDocument manifest's encryption data), when not a zip at
all, or when their parts would inflate past kb's bound (an archive bomb), before any part is read; XML parsed
without entities, DTDs or the network (no entity-expansion bomb, no external entity), whole or as a stream.

A zip member can claim a small size and inflate to gigabytes; Python's zipfile stops reading a member at its
declared size, so bounding the declared sizes bounds what reading can inflate.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from pathlib import Path
from typing import Any

from ..documents import changed_since_listed
from ..errors import LoadError

MAX_PART = 256 << 20  # bytes one part of an archive may inflate to
MAX_TOTAL = 1 << 30  # bytes all its parts together may inflate to
ENTITY_SCAN = 64 << 10  # bytes at the start of an XML part where a DTD and its entities would be declared
# What a zip member raises when its bytes are damaged: a bad CRC, a truncated member, a damaged compressed stream,
# an unknown compression method (what a damaged header reads as).
DAMAGED = (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError)
# An OLE2 compound file: what Office writes for a password-protected .docx/.xlsx/.pptx (the zip is inside, encrypted).
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MANIFEST = "META-INF/manifest.xml"  # an OpenDocument package's list of its parts


def open_zip(path: Path, kind: str, data: bytes | None = None) -> zipfile.ZipFile:
    """The archive at `path` (or `data`, its bytes as read), checked; LoadError (naming the file) for an
    encrypted, broken or bomb archive. `kind` names the format in messages ("Word document")."""
    source = str(path)
    if data is None:
        with open(path, "rb") as handle:
            head = handle.read(8)
    else:
        head = data[:8]
    if head.startswith(_OLE2):
        raise LoadError(source, f"encrypted (password-protected) {kind}: kb cannot read it; save it without a password")
    try:
        archive = zipfile.ZipFile(path if data is None else io.BytesIO(data))
    except (zipfile.BadZipFile, NotImplementedError):  # NotImplementedError: a damaged version byte
        raise LoadError(source, f"not a readable {kind} (not a zip archive, or truncated)") from None
    check_sizes(archive, source)
    if any(info.flag_bits & 0x1 for info in archive.infolist()):
        archive.close()
        raise LoadError(source, f"encrypted {kind}: kb cannot read it; save it without a password")
    if odf_encrypted(archive):
        archive.close()
        raise LoadError(source, f"encrypted (password-protected) {kind}: kb cannot read it; save it without a password")
    return archive


def odf_encrypted(archive: zipfile.ZipFile) -> bool:
    """Whether the archive is a password-protected OpenDocument file: an ordinary zip whose manifest
    (META-INF/manifest.xml) gives encryption data (manifest:encryption-data) for each part it encrypted,
    content.xml among them. The manifest is streamed; an unreadable one says no (the format's reader then
    reports the damage)."""
    from lxml import etree

    if _MANIFEST not in archive.namelist():
        return False
    try:
        with archive.open(_MANIFEST) as manifest:
            for _, element in iterparse(manifest):
                if isinstance(element.tag, str) and element.tag.endswith("}encryption-data"):
                    return True
                forget(element)
    except (etree.XMLSyntaxError, *DAMAGED):
        return False
    return False


def check_sizes(archive: zipfile.ZipFile, source: str) -> None:
    """Refuse an archive whose parts declare more than the bounds."""
    total = 0
    for info in archive.infolist():
        if info.file_size > MAX_PART:
            archive.close()
            raise LoadError(source, f"archive bomb: part {info.filename!r} inflates to {info.file_size >> 20} MB, "
                                    f"over kb's bound of {MAX_PART >> 20} MB")
        total += info.file_size
    if total > MAX_TOTAL:
        archive.close()
        raise LoadError(source, f"archive bomb: its parts inflate to {total >> 20} MB, over kb's bound of "
                                f"{MAX_TOTAL >> 20} MB")


def read_part(archive: zipfile.ZipFile, name: str, source: str) -> bytes:
    """One part's bytes; LoadError when the part is missing or damaged."""
    try:
        return archive.read(name)
    except KeyError:
        raise LoadError(source, f"part {name!r} is missing") from None
    except DAMAGED as exc:
        raise LoadError(source, f"part {name!r} is damaged: {exc}") from None


def parse_xml(data: bytes, source: str) -> Any:  # noqa: ANN401 - an lxml element
    """XML from a document's part, parsed with no DTD, no entity expansion and no network. A part that
    declares entities (no Office, ODF or EPUB writer does) is refused as a possible entity bomb."""
    from lxml import etree

    refuse_declared_entities(data, source, "a document part")
    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False,
                             remove_comments=True)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise LoadError(source, f"damaged XML in a document part: {exc}") from None


def iterparse(stream: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - a binary file and lxml's iterparse
    """lxml's iterparse over an XML part being read (a zip member), with `parse_xml`'s safety: no DTD, no
    entity expansion, no network, libxml2's size limits kept. Elements stay in the tree until `forget`."""
    from lxml import etree

    return etree.iterparse(stream, resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False,
                           remove_comments=True, remove_pis=True, **kwargs)


def forget(element: Any) -> None:  # noqa: ANN401 - an lxml element
    """Drop an element `iterparse` has read (its content, and its siblings read before it), so a streamed part
    never sits in memory whole."""
    element.clear(keep_tail=True)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


def refuse_declared_entities(data: bytes, source: str, where: str) -> None:
    """Refuse XML that declares entities (no Office, ODF or EPUB writer does; an entity-expansion bomb does)."""
    if b"<!ENTITY" in data[:ENTITY_SCAN]:
        raise LoadError(source, f"XML entity declarations in {where} (an entity-expansion bomb?): refused")


def refuse_entities(archive: zipfile.ZipFile, source: str) -> None:
    """`refuse_declared_entities` for every XML part of an archive, for the libraries that parse the parts
    themselves (python-docx, python-pptx, openpyxl, odfdo)."""
    for info in archive.infolist():
        if not info.filename.lower().endswith((".xml", ".rels")):
            continue
        try:
            with archive.open(info) as part:
                head = part.read(ENTITY_SCAN)
        except DAMAGED as exc:
            raise LoadError(source, f"part {info.filename!r} is damaged: {exc}") from None
        refuse_declared_entities(head, source, f"part {info.filename!r}")


def read_checked(path: Path, kind: str, sha256: str | None) -> tuple[bytes, str, list[str]]:
    """The file's bytes, their hash and the changed-since-listed warning, once those very bytes have passed
    kb's checks: not encrypted, a whole zip, no bomb by declared sizes, no XML part declaring entities."""
    data = path.read_bytes()
    with open_zip(path, kind, data) as archive:
        refuse_entities(archive, str(path))
    digest = hashlib.sha256(data).hexdigest()
    return data, digest, changed_since_listed(sha256, digest)
