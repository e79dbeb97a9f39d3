"""Zip-based documents (Office Open XML, OpenDocument, EPUB) opened safely: refused when encrypted, when not
a zip at all, or when their parts would inflate past kb's bound (an archive bomb), before any part is read;
XML parsed without entities, DTDs or the network (no entity-expansion bomb, no external entity).

A zip member can claim a small size and inflate to gigabytes; Python's zipfile stops reading a member at its
declared size, so bounding the declared sizes bounds what reading can inflate.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

from ..errors import LoadError

MAX_PART = 256 << 20  # bytes one part of an archive may inflate to
MAX_TOTAL = 1 << 30  # bytes all its parts together may inflate to
# An OLE2 compound file: what Office writes for a password-protected .docx/.xlsx/.pptx (the zip is inside, encrypted).
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def open_zip(path: Path, kind: str) -> zipfile.ZipFile:
    """The archive at `path`, checked; LoadError (naming the file) for an encrypted, broken or bomb archive.
    `kind` names the format in messages ("Word document")."""
    source = str(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(_OLE2):
        raise LoadError(source, f"encrypted (password-protected) {kind}: kb cannot read it; save it without a password")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, NotImplementedError):  # NotImplementedError: a damaged version byte
        raise LoadError(source, f"not a readable {kind} (not a zip archive, or truncated)") from None
    check_sizes(archive, source)
    if any(info.flag_bits & 0x1 for info in archive.infolist()):
        archive.close()
        raise LoadError(source, f"encrypted {kind}: kb cannot read it; save it without a password")
    return archive


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
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError) as exc:
        # a bad CRC, a truncated member, a damaged compressed stream, an unknown compression method
        raise LoadError(source, f"part {name!r} is damaged: {exc}") from None


def parse_xml(data: bytes, source: str) -> Any:  # noqa: ANN401 - an lxml element
    """XML from a document's part, parsed with no DTD, no entity expansion and no network. A part that
    declares entities (no Office, ODF or EPUB writer does) is refused as a possible entity bomb."""
    from lxml import etree

    if b"<!ENTITY" in data[:65536]:
        raise LoadError(source, "XML entity declarations in a document part (an entity-expansion bomb?): refused")
    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False,
                             remove_comments=True)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise LoadError(source, f"damaged XML in a document part: {exc}") from None
