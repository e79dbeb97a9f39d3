"""Rich Text Format: the plain text striprtf finds, the title from the document's \\info group if it has one.

RTF is 7-bit text whose 8-bit characters are \\'xx escapes in the code page its \\ansicpg names (Windows-1252
when it names none); striprtf takes a str and that code page, so the bytes are read as Latin-1 (every byte one
character, as RTF's own bytes are) and the code page is handed over to decode the escapes.

A file cut short (a download or copy that stopped) ends with groups still open: the text up to the cut is read,
without the control word the cut may have split, and the file is named with a warning; one cut before any text
is refused as truncated rather than read as empty.

Tables: striprtf writes each row as its cells followed by "|"; kb reads a run of such rows as the other formats
read a table, the first row as the header and each later cell named by its column ("Name: Ada; Born: 1815").
"""

from __future__ import annotations

import codecs
import hashlib
import re
from pathlib import Path

from ..documents import LoadedFile, changed_since_listed, whole_file
from ..errors import LoadError
from . import ReadOptions, register
from .tables import row_lines

_CODE_PAGE = re.compile(rb"\\ansicpg(\d{3,5})")
_TITLE = re.compile(r"\{\\title\s?([^{}]*)\}")
# What a cut can leave at the end of the file: a control word or \'xx escape without its end, or a lone backslash.
_CUT_TOKEN = re.compile(r"\\(?:[a-zA-Z]{1,32}-?\d*|'[0-9a-fA-F]?)?\Z")
_BIN = re.compile(r"\\bin(\d+) ?")


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
    open_groups = unclosed_groups(raw)
    if open_groups:
        raw = _without_cut_token(raw)
    try:
        text = rtf_to_text(raw, encoding=encoding, errors="replace")
        found = _TITLE.search(raw)
        title = " ".join(rtf_to_text("{\\rtf1 " + found.group(1) + "}", encoding=encoding,
                                     errors="replace").split()) if found else ""
    except (ValueError, IndexError, LookupError, RecursionError) as exc:
        raise LoadError(source, f"damaged RTF: {exc}") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _tables(text, cut=open_groups > 0 and _inside_row(raw))
    if open_groups:
        groups = f"{open_groups} group{'s' if open_groups > 1 else ''} left open"
        if not text.strip():
            raise LoadError(source, f"truncated RTF: the file ends before any text ({groups})")
        warnings.append(f"truncated RTF: the file ends with {groups}; the text up to there is read")
    return whole_file(source, file_type, title or path.stem, digest, len(data), text, warnings)


def _tables(text: str, cut: bool = False) -> str:
    """striprtf's table rows ("Name|Born|") as header-named lines; the rest of the text as it is. `cut`: the
    file was cut short inside a row (its last line is that row's start)."""
    out: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        out.extend(row_lines(rows))
        rows.clear()

    lines = text.split("\n")
    for number, line in enumerate(lines):
        # A row ends with "|"; a file cut inside a row ends with the row's start.
        if line.endswith("|") or (cut and not any(lines[number + 1:])):
            rows.append([" ".join(cell.split()) for cell in line.removesuffix("|").split("|")])
            continue
        flush()
        out.append(line)
    flush()
    return "\n".join(out)


def _inside_row(raw: str) -> bool:
    """The text ends inside a table row: a row definition (\\trowd) after the last row's end (\\row)."""
    starts = [found.start() for found in re.finditer(r"\\trowd(?![a-z])", raw)]
    ends = [found.start() for found in re.finditer(r"\\row(?![a-z])", raw)]
    return bool(starts) and (not ends or starts[-1] > ends[-1])


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


def unclosed_groups(raw: str) -> int:
    """How many groups are still open at the end of the file: more than 0 for a file cut short. Escaped braces
    and \\binN data are not counted."""
    if "\\bin" not in raw:
        plain = raw.replace("\\\\", "")
        return max(plain.count("{") - plain.count("}") - plain.count("\\{") + plain.count("\\}"), 0)
    depth = position = 0
    for found in re.finditer(r"\\bin\d+ ?|\\[\s\S]|[{}]", raw):
        if found.start() < position:
            continue  # inside binary data
        token = found.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth = max(depth - 1, 0)
        elif (binary := _BIN.fullmatch(token)) is not None:
            position = found.end() + int(binary.group(1))
    return depth


def _without_cut_token(raw: str) -> str:
    """The text without a control word or escape that the end of the file cut (striprtf would keep a lone
    backslash as text)."""
    found = _CUT_TOKEN.search(raw, max(len(raw) - 48, 0))  # a control word is at most 32 letters and a number
    if found is None:
        return raw
    before = found.start()
    while before > 0 and raw[before - 1] == "\\":
        before -= 1
    return raw if (found.start() - before) % 2 else raw[:found.start()]  # after "\\\\" (a backslash): not a cut
