"""Several endpoints side by side: the same corpus through 1 and N simulated servers in one run.

Reports, for each endpoint count, tokens/s end to end, the share of the servers' combined capacity,
the scaling against one endpoint, how the work was spread, the in-flight limits each endpoint was
given, and the client's CPU per 1,000 tokens by stage: where the client's cores are the limit, that
table says how many client cores a given GPU rate needs.

    python -m bench.endpoints CORPUS [--counts 1,4] [--speed 1.0] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

from bench.servers import SimulatedServer
from ingest.pipeline import ingest
from ingest.settings import load_settings

STAGES = ("parse", "chunk+tokenise", "embed client", "store", "total")


def run_endpoints(paths: Sequence[str | Path], counts: Sequence[int] = (1, 4), model_size: str = "4b",
                  speed: float = 1.0, dim: int | None = None, **flags: object) -> list[dict]:
    """Ingest `paths` once per endpoint count, each into a fresh store; one row per count."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="kb-endpoints-") as scratch, ExitStack() as stack:
        servers = [stack.enter_context(SimulatedServer(model_size, dim, Path(scratch) / f"sim{i}.log", speed=speed))
                   for i in range(max(counts))]
        for n in counts:
            used = servers[:n]
            for server in used:
                server.reset()
            settings = load_settings(endpoint=[s.url for s in used], model=used[0].model, tokenizer="qwen3",
                                     chroma_path=Path(scratch) / f"chroma-{n}-{time.monotonic_ns()}",
                                     collection="bench", **flags)
            report = ingest(paths, settings)
            stats = [s.stats() for s in used]
            capacity = sum(s["capacity_tokens_per_s"] for s in stats)
            served = sum(s["tokens"] for s in stats)
            rows.append({
                "endpoints": n,
                "files": len(report.outcomes), "failed": len(report.of("failed")),
                "chunks": report.chunks, "tokens": report.tokens, "tokens_served": served,
                "seconds": round(report.seconds, 2),
                "tokens_per_s": round(report.tokens / report.seconds),
                "share_of_capacity": round(served / (report.seconds * capacity), 4),
                "tokens_per_endpoint": [s["tokens"] for s in stats],
                "in_flight": [report.stats.in_flight.get(s.url, {}) for s in used],
                "retries": report.stats.retries,
                "cpu_seconds_per_1000_tokens": report.stages.per_thousand_tokens(report.tokens),
                "client_cores_busy": round(report.stages.total_cpu / report.seconds, 2),
            })
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["scaling"] = round(row["tokens_per_s"] / base, 2)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--counts", default="1,4", help="endpoint counts to compare, e.g. 1,2,4")
    parser.add_argument("--model-size", default="4b", choices=["0.6b", "4b", "8b"])
    parser.add_argument("--speed", type=float, default=1.0, help="multiply each simulated GPU's speed")
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    flags = {"workers": args.workers} if args.workers is not None else {}
    rows = run_endpoints(args.paths, [int(c) for c in args.counts.split(",")], args.model_size, args.speed,
                         args.dim, **flags)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print_rows(rows)


def print_rows(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("endpoints", "tokens/s", "scaling", "share of capacity", "tokens per endpoint", "in flight (peak)",
                  "client cores busy", title="Throughput")
    cpu_table = Table("endpoints", *STAGES, title="Client CPU ms per 1,000 tokens")
    for row in rows:
        table.add_row(
            str(row["endpoints"]), f"{row['tokens_per_s']:,}", f"{row['scaling']:.2f}x",
            f"{row['share_of_capacity']:.1%}",
            " / ".join(f"{t:,}" for t in row["tokens_per_endpoint"]),
            " / ".join(str(limit.get("peak", "-")) for limit in row["in_flight"]),
            f"{row['client_cores_busy']:.2f}",
        )
        cpu = row["cpu_seconds_per_1000_tokens"]
        cpu_table.add_row(str(row["endpoints"]), *(f"{cpu[stage] * 1000:.1f}" for stage in STAGES))
    Console().print(table, cpu_table)


if __name__ == "__main__":
    main()
