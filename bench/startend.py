"""How long `kb ingest` takes to start embedding and to end once embedding is done, seen from outside.

`kb ingest` runs as a subprocess against the simulated GPU server (bench.simserver) into a scratch store.
The clock starts just before the process is executed and stops when it has exited; the server notes when
it received the first embedding request and when it sent the last answer (both on the machine's monotonic
clock, which every process shares). Reported: process start -> first request, last answer -> process exit,
and the whole run.

    python -m bench.startend --corpus docs [--runs 1] [--before DIR] [--json]

`--before DIR`: also run kb from the source tree DIR (e.g. `git archive COMMIT | tar -x -C DIR`), one run of
each in turn, so both are measured on the same machine at the same time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from bench.servers import SimulatedServer
from kb_app.benchmark import BENCH_CHUNKING


@dataclass
class StartEnd:
    code: str  # "this tree", or the source tree of --before
    to_first_request: float  # process start -> the server received the first embedding request
    after_last_answer: float  # the server sent the last answer -> the process exited
    seconds: float  # the whole process
    exit_code: int
    requests: int
    tokens: int


def kb_command(code: Path | None = None) -> list[str]:
    """The `kb` console script of this environment, or kb's CLI from the source tree `code`."""
    if code is not None:
        return [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = 'kb'; "
                                      "from kb_app.cli import main; main()", str(code)]
    found = Path(sys.executable).with_name("kb")
    return [str(found)] if found.exists() else [shutil.which("kb") or "kb"]


def measure(paths: Sequence[Path], model_size: str = "4b", speed: float = 1.0, code: Path | None = None) -> StartEnd:
    """One `kb ingest` of `paths` into a fresh store, timed from outside (`code`: kb from that source tree)."""
    with tempfile.TemporaryDirectory(prefix="kb-startend-") as scratch:
        server = SimulatedServer(model_size, log=Path(scratch) / "simserver.log", speed=speed)
        try:
            command = [*kb_command(code), "ingest", *map(str, paths), "--endpoint", server.url, "--model", server.model,
                       "--chroma-path", str(Path(scratch) / "chroma"), "--collection", "bench",
                       "--tokenizer", "qwen3", "--chunk-tokens", str(BENCH_CHUNKING["chunk_tokens"]),
                       "--overlap", str(BENCH_CHUNKING["overlap"]), "--no-headings", "--json"]
            with open(Path(scratch) / "kb.out", "w") as output:
                started = time.monotonic()
                process = subprocess.run(command, stdout=output, stderr=subprocess.DEVNULL, cwd=scratch)
                ended = time.monotonic()
            stats = server.stats()
        finally:
            server.close()
    first, last = stats["first_request_at"], stats["last_answer_at"]
    return StartEnd(str(code or "this tree"), round(first - started, 3) if first else -1.0,
                    round(ended - last, 3) if last else -1.0, round(ended - started, 2), process.returncode,
                    stats["requests"], stats["tokens"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.startend", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--corpus", help="a bench.corpus corpus: docs, python-library, pdf or large")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--model-size", default="4b")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--before", type=Path, help="a kb source tree to measure in turn with this one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    paths = list(args.paths)
    if args.corpus:
        from bench.corpus import fetch

        paths += fetch(args.corpus)
    if not paths:
        parser.error("give paths or --corpus")
    codes = [args.before, None] if args.before else [None]
    runs = [measure(paths, args.model_size, args.speed, code) for _ in range(args.runs) for code in codes]
    if args.json:
        print(json.dumps([asdict(run) for run in runs], indent=2))
        return
    print("code | process start -> first request | last answer -> exit | whole run | exit code | requests | tokens")
    for run in runs:
        print(f"{run.code} | {run.to_first_request:.2f} s | {run.after_last_answer:.2f} s | {run.seconds:.1f} s | "
              f"{run.exit_code} | {run.requests} | {run.tokens:,}")


if __name__ == "__main__":
    main()
