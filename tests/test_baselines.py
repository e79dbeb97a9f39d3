"""The comparison baselines, the corpus fetcher and the PDF pages/s bench: real simulated server, real Chroma,
real Debian package (no timed assertions: counts and accounting only)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pypdf import PdfReader

from bench import baselines, corpus
from bench.pdf_pages import measure
from bench.servers import SimulatedServer
from ingest.tokens import qwen3_counter
from tests.conftest import DATA, ROOT

PDFS = [DATA / "en" / "volcanoes.pdf", ROOT / "tests" / "data" / "lighthouses.pdf"]


@pytest.fixture(scope="module")
def simulated():
    with SimulatedServer("4b", dim=32) as server:
        yield server


@pytest.mark.parametrize("pipeline", ["langchain", "recipe"])
@pytest.mark.slow
def test_baseline_stores_every_chunk_once(pipeline, simulated, tmp_path):
    files = baselines.corpus_files([DATA])
    assert {f.suffix for f in files} == {".html", ".md", ".pdf", ".rst", ".txt"}
    simulated.reset()
    chunks, count, stages = baselines.RUNNERS[pipeline](files, simulated.url, simulated.model, tmp_path / "chroma")
    assert chunks > len(files) and count() == chunks
    assert all(seconds >= 0 for seconds in stages.values())
    # The server saw every chunk once: its token count is the chunks' own (Qwen3 + the appended EOS).
    expected = baselines.load_and_split(files)
    counter = qwen3_counter()
    assert len(expected) == chunks
    stats = simulated.stats()
    assert stats["inputs"] == chunks
    assert stats["tokens"] == sum(counter.count(c.page_content) for c in expected)
    # The splitter bounds chunks in Qwen3 tokens, as configured.
    assert max(counter.count_raw(c.page_content) for c in expected) <= baselines.CHUNK_TOKENS
    # LangChain sends 1,000 inputs a request (one request here); the recipe batches of 10.
    assert stats["requests"] == (1 if pipeline == "langchain" else -(-chunks // 10))


def test_loaders_read_each_type_as_langchain_does():
    html = baselines.load_file(DATA / "en" / "coffee-brewing.html")
    assert len(html) == 1 and "<" not in html[0][0] and html[0][1]["title"]
    pdf = baselines.load_file(DATA / "en" / "volcanoes.pdf")
    assert len(pdf) == len(PdfReader(DATA / "en" / "volcanoes.pdf").pages)
    assert [meta["page"] for _, meta in pdf] == list(range(len(pdf)))  # PyPDFLoader's 0-based pages
    text = baselines.load_file(DATA / "zh" / "giant-panda.txt")
    assert text[0][0] == (DATA / "zh" / "giant-panda.txt").read_text(encoding="utf-8")


@pytest.mark.slow
def test_compare_runs_all_three_against_one_server(tmp_path):
    seen = []
    result = baselines.compare([DATA], dim=32, logs=tmp_path, on_run=seen.append)
    assert [r.pipeline for r in result.runs] == ["kb", "langchain", "recipe"] == [r.pipeline for r in seen]
    assert result.corpus["files"] == 8 and result.server["model"] == "Qwen/Qwen3-Embedding-4B"
    for run in result.runs:
        assert run.files == 8 and run.vectors == run.chunks > 8
        assert run.tokens > 0 and run.requests > 0 and run.seconds > 0 and run.cpu_seconds > 0
        assert 0 < run.share_of_capacity <= 1
        assert run.tokens_per_s == round(run.tokens / run.seconds)
    assert set(result.ratios) == {"kb/langchain tokens/s", "langchain/kb wall time",
                                  "kb/recipe tokens/s", "recipe/kb wall time"}
    assert all(ratio > 0 for ratio in result.ratios.values())
    assert set(result.summary) == {"kb", "langchain", "recipe"}
    assert (tmp_path / "kb-0.log").exists()  # each child's output is kept with `logs`
    json.dumps(result.to_dict())


@pytest.mark.slow
def test_compare_rotates_the_order_each_round():
    result = baselines.compare([DATA / "zh"], pipelines=["kb", "recipe"], repeat=2, dim=16)
    assert [(r.pipeline, r.round) for r in result.runs] == [("kb", 0), ("recipe", 0), ("recipe", 1), ("kb", 1)]
    kb_runs = [r for r in result.runs if r.pipeline == "kb"]
    assert kb_runs[0].chunks == kb_runs[1].chunks and kb_runs[0].tokens == kb_runs[1].tokens
    assert set(result.ratios) == {"kb/recipe tokens/s", "recipe/kb wall time"}


def test_compare_refuses_unknown_pipelines():
    with pytest.raises(ValueError, match="unknown pipelines"):
        baselines.compare([DATA], pipelines=["kb", "haystack"])


@pytest.mark.slow
def test_bench_run_compare_cli_json():
    done = subprocess.run([sys.executable, "-m", "bench.run", str(DATA / "zh"), "--compare", "--dim", "16", "--json"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [r["pipeline"] for r in result["runs"]] == ["kb", "langchain", "recipe"]
    assert all(r["vectors"] == r["chunks"] > 0 for r in result["runs"])


@pytest.mark.network
def test_fetch_a_real_debian_package(tmp_path, monkeypatch):
    monkeypatch.setitem(corpus.CORPORA, "tiny", [("debian-reference-en", "usr/share/debian-reference")])
    folders = corpus.fetch("tiny", cache=tmp_path)
    assert folders == [tmp_path / "packages" / "debian-reference-en" / "usr" / "share" / "debian-reference"]
    described = corpus.describe(folders)
    assert described["by_type"][".html"] >= 10 and described["bytes"] > 100_000
    version = corpus.versions("tiny", cache=tmp_path)["debian-reference-en"]
    assert version
    assert not list((tmp_path / "packages").glob(".*"))  # no download or scratch folder left behind

    # Idempotent: the second call neither downloads nor unpacks.
    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(corpus.subprocess, "run", no_subprocess)
    assert corpus.fetch("tiny", cache=tmp_path) == folders
    with pytest.raises(corpus.CorpusError, match="unknown corpus"):
        corpus.fetch("nope", cache=tmp_path)


@pytest.mark.network
def test_fetch_reports_a_package_apt_does_not_know(tmp_path, monkeypatch):
    monkeypatch.setitem(corpus.CORPORA, "missing", [("kb-no-such-package-xyz", "usr/share/doc")])
    with pytest.raises(corpus.CorpusError, match="apt-get download kb-no-such-package-xyz failed"):
        corpus.fetch("missing", cache=tmp_path)


def test_named_corpora_point_at_doc_folders():
    assert set(corpus.CORPORA) >= {"docs", "python-library", "pdf"}
    assert corpus.CORPORA["python-library"] == [("python3.11-doc", "usr/share/doc/python3.11/html/library")]
    assert [package for package, _ in corpus.CORPORA["docs"]][:2] == ["python3.11-doc", "postgresql-doc-15"]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.slow
def test_pdf_pages_counts_every_page(workers):
    run = measure(PDFS, workers)
    assert run.workers == workers and run.files == 2 and run.failed_files == 0
    assert run.pages == sum(len(PdfReader(p).pages) for p in PDFS)
    assert 0 < run.text_pages <= run.pages and run.seconds > 0 and run.pages_per_s > 0
    assert sorted(Path(d.source).name for d in run.files_detail) == sorted(p.name for p in PDFS)


def test_pdf_pages_reports_a_broken_file(tmp_path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nnot really a pdf")
    run = measure([broken, PDFS[0]], 1)
    assert run.files == 2 and run.failed_files == 1
    failed = [d for d in run.files_detail if d.failed]
    assert failed[0].source == str(broken) and "PDF" in failed[0].failed


def test_bench_run_pdf_pages_cli():
    done = subprocess.run([sys.executable, "-m", "bench.run", *map(str, PDFS), "--pdf-pages", "--workers", "1",
                           "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)
    assert len(runs) == 1 and runs[0]["workers"] == 1 and runs[0]["pages"] > 0


def test_the_peers_chunk_as_kbs_bench_does():
    from kb_app.benchmark import BENCH_CHUNKING

    assert (baselines.CHUNK_TOKENS, baselines.OVERLAP) == (BENCH_CHUNKING["chunk_tokens"], BENCH_CHUNKING["overlap"])
