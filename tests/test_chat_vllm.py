"""kb's chat client against a real vLLM (CPU build) serving a tiny random-weight Qwen3 chat model.

The model's text is noise; what is tested is what kb relies on from a real OpenAI-compatible chat server:
streaming with usage and a finish reason, the served model's name from /v1/models, Qwen3's thinking switch
(`chat_template_kwargs`, through Qwen3's own chat template), kb's prompt count against the server's, the
server's refusal of a prompt past the model's context, and `ask` end to end over the sample corpus. One server
(about half a minute to start) with a 2,048-token context serves every test.

The vLLM virtualenv is created on first use (tests/rigs/vllm.py; a few minutes) and never skipped: if it cannot
be built or the server cannot start, these tests fail with the reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import openai
import pytest

from ingest.errors import ContextTooLongError
from ingest.pipeline import ingest
from ingest.settings import load_settings
from kb_app.answer import TEMPLATE_TOKENS, Delta, Done, Retrieved, ask, chat_tokens, retrieve, stream
from kb_app.chat import ChatModel, Reply
from kb_app.search import Searcher
from tests.conftest import DATA
from tests.rigs import vllm as rig
from tests.test_cli import kb

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1800)]

MODEL = rig.SERVED_CHAT_MODEL
CONTEXT = 2048  # the server's --max-model-len: small, so the sample corpus can overflow it
QUESTION = "太阳能电池板是怎样把阳光变成电的？"
MESSAGES = [
    {"role": "system", "content": "You answer questions from the passages the user gives you."},
    {"role": "user", "content": "Passages:\n\n[1] Solar panels turn sunlight into electricity.\n\n"
                                "Question: How do solar panels work?"},
]
# What Qwen3's template adds to the prompt when thinking is off: an empty think block.
EMPTY_THINK = "<think>\n\n</think>\n\n"


# -- rigs --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """vLLM with `--runner generate`, the tiny Qwen3 chat model, a 2,048-token context."""
    rig.ensure_venv()  # creates the vLLM venv if it is missing; raises (never skips) if it cannot
    model = rig.build_model(tmp_path_factory.mktemp("tiny-qwen3-chat") / "model", chat=True)
    with rig.VllmServer(model, tmp_path_factory.mktemp("vllm-chat"), runner="generate", served_model=MODEL,
                        max_model_len=CONTEXT, log_name="vllm-chat") as running:
        print(f"vLLM chat server ready in {running.ready_seconds:.1f} s")
        yield running


@pytest.fixture(scope="module")
def sample_kb(tmp_path_factory):
    """The sample corpus (a copy of data/) ingested with kb's embedded model."""
    root = tmp_path_factory.mktemp("chat-kb")
    corpus = root / "data"
    shutil.copytree(DATA, corpus, ignore=shutil.ignore_patterns("chroma"))
    settings = load_settings(chroma_path=root / "chroma")
    assert ingest([corpus], settings).ok
    return settings


def server_prompt_tokens(server, messages, thinking: bool) -> int:
    """The prompt's length as vLLM counts it (Qwen3's template applied), asked with the openai client directly."""
    client = openai.OpenAI(base_url=server.v1, api_key="not-needed", max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1, temperature=0,
                                           extra_body={"chat_template_kwargs": {"enable_thinking": thinking}})
    return reply.usage.prompt_tokens


def kb_count(messages) -> int:
    """kb's count of a prompt, as its budget takes it: the messages' texts plus the template's allowance."""
    return sum(chat_tokens(m["content"], MODEL) for m in messages) + TEMPLATE_TOKENS


def retrieval_for(settings, question: str, k: int, **overrides):
    searcher = Searcher(settings)
    configured = settings.model_copy(update=overrides)
    return retrieve(question, lambda q, top: searcher.search(q, top), searcher.spec.model, configured, k=k,
                    chat_model=MODEL)


def is_solar(result) -> bool:
    return Path(result.source).as_posix().endswith("data/en/solar-power.md")


# -- streaming and usage -------------------------------------------------------------------------------


def test_chat_model_streams_an_answer_with_usage_and_the_served_name(server):
    chat = ChatModel(server.v1)  # no model configured: the one vLLM lists
    assert chat.model == MODEL
    reply = Reply(chat.model)
    pieces = list(chat.stream(MESSAGES, reply, max_tokens=16))
    assert len(pieces) >= 2 and all(pieces)
    assert reply.finish_reason in ("length", "stop")
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert 0 < reply.usage.completion_tokens <= 16
    if reply.finish_reason == "length":
        assert reply.usage.completion_tokens == 16
    assert reply.first_token_s is not None and reply.retries == 0
    # Nothing lost on the way: the streamed pieces are the text vLLM gives the same request unstreamed (greedy),
    # less the blank lines kb trims off the start.
    client = openai.OpenAI(base_url=server.v1, api_key="not-needed", max_retries=0)
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0,
                                           extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert "".join(pieces) == whole.choices[0].message.content.lstrip()
    assert whole.usage.completion_tokens == reply.usage.completion_tokens


# -- the thinking switch and kb's count of the prompt ---------------------------------------------------


def test_kb_turns_qwen3_thinking_off_through_the_chat_template(server):
    on, off = server_prompt_tokens(server, MESSAGES, True), server_prompt_tokens(server, MESSAGES, False)
    # Thinking off, Qwen3's template opens the answer with an empty think block: the prompt grows by its tokens.
    assert off - on == chat_tokens(EMPTY_THINK, MODEL) > 0
    reply = Reply(MODEL)
    list(ChatModel(server.v1, MODEL).stream(MESSAGES, reply, max_tokens=1))
    assert reply.usage.prompt_tokens == off
    # kb's budget never counts a Qwen prompt short of what the server counts.
    assert kb_count(MESSAGES) >= off, (kb_count(MESSAGES), off)


def test_kb_counts_a_real_prompt_at_least_as_long_as_vllm_does(server, sample_kb):
    retrieval = retrieval_for(sample_kb, QUESTION, 6, context_tokens=CONTEXT, answer_tokens=16)
    assert retrieval.found and len(retrieval.passages) >= 2
    reply = Reply(MODEL)
    list(ChatModel(server.v1, MODEL).stream(retrieval.messages, reply, max_tokens=1))
    counted = reply.usage.prompt_tokens
    assert counted == server_prompt_tokens(server, retrieval.messages, False)
    assert kb_count(retrieval.messages) == retrieval.prompt_tokens
    # Over, never under; and over by no more than the template's allowance.
    assert counted <= retrieval.prompt_tokens <= counted + TEMPLATE_TOKENS, (retrieval.prompt_tokens, counted)


# -- the context-length refusal -------------------------------------------------------------------------


def test_a_prompt_past_the_models_context_is_refused_with_a_clear_message(server):
    chat = ChatModel(server.v1, MODEL, retries=0)
    too_long = [{"role": "user", "content": "sun " * (CONTEXT + 100)}]
    with pytest.raises(ContextTooLongError) as caught:
        list(chat.stream(too_long, Reply(MODEL), max_tokens=16))
    message = str(caught.value)
    assert server.v1 in message
    assert "--context-tokens" in message
    assert f"maximum context length is {CONTEXT} tokens" in message  # vLLM's own words, passed on


def test_an_answer_refused_for_length_keeps_the_passages(server, sample_kb):
    # kb believes the chat model takes 8,192 tokens; the server takes 2,048.
    retrieval = retrieval_for(sample_kb, QUESTION, 50, context_tokens=8192, answer_tokens=16)
    assert retrieval.prompt_tokens > CONTEXT
    passages = list(retrieval.passages)
    events = list(stream(retrieval, ChatModel(server.v1, MODEL)))
    assert not [e for e in events if isinstance(e, Delta)]
    assert len(events) == 1 and isinstance(events[0], Done)
    answer = events[0].answer
    assert answer.error and "--context-tokens" in answer.error and server.v1 in answer.error
    assert answer.passages == passages and is_solar(answer.passages[0])
    assert answer.answer == "" and answer.citations == [] and answer.model == MODEL


# -- ask, end to end --------------------------------------------------------------------------------------


def test_ask_end_to_end_against_vllm(server, sample_kb):
    settings = sample_kb.model_copy(update={"context_tokens": CONTEXT})
    events = list(ask(QUESTION, Searcher(settings), ChatModel(server.v1), settings, answer_tokens=32))
    assert isinstance(events[0], Retrieved)
    retrieval = events[0].retrieval
    assert retrieval.found and is_solar(retrieval.passages[0])
    deltas = [e.text for e in events if isinstance(e, Delta)]
    assert deltas and isinstance(events[-1], Done)
    answer = events[-1].answer
    assert answer.error is None, answer.error
    assert answer.model == MODEL and answer.finish_reason in ("length", "stop")
    assert answer.answer == "".join(deltas)
    usage = answer.usage
    assert usage and 0 < usage["completion_tokens"] <= 32
    # The budget held: vLLM counted no more of the prompt than kb did, and prompt and answer fit the context.
    assert 0 < usage["prompt_tokens"] <= retrieval.prompt_tokens
    assert retrieval.prompt_tokens + retrieval.answer_tokens <= CONTEXT
    assert answer.latency_ms["first_token"] is not None and answer.latency_ms["total"] >= answer.latency_ms["search"]


def test_kb_ask_on_the_command_line_streams_vllms_answer(server, sample_kb):
    """The issue's own command, against the real server: the answer streams, passage [1] is the solar file."""
    env = {"KB_CHROMA_PATH": str(sample_kb.chroma_path), "KB_ANSWER_TOKENS": "24"}
    result = kb("ask", QUESTION, "--chat-endpoint", server.v1, "--context-tokens", str(CONTEXT), "--json",
                cwd=sample_kb.chroma_path.parent, env=env, check=0)
    data = json.loads(result.stdout)
    assert data["model"] == MODEL and data["error"] is None and data["answer"]
    assert data["passages"][0]["source"].endswith("data/en/solar-power.md")
    assert 0 < data["usage"]["completion_tokens"] <= 24
