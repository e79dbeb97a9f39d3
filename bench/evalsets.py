"""Cross-lingual section-retrieval sets in the BEIR layout, built from Debian's translated documentation.

The Debian Administrator's Handbook (`debian-handbook`) ships the same book in 26 languages, generated
from one DocBook source: every section keeps its element id in every language. A set takes its corpus
from one language (each section its own document: heading and the section's own text, subsections
apart) and its queries from another, each judged against the section with the same id:

- `title` queries: the section's heading, numbering removed ("6.1.2. 给稳定版使用者的仓库" -> "给稳定版使用者的仓库");
- `para` queries: the section's first paragraph (30 to 400 characters), for cross-lingual sets only (in
  one language the paragraph is inside its own document).

Text the translators left in English (identical to the corpus language's, or detected as another language)
is not used as a query: it would not cross languages.

python -m bench.evalsets [--out DIR] [--pairs zh-CN:en-US,en-US:zh-CN,ja-JP:en-US,de-DE:en-US,en-US:en-US]

The Debian Installation Guide (`installation-guide-amd64`) needs no building: it ships one HTML page per
section, with the same file names in 19 languages, which is what `kb eval --targets` (parallel documents)
takes as it is. This script fetches it too and prints the commands, e.g.

kb eval .../installation-guide-amd64/zh_CN --targets .../installation-guide-amd64/en

The package is fetched with `apt-get download` into ~/.cache/kb/bench/packages (bench.corpus); the sets
are written to ~/.cache/kb/eval-sets/handbook-<query language>-<corpus language>/.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

from bench.corpus import fetch_package
from kb_app.evaluate import in_language

OUT = Path.home() / ".cache" / "kb" / "eval-sets"
PAIRS = ("zh-CN:en-US", "en-US:zh-CN", "ja-JP:en-US", "de-DE:en-US", "en-US:en-US")
_NUMBERING = re.compile(
    r"^\s*(?:第\s*[\d.]+\s*[章节]|(?:Chapter|Kapitel|Appendix|Anhang)\s+[\w.]+\.?|[A-Z]?[\d.]+\.?)\s*")


@dataclass
class Section:
    id: str
    title: str
    text: str
    first_paragraph: str


def _clean(text: str) -> str:
    return " ".join(text.replace("\xa0", " ").split())


def sections(folder: Path) -> dict[str, Section]:
    """Every section of one language's book, by element id (each once, in reading order)."""
    import lxml.html

    found: dict[str, Section] = {}
    parser = lxml.html.HTMLParser(encoding="utf-8")  # what the book is written in, meta tag or not
    for page in sorted(folder.glob("*.html")):
        root = lxml.html.parse(str(page), parser=parser).getroot()
        for section in root.xpath('//div[contains(concat(" ", @class, " "), " section ")]'):
            heading = section.xpath('./div[@class="titlepage"]//*[self::h1 or self::h2 or self::h3 or self::h4][1]')
            if not heading:
                continue
            anchors = heading[0].xpath(".//a[@id]")
            section_id = anchors[0].get("id") if anchors else section.get("id")
            if not section_id or section_id in found:
                continue
            title = _NUMBERING.sub("", _clean(heading[0].text_content()), count=1).strip()
            own = [child for child in section
                   if not (child.tag == "div" and child.get("class") in ("section", "titlepage"))]
            paragraphs = [_clean(p.text_content()) for child in own for p in
                          ([child] if child.get("class") == "para" else child.xpath('.//div[@class="para"]'))]
            text = "\n\n".join(_clean(child.text_content()) for child in own if _clean(child.text_content()))
            first = next((p for p in paragraphs if 30 <= len(p)), "")[:400]
            if title and text:
                found[section_id] = Section(section_id, title, text, first)
    return found


def build(query_language: str, corpus_language: str, book: Path, out: Path) -> Path:
    """One BEIR set: corpus from `corpus_language`, queries from `query_language`."""
    corpus, queries = sections(book / corpus_language), sections(book / query_language)
    shared = [i for i in corpus if i in queries]
    target = out / f"handbook-{query_language.split('-')[0]}-{corpus_language.split('-')[0]}"
    (target / "qrels").mkdir(parents=True, exist_ok=True)
    with (target / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for section in corpus.values():
            handle.write(json.dumps({"_id": section.id, "title": section.title, "text": section.text},
                                    ensure_ascii=False) + "\n")
    rows, judged, language = [], [], query_language.split("-")[0]
    for section_id in shared:
        asked, answer = queries[section_id], corpus[section_id]
        if query_language != corpus_language and not in_language(answer.text[:2000], corpus_language.split("-")[0]):
            continue  # the target itself left untranslated: the pair would not cross languages
        candidates = [("title", asked.title, answer.title)]
        if query_language != corpus_language and asked.first_paragraph:
            candidates.append(("para", asked.first_paragraph, answer.first_paragraph))
        for kind, text, original in candidates:
            # Translations leave some text in English: such a query would not cross languages.
            if query_language != corpus_language and (text == original or not in_language(text, language)):
                continue
            rows.append({"_id": f"{kind}:{section_id}", "text": text})
            judged.append((f"{kind}:{section_id}", section_id))
    with (target / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (target / "qrels" / "test.tsv").open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for query, document in judged:
            handle.write(f"{query}\t{document}\t1\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--pairs", default=",".join(PAIRS), help="query-language:corpus-language, comma-separated")
    args = parser.parse_args()
    package = fetch_package("debian-handbook")
    book = package.root / "usr" / "share" / "doc" / "debian-handbook" / "html"
    for pair in args.pairs.split(","):
        query_language, corpus_language = pair.split(":")
        target = build(query_language, corpus_language, book, args.out)
        queries = sum(1 for _ in (target / "queries.jsonl").open())
        documents = sum(1 for _ in (target / "corpus.jsonl").open())
        print(f"{target}: {documents} documents, {queries} queries (debian-handbook {package.version})")
    guide = fetch_package("installation-guide-amd64")
    pages = guide.root / "usr" / "share" / "doc" / "installation-guide-amd64"
    print(f"installation-guide-amd64 {guide.version}, parallel documents:")
    for query_language, corpus_language in (("zh_CN", "en"), ("en", "zh_CN"), ("ja", "en"), ("de", "en")):
        print(f"  kb eval {pages / query_language} --targets {pages / corpus_language} "
              f"-c ig-{query_language}-{corpus_language}")


if __name__ == "__main__":
    main()
