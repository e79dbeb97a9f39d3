"""A Chroma server behind a token-checking proxy (nginx, as Chroma 1.x is deployed): kb sends the token
from KB_CHROMA_TOKEN, says clearly when it is missing or refused, and never prints it."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ingest.client import make_client
from ingest.errors import StoreError
from ingest.knowledge_base import KnowledgeBase
from ingest.settings import load_settings
from tests.conftest import BIN
from tests.rigs.tokenproxy import TokenProxy

TOKEN = "s3cret-Tok3n-for-chroma"


@pytest.fixture(scope="module")
def guarded(chroma_server, tmp_path_factory):
    with TokenProxy(chroma_server, TOKEN, tmp_path_factory.mktemp("nginx")) as proxy:
        yield proxy.url


def kb(*args: str, env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    return subprocess.run([str(BIN / "kb"), *args], capture_output=True, text=True, env={**clean, **env},
                          cwd=cwd, timeout=600)


@pytest.mark.slow
def test_ingest_and_search_through_the_proxy_with_the_token(guarded, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "solar.md").write_text("# Solar panels\n\nPhotovoltaic cells turn sunlight into electric current.\n")
    (docs / "bread.md").write_text("# Bread\n\nYeast makes the dough rise before it is baked in the oven.\n")
    env = {"KB_CHROMA_URL": guarded, "KB_CHROMA_TOKEN": TOKEN, "KB_COLLECTION": "guarded"}

    ingested = kb("ingest", str(docs), env=env, cwd=tmp_path)
    assert ingested.returncode == 0, ingested.stderr
    found = kb("search", "how do solar cells make electricity?", "--json", env=env, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["source"].endswith("solar.md")
    status = kb("status", "--json", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert {row["collection"]: row["documents"] for row in json.loads(status.stdout)}["guarded"] == 2
    for run in (ingested, found, status):
        assert TOKEN not in run.stdout + run.stderr

    # The proxy really checks: the same collection without the token is refused.
    refused = kb("status", env={"KB_CHROMA_URL": guarded}, cwd=tmp_path)
    assert refused.returncode == 2
    said = " ".join(refused.stderr.split())
    assert "refused kb's request (not authorised): no token is set" in said and "Set KB_CHROMA_TOKEN" in said


def test_a_wrong_token_is_refused_without_being_shown(guarded, tmp_path):
    wrong = "wrong-token-XYZ-123"
    result = kb("status", env={"KB_CHROMA_URL": guarded, "KB_CHROMA_TOKEN": wrong}, cwd=tmp_path)
    assert result.returncode == 2
    assert "the token given was refused" in " ".join(result.stderr.split())
    assert wrong not in result.stdout + result.stderr
    with pytest.raises(StoreError, match="was refused") as raised:
        KnowledgeBase.open(load_settings(chroma_url=guarded, chroma_token=wrong, collection="x-wrong"))
    assert wrong not in str(raised.value)


def test_the_x_chroma_token_header(chroma_server, tmp_path):
    with TokenProxy(chroma_server, TOKEN, tmp_path / "nginx", header="X-Chroma-Token") as proxy:
        settings = load_settings(chroma_url=proxy.url, chroma_token=TOKEN, chroma_token_header="X-Chroma-Token")
        assert isinstance(make_client(settings).list_collections(), list)
        with pytest.raises(StoreError, match="was refused"):
            # The Bearer form is not what this proxy checks.
            KnowledgeBase.open(load_settings(chroma_url=proxy.url, chroma_token=TOKEN, collection="x-bearer"))


def test_settings_never_show_secrets():
    settings = load_settings(api_key="k-1", chroma_token=TOKEN, ui_password="pw-123")
    shown = str(settings.public_dict()) + repr(settings) + str(settings)
    for secret in ("k-1", TOKEN, "pw-123"):
        assert secret not in shown
    assert settings.public_dict()["chroma_token"] == "set"


def test_a_token_refused_after_the_store_was_opened_says_so(chroma_server, tmp_path, monkeypatch):
    """The token changes on the proxy while a handle is held (a long-lived UI): kb says the token was
    refused and names the server, where it used to answer that the collection does not exist."""
    from kb_app.search import Searcher
    from tests.rigs import tokenproxy

    with TokenProxy(chroma_server, TOKEN, tmp_path / "before") as proxy:
        settings = load_settings(chroma_url=proxy.url, chroma_token=TOKEN, collection="rotated")
        held = KnowledgeBase.open(settings)
        assert not held.exists()  # reachable, and really not there
    monkeypatch.setattr(tokenproxy, "free_port", lambda: proxy.port)  # the same address, another token
    with TokenProxy(chroma_server, "the-new-token", tmp_path / "after"):
        for attempt in (held.exists, lambda: Searcher(settings, kb=held)):
            with pytest.raises(StoreError, match=f"Chroma server at {proxy.url} refused kb's request") as raised:
                attempt()
            said = str(raised.value)
            assert "the token given was refused" in said and TOKEN not in said
            assert "ingest documents first" not in said
