"""`kb bench --endpoint URL --model NAME`: ingest a corpus into a scratch store through kb's real pipeline
against the user's own embedding server, and report throughput, each stage's time and CPU, and peak memory.

The simulated GPU server and the peer comparisons are benchmarks of kb itself, not of a deployment: they live
in `bench/` (`python -m bench.run`), which builds on this module.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ingest.pipeline import ingest
from ingest.report import Progress, StageTimes
from ingest.settings import load_settings

# The chunking bench.baselines' peer pipelines use (512 tokens, 64 overlap, no heading entries): a bench run
# measures the same work whether or not it is compared; a flag given overrides it.
BENCH_CHUNKING = {"chunk_tokens": 512, "overlap": 64, "headings": False}
FIRST_REQUEST = "to the first request"  # stage_wall_seconds' keys for the run's ends around the embedding
AFTER_LAST_ANSWER = "after the last answer"


@dataclass
class BenchResult:
    files: int
    failed: int
    chunks: int
    tokens: int
    seconds: float
    tokens_per_s: float
    chunks_per_s: float
    requests: int
    retries: int
    server: dict | None  # the simulator's own account (bench.run), None for a real endpoint
    share_of_capacity: float | None  # end to end, against the simulator's capacity
    cpu_seconds_per_1000_tokens: dict[str, float]  # client CPU by stage
    stage_wall_seconds: dict[str, float]
    corpus_bytes: int = 0  # of the files kb took
    peak_rss_mb: dict[str, float] | None = None  # kb's processes (see RssSampler)
    failures: list[list[str]] = field(default_factory=list)  # [file, reason] for each file that failed

    def to_dict(self) -> dict:
        return asdict(self)


class RssSampler:
    """Peak resident memory of this process and its descendants, by role: the pipeline's own process, its
    parsing workers (`kb-parse`, summed) and its store process (`kb-store`), sampled from /proc every
    `interval` seconds. `exclude` leaves out processes that are not kb's (a server started beside it). Sums
    count shared pages once per process: they over-state, never under-state.
    """

    def __init__(self, exclude: set[int] | None = None, interval: float = 0.2,
                 apart: dict[int, str] | None = None) -> None:
        self.exclude, self.interval = exclude or set(), interval
        self.apart = apart or {}  # other programs kb talks to, reported by name but not counted as kb's
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="kb-rss")

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, float]:
        """Peak MB by role, and of all kb's processes together."""
        return {role: round(size / (1024 * 1024), 1) for role, size in self.peaks.items()}

    def _run(self) -> None:
        me = os.getpid()
        while True:
            roles: dict[str, int] = {}
            for pid in _descendants(me) - self.exclude - set(self.apart):
                role = "pipeline process" if pid == me else _ROLES.get(_comm(pid), "helpers starting up")
                roles[role] = roles.get(role, 0) + rss_bytes(pid)
            roles["all kb processes"] = sum(roles.values())
            for pid, name in self.apart.items():
                roles[name] = rss_bytes(pid)
            for role, size in roles.items():
                self.peaks[role] = max(self.peaks.get(role, 0), size)
            if self._stop.wait(self.interval):
                return


_ROLES = {"kb-parse": "parsing workers", "kb-store": "store process"}


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _descendants(root: int) -> set[int]:
    """`root` and every process below it, from the parent ids in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    parent = int(handle.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of one process now; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0  # gone meanwhile


def stage_walls(stages: StageTimes) -> dict[str, float]:
    """Wall seconds by stage, and the run's ends around the embedding: from its start to the first request,
    from the last answer to its end (the time an embedding server idles while kb starts and finishes)."""
    walls = {"parse+chunk": round(stages.prepare_wall, 2),
             "embed (summed over requests)": round(stages.embed_wall, 2),
             "store": round(stages.store_wall, 2)}
    if stages.to_first_request is not None and stages.after_last_answer is not None:
        walls[FIRST_REQUEST] = round(stages.to_first_request, 3)
        walls[AFTER_LAST_ANSWER] = round(stages.after_last_answer, 3)
    return walls


def run_bench(
    paths: Sequence[str | Path],
    *,
    endpoint: str,
    model: str | None = None,
    progress: Progress | None = None,
    store_process: bool | None = None,
    chroma_url: str | None = None,
    exclude: set[int] | None = None,
    apart: dict[int, str] | None = None,
    **flags: object,
) -> BenchResult:
    """Ingest `paths` into a fresh temporary store through `endpoint` and measure. `flags` are kb settings
    (batch_inputs, tokenizer, ...). `chroma_url`: into that Chroma server instead of an embedded store.
    `exclude` and `apart` go to RssSampler: processes beside kb's, left out or reported by name."""
    flags = BENCH_CHUNKING | {k: v for k, v in flags.items() if v is not None}
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as scratch:
        store = {"chroma_url": chroma_url} if chroma_url else {"chroma_path": Path(scratch) / "chroma"}
        settings = load_settings(endpoint=[endpoint], model=model, collection="bench", **store, **flags)
        with RssSampler(exclude=exclude, apart=apart) as memory:
            report = ingest(paths, settings, progress=progress, store_process=store_process)
    return BenchResult(
        files=len(report.outcomes), failed=len(report.of("failed")), chunks=report.chunks, tokens=report.tokens,
        seconds=round(report.seconds, 2), tokens_per_s=round(report.tokens / report.seconds) if report.seconds else 0,
        chunks_per_s=round(report.chunks / report.seconds, 1) if report.seconds else 0,
        requests=report.stats.requests, retries=report.stats.retries, server=None, share_of_capacity=None,
        cpu_seconds_per_1000_tokens=report.stages.per_thousand_tokens(report.tokens),
        stage_wall_seconds=stage_walls(report.stages),
        corpus_bytes=report.bytes, peak_rss_mb=memory.report(),
        failures=[[outcome.source, outcome.reason or ""] for outcome in report.of("failed")],
    )
