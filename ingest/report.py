"""What an ingest run reports: each file's outcome, where the time went, and the progress it tells as it goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from .embeddings import EmbedStats

Status = Literal["ingested", "unchanged", "failed", "pruned"]


@dataclass
class FileOutcome:
    """What became of one file (or of the store's leftovers, when pruning): `reason` says why it failed."""

    source: str
    status: Status
    chunks: int = 0
    tokens: int = 0
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    reused: int = 0  # of `chunks`, those whose stored vectors were reused rather than embedded again


@dataclass
class StageTimes:
    """Where the client's time went: wall and CPU seconds per stage.

    Parse+chunk CPU is the working threads'; a store process's CPU is the whole process's, Chroma's
    native threads (HNSW inserts) included. `embed_cpu` is the rest of this process's CPU: the event
    loop, the HTTP client and vector decoding (and Chroma's native threads when the store is in this
    process, which thread CPU clocks cannot tell apart).
    """

    prepare_wall: float = 0.0
    prepare_cpu: float = 0.0
    parse_cpu: float = 0.0  # the reading part of prepare_cpu; the rest is chunking and token counting
    store_wall: float = 0.0
    store_cpu: float = 0.0
    embed_wall: float = 0.0  # summed over requests in flight: exceeds the run's wall time when they overlap
    process_cpu: float = 0.0  # this process only
    prepare_in_workers: bool = False  # parse+chunk CPU was spent in worker processes, not in process_cpu
    store_in_process: bool = False  # the store's CPU was spent in a store process, not in process_cpu
    # The run's start and end around the embedding (None when nothing was sent): seconds from the run's
    # start to its first embedding request, and from the last answer to the run's end.
    to_first_request: float | None = None
    after_last_answer: float | None = None

    @property
    def embed_cpu(self) -> float:
        local_prepare = 0.0 if self.prepare_in_workers else self.prepare_cpu
        local_store = 0.0 if self.store_in_process else self.store_cpu
        return max(0.0, self.process_cpu - local_prepare - local_store)

    @property
    def total_cpu(self) -> float:
        return (self.process_cpu + (self.prepare_cpu if self.prepare_in_workers else 0.0)
                + (self.store_cpu if self.store_in_process else 0.0))

    def per_thousand_tokens(self, tokens: int) -> dict[str, float]:
        """Client CPU seconds per 1,000 tokens, by stage: how many client cores a given GPU rate needs."""
        if not tokens:
            return {}
        scale = 1000 / tokens
        return {
            "parse": round(self.parse_cpu * scale, 5),
            "chunk+tokenise": round((self.prepare_cpu - self.parse_cpu) * scale, 5),
            "embed client": round(self.embed_cpu * scale, 5),
            "store": round(self.store_cpu * scale, 5),
            "total": round(self.total_cpu * scale, 5),
        }


@dataclass
class IngestReport:
    """A run's outcome file by file, with its totals and where its time went."""

    collection: str
    model: str
    outcomes: list[FileOutcome]
    seconds: float
    stats: EmbedStats
    stages: StageTimes = field(default_factory=StageTimes)
    bytes: int = 0  # size of the files read (the unchanged ones are not)
    shard: str | None = None  # I/N when this run took one worker's share
    other_shards: int = 0  # files found that belong to the other workers' shards

    def of(self, status: Status) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def chunks(self) -> int:
        return sum(o.chunks for o in self.of("ingested"))

    @property
    def tokens(self) -> int:
        return sum(o.tokens for o in self.of("ingested"))

    @property
    def reused(self) -> int:
        """Chunks stored with a vector reused from the store (same model input), not embedded again."""
        return sum(o.reused for o in self.of("ingested"))

    @property
    def embedded(self) -> int:
        """Chunks sent to the embedding model."""
        return self.chunks - self.reused

    @property
    def ok(self) -> bool:
        return not self.of("failed")

    def to_dict(self) -> dict:
        return {
            "collection": self.collection,
            "model": self.model,
            "seconds": round(self.seconds, 3),
            "ingested": len(self.of("ingested")),
            "unchanged": len(self.of("unchanged")),
            "failed": len(self.of("failed")),
            "pruned": len(self.of("pruned")),
            "shard": self.shard,
            "other_shards": self.other_shards,
            "chunks": self.chunks,
            "embedded": self.embedded,
            "reused": self.reused,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "requests": self.stats.requests,
            "retries": self.stats.retries,
            "in_flight": self.stats.in_flight,
            "cpu_seconds_per_1000_tokens": self.stages.per_thousand_tokens(self.tokens),
            "files": [o.__dict__ for o in self.outcomes],
        }


class Progress(Protocol):
    """What the pipeline tells a progress display. Every method is optional to act on."""

    def start(self, files: int, total_bytes: int) -> None: ...
    def planned(self, chunks: int, tokens: int) -> None: ...
    def embedded(self, chunks: int, tokens: int) -> None: ...
    # Of the chunks done, those whose stored vectors were reused (counted in `embedded` too, as done).
    def reused(self, chunks: int, tokens: int) -> None: ...
    def file_progress(self, source: str, done: int, total: int) -> None: ...
    def file_done(self, outcome: FileOutcome, size: int) -> None: ...
    def waiting(self, message: str) -> None: ...


class Silent(Progress):
    """The progress of a run nobody watches: it inherits Progress's methods, which do nothing."""
