"""Plain text, Markdown and reStructuredText: bytes decoded to text, the title from the first heading."""

from __future__ import annotations

import contextlib
import hashlib
import re
from pathlib import Path
from typing import Iterable

from ..documents import LoadedFile, changed_since_listed, whole_file
from ..errors import LoadError
from . import ReadOptions, register


@register("txt", ".txt", ".text")
@register("md", ".md", ".markdown", headings=True)
@register("rst", ".rst", headings=True)
def load_text(path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile:
    text, digest, size, warnings = read_text(path, sha256)
    title = _text_title(text, file_type) or path.stem
    return whole_file(str(path), file_type, title, digest, size, text, warnings)


def read_text(path: Path, sha256: str | None) -> tuple[str, str, int, list[str]]:
    """The file's text, the hash and size of its bytes, and the warning if they changed since it was listed.

    The hash is of the bytes read, not of what was there when the run listed the file: a file written to
    in between is recorded as the version whose text is stored.
    """
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    warnings = changed_since_listed(sha256, digest)
    return decode(str(path), data), digest, len(data), warnings


def decode(source: str, data: bytes) -> str:
    """Bytes to text: UTF-8 first (with or without BOM), else the detected encoding; binary is refused."""
    if not data:
        return ""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        from charset_normalizer import from_bytes

        if exc.reason == "unexpected end of data" and exc.end == len(data):
            # UTF-8 cut inside its last character (a truncated file): the rest is UTF-8, not another encoding.
            with contextlib.suppress(UnicodeDecodeError):
                return _newlines(data[:exc.start].decode("utf-8"), source)

        if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise LoadError(source, "binary content, not text") from None
        text = _guess_decode(source, from_bytes(data))
    return _newlines(text, source)


def _newlines(text: str, source: str = "") -> str:
    """Unix line ends; text with NUL characters is binary, refused."""
    if "\x00" in text:
        raise LoadError(source, "binary content, not text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


_SINGLE_BYTE_LATIN = ("cp125", "iso8859", "latin", "mac_", "cp775", "cp850", "cp437")


def _guess_decode(source: str, matches: Iterable) -> str:  # charset_normalizer's CharsetMatches
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


def _text_title(text: str, file_type: str) -> str | None:
    lines = [line.strip() for line in text.splitlines()[:50]]
    if file_type == "md":
        for line in lines:
            if line.startswith("# "):
                return line[2:].strip()
    if file_type == "rst":
        for line, underline in zip(lines, lines[1:]):
            if line and len(underline) >= len(line) and re.fullmatch(r"([=\-~^*#])\1+", underline or ""):
                return line
    return None
