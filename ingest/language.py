"""Which language a text or a query is in, which language most of a set of texts is in, and the scripts
written without spaces between words (Han, kana, Hangul), cut into overlapping character pairs where
words cannot be told apart without a dictionary (what Lucene's CJK analyzer does)."""

from __future__ import annotations

import re
from itertools import repeat
from typing import Iterable

# Characters CLD2 refuses as "invalid UTF-8": C0/C1 controls (but tab and newlines), surrogates, noncharacters.
_NOT_FOR_CLD2 = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")


_LETTERS = re.compile(r"(?:[^\W\d_][\W\w]*?){20}")  # twenty letters, anywhere


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text's main language, or None when it cannot be told.

    Google's CLD2 (pycld2, its tables compiled in): far faster than langdetect, which matters for PDFs,
    detected page by page. Chinese variants are reported as `zh`.
    """
    sample = text[:2000]
    if not _LETTERS.search(sample):
        return None
    import pycld2

    try:
        _, _, details = pycld2.detect(_NOT_FOR_CLD2.sub(" ", sample), bestEffort=True)
    except pycld2.error:
        return None
    code = details[0][1]
    return None if code in ("un", "xxx", "") else code.split("-")[0]


def main_language(languages: Iterable[str | None], weights: Iterable[int] | None = None) -> str | None:
    """The language with the most weight (each one counts 1 unless `weights` says otherwise, pairwise),
    or None when none is known. Unknown (None or empty) languages never win; a tie goes to the first seen."""
    counts: dict[str, int] = {}
    for language, weight in zip(languages, repeat(1) if weights is None else weights):
        if language:
            counts[language] = counts.get(language, 0) + weight
    return max(counts, key=counts.__getitem__) if counts else None


# Scripts written without spaces between words, as character-class ranges.
KANA = "\u3040-\u30ff\u31f0-\u31ff"  # hiragana, katakana, katakana phonetic extensions
HANGUL = "\uac00-\ud7af"
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"  # with extensions and compatibility
CJK = KANA + HAN + HANGUL
CJK_RUN = re.compile(f"[{CJK}]+")

_KANA = re.compile(f"[{KANA}]")
_HANGUL = re.compile(f"[{HANGUL}]")
_HAN = re.compile(f"[{HAN}]")


def character_pairs(run: str) -> list[str]:
    """A run of CJK characters as its overlapping pairs; a lone character stands as itself."""
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


def query_language(query: str) -> str | None:
    """The query's language as the store records passages' (ISO 639-1), or None when it cannot be told:
    CLD2 for text long enough, else the script (kana: ja, Hangul: ko, Han: zh)."""
    language = detect_language(query)
    if language:
        return language
    if _KANA.search(query):
        return "ja"
    if _HANGUL.search(query):
        return "ko"
    if _HAN.search(query):
        return "zh"
    return None
