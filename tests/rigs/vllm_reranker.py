"""A real vLLM (CPU build) serving a tiny random-weight Qwen3 reranker, for integration tests of vLLM's rerank APIs.

The model is the tiny Qwen3 of tiny_qwen3.py, served the way vLLM documents serving Qwen/Qwen3-Reranker: a causal
LM turned into a sequence classifier at load time (`Qwen3ForSequenceClassification`, score = softmax over the
"no"/"yes" logits of the last token), with the Qwen3-Reranker prompt template. Like the real reranker it uses
Qwen3's plain chat tokenizer (no `<|endoftext|>` appended; that is Qwen3-Embedding's tokenizer), so `usage` counts
the templated query+document prompt. Scores are meaningless (random weights, all near 0.5-0.6): the rig proves the
plumbing (`/rerank`, `/v1/rerank`, `/v2/rerank`, `/score`, `top_n`, `usage`, errors), not ranking quality.

    with VllmReranker(build_reranker(tmp / "model"), tmp / "work") as server:
        httpx.post(f"{server.url}/rerank", json={"model": server.model, "query": "q", "documents": ["a", "b"]})

It reuses tests/rigs/vllm.py: the same venv (`ensure_venv()` first), model builder, environment and shutdown.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.rigs.vllm import VllmServer, build_model, qwen3_tokenizer_dir

SERVED_RERANKER = "tiny-random-Qwen3-Reranker"
# What vLLM's docs pass for Qwen/Qwen3-Reranker, whose config.json says Qwen3ForCausalLM.
HF_OVERRIDES = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}
TEMPLATE_NAME = "qwen3_reranker.jinja"
# vLLM's examples/pooling/score/template/qwen3_reranker.jinja (not shipped in the wheel): without it vLLM warns and
# scores the bare query+document concatenation. A request's `instruction` (or chat_template_kwargs) fills <Instruct>.
QWEN3_RERANKER_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    "provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n"
    "<Instruct>: {{ instruction | default(instruct | default(messages | selectattr(\"role\", \"eq\", \"system\") "
    "| map(attribute=\"content\") | first | default(\"Given a web search query, retrieve relevant passages that "
    "answer the query\", true), true), true) }}\n"
    "<Query>: {{ messages | selectattr(\"role\", \"eq\", \"query\") | map(attribute=\"content\") | first }}\n"
    "<Document>: {{ messages | selectattr(\"role\", \"eq\", \"document\") | map(attribute=\"content\") | first }}"
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
)


def build_reranker(out: Path) -> Path:
    """The tiny Qwen3 model folder with Qwen3's chat tokenizer and the reranker prompt template."""
    build_model(out)
    shutil.copyfile(qwen3_tokenizer_dir() / "tokenizer.json", out / "tokenizer.json")
    (out / TEMPLATE_NAME).write_text(QWEN3_RERANKER_TEMPLATE, encoding="utf-8")
    return out


class VllmReranker(VllmServer):
    """vLLM's OpenAI server in the vLLM venv with the tiny reranker, offline, on a free loopback port.

    `url` is the root: `/rerank`, `/v1/rerank`, `/v2/rerank` (Jina/Cohere style), `/score`, `/tokenize`.
    Stopping (and the context manager) is VllmServer's: the whole process group goes.
    """

    def __init__(self, model_dir: Path, workdir: Path, *, max_model_len: int = 8192,
                 served_model: str = SERVED_RERANKER, template: bool = True, startup_seconds: float = 600) -> None:
        serve_args = ["--hf-overrides", json.dumps(HF_OVERRIDES)]
        if template:
            serve_args += ["--chat-template", str(Path(model_dir) / TEMPLATE_NAME)]
        super().__init__(model_dir, workdir, max_model_len=max_model_len, served_model=served_model,
                         startup_seconds=startup_seconds, serve_args=serve_args, log_name="vllm-reranker")

    def __enter__(self) -> VllmReranker:
        return self
