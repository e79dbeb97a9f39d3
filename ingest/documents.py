"""What reading a file gives: its documents (text with where it came from) and what is worth warning about.

A file in parts gives one document per part, numbered from 1 in `page`: a PDF's pages, a deck's slides, a
spreadsheet's sheets (named in `sheet`), an e-book's chapters (titled in `chapter`). Other formats give one
document. Chunk ids, passages and reading order all go by (`page`, position), whatever the part is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import BinaryIO

from .language import detect_language, main_language

# The warning on a file whose bytes differ from those the run hashed when it listed the file.
CHANGED_WHILE_READ = "changed while kb was reading it: the version read is stored"


@dataclass(frozen=True)
class Document:
    """Text of one file, or of one part of it (a PDF page, a slide, a sheet, a chapter)."""

    source: str
    file_type: str
    title: str
    sha256: str
    text: str
    page: int | None = None  # the part's number, from 1; None for a file read whole
    language: str | None = None
    sheet: str | None = None  # a spreadsheet's sheet name
    chapter: str | None = None  # an e-book's chapter title
    ocr: bool = False  # the text was read by OCR from a picture of the page


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
    def ocr_parts(self) -> int:
        """How many of the file's documents were read by OCR."""
        return sum(doc.ocr for doc in self.documents)

    @property
    def language(self) -> str | None:
        """The language most of the file's text is in (by pages), if it could be told."""
        return main_language([doc.language for doc in self.documents], [len(doc.text) for doc in self.documents])


def whole_file(source: str, file_type: str, title: str, digest: str, size: int, text: str,
               warnings: list[str]) -> LoadedFile:
    """A file read as one document (every format but PDF); one without text has none, and says so."""
    documents = [Document(source, file_type, title, digest, text, None, detect_language(text))] if text.strip() else []
    return LoadedFile(source, file_type, title, digest, size, documents, None,
                      warnings + ([] if documents else ["no text in file"]))


def changed_since_listed(sha256: str | None, digest: str) -> list[str]:
    """The warning for a file whose hash when read (`digest`) is not the one the run listed it with."""
    return [CHANGED_WHILE_READ] if sha256 and sha256 != digest else []


def sha256_of_stream(handle: BinaryIO) -> str:
    """Hex sha256 of what is left to read in `handle`, read a block at a time."""
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def pages_phrase(numbers: list[int], part: str = "page") -> str:
    """Part numbers as a reader writes them: "page 3", "pages 3-5, 9" (the first ten runs, then how many more)."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    shown = [f"{a}-{b}" if b > a else str(a) for a, b in runs[:10]]
    more = f" and {len(runs) - 10} more" if len(runs) > 10 else ""
    return f"{part}{'s' if len(numbers) > 1 else ''} {', '.join(shown)}{more}"
