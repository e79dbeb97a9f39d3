"""Answers from `kb serve` as clients meet them: a real `kb serve` process over the sample corpus on the embedded
model, its chat model a scripted `FakeChatServer` in this process (exact answers and faults on demand), driven by
the real openai client (kb as the model `kb:knowledge`) and by httpx (/v1/ask's server-sent events)."""

from __future__ import annotations

import json
import os
import shutil

import httpx
import openai
import pytest

from kb_app.answer import NOT_FOUND
from tests.conftest import DATA
from tests.fakechat import FakeChatServer
from tests.rigs.servers import free_port, start_server, stop, wait_http
from tests.test_cli import KB, kb

TOKEN = "ask-token-7d1e9b"
SOLAR_ZH = "太阳能电池板是怎样把阳光变成电的？"
SOLAR_ANSWER = "太阳能电池板里的硅电池吸收阳光，产生电流[1]。逆变器把直流电变成交流电[2]。"
OFF_TOPIC = "What is the capital of Peru?"


def serve(work, port: int, env: dict, log_name: str):
    """`kb serve` in `work`, up and answering /health."""
    log = work / log_name
    process = start_server([KB, "serve", "--port", str(port)], log, env=env, cwd=work)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process, log=log)
    except BaseException:
        stop(process)
        raise
    return process, log


@pytest.fixture(scope="module")
def chat():
    with FakeChatServer(piece=4) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory, chat):
    """`kb serve` on the sample corpus with a token, answering through the fake chat server; yields its URL."""
    work = tmp_path_factory.mktemp("serve-ask")
    shutil.copytree(DATA, work / "data", ignore=shutil.ignore_patterns("chroma"))
    kb("ingest", "data/", cwd=work, check=0)
    shutil.copytree(work / "data" / "chroma", work / "store-copy")  # for the server with no chat model
    port = free_port()
    # One retry: a single 429 is retried, two 503s are "overloaded" without a long backoff.
    env = {**os.environ, "KB_API_TOKEN": TOKEN, "KB_CHAT_ENDPOINT": chat.url, "KB_CHAT_RETRIES": "1"}
    env.pop("KB_CHAT_MODEL", None)
    process, log = serve(work, port, env, "serve.log")
    try:
        yield f"http://127.0.0.1:{port}", work
    finally:
        stop(process)
    assert TOKEN not in log.read_text()  # never logged


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def oai(server):
    """The openai package pointed at kb serve, as its docs say: base_url .../v1, the api key is KB_API_TOKEN.
    No client retries, so a 503 is seen once."""
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key=TOKEN, max_retries=0, timeout=120)


def sse(response: httpx.Response) -> list[tuple[str, dict]]:
    """The (event, data) pairs of a server-sent event stream."""
    events, name, data = [], "message", []
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            events.append((name, json.loads("\n".join(data))))
            name, data = "message", []
    return events


@pytest.mark.slow
def test_the_openai_client_lists_kb_knowledge_and_gets_a_streamed_answer_with_citations(oai, chat):
    assert "kb:knowledge" in [model.id for model in oai.models.list()]
    chat.script(SOLAR_ANSWER + "见[9]。")
    before = chat.requests
    stream = oai.chat.completions.create(model="kb:knowledge", messages=[{"role": "user", "content": SOLAR_ZH}],
                                         stream=True, stream_options={"include_usage": True}, max_tokens=300)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith(SOLAR_ANSWER + "见[9?]。") and "[9]" not in text  # an invented number is flagged
    [final] = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert final.choices[0].finish_reason == "stop"
    citations = final.model_extra["citations"]
    assert [c["n"] for c in citations] == [1, 2]
    assert citations[0]["source"].endswith("data/en/solar-power.md") and citations[0]["text"]
    assert {"n", "source", "title", "page", "location", "heading", "chunk_id", "text"} == set(citations[0])
    sources = text.split("Sources:")[1]
    assert f"[1] {citations[0]['source']}" in sources and f"[2] {citations[1]['source']}" in sources
    [usage] = [c.usage for c in chunks if c.usage]
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0 and not chunks[-1].choices
    assert chat.requests == before + 1
    body = chat.bodies[-1]
    assert body["max_tokens"] == 300  # the client's cap is the answer's
    assert SOLAR_ZH in body["messages"][-1]["content"] and "Chinese" in body["messages"][0]["content"]


@pytest.mark.slow
def test_a_non_streamed_completion_carries_the_same_answer_and_citations(oai, chat):
    chat.script(SOLAR_ANSWER)
    history = [{"role": "user", "content": "How do volcanoes erupt?"},
               {"role": "assistant", "content": "Magma rises [1]."},
               {"role": "user", "content": [{"type": "text", "text": SOLAR_ZH}]}]  # content as parts
    completion = oai.chat.completions.create(model="kb:knowledge", messages=history)
    assert completion.object == "chat.completion" and completion.model == "kb:knowledge"
    message = completion.choices[0].message.content
    assert message.startswith(SOLAR_ANSWER) and "Sources:" in message
    citations = completion.model_extra["citations"]
    assert citations[0]["n"] == 1 and citations[0]["source"].endswith("data/en/solar-power.md")
    assert completion.usage.completion_tokens > 0 and completion.choices[0].finish_reason == "stop"
    prompt = chat.last_prompt()
    assert SOLAR_ZH in prompt and "volcanoes erupt" not in prompt  # the last user message is the question


@pytest.mark.slow
def test_an_off_topic_question_is_not_found_without_asking_the_chat_model(oai, client, chat):
    before = chat.requests
    completion = oai.chat.completions.create(model="kb:knowledge", messages=[{"role": "user", "content": OFF_TOPIC}])
    content = completion.choices[0].message.content
    assert content.startswith(NOT_FOUND) and "Closest passages" in content
    assert completion.model_extra["citations"] == [] and completion.usage.total_tokens == 0
    answer = client.post("/v1/ask", json={"question": OFF_TOPIC, "stream": False}).json()
    assert answer["answer"] == NOT_FOUND and answer["found"] is False and answer["passages"]
    assert answer["model"] is None and answer["best_score"] < answer["floor"]
    assert chat.requests == before  # the chat model was never called


@pytest.mark.slow
def test_ask_streams_passages_then_deltas_then_done(client, chat):
    chat.script(SOLAR_ANSWER)
    with client.stream("POST", "/v1/ask", json={"question": SOLAR_ZH, "k": 4}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = sse(response)
    names = [name for name, _ in events]
    assert names[0] == "passages" and names[-1] == "done" and set(names[1:-1]) == {"delta"} and len(names) > 3
    passages = events[0][1]
    assert passages["found"] and passages["passages"][0]["n"] == 1 and len(passages["passages"]) <= 4
    assert passages["passages"][0]["source"].endswith("data/en/solar-power.md") and passages["latency_ms"]["search"]
    assert "".join(data["text"] for name, data in events if name == "delta") == SOLAR_ANSWER
    done = events[-1][1]
    assert done["answer"] == SOLAR_ANSWER and done["error"] is None and done["model"] == chat.model
    assert [c["n"] for c in done["citations"]] == [1, 2] and done["usage"]["completion_tokens"] > 0
    assert done["latency_ms"]["first_token"] is not None and done["language"] == "zh"


@pytest.mark.slow
def test_ask_without_streaming_is_the_json_of_kb_ask(client, chat):
    chat.script("A panel's silicon cells turn light into current [1].")
    answer = client.post("/v1/ask", json={"question": "How do solar panels make electricity?", "stream": False,
                                          "mode": "hybrid"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    data = answer.json()
    assert data["answer"] == "A panel's silicon cells turn light into current [1]." and data["mode"] == "hybrid"
    assert data["citations"][0]["source"].endswith("data/en/solar-power.md") and data["found"]
    assert {"answer", "citations", "passages", "model", "usage", "latency_ms"} <= set(data)


@pytest.mark.slow
def test_a_stream_cut_mid_answer_ends_with_an_error_event_after_the_partial_text(client, oai, chat):
    chat.script("cut:太阳能电池板里的硅电池")
    with client.stream("POST", "/v1/ask", json={"question": SOLAR_ZH}) as response:
        events = sse(response)
    names = [name for name, _ in events]
    assert names[0] == "passages" and names[-2:] == ["error", "done"] and "delta" in names
    assert "".join(data["text"] for name, data in events if name == "delta") == "太阳能电池板里的硅电池"
    assert "broke off the answer" in events[-2][1]["error"] and events[-2][1]["status"] == 502
    assert events[-1][1]["error"] == events[-2][1]["error"] and events[-1][1]["answer"] == "太阳能电池板里的硅电池"

    chat.script("cut:太阳能电池板里的硅电池")  # the same fault under the openai client: it raises, never ends quietly
    stream = oai.chat.completions.create(model="kb:knowledge", messages=[{"role": "user", "content": SOLAR_ZH}],
                                         stream=True)
    seen = []
    with pytest.raises(openai.APIError, match="broke off the answer"):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "太阳能电池板里的硅电池"


@pytest.mark.slow
def test_a_busy_chat_server_is_retried_then_answers_or_is_a_503(client, oai, chat):
    chat.script("429", SOLAR_ANSWER)
    before = chat.requests
    answer = client.post("/v1/ask", json={"question": SOLAR_ZH, "stream": False}).json()
    assert answer["answer"] == SOLAR_ANSWER and answer["retries"] == 1 and chat.requests == before + 2

    chat.script("503", "503")  # through every retry (KB_CHAT_RETRIES=1)
    busy = client.post("/v1/ask", json={"question": SOLAR_ZH, "stream": False})
    assert busy.status_code == 503 and "overloaded" in busy.json()["error"]
    assert busy.json()["answer"]["passages"][0]["source"].endswith("data/en/solar-power.md")  # still shown
    chat.script("503", "503")
    with pytest.raises(openai.InternalServerError, match="overloaded") as raised:
        oai.chat.completions.create(model="kb:knowledge", messages=[{"role": "user", "content": SOLAR_ZH}])
    assert raised.value.status_code == 503


@pytest.mark.slow
def test_the_openai_snippet_in_the_docs_works_against_the_server(server, chat, monkeypatch, capsys):
    """docs/integrations.md's openai client example, run as written (only the URL is the test server's)."""
    import re

    from tests.conftest import ROOT

    page = (ROOT / "docs" / "integrations.md").read_text()
    [code] = [block for block in re.findall(r"```python\n(.*?)```", page, re.S) if "from openai import" in block]
    monkeypatch.setenv("KB_API_TOKEN", TOKEN)
    chat.script(SOLAR_ANSWER)
    code = code.replace("http://127.0.0.1:8000", server[0])
    exec(compile(code, "docs/integrations.md", "exec"), {})  # noqa: S102 - the documentation's own snippet
    printed = capsys.readouterr().out
    assert printed.startswith(SOLAR_ANSWER) and "Sources:" in printed and " tokens]" in printed
    assert printed.strip().splitlines()[-1].endswith("data/en/solar-power.md")  # citations[0]: source, location ""


@pytest.mark.slow
def test_a_prompt_the_chat_model_refuses_as_too_long_is_a_502_with_the_passages(client, oai, chat):
    chat.script("toolong")
    refused = client.post("/v1/ask", json={"question": SOLAR_ZH, "stream": False})
    assert refused.status_code == 502 and "maximum context length" in refused.json()["error"]
    assert refused.json()["answer"]["passages"] and refused.json()["answer"]["answer"] == ""
    chat.script("toolong")
    with client.stream("POST", "/v1/ask", json={"question": SOLAR_ZH}) as response:
        names = [name for name, _ in sse(response)]
    assert names == ["passages", "error", "done"]  # failed before any text: no delta, never a silent end
    chat.script("toolong")
    with pytest.raises(openai.InternalServerError, match="KB_CONTEXT_TOKENS") as raised:
        oai.chat.completions.create(model="kb:knowledge", messages=[{"role": "user", "content": SOLAR_ZH}],
                                    stream=True)
    assert raised.value.status_code == 502  # before the first token, a status rather than a stream


@pytest.mark.slow
def test_an_unknown_model_is_openais_404(oai):
    with pytest.raises(openai.NotFoundError, match="kb:knowledge") as raised:
        oai.chat.completions.create(model="kb:nope", messages=[{"role": "user", "content": SOLAR_ZH}])
    assert raised.value.body["code"] == "model_not_found" and raised.value.status_code == 404
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": SOLAR_ZH}])


@pytest.mark.slow
@pytest.mark.parametrize(("path", "body", "status", "words"), [
    ("/v1/ask", b"{not json", 422, "JSON"),
    ("/v1/ask", json.dumps({"question": ""}), 422, "question"),
    ("/v1/ask", json.dumps({"question": "   "}), 422, "the question is empty"),
    ("/v1/ask", json.dumps({"question": "x" * 100_000}), 422, "at most 10000 characters"),
    ("/v1/ask", json.dumps({"question": "volcano", "k": 0}), 422, "greater than or equal to 1"),
    ("/v1/ask", json.dumps({"question": "volcano", "k": 10_000}), 422, "less than or equal to 100"),
    ("/v1/ask", json.dumps({"question": "volcano", "collection": "nope"}), 404, "no collection 'nope'"),
    ("/v1/ask", json.dumps({"question": "volcano", "where": {"$bogus": 1}}), 422, "$bogus is not"),
    ("/v1/ask", json.dumps({"question": "volcano", "stream": "maybe"}), 422, "stream"),
    ("/v1/chat/completions", b"{not json", 422, "JSON"),
    ("/v1/chat/completions", json.dumps({"model": "kb:knowledge", "messages": []}), 422, "messages"),
    ("/v1/chat/completions", json.dumps({"model": "kb:knowledge"}), 422, "messages"),
    ("/v1/chat/completions", json.dumps({"model": "kb:knowledge", "messages": [
        {"role": "system", "content": "Be brief."}]}), 400, "no question"),
    ("/v1/chat/completions", json.dumps({"model": "kb:knowledge", "messages": [
        {"role": "user", "content": "x" * 100_000}]}), 400, "at most 10000"),
    ("/v1/chat/completions", json.dumps({"model": "kb:knowledge", "max_tokens": 0, "messages": [
        {"role": "user", "content": SOLAR_ZH}]}), 422, "max_tokens"),
    ("/v1/chat/completions", json.dumps({"model": "kb:knowledge", "max_tokens": 100_000, "messages": [
        {"role": "user", "content": SOLAR_ZH}]}), 400, "max_tokens 100000 leaves too little"),
])
def test_bad_requests_are_4xx_with_a_message(client, chat, path, body, status, words):
    before = chat.requests
    answer = client.post(path, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    message = error["message"] if path == "/v1/chat/completions" else error  # OpenAI's shape on its route
    assert words in message and "Traceback" not in answer.text
    assert chat.requests == before


@pytest.mark.slow
def test_every_answer_route_asks_for_the_token(server):
    url = server[0]
    bare = httpx.post(f"{url}/v1/ask", json={"question": SOLAR_ZH})
    assert bare.status_code == 401 and "Authorization: Bearer" in bare.json()["error"]
    models = httpx.get(f"{url}/v1/models")
    assert models.status_code == 401 and models.json()["error"]["type"] == "authentication_error"
    wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="not-the-token", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError, match="not KB_API_TOKEN"):
        wrong.chat.completions.create(model="kb:knowledge", messages=[{"role": "user", "content": SOLAR_ZH}])


@pytest.mark.slow
def test_with_no_chat_endpoint_there_is_no_model_and_asking_is_a_503(server):
    """A server with no KB_CHAT_ENDPOINT: /v1/models is empty, and the answer routes say what to set."""
    work = server[1]
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("KB_CHAT")}
    env |= {"KB_API_TOKEN": TOKEN, "KB_CHROMA_PATH": str(work / "store-copy")}
    process, log = serve(work, port, env, "serve-nochat.log")
    try:
        oai = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN, max_retries=0)
        assert oai.models.list().data == []
        with pytest.raises(openai.InternalServerError, match="KB_CHAT_ENDPOINT") as raised:
            oai.chat.completions.create(model="kb:knowledge", messages=[{"role": "user", "content": SOLAR_ZH}])
        assert raised.value.status_code == 503
        asked = httpx.post(f"http://127.0.0.1:{port}/v1/ask", json={"question": SOLAR_ZH},
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
        assert asked.status_code == 503 and "KB_CHAT_ENDPOINT" in asked.json()["error"]
        search = httpx.post(f"http://127.0.0.1:{port}/v1/search", json={"query": SOLAR_ZH, "k": 1},
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
        assert search.status_code == 200  # search needs no chat model
    finally:
        stop(process)
    assert TOKEN not in log.read_text()
