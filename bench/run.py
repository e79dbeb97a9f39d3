"""`kb bench`: ingest a corpus through kb's real pipeline and report throughput against the server's capacity.

With no endpoint, a simulated SGLang-like server (bench.simserver) runs in its own process, as a real
server would, and reports how many tokens its simulated GPU processed; the share of capacity is
end to end: tokens / (the whole ingest's wall time x capacity), parsing and Chroma writes included.
With --endpoint it measures a real server (client-side figures only).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Self, Sequence

import httpx

from ingest.pipeline import Progress, ingest
from ingest.settings import load_settings


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
    server: dict | None  # the simulator's own account, None for a real endpoint
    share_of_capacity: float | None  # end to end
    cpu_seconds_per_1000_tokens: dict[str, float]  # client CPU by stage
    stage_wall_seconds: dict[str, float]
    corpus_bytes: int = 0  # of the files kb took
    peak_rss_mb: dict[str, float] | None = None  # kb's processes (see RssSampler)
    failures: list[list[str]] = field(default_factory=list)  # [file, reason] for each file that failed

    def to_dict(self) -> dict:
        return asdict(self)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, seconds: float = 60, log: Path | None = None) -> None:
    """Wait until a server we started answers `url`; fail early, with its log, if it exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text()[-2000:] if log else ""
            raise RuntimeError(f"server exited with {process.returncode}: {output}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not up after {seconds} s")


class RssSampler:
    """Peak resident memory of this process and its descendants, by role: the pipeline's own process, its
    parsing workers (`kb-parse`, summed) and its store process (`kb-store`), sampled from /proc every
    `interval` seconds. `exclude` leaves out processes that are not kb's (the simulated server). Sums
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
        page = os.sysconf("SC_PAGE_SIZE")
        me = os.getpid()
        while True:
            roles: dict[str, int] = {}
            for pid in _descendants(me) - self.exclude - set(self.apart):
                role = "pipeline process" if pid == me else _ROLES.get(_comm(pid), "helpers starting up")
                roles[role] = roles.get(role, 0) + _rss_pages(pid) * page
            roles["all kb processes"] = sum(roles.values())
            for pid, name in self.apart.items():
                roles[name] = _rss_pages(pid) * page
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


def _rss_pages(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0  # gone meanwhile


class _ServerProcess:
    """A server kb's benchmarks start as a child process, its output in a log file; stopped on exit."""

    process: subprocess.Popen
    _log: IO[str]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SimulatedServer(_ServerProcess):
    """bench.simserver in a child process, on a free loopback port."""

    def __init__(self, model_size: str = "4b", dim: int | None = None, log: Path | None = None,
                 speed: float = 1.0, port: int | None = None, extra: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        command = [sys.executable, "-m", "bench.simserver", "--port", str(self.port), "--model-size", model_size,
                   "--speed", str(speed), *extra]
        if dim:
            command += ["--dim", str(dim)]
        self._log = open(log or Path(tempfile.mkdtemp()) / "simserver.log", "w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        wait_http(f"http://127.0.0.1:{self.port}/health", self.process, log=Path(self._log.name))
        self.model = httpx.get(f"{self.url}/models", timeout=5).json()["data"][0]["id"]

    def reset(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/reset", timeout=5)

    def stats(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()

class ChromaServer(_ServerProcess):
    """A real `chroma run` server with its own data folder, on a free loopback port."""

    def __init__(self, path: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "w")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "chroma"), "run", "--path", str(path), "--host", "127.0.0.1",
             "--port", str(self.port)], stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_http(f"{self.url}/api/v2/heartbeat", self.process, log=log)
        except BaseException:
            self.close()
            raise

def run_bench(
    paths: Sequence[str | Path],
    *,
    endpoint: str | None = None,
    model: str | None = None,
    model_size: str = "4b",
    dim: int | None = None,
    progress: Progress | None = None,
    store_process: bool | None = None,
    chroma_server: bool = False,
    **flags: object,
) -> BenchResult:
    """Ingest `paths` into a fresh temporary store and measure. `flags` are kb settings (batch_inputs, ...).
    `chroma_server`: into a `chroma run` server started here (its memory reported apart from kb's)."""
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as scratch, contextlib.ExitStack() as running:
        server = None
        if not endpoint:
            server = running.enter_context(SimulatedServer(model_size, dim, Path(scratch) / "simserver.log"))
        chroma = None
        if chroma_server:
            (Path(scratch) / "chroma-server").mkdir()
            chroma = running.enter_context(ChromaServer(Path(scratch) / "chroma-server", Path(scratch) / "chroma.log"))
        url = endpoint or server.url  # type: ignore[union-attr]
        served = model or (server.model if server else None)
        # The chunks the baselines make (bench.baselines: 512 tokens, 64 overlap, no heading entries), unless
        # asked otherwise: `--compare` measures the same work done three ways.
        flags = {"chunk_tokens": 512, "overlap": 64, "headings": False} | {k: v for k, v in flags.items() if v is not None}
        settings = load_settings(
            endpoint=[url], model=served, collection="bench",
            **({"chroma_url": chroma.url} if chroma else {"chroma_path": Path(scratch) / "chroma"}),
            tokenizer=flags.pop("tokenizer", None) or ("qwen3" if server else None), **flags,
        )
        if server:
            server.reset()
        apart = {chroma.process.pid: "Chroma server (not kb's)"} if chroma else {}
        with RssSampler(exclude={server.process.pid} if server else set(), apart=apart) as memory:
            report = ingest(paths, settings, progress=progress, store_process=store_process)
        stats = server.stats() if server else None
    share = None
    if stats:
        share = round(stats["tokens"] / (report.seconds * stats["capacity_tokens_per_s"]), 4)
    return BenchResult(
        files=len(report.outcomes), failed=len(report.of("failed")), chunks=report.chunks, tokens=report.tokens,
        seconds=round(report.seconds, 2), tokens_per_s=round(report.tokens / report.seconds) if report.seconds else 0,
        chunks_per_s=round(report.chunks / report.seconds, 1) if report.seconds else 0,
        requests=report.stats.requests, retries=report.stats.retries, server=stats, share_of_capacity=share,
        cpu_seconds_per_1000_tokens=report.stages.per_thousand_tokens(report.tokens),
        stage_wall_seconds={"parse+chunk": round(report.stages.prepare_wall, 2),
                            "embed (summed over requests)": round(report.stages.embed_wall, 2),
                            "store": round(report.stages.store_wall, 2)},
        corpus_bytes=report.bytes, peak_rss_mb=memory.report(),
        failures=[[outcome.source, outcome.reason or ""] for outcome in report.of("failed")],
    )
