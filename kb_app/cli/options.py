"""Every option more than one command takes, declared once: typer has no option groups, so each is an
`Annotated` alias the commands (and `python -m bench.run`) use as a parameter's type. The bracket in a help
text names the environment variable and the default the option stands in for."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

# Where the store is and which model reads it: every command.
Collection = Annotated[Optional[str], typer.Option("--collection", "-c", help="Knowledge base name [KB_COLLECTION]")]
ChromaPath = Annotated[Optional[Path], typer.Option(help="Embedded Chroma folder [KB_CHROMA_PATH; data/chroma]")]
ChromaUrl = Annotated[Optional[str], typer.Option(help="Chroma server URL, e.g. http://127.0.0.1:8000 [KB_CHROMA_URL]")]
ChromaTenant = Annotated[Optional[str], typer.Option(help="Chroma server tenant [KB_CHROMA_TENANT; default_tenant]")]
ChromaDatabase = Annotated[Optional[str], typer.Option(
    help="Chroma server database; kb ingest creates it if missing [KB_CHROMA_DATABASE; default_database]")]
Endpoint = Annotated[
    Optional[list[str]],
    typer.Option(help="OpenAI-compatible base URL, repeatable [KB_ENDPOINT, comma-separated]; none: embedded model"),
]
Model = Annotated[Optional[str], typer.Option(help="Served model name [KB_MODEL]")]
Config = Annotated[Optional[Path], typer.Option(help="TOML config file [KB_CONFIG; ./kb.toml]")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout")]

# How documents become vectors: the commands that embed (ingest, reembed, eval).
ChunkTokens = Annotated[Optional[int], typer.Option(help="Max tokens per chunk [256]")]
Overlap = Annotated[Optional[int], typer.Option(help="Tokens shared by neighbouring chunks [32]")]
Headings = Annotated[Optional[bool], typer.Option(
    "--headings/--no-headings", help="Also embed each heading on its own, standing for its section [on]")]
InstructionName = Annotated[Optional[str], typer.Option(help="auto, qwen3, e5, input-type or none")]
QueryTask = Annotated[Optional[str], typer.Option(help="Qwen3 query instruction task")]
Dimensions = Annotated[Optional[int], typer.Option(help="Matryoshka output dimension")]
Tokenizer = Annotated[Optional[str], typer.Option(help="qwen3, e5, usem3, server, or a tokenizer.json path")]

# How the pipeline runs: ingest and the benchmarks.
BatchInputs = Annotated[Optional[int], typer.Option(help="Max inputs per request [32]")]
BatchTokens = Annotated[Optional[int], typer.Option(help="Max tokens per request [16384]")]
MaxInFlight = Annotated[Optional[int], typer.Option(help="Most requests in flight per endpoint [32]")]
Ocr = Annotated[Optional[str], typer.Option(
    help="Which pages OCR reads: auto (scanned PDF pages, images), always (every page) or never [KB_OCR]")]
OcrEngine = Annotated[Optional[str], typer.Option(
    help="rapidocr (installed with kb) or tesseract (Debian's tesseract-ocr, with KB_OCR_LANGUAGES packs) "
         "[KB_OCR_ENGINE]")]
Workers = Annotated[Optional[int], typer.Option(help="Parsing processes (0: auto) [0]")]

# How search ranks: search and eval.
Mode = Annotated[Optional[str], typer.Option(
    "--mode", help="dense (vectors alone) or hybrid (vectors and BM25, fused by reciprocal rank) [KB_SEARCH_MODE]")]
Rerank = Annotated[Optional[bool], typer.Option(
    "--rerank/--no-rerank", help="Reorder the best passages with the reranker at --rerank-endpoint [KB_RERANK]")]
RerankEndpoint = Annotated[Optional[str], typer.Option(
    help="Rerank API base URL (vLLM, SGLang, Cohere/Jina style) [KB_RERANK_ENDPOINT]")]
RerankModel = Annotated[Optional[str], typer.Option(help="Served reranker name [KB_RERANK_MODEL]")]
RerankApi = Annotated[Optional[str], typer.Option(
    help="rerank: POST /rerank (vLLM, SGLang, Cohere, Jina); score: vLLM's POST /score [KB_RERANK_API]")]

