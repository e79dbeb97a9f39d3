"""Text from pictures of pages (scanned PDF pages, photos, scanned images), read by OCR.

Two engines. RapidOCR, the default: PP-OCRv4's Chinese-and-English models on onnxruntime, shipped inside the
rapidocr-onnxruntime wheel, so nothing is downloaded at run time; building one takes a fraction of a second
and about half a gigabyte, so each process builds its engine on first use and keeps it. Tesseract, when
installed (Debian's tesseract-ocr and its language packs), with `KB_OCR_ENGINE=tesseract`: better on English
(it keeps the spaces RapidOCR drops), weaker on Chinese. docs/benchmarks.md compares them on the same scans.
Files are read in the parsing workers, so OCR runs there, beside the embedder rather than in front of it; a
file read in kb's own process (a small run, or the first files while the workers start) sends its pages to an
`OcrProcess`.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import statistics
import subprocess
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

from .errors import OcrUnavailable

if TYPE_CHECKING:
    from PIL.Image import Image

# auto: pages with no text layer, and images; always: every page, the text layer ignored; never: none.
OcrMode = Literal["auto", "always", "never"]
OCR_MODES: tuple[str, ...] = get_args(OcrMode)
OcrEngine = Literal["rapidocr", "tesseract"]

# Pixels kb will decode from one image, or render from one PDF page. An A3 page scanned at 600 dpi is 70
# million; past this bound, an image is a decompression bomb (or a poster) and is refused unread.
MAX_PIXELS = 80_000_000
# The longest side of what the engine reads: RapidOCR scales anything longer down to this itself, so
# decoding or rendering more only costs memory.
READ_SIDE = 2000
# A PDF page whose text layer has fewer visible characters than this is read as a scan in `auto` mode (a
# scanner's stamp or a page number is not a text layer); one with fewer than SPARSE_BELOW is, when pictures
# cover at least half of it (a scanner's "Scanned by ..." header over a picture of the page).
SCANNED_BELOW = 16
SPARSE_BELOW = 200


class Ocr:
    """Reads the text of page images with RapidOCR. One per process (`engine`), as loading the models is the
    costly part."""

    def __init__(self, threads: int = 1) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:  # Python 3.13+, where rapidocr-onnxruntime 1.4 does not install
            raise OcrUnavailable(f"rapidocr-onnxruntime cannot be imported ({exc})") from None
        # Threads per engine: the parsing workers are one process per core, each with its own engine.
        self._engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)

    def read(self, image: Image) -> str:
        """The text of one page image, line by line in reading order, paragraphs apart by a blank line."""
        import numpy as np

        rgb = image if image.mode == "RGB" else image.convert("RGB")
        found, _ = self._engine(np.asarray(rgb)[:, :, ::-1])  # the engine takes OpenCV's BGR order
        return lines_to_text(found or [])


class TesseractOcr:
    """Reads the text of page images with the `tesseract` program, one run per page (its Python bindings
    must be compiled against it), in `languages` ("eng+chi_sim")."""

    def __init__(self, languages: str = "eng+chi_sim", threads: int = 1) -> None:
        self.program = shutil.which("tesseract")
        if self.program is None:
            raise OcrUnavailable("the tesseract program is not installed (apt-get install tesseract-ocr "
                                 "tesseract-ocr-chi-sim), or set KB_OCR_ENGINE=rapidocr")
        listed = subprocess.run([self.program, "--list-langs"], capture_output=True, text=True, timeout=60)
        have = set(listed.stdout.split()[1:] if listed.returncode == 0 else [])
        missing = [name for name in languages.split("+") if name not in have]
        if missing:
            raise OcrUnavailable(f"Tesseract has no language pack for {', '.join(missing)} (installed: "
                                 f"{', '.join(sorted(have)) or 'none'}): install tesseract-ocr-<language>")
        # Page segmentation 1 detects the page's orientation first (photos taken sideways) when the `osd`
        # pack is there; 3 is the same without.
        self.arguments = ["-l", languages, "--psm", "1" if "osd" in have else "3"]
        self.environment = {**os.environ, "OMP_THREAD_LIMIT": str(threads)}

    def read(self, image: Image) -> str:
        import io

        png = io.BytesIO()
        image.save(png, "PNG")
        done = subprocess.run([self.program, "stdin", "stdout", *self.arguments], input=png.getvalue(),
                              capture_output=True, timeout=300, env=self.environment)
        if done.returncode != 0:
            raise OcrUnavailable(f"tesseract failed: {done.stderr.decode(errors='replace').strip()[-300:]}")
        return _tidy(done.stdout.decode("utf-8", errors="replace"))


class OcrProcess:
    """An engine in a process of its own, for files read in kb's main process: OCR there would take the CPU
    and the GIL from the embedder and the store, and keep half a gigabyte of models after the run. The
    process is spawned at the first page it is given (most runs have none) and ends at `close`, for good: a
    run's last thread still reading after it has ended must not spawn another."""

    def __init__(self, threads: int = 1, name: OcrEngine = "rapidocr", languages: str = "eng+chi_sim") -> None:
        self._args = (int(threads), name, languages if name == "tesseract" else "")
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.pages = 0  # pages read, for tests and the curious

    def read(self, image: Image) -> str:
        """The text of one page image, read in the OCR process. Raises OcrUnavailable when the engine cannot
        run, or the process died (it is spawned again for the next page)."""
        with self._lock:
            if self._closed:
                raise OcrUnavailable("the run is over (its OCR process has ended)")
            if self._pool is None:
                from .processes import process_pool

                self._pool = process_pool("kb-ocr", 1)
            pool = self._pool
        try:
            text = pool.submit(_read_in_this_process, *self._args, image).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            raise OcrUnavailable("the OCR process ended while reading a page (out of memory?)") from None
        self.pages += 1
        return text

    def close(self) -> None:
        """End the process (waiting for the page it may be reading)."""
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _read_in_this_process(threads: int, name: str, languages: str, image: Image) -> str:
    return _engine(threads, name, languages).read(image)


def _tidy(text: str) -> str:
    """Tesseract's page text: paragraphs apart by one blank line, no form feed, no space between two Han
    characters (its Chinese model spaces them out)."""
    text = re.sub(r"(?<=[\u3400-\u9fff\u3000-\u303f\uff00-\uffef]) (?=[\u3400-\u9fff\u3000-\u303f\uff00-\uffef])",
                  "", text.replace("\f", ""))
    return re.sub(r"\n\s*\n\s*", "\n\n", text).strip()


def engine(threads: int = 1, name: OcrEngine = "rapidocr", languages: str = "eng+chi_sim") -> Ocr | TesseractOcr:
    """This process's engine, built on first use. Raises OcrUnavailable when it cannot run here."""
    return _engine(int(threads), name, languages if name == "tesseract" else "")


@functools.cache
def _engine(threads: int, name: str, languages: str) -> Ocr | TesseractOcr:
    # Cached on positional, normalised arguments: `engine()` and `engine(threads=1)` are one engine of half a
    # gigabyte, not two.
    return TesseractOcr(languages, threads) if name == "tesseract" else Ocr(threads)


class _Line(NamedTuple):
    left: float  # the box's upright extent, for the reading order
    top: float
    right: float
    bottom: float
    text: str
    start_top: float  # its left edge's ends: a line's height and the gap to the next, true on a turned page
    start_bottom: float


def lines_to_text(found: list[Any]) -> str:
    """RapidOCR's lines ([box, text, score]) as text, in reading order (`reading_order`: columns one after
    the other). A gap taller than most lines, or a jump back up to the next column, starts a paragraph, so
    the chunker sees the page's paragraphs."""
    # A box is [top left, top right, bottom right, bottom left].
    lines = [_Line(min(x for x, _ in box), min(y for _, y in box), max(x for x, _ in box), max(y for _, y in box),
                   text.strip(), box[0][1], box[3][1]) for box, text, _score in found if text.strip()]
    if not lines:
        return ""
    lines = reading_order(lines)
    usual = statistics.median(line.start_bottom - line.start_top for line in lines) or 1.0
    parts = [lines[0].text]
    for previous, line in zip(lines, lines[1:]):
        gap = line.start_top - previous.start_bottom
        back_up = line.start_top < previous.start_top - usual  # the top of the next column
        parts.append(("\n\n" if gap > 0.8 * usual or back_up else "\n") + line.text)
    return "".join(parts)


def reading_order(lines: list[_Line]) -> list[_Line]:
    """Lines in the order a reader takes them, by recursive XY-cut: cut the page at its widest band of white
    that no line crosses, across (blocks one above another) or down (side by side), and read the two parts
    in order. Sorting by height alone interleaves the lines of two columns. A cut down is taken for columns
    of text (lines of a dozen characters or more); the cells of a table are read row by row."""
    if len(lines) < 2:
        return lines
    across, down = _cut(lines, vertical=True), _cut(lines, vertical=False)
    texty = statistics.median(len(line.text) for line in lines) >= 12
    if down and (across is None or (texty and down[0] > across[0])):
        parts = down[1:]
    elif across:
        parts = across[1:]
    else:
        return sorted(lines, key=lambda line: (line.top, line.left))
    return [line for part in parts for line in reading_order(part)]


def _cut(lines: list[_Line], vertical: bool) -> tuple[float, list[_Line], list[_Line]] | None:
    """The widest white gap that no line spans, along the page's height (`vertical`) or its width, with the
    lines before and after it; None when every gap is spanned."""
    start, end = ((lambda line: line.top), (lambda line: line.bottom)) if vertical else (
        (lambda line: line.left), (lambda line: line.right))
    ordered = sorted(lines, key=start)
    best: tuple[float, int] | None = None
    reach = end(ordered[0])
    for index, line in enumerate(ordered[1:], start=1):
        if start(line) > reach and (best is None or start(line) - reach > best[0]):
            best = (start(line) - reach, index)
        reach = max(reach, end(line))
    if best is None:
        return None
    return best[0], ordered[:best[1]], ordered[best[1]:]


def fit_for_reading(image: Image) -> Image:
    """`image` scaled down so its longest side is READ_SIDE (the engine would do so itself, after holding
    the full-size copy), upright as its EXIF says (phone photos), in RGB."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image) or image
    if max(image.size) > READ_SIDE:
        image.thumbnail((READ_SIDE, READ_SIDE))
    return image if image.mode == "RGB" else image.convert("RGB")
