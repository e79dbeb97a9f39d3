"""The BM25 index beside each collection: its terms, its ranking, and that every write and delete of the
store keeps it in step (ingest, re-ingest, prune, delete, a run killed between the two writes)."""

import re
import shutil
import sqlite3

import pytest

from ingest.client import lexical_dir
from ingest.knowledge_base import KnowledgeBase
from ingest.lexical import MAX_QUERY_TERMS, LexicalIndex, terms
from ingest.pipeline import ingest
from ingest.settings import load_settings
from kb_app.search import Searcher


def test_terms_cut_spaced_scripts_into_words_and_cjk_into_character_pairs():
    assert terms("Configure the APT sources.list, then run apt-get update!") == [
        "configure", "the", "apt", "sources", "list", "then", "run", "apt", "get", "update"]
    assert terms("配置网络") == ["配置", "置网", "网络"]
    assert terms("Debian 安装程序") == ["debian", "安装", "装程", "程序"]
    assert terms("パッケージ管理") == ["パッ", "ッケ", "ケー", "ージ", "ジ管", "管理"]
    assert terms("한국어") == ["한국", "국어"]
    assert terms("中 文") == ["中", "文"]  # a lone character stands as itself
    assert terms("ＡＰＴ Größe") == terms("apt GRÖSSE") == ["apt", "grösse"]  # NFKC and full case folding
    assert terms("--- ... ___") == []


def test_index_ranks_by_bm25_replaces_and_deletes(tmp_path):
    index = LexicalIndex(tmp_path / "x.sqlite3")
    index.upsert([
        ("a", "s1", "Install packages with apt-get install.", "en"),
        ("b", "s1", "The kernel is configured with grub; grub loads the kernel.", "en"),
        ("c", "s2", "网络接口的配置在 /etc/network/interfaces 文件中", "zh"),
    ])
    assert [h.id for h in index.search("grub kernel", 5)] == ["b"]
    assert [h.id for h in index.search("网络配置", 5)] == ["c"]  # pairs match inside a longer run
    assert [h.id for h in index.search("interfaces apt", 5)] == ["a", "c"] or [
        h.id for h in index.search("interfaces apt", 5)] == ["c", "a"]
    hits = index.search("install kernel", 5)
    assert {h.id for h in hits} == {"a", "b"} and all(h.score > 0 for h in hits)
    assert hits == sorted(hits, key=lambda h: -h.score)
    assert [h.id for h in index.search("interfaces apt", 5, language="zh")] == ["c"]
    assert index.languages() == {"en": 2, "zh": 1}
    index.upsert([("a", "s1", "nothing about packages", None)])  # same id: replaced, not added
    assert index.count() == 3 and [h.id for h in index.search("packages", 5)] == ["a"]
    assert index.search("install", 5) == []
    index.delete(["a", "not-there"])
    assert index.ids() == {"b", "c"}
    assert index.search("", 5) == [] and index.search("!!!", 5) == []
    # On disk, not in memory: another handle on the same file sees it all.
    assert LexicalIndex(tmp_path / "x.sqlite3").ids() == {"b", "c"}


def test_an_index_of_an_older_layout_is_dropped_to_be_rebuilt(tmp_path):
    db = sqlite3.connect(tmp_path / "old.sqlite3")
    db.executescript("CREATE TABLE entries (rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, source TEXT);"
                     "INSERT INTO entries(id, source) VALUES ('x', 's');")
    db.close()
    index = LexicalIndex(tmp_path / "old.sqlite3")
    assert index.count() == 0  # empty, so the store's next sync indexes every chunk again
    index.upsert([("x", "s", "text", "en")])
    assert LexicalIndex(tmp_path / "old.sqlite3").languages() == {"en": 1}


def test_a_long_query_keeps_its_rarest_terms(tmp_path):
    index = LexicalIndex(tmp_path / "x.sqlite3")
    common = " ".join(f"common{i}" for i in range(MAX_QUERY_TERMS))
    index.upsert([(f"d{i}", "s", common, None) for i in range(20)] + [("rare", "s", "zyzzyva " + common, None)])
    hits = index.search(common + " zyzzyva", 3)
    assert hits[0].id == "rare"


@pytest.fixture
def kb_settings(tmp_path, corpus):
    return load_settings(chroma_path=tmp_path / "chroma")


def _stored_ids(kb):
    chunks, _ = kb.all_chunks(with_text=False)
    return {c.id for c in chunks}


@pytest.mark.slow
def test_ingest_reingest_prune_and_delete_keep_the_index_level_with_the_chunks(kb_settings, corpus):
    assert ingest([corpus], kb_settings).ok
    kb = KnowledgeBase.open(kb_settings)
    assert (lexical_dir(kb_settings) / "knowledge.sqlite3").is_file()
    assert kb.lexical.ids() == _stored_ids(kb) and kb.lexical.count() > 50
    # A heading entry is indexed by its heading: BM25 finds the section by its title words.
    top = kb.lexical.search("Inverters DC AC", 1)[0]
    assert kb.get([top.id])[0].metadata.get("heading") == "Inverters: From DC to AC"

    solar = corpus / "en" / "solar-power.md"
    solar.write_text(re.sub(r"(?i)inverters?", "Wechselrichter zyzzyva", solar.read_text()))
    assert ingest([corpus], kb_settings).ok
    kb = KnowledgeBase.open(kb_settings)
    assert kb.lexical.ids() == _stored_ids(kb)
    assert kb.lexical.search("zyzzyva", 5) and kb.lexical.search("inverter inverters", 5) == []

    (corpus / "en" / "coffee-brewing.html").unlink()
    assert ingest([corpus], kb_settings, prune=True).ok
    kb = KnowledgeBase.open(kb_settings)
    assert kb.lexical.ids() == _stored_ids(kb) and not kb.lexical.search("espresso", 5)

    removed = kb.delete_document(str(solar))
    assert removed > 0 and kb.lexical.ids() == _stored_ids(kb) and not kb.lexical.search("zyzzyva", 5)


def test_sync_rebuilds_a_lost_index_and_drops_entries_of_gone_chunks(kb_settings, corpus):
    assert ingest([corpus], kb_settings).ok
    kb = KnowledgeBase.open(kb_settings)
    expected = kb.lexical.ids()
    kb.lexical.close()
    # A collection from before the index existed: nothing on disk. The next ingest (nothing to embed) builds it.
    shutil.rmtree(lexical_dir(kb_settings))
    report = ingest([corpus], kb_settings)
    assert report.ok and not report.of("ingested")
    kb = KnowledgeBase.open(kb_settings)
    assert kb.lexical.ids() == expected
    # A run killed after the index was written and before the vectors: an entry for a chunk that is not stored.
    kb.lexical.upsert([("ghost", "nowhere.md", "phantom text", "en")])
    assert kb.sync_lexical() == {"added": 0, "removed": 1}
    assert kb.lexical.ids() == expected and kb.sync_lexical() == {"added": 0, "removed": 0}


def test_hybrid_search_builds_a_missing_index_once_and_skips_entries_without_chunks(kb_settings, corpus):
    assert ingest([corpus], kb_settings).ok
    folder = lexical_dir(kb_settings)
    shutil.rmtree(folder)
    hybrid = kb_settings.model_copy(update={"search_mode": "hybrid"})
    finder = Searcher(hybrid)
    response = finder.search("How hot should the water be for pour-over coffee?", k=3)
    assert response.mode == "hybrid" and response.results[0].source.endswith("coffee-brewing.html")
    assert finder.kb.lexical.count() == len(_stored_ids(finder.kb))
    # An entry whose chunk is gone (a crash between the two deletes) is never shown.
    db = sqlite3.connect(folder / "knowledge.sqlite3")
    db.execute("INSERT INTO entries(id, source) VALUES ('ghost', 'gone.md')")
    db.execute("INSERT INTO postings(rowid, terms) VALUES (last_insert_rowid(), 'zyzzyva zyzzyva')")
    db.commit()
    results = Searcher(hybrid).search("zyzzyva", k=3).results
    assert all(r.chunk_id != "ghost" for r in results)


def test_terms_in_most_entries_are_left_out_of_a_query_unless_it_has_no_others(tmp_path):
    index = LexicalIndex(tmp_path / "x.sqlite3")
    index.upsert([(f"d{i}", "s", f"the debian system number{i}", "en") for i in range(10)]
                 + [("k", "s", "the kernel", "en")])
    # "the" is in every entry: with it, all 11 would match; without it, only the kernel entry does.
    assert [h.id for h in index.search("the kernel", 20)] == ["k"]
    assert len(index.search("the", 20)) == 11  # nothing else asked: the common term stays
    hits = index.search("the debian", 20)  # both common: kept, the entries with both first
    assert len(hits) == 11 and hits[-1].id == "k"


def test_the_index_is_never_ingested_as_a_document(tmp_path, corpus, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    # With a Chroma server the index is this user's, one folder per server, not under the working directory.
    assert lexical_dir(load_settings(chroma_url="http://chroma.example:8000")) == (
        tmp_path / "xdg" / "kb" / "lexical" / "chroma.example_8000")
    # Put inside the folder being ingested, it is passed over like the store itself.
    settings = load_settings(chroma_path=tmp_path / "chroma", lexical_path=corpus / "bm25")
    assert ingest([corpus], settings).ok
    report = ingest([corpus], settings)
    assert report.ok and {o.status for o in report.outcomes} == {"unchanged"}
    assert (corpus / "bm25" / "knowledge.sqlite3").is_file()


@pytest.mark.slow
def test_a_searcher_catches_up_with_chunks_another_machine_indexed(kb_settings, corpus, tmp_path, monkeypatch):
    """With a Chroma server, each machine keeps its own BM25 index: chunks other ingest workers wrote reach
    it at the searcher's next check, fetched from the store."""
    import kb_app.search

    assert ingest([corpus / "zh"], kb_settings).ok
    hybrid = kb_settings.model_copy(update={"search_mode": "hybrid"})
    finder = Searcher(hybrid)
    found = finder.search("pour-over coffee kettle", k=3).results
    assert not any(r.source.endswith("coffee-brewing.html") for r in found)
    elsewhere = kb_settings.model_copy(update={"lexical_path": tmp_path / "other-machine"})
    assert ingest([corpus / "en"], elsewhere).ok
    monkeypatch.setattr(kb_app.search, "LEXICAL_RECHECK", 0.0)
    response = finder.search("pour-over coffee kettle", k=3)
    # Found by BM25 too: the index now holds the new chunks, and English became the collection's main language.
    assert any(r.source.endswith("coffee-brewing.html") and r.lexical_rank for r in response.results)
    assert finder.kb.lexical.count() == len(_stored_ids(finder.kb))


@pytest.mark.slow
def test_a_searcher_keeps_the_entries_another_process_just_wrote(kb_settings, corpus, monkeypatch):
    """An embedded store written by `kb ingest` in another process while the UI's searcher is open: at its next
    check the searcher finds the new chunks by BM25, and its index holds exactly the store's chunks."""
    import subprocess
    import sys
    from pathlib import Path

    import kb_app.search

    assert ingest([corpus / "zh"], kb_settings).ok
    finder = Searcher(kb_settings.model_copy(update={"search_mode": "hybrid"}))
    finder.search("熊猫吃什么", k=3)
    kb = Path(sys.executable).parent / "kb"
    subprocess.run([str(kb), "ingest", str(corpus / "en"), "--chroma-path", str(kb_settings.chroma_path)], check=True,
                   capture_output=True)
    monkeypatch.setattr(kb_app.search, "LEXICAL_RECHECK", 0.0)
    response = finder.search("sourdough starter hydration", k=3)
    assert any(r.source.endswith("sourdough.txt") and r.lexical_rank for r in response.results)
    assert finder.kb.lexical.count() == len(_stored_ids(finder.kb))
