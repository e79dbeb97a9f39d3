"""Images (photos of pages, scans): read by OCR, one document per page of a multi-page TIFF.

Pillow reads the header first: an image past `ocr.MAX_PIXELS` is refused before a pixel is decoded (a
20,000 x 20,000 PNG is a few kilobytes on disk and 1.2 GB decoded). JPEGs decode straight at the size
the engine reads; others are decoded whole, then scaled down.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
from pathlib import Path

from ..documents import Document, LoadedFile, changed_since_listed, pages_phrase, sha256_of_stream
from ..errors import LoadError, OcrUnavailable
from ..language import detect_language
from ..ocr import MAX_PIXELS, READ_SIDE, fit_for_reading
from . import ReadOptions, register

IMAGE_TYPES = ("png", "jpeg", "tiff")
# Pages read from one multi-page TIFF; more are named in a warning, not read.
MAX_FRAMES = 2000
# What Pillow raises on a damaged or truncated image, beside its own DecompressionBombError.
_DAMAGED = (OSError, SyntaxError, ValueError, EOFError, struct.error)


@register("tiff", ".tif", ".tiff")
@register("jpeg", ".jpg", ".jpeg")
@register("png", ".png")
def load_image(path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile:
    source = str(path)
    if options.ocr == "never":
        raise LoadError(source, "an image has no text layer; OCR off (--ocr never, KB_OCR=never): nothing to index")
    from PIL import Image

    with open(path, "rb") as handle:
        digest = sha256_of_stream(handle)
        size = handle.tell()
        handle.seek(0)
        with warnings.catch_warnings(record=True) as noticed:
            # Pillow warns past 89 million pixels (kb refuses past its own bound, saying so), and of damaged
            # metadata ("Corrupt EXIF data"): the latter become the file's warnings, not lines on stderr.
            warnings.simplefilter("always")
            texts, frames = _read_image(source, handle, file_type, options)
    said = changed_since_listed(sha256, digest)
    for warning in noticed:
        if f"{os.sep}PIL{os.sep}" not in warning.filename:  # not about the file: as Python would show it
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
        elif not issubclass(warning.category, Image.DecompressionBombWarning):
            said.append(f"Pillow: {warning.message}")
    title = path.stem
    numbered = len(texts) > 1
    documents = [Document(source, file_type, title, digest, text, number if numbered else None,
                          detect_language(text), ocr=True)
                 for number, text in enumerate(texts, start=1) if text]
    if not documents:
        raise LoadError(source, "OCR found no text in the image: nothing to index")
    blank = [number for number, text in enumerate(texts, start=1) if not text]
    if blank:
        said.append(f"OCR found no text on {pages_phrase(blank)}")
    if frames > MAX_FRAMES:
        said.append(f"only the first {MAX_FRAMES} of {frames} pages were read")
    return LoadedFile(source, file_type, title, digest, size, documents, len(texts) if numbered else None, said)


def _read_image(source: str, handle, file_type: str, options: ReadOptions) -> tuple[list[str], int]:  # noqa: ANN001
    """Each page's OCR text, and how many pages the file has. Every page's size is checked before any is
    read, so a bomb on page 2 costs no OCR of page 1."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(handle) as image:
            frames = getattr(image, "n_frames", 1) if file_type == "tiff" else 1
            read = range(min(frames, MAX_FRAMES))
            for index in read:
                image.seek(index)
                width, height = image.size
                if width * height > MAX_PIXELS:
                    where = f" (page {index + 1})" if frames > 1 else ""
                    raise LoadError(source, _past_bound(f"{width} x {height} pixels") + where)
            return [_read_frame(image, index, options) for index in read], frames
    except Image.DecompressionBombError as exc:  # Pillow's own check, at twice its 89-million bound
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise LoadError(source, _past_bound(f"{int(pixels[1]):,} pixels" if pixels else "more pixels")) from None
    except UnidentifiedImageError:
        raise LoadError(source, f"not a readable {file_type.upper()} image") from None
    except _DAMAGED as exc:
        raise LoadError(source, f"damaged or truncated image ({type(exc).__name__}: {exc})") from None
    except OcrUnavailable as exc:
        raise LoadError(source, str(exc)) from None


def _read_frame(image, index: int, options: ReadOptions) -> str:  # noqa: ANN001 - PIL image
    """OCR of frame `index` (its size already checked), at the size the engine reads."""
    image.seek(index)
    image.draft("RGB", (READ_SIDE, READ_SIDE))  # JPEG only: decoded at a fraction of its size
    image.load()
    page = _flat(image)
    factor = max(page.size) // READ_SIDE  # halving a 2,339-pixel scan would lose detail the engine reads
    if factor > 1:
        page = page.reduce(factor)  # cheap integer shrink first; fit_for_reading resamples the rest
    return options.engine().read(fit_for_reading(page)).strip()


def _past_bound(size: str) -> str:
    return (f"an image of {size} is past kb's bound of {MAX_PIXELS // 1_000_000} million pixels "
            "(a decompression bomb?): not decoded")


def _flat(image):  # noqa: ANN001, ANN202 - PIL images
    """A copy in L or RGB: transparency laid on white (dark text on a clear background stays readable),
    one-bit and 16-bit scans as grey."""
    from PIL import Image

    if image.mode in ("L", "RGB"):
        return image.copy()
    if image.mode == "1":
        return image.convert("L")
    if image.mode.startswith(("I", "F")):  # 16-bit and float scans: their range scaled to 8 bits, not clipped
        import numpy as np

        levels = np.asarray(image, dtype=np.float32)
        top = float(levels.max()) or 1.0
        return Image.fromarray((levels * (255.0 / top)).clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, "white")
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")
