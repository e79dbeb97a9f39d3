"""Pictures of pages for the OCR tests: pages rendered from known text, made to look scanned or photographed,
packed into image-only and text PDFs; decompression bombs; OCRmyPDF's real scans (fetched from PyPI); and the
character error rate that compares what OCR read with the true text.

python -m tests.rigs.scans DIR   # write the sample pictures into DIR, to look at them
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import textwrap
import unicodedata
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from .thirdparty import OCRMYPDF, sdist_files

if TYPE_CHECKING:
    from PIL.Image import Image

FONT_PACKAGE = "fonts-wqy-zenhei"

# Plain facts on topics kb's sample data (data/) does not cover, in lines short enough for one page width.
CHINESE_SCAN_LINES = [
    "蔡伦是东汉时期的一位宦官。",
    "他在宫中主管制造各种器物。",
    "当时的文字多写在竹简和丝帛上。",
    "竹简十分笨重，丝帛又很昂贵。",
    "",
    "蔡伦总结了前人造纸的经验。",
    "他用树皮、麻头、破布和旧渔网造纸。",
    "原料先被切碎，再放进水里浸泡。",
    "然后捣成纸浆，用细帘捞出薄层。",
    "薄层晒干以后就成了一张纸。",
    "",
    "公元105年，他把这种纸献给皇帝。",
    "新纸轻便好用，比丝帛和竹简便宜。",
    "后人把这种纸叫做蔡侯纸。",
]
ENGLISH_PAGE_LINES = [
    "Before electric light, a keeper lived by the lamp.",
    "Each evening he climbed the tower to light the lamp.",
    "He trimmed the wicks so the flame burned clean.",
    "The lamp burned whale oil, then lard oil and kerosene.",
    "Soot dimmed the beam, so he polished the glass daily.",
    "",
    "In 1822 Augustin Fresnel designed a new kind of lens.",
    "Rings of glass prisms bent the light into one beam.",
    "The beam of a large lens was seen twenty miles away.",
    "A clockwork motor turned the lens through the night.",
    "The keeper wound up its weights every few hours.",
    "",
    "When fog hid the light, he sounded the fog signal.",
    "Bells, whistles and horns warned ships off the rocks.",
    "Each station had its own pattern of blasts.",
    "He wrote every hour of fog in the station logbook.",
]


def font(cjk: bool = True) -> Path:
    """WenQuanYi Zen Hei (Chinese, with Latin glyphs too); with `cjk=False`, DejaVu Serif when installed (a
    book face for Latin pages), else Zen Hei again."""
    if not cjk:
        found = _fc_match("DejaVu Serif")
        if found:
            return found
    found = _fc_match("WenQuanYi Zen Hei")
    assert found, f"the font WenQuanYi Zen Hei is missing: install the Debian package {FONT_PACKAGE}"
    return found


def _fc_match(family: str) -> Path | None:
    """The file of `family`, or None when fontconfig would substitute another family for it."""
    try:
        out = subprocess.run(["fc-match", "-f", "%{family}|%{file}", family], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    families, _, file = out.partition("|")
    return Path(file) if family in families.split(",") and Path(file).is_file() else None


def page_image(lines: list[str], *, size: tuple[int, int] = (1654, 2339), font_px: int = 34, margin: int = 130,
               line_gap: float = 1.6, paragraph_gap: float = 2.6) -> Image:
    """A page ("L" mode, A4 at 200 dpi by default): black text on white, one line per item, an empty item a
    paragraph break. Lines are not wrapped."""
    from PIL import Image as PilImage
    from PIL import ImageDraw, ImageFont

    page = PilImage.new("L", size, 255)
    draw = ImageDraw.Draw(page)
    face = ImageFont.truetype(str(font()), font_px)
    y = float(margin)
    for index, line in enumerate(lines):
        if not line:
            continue
        # The blank item's gap replaces the line gap: paragraphs stand apart by paragraph_gap lines.
        if index and not lines[index - 1] and y > margin:
            y += (paragraph_gap - line_gap) * font_px
        draw.text((margin, round(y)), line, font=face, fill=0)
        y += line_gap * font_px
    return page


def scanned(image: Image, *, angle: float = 0.7, noise: float = 0.04, blur: float = 0.6, seed: int = 0) -> Image:
    """`image` as a flatbed scanner gives it back: slightly turned, soft, on greyish paper, with specks
    (a `noise` share of the pixels turned black or white)."""
    import numpy as np
    from PIL import Image as PilImage
    from PIL import ImageFilter

    grey = image.convert("L").rotate(angle, resample=PilImage.Resampling.BICUBIC, fillcolor=255)
    if blur:
        grey = grey.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(grey).astype(np.float32) * 0.82 + 28  # paper is never white, ink never black
    rng = np.random.default_rng(seed)
    specks = rng.random(pixels.shape)
    pixels[specks < noise / 2] = 20
    pixels[(specks >= noise / 2) & (specks < noise)] = 250
    return PilImage.fromarray(pixels.clip(0, 255).astype(np.uint8), "L")


def image_only_pdf(images: list[Image], path: Path, dpi: int = 200) -> Path:
    """A PDF of one image per page and no text layer, as a scanner writes it."""
    pages = [image if image.mode in ("1", "L", "RGB") else image.convert("RGB") for image in images]
    pages[0].save(path, "PDF", save_all=True, append_images=pages[1:], resolution=dpi)
    return path


def text_pdf(pages: list[str], path: Path) -> Path:
    """A PDF with a real text layer: each page's lines in Helvetica (Latin-1 text only), A4. Written byte by
    byte, as tests/pdfmaker.py does, since no PDF library that writes text is installed."""
    objects = {1: b"<< /Type /Catalog /Pages 2 0 R >>",
               3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"}
    kids = []
    for index, text in enumerate(pages):
        content, page = 4 + 2 * index, 5 + 2 * index
        shown = b" T* ".join(b"(" + _pdf_string(line) + b") Tj" for line in text.split("\n"))
        stream = b"BT /F1 12 Tf 16 TL 72 770 Td " + shown + b" ET"
        objects[content] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
        objects[page] = b"<< /Type /Page /Parent 2 0 R /Contents %d 0 R >>" % content
        kids.append(page)
    objects[2] = (b"<< /Type /Pages /Count %d /Kids [%s] /MediaBox [0 0 595 842] "
                  b"/Resources << /Font << /F1 3 0 R >> >> >>" % (len(kids), b" ".join(b"%d 0 R" % k for k in kids)))
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offsets[number] for number in sorted(objects))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def _pdf_string(line: str) -> bytes:
    return line.encode("cp1252").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def photo_of(image: Image, path: Path, *, exif_rotation: bool = True, seed: int = 0) -> Path:
    """A JPEG like a phone's picture of the page: on a grey desk, seen a little askew, lit unevenly. With
    `exif_rotation` the pixels are stored turned a quarter, and EXIF Orientation 6 says to turn them back."""
    import numpy as np
    from PIL import Image as PilImage

    rng = np.random.default_rng(seed)
    width, height = image.size
    border = round(0.06 * max(width, height))
    canvas = (width + 2 * border, height + 2 * border)
    # Where the page's corners land in the photo: each moved a little, as a hand-held camera sees them.
    corners = [(0, 0), (width, 0), (width, height), (0, height)]
    landed = [(x + border + rng.uniform(-0.4, 0.4) * border, y + border + rng.uniform(-0.4, 0.4) * border)
              for x, y in corners]
    page = image.convert("L").transform(canvas, PilImage.Transform.PERSPECTIVE, _perspective(landed, corners),
                                        resample=PilImage.Resampling.BICUBIC, fillcolor=0)
    inside = PilImage.new("L", image.size, 255).transform(canvas, PilImage.Transform.PERSPECTIVE,
                                                          _perspective(landed, corners), fillcolor=0)
    shot = np.where(np.asarray(inside) > 127, np.asarray(page, dtype=np.float32), np.float32(110))  # grey desk
    # Light falls off from one corner: the far side of the page is a third darker.
    xs = np.arange(canvas[0], dtype=np.float32)[None, :] / canvas[0]
    ys = np.arange(canvas[1], dtype=np.float32)[:, None] / canvas[1]
    shot *= 1.0 - 0.33 * (xs + ys) / 2
    shot += rng.normal(0, 4, shot.shape).astype(np.float32)
    grey = shot.clip(0, 255).astype(np.uint8)
    photo = PilImage.merge("RGB", [PilImage.fromarray((grey * tint).clip(0, 255).astype(np.uint8))
                                   for tint in (1.0, 0.97, 0.9)])  # warm indoor light
    exif = PilImage.Exif()
    if exif_rotation:
        photo = photo.transpose(PilImage.Transpose.ROTATE_90)
        exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to show
    photo.save(path, "JPEG", quality=85, exif=exif.tobytes())
    return path


def _perspective(target: list[tuple[float, float]], source: list[tuple[float, int]]) -> tuple[float, ...]:
    """Pillow's PERSPECTIVE coefficients mapping each output point in `target` to the input point in `source`."""
    import numpy as np

    rows, values = [], []
    for (x, y), (u, v) in zip(target, source):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        values += [u, v]
    return tuple(np.linalg.solve(np.array(rows), np.array(values)))


def png_bomb(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A valid white 1-bit PNG of width x height: a few hundred kilobytes on disk, 400 MB as Pillow's "1"
    mode and 1.2 GB as RGB once decoded. Written a row at a time, so making it takes little memory."""
    row = b"\x00" + b"\xff" * ((width + 7) // 8)  # filter byte "none", then the row's bits
    packer = zlib.compressobj(9)
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        _png_chunk(out, b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        for _ in range(height):
            if data := packer.compress(row):
                _png_chunk(out, b"IDAT", data)
        _png_chunk(out, b"IDAT", packer.flush())
        _png_chunk(out, b"IEND", b"")
    return path


def _png_chunk(out, kind: bytes, data: bytes) -> None:  # noqa: ANN001 - a binary file
    out.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))


def tiff_bomb(path: Path, width: int = 20000, height: int = 20000, *, first_page: Image | None = None) -> Path:
    """A valid white 1-bit TIFF of width x height in one Deflate strip: small on disk, huge decoded. With
    `first_page`, that picture (as 1-bit) is page 1 and the bomb page 2, where only a per-page check finds it."""
    row = b"\xff" * ((width + 7) // 8)
    pages = [(width, height, _deflated(row for _ in range(height)))]
    if first_page is not None:
        bits = first_page.convert("1")
        pages.insert(0, (*bits.size, _deflated([bits.tobytes()])))
    out = bytearray(b"II*\x00\x00\x00\x00\x00")  # the first directory's offset, filled in below
    where = []
    for _, _, strip in pages:
        where.append(len(out))
        out += strip + b"\x00" * (len(strip) % 2)  # directories start on a word boundary
    link = 4  # where the offset of the next directory goes
    for (columns, rows, strip), offset in zip(pages, where):
        struct.pack_into("<I", out, link, len(out))
        # Width, height, 1 bit a sample, Deflate, BlackIsZero, strip offset, 1 sample a pixel, rows a strip, bytes.
        entries = [(256, 4, columns), (257, 4, rows), (258, 3, 1), (259, 3, 8), (262, 3, 1), (273, 4, offset),
                   (277, 3, 1), (278, 4, rows), (279, 4, len(strip))]
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            out += struct.pack("<HHI", tag, kind, 1) + struct.pack("<HH" if kind == 3 else "<I", *(
                (value, 0) if kind == 3 else (value,)))
        link = len(out)
        out += b"\x00\x00\x00\x00"  # no next directory, unless the next page fills it in
    path.write_bytes(bytes(out))
    return path


def _deflated(rows) -> bytes:  # noqa: ANN001 - an iterable of bytes
    packer = zlib.compressobj(9)
    return b"".join(packer.compress(row) for row in rows) + packer.flush()


def joined_pdf(parts: list[Path], path: Path) -> Path:
    """The pages of the PDFs `parts`, in order, in one PDF (text pages and scanned pages mixed)."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    for part in parts:
        writer.append(part)
    with open(path, "wb") as out:
        writer.write(out)
    return path


# The peak is VmHWM, the child's own: ru_maxrss carries the parent's peak across fork and exec, and the
# parent (pytest) may hold an OCR engine of half a gigabyte.
_LOAD_AND_MEASURE = textwrap.dedent(r"""
    import json, re, sys
    from ingest.errors import LoadError
    from ingest.formats import load
    files = {}
    for path in sys.argv[1:]:
        try:
            files[path] = {"reason": None, "text": "\n\n".join(doc.text for doc in load(path).documents)}
        except LoadError as exc:
            files[path] = {"reason": exc.reason, "text": ""}
    with open("/proc/self/status") as status:
        peak_kb = int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1))
    print(json.dumps({"files": files, "peak_mb": peak_kb / 1024}))
""")


def load_in_fresh_python(*paths: Path) -> dict:
    """Load `paths` with `ingest.formats.load` in a new Python process, for its peak memory: {"files": {path:
    {"reason": the LoadError's reason or None, "text": the documents' text}}, "peak_mb": peak resident MB}."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _LOAD_AND_MEASURE, *map(str, paths)], cwd=root, check=True,
                          capture_output=True, text=True, timeout=600)
    return json.loads(done.stdout.splitlines()[-1])


def ocrmypdf_images() -> Path:
    """OCRmyPDF's test pictures and their true text (linn.png with linn.txt, typewriter.png, crom.png, baiona.png
    in many image modes), fetched once from its source distribution on PyPI."""
    return sdist_files("ocrmypdf", OCRMYPDF, ("tests/resources",), (".png", ".jpg", ".txt"))


def normalised(text: str, *, spaces: bool = False) -> str:
    """`text` as compared: NFKC (full-width punctuation as ASCII), whitespace dropped, or with `spaces` each run
    of it as one space (RapidOCR often leaves out the spaces between English words)."""
    text = unicodedata.normalize("NFKC", text)
    return re.sub(r"\s+", " ", text).strip() if spaces else re.sub(r"\s+", "", text)


def cer(truth: str, read: str, *, spaces: bool = False) -> float:
    """Character error rate: edits (Levenshtein) from the true text to what was read, per true character."""
    truth, read = normalised(truth, spaces=spaces), normalised(read, spaces=spaces)
    return levenshtein(truth, read) / max(len(truth), 1)


def levenshtein(a: str, b: str) -> int:
    """Edit distance, a row of the table at a time in numpy (pages of text in a fraction of a second)."""
    import numpy as np

    if not a or not b:
        return len(a) + len(b)
    codes = np.array([ord(c) for c in b])
    steps = np.arange(len(b) + 1)
    previous = steps.copy()
    for i, char in enumerate(a, start=1):
        current = np.empty_like(previous)
        current[0] = i
        # Substitution or match, and deletion; then insertions run along the row: current[j] = min over
        # k <= j of (best[k] + j - k), a running minimum of best - k.
        current[1:] = np.minimum(previous[:-1] + (codes != ord(char)), previous[1:] + 1)
        current = np.minimum.accumulate(current - steps) + steps
        previous = current
    return int(previous[-1])


def page_text(lines: list[str]) -> str:
    """The true text of a page made from `lines`: paragraphs apart by a blank line."""
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    folder.mkdir(parents=True, exist_ok=True)
    english, chinese = page_image(ENGLISH_PAGE_LINES), page_image(CHINESE_SCAN_LINES, font_px=40)
    scanned(english).save(folder / "english-scan.png")
    scanned(chinese, seed=1).save(folder / "chinese-scan.png")
    photo_of(english, folder / "english-photo.jpg")
    image_only_pdf([scanned(english), scanned(chinese, seed=1)], folder / "scans.pdf")
    text_pdf(["\n".join(ENGLISH_PAGE_LINES)], folder / "text.pdf")
    print(folder)


def word_recall(truth: str, text: str) -> float:
    """The share of the true text's words (four letters or more, any case) that were read, in any order: what
    search sees when columns come out in another order than the truth's."""
    words = {word.lower() for word in re.findall(r"[A-Za-z]{4,}", truth)}
    return len(words & {word.lower() for word in re.findall(r"[A-Za-z]{4,}", text)}) / len(words)
