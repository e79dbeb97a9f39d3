"""`kb ingest --shard I/N`: N workers split one corpus by path, and write one Chroma server at once."""

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ingest.discover import discover
from ingest.errors import ConfigError
from ingest.knowledge_base import KnowledgeBase
from ingest.lexical import LexicalIndex
from ingest.records import chunk_id
from ingest.settings import load_settings
from ingest.shards import Shard
from tests.conftest import DATA

KB = str(Path(sys.executable).parent / "kb")


def test_parse_names_the_problem():
    assert Shard.parse("2/3") == Shard(2, 3) and str(Shard.parse(" 1 / 4 ")) == "1/4"
    for bad, reason in [("0/2", "from 1 to N"), ("3/2", "from 1 to N"), ("1/0", "from 1 to N"), ("a/b", "I/N"),
                        ("2", "I/N")]:
        with pytest.raises(ConfigError, match=reason):
            Shard.parse(bad)
    with pytest.raises(ConfigError, match="shard"):
        load_settings(shard="5/4")
    assert load_settings(shard="1/2").shard_spec == Shard(1, 2)


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_every_path_has_exactly_one_shard_and_they_are_balanced(count):
    paths = [f"corpus/{d}/file-{i}.md" for d in ("a", "b", "c") for i in range(700)]
    owners = [[i for i in range(1, count + 1) if Shard(i, count).owns(p)] for p in paths]
    assert all(len(o) == 1 for o in owners)
    sizes = Counter(o[0] for o in owners)
    assert len(sizes) == count and min(sizes.values()) > 0.85 * len(paths) / count


def test_a_path_keeps_its_shard_whatever_else_is_in_the_corpus():
    shard = Shard(2, 3)
    # The answer depends on the path alone (no state, no listing): the same in another process.
    code = "from ingest.shards import Shard; import sys; print([Shard(2, 3).owns(f'x/{i}.md') for i in range(50)])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == str([shard.owns(f"x/{i}.md") for i in range(50)])


def kb(*args, cwd, env=None) -> subprocess.Popen:
    return subprocess.Popen([KB, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200", **(env or {})})


def finish(process: subprocess.Popen, code: int = 0) -> dict:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == code, stdout + stderr
    return json.loads(stdout) if stdout.strip() else {"stderr": stderr}


@pytest.fixture
def corpus(tmp_path) -> Path:
    """The sample corpus and 24 short notes, under a relative path every worker sees the same way."""
    root = tmp_path / "work"
    shutil.copytree(DATA, root / "corpus", ignore=shutil.ignore_patterns("chroma"))
    for i in range(24):
        (root / "corpus" / "notes").mkdir(exist_ok=True)
        (root / "corpus" / "notes" / f"note-{i:02d}.md").write_text(
            f"# Note {i}\n\nField note number {i} records {['rain', 'wind', 'frost', 'sun'][i % 4]} "
            f"on day {i * 7} at station {chr(65 + i)}.\n")
    return root


@pytest.mark.slow
def test_two_workers_at_once_split_the_corpus_into_one_server(corpus, chroma_server, tmp_path):
    files = sorted(str(p) for p in discover([corpus / "corpus"], [], [])[0])  # sources are absolute
    settings = load_settings(chroma_url=chroma_server, collection="sharded")
    args = ["ingest", "corpus", "--chroma-url", chroma_server, "--collection", "sharded", "--json"]
    here = {"XDG_DATA_HOME": str(tmp_path / "machine-a")}  # where each machine keeps its BM25 index
    first = kb(*args, "--shard", "1/2", cwd=corpus, env=here)
    second = kb(*args, "--shard", "2/2", cwd=corpus, env=here)
    reports = [finish(first), finish(second)]

    taken = [{f["source"] for f in r["files"] if f["status"] == "ingested"} for r in reports]
    assert taken[0] and taken[1], "both workers had a share"
    assert not taken[0] & taken[1], "no file ingested twice"
    assert taken[0] | taken[1] == set(files), "no file left out"
    assert [r["shard"] for r in reports] == ["1/2", "2/2"]
    assert [r["other_shards"] for r in reports] == [len(taken[1]), len(taken[0])]
    assert all(r["failed"] == 0 for r in reports)

    # The incremental records: one per file, each vouching for exactly the chunks stored for it.
    store = KnowledgeBase.open(settings)
    records = store.documents()
    assert set(records) == set(files)
    for source, record in records.items():
        assert len(store.chunks_of(source)) == record.chunks > 0, source
    assert store.count() == sum(r.chunks for r in records.values())
    assert store.delete_orphans() == {}, "chunks without a record"
    # Both wrote the same machine's BM25 index: it holds every chunk once.
    lexical = LexicalIndex(tmp_path / "machine-a" / "kb" / "lexical" / chroma_server.split("//")[1].replace(":", "_")
                           / "sharded.sqlite3")
    assert lexical.ids() == {c.id for c in store.all_chunks(with_text=False)[0]}

    # A search host that ingested nothing builds its BM25 index from the server, and finds by it.
    note = next(f for f in files if f.endswith("note-13.md"))
    found = subprocess.run([KB, "search", "station N day 91", "--mode", "hybrid", "--json", "-k", "3",
                            "--chroma-url", chroma_server, "-c", "sharded"], capture_output=True, text=True, cwd=corpus,
                           env={**os.environ, "XDG_DATA_HOME": str(tmp_path / "machine-b")})
    assert found.returncode == 0, found.stderr
    top = json.loads(found.stdout)[0]
    assert top["source"] == note and top["lexical_rank"] == 1

    # Run again, both at once: nothing to do. Then one unsharded run agrees.
    again = [finish(kb(*args, "--shard", f"{i}/2", cwd=corpus)) for i in (1, 2)]
    assert [r["ingested"] for r in again] == [0, 0] and sum(r["unchanged"] for r in again) == len(files)
    whole = finish(kb(*args, cwd=corpus))
    assert (whole["ingested"], whole["unchanged"], whole["shard"]) == (0, len(files), None)


@pytest.mark.slow
def test_prune_and_orphans_only_touch_the_workers_own_shard(corpus, chroma_server):
    args = ["ingest", "corpus", "--chroma-url", chroma_server, "--collection", "shardprune", "--json"]
    finish(kb(*args, cwd=corpus))
    settings = load_settings(chroma_url=chroma_server, collection="shardprune")
    gone = str(corpus / "corpus" / "notes" / "note-05.md")
    owner = next(i for i in (1, 2) if Shard(i, 2).owns(gone))
    other = 3 - owner
    Path(gone).unlink()
    # Chunks with no record, as a worker in the middle of a big file leaves them: one in each shard.
    store = KnowledgeBase.open(settings)
    strays = {}
    for i in (owner, other):
        source = next(f"corpus/big-{n}.pdf" for n in range(100) if Shard(i, 2).owns(f"corpus/big-{n}.pdf"))
        strays[i] = source
        ids = [chunk_id(source, "part", None, 0)]
        store.write_documents([_part(source, ids, store.spec.dimension)])

    report = finish(kb(*args, "--shard", f"{other}/2", "--prune", cwd=corpus))
    assert {f["source"] for f in report["files"] if f["status"] == "pruned"} == {strays[other]}
    assert gone in KnowledgeBase.open(settings).documents(), "another shard's document was pruned"
    assert store.chunks_of(strays[owner]), "another shard's parts were taken for orphans"

    report = finish(kb(*args, "--shard", f"{owner}/2", "--prune", cwd=corpus))
    pruned = {f["source"] for f in report["files"] if f["status"] == "pruned"}
    assert pruned == {gone, strays[owner]}
    store = KnowledgeBase.open(settings)
    assert gone not in store.documents() and not store.chunks_of(gone)
    assert not store.chunks_of(strays[owner])


def _part(source, ids, dimension):
    import numpy as np

    from ingest.knowledge_base import DocumentWrite

    vectors = np.ones((len(ids), dimension), dtype=np.float32)
    return DocumentWrite(None, ids, vectors, ["part"] * len(ids), [{"source": source, "chunk": 0}] * len(ids))


@pytest.mark.slow
def test_bad_argument_is_reported_by_every_worker(corpus, chroma_server):
    args = ["ingest", "corpus", "missing-folder", "--chroma-url", chroma_server, "--collection", "shardbad", "--json"]
    for i in (1, 2):
        report = finish(kb(*args, "--shard", f"{i}/2", cwd=corpus), code=1)
        assert [f["source"] for f in report["files"] if f["status"] == "failed"] == ["missing-folder"]
