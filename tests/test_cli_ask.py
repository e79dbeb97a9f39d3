"""`kb ask` as a user runs it: the real CLI over the sample corpus (embedded model, embedded Chroma), the chat
model a scripted OpenAI-compatible server (tests/fakechat.py) so citations, faults and the prompt are exact."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import DATA
from tests.fakechat import FakeChatServer
from tests.test_cli import kb

pytestmark = pytest.mark.slow

SOLAR_ZH = "太阳能电池板是怎样把阳光变成电的？"
ANSWER_ZH = "太阳能电池板利用光伏效应把阳光变成直流电[1]，逆变器再把它变成交流电[2][1]。另见[9]。"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ask")
    shutil.copytree(DATA, root / "data", ignore=shutil.ignore_patterns("chroma"))
    kb("ingest", "data/", cwd=root, check=0)
    return root


@pytest.fixture
def chat():
    with FakeChatServer() as server:
        yield server


def ask(workdir, chat, *args, check=0, env=None):
    return kb("ask", *args, cwd=workdir, env={"KB_CHAT_ENDPOINT": chat.url, **(env or {})}, check=check)


def test_a_chinese_question_is_answered_from_english_passages_with_sources(workdir, chat):
    chat.script(ANSWER_ZH)
    result = ask(workdir, chat, SOLAR_ZH)
    answer, _, sources = result.stdout.partition("\nSources\n")
    assert answer.strip() == ANSWER_ZH.replace("[9]", "[9?]")  # streamed as it came, the made-up one flagged
    lines = sources.splitlines()
    assert lines[0].startswith("[1] data/en/solar-power.md") and lines[2].startswith("[2] ")
    assert not any(line.startswith("[9]") for line in lines)
    assert "cites [9], which the model made up" in result.stderr and "fake-chat" in result.stderr
    system, user = (m["content"] for m in chat.bodies[-1]["messages"])
    assert "Answer in Chinese" in system
    assert user.startswith("Passages:\n\n[1] ") and "solar-power.md" in user.split("\n\n[2] ")[0]
    assert "Photovoltaic" in user and user.endswith(f"Question: {SOLAR_ZH}")  # the English passages went


def test_json_has_the_answer_citations_passages_usage_and_latency(workdir, chat):
    chat.script(ANSWER_ZH)
    data = json.loads(ask(workdir, chat, SOLAR_ZH, "--json", "-k", "4").stdout)
    assert data["found"] and data["model"] == "fake-chat" and data["invented"] == [9]
    assert data["answer"].endswith("另见[9?]。")
    assert [c["n"] for c in data["citations"]] == [1, 2]
    first = data["citations"][0]
    assert first["source"].endswith("data/en/solar-power.md") and first["chunk_id"] and first["text"]
    assert set(first) >= {"n", "source", "page", "heading", "chunk_id", "text"}
    assert [p["n"] for p in data["passages"]] == [1, 2, 3, 4]
    assert data["passages"][0]["chunk_id"] == first["chunk_id"]
    assert data["usage"]["prompt_tokens"] > 0 and data["usage"]["completion_tokens"] > 0
    latency = data["latency_ms"]
    assert 0 < latency["search"] <= latency["first_token"] <= latency["total"]
    prompt = chat.bodies[-1]["messages"][1]["content"]
    assert "\n\n[4] " in prompt and "\n\n[5] " not in prompt  # four passages: -k honoured


def test_an_off_topic_question_does_not_call_the_chat_model(workdir, chat):
    result = ask(workdir, chat, "What is the capital of Peru?")
    assert result.stdout.startswith("Not found in the knowledge base.")
    assert "under the floor" in result.stderr and "not asked" in result.stderr
    assert "[1] data/" in result.stdout  # the closest passages, for the reader to judge
    assert chat.requests == 0
    data = json.loads(ask(workdir, chat, "谁赢得了2014年世界杯足球赛？", "--json").stdout)
    assert not data["found"] and data["model"] is None and data["best_score"] < data["floor"]
    assert chat.requests == 0


def test_a_stream_cut_short_shows_what_came_the_passages_and_exits_non_zero(workdir, chat):
    chat.script("cut:Solar panels turn light [1] into")
    result = ask(workdir, chat, "How do solar panels make electricity?", check=2)
    assert result.stdout.startswith("Solar panels turn light [1] into")
    assert "Passages sent to the chat model" in result.stdout and "[6] " in result.stdout
    assert "broke off the answer" in result.stderr and chat.url in result.stderr


def test_429_then_an_answer_is_retried_and_a_busy_server_is_named(workdir, chat):
    chat.script("429:0", "Panels make current [1].")
    assert ask(workdir, chat, "How do solar panels make electricity?").stdout.startswith("Panels make current [1].")
    chat.script("503", "503", "503", "503")
    busy = ask(workdir, chat, "How do solar panels make electricity?", check=2)
    assert "overloaded" in busy.stderr and "Passages sent to the chat model" in busy.stdout


def test_settings_problems_are_one_line_and_the_key_is_never_a_flag_or_printed(workdir, chat):
    missing = kb("ask", SOLAR_ZH, cwd=workdir, env={"KB_CHAT_ENDPOINT": ""}, check=2)
    assert "KB_CHAT_ENDPOINT" in missing.stderr and "Traceback" not in missing.stderr
    flag = kb("ask", SOLAR_ZH, "--chat-api-key", "sk-secret", cwd=workdir, check=2)
    assert "No such option" in flag.stderr
    chat.script("An answer [1].")
    keyed = ask(workdir, chat, SOLAR_ZH, "--json", env={"KB_CHAT_API_KEY": "sk-secret-77"})
    assert chat.headers[-1]["authorization"] == "Bearer sk-secret-77"
    assert "sk-secret-77" not in keyed.stdout + keyed.stderr
    tight = ask(workdir, chat, SOLAR_ZH, "--context-tokens", "1200", check=2)
    assert "--context-tokens 1200" in tight.stderr
