"""Concurrent search over HTTP: `kb serve` under N clients, queries/s, latency and where the time goes.

A real `kb serve` runs as a child process (on kb's embedded model, with a bearer token) against a store built
once by `kb ingest` from the sample corpus data/ and the Debian Administrator's Handbook in English and
Chinese (bench.corpus fetches it with `apt-get download`). For each mode and client count, N clients send
POST /v1/search for `--seconds`, each asking the next of a fixed list of English and Chinese questions as soon
as its last answer came back; a few requests first warm the server up and are not counted. Reported: queries/s,
client-side p50/p95/p99, the server's own stages (embed, dense = the vector query, lexical = BM25, fuse; from
the answers' timings_ms, averaged) and the rest (client latency minus those stages: HTTP, JSON, the worker
thread hand-off, queueing behind other requests). The clients run in this process, on the same cores as the
server. When kb serve answers at /mcp, the MCP `search` tool is measured too, through the `mcp` SDK's client
over streamable HTTP (one session per client).

    python -m bench.serve [--clients 1,8,32] [--seconds 20] [--modes dense,hybrid] [--mcp-clients 1,8]
                          [--work DIR] [--json] [--quick]

--quick: data/ only, 1 and 2 clients, 2 s, dense only (MCP at 1 client). The store is kept under --work
(default ~/.cache/kb/bench-serve/<corpus>) and reused while the corpus paths are the same. The server gets
this environment (KB_* settings aside): `OPENBLAS_NUM_THREADS=1 python -m bench.serve` measures it with numpy's
BLAS on one thread, which is what kept the embed stage fast on a busy machine (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import subprocess
import sys
import time
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import httpx

from tests.rigs.servers import free_port, start_server, stop, wait_http

ROOT = Path(__file__).resolve().parent.parent
KB = str(Path(sys.executable).parent / "kb")
WORK = Path.home() / ".cache" / "kb" / "bench-serve"
COLLECTION = "bench-serve"
HANDBOOK_LANGUAGES = ("en-US", "zh-CN")
STAGES = ("embed", "dense", "lexical", "fuse", "rerank")
K = 5
# Seconds a request may take before it counts as failed: a server that stops answering ends the round.
TIMEOUT = 60
# About the corpus, in both languages: the sample corpus's cross-lingual questions (tests/data/questions.md)
# and questions the handbook answers. Fixed, so that runs ask the same things in the same order.
QUESTIONS = (
    "太阳能电池板是怎样把阳光变成电的？为什么家里还需要逆变器？",
    "What do giant pandas eat, and in which province do most wild pandas live?",
    "用手冲方式冲咖啡时，水温应该控制在多少度比较合适？",
    "Which emperor joined the older border walls together, and what materials did builders use for the wall?",
    "火山是怎么形成的？板块俯冲和岩浆的产生有什么关系？",
    "Which processing step keeps green tea from oxidizing, and how are Longjing leaves pressed flat?",
    "蜜蜂是怎样通过跳舞告诉同伴花蜜的方向和距离的？",
    "做酸面包时，面团的含水率是怎么计算的？",
    "How do I add a package repository to /etc/apt/sources.list?",
    "如何配置网络接口获得静态 IP 地址？",
    "What is the difference between the stable, testing and unstable distributions?",
    "怎样用 dpkg 查看一个软件包安装了哪些文件？",
    "How do I set up a RAID 1 array with mdadm?",
    "如何配置 Apache 虚拟主机？",
    "How does the Debian security team publish security updates?",
    "如何使用 LVM 扩展逻辑卷？",
    "How do I configure a firewall with nftables?",
    "系统启动时 systemd 是如何管理服务的？",
    "How do I rebuild a Debian package from its source?",
    "怎样备份系统并在需要时恢复？",
)


class BenchError(RuntimeError):
    """The benchmark could not run (ingest or server failed): the message says what happened and where to look."""


@dataclass
class Sample:
    """One answered request: client-side seconds, whether it succeeded, and the server's own account."""

    seconds: float
    ok: bool
    server_ms: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


# -- the store -------------------------------------------------------------------------------------------------


def corpus(quick: bool) -> tuple[str, list[Path]]:
    """The corpus's name and folders: data/ (English and Chinese), and unless `quick` the handbook's
    English and Chinese HTML."""
    paths = [ROOT / "data" / "en", ROOT / "data" / "zh"]  # not data/ itself: data/chroma is a store
    if quick:
        return "sample", paths
    from bench.corpus import fetch_package

    package = fetch_package("debian-handbook")
    book = package.root / "usr" / "share" / "doc" / "debian-handbook" / "html"
    return "handbook", paths + [book / language for language in HANDBOOK_LANGUAGES]


def kb_env(**extra: str) -> dict[str, str]:
    """This environment without KB_* settings (the store and model are the ones given here: the embedded
    model, no endpoint), plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("KB_")}
    env.setdefault("HF_HUB_OFFLINE", "1")
    return {**env, **extra}


def build(work: Path, paths: list[Path]) -> dict[str, Any]:
    """The store in `work`, ingested once by `kb ingest`; its record (paths, documents, chunks) says what it
    holds, and a later run with the same paths reuses it."""
    record = work / "built.json"
    wanted = [str(p) for p in paths]
    if record.exists():
        built = json.loads(record.read_text())
        if built.get("paths") == wanted:
            return built
    work.mkdir(parents=True, exist_ok=True)
    print(f"ingesting {len(paths)} folders into {work / 'chroma'} (once; kb's embedded model)", file=sys.stderr)
    started = time.perf_counter()
    done = subprocess.run([KB, "ingest", *wanted, "--chroma-path", str(work / "chroma"), "-c", COLLECTION,
                           "--json"], cwd=work, env=kb_env(), capture_output=True, text=True)
    (work / "ingest.log").write_text(done.stderr)
    # 1: some files failed (the handbook's icons: "OCR found no text"), the rest is in; anything else: no store.
    if done.returncode not in (0, 1):
        raise BenchError(f"kb ingest exited with {done.returncode}: {done.stderr[-1500:]} "
                         f"(whole output: {work / 'ingest.log'})")
    failed = json.loads(done.stdout)["failed"]
    status = subprocess.run([KB, "status", "--json", "--chroma-path", str(work / "chroma")], cwd=work,
                            env=kb_env(), capture_output=True, text=True, check=True)
    [mine] = [c for c in json.loads(status.stdout) if c.get("collection") == COLLECTION]
    built = {"paths": wanted, "documents": mine.get("documents"), "chunks": mine.get("chunks"),
             "failed_files": failed, "ingest_seconds": round(time.perf_counter() - started, 1)}
    record.write_text(json.dumps(built, indent=2))
    return built


@contextmanager
def serving(work: Path, token: str) -> Iterator[str]:
    """A real `kb serve` on a free loopback port against the store in `work`, with bearer token `token`."""
    port = free_port()
    log = work / "serve.log"
    process = start_server([KB, "serve", "--port", str(port), "--chroma-path", str(work / "chroma"),
                            "-c", COLLECTION], log, env=kb_env(KB_API_TOKEN=token), cwd=work)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", process, seconds=120, log=log)
        yield url
    finally:
        stop(process)


# -- the load --------------------------------------------------------------------------------------------------


async def drive(ask: Callable[[int], Awaitable[Sample]], clients: int, seconds: float) -> tuple[list[Sample], float]:
    """`clients` loops, each asking again as soon as it is answered, until `seconds` have passed (a request
    under way then is finished and counted); the samples and the wall time. Warms up first, uncounted: one
    request (the model loads), then one per client."""
    await ask(0)
    await asyncio.gather(*(ask(c) for c in range(clients)))
    samples: list[Sample] = []
    started = time.perf_counter()
    deadline = started + seconds

    async def client(number: int) -> None:
        turn = number * 7  # each client starts elsewhere in the list
        while time.perf_counter() < deadline:
            samples.append(await ask(turn))
            turn += 1

    await asyncio.gather(*(client(c) for c in range(clients)))
    return samples, time.perf_counter() - started


async def rest_round(url: str, token: str, mode: str, clients: int, seconds: float) -> tuple[list[Sample], float]:
    """POST /v1/search from `clients` concurrent clients (one keep-alive connection each)."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT,
                                 limits=limits) as http:
        async def ask(turn: int) -> Sample:
            began = time.perf_counter()
            try:
                answer = await http.post("/v1/search", json={"query": QUESTIONS[turn % len(QUESTIONS)], "k": K,
                                                             "mode": mode})
            except httpx.HTTPError:  # no answer in time, or none at all: a failed request, counted as such
                return Sample(time.perf_counter() - began, False)
            took = time.perf_counter() - began
            if answer.status_code != 200:
                return Sample(took, False)
            body = answer.json()
            return Sample(took, True, body["latency_ms"], body["timings_ms"])

        return await drive(ask, clients, seconds)


async def mcp_round(url: str, token: str, mode: str, clients: int, seconds: float) -> tuple[list[Sample], float]:
    """The MCP `search` tool from `clients` concurrent sessions of the SDK's client over streamable HTTP."""
    import anyio
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with AsyncExitStack() as stack:
        sessions = []
        for _ in range(clients):
            transport = streamable_http_client(f"{url}/mcp/", http_client=httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT))
            sessions.append(await stack.enter_async_context(Client(transport)))
        free = asyncio.Queue()
        for session in sessions:
            free.put_nowait(session)

        async def ask(turn: int) -> Sample:
            session = await free.get()  # a session per client loop: never two requests on one at once
            try:
                began = time.perf_counter()
                with anyio.move_on_after(TIMEOUT):
                    found = await session.call_tool("search", {"query": QUESTIONS[turn % len(QUESTIONS)], "k": K,
                                                               "mode": mode})
                    return Sample(time.perf_counter() - began, not found.is_error)
                return Sample(time.perf_counter() - began, False)
            finally:
                free.put_nowait(session)

        return await drive(ask, clients, seconds)


def mcp_mounted(url: str, token: str) -> bool:
    """Whether kb serve answers MCP at /mcp (an initialize request, as a client's first)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "bench.serve", "version": "0"}}}
    answer = httpx.post(f"{url}/mcp/", json=body, timeout=60,
                        headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"})
    return answer.status_code == 200


# -- the figures -----------------------------------------------------------------------------------------------


def percentile(ordered: list[float], share: float) -> float:
    """The nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summarise(api: str, mode: str, clients: int, samples: list[Sample], wall: float) -> dict[str, Any]:
    """One round's figures: queries/s, client latency percentiles, mean server stages and the rest (ms), and
    each one's share of the mean client latency."""
    ok = [s for s in samples if s.ok]
    latencies = sorted(s.seconds * 1000 for s in ok)
    row: dict[str, Any] = {"api": api, "mode": mode, "clients": clients, "requests": len(ok),
                           "errors": len(samples) - len(ok), "seconds": round(wall, 2),
                           "qps": round(len(ok) / wall, 2) if wall else 0.0}
    if not ok:
        return row
    mean = sum(latencies) / len(latencies)
    row.update({f"p{p}_ms": round(percentile(latencies, p / 100), 1) for p in (50, 95, 99)})
    row["mean_ms"] = round(mean, 1)
    if api == "rest":
        stages = {stage: sum(s.timings.get(stage, 0.0) for s in ok) / len(ok) for stage in STAGES
                  if any(stage in s.timings for s in ok)}
        rest = mean - sum(stages.values())
        row["server_ms"] = round(sum(s.server_ms or 0.0 for s in ok) / len(ok), 2)
        row["stages_ms"] = {stage: round(ms, 2) for stage, ms in stages.items()}
        row["rest_ms"] = round(rest, 1)
        row["shares"] = {name: round(ms / mean, 3) for name, ms in {**stages, "rest": rest}.items()}
    return row


def show(report: dict[str, Any]) -> None:
    """The rounds as a table on stdout."""
    corpus_line = report["corpus"]
    print(f"kb serve on {corpus_line['name']}: {corpus_line['documents']} documents, {corpus_line['chunks']} "
          f"chunks; {report['machine']['cpus']} CPUs, load {report['machine']['load_before']} before; "
          f"{report['seconds']} s a round, k={K}")
    print(f"{'api':<5}{'mode':<8}{'clients':>8}{'qps':>8}{'p50':>8}{'p95':>8}{'p99':>8}{'mean':>8}{'server':>8}"
          f"{'embed':>8}{'vector':>8}{'bm25':>8}{'rest':>8}{'errors':>8}")
    for row in report["runs"]:
        stages = row.get("stages_ms", {})
        cells = [row.get("p50_ms"), row.get("p95_ms"), row.get("p99_ms"), row.get("mean_ms"), row.get("server_ms"),
                 stages.get("embed"), stages.get("dense"), stages.get("lexical"), row.get("rest_ms")]
        text = "".join(f"{'-' if c is None else f'{c:.1f}':>8}" for c in cells)
        print(f"{row['api']:<5}{row['mode']:<8}{row['clients']:>8}{row['qps']:>8.1f}{text}{row['errors']:>8}")
    print("ms; p50-mean: client side; server: the server's own time (mean); embed/vector/bm25: its stages (mean);"
          " rest: mean client latency minus the stages")
    if report["mcp_skipped"]:
        print(f"MCP not measured: {report['mcp_skipped']}")


# -- the command -----------------------------------------------------------------------------------------------


def counts(text: str) -> list[int]:
    found = [int(c) for c in text.split(",") if c.strip()]
    if any(c < 1 for c in found):
        raise argparse.ArgumentTypeError(f"{text!r}: client counts are positive, like 1,8,32")
    return found


def options(argv: list[str] | None) -> argparse.Namespace:
    """The command line; --quick fills in whatever was not given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=counts, help="client counts, comma-separated [1,8,32]")
    parser.add_argument("--seconds", type=float, help="measured seconds per round [20]")
    parser.add_argument("--modes", help="dense, hybrid or both, comma-separated [dense,hybrid]")
    parser.add_argument("--mcp-clients", type=counts, help="MCP client counts; empty: no MCP [1,8]")
    parser.add_argument("--work", type=Path, help=f"where the store is built and kept [{WORK}/<corpus>]")
    parser.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    parser.add_argument("--quick", action="store_true", help="data/ only, 1,2 clients, 2 s, dense, MCP at 1")
    args = parser.parse_args(argv)
    quick = args.quick
    args.clients = args.clients or ([1, 2] if quick else [1, 8, 32])
    args.seconds = args.seconds or (2.0 if quick else 20.0)
    args.modes = (args.modes or ("dense" if quick else "dense,hybrid")).split(",")
    if args.mcp_clients is None:
        args.mcp_clients = [1] if quick else [1, 8]
    if not set(args.modes) <= {"dense", "hybrid"}:
        parser.error(f"--modes {','.join(args.modes)}: each is dense or hybrid")
    return args


async def measure(url: str, token: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], str | None]:
    """Every round, REST then MCP; why MCP was left out, if it was."""
    runs = []
    for mode in args.modes:
        for clients in args.clients:
            print(f"REST {mode}, {clients} clients, {args.seconds:g} s", file=sys.stderr)
            runs.append(summarise("rest", mode, clients, *await rest_round(url, token, mode, clients, args.seconds)))
    skipped = None
    if not args.mcp_clients:
        skipped = "--mcp-clients was empty"
    elif not await asyncio.to_thread(mcp_mounted, url, token):
        skipped = "kb serve does not answer MCP at /mcp"
    else:
        for clients in args.mcp_clients:
            print(f"MCP {args.modes[0]}, {clients} clients, {args.seconds:g} s", file=sys.stderr)
            samples, wall = await mcp_round(url, token, args.modes[0], clients, args.seconds)
            runs.append(summarise("mcp", args.modes[0], clients, samples, wall))
    return runs, skipped


def main(argv: list[str] | None = None) -> None:
    args = options(argv)
    name, paths = corpus(args.quick)
    work = args.work or WORK / name
    try:
        built = build(work, paths)
        token = secrets.token_urlsafe(24)  # kb serve as it would be deployed: every request authenticated
        load = [round(x, 2) for x in os.getloadavg()]
        with serving(work, token) as url:
            runs, skipped = asyncio.run(measure(url, token, args))
    # BenchError (a RuntimeError), a server that would not start or died, kb status failing
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError, httpx.HTTPError) as exc:
        print(f"bench.serve: {exc}", file=sys.stderr)
        sys.exit(2)
    report = {"corpus": {"name": name, "paths": built["paths"], "documents": built["documents"],
                         "chunks": built["chunks"], "failed_files": built.get("failed_files")},
              "machine": {"cpus": os.cpu_count(), "load_before": load}, "seconds": args.seconds, "k": K,
              "runs": runs, "mcp_skipped": skipped}
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    else:
        show(report)
    sys.exit(1 if any(row["errors"] or not row["requests"] for row in runs) else 0)


if __name__ == "__main__":
    main()
