"""kill -9 of `kb ingest` at random moments, again and again: the store never shows a document as complete
while part of it is missing, and the run after the last kill leaves exactly what one clean run leaves."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.servers import SimulatedServer
from tests.rigs.servers import stop

ROOT = Path(__file__).resolve().parent.parent
KB = str(Path(sys.executable).parent / "kb")
KILLS = 20
WORDS = ("river stone lantern harvest copper meadow signal orchard glacier ember violet harbor quartz thistle "
         "compass ledger falcon prism cedar tundra").split()


def _paragraph(rng: random.Random, tag: str) -> str:
    # Every paragraph names its file and place: no two chunks share a text (or a vector).
    return f"[{tag}] " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90))) + "."


def _write_corpus(root: Path, rng: random.Random, files: int = 40, big: bool = False) -> None:
    root.mkdir(parents=True)
    for number in range(files):
        kind = ("txt", "md")[number % 2]
        body = "\n\n".join(_paragraph(rng, f"f{number}p{p}") for p in range(rng.randint(6, 14)))
        (root / f"doc-{number:02d} notes.{kind}").write_text(f"# Document {number}\n\n{body}\n")
    if big:  # over 512 chunks: stored in parts, its record with the last
        body = "\n\n".join(_paragraph(rng, f"bigp{p}") for p in range(900))
        (root / "big report.md").write_text(f"# Big report\n\n{body}\n")


def _edit_some(root: Path, rng: random.Random, round_: int) -> None:
    """Change a few files between runs, so every run has work and old versions must give way."""
    for path in rng.sample(sorted(root.iterdir()), 4):
        with path.open("a") as handle:
            handle.write("\n\n" + _paragraph(rng, f"{path.stem}r{round_}") + "\n")


def _ingest(corpus: Path, store: Path, server: SimulatedServer, log: Path) -> subprocess.Popen:
    command = [KB, "ingest", str(corpus), "--endpoint", server.url, "--model", server.model, "--tokenizer", "qwen3",
               "--chroma-path", str(store), "--chunk-tokens", "128", "--overlap", "16", "--json"]
    with log.open("ab") as sink:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sink, cwd=ROOT)


def _look(store: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "tests.storecheck", str(store), "knowledge"], capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def _assert_consistent(seen: dict, when: str) -> None:
    for source, (sha, chunks) in seen["records"].items():
        # A record is written after every chunk it vouches for: never one whose chunks are not all there.
        assert seen["chunks"].get(f"{source}|{sha}", 0) == chunks, f"{when}: {source} recorded incomplete"
    assert seen["repeated_positions"] == 0, f"{when}: a chunk stored twice"
    assert seen["unfound_by_vector"] == [], f"{when}: the vector index lost chunks the records have"


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    # Slow enough that a run lasts several seconds, so kills land in every stage.
    with SimulatedServer("0.6b", speed=0.15, log=tmp_path_factory.mktemp("sim") / "sim.log") as server:
        yield server


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(tmp_path, slow_server):
    rng = random.Random(20261123)
    corpus, store, log = tmp_path / "corpus", tmp_path / "chroma", tmp_path / "kb.log"
    _write_corpus(corpus, rng, big=True)
    # How long one whole run takes here (startup, parsing, embedding, writes): kills land anywhere in it.
    started = time.monotonic()
    calibration = _ingest(corpus, tmp_path / "calibration", slow_server, log)
    calibration.communicate(timeout=600)
    assert calibration.returncode == 0, log.read_text()[-3000:]
    whole = window = time.monotonic() - started
    kills = finished = 0
    moments, stored = [], []
    while kills < KILLS:
        assert kills + finished < 3 * KILLS, "the runs keep finishing before the kill: the test lost its point"
        started = time.monotonic()
        process = _ingest(corpus, store, slow_server, log)
        moment = rng.uniform(0.3, window)
        try:
            process.wait(moment)
            window = 1.2 * (time.monotonic() - started)  # what a run with this much to do takes now
            finished += 1
            assert process.returncode == 0, log.read_text()[-3000:]
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            window = min(1.3 * window, 2 * whole)  # work piles up while runs are killed: reach further in
            kills += 1
            moments.append(round(moment, 1))
        process.stdout.close()
        seen = _look(store)
        _assert_consistent(seen, f"after kill {kills} at {moment:.1f} s")
        stored.append(len(seen["records"]))
        _edit_some(corpus, rng, kills + finished)

    final = _ingest(corpus, store, slow_server, log)
    report = json.loads(final.communicate(timeout=600)[0])
    assert final.returncode == 0, log.read_text()[-3000:]
    print(f"records after each run: {stored}; "
          f"final run: {report['unchanged']} unchanged, {report['ingested']} ingested")
    assert report["unchanged"] > 0  # what earlier runs stored is not embedded again
    after = _look(store)
    _assert_consistent(after, "after the last run")

    reference = tmp_path / "reference"
    clean = _ingest(corpus, reference, slow_server, log)
    clean.communicate(timeout=600)
    assert clean.returncode == 0
    expected = _look(reference)
    # Exactly what one clean run stores: the same chunks, texts and records; nothing lost, nothing extra.
    assert after["ids"] == expected["ids"] and after["texts"] == expected["texts"]
    assert after["records"] == expected["records"]
    files = {str(p) for p in corpus.iterdir()}
    assert set(after["records"]) == files
    print(f"a whole run: {whole:.1f} s; {kills} kills at {sorted(moments)} s; "
          f"{finished} runs finished before their kill; records {stored}")


@pytest.mark.slow
def test_a_server_that_dies_mid_run_and_comes_back_loses_nothing(tmp_path):
    """The embedding server is killed while requests are in flight and restarted on the same port a few
    seconds later: the run retries through the outage and stores every chunk exactly once."""
    from ingest.pipeline import ingest
    from ingest.settings import load_settings

    corpus, store = tmp_path / "corpus", tmp_path / "chroma"
    _write_corpus(corpus, random.Random(5))
    first = SimulatedServer("0.6b", speed=0.15, log=tmp_path / "first.log")
    settings = load_settings(endpoint=[first.url], model=first.model, tokenizer="qwen3", chroma_path=store,
                             chunk_tokens=128, overlap=16)
    result: dict = {}
    run = threading.Thread(target=lambda: result.update(report=ingest([corpus], settings)))
    run.start()
    deadline = time.monotonic() + 300
    while first.stats()["requests"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.process.kill()  # mid-run, requests in flight
    first.close()
    time.sleep(3)
    with SimulatedServer("0.6b", speed=0.15, log=tmp_path / "second.log", port=first.port) as second:
        run.join(600)
        assert second.stats()["requests"] > 0  # the rest of the work went to the restarted server
    report = result["report"]
    assert report.ok, [o.reason for o in report.of("failed")]
    assert report.stats.retries > 0 and len(report.of("ingested")) == 40
    seen = _look(store)
    _assert_consistent(seen, "after the outage")
    assert len(seen["ids"]) == sum(seen["chunks"].values()) == report.chunks and len(seen["records"]) == 40


UI_KILLS = 4
UI_FILES = 12


def _start_ui(work: Path, server: SimulatedServer) -> tuple[subprocess.Popen, str]:
    from tests.rigs.servers import free_port, start_server, wait_http

    port = free_port()
    env = {**os.environ, "KB_CHROMA_PATH": str(work / "chroma"), "KB_UPLOAD_DIR": str(work / "uploads"),
           "KB_ENDPOINT": server.url, "KB_MODEL": server.model, "KB_TOKENIZER": "qwen3", "KB_CHUNK_TOKENS": "128",
           "KB_OVERLAP": "16"}
    log = work / f"streamlit-{port}.log"
    process = start_server([sys.executable, "-m", "streamlit", "run", str(ROOT / "kb_app" / "app.py"),
                            "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
                            "--browser.gatherUsageStats", "false"], log, env=env, cwd=work)
    wait_http(f"http://127.0.0.1:{port}/_stcore/health", process, log=log)
    return process, f"http://127.0.0.1:{port}"


def _upload(browser, url: str, files: list[Path]):
    from tests.test_ui_browser import open_page

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    page.goto(url)
    page.get_by_test_id("stSidebar").wait_for()
    open_page(page, "Upload")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(f) for f in files])
    page.get_by_role("button", name=f"Ingest {len(files)} files").click()
    return page


@pytest.mark.browser
def test_kill_9_of_the_ui_during_an_upload_loses_and_duplicates_nothing(tmp_path, slow_server):
    """The browser's upload, with the Streamlit server killed mid-ingest (its files half-saved, its
    chunks half-written): the store stays consistent after every kill, and uploading again completes it."""
    from playwright.sync_api import sync_playwright

    from tests.rigs.browser import CHROMIUM

    rng = random.Random(11)
    corpus, work = tmp_path / "corpus", tmp_path / "ui"
    work.mkdir()
    _write_corpus(corpus, rng, files=UI_FILES)
    files = sorted(corpus.iterdir())
    store = work / "chroma"
    kills, moments = 0, []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox",
                                             "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        try:
            # A whole upload, timed: the kills land anywhere in one.
            ui, url = _start_ui(work, slow_server)
            started = time.monotonic()
            page = _upload(browser, url, files)
            page.get_by_text(f"Done: {UI_FILES} files.").wait_for(timeout=600_000)
            whole = time.monotonic() - started
            page.close()
            ui.send_signal(signal.SIGKILL)
            ui.wait()
            while kills < UI_KILLS:
                _edit_some(corpus, rng, kills)
                ui, url = _start_ui(work, slow_server)
                page = _upload(browser, url, files)
                moment = rng.uniform(0.5, whole)
                time.sleep(moment)
                ui.send_signal(signal.SIGKILL)
                ui.wait()
                page.close()
                kills += 1
                moments.append(round(moment, 1))
                _assert_consistent(_look(store), f"after UI kill {kills} at {moment:.1f} s")

            ui, url = _start_ui(work, slow_server)
            page = _upload(browser, url, files)
            page.get_by_text(f"Done: {UI_FILES} files.").wait_for(timeout=600_000)
            page.close()
            stop(ui)
        finally:
            browser.close()

    after = _look(store)
    _assert_consistent(after, "after the last upload")
    uploads = work / "uploads"
    assert set(after["records"]) == {str(uploads / f.name) for f in files}
    for f in files:  # each record is the file's last version, and the saved copy is that version whole
        assert (uploads / f.name).read_bytes() == f.read_bytes()
    # Exactly what one clean `kb ingest` of the same files stores.
    reference = tmp_path / "reference"
    clean = _ingest(uploads, reference, slow_server, tmp_path / "reference.log")
    clean.communicate(timeout=600)
    assert clean.returncode == 0
    expected = _look(reference)
    assert after["ids"] == expected["ids"] and after["texts"] == expected["texts"]
    assert after["records"] == expected["records"]
    print(f"a whole upload: {whole:.1f} s; {kills} kills at {sorted(moments)} s")
