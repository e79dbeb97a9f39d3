"""kb's MCP server, driven by the `mcp` SDK's own client: over stdio against `kb mcp`'s command started as a
child process, and over streamable HTTP against the endpoint mounted in a FastAPI app served by a real uvicorn.
The store is the sample corpus ingested by `kb ingest data/`, searched with kb's embedded model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
import uvicorn
from fastapi import FastAPI
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from ingest.settings import load_settings
from kb_app.api import create_app
from kb_app.mcp_server import MAX_QUERY, build_mcp, mcp_http_app, transport_security
from kb_app.service import KnowledgeService
from tests.rigs.servers import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
KB = str(Path(sys.executable).parent / "kb")
QUESTION = "太阳能电池板是怎样把阳光变成电的？"
TOKEN = "test-token-3f9a"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with data/ (the sample corpus) ingested into data/chroma, as the quickstart does."""
    root = tmp_path_factory.mktemp("mcp")
    shutil.copytree(ROOT / "data", root / "data", ignore=shutil.ignore_patterns("chroma"))
    result = subprocess.run([KB, "ingest", "data/"], cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "8 ingested" in result.stderr, result.stderr
    return root


def stdio_server(workdir: Path, *args: str) -> Client:
    """An SDK client that starts `kb mcp ARGS` in `workdir` and talks to it over its stdin and stdout; the
    server's stderr goes to a log file in workdir."""
    params = StdioServerParameters(command=KB, args=["mcp", *args], cwd=workdir,
                                   env=dict(os.environ))
    log = open(workdir / "mcp-stdio.log", "a")  # closed with the test process: the client owns it until then
    return Client(stdio_client(params, errlog=log))


def run(work) -> object:
    """An async test body, run on its own event loop."""
    return anyio.run(work)


# -- stdio -----------------------------------------------------------------------------------------------------


def test_stdio_tools_describe_the_collection_and_its_languages(workdir):
    async def work():
        async with stdio_server(workdir) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            collections = await client.call_tool("list_collections", {})
            return tools, collections

    tools, collections = run(work)
    assert set(tools) == {"search", "list_collections", "get_passage"}
    description = tools["search"].description
    assert "knowledge, the default: 8 documents" in description
    assert "en (5)" in description and "zh (3)" in description
    assert tools["search"].input_schema["properties"]["k"]["maximum"] == 100
    assert tools["search"].output_schema is not None  # structured output: results an agent can parse
    assert all(tool.annotations.read_only_hint for tool in tools.values())
    assert not collections.is_error
    [info] = collections.structured_content["collections"]
    assert info["name"] == "knowledge" and info["default"] is True
    assert info["documents"] == 8 and info["languages"] == {"en": 5, "zh": 3}


def test_stdio_chinese_question_finds_solar_power_and_its_passage(workdir):
    async def work():
        async with stdio_server(workdir) as client:
            found = await client.call_tool("search", {"query": QUESTION, "k": 3})
            first = found.structured_content["results"][0]
            passage = await client.call_tool("get_passage", {"chunk_id": first["chunk_id"], "neighbours": 1})
            return found, passage

    found, passage = run(work)
    assert not found.is_error
    results = found.structured_content["results"]
    assert len(results) == 3 and [r["rank"] for r in results] == [1, 2, 3]
    first = results[0]
    assert first["source"].endswith("data/en/solar-power.md")
    assert first["chunk_id"] and first["text"] and first["score"] > results[2]["score"] - 1e-9
    assert found.structured_content["collection"] == "knowledge"
    assert not passage.is_error
    got = passage.structured_content
    assert got["chunk_id"] == first["chunk_id"] and got["source"] == first["source"]
    assert got["text"] == first["text"]
    # The first passage of the file: itself and the one after it, in reading order.
    assert got["neighbours"][0] == first["text"] and len(got["neighbours"]) == 2
    assert got["neighbours"][1] != first["text"]


BAD_CALLS = [
    ("search", {"query": "   "}, "the query is empty"),
    ("search", {"query": "x", "k": 0}, "k is 0; it must be between 1 and 100"),
    ("search", {"query": "x", "k": 101}, "k is 101; it must be between 1 and 100"),
    ("search", {"query": "太阳" * 50_000}, f"at most {MAX_QUERY:,}"),
    ("search", {"query": "x", "collection": "nope"}, "no collection 'nope': the collections are 'knowledge'"),
    ("search", {"query": "x", "collection": "../etc"}, "collection name '../etc' is not valid"),
    ("search", {"query": "x", "mode": "fuzzy"}, "mode 'fuzzy' is not one of dense, hybrid"),
    ("get_passage", {"chunk_id": "no-such-chunk"}, "no passage 'no-such-chunk' in collection 'knowledge'"),
    ("get_passage", {"chunk_id": "x", "neighbours": 11}, "neighbours is 11; it must be between 0 and 10"),
    ("get_passage", {"chunk_id": "x", "collection": "nope"}, "no collection 'nope'"),
]


def test_stdio_bad_input_is_a_tool_error_with_a_message(workdir):
    async def work():
        async with stdio_server(workdir) as client:
            answers = [await client.call_tool(tool, args) for tool, args, _ in BAD_CALLS]
            # The server is still there, and still right, after them all.
            after = await client.call_tool("search", {"query": QUESTION, "k": 1})
            return answers, after

    answers, after = run(work)
    for (tool, args, expected), answer in zip(BAD_CALLS, answers):
        text = answer.content[0].text
        assert answer.is_error, (tool, args)
        assert expected in text, (tool, text)
        assert "Traceback" not in text
    assert not after.is_error
    assert after.structured_content["results"][0]["source"].endswith("data/en/solar-power.md")


def test_stdio_missing_collection_is_said_before_serving(workdir):
    result = subprocess.run([KB, "mcp", "--collection", "absent"], cwd=workdir, input="",
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "collection 'absent' is empty or does not exist" in result.stderr
    assert result.stdout == ""  # nothing on the protocol's stream


# -- streamable HTTP -------------------------------------------------------------------------------------------


def fastapi_app(service: KnowledgeService) -> FastAPI:
    """kb serve's application (kb_app.api.create_app), with MCP mounted at /mcp as `kb serve` mounts it."""
    mcp = build_mcp(service)
    return create_app(service, TOKEN, lifespans=(lambda _app: mcp.session_manager.run(),),
                      mounts={"/mcp": mcp_http_app(mcp, host="127.0.0.1", allowed_hosts=["kb.example"])})


@pytest.fixture(scope="module")
def http_url(workdir):
    """A real uvicorn serving the app on a free loopback port, in a thread of this process."""
    settings = load_settings(chroma_path=workdir / "data" / "chroma")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fastapi_app(KnowledgeService(settings)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped before it started"
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def http_client(url: str, token: str | None = TOKEN) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=60)))


@pytest.mark.parametrize("path", ["/mcp/", "/mcp"])  # /mcp is redirected to /mcp/, which the SDK follows
def test_http_search_and_passage(http_url, path):
    async def work():
        async with http_client(http_url + path) as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]
            found = await client.call_tool("search", {"query": QUESTION, "k": 2})
            chunk_id = found.structured_content["results"][0]["chunk_id"]
            passage = await client.call_tool("get_passage", {"chunk_id": chunk_id, "neighbours": 0})
            bad = await client.call_tool("search", {"query": "x", "k": 500})
            return tools, found, passage, bad

    tools, found, passage, bad = run(work)
    assert sorted(tools) == ["get_passage", "list_collections", "search"]
    assert not found.is_error
    first = found.structured_content["results"][0]
    assert first["source"].endswith("data/en/solar-power.md")
    assert passage.structured_content["neighbours"] == [first["text"]]
    assert bad.is_error and "k is 500; it must be between 1 and 100" in bad.content[0].text



def test_http_search_results_carry_what_an_agent_cites(http_url):
    """Each `search` result names its source, page, heading, score and chunk_id, with the values of the passage:
    a Markdown section found by its heading (no page: the file is read whole), and a PDF passage on its page."""
    async def work():
        async with http_client(http_url + "/mcp/") as client:
            section = await client.call_tool("search", {"query": "How does an inverter turn DC into AC?", "k": 3})
            on_page = await client.call_tool("search", {"query": "Volcanic Explosivity Index", "k": 3})
            return section, on_page

    section, on_page = run(work)
    assert not section.is_error and not on_page.is_error
    cited = {"source", "page", "heading", "score", "chunk_id"}
    for result in section.structured_content["results"] + on_page.structured_content["results"]:
        assert cited <= set(result), result
        assert result["chunk_id"] and isinstance(result["score"], float)
    first = section.structured_content["results"][0]
    assert first["source"].endswith("data/en/solar-power.md"), first
    assert first["heading"] == "Inverters: From DC to AC" and first["page"] is None, first
    assert "inverter" in first["text"].lower()
    pdf = on_page.structured_content["results"][0]
    assert pdf["source"].endswith("data/en/volcanoes.pdf") and pdf["page"] == 2, pdf
    assert pdf["location"] == "page 2" and "Explosivity Index" in pdf["text"], pdf
    scores = [r["score"] for r in on_page.structured_content["results"]]
    assert scores == sorted(scores, reverse=True)
    # The text content (what a client without structured output reads) names them too.
    assert "Inverters: From DC to AC" in section.content[0].text and first["chunk_id"] in section.content[0].text

QUESTIONS = {
    QUESTION: "data/en/solar-power.md",
    "What do giant pandas eat?": "data/zh/giant-panda.txt",
    "How long should coffee brew?": "data/en/coffee-brewing.html",
    "蜜蜂怎样酿蜜？": "data/en/honeybees.rst",
    "How was the Great Wall built?": "data/zh/great-wall.md",
}


def test_http_searches_side_by_side(http_url):
    """Searches from one client at once, each in its own worker thread: each gets its own answer."""
    firsts: list[tuple[str, str]] = []

    async def ask(client, question):
        found = await client.call_tool("search", {"query": question, "k": 1})
        assert not found.is_error, found.content[0].text
        firsts.append((question, found.structured_content["results"][0]["source"]))

    async def work():
        # Not a speed limit: searches that deadlock (an asyncio lock shared by the worker threads' event loops)
        # fail here, said as such, instead of at pytest's timeout.
        with anyio.fail_after(300):
            await side_by_side()

    async def side_by_side():
        async with http_client(http_url + "/mcp/") as client:
            async with anyio.create_task_group() as group:
                for question in list(QUESTIONS) * 2:
                    group.start_soon(ask, client, question)

    run(work)
    assert len(firsts) == 2 * len(QUESTIONS)
    for question, source in firsts:
        assert source.endswith(QUESTIONS[question]), (question, source)


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, which the SDK client's task groups raise."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def test_http_needs_the_bearer_token(http_url):
    async def work(token):
        async with http_client(http_url + "/mcp/", token) as client:
            return (await client.list_tools()).tools

    for token in (None, "wrong"):
        with pytest.raises(BaseException) as caught:  # noqa: B017 - the SDK raises it inside exception groups
            run(lambda token=token: work(token))
        assert any(isinstance(e, MCPError) for e in leaves(caught.value)), caught.value
        refused = httpx.post(http_url + "/mcp/", json={}, headers={"Authorization": f"Bearer {token}"} if token else {})
        assert refused.status_code == (403 if token else 401)  # a wrong token, or none
    assert len(run(lambda: work(TOKEN))) == 3


def initialize_with_host(url: str, host: str) -> httpx.Response:
    """A raw initialize request to the MCP endpoint, as a browser page under another name would send it."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "probe", "version": "0"}}}
    return httpx.post(url + "/mcp/", json=body, timeout=30,
                      headers={"Host": host, "Authorization": f"Bearer {TOKEN}",
                               "Accept": "application/json, text/event-stream"})


def test_http_answers_only_the_names_it_serves(http_url):
    port = http_url.rsplit(":", 1)[1]
    assert initialize_with_host(http_url, f"127.0.0.1:{port}").status_code == 200
    assert initialize_with_host(http_url, f"kb.example:{port}").status_code == 200  # allowed_hosts
    refused = initialize_with_host(http_url, f"attacker.example:{port}")
    assert refused.status_code == 421 and "Invalid Host header" in refused.text


def test_transport_security_follows_the_listening_address():
    on_lan = transport_security("192.168.1.20")
    assert on_lan.enable_dns_rebinding_protection
    assert {"192.168.1.20:*", "127.0.0.1:*", "[::1]:*"} <= set(on_lan.allowed_hosts)
    assert "http://192.168.1.20:*" in on_lan.allowed_origins
    # All interfaces: reached by names the server cannot know; the bearer token keeps strangers out.
    assert not transport_security("0.0.0.0").enable_dns_rebinding_protection
    named = transport_security("0.0.0.0", ["kb.example.org"])
    assert named.enable_dns_rebinding_protection and "kb.example.org" in named.allowed_hosts
