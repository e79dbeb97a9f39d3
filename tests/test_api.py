"""`kb serve` as a client meets it: a real uvicorn server (the `kb serve` command) over the sample corpus on the
embedded model, driven over HTTP with httpx: REST, Dify's external knowledge API, auth, uploads and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import httpx
import pytest

from kb_app.api.dify import Condition, MetadataCondition, matches
from kb_app.cli.serving import is_loopback
from kb_app.search import SearchResult
from tests.conftest import DATA
from tests.rigs.servers import free_port, start_server, stop, wait_http
from tests.test_cli import KB, kb

TOKEN = "test-token-4f9c2a"
SOLAR_ZH = "太阳能电池板是怎样把阳光变成电的？"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`kb serve` on the sample corpus, with a token and small upload limits; yields (base URL, work folder)."""
    work = tmp_path_factory.mktemp("serve")
    shutil.copytree(DATA, work / "data", ignore=shutil.ignore_patterns("chroma"))
    kb("ingest", "data/", cwd=work, check=0)
    port = free_port()
    env = {**os.environ, "KB_API_TOKEN": TOKEN, "KB_UPLOAD_DIR": str(work / "uploads"), "KB_MAX_UPLOAD_MB": "1",
           "KB_MAX_UPLOAD_FILES": "3"}
    log = work / "serve.log"
    process = start_server([KB, "serve", "--port", str(port)], log, env=env, cwd=work)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process, log=log)
        yield f"http://127.0.0.1:{port}", work
    finally:
        stop(process)
    assert TOKEN not in log.read_text()  # never logged


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as client:
        yield client


@pytest.mark.slow
def test_health_is_open_and_everything_else_asks_for_the_token(server, client):
    url = server[0]
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    missing = httpx.get(f"{url}/v1/collections")
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]
    wrong = httpx.get(f"{url}/v1/collections", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "not KB_API_TOKEN" in wrong.json()["error"]
    assert httpx.get(f"{url}/openapi.json").status_code == 401
    spec = client.get("/openapi.json").json()
    assert {"/v1/search", "/v1/collections", "/v1/documents", "/retrieval"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


@pytest.mark.slow
def test_collections_say_what_kb_status_says(server, client):
    [knowledge] = client.get("/v1/collections").json()["collections"]
    status = json.loads(kb("status", "--json", cwd=server[1], check=0).stdout)
    assert knowledge == status[0] and knowledge["documents"] == 8


@pytest.mark.slow
def test_a_chinese_question_finds_the_english_passage_with_kb_search_fields(client, server):
    answer = client.post("/v1/search", json={"query": SOLAR_ZH, "k": 3}).json()
    first = answer["results"][0]
    assert first["source"].endswith("data/en/solar-power.md") and first["rank"] == 1
    cli = json.loads(kb("search", SOLAR_ZH, "-k", "3", "--json", cwd=server[1], check=0).stdout)
    assert [r["chunk_id"] for r in answer["results"]] == [r["chunk_id"] for r in cli]
    assert set(cli[0]) <= set(first)  # every field of kb search --json
    assert answer["latency_ms"] > 0 and "embed" in answer["timings_ms"]
    hybrid = client.post("/v1/search", json={"query": SOLAR_ZH, "mode": "hybrid", "k": 2}).json()
    assert hybrid["mode"] == "hybrid" and hybrid["results"][0]["fused_score"] is not None
    only_pdf = client.post("/v1/search", json={"query": SOLAR_ZH, "where": {"file_type": "pdf"}}).json()
    assert only_pdf["results"] and {r["file_type"] for r in only_pdf["results"]} == {"pdf"}


@pytest.mark.slow
@pytest.mark.parametrize(("body", "content_type", "status", "words"), [
    (b"{not json", "application/json", 422, "JSON"),
    (json.dumps({"query": "volcano"}).encode(), "text/plain", 422, "invalid request"),
    (json.dumps({"query": ""}).encode(), "application/json", 422, "query"),
    (json.dumps({"query": "   "}).encode(), "application/json", 422, "the query is empty"),
    (json.dumps({"query": "x" * 100_000}).encode(), "application/json", 422, "at most 10000 characters"),
    (json.dumps({"query": "volcano", "k": 0}).encode(), "application/json", 422, "greater than or equal to 1"),
    (json.dumps({"query": "volcano", "k": 10_000}).encode(), "application/json", 422, "less than or equal to 100"),
    (json.dumps({"query": "volcano", "collection": "nope"}).encode(), "application/json", 404, "no collection 'nope'"),
    (json.dumps({"query": "volcano", "mode": "fuzzy"}).encode(), "application/json", 422, "mode"),
    (json.dumps({"query": "volcano", "colection": "x"}).encode(), "application/json", 422, "colection"),
    (json.dumps({"query": "volcano", "where": "file_type=pdf"}).encode(), "application/json", 422, "where"),
    (json.dumps(["volcano"]).encode(), "application/json", 422, "invalid request"),
    (json.dumps({"query": "volcano", "where": {"$bogus": 1}}).encode(), "application/json", 422, "$bogus is not"),
    (json.dumps({"query": "volcano", "where": {"page": {"$near": 1}}}).encode(), "application/json", 422, "$gte"),
])
def test_bad_searches_are_4xx_with_a_message(client, body, content_type, status, words):
    answer = client.post("/v1/search", content=body, headers={"content-type": content_type})
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"] and "Traceback" not in answer.text


@pytest.mark.slow
def test_dify_retrieval_contract(server, client):
    ask = {"knowledge_id": "knowledge", "query": SOLAR_ZH, "retrieval_setting": {"top_k": 3, "score_threshold": 0.0}}
    records = client.post("/retrieval", json=ask).json()["records"]
    assert len(records) == 3 and records[0]["metadata"]["path"].endswith("solar-power.md")
    assert all(set(r) == {"content", "score", "title", "metadata"} and isinstance(r["metadata"], dict)
               for r in records)
    assert records[0]["score"] >= records[1]["score"] > 0
    high = {**ask, "retrieval_setting": {"top_k": 3, "score_threshold": 0.99}}
    assert client.post("/retrieval", json=high).json() == {"records": []}
    chinese = {**ask, "metadata_condition": {"logical_operator": "and", "conditions": [
        {"name": "language", "comparison_operator": "is", "value": "zh"}]}}
    assert {r["metadata"]["language"] for r in client.post("/retrieval", json=chinese).json()["records"]} == {"zh"}
    listed = {**ask, "metadata_condition": {"conditions": [
        {"name": ["name", "title"], "comparison_operator": "contains", "value": "volcano"}]}}
    found = client.post("/retrieval", json=listed).json()["records"]
    assert found and all("volcano" in r["metadata"]["path"] for r in found)
    unknown = client.post("/retrieval", json={**ask, "knowledge_id": "nope"})
    assert unknown.status_code == 404 and unknown.json()["error_code"] == 2001
    bare = httpx.post(f"{server[0]}/retrieval", json=ask)
    assert bare.status_code == 403 and bare.json()["error_code"] == 1001
    wrong = httpx.post(f"{server[0]}/retrieval", json=ask, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json()["error_code"] == 1002
    empty = client.post("/retrieval", json={**ask, "query": ""})
    assert empty.status_code == 422 and set(empty.json()) == {"error_code", "error_msg"}



@pytest.mark.slow
def test_dify_score_threshold_keeps_the_records_at_or_above_it(client):
    """Dify's `score_threshold` is a minimum similarity: records scoring at or above it stay, the rest go. The
    threshold is put between two scores of an unfiltered answer, so the filtered answer must be exactly the
    records above it, in the same order."""
    ask = {"knowledge_id": "knowledge", "query": SOLAR_ZH, "retrieval_setting": {"top_k": 6, "score_threshold": 0.0}}
    records = client.post("/retrieval", json=ask).json()["records"]
    scores = [r["score"] for r in records]
    assert len(records) == 6 and scores == sorted(scores, reverse=True), scores
    gaps = [(scores[i] - scores[i + 1], i) for i in range(len(scores) - 1)]
    gap, last_kept = max(gaps)
    assert gap > 0.001, scores  # distinct scores (shown rounded to 4 places) to put the threshold between
    threshold = (scores[last_kept] + scores[last_kept + 1]) / 2
    kept = client.post("/retrieval", json={**ask, "retrieval_setting": {"top_k": 6, "score_threshold": threshold}})
    assert kept.status_code == 200, kept.text
    assert kept.json()["records"] == records[:last_kept + 1], (threshold, scores)
    assert 1 <= last_kept + 1 < len(records)  # some kept and some dropped
    # At the lowest kept score (rounded down, as shown): that record is kept too, as a minimum is.
    at_floor = {**ask, "retrieval_setting": {"top_k": 6, "score_threshold": scores[last_kept] - 0.0001}}
    assert client.post("/retrieval", json=at_floor).json()["records"] == records[:last_kept + 1]


@pytest.mark.slow
@pytest.mark.parametrize(("body", "content_type", "words"), [
    (b'{"knowledge_id": "knowledge", "query": ', "application/json",
     "not valid JSON (Expecting value at character 39)"),
    (b"not json at all", "application/json", "the body is not valid JSON"),
    (json.dumps({"knowledge_id": "knowledge", "query": "volcano"}).encode(), "text/plain",
     "the body must be JSON, sent with 'Content-Type: application/json' (the content type was 'text/plain')"),
    (b"knowledge_id=knowledge&query=volcano", "application/x-www-form-urlencoded", "the body must be JSON"),
    (json.dumps({"knowledge_id": "knowledge", "query": "volcano"}).encode(), None, "it came with no content type"),
    (b"", "application/json", "body: Field required"),
    (json.dumps(["knowledge", "volcano"]).encode(), "application/json", "invalid request"),
    (json.dumps({"knowledge_id": "knowledge"}).encode(), "application/json", "query"),
    (json.dumps({"knowledge_id": "knowledge", "query": "volcano",
                 "retrieval_setting": {"top_k": "many"}}).encode(), "application/json", "top_k"),
    (json.dumps({"knowledge_id": "knowledge", "query": "volcano",
                 "retrieval_setting": {"score_threshold": 2}}).encode(), "application/json", "score_threshold"),
])
def test_dify_malformed_requests_are_4xx_in_difys_error_shape(client, body, content_type, words):
    answer = client.post("/retrieval", content=body, headers={"content-type": content_type} if content_type else {})
    assert 400 <= answer.status_code < 500, answer.text
    shaped = answer.json()
    assert set(shaped) == {"error_code", "error_msg"}, shaped
    assert isinstance(shaped["error_code"], int) and words in shaped["error_msg"], shaped
    assert "Traceback" not in answer.text

@pytest.mark.slow
def test_upload_search_delete_and_the_upload_limits(server, client, tmp_path):
    note = "# Tidal mills\n\nA tidal mill stores the rising tide behind a dam and grinds grain on the ebb.\n"
    files = [("files", ("tidal-mill.md", note.encode(), "text/markdown"))]
    answer = client.post("/v1/documents", files=files)
    assert answer.status_code == 200, answer.text
    [outcome] = answer.json()["files"]
    assert outcome["status"] == "ingested" and outcome["chunks"] > 0
    question = {"query": "潮汐磨坊在水坝后面储存什么？", "k": 1}  # what does a tidal mill keep behind its dam?
    first = client.post("/v1/search", json=question).json()["results"][0]
    assert first["source"] == outcome["path"]

    gone = client.request("DELETE", "/v1/documents", json={"sources": [outcome["path"]]})
    assert gone.status_code == 200 and gone.json()["removed"] == {outcome["path"]: outcome["chunks"]}
    after = client.post("/v1/search", json={**question, "k": 3}).json()["results"]
    assert outcome["path"] not in {r["source"] for r in after}
    missing = client.request("DELETE", "/v1/documents", json={"sources": ["/no/such/file.md"]})
    assert missing.status_code == 404 and missing.json()["unknown"] == ["/no/such/file.md"]

    refused = client.post("/v1/documents", files=[("files", ("big.md", b"x" * (1 << 20) + b"x", "text/markdown")),
                                                   ("files", ("tool.exe", b"MZ", "application/octet-stream"))])
    assert refused.status_code == 400
    reasons = {f["file"]: f["reason"] for f in refused.json()["files"]}
    assert "over the 1 MB limit" in reasons["big.md"] and "unsupported file type '.exe'" in reasons["tool.exe"]
    many = client.post("/v1/documents", files=[("files", (f"n{i}.md", b"# N\n\nnote", "text/markdown"))
                                               for i in range(4)])
    assert many.status_code == 413 and "KB_MAX_UPLOAD_FILES" in many.json()["error"]
    huge = client.post("/v1/documents", files=[("files", ("huge.md", b"y" * (5 << 20), "text/markdown"))])
    assert huge.status_code == 413 and "over kb's limit" in huge.json()["error"]


@pytest.mark.slow
def test_searches_go_on_while_an_upload_ingests(client):
    """An upload ingests in a worker thread; searches run beside it and answer before it is done."""
    text = "\n\n".join(f"## Part {n}\n\n" + " ".join(f"lighthouse keeper log entry {n}-{m}." for m in range(60))
                       for n in range(40))
    files = [("files", (f"log-{i}.md", text.encode(), "text/markdown")) for i in range(3)]
    done, answers = threading.Event(), []

    def upload() -> None:
        try:
            answers.append(client.post("/v1/documents", files=files))
        finally:
            done.set()

    thread = threading.Thread(target=upload)
    thread.start()
    during = 0
    while not done.is_set():
        answer = client.post("/v1/search", json={"query": "How is sourdough bread leavened?", "k": 2})
        assert answer.status_code == 200
        during += not done.is_set()
    thread.join()
    assert answers[0].status_code == 200 and during > 0, (during, answers[0].text)


def test_listening_beyond_loopback_needs_a_token_or_insecure(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("kb.example.org")
    env = {key: value for key, value in os.environ.items() if key != "KB_API_TOKEN"}
    refused = subprocess.run([KB, "serve", "--host", "0.0.0.0", "--port", str(free_port())], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120, env={**env, "COLUMNS": "200"})
    assert refused.returncode == 2 and "refusing to listen on 0.0.0.0 with no KB_API_TOKEN" in refused.stderr
    flag = subprocess.run([KB, "serve", "--api-token", "x"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert flag.returncode == 2 and "No such option" in flag.stderr  # a secret is never a flag
    assert sys.executable  # the same interpreter runs kb (tests.test_cli.KB)



@pytest.mark.slow
def test_insecure_serves_beyond_loopback_without_a_token(tmp_path):
    """`kb serve --insecure --host 0.0.0.0` with no KB_API_TOKEN starts, and answers every route without one."""
    env = {key: value for key, value in os.environ.items() if key != "KB_API_TOKEN"}
    env["KB_CHROMA_PATH"] = str(tmp_path / "chroma")
    port = free_port()
    log = tmp_path / "serve.log"
    process = start_server([KB, "serve", "--insecure", "--host", "0.0.0.0", "--port", str(port)], log, env=env,
                           cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"  # 0.0.0.0 is every interface, loopback among them
    try:
        wait_http(f"{url}/health", process, log=log)
        assert httpx.get(f"{url}/health", timeout=30).json() == {"status": "ok"}
        open_route = httpx.get(f"{url}/v1/collections", timeout=60)  # no token asked for
        assert open_route.status_code == 200, open_route.text
        assert "collections" in open_route.json()
    finally:
        stop(process)
    output = log.read_text()
    assert f"kb serve on http://0.0.0.0:{port}" in output and "bearer token required" not in output, output
    assert f"Uvicorn running on http://0.0.0.0:{port}" in output, output  # bound to every interface

def _result(**fields) -> SearchResult:
    base = dict(rank=1, score=0.5, text="t", source="/d/en/solar-power.md", page=None, chunk_id="c", title="Solar",
                file_type="md", start=0, end=1, language="en")
    return SearchResult(**{**base, **fields})


@pytest.mark.parametrize(("name", "operator", "value", "expected"), [
    ("name", "is", "solar-power.md", True), ("name", "start with", "solar", True), ("name", "end with", ".pdf", False),
    ("file_type", "in", ["md", "pdf"], True), ("file_type", "not in", "md, pdf", False),
    ("page", "empty", None, True), ("page", ">", 2, False), ("page", "≠", 3, True),
    ("language", "=", "en", True), ("heading", "not empty", None, False), (["title", "name"], "contains", "olar", True),
    ("unknown_field", "contains", "x", False), ("source", "not contains", "zh/", True),
])
def test_dify_operators_on_kb_metadata(name, operator, value, expected):
    condition = MetadataCondition(conditions=[Condition(name=name, comparison_operator=operator, value=value)])
    assert matches(_result(), condition) is expected
    on_page = _result(page=4)
    assert matches(on_page, MetadataCondition(conditions=[Condition(name="page", comparison_operator="≥", value=4)]))


@pytest.mark.slow
def test_the_langchain_retriever_in_the_docs_works_against_the_server(server):
    """docs/integrations.md's retriever, run as written."""
    import re

    from tests.conftest import ROOT

    page = (ROOT / "docs" / "integrations.md").read_text()
    [code] = [block for block in re.findall(r"```python\n(.*?)```", page, re.S) if "class KbRetriever" in block]
    space: dict = {}
    exec(compile(code, "docs/integrations.md", "exec"), space)  # noqa: S102 - the documentation's own snippet
    retriever = space["KbRetriever"](url=server[0], token=TOKEN, k=2)
    documents = retriever.invoke(SOLAR_ZH)
    assert len(documents) == 2 and documents[0].metadata["source"].endswith("solar-power.md")
    assert documents[0].page_content and documents[0].metadata["chunk_id"]


@pytest.mark.slow
def test_serve_watch_keeps_a_folder_in_step_with_search(tmp_path):
    """`kb serve --watch DIR`: a file dropped in is found by search within seconds, and gone once deleted."""
    import time

    folder = tmp_path / "inbox"
    folder.mkdir()
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "KB_CHROMA_PATH": str(tmp_path / "chroma")}
    process = start_server([KB, "serve", "--port", str(port), "--watch", str(folder)], log, env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    question = {"query": "What does a tidal mill keep behind its dam?", "k": 1}

    def top_source() -> str | None:
        answer = httpx.post(f"{url}/v1/search", json=question, timeout=60)
        results = answer.json().get("results") if answer.status_code == 200 else None
        return results[0]["source"] if results else None

    def within(seconds: float, check) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.5)
        return False

    try:
        wait_http(f"{url}/health", process, log=log)
        note = folder / "tidal-mill.md"
        note.write_text("# Tidal mills\n\nA tidal mill keeps the rising tide behind a dam and grinds on the ebb.\n")
        assert within(60, lambda: top_source() == str(note)), log.read_text()[-2000:]
        note.unlink()
        assert within(60, lambda: top_source() != str(note)), log.read_text()[-2000:]
    finally:
        stop(process)
    assert "tidal-mill.md" in log.read_text()  # each synced file named in the log


@pytest.mark.slow
def test_mcp_at_slash_mcp_of_kb_serve_gives_the_same_passage(server, client):
    """The issue's check: the MCP SDK's client, over streamable HTTP at kb serve's /mcp with the token, lists
    the three tools and its `search` gives the passage /v1/search ranks first."""
    import anyio
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def ask() -> tuple[set[str], dict]:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
        async with Client(streamable_http_client(f"{server[0]}/mcp/", http_client=http)) as mcp:
            tools = {tool.name for tool in (await mcp.list_tools()).tools}
            found = await mcp.call_tool("search", {"query": SOLAR_ZH, "k": 3})
            return tools, found.structured_content

    tools, found = anyio.run(ask)
    assert tools == {"search", "list_collections", "get_passage"}
    rest = client.post("/v1/search", json={"query": SOLAR_ZH, "k": 3}).json()["results"]
    assert found["results"][0]["chunk_id"] == rest[0]["chunk_id"]
    assert found["results"][0]["source"].endswith("data/en/solar-power.md")
