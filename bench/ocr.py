"""OCR error rate, pages/s and peak memory of RapidOCR (kb's engine) and Tesseract 5 on scans of known text.

The scans: English, Chinese and mixed pages rendered at 200 dpi from known lines, then "scanned" (a slight
rotation, grey paper, noise, blur, JPEG), at two print sizes; and OCRmyPDF's linn.png (a real brochure
scan) with its linn.txt, fetched once from PyPI (tests/rigs/thirdparty.py). Each engine runs in its own
subprocess, one thread (kb's parsing workers are one process per core), so its peak RSS is its own:
RapidOCR through `ingest.ocr.engine(1)`, exactly as kb reads a page; Tesseract by its command line
(`tesseract IMG stdout -l LANG --psm 3`, OMP_THREAD_LIMIT=1), once with each page's language and once with
chi_sim+eng on every page (kb does not know a page's language before reading it); and through kb's own
Tesseract engine (`ingest.ocr.engine(1, "tesseract")`, KB_OCR_ENGINE=tesseract) where kb has one. Without the
tesseract binary, Tesseract is skipped with a note. Peak RSS is the engine's process (Tesseract's own, a
process per page), after a first small read that starts the engine, which is not counted as a page.

CER = Levenshtein distance / length of the true text, after NFKC and with runs of whitespace made one space;
"no spaces" drops all whitespace first (RapidOCR drops the spaces between words; Chinese has none).

    python -m bench.ocr [--json] [--quick]
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

EN = [
    "The knowledge base reads documents that people bring from many places.",
    "Word files, slide decks, spreadsheets and scanned pages all arrive at once.",
    "A scanned page has no text layer, so the program must read the picture.",
    "Optical character recognition turns the shapes of letters into text again.",
    "The quality of a scan depends on the light, the paper and the lens used.",
    "Old books have yellow paper, faded ink and words printed close together.",
    "Receipts are small, thin and often folded before anyone thinks to scan them.",
    "We measure the error rate by counting how many characters were wrong.",
    "Each insertion, deletion or substitution adds one to the distance.",
    "In 1998 the library held 42,117 volumes and 3,506 maps of the region.",
    "Questions asked in English should find answers written in Chinese.",
    "Pack my box with five dozen liquor jugs before the evening train.",
]
ZH = [
    "知识库读取人们从各处带来的文件和资料。",
    "文字处理文件、幻灯片、电子表格和扫描页一起到来。",
    "扫描页没有文字层，所以程序必须识别图片中的文字。",
    "光学字符识别把字母和汉字的形状重新变成文本。",
    "扫描的质量取决于光线、纸张和所用的镜头。",
    "旧书的纸张发黄，墨迹褪色，字与字挨得很近。",
    "收据又小又薄，常常在扫描之前就被折叠起来。",
    "我们通过统计错误字符的数量来衡量错误率。",
    "每一次插入、删除或替换都使距离增加一。",
    "一九九八年图书馆藏书四万二千册，地图三千五百幅。",
    "用英文提出的问题应当找到用中文写的答案。",
    "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。",
]
MIXED = [
    "本周的 Release Notes 已经发布，请查看 GitHub 上的 CHANGELOG。",
    "服务器使用 Python 3.11 和 Chroma 数据库，端口是 8000。",
    "请在 Settings 页面把 OCR 模式改为 auto，然后重新运行 kb ingest。",
    "扫描的 PDF 文件没有 text layer，需要光学字符识别。",
    "会议定于 Monday 上午 10:30 在 B2 会议室举行。",
    "这份报告引用了 Smith et al. (2021) 的研究结果。",
    "下载地址写在 README.md 的第 3 节 Installation 中。",
    "每页大约 1,200 个字符，共 42 页，约 50,400 字符。",
]
TESS_LANG = {"en": "eng", "zh": "chi_sim", "mixed": "chi_sim+eng"}
PAGE = (1654, 2339)  # A4 at 200 dpi


@dataclass
class Scan:
    name: str
    language: str  # en | zh | mixed
    image: str  # path
    truth: str


@dataclass
class PageResult:
    page: str
    seconds: float
    cer: float  # whitespace runs as one space
    cer_no_spaces: float
    words_found: float  # share of the true words (Chinese: characters) in the text read, in any order
    text: str = field(repr=False, default="")


@dataclass
class EngineRun:
    engine: str
    pages: list[PageResult]
    pages_per_s: float
    start_s: float  # building the engine and a first small read (RapidOCR); Tesseract loads its models per call
    peak_rss_mb: float
    note: str = ""


def font(name: str) -> str:
    """The file of an installed font (fontconfig's best match)."""
    return subprocess.run(["fc-match", "-f", "%{file}", name], capture_output=True, text=True, check=True).stdout


def render_page(lines: list[str], font_file: str, size: int, step: int):  # noqa: ANN201 - PIL image
    """A white A4 page at 200 dpi with `lines` printed on it, one per line."""
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("L", PAGE, 255)
    draw = ImageDraw.Draw(page)
    face = ImageFont.truetype(font_file, size)
    for index, line in enumerate(lines):
        draw.text((150, 180 + index * step), line, font=face, fill=0)
    return page


def scanned(page, seed: int, rotate: float = 1.0, noise: float = 18, blur: float = 0.6):  # noqa: ANN001, ANN201
    """`page` as a flatbed scanner gives it back: turned slightly, grey paper, sensor noise, a little blur."""
    import numpy as np
    from PIL import Image, ImageFilter

    page = page.rotate(rotate, resample=Image.BICUBIC, expand=False, fillcolor=255)
    pixels = np.asarray(page).astype(np.float32) * 0.85 + 25
    pixels += np.random.default_rng(seed).normal(0, noise, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(blur))


def make_scans(folder: Path, quick: bool = False) -> list[Scan]:
    """The synthetic scans (JPEG, as scanners save them) with their true text; `quick`: one page per language."""
    serif, cjk = font("DejaVu Serif"), font("WenQuanYi Zen Hei")
    plan = [("en", "en", EN, serif, 30, 58, {}), ("zh", "zh", ZH, cjk, 34, 66, {}),
            ("mixed", "mixed", MIXED, cjk, 32, 62, {})]
    if not quick:  # smaller print on a worse scan
        hard = {"rotate": 2.0, "noise": 35, "blur": 0.9}
        plan += [("en-small", "en", EN, serif, 22, 44, hard), ("zh-small", "zh", ZH, cjk, 24, 48, hard)]
    scans = []
    for seed, (name, language, lines, font_file, size, step, damage) in enumerate(plan):
        path = folder / f"{name}.jpg"
        scanned(render_page(lines, font_file, size, step), seed, **damage).save(path, quality=60, dpi=(200, 200))
        scans.append(Scan(name, language, str(path), "\n".join(lines)))
    return scans


def linn_scan() -> Scan:
    """OCRmyPDF's linn.png and the text its test suite expects of it (English)."""
    from tests.rigs.thirdparty import OCRMYPDF, sdist_files

    folder = sdist_files("ocrmypdf", OCRMYPDF, ("tests/resources",), (".png", ".txt"))
    return Scan("linn (OCRmyPDF)", "en", str(folder / "linn.png"), (folder / "linn.txt").read_text())


def cer(truth: str, found: str, spaces: bool = True) -> float:
    """Character error rate of `found` against `truth` (tests/rigs/scans.py's, with spaces kept by default)."""
    from tests.rigs.scans import cer as rig_cer

    return rig_cer(truth, found, spaces=spaces)


def normalised(text: str, spaces: bool) -> str:
    from tests.rigs.scans import normalised as rig_normalised

    return rig_normalised(text, spaces=spaces)


def words_found(truth: str, found: str) -> float:
    """The share of the true words (Latin letters and digits; any other character alone) found anywhere in
    `found`, each as often as it is true: what search sees when lines come out in another order (columns)."""
    from collections import Counter

    def words(text: str) -> Counter:
        return Counter(re.findall(r"[^\W_]+|[^\w\s]", unicodedata.normalize("NFKC", text).lower(), re.ASCII))

    want, got = words(truth), words(found)
    return sum((want & got).values()) / max(sum(want.values()), 1)


# --- the engines, each in its own subprocess ---------------------------------------------------------------------

def _ocr_kb(scans: list[dict], name: str) -> dict:
    """kb's own engine `name` (ingest.ocr.engine), warmed up by one small read first."""
    from PIL import Image

    from ingest.ocr import engine, fit_for_reading

    started = time.perf_counter()
    reader = engine(1) if name == "rapidocr" else engine(1, name)
    reader.read(render_page(["Warm up"], font("DejaVu Serif"), 30, 58).crop((100, 150, 600, 260)).convert("RGB"))
    built = time.perf_counter() - started  # the first read initialises onnxruntime's sessions: not a page's time
    texts, seconds = [], []
    for scan in scans:
        with Image.open(scan["image"]) as image:
            began = time.perf_counter()
            texts.append(reader.read(fit_for_reading(image)))
            seconds.append(time.perf_counter() - began)
    # This process's own high-water mark (ru_maxrss would start at its parent's), or Tesseract's processes'.
    own = int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())[1])
    peak = max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"start_s": built, "texts": texts, "seconds": seconds, "peak_rss_kb": peak}


def _ocr_tesseract(scans: list[dict], languages: list[str]) -> dict:
    texts, seconds = [], []
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    for scan, language in zip(scans, languages):
        began = time.perf_counter()
        done = subprocess.run(["tesseract", scan["image"], "stdout", "-l", language, "--psm", "3"],
                              capture_output=True, text=True, env=env, check=True, timeout=600)
        seconds.append(time.perf_counter() - began)
        texts.append(done.stdout)
    return {"start_s": 0.0, "texts": texts, "seconds": seconds,
            "peak_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}


def child_main(spec: str) -> None:
    """In the subprocess: run one engine over the scans named in `spec` (JSON) and print what it read."""
    job = json.loads(spec)
    if job["engine"] == "tesseract-cli":
        result = _ocr_tesseract(job["scans"], job["langs"])
    else:
        result = _ocr_kb(job["scans"], job["engine"])
    sys.stdout.write(json.dumps(result) + "\n")


def run_engine(label: str, engine: str, scans: list[Scan], languages: list[str] | None = None) -> EngineRun:
    """One engine over all `scans` in a fresh subprocess; CER per page against the true text."""
    spec = json.dumps({"engine": engine, "scans": [asdict(s) for s in scans], "langs": languages})
    done = subprocess.run([sys.executable, "-m", "bench.ocr", "--child", spec], capture_output=True, text=True,
                          timeout=1800, cwd=Path(__file__).parent.parent)
    if done.returncode:
        raise RuntimeError(f"{label} failed: {done.stderr[-2000:]}")
    out = json.loads(done.stdout.splitlines()[-1])
    pages = [PageResult(s.name, round(t, 2), round(cer(s.truth, text), 4), round(cer(s.truth, text, False), 4),
                        round(words_found(s.truth, text), 4), text)
             for s, text, t in zip(scans, out["texts"], out["seconds"])]
    total = sum(out["seconds"])
    return EngineRun(label, pages, round(len(pages) / total, 3) if total else 0.0, round(out["start_s"], 2),
                     round(out["peak_rss_kb"] / 1024, 1))


def measure(quick: bool = False) -> tuple[list[Scan], list[EngineRun], list[str]]:
    from ingest import ocr

    notes = []
    with tempfile.TemporaryDirectory(prefix="kb-bench-ocr-") as scratch:
        scans = make_scans(Path(scratch), quick) + [linn_scan()]
        runs = [run_engine("RapidOCR (kb)", "rapidocr", scans)]
        if shutil.which("tesseract"):
            runs.append(run_engine("Tesseract, page's language", "tesseract-cli", scans,
                                   [TESS_LANG[s.language] for s in scans]))
            runs.append(run_engine("Tesseract, chi_sim+eng", "tesseract-cli", scans, ["chi_sim+eng"] * len(scans)))
            if hasattr(ocr, "TesseractOcr"):  # kb's own Tesseract path (KB_OCR_ENGINE=tesseract)
                runs.append(run_engine("Tesseract (kb)", "tesseract", scans))
        else:
            notes.append("Tesseract skipped: no `tesseract` binary on PATH (Debian: tesseract-ocr, "
                         "tesseract-ocr-chi-sim)")
    return scans, runs, notes


def print_runs(scans: list[Scan], runs: list[EngineRun], notes: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table("page", "chars", "engine", "CER", "CER, no spaces", "words found", "seconds")
    for index, scan in enumerate(scans):
        for number, run in enumerate(runs):
            page = run.pages[index]
            table.add_row(scan.name if number == 0 else "", str(len(normalised(scan.truth, False))) if number == 0
                          else "", run.engine, f"{page.cer:.3f}", f"{page.cer_no_spaces:.3f}",
                          f"{page.words_found:.3f}", f"{page.seconds:.2f}", end_section=number == len(runs) - 1)
    console.print(table)
    summary = Table("engine", "pages/s", "s/page", "engine start", "peak RSS")
    for run in runs:
        summary.add_row(run.engine, f"{run.pages_per_s:.2f}", f"{1 / run.pages_per_s:.2f} s" if run.pages_per_s
                        else "-", f"{run.start_s:.2f} s", f"{run.peak_rss_mb:.0f} MB")
    console.print(summary)
    for note in notes:
        console.print(note, highlight=False)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.ocr", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="one synthetic page per language, plus linn")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child)
        return
    scans, runs, notes = measure(args.quick)
    if args.json:
        report = {"scans": [{"name": s.name, "language": s.language, "chars": len(normalised(s.truth, False))}
                            for s in scans],
                  "engines": [asdict(r) for r in runs], "notes": notes}
        sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        return
    print_runs(scans, runs, notes)


if __name__ == "__main__":
    main()
