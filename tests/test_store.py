import numpy as np
import pytest

from ingest.client import make_client
from ingest.errors import ModelMismatchError, StoreError
from ingest.knowledge_base import DocumentWrite, KnowledgeBase
from ingest.records import CollectionSpec, DocumentRecord, chunk_id, now
from ingest.settings import load_settings
from tests.conftest import ROOT

SPEC = CollectionSpec("model-a", 4, "none", "task", "qwen3", 512, 64)


def record(source, sha="s1", chunks=0):
    return DocumentRecord(source, sha, "txt", "T", chunks, 10 * chunks, None, 1, "sig", now())


def write(kb, source, sha, n, dim=4):
    ids = [chunk_id(source, sha, None, i) for i in range(n)]
    vectors = np.eye(max(n, dim), dim, dtype=np.float32)[:n] + 0.01
    metadatas = [{"source": source, "sha256": sha, "chunk": i} for i in range(n)]
    kb.write_document(record(source, sha, n), ids, vectors, [f"{source} {sha} {i}" for i in range(n)], metadatas)


@pytest.fixture(params=["embedded", "server"])
def kb(request, tmp_path):
    if request.param == "embedded":
        settings = load_settings(chroma_path=tmp_path / "chroma", collection="unit")
    else:
        url = request.getfixturevalue("chroma_server")
        settings = load_settings(chroma_url=url, collection=f"unit{abs(hash(request.node.nodeid)) % 10**8}")
    knowledge = KnowledgeBase.open(settings)
    knowledge.ensure(SPEC)
    return knowledge


def test_spec_is_recorded_and_mismatches_refused(kb):
    assert kb.spec == SPEC
    with pytest.raises(ModelMismatchError, match="model-a.*model-b"):
        kb.check_model("model-b")
    with pytest.raises(ModelMismatchError, match="4-dimensional.*8-dimensional"):
        kb.check_model("model-a", 8)
    with pytest.raises(ModelMismatchError):
        kb.ensure(CollectionSpec("model-a", 8, "none", "task", "qwen3", 512, 64))
    kb.check_model("model-a", 4, "none")  # the same model is fine


def test_rewrite_replaces_old_version_and_never_duplicates(kb):
    write(kb, "/a.txt", "v1", 3)
    write(kb, "/a.txt", "v1", 3)  # same content again: same ids
    assert kb.count() == 3
    write(kb, "/a.txt", "v2", 2)
    chunks = kb.chunks_of("/a.txt")
    assert sorted(c.metadata["sha256"] for c in chunks) == ["v2", "v2"]
    assert kb.documents()["/a.txt"].sha256 == "v2"


def test_delete_document(kb):
    write(kb, "/a.txt", "v1", 3)
    write(kb, "/b.txt", "v1", 2)
    assert kb.delete_document("/a.txt") == 3
    assert set(kb.documents()) == {"/b.txt"} and kb.count() == 2


def test_query_and_where(kb):
    write(kb, "/a.txt", "v1", 3)
    write(kb, "/b.txt", "v1", 3)
    hits = kb.query(np.array([1, 0, 0, 0], np.float32) + 0.01, k=2, where={"source": "/b.txt"})
    assert [h.metadata["source"] for h in hits] == ["/b.txt", "/b.txt"]
    assert hits[0].metadata["chunk"] == 0


class _SpyCollection:
    def __init__(self, collection, sizes):
        self._collection, self._sizes = collection, sizes

    def upsert(self, **kwargs):
        self._sizes.append(len(kwargs["ids"]))
        return self._collection.upsert(**kwargs)

    def __getattr__(self, name):
        return getattr(self._collection, name)


class _SmallBatchClient:
    """A real Chroma client that reports a small max batch size and records write sizes."""

    def __init__(self, client, limit):
        self._client, self.limit, self.sizes = client, limit, []

    def get_max_batch_size(self):
        return self.limit

    def get_or_create_collection(self, *args, **kwargs):
        return _SpyCollection(self._client.get_or_create_collection(*args, **kwargs), self.sizes)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_writes_stay_within_max_batch_size(tmp_path):
    client = _SmallBatchClient(make_client(load_settings(chroma_path=tmp_path / "c")), 7)
    kb = KnowledgeBase(client, "batches")
    kb.ensure(SPEC)
    write(kb, "/big.txt", "v1", 30)
    assert kb.count() == 30
    chunk_writes = client.sizes[:-1]  # the last upsert is the document record
    assert max(chunk_writes) <= 7 and sum(chunk_writes) == 30


def test_names_are_validated(tmp_path):
    with pytest.raises(StoreError, match="not valid"):
        KnowledgeBase.open(load_settings(chroma_path=tmp_path / "c", collection="a b"))


def test_several_documents_in_one_write_replace_their_stale_chunks_only(kb):
    def document(source, sha, n):
        ids = [chunk_id(source, sha, None, i) for i in range(n)]
        vectors = np.eye(max(n, 4), 4, dtype=np.float32)[:n] + 0.01
        metadatas = [{"source": source, "sha256": sha, "chunk": i} for i in range(n)]
        return DocumentWrite(record(source, sha, n), ids, vectors, [f"{source} {sha} {i}" for i in range(n)], metadatas)

    kb.write_documents([document("a.txt", "old", 3), document("b.txt", "old", 2), document("c.txt", "old", 2)])
    assert kb.count() == 7 and set(kb.documents()) == {"a.txt", "b.txt", "c.txt"}
    # a and b change in one write; c is untouched; an empty document needs only its record.
    kb.write_documents([document("a.txt", "new", 1), document("b.txt", "new", 2), document("empty.txt", "e", 0)])
    chunks = kb.chunks_of("a.txt") + kb.chunks_of("b.txt") + kb.chunks_of("c.txt")
    assert sorted(c.metadata["sha256"] for c in chunks) == ["new", "new", "new", "old", "old"]
    assert kb.count() == 5
    docs = kb.documents()
    assert docs["a.txt"].sha256 == "new" and docs["c.txt"].sha256 == "old" and docs["empty.txt"].chunks == 0


def test_store_process_writes_reads_and_refuses_like_the_store(tmp_path):
    from ingest.store_process import StoreProcess

    settings = load_settings(chroma_path=tmp_path / "chroma", collection="unit")
    store = StoreProcess(settings)
    try:
        assert store.documents() == {}
        store.ensure(SPEC)
        ids = [chunk_id("/a.txt", "v1", None, i) for i in range(3)]
        vectors = np.eye(3, 4, dtype=np.float32) + 0.01
        store.write_documents([DocumentWrite(record("/a.txt", "v1", 3), ids, vectors, ["x", "y", "z"],
                                             [{"source": "/a.txt", "chunk": i} for i in range(3)])])
        assert set(store.documents()) == {"/a.txt"}
        with pytest.raises(ModelMismatchError, match="model-a.*model-b"):  # the error's own type crosses over
            store.check_model("model-b")
        assert store.cpu > 0  # the process's CPU, Chroma's threads included, is accounted
    finally:
        store.close()
    kb = KnowledgeBase.open(settings)  # persisted once the process has closed
    assert kb.count() == 3 and kb.spec == SPEC
    assert [c.id for c in kb.query(vectors[0], k=1)] == [ids[0]]


def test_store_process_that_cannot_open_the_store_says_where(tmp_path):
    from ingest.store_process import StoreProcess

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    store = StoreProcess(load_settings(chroma_path=blocker, collection="unit"))
    try:
        with pytest.raises(StoreError, match="cannot open the Chroma store at .*a-file"):
            store.documents()
    finally:
        store.close()


def test_a_big_document_is_written_in_calls_of_bounded_size(tmp_path, monkeypatch):
    """A 1,000-chunk document at 2,560-d goes in several upserts (each a copy of its vectors), all stored."""
    import ingest.knowledge_base

    settings = load_settings(chroma_path=tmp_path / "chroma", collection="wide")
    knowledge = KnowledgeBase.open(settings)
    knowledge.ensure(CollectionSpec("model-a", 2560, "none", "task", "qwen3", 512, 64))
    monkeypatch.setattr(ingest.knowledge_base, "_FLOATS_PER_WRITE", 300 * 2560)
    sizes = []
    upsert = knowledge._chunks.upsert
    monkeypatch.setattr(knowledge._chunks, "upsert", lambda **kw: (sizes.append(len(kw["ids"])), upsert(**kw)))
    rng = np.random.default_rng(0)
    ids = [chunk_id("/big.pdf", "s", 1, i) for i in range(1000)]
    vectors = rng.standard_normal((1000, 2560)).astype(np.float32)
    metadatas = [{"source": "/big.pdf", "sha256": "s", "chunk": i} for i in range(1000)]
    knowledge.write_document(record("/big.pdf", "s", 1000), ids, vectors, [f"t{i}" for i in range(1000)], metadatas)
    assert sizes == [300, 300, 300, 100]
    assert knowledge.count() == 1000 and knowledge.chunks_of("/big.pdf")[999].text == "t999"


def test_a_write_cut_short_leaves_no_record_claiming_chunks_that_are_gone(kb, monkeypatch):
    """Replacing a version: the old record goes before the old chunks do. If the write dies before the
    new record is in, the source has no record (the next run ingests it again), never a stale one."""
    write(kb, "/a.txt", "v1", 3)
    ids = [chunk_id("/a.txt", "v2", None, i) for i in range(2)]
    new = DocumentWrite(record("/a.txt", "v2", 2), ids, np.eye(2, 4, dtype=np.float32) + 0.01, ["x", "y"],
                        [{"source": "/a.txt", "sha256": "v2", "chunk": i} for i in range(2)], replacing=True)
    real = kb._docs.upsert

    def dies(**kwargs):
        raise RuntimeError("killed here")

    monkeypatch.setattr(kb._docs, "upsert", dies)
    with pytest.raises(StoreError):
        kb.write_documents([new])
    assert "/a.txt" not in kb.documents()  # the v1 record did not outlive the v1 chunks
    assert {c.metadata["sha256"] for c in kb.chunks_of("/a.txt")} == {"v2"}
    monkeypatch.setattr(kb._docs, "upsert", real)
    kb.write_documents([new])
    assert kb.documents()["/a.txt"].sha256 == "v2" and kb.count() == 2


_WRITE_ONE = """
import sys
import numpy as np
from ingest.settings import load_settings
from ingest.knowledge_base import KnowledgeBase
from tests.test_store import SPEC, write
kb = KnowledgeBase.open(load_settings(chroma_path=sys.argv[1], collection="unit"))
kb.ensure(SPEC)
write(kb, sys.argv[2], "v1", 1)
"""


@pytest.mark.slow
def test_a_long_lived_process_sees_what_another_process_wrote(tmp_path):
    """Chroma searches the index it loaded into memory: without kb reopening the store, a UI running
    while `kb ingest` writes would never find the new documents."""
    import os
    import subprocess
    import sys

    settings = load_settings(chroma_path=tmp_path / "chroma", collection="unit")
    reader = KnowledgeBase.open(settings)
    reader.ensure(SPEC)
    write(reader, "/mine.txt", "v1", 1)
    assert reader.current()  # its own writes: nothing to reload
    descriptors = []
    for round_ in range(6):
        subprocess.run([sys.executable, "-c", _WRITE_ONE, str(tmp_path / "chroma"), f"/theirs-{round_}.txt"],
                       check=True, cwd=ROOT, timeout=120)
        assert not reader.current()
        reader = KnowledgeBase.open(settings)  # what Searcher and the UI do when it is not current
        assert reader.current()
        hits = reader.query(np.array([1, 0, 0, 0], np.float32) + 0.01, k=20)
        assert {h.metadata["source"] for h in hits} == {"/mine.txt"} | {f"/theirs-{i}.txt" for i in range(round_ + 1)}
        descriptors.append(len(os.listdir("/proc/self/fd")))
    # Each replaced Chroma system is stopped: files and memory do not pile up with every reload.
    assert descriptors[-1] <= descriptors[0] + 2, descriptors


def test_a_reader_elsewhere_does_not_reload_the_store_and_a_held_client_keeps_working(tmp_path):
    """Another process only reading (kb search, kb status) leaves the view current; after a write
    elsewhere, a client still held here (a search under way in another UI session) keeps working
    until it is let go, and only then is its Chroma system stopped."""
    import subprocess
    import sys

    settings = load_settings(chroma_path=tmp_path / "chroma", collection="unit")
    held = KnowledgeBase.open(settings)
    held.ensure(SPEC)
    write(held, "/mine.txt", "v1", 1)
    reading = "from ingest.settings import load_settings; from ingest.knowledge_base import KnowledgeBase; " \
              f"print(KnowledgeBase.open(load_settings(chroma_path={str(tmp_path / 'chroma')!r}, " \
              "collection='unit')).count())"
    assert subprocess.run([sys.executable, "-c", reading], capture_output=True, text=True, cwd=ROOT,
                          check=True).stdout.strip() == "1"
    assert held.current()
    subprocess.run([sys.executable, "-c", _WRITE_ONE, str(tmp_path / "chroma"), "/theirs.txt"], check=True, cwd=ROOT,
                   timeout=120)
    assert not held.current()
    fresh = KnowledgeBase.open(settings)  # a new system; the held one is retired, not stopped
    assert fresh.current() and fresh.count() == 2
    vector = np.array([1, 0, 0, 0], np.float32) + 0.01
    assert held.query(vector, k=5) and held.documents()  # still answers (from what it had loaded)
    assert {h.metadata["source"] for h in fresh.query(vector, k=5)} == {"/mine.txt", "/theirs.txt"}


def test_server_tenant_and_database(chroma_server, tmp_path):
    from ingest.client import lexical_dir
    from ingest.errors import ConfigError
    from ingest.manage import status

    team = load_settings(chroma_url=chroma_server, chroma_database="team-a", collection="shared-name")
    with pytest.raises(StoreError, match="no database 'team-a' in tenant 'default_tenant'.*kb ingest creates it"):
        KnowledgeBase.open(team)  # a search does not make one up
    kb = KnowledgeBase.open(team, create=True)  # an ingest does
    kb.ensure(SPEC)
    write(kb, "/a.txt", "v1", 3)
    team_b = team.model_copy(update={"chroma_database": "team-b"})
    other = KnowledgeBase.open(team_b, create=True)
    other.ensure(SPEC)
    write(other, "/b.txt", "v1", 1)
    default = load_settings(chroma_url=chroma_server, collection="shared-name")
    assert not KnowledgeBase.open(default).exists()
    assert [(r["collection"], r["documents"], r["chunks"]) for r in status(team)] == [("shared-name", 1, 3)]
    assert KnowledgeBase.open(team).documents().keys() == {"/a.txt"} and other.documents().keys() == {"/b.txt"}
    # Same collection name in two databases: two BM25 indexes.
    assert len({lexical_dir(team), lexical_dir(team_b), lexical_dir(default)}) == 3
    with pytest.raises(StoreError, match="no tenant 'nobody'.*--chroma-tenant"):
        KnowledgeBase.open(team.model_copy(update={"chroma_tenant": "nobody"}), create=True)
    with pytest.raises(ConfigError, match="needs a Chroma server"):
        load_settings(chroma_path=tmp_path, chroma_database="team-a")


def test_delete_documents_by_source_or_folder(tmp_path):
    from ingest.manage import delete_documents

    settings = load_settings(chroma_path=tmp_path / "chroma", collection="deletes")
    kb = KnowledgeBase.open(settings)
    kb.ensure(SPEC)
    for source in ["/docs/a.txt", "/docs/sub/b.txt", "/docs/sub/c.txt", "/docs/subway.txt"]:
        write(kb, source, "v1", 2)
    removed, unknown = delete_documents(settings, ["/docs/a.txt", "/docs/sub/", "/nope.txt"])
    assert removed == {"/docs/a.txt": 2, "/docs/sub/b.txt": 2, "/docs/sub/c.txt": 2} and unknown == ["/nope.txt"]
    kb = KnowledgeBase.open(settings)
    assert set(kb.documents()) == {"/docs/subway.txt"} and kb.count() == 2  # a folder is not a name prefix
    with pytest.raises(StoreError, match="no collection 'other'"):
        delete_documents(settings.model_copy(update={"collection": "other"}), ["/docs/subway.txt"])


def test_delete_documents_takes_paths_as_status_shows_them(tmp_path, monkeypatch):
    """Ingest records resolved paths and the CLI shows them relative to the working folder: both delete."""
    from ingest.manage import delete_documents

    settings = load_settings(chroma_path=tmp_path / "chroma", collection="relative")
    kb = KnowledgeBase.open(settings)
    kb.ensure(SPEC)
    docs = (tmp_path / "docs").resolve()
    for name in ["a.txt", "sub/b.txt", "sub/c.txt"]:
        write(kb, str(docs / name), "v1", 2)
    monkeypatch.chdir(tmp_path)
    removed, unknown = delete_documents(settings, ["docs/a.txt", "./docs/sub", "docs/zz.txt"])
    assert removed == {str(docs / "a.txt"): 2, str(docs / "sub/b.txt"): 2, str(docs / "sub/c.txt"): 2}
    assert unknown == ["docs/zz.txt"] and KnowledgeBase.open(settings).count() == 0


def test_new_collections_get_kbs_hnsw_settings_and_older_ones_its_ef_search(kb):
    from ingest.knowledge_base import HNSW

    stored = kb.client.get_collection(kb.name).configuration_json["hnsw"]
    assert {key: stored[key] for key in HNSW} == HNSW
    # A collection made the way kb made them before (Chroma's defaults, ef_search 100) is raised by an ingest.
    older = kb.name + "-old"
    kb.client.create_collection(older, embedding_function=None, metadata={"hnsw:space": "cosine", **SPEC.to_metadata()})
    assert kb.client.get_collection(older).configuration_json["hnsw"]["ef_search"] == 100
    KnowledgeBase(kb.client, older).ensure(SPEC)
    assert kb.client.get_collection(older).configuration_json["hnsw"]["ef_search"] == HNSW["ef_search"]


def test_a_server_that_stopped_is_named_not_taken_for_an_empty_store(tmp_path):
    """A store handle held while the server goes away (the UI's, say): asking for a collection, the batch
    size, a search or the status says the server does not answer, never that the collection is missing."""
    from ingest.client import store_error
    from ingest.manage import status
    from kb_app.search import Searcher
    from tests.rigs.servers import ChromaServer

    (tmp_path / "server").mkdir()
    server = ChromaServer(tmp_path / "server", tmp_path / "server.log")
    settings = load_settings(chroma_url=server.url, collection="gone")
    try:
        writer = KnowledgeBase.open(settings, create=True)
        writer.ensure(SPEC)
        write(writer, "/a.txt", "v1", 2)
        held = KnowledgeBase.open(settings)
    finally:
        server.close()
    said = f"cannot reach the Chroma server at {server.url}: is it running"
    with pytest.raises(StoreError, match=said):
        held.exists()
    with pytest.raises(StoreError, match=said):
        held.max_batch  # noqa: B018 - a property that asks the server
    with pytest.raises(StoreError, match=said) as raised:
        Searcher(settings, kb=held)
    assert "ingest documents first" not in str(raised.value)
    with pytest.raises(StoreError, match=said):
        status(settings)
    # A StoreError raised inside another read (the batch size asked by a paged read) is passed on as it is,
    # not told again inside itself ("cannot reach ...: is it running? (cannot reach ...)").
    inner = store_error(settings, ConnectionRefusedError(111, "Connection refused"))
    assert store_error(settings, inner, "cannot read the documents") is inner
    assert held._failed("cannot read the documents", inner) is inner


def test_search_and_status_at_a_port_where_no_server_runs_name_the_url(tmp_path):
    from tests.rigs.servers import free_port
    from tests.test_cli import kb as run_kb

    url = f"http://127.0.0.1:{free_port()}"
    for command in (["search", "how do solar cells work?"], ["status"]):
        result = run_kb(*command, "--chroma-url", url, cwd=tmp_path, check=2)
        said = " ".join(result.stderr.split())
        assert f"cannot reach the Chroma server at {url}: is it running" in said, said
        assert "ingest documents first" not in said
