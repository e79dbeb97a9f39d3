"""Which files one of N ingest workers owns (`kb ingest --shard I/N`).

A file belongs to shard 1 + (SHA-256 of its source path) mod N: decided by the path alone, so every
worker agrees without seeing the others' files or talking to them, a file keeps its shard when others
are added or removed, and the N shards together cover every file exactly once. The path is the one kb
records as the document's source (absolute): workers on several machines must see the corpus at the
same path, as they must anyway for their records to name the same documents.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Shard:
    index: int  # 1..count
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
        if not match:
            raise ConfigError(f"--shard {text!r} is not I/N (e.g. 1/4: the first of four workers)")
        index, count = int(match[1]), int(match[2])
        if count < 1 or not 1 <= index <= count:
            raise ConfigError(f"--shard {text!r}: I must be from 1 to N (N workers, numbered from 1)")
        return cls(index, count)

    def owns(self, source: str) -> bool:
        digest = hashlib.sha256(source.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
