import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ingest.errors import StoreBusyError
from ingest.lock import write_lock
from ingest.pipeline import ingest
from ingest.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
KB = str(Path(sys.executable).parent / "kb")

HOLDER = textwrap.dedent("""
    import sys, time
    from ingest.lock import write_lock
    from ingest.settings import load_settings
    with write_lock(load_settings(chroma_path=sys.argv[1])):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _hold(store: Path, seconds: float) -> subprocess.Popen:
    """Another process writing to the store, as far as the lock can tell: it holds it for `seconds`."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(store), str(seconds)], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "held"
    return holder


def _kb_ingest(corpus: Path, store: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([KB, "ingest", str(corpus), "--chroma-path", str(store), "--json", *flags],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_a_busy_store_is_a_clear_message_naming_the_writer(corpus, store):
    holder = _hold(store, 120)
    try:
        done = _kb_ingest(corpus, store, "--lock-wait", "0")
        assert done.returncode == 2
        message = " ".join(done.stderr.split())
        assert "is busy" in message and f"pid {holder.pid}" in message and "Traceback" not in done.stderr
        with pytest.raises(StoreBusyError, match="still busy after 1 s"):
            ingest([corpus], load_settings(chroma_path=store, lock_wait=1))
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_dies_with_its_holder_even_by_kill_9(store):
    holder = _hold(store, 120)
    settings = load_settings(chroma_path=store)
    with pytest.raises(StoreBusyError):
        with write_lock(settings, wait=0):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with write_lock(settings, wait=0):  # no stale lock left to clear by hand
        pass


@pytest.mark.slow
def test_ingest_waits_for_the_writer_then_runs(corpus, store):
    _hold(store, 15)  # long enough to still hold it when kb, started after, reaches the store
    done = _kb_ingest(corpus, store, "--lock-wait", "120")
    assert done.returncode == 0, done.stderr
    assert "busy: waiting up to 120 s" in " ".join(done.stderr.split())
    assert json.loads(done.stdout)["ingested"] == 8


@pytest.mark.slow
def test_two_ingests_at_once_both_succeed_and_store_everything_once(corpus, store, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    for number in range(5):
        (extra / f"note-{number}.md").write_text(f"# Note {number}\n\nA separate note about topic {number}.\n")
    first = subprocess.Popen([KB, "ingest", str(corpus), "--chroma-path", str(store), "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    second = _kb_ingest(extra, store)
    out, errors = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, errors + second.stderr
    reports = [json.loads(out), json.loads(second.stdout)]
    from ingest.knowledge_base import KnowledgeBase

    kb = KnowledgeBase.open(load_settings(chroma_path=store))
    assert len(kb.documents()) == 13
    assert kb.count() == sum(r["chunks"] for r in reports)
    assert os.path.exists(store / ".kb-write.lock")
