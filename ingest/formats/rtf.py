"""Rich Text Format: the plain text striprtf finds, the title from the document's \\info group if it has one.

RTF is 7-bit text whose 8-bit characters are \\'xx escapes in the code page its \\ansicpg names (Windows-1252
when it names none); striprtf takes a str and that code page, so the bytes are read as Latin-1 (every byte one
character, as RTF's own bytes are) and the code page is handed over to decode the escapes.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from pathlib import Path

from ..documents import LoadedFile, changed_since_listed, whole_file
from ..errors import LoadError
from . import ReadOptions, register

_CODE_PAGE = re.compile(rb"\\ansicpg(\d{3,5})")
_TITLE = re.compile(r"\{\\title\s?([^{}]*)\}")


@register("rtf", ".rtf")
def load_rtf(path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile:
    """An RTF file as one document; a file that does not start as RTF is refused, not read as garbage."""
    from striprtf.striprtf import rtf_to_text

    source = str(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    warnings = changed_since_listed(sha256, digest)
    if not data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{\\rtf"):
        raise LoadError(source, "not an RTF file (it does not start with '{\\rtf'); is the suffix wrong?")
    encoding = code_page(data)
    raw = data.decode("latin-1")
    try:
        text = rtf_to_text(raw, encoding=encoding, errors="replace")
        found = _TITLE.search(raw)
        title = " ".join(rtf_to_text("{\\rtf1 " + found.group(1) + "}", encoding=encoding,
                                     errors="replace").split()) if found else ""
    except (ValueError, IndexError, LookupError, RecursionError) as exc:
        raise LoadError(source, f"damaged RTF: {exc}") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return whole_file(source, file_type, title or path.stem, digest, len(data), text, warnings)


def code_page(data: bytes) -> str:
    """The Python codec for the code page the RTF header names (\\ansicpgNNNN), Windows-1252 by default."""
    found = _CODE_PAGE.search(data[:4096])
    if found:
        name = f"cp{int(found.group(1))}"
        try:
            codecs.lookup(name)
        except LookupError:
            return "cp1252"
        return name
    return "cp1252"
