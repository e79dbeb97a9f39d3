"""Folder sync (`kb watch`): real files, real inotify events, the embedded model and an embedded Chroma.

Each wait polls until what it waits for is there, up to a generous deadline: nothing asserts how fast.
"""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ingest.knowledge_base import KnowledgeBase
from ingest.lock import write_lock
from ingest.pipeline import ingest
from ingest.settings import Settings
from ingest.watch import SyncRound, watch_in_thread
from kb_app.service import KnowledgeService

pytestmark = pytest.mark.slow

DEADLINE = 60.0  # seconds: far beyond the few a change takes, on a busy machine
KB = str(Path(sys.executable).parent / "kb")

KITES = "# Kites\n\nIn Weifang the spring kite festival fills the sky with silk dragons and paper swallows.\n"
KITES_NEW = "# Kites\n\nThe lighthouse keeper polished the great brass lamp every evening before the storm.\n"
BEES = "# Bees\n\nHoney bees dance in the hive to tell their sisters where the clover flowers are.\n"
GLACIERS = "# Glaciers\n\nGlaciers carve deep U-shaped valleys as the ice grinds slowly down the mountain.\n"


def settings_for(store: Path) -> Settings:
    return Settings(chroma_path=store)


def wait_for(condition, what: str) -> None:
    """Poll `condition` until it holds; fail, saying what was awaited, past the deadline."""
    end = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < end, f"still waiting after {DEADLINE:.0f} s for {what}"
        time.sleep(0.2)


def records(settings: Settings) -> dict:
    return KnowledgeBase.open(settings).documents()


def found(service: KnowledgeService, query: str, needle: str) -> bool:
    """Whether a search for `query` returns a passage with `needle` in it."""
    return any(needle in r.text for r in service.search(query, k=10).results)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Rounds:
    """The rounds a watcher reports, collected from its thread."""

    def __init__(self) -> None:
        self.all: list[SyncRound] = []
        self.lock = threading.Lock()

    def __call__(self, sync: SyncRound) -> None:
        with self.lock:
            self.all.append(sync)

    def outcomes(self, path: Path, status: str) -> list:
        with self.lock:
            return [o for r in self.all for o in r.report.outcomes if o.source == str(path) and o.status == status]


def start(folder: Path, settings: Settings):
    rounds = Rounds()
    watching = watch_in_thread([folder], settings, on_report=rounds)
    assert watching.sync.caught_up.wait(DEADLINE), "the catch-up did not finish"
    return watching, rounds


def test_added_changed_deleted_files_follow_the_folder(tmp_path):
    watched, other = tmp_path / "watched", tmp_path / "other"
    watched.mkdir()
    other.mkdir()
    (other / "bees.md").write_text(BEES)
    settings = settings_for(watched / "store")  # the store inside the watched folder: its writes start nothing
    ingest([other], settings)
    (other / "bees.md").unlink()  # gone from disk, but another folder's: the watcher must keep it
    service = KnowledgeService(settings)
    watching, rounds = start(watched, settings)
    try:
        kites = watched / "notes" / "kites.md"
        kites.parent.mkdir()
        kites.write_text(KITES)
        (watched / "store" / "stray.md").write_text(GLACIERS)  # in the store's folder
        (watched / ".draft.md").write_text(GLACIERS)  # hidden
        (watched / "notes" / "kites.md.tmp").write_text(GLACIERS)  # not a type kb reads
        wait_for(lambda: found(service, "kite festival in Weifang", "silk dragons"), "the new file in search")

        kites.write_text(KITES_NEW)
        wait_for(lambda: found(service, "lighthouse lamp", "brass lamp"), "the changed text in search")
        assert not found(service, "kite festival in Weifang", "silk dragons")
        assert records(settings)[str(kites)].sha256 == sha256(kites)

        renamed = watched / "notes" / "lighthouse.md"
        kites.rename(renamed)  # a rename: the old name's document removed, the new one's added
        wait_for(lambda: str(renamed) in records(settings), "the renamed file's record")
        assert str(kites) not in records(settings)
        # the round is reported after its writes: wait for the report, not only the record
        wait_for(lambda: rounds.outcomes(kites, "pruned"), "the old name's removal in a round's report")
        assert rounds.outcomes(kites, "pruned")[0].chunks > 0

        renamed.unlink()
        wait_for(lambda: str(renamed) not in records(settings), "the deleted file's record to go")
        assert not found(service, "lighthouse lamp", "brass lamp")
        wait_for(lambda: rounds.outcomes(renamed, "pruned"), "the deletion in a round's report")
        assert rounds.outcomes(renamed, "pruned")[0].chunks > 0
    finally:
        watching.stop()
    stored = records(settings)
    assert str(other / "bees.md") in stored  # another folder's document, file gone or not, is never pruned
    assert not [s for s in stored if "stray" in s or "draft" in s or s.endswith(".tmp")]


def test_burst_of_saves_is_one_round(tmp_path):
    watched = tmp_path / "watched"
    watched.mkdir()
    settings = settings_for(tmp_path / "store")
    watching, rounds = start(watched, settings)
    try:
        note = watched / "bees.md"
        for n in range(10):
            note.write_text(BEES + f"\nSave number {n}.\n")
            time.sleep(0.1)
        wait_for(lambda: str(note) in records(settings), "the saved file's record")
        assert records(settings)[str(note)].sha256 == sha256(note)
        time.sleep(3)  # room for any late round: there must be none beyond the second
    finally:
        watching.stop()
    assert 1 <= len(rounds.outcomes(note, "ingested")) <= 2


def test_file_written_in_pieces_is_read_once_complete(tmp_path):
    watched = tmp_path / "watched"
    watched.mkdir()
    settings = settings_for(tmp_path / "store")
    service = KnowledgeService(settings)
    pieces = ["# Glaciers\n\n", "Glaciers carve deep valleys. ", "The ice grinds slowly down the mountain. ",
              "Meltwater feeds the rivers below. ", "Terminal moraines mark where the glacier stopped.\n"]
    watching, rounds = start(watched, settings)
    try:
        slow = watched / "glaciers.md"
        with open(slow, "w") as handle:
            for piece in pieces:  # about 1.5 s in all, a copy that takes its time
                handle.write(piece)
                handle.flush()
                time.sleep(0.3)
        wait_for(lambda: str(slow) in records(settings), "the file's record")
        time.sleep(3)  # room for a second, wrong, round
    finally:
        watching.stop()
    assert len(rounds.outcomes(slow, "ingested")) == 1
    assert records(settings)[str(slow)].sha256 == sha256(slow)
    assert found(service, "terminal moraine where the glacier stopped", "Terminal moraines")


def test_failed_rounds_are_reported_and_the_watch_goes_on(tmp_path):
    watched = tmp_path / "watched"
    watched.mkdir()
    settings = Settings(chroma_path=tmp_path / "store", lock_wait=0)  # a busy store fails at once
    watching, rounds = start(watched, settings)
    try:
        broken = watched / "broken.pdf"
        broken.write_bytes(b"%PDF-1.7\nnot really")
        wait_for(lambda: rounds.outcomes(broken, "failed"), "the bad file's failure")
        assert "not a readable PDF" in rounds.outcomes(broken, "failed")[0].reason

        busy = watched / "bees.md"
        with write_lock(settings):  # another writer (kb ingest, the UI) holds the store
            busy.write_text(BEES)
            wait_for(lambda: rounds.outcomes(busy, "failed"), "the busy store's failure")
        reason = rounds.outcomes(busy, "failed")[0].reason
        assert "busy" in reason and "tries again" in reason
        wait_for(lambda: str(busy) in records(settings), "the file of the failed round, tried again")

        fine = watched / "kites.md"
        fine.write_text(KITES)
        wait_for(lambda: str(fine) in records(settings), "a later file's record")
    finally:
        watching.stop()
    assert str(broken) not in records(settings)


def test_restart_catches_up_offline_changes_and_leaves_other_folders(tmp_path):
    watched, other = tmp_path / "watched", tmp_path / "other"
    watched.mkdir()
    other.mkdir()
    settings = settings_for(tmp_path / "store")
    (other / "glaciers.md").write_text(GLACIERS)
    ingest([other], settings)
    (other / "glaciers.md").unlink()
    kept, changed, deleted = watched / "kept.md", watched / "changed.md", watched / "deleted.md"
    kept.write_text(BEES)
    changed.write_text(KITES)
    deleted.write_text(GLACIERS.replace("Glaciers", "Ice sheets"))
    watching, rounds = start(watched, settings)
    watching.stop()
    assert {o.source for o in rounds.all[0].report.of("ingested")} == {str(kept), str(changed), str(deleted)}

    added = watched / "sub" / "added.md"  # while no watcher runs
    added.parent.mkdir()
    added.write_text(KITES_NEW)
    changed.write_text(KITES.replace("silk dragons", "nylon octopuses"))
    deleted.unlink()
    watching, rounds = start(watched, settings)
    watching.stop()
    [catch_up] = rounds.all
    assert catch_up.catch_up
    assert {o.source for o in catch_up.report.of("ingested")} == {str(added), str(changed)}
    assert {o.source for o in catch_up.report.of("unchanged")} == {str(kept)}
    assert {o.source for o in catch_up.report.of("pruned")} == {str(deleted)}
    stored = records(settings)
    assert set(stored) == {str(kept), str(changed), str(added), str(other / "glaciers.md")}
    assert stored[str(changed)].sha256 == sha256(changed)


def test_kb_watch_command_syncs_and_stops_on_ctrl_c(tmp_path):
    watched = tmp_path / "docs"
    watched.mkdir()
    (watched / "bees.md").write_text(BEES)
    process = subprocess.Popen([KB, "watch", "docs", "--chroma-path", str(tmp_path / "store")], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "COLUMNS": "200"})
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=lambda: [*map(lines.put, process.stdout), lines.put(None)], daemon=True)
    reader.start()
    seen: list[str] = []

    def line_with(text: str) -> str:
        """The next line of the command's output with `text` in it."""
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r}: " + "".join(seen))

    try:
        assert "1 ingested" in line_with("ingested, 0 unchanged")
        line_with("watching docs for changes")
        (watched / "kites.md").write_text(KITES)
        assert "chunks" in line_with("docs/kites.md")
        (watched / "bees.md").unlink()
        assert "removed" in line_with("docs/bees.md")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=DEADLINE) == 130
        assert "run the same command again" in line_with("stopped")
        assert "Traceback" not in "".join(seen)
    finally:
        if process.poll() is None:
            process.kill()
