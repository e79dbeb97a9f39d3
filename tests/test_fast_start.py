"""Start fast, end fast: a big run reads its first files in this process while the workers start, overlaps the
store's opening with the hashing and the probe, and reports when its first request left and how long it ran
after the last answer. Speed itself is measured in bench.startend and `kb bench`, not here."""

import asyncio
import hashlib
import random
from collections import Counter

import pytest

from ingest.chunking import ChunkerSpec
from ingest.knowledge_base import KnowledgeBase
from ingest.pipeline import ingest
from ingest.prepare import Workers, load_chunker_early, prepare
from kb_app.benchmark import AFTER_LAST_ANSWER, FIRST_REQUEST, run_bench, stage_walls
from tests.test_pipeline import fake_embedder, fake_settings

WORDS = "river stone lantern harvest copper meadow signal orchard glacier ember violet harbor quartz".split()


def many_files(folder, count=40):
    """`count` Markdown files, every paragraph its own text (nothing for chunk reuse to find twice)."""
    folder.mkdir()
    for number in range(count):
        words = random.Random(number)
        paragraphs = [f"Paragraph {number}-{p}: " + " ".join(words.choice(WORDS) for _ in range(60)) for p in range(6)]
        (folder / f"note-{number:02d}.md").write_text(f"# Note {number}\n\n" + "\n\n".join(paragraphs) + "\n")
    return folder


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepared_chunks(result):
    (loaded, pieces, _), _, _ = result
    return loaded.source, [chunk.text for _, chunk in pieces]


@pytest.mark.slow
def test_workers_read_the_first_files_here_until_a_worker_is_up(tmp_path, fake_server):
    folder = many_files(tmp_path / "notes", 3)
    first, second, third = sorted(folder.iterdir())
    settings = fake_settings(fake_server, tmp_path / "chroma", workers=2)
    spec = ChunkerSpec.of(settings, fake_embedder(fake_server))
    chunker = spec.build()

    async def run():
        workers = Workers(settings, spec, chunker, big=True, early=load_chunker_early(spec.build()))
        try:
            # Spawning a worker and loading its tokenizer takes far longer than this call: it is read here.
            early = await workers.prepare(first, digest(first))
            here_before = list(workers.prepared_here)
            while not workers.started:
                await asyncio.sleep(0.05)
            later = await asyncio.gather(workers.prepare(second, digest(second)), workers.prepare(third, digest(third)))
            return early, here_before, list(workers.prepared_here), later
        finally:
            workers.close()

    early, here_before, here_after, later = asyncio.run(run())
    assert workers_processes(settings) == 2
    assert here_before == [first] and here_after == [first]  # the later files went to the worker processes
    for path, result in zip([first, second, third], [early, *later]):
        loaded, pieces, _ = prepare(path, digest(path), chunker)
        assert prepared_chunks(result) == (loaded.source, [chunk.text for _, chunk in pieces])


def workers_processes(settings):
    return Workers.processes_for(settings, big=True)


@pytest.mark.slow
def test_a_big_run_stores_every_chunk_once_and_times_its_ends(tmp_path, fake_server):
    folder = many_files(tmp_path / "notes")
    settings = fake_settings(fake_server, tmp_path / "chroma", chunk_tokens=64, overlap=8)
    report = ingest([folder], settings, embedder=fake_embedder(fake_server))
    assert report.ok and len(report.of("ingested")) == 40
    assert report.stages.prepare_in_workers and report.stages.store_in_process  # the big-run paths
    chunks, _ = KnowledgeBase.open(settings).all_chunks()
    assert len(chunks) == report.chunks == len({chunk.id for chunk in chunks})
    assert Counter(chunk.metadata["source"] for chunk in chunks) == {o.source: o.chunks for o in report.of("ingested")}
    sent = fake_server.embedded_texts
    assert len(sent) == len(set(sent)) == report.chunks  # each chunk sent once: none lost, none twice
    stages = report.stages
    assert stages.to_first_request is not None and stages.after_last_answer is not None
    assert 0 < stages.to_first_request and 0 <= stages.after_last_answer
    assert stages.to_first_request + stages.after_last_answer < report.seconds

    again = ingest([folder], settings, embedder=fake_embedder(fake_server))
    assert len(again.of("unchanged")) == 40 and again.stats.requests == 0
    assert again.stages.to_first_request is None and again.stages.after_last_answer is None


def test_a_run_with_nothing_to_embed_needs_no_server_though_it_probes_early(tmp_path, fake_server, corpus):
    settings = fake_settings(fake_server, tmp_path / "chroma")
    assert ingest([corpus], settings, embedder=fake_embedder(fake_server)).ok
    gone = fake_settings(fake_server, tmp_path / "chroma", endpoint=["http://127.0.0.1:9/v1"])
    again = ingest([corpus], gone)
    assert again.ok and len(again.of("unchanged")) == 8 and again.stats.requests == 0


def test_the_bench_stage_table_shows_both_ends(tmp_path, fake_server, corpus):
    result = run_bench([corpus], endpoint=fake_server.url, model="fake-embed", tokenizer="qwen3")
    walls = result.stage_wall_seconds
    assert result.failed == 0 and FIRST_REQUEST in walls and AFTER_LAST_ANSWER in walls
    assert 0 < walls[FIRST_REQUEST] <= result.seconds and 0 <= walls[AFTER_LAST_ANSWER] <= result.seconds
    from ingest.report import StageTimes

    assert FIRST_REQUEST not in stage_walls(StageTimes())  # no request: no figure, rather than a zero
