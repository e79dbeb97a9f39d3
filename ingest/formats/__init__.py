"""Read files into documents, by file suffix.

Each format module registers the suffixes it reads (`@register("md", ".md", ".markdown")`) and is
imported at the bottom of this file: adding a format is adding its module there. `load` picks the
loader by suffix and turns the operating system's read errors into LoadError naming the file; a file
kb cannot read raises LoadError with the reason, and callers go on with the next file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, NamedTuple, Protocol

from ..documents import LoadedFile
from ..errors import LoadError
from ..ocr import Ocr, OcrEngine, OcrMode, OcrProcess, TesseractOcr, engine


@dataclass(frozen=True)
class ReadOptions:
    """How files are read: the password of encrypted PDFs, and which pages OCR reads, with which engine
    (`ingest.ocr`)."""

    password: str | None = field(default=None, repr=False)  # a secret: never in a repr or a log
    ocr: OcrMode = "auto"
    ocr_threads: int = 1  # threads of this process's OCR engine
    ocr_engine: OcrEngine = "rapidocr"
    ocr_languages: str = "eng+chi_sim"  # Tesseract's language packs
    # Where pages go when files are read in kb's main process (None: this process's own engine, as in a
    # parsing worker). Never pickled to a worker: workers get options without it.
    ocr_process: OcrProcess | None = field(default=None, repr=False, compare=False)

    def engine(self) -> Ocr | TesseractOcr | OcrProcess:
        """The OCR engine for these options. Raises OcrUnavailable when it cannot run here."""
        if self.ocr_process is not None:
            return self.ocr_process
        return engine(self.ocr_threads, self.ocr_engine, self.ocr_languages)


class Loader(Protocol):
    """Reads one file of `file_type`. `sha256` is the hash the run listed the file with (None: not listed).
    Raises LoadError for a file it cannot read."""

    def __call__(self, path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile: ...


class Format(NamedTuple):
    file_type: str  # stored with every chunk: "md", "pdf", ...
    loader: Loader


_FORMATS: dict[str, Format] = {}
_TYPES: dict[str, str] = {}
_PARTS: dict[str, str] = {}  # file type -> what its numbered parts are called, for types read in parts
_HEADED: set[str] = set()  # file types whose text marks its headings as Markdown does
# File type by lowercase suffix (".md": "md"), for every suffix kb reads.
SUFFIXES: Mapping[str, str] = MappingProxyType(_TYPES)


def register(file_type: str, *suffixes: str, parts: str = "page",
             headings: bool = False) -> Callable[[Loader], Loader]:
    """Decorator: `loader` reads files with these suffixes (lowercase, with the dot) as `file_type`. `parts`
    names what a document's `page` numbers for this type ("page", "slide", "sheet", "chapter"). `headings`:
    the loader's text marks headings as Markdown (`# Title`) or reStructuredText do, and each gets a heading
    entry (plain text's "# " lines are as often comments)."""

    def add(loader: Loader) -> Loader:
        _PARTS[file_type] = parts
        if headings:
            _HEADED.add(file_type)
        for suffix in suffixes:
            if suffix in _FORMATS:
                raise ValueError(f"suffix {suffix!r} registered twice")
            _FORMATS[suffix] = Format(file_type, loader)
            _TYPES[suffix] = file_type
        return loader

    return add


def part_name(file_type: str) -> str:
    """What a numbered part of a file of this type is called ("page" for a PDF, "slide" for a deck)."""
    return _PARTS.get(file_type, "page")


def marks_headings(file_type: str) -> bool:
    """Whether text of this type marks its headings (so they get heading entries)."""
    return file_type in _HEADED


def file_type_of(path: str | Path) -> str | None:
    """The file type kb reads `path` as, or None when kb does not read its suffix."""
    return _TYPES.get(Path(path).suffix.lower())


def loader_for(path: str | Path) -> Format | None:
    return _FORMATS.get(Path(path).suffix.lower())


def load(path: str | Path, sha256: str | None = None, options: ReadOptions | None = None) -> LoadedFile:
    """Read one file. Raises LoadError with the reason when it cannot be read."""
    path = Path(path)
    source = str(path)
    found = loader_for(path)
    if found is None:
        raise LoadError(source, f"unsupported file type {path.suffix or '(none)'!r}")
    try:
        return found.loader(path, file_type=found.file_type, sha256=sha256,
                            options=options or ReadOptions())
    except IsADirectoryError:
        raise LoadError(source, "is a folder, not a file") from None
    except PermissionError:
        raise LoadError(source, "permission denied") from None
    except FileNotFoundError:
        raise LoadError(source, "file disappeared before it could be read") from None
    except OSError as exc:
        raise LoadError(source, f"cannot read: {exc.strerror or exc}") from None


# Each module registers its suffixes when imported; they need `register` above, hence at the bottom.
from . import epub, html, image, mail, pdf, rtf, sheets, slides, text, word  # noqa: E402, F401
