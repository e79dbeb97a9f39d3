"""kb_app.chat against the scripted chat server (tests/fakechat.py), for what a real server cannot do on demand:
429 and 503 before the answer, a connection dropped mid-stream, a stream with no finish, an error event, a context
too long, a server that refuses `chat_template_kwargs`. The real vLLM is in test_chat_vllm.py."""

from __future__ import annotations

import pytest

from ingest.errors import ChatBusyError, ChatError, ConfigError, ContextTooLongError
from ingest.settings import Settings
from kb_app.answer import Done, Retrieval, stream
from kb_app.chat import ChatModel, Reply
from kb_app.search import SearchResult
from tests.fakechat import FakeChatServer
from tests.rigs.servers import free_port

MESSAGES = [{"role": "user", "content": "How do solar panels work?"}]


@pytest.fixture
def chat_server():
    with FakeChatServer() as server:
        yield server


def answer_of(chat: ChatModel, reply: Reply | None = None) -> str:
    return "".join(chat.stream(MESSAGES, reply))


def test_streams_in_pieces_with_usage_and_turns_thinking_off(chat_server):
    chat_server.script("<think>Let me see.</think>\n\nPanels turn light into current [1].")
    chat = ChatModel(chat_server.url)
    assert chat.model == "fake-chat"  # none configured: the endpoint's first model
    reply = Reply(chat.model)
    pieces = list(chat.stream(MESSAGES, reply))
    assert len(pieces) > 5 and "".join(pieces) == "Panels turn light into current [1]."
    assert reply.thinking_stripped and reply.finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    body = chat_server.bodies[-1]
    assert body["stream"] and body["stream_options"] == {"include_usage": True}
    assert body["chat_template_kwargs"] == {"enable_thinking": False} and body["max_tokens"] == 1024


def test_transient_refusals_are_retried_before_the_first_token(chat_server):
    chat_server.script("429:0", "503", "drop", "The answer [1].")
    reply = Reply("fake-chat")
    assert answer_of(ChatModel(chat_server.url, "fake-chat", retries=3), reply) == "The answer [1]."
    assert reply.retries == 3 and chat_server.requests == 4


def test_an_overloaded_server_fails_after_the_retries_saying_so(chat_server):
    chat_server.script("503", "503", "429")
    with pytest.raises(ChatBusyError, match=r"overloaded \(HTTP 429.*after 3 tries"):
        answer_of(ChatModel(chat_server.url, "fake-chat", retries=2))
    assert chat_server.requests == 3


@pytest.mark.parametrize("fault", ["cut", "nofinish", "error"])
def test_a_stream_cut_short_is_an_error_after_the_text_that_came(chat_server, fault):
    chat_server.script(f"{fault}:Panels turn light", "never asked")
    chat = ChatModel(chat_server.url, "fake-chat", retries=3)
    pieces = []
    with pytest.raises(ChatError, match="after 17 characters") as caught:
        for piece in chat.stream(MESSAGES):
            pieces.append(piece)
    assert "".join(pieces) == "Panels turn light"
    assert chat_server.url in str(caught.value) and "missing" in str(caught.value)
    assert chat_server.requests == 1  # after the first token nothing is retried: the text would repeat


def test_a_context_too_long_says_what_to_lower(chat_server):
    chat_server.script("toolong")
    with pytest.raises(ContextTooLongError, match="maximum context length.*--context-tokens"):
        answer_of(ChatModel(chat_server.url, "fake-chat"))


def test_a_server_that_refuses_template_kwargs_is_asked_again_without_them(chat_server):
    chat_server.refuse_template_kwargs = True
    chat = ChatModel(chat_server.url, "fake-chat")
    assert answer_of(chat) == "An answer [1]."
    assert "chat_template_kwargs" not in chat_server.bodies[-1]
    answer_of(chat)
    assert chat_server.requests == 3  # the field is dropped for good: one refusal, not one per question


def test_refusals_name_the_endpoint_and_what_to_check(chat_server):
    chat_server.script("401", "404")
    with pytest.raises(ChatError, match="refused the API key .KB_CHAT_API_KEY"):
        answer_of(ChatModel(chat_server.url, "fake-chat"))
    with pytest.raises(ChatError, match="no model 'nope'.*KB_CHAT_MODEL"):
        answer_of(ChatModel(chat_server.url, "nope"))
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ChatError, match=f"cannot reach the chat endpoint {nowhere}"):
        answer_of(ChatModel(nowhere, "m", retries=1))
    with pytest.raises(ChatError, match=f"cannot reach the chat endpoint {nowhere}"):
        ChatModel(nowhere).model  # noqa: B018 - the lookup is what fails
    with pytest.raises(ConfigError, match="KB_CHAT_ENDPOINT"):
        ChatModel.from_settings(Settings())


def test_the_api_key_goes_to_the_server_as_a_bearer_token(chat_server, monkeypatch):
    monkeypatch.setenv("KB_CHAT_API_KEY", "sk-test-9d1e")
    monkeypatch.setenv("KB_CHAT_ENDPOINT", chat_server.url)
    settings = Settings()
    assert "sk-test-9d1e" not in repr(settings) and settings.public_dict()["chat_api_key"] == "set"
    answer_of(ChatModel.from_settings(settings))
    assert chat_server.headers[-1]["authorization"] == "Bearer sk-test-9d1e"


def test_a_failed_answer_keeps_its_passages_and_its_partial_text(chat_server):
    passage = SearchResult(rank=1, score=0.6, text="Panels make current.", source="/d/solar.md", page=None,
                           chunk_id="c1", title="Solar", file_type="md", start=0, end=20, dense_score=0.6)
    retrieval = Retrieval("How?", "knowledge", "dense", [passage], True, 0.6, 0.35, "en",
                          messages=MESSAGES, answer_tokens=64)
    chat_server.script("cut:Panels make current [1] and th")
    *deltas, done = list(stream(retrieval, ChatModel(chat_server.url, "fake-chat")))
    assert isinstance(done, Done)
    answer = done.answer
    assert "".join(d.text for d in deltas) == answer.answer == "Panels make current [1] and th"
    assert answer.error and "broke off" in answer.error and not answer.complete
    assert [c.n for c in answer.citations] == [1] and answer.passages == [passage]
