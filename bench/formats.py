"""Parts per second for each format kb reads, 1 and 2 processes side by side; --bombs: hostile files' memory.

A part is what kb stores as one document: a page, slide, sheet or chapter, or the whole file for the rest.
With --bombs, what hostile files do to a fresh process's memory instead.

The corpus is written here into a scratch folder from the sample documents in data/ (English and Chinese):
Word, OpenDocument, slide decks, workbooks, EPUB (tests/rigs/epub_files.py), mail, RTF, text-layer PDFs
(data/'s and tests/pdfmaker.py's), and scans rendered with DejaVu Serif and WenQuanYi Zen Hei (bench.ocr):
PNG, JPEG, multi-page TIFF and an image-only PDF, read by OCR. Each format's files are loaded through
`ingest.formats.load(path, options=ReadOptions(ocr_threads=1))` over and over for --seconds by a pool of
spawned processes, two tasks in flight per process, each task at least ~50 ms of work (small files go in
batches); each process imports kb, builds and runs its OCR engine and loads each format once before the clock
starts. "cores used" is the workers' CPU seconds over the wall time: on a shared machine, what the processes
actually got.

--bombs loads each hostile file in a fresh subprocess (address space capped at 8 GB) and reports the outcome
(LoadError's reason) and the peak RSS, beside that of a subprocess that only imports kb.

    python -m bench.formats [--seconds 10] [--formats docx,pdf,...] [--json] [--quick]
    python -m bench.formats --bombs [--json]
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).parent.parent
DATA = REPO / "data"
# Work handed to a worker at once, at least: loading a small text takes less than the pool's round trip.
BATCH_SECONDS = 0.05


# --- the corpus -----------------------------------------------------------------------------------------------------

def sample_texts() -> list[tuple[str, list[str]]]:
    """data/'s English and Chinese documents as (title, paragraphs), markup lines dropped."""
    texts = []
    for path in sorted(DATA.glob("en/*.*")) + sorted(DATA.glob("zh/*.*")):
        if path.suffix not in (".md", ".txt", ".rst"):
            continue
        blocks = [b.strip() for b in path.read_text().split("\n\n") if b.strip()]
        paragraphs = [" ".join(line.strip("#*= -") for line in b.splitlines() if line.strip("=-~ "))
                      for b in blocks]
        texts.append((paragraphs[0], [p for p in paragraphs[1:] if p]))
    return texts


def write_docx(path: Path, texts: list[tuple[str, list[str]]]) -> Path:
    import docx

    document = docx.Document()
    for title, paragraphs in texts:
        document.add_heading(title, 1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    document.save(path)
    return path


def write_odt(path: Path, texts: list[tuple[str, list[str]]]) -> Path:
    from odfdo import Document, Header, Paragraph

    document = Document("text")
    document.body.clear()
    for title, paragraphs in texts:
        document.body.append(Header(1, title))
        for paragraph in paragraphs:
            document.body.append(Paragraph(paragraph))
    document.save(path)
    return path


def write_pptx(path: Path, texts: list[tuple[str, list[str]]]) -> Path:
    """A slide per paragraph: the document's title and the paragraph."""
    from pptx import Presentation

    deck = Presentation()
    for title, paragraphs in texts:
        for paragraph in paragraphs:
            slide = deck.slides.add_slide(deck.slide_layouts[1])
            slide.shapes.title.text = title
            slide.placeholders[1].text_frame.text = paragraph
    deck.save(path)
    return path


def write_odp(path: Path, texts: list[tuple[str, list[str]]]) -> Path:
    from odfdo import Document, DrawPage, Frame

    deck = Document("presentation")
    deck.body.clear()
    number = itertools.count(1)
    for title, paragraphs in texts:
        for paragraph in paragraphs:
            n = next(number)
            page = DrawPage(f"page{n}", name=f"Page {n}")
            page.append(Frame.text_frame(title, presentation_class="title"))
            page.append(Frame.text_frame([paragraph], presentation_class="outline"))
            deck.body.append(page)
    deck.save(path)
    return path


def table_rows(texts: list[tuple[str, list[str]]], repeat: int) -> list[list[object]]:
    """A header and a row per paragraph: a ledger of numbers, a title and a text cell."""
    rows: list[list[object]] = [["Id", "Document", "Paragraph", "Words", "Text"]]
    for copy in range(repeat):
        for title, paragraphs in texts:
            for number, paragraph in enumerate(paragraphs, 1):
                rows.append([len(rows) + copy, title, number, len(paragraph.split()), paragraph])
    return rows


def write_xlsx(path: Path, texts: list[tuple[str, list[str]]], sheets: int = 3) -> Path:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    for index in range(sheets):
        sheet = book.create_sheet(f"Sheet {index + 1}")
        for row in table_rows(texts, 2):
            sheet.append(row)
    book.save(path)
    return path


def write_ods(path: Path, texts: list[tuple[str, list[str]]], sheets: int = 3) -> Path:
    from odfdo import Document, Table

    document = Document("spreadsheet")
    document.body.clear()
    rows = table_rows(texts, 2)
    for index in range(sheets):
        table = Table(f"Sheet {index + 1}", width=len(rows[0]), height=len(rows))
        table.set_values(rows)
        document.body.append(table)
    document.save(path)
    return path


def write_csv(path: Path, texts: list[tuple[str, list[str]]]) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(table_rows(texts, 4))
    return path


def write_epub(path: Path, texts: list[tuple[str, list[str]]]) -> Path:
    """A chapter per document, with an EPUB 3 nav."""
    from html import escape

    from tests.rigs.epub_files import XHTML, nav, opf
    from tests.rigs.epub_files import write_epub as zip_epub

    kind = "application/xhtml+xml"
    names = [f"c{n}.xhtml" for n in range(len(texts))]
    items = [("nav", "nav.xhtml", kind, "nav")] + [(f"c{n}", name, kind, "") for n, name in enumerate(names)]
    parts: dict[str, str | bytes] = {
        "OEBPS/content.opf": opf("Samples", items, [f"c{n}" for n in range(len(texts))]),
        "OEBPS/nav.xhtml": nav([(name, escape(title)) for name, (title, _) in zip(names, texts)])}
    for name, (title, paragraphs) in zip(names, texts):
        body = f"<h1>{escape(title)}</h1>" + "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
        parts[f"OEBPS/{name}"] = XHTML.format(title=escape(title), body=body)
    return zip_epub(path, parts)


def write_eml(path: Path, texts: list[tuple[str, list[str]]]) -> Path:
    """A message whose body is the first document, with the others attached as text files."""
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"], message["To"] = "Ada <ada@example.org>", "kb <kb@example.org>"
    message["Subject"] = texts[0][0]
    message.set_content("\n\n".join(texts[0][1]))
    for number, (title, paragraphs) in enumerate(texts[1:], 1):
        message.add_attachment("\n\n".join([title, *paragraphs]), filename=f"part{number}.txt")
    path.write_bytes(bytes(message))
    return path


def write_rtf(path: Path, texts: list[tuple[str, list[str]]]) -> Path:
    def escaped(text: str) -> str:
        out = []
        for char in text:
            code = ord(char)
            if char in "\\{}":
                out.append("\\" + char)
            elif code < 128:
                out.append(char)
            else:  # RTF's \u takes a signed 16-bit number
                out.append(f"\\u{code - 65536 if code > 32767 else code}?")
        return "".join(out)

    body = "".join(f"{{\\b {escaped(title)}}}\\par\n" + "".join(f"{escaped(p)}\\par\n" for p in paragraphs)
                   for title, paragraphs in texts)
    path.write_text("{\\rtf1\\ansi\\deff0{\\fonttbl{\\f0 Times New Roman;}}\n" + body + "}\n", encoding="ascii")
    return path


def scan_pages(count: int) -> list:
    """`count` scanned pages (PIL images), English and Chinese in turn (bench.ocr's pages)."""
    from bench.ocr import EN, ZH, font, render_page, scanned

    serif, cjk = font("DejaVu Serif"), font("WenQuanYi Zen Hei")
    pages = [(EN, serif, 30, 58), (ZH, cjk, 34, 66)]
    return [scanned(render_page(*pages[n % 2]), seed=n) for n in range(count)]


def build_corpus(root: Path, quick: bool = False) -> dict[str, list[Path]]:
    """Each format's files, written into `root`; `quick`: one small file per format."""
    from tests.pdfmaker import hyperref_pdf

    texts = sample_texts()  # three English documents, then three Chinese
    groups = [texts[:1]] if quick else [texts[:3], texts[3:], texts * 3]  # English, Chinese, and a long mixed file
    corpus: dict[str, list[Path]] = {}
    for kind in ("txt", "md", "rst", "html"):
        corpus[kind] = sorted(DATA.glob(f"*/*.{kind}"))[:1 if quick else None]
    writers = {"docx": write_docx, "odt": write_odt, "rtf": write_rtf, "pptx": write_pptx, "odp": write_odp,
               "xlsx": write_xlsx, "ods": write_ods, "csv": write_csv, "epub": write_epub, "eml": write_eml}
    for kind, writer in writers.items():
        corpus[kind] = [writer(root / f"{kind}{n}.{kind}", group) for n, group in enumerate(groups)]
    pdfs = sorted(DATA.glob("*/*.pdf")) + [REPO / "tests" / "data" / "lighthouses.pdf"]
    corpus["pdf, text layer"] = pdfs[:1 if quick else None]
    if not quick:
        hyperref_pdf(root / "manual.pdf", 60, 3)
        corpus["pdf, text layer"].append(root / "manual.pdf")
    pages = scan_pages(2)
    pages[0].save(root / "scans.pdf", save_all=True, append_images=pages[1:2] if not quick else [], resolution=200)
    corpus["pdf, scanned (OCR)"] = [root / "scans.pdf"]
    corpus["png (OCR)"], corpus["jpeg (OCR)"] = [], []
    for n, page in enumerate(pages[:1] if quick else pages):
        page.save(root / f"scan{n}.png")
        page.save(root / f"scan{n}.jpg", quality=75)
        corpus["png (OCR)"].append(root / f"scan{n}.png")
        corpus["jpeg (OCR)"].append(root / f"scan{n}.jpg")
    # Copies: a page saved as JPEG keeps its encoder settings, which a TIFF's appended frames would take up.
    fresh = [page.copy() for page in pages]
    fresh[0].save(root / "scans.tiff", save_all=True, append_images=fresh[1:2] if not quick else [],
                  compression="tiff_lzw")
    corpus["tiff (OCR)"] = [root / "scans.tiff"]
    return corpus


# --- timing ---------------------------------------------------------------------------------------------------------

@dataclass
class Timing:
    workers: int
    loads: int  # files loaded (each file of the corpus at least once)
    parts: int
    file_parts: int  # the parts of one pass over the files
    seconds: float
    parts_per_s: float
    cores: float  # the workers' CPU seconds over the wall time: the cores they got on a shared machine
    failed: list[str]


@dataclass
class FormatRow:
    format: str
    files: int
    parts: int  # in one pass over the files
    mb: float
    runs: list[Timing]

    @property
    def ratio(self) -> float | None:
        """Parts/s with the most processes over parts/s with one."""
        rates = {run.workers: run.parts_per_s for run in self.runs}
        return round(rates[max(rates)] / rates[1], 2) if len(rates) > 1 and rates.get(1) else None


def load_parts(paths: list[str]) -> tuple[list[int], list[str], float]:
    """In a worker: the parts that loading each of `paths` gives, LoadError's reasons, and the CPU seconds."""
    from ingest.errors import LoadError
    from ingest.formats import ReadOptions, load

    began, parts, reasons = time.process_time(), [], []
    for path in paths:
        try:
            parts.append(len(load(path, options=ReadOptions(ocr_threads=1)).documents))
        except LoadError as exc:
            parts.append(0)
            reasons.append(exc.reason)
    return parts, reasons, time.process_time() - began


def warm_worker(barrier: str, workers: int, files: list[str]) -> list[float]:
    """In a worker, before the clock: kb imported, its OCR engine built and run once, and one file of each
    format loaded twice (each reader's libraries imported); then wait until every worker is here (a worker busy
    in this task takes no other, so each runs it once). Returns the second load's time of each file."""
    import logging

    from PIL import Image, ImageDraw

    import ingest.formats  # noqa: F401
    from ingest.ocr import engine

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    image = Image.new("RGB", (400, 80), "white")
    ImageDraw.Draw(image).text((10, 30), "Warm up the engine", fill="black")
    engine(1).read(image)
    times = []
    for path in files:
        load_parts([path])
        began = time.perf_counter()
        load_parts([path])
        times.append(time.perf_counter() - began)
    Path(barrier, str(os.getpid())).touch()
    deadline = time.monotonic() + 300
    while len(os.listdir(barrier)) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    return times


def timed(pool, files: list[Path], workers: int, seconds: float, batch: int) -> Timing:  # noqa: ANN001
    """Load `files` in turn, `batch` files a task (small files: so the pool's round trip is not what is
    measured), 2 tasks in flight per worker, until each file was loaded once and `seconds` have passed."""
    cycle = itertools.cycle(str(f) for f in files)
    pending: dict = {}  # future -> the paths it loads
    submitted, loads, parts, cpu, failed, per_file = 0, 0, 0, 0.0, set(), {}
    started = time.perf_counter()

    def top_up() -> None:
        nonlocal submitted
        while len(pending) < 2 * workers and (submitted < len(files) or time.perf_counter() - started < seconds):
            paths = [next(cycle) for _ in range(batch)]
            pending[pool.submit(load_parts, paths)] = paths
            submitted += batch

    top_up()
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            counts, reasons, seconds_cpu = future.result()
            per_file.update(zip(pending.pop(future), counts))
            loads, parts, cpu = loads + batch, parts + sum(counts), cpu + seconds_cpu
            failed.update(reasons)
        top_up()
    wall = time.perf_counter() - started
    return Timing(workers, loads, parts, sum(per_file.values()), round(wall, 2),
                  round(parts / wall, 2) if wall else 0.0, round(cpu / wall, 2) if wall else 0.0, sorted(failed))


def measure(corpus: dict[str, list[Path]], workers: list[int], seconds: float,
            on_row=None) -> list[FormatRow]:  # noqa: ANN001
    """Every format with each process count: one pool per count, warmed once, so the counts run side by side."""
    from ingest.processes import process_pool

    timings: dict[str, list[Timing]] = {name: [] for name in corpus}
    for count in workers:
        with process_pool("kb-parse", count) as pool, tempfile.TemporaryDirectory() as barrier:
            first = [str(min(files, key=lambda f: f.stat().st_size)) for files in corpus.values()]
            warmed = [pool.submit(warm_worker, barrier, count, first) for _ in range(count)]
            once = [max(times) for times in zip(*(w.result() for w in warmed))]
            for (name, files), took in zip(corpus.items(), once):
                batch = max(1, min(500, int(BATCH_SECONDS / max(took, 1e-6))))
                timings[name].append(timed(pool, files, count, seconds, batch))
    rows = []
    for name, files in corpus.items():
        size = sum(f.stat().st_size for f in files)
        row = FormatRow(name, len(files), timings[name][0].file_parts, round(size / 1e6, 2), timings[name])
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def print_rows(rows: list[FormatRow]) -> None:
    from rich.console import Console
    from rich.table import Table

    counts = [run.workers for run in rows[0].runs] if rows else []
    table = Table("format", "files", "parts", "MB", *(f"parts/s, {n} process{'es' * (n > 1)}" for n in counts),
                  *(["ratio"] if len(counts) > 1 else []), "cores used")
    for row in rows:
        ratio = [f"{row.ratio:.2f}x" if row.ratio else "-"] if len(counts) > 1 else []
        table.add_row(row.format, str(row.files), str(row.parts), f"{row.mb:.2f}",
                      *(f"{run.parts_per_s:,.{2 if run.parts_per_s < 10 else 0}f}" for run in row.runs), *ratio,
                      " / ".join(f"{run.cores:.2f}" for run in row.runs))
    console = Console(width=max(Console().width, 140))
    console.print(table)
    for row in rows:
        for run in row.runs:
            if run.failed:
                console.print(f"{row.format}: {'; '.join(run.failed)}", highlight=False)


# --- bombs ----------------------------------------------------------------------------------------------------------

# Peaks are the process's own high-water mark (VmHWM): ru_maxrss would start at the peak of whatever forked
# it (pytest holding an OCR engine, say).
_LOAD_ONE = """
import json, re, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))  # a bomb that got through fails, not the machine
from ingest.errors import LoadError
from ingest.formats import ReadOptions, load

def peak_mb():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1]) / 1024

out = {"import_rss_mb": peak_mb()}
if len(sys.argv) > 1:
    started = time.perf_counter()
    try:
        out["parts"], out["reason"] = len(load(sys.argv[1], options=ReadOptions(ocr_threads=1)).documents), None
    except LoadError as exc:
        out["parts"], out["reason"] = 0, exc.reason
    except MemoryError:
        out["parts"], out["reason"] = 0, "MemoryError (past the 8 GB cap)"
    out["seconds"] = round(time.perf_counter() - started, 2)
out["peak_rss_mb"] = peak_mb()
print(json.dumps(out))
"""

LAUGHS = (b'<!DOCTYPE lolz [<!ENTITY lol "lol">'
          + b"".join(b'<!ENTITY lol%d "%s">' % (n, (b"&lol%d;" % (n - 1) if n > 1 else b"&lol;") * 10)
                     for n in range(1, 10)) + b"]>")  # &lol9; is 10^9 "lol"s: 3 GB


def _rewritten(source: Path, target: Path, part: str, change) -> Path:  # noqa: ANN001
    """A copy of the zip `source` with `part`'s bytes changed."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            data = old.read(info)
            new.writestr(info, change(data) if info.filename == part else data)
    source.unlink()
    return target


def _laughing(xml: bytes) -> bytes:
    """`xml` with the entity declarations after its XML declaration and the biggest entity used in its root."""
    declaration, rest = xml.split(b"?>", 1) if xml.startswith(b"<?xml") else (b'<?xml version="1.0"', xml)
    root_end = rest.index(b">", rest.index(b"<")) + 1
    return declaration + b"?>\n" + LAUGHS + rest[:root_end] + b"&lol9;" + rest[root_end:]


def _padded(source: Path, target: Path, name: str, mb: int = 300) -> Path:
    """A copy of `source` plus a part `name` of `mb` MB of zeros (a few hundred KB deflated)."""
    shutil.copy(source, target)
    with zipfile.ZipFile(target, "a", zipfile.ZIP_DEFLATED) as archive, \
            archive.open(name, "w", force_zip64=True) as part:
        block = bytes(1 << 20)
        for _ in range(mb):
            part.write(block)
    return target


def build_bombs(root: Path) -> dict[str, Path]:
    from tests.rigs.scans import png_bomb
    from tests.rigs.sheets_files import write_million_cells

    texts = sample_texts()[:1]
    bombs = {
        "docx, zip bomb (300 MB part)": _padded(write_docx(root / "a.docx", texts), root / "zip.docx",
                                                "word/media/padding.bin"),
        "xlsx, zip bomb (300 MB part)": _padded(write_xlsx(root / "a.xlsx", texts, 1), root / "zip.xlsx",
                                                "xl/media/padding.bin"),
        "epub, zip bomb (300 MB part)": _padded(write_epub(root / "a.epub", texts), root / "zip.epub",
                                                "OEBPS/huge.xhtml"),
        "docx, billion laughs": _rewritten(write_docx(root / "b.docx", texts), root / "laughs.docx",
                                           "word/document.xml", _laughing),
        "odt, billion laughs": _rewritten(write_odt(root / "b.odt", texts), root / "laughs.odt", "content.xml",
                                          _laughing),
        "epub, billion laughs": _rewritten(write_epub(root / "b.epub", texts), root / "laughs.epub",
                                           "OEBPS/c0.xhtml", _laughing),
        "xlsx, 1,000,000 cells": write_million_cells(root / "million.xlsx"),
        "png, 20000 x 20000": png_bomb(root / "huge.png"),
        "png, 10000 x 10000": png_bomb(root / "big.png", 10_000, 10_000),  # past kb's bound, within Pillow's
    }
    return bombs




def _in_fresh_process(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _LOAD_ONE, *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    if done.returncode:
        return {"parts": 0, "reason": f"process died ({done.returncode}): {done.stderr.strip()[-300:]}",
                "peak_rss_mb": None}
    return json.loads(done.stdout.splitlines()[-1])


def measure_bombs(root: Path) -> dict:
    bombs = build_bombs(root)
    baseline = _in_fresh_process()
    rows = []
    for name, path in bombs.items():
        out = _in_fresh_process(str(path))
        rows.append({"file": name, "bytes": path.stat().st_size, "loaded": out["reason"] is None, **out})
    return {"import_only_rss_mb": round(baseline["peak_rss_mb"], 1), "bombs": rows}


def print_bombs(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("file", "on disk", "outcome", "seconds", "peak RSS", "over import only")
    base = report["import_only_rss_mb"]
    for row in report["bombs"]:
        outcome = f"loaded: {row['parts']} part(s)" if row["loaded"] else f"refused: {row['reason']}"
        peak = row["peak_rss_mb"]
        table.add_row(row["file"], f"{row['bytes'] / 1e3:,.0f} KB", outcome, f"{row.get('seconds', '-')}",
                      f"{peak:.0f} MB" if peak else "-", f"{peak - base:+.0f} MB" if peak else "-")
    console = Console(width=max(Console().width, 200))  # the reasons in full, also into a file
    console.print(table)
    console.print(f"A process that only imports kb (ingest.formats): {base:.0f} MB peak RSS", highlight=False)


# --- command line ---------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.formats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="time each format for this long [10]")
    parser.add_argument("--workers", default="1,2", help="comma-separated process counts [1,2]")
    parser.add_argument("--quick", action="store_true", help="one small file per format, one pass, 1 process")
    parser.add_argument("--formats", help="only these, comma-separated (docx,png,pdf,...; default: all)")
    parser.add_argument("--bombs", action="store_true", help="hostile files' outcome and peak RSS instead")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kb-bench-formats-") as scratch:
        if args.bombs:
            report = measure_bombs(Path(scratch))
            if args.json:
                sys.stdout.write(json.dumps(report, indent=2) + "\n")
            else:
                print_bombs(report)
            return
        corpus = build_corpus(Path(scratch), args.quick)
        if args.formats:
            wanted = set(args.formats.split(","))
            corpus = {name: files for name, files in corpus.items() if name.split(",")[0].split(" ")[0] in wanted}
        workers = [1] if args.quick else [int(n) for n in args.workers.split(",")]
        rows = measure(corpus, workers, 0.0 if args.quick else args.seconds)
    if args.json:
        sys.stdout.write(json.dumps([asdict(r) | {"ratio": r.ratio} for r in rows], indent=2) + "\n")
    else:
        print_rows(rows)


if __name__ == "__main__":
    main()
