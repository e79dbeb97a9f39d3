"""The lexical (BM25) index that stands beside a collection's vectors, for hybrid search.

SQLite's FTS5 keeps it on disk and ranks with BM25 itself: a query reads the postings of its own terms
only, so nothing is loaded whole into memory per query (Open WebUI rebuilds a BM25 index from every chunk
on each query and runs out of memory at 690k chunks), and writes and deletes are incremental.

Text is cut into terms here, not by FTS5, because FTS5's tokenizers keep a run of Chinese or Japanese
characters as one "word": words of letters and digits (NFKC, case-folded) for scripts with spaces, and
overlapping character pairs for Han, kana and Hangul (what Lucene's CJK analyzer does, and which needs
no dictionary).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import StoreError
from .language import CJK, character_pairs
from .records import ChunkMetadata

_RUN = re.compile(rf"([{CJK}]+)|([^\W_{CJK}]+)")


def terms(text: str) -> list[str]:
    """The index's terms for `text`: words for spaced scripts, character pairs for CJK runs
    (a lone CJK character stands as itself)."""
    out: list[str] = []
    for cjk, word in _RUN.findall(unicodedata.normalize("NFKC", text).casefold()):
        out.extend([word] if word else character_pairs(cjk))
    return out


@dataclass(frozen=True)
class LexicalHit:
    id: str
    score: float  # BM25, higher is better


SCHEMA_VERSION = 2  # 2: entries carry their passage's language
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, source TEXT, language TEXT);
CREATE INDEX IF NOT EXISTS entries_source ON entries(source);
CREATE VIRTUAL TABLE IF NOT EXISTS postings USING fts5(terms, tokenize = 'unicode61 remove_diacritics 0');
CREATE VIRTUAL TABLE IF NOT EXISTS vocabulary USING fts5vocab(postings, 'row');
"""

# A query keeps at most this many distinct terms, the rarest: a pasted paragraph of CJK text makes
# hundreds of pairs, and common ones add postings to read but next to nothing to BM25.
MAX_QUERY_TERMS = 48
# Terms in more than half the entries are left out of a query (unless it has no others): FTS5's BM25 gives
# them an IDF of ~0 (it clamps the negative value), while reading their postings costs a share of the whole
# index per query, the cost that grows with the store.
COMMON = 0.5


class LexicalIndex:
    """One collection's BM25 index: entries by chunk id, each with its source (for deletes by document)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # one connection, used from asyncio.to_thread as well
        self._size: tuple[float, int] | None = None  # (when, entries): counting 1M rows takes a while
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=120, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            if self._db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                # An index of another layout is dropped: the store's next sync_lexical rebuilds it from the chunks.
                self._db.executescript("DROP TABLE IF EXISTS vocabulary; DROP TABLE IF EXISTS postings; "
                                       "DROP TABLE IF EXISTS entries;")
                self._db.executescript(_SCHEMA)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the lexical index {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def _transaction(self, work: callable) -> None:  # type: ignore[valid-type]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                work(self._db)
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"cannot write the lexical index {self.path}: {exc}") from None
                raise

    def upsert(self, entries: Iterable[tuple[str, str, str, str | None]]) -> None:
        """Index (chunk id, source, text, language) entries, replacing any earlier text under the same ids."""
        rows = [(id_, source, " ".join(terms(text)), language) for id_, source, text, language in entries]
        if not rows:
            return

        def work(db: sqlite3.Connection) -> None:
            _delete(db, [r[0] for r in rows])
            for id_, source, text, language in rows:
                rowid = db.execute("INSERT INTO entries(id, source, language) VALUES (?, ?, ?)",
                                   (id_, source, language)).lastrowid
                db.execute("INSERT INTO postings(rowid, terms) VALUES (?, ?)", (rowid, text))

        self._transaction(work)

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._transaction(lambda db: _delete(db, list(ids)))

    def ids(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT id FROM entries")}

    def languages(self) -> dict[str | None, int]:
        """Entries by their passage's language."""
        with self._lock:
            return dict(self._db.execute("SELECT language, count(*) FROM entries GROUP BY language").fetchall())

    def count(self) -> int:
        with self._lock:
            return self._count()

    def _count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM entries").fetchone()[0])

    def _entries(self) -> int:
        """The entry count for the common-term cut, re-counted at most once a minute (caller holds the lock)."""
        now = time.monotonic()
        if self._size is None or now - self._size[0] > 60:
            self._size = (now, self._count())
        return self._size[1]

    def search(self, query: str, k: int, language: str | None = None) -> list[LexicalHit]:
        """The k entries with the highest BM25 for any of the query's terms (in `language` only, if given)."""
        wanted = sorted(set(terms(query)))
        if not wanted:
            return []
        with self._lock:
            frequency = dict(self._db.execute(
                f"SELECT term, doc FROM vocabulary WHERE term IN ({','.join('?' * len(wanted))})", wanted
            ).fetchall())
            wanted = sorted((t for t in wanted if t in frequency), key=lambda t: frequency[t])
            if not wanted:
                return []
            size = self._entries()
            wanted = [t for t in wanted if frequency[t] <= COMMON * size] or wanted[:3]
            wanted = wanted[:MAX_QUERY_TERMS]
            match = " OR ".join(f'"{t}"' for t in wanted)
            try:
                if language is None:
                    # Ranked inside FTS5 first (its ORDER BY rank LIMIT path), then joined to ids.
                    rows = self._db.execute(
                        "SELECT entries.id, top.rank FROM (SELECT rowid, rank FROM postings WHERE postings MATCH ? "
                        "ORDER BY rank LIMIT ?) AS top JOIN entries ON entries.rowid = top.rowid ORDER BY top.rank",
                        (match, k),
                    ).fetchall()
                else:
                    rows = self._db.execute(
                        "SELECT entries.id, postings.rank FROM postings JOIN entries ON entries.rowid = postings.rowid "
                        "WHERE postings MATCH ? AND entries.language = ? ORDER BY postings.rank LIMIT ?",
                        (match, language, k),
                    ).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"lexical search in {self.path} failed: {exc}") from None
        # FTS5's rank (bm25()) is negated so that ascending order is best first.
        return [LexicalHit(id_, -float(score)) for id_, score in rows]


def lexical_entry(chunk_id: str, text: str, metadata: dict[str, Any]) -> tuple[str, str, str, str | None]:
    """A stored chunk as the index holds it: (id, source, text, language). A heading entry's text is its
    heading (what was embedded for it; its stored text is its section's chunk, indexed already)."""
    meta = ChunkMetadata.from_metadata(metadata)
    return (chunk_id, meta.source, meta.heading or text, meta.language)


def _delete(db: sqlite3.Connection, ids: list[str]) -> None:
    for start in range(0, len(ids), 500):  # SQLite's limit on a statement's variables
        part = ids[start : start + 500]
        marks = ",".join("?" * len(part))
        rowids = [r[0] for r in db.execute(f"SELECT rowid FROM entries WHERE id IN ({marks})", part)]
        if rowids:
            rmarks = ",".join("?" * len(rowids))
            db.execute(f"DELETE FROM postings WHERE rowid IN ({rmarks})", rowids)
            db.execute(f"DELETE FROM entries WHERE rowid IN ({rmarks})", rowids)
