"""`python -m bench.serve --quick --json`: a real `kb serve` on the sample corpus under 1 and 2 concurrent
clients; the report's structure and its figures' sanity (no timed assertions)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench-serve")
    done = subprocess.run([sys.executable, "-m", "bench.serve", "--quick", "--json", "--work", str(work)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    # 1: the report is out, but some requests failed (which the tests below say); 2: there was no report.
    assert done.returncode in (0, 1), done.stderr[-3000:] + (work / "serve.log").read_text()[-3000:]
    return json.loads(done.stdout)


def test_the_corpus_is_the_sample(report):
    corpus = report["corpus"]
    assert corpus["name"] == "sample"
    assert corpus["documents"] == 8 and corpus["chunks"] > 8
    assert corpus["failed_files"] == 0


def test_every_round_answered_every_request(report):
    rest = [row for row in report["runs"] if row["api"] == "rest"]
    assert [(row["mode"], row["clients"]) for row in rest] == [("dense", 1), ("dense", 2)]
    for row in report["runs"]:
        assert row["errors"] == 0, row  # two clients at once must not break the server
        assert row["requests"] > 0 and row["qps"] > 0
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]


def test_the_time_is_accounted_for(report):
    for row in (row for row in report["runs"] if row["api"] == "rest"):
        assert row["requests"], row  # no answer, nothing to account for (the test above says why)
        assert set(row["stages_ms"]) == {"embed", "dense"}  # dense mode: no BM25, no fusion
        # A repeated question's vector comes from the query cache: its embed stage can round to 0 ms.
        assert row["stages_ms"]["dense"] > 0 and row["stages_ms"]["embed"] >= 0
        # The server's stages happen within its own time, which happens within the client's.
        assert sum(row["stages_ms"].values()) <= row["server_ms"] <= row["mean_ms"]
        assert row["rest_ms"] == pytest.approx(row["mean_ms"] - sum(row["stages_ms"].values()), abs=0.2)
        assert set(row["shares"]) == {"embed", "dense", "rest"}
        assert all(0 <= share <= 1 for share in row["shares"].values())
        assert sum(row["shares"].values()) == pytest.approx(1, abs=0.01)


def test_mcp_is_measured_or_said_why_not(report):
    mcp = [row for row in report["runs"] if row["api"] == "mcp"]
    if report["mcp_skipped"] is None:
        assert [row["clients"] for row in mcp] == [1]
    else:
        assert mcp == [] and "/mcp" in report["mcp_skipped"]
