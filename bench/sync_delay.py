"""Folder sync's delay: from a file written (or deleted) in a watched folder to the moment search sees it.

A real `kb serve --watch DIR` runs as a child process (kb's embedded model, a scratch store, the watcher's
defaults: a round starts after 500 ms of quiet, and a file is read once its size and time have stood still
for 1000 ms). A seed note, there before the server starts, is taken by the watcher's catch-up: once search
finds it, the model is loaded. Then, for each trial, a new Markdown note is written into the watched folder;
the clock starts once the file is closed, and POST /v1/search is asked the note's question every `--poll`
seconds until a result's source is the note: that answer's arrival stops the clock. Then the note is deleted
and the clock runs until no result names it. Reported per trial and as median and max; the resolution is the
poll interval plus one search.

    python -m bench.sync_delay [--trials 5] [--poll 0.05] [--work DIR] [--json]

The clock and the searches run in this process, on the same cores as the server.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import httpx

from bench.serve import KB, kb_env
from tests.rigs.servers import free_port, start_server, stop, wait_http

# Each trial's note: its own subject, so that its question finds it and nothing else in the folder.
NOTES = (
    ("tidal-mills", "A tidal mill keeps the rising tide behind a dam and grinds grain on the ebb.",
     "What does a tidal mill keep behind its dam?"),
    ("lighthouses", "The lighthouse keeper polished the great brass lamp every evening before the storm.",
     "Who polished the lighthouse lamp before the storm?"),
    ("glaciers", "Glaciers carve deep U-shaped valleys as the ice grinds slowly down the mountain.",
     "How do glaciers shape valleys?"),
    ("kites", "In Weifang the spring kite festival fills the sky with silk dragons and paper swallows.",
     "Where is the spring kite festival with silk dragons held?"),
    ("bees", "Honey bees dance in the hive to tell their sisters where the clover flowers are.",
     "Why do honey bees dance in the hive?"),
    ("salt", "Salt pans on the coast evaporate sea water in the summer sun, leaving white crystals to rake.",
     "How is sea salt harvested from salt pans?"),
)
DEADLINE = 120.0  # seconds a trial may wait before it counts as failed


def wait_until(check: Callable[[], bool], poll: float) -> float | None:
    """Seconds until `check()` first held (measured when it returned), or None past the deadline."""
    started = time.perf_counter()
    while time.perf_counter() - started < DEADLINE:
        if check():
            return time.perf_counter() - started
        time.sleep(poll)
    return None


def trial(client: httpx.Client, folder: Path, number: int, poll: float) -> dict[str, float | None]:
    """One note written then deleted: seconds until search finds it, and until search no longer does."""
    name, text, question = NOTES[number % len(NOTES)]
    note = folder / f"{number:02d}-{name}.md"

    def names_note() -> bool:
        answer = client.post("/v1/search", json={"query": question, "k": 5})
        return answer.status_code == 200 and any(r["source"] == str(note) for r in answer.json()["results"])

    note.write_text(f"# {name.replace('-', ' ').title()}\n\n{text}\n")  # closed on return: the clock starts
    found = wait_until(names_note, poll)
    note.unlink()
    gone = wait_until(lambda: not names_note(), poll) if found is not None else None
    return {"found_s": found, "gone_s": gone}


def summary(values: list[float | None]) -> dict[str, float | None]:
    done = [v for v in values if v is not None]
    return {"median_s": round(statistics.median(done), 2) if done else None,
            "max_s": round(max(done), 2) if done else None, "failed": len(values) - len(done)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5, help="notes written then deleted [5]")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between searches [0.05]")
    parser.add_argument("--work", type=Path, help="a folder for the store, the watched folder and the log "
                                                  "[a fresh temporary one]")
    parser.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="kb-sync-delay-"))
    folder = work / "inbox"
    folder.mkdir(parents=True, exist_ok=True)
    seed = folder / "seed.md"
    seed.write_text("# Seed note\n\nThis seed note is here before the server starts.\n")
    token, port, log = secrets.token_urlsafe(24), free_port(), work / "serve.log"
    process = start_server([KB, "serve", "--port", str(port), "--watch", str(folder), "--chroma-path",
                            str(work / "chroma")], log, env=kb_env(KB_API_TOKEN=token), cwd=work)
    url = f"http://127.0.0.1:{port}"
    trials = []
    try:
        wait_http(f"{url}/health", process, seconds=120, log=log)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            def seeded() -> bool:  # the catch-up done: the model loaded, the collection there
                answer = client.post("/v1/search", json={"query": "seed note", "k": 5})
                return answer.status_code == 200 and any(r["source"] == str(seed) for r in answer.json()["results"])

            if wait_until(seeded, 0.2) is None:
                raise TimeoutError(f"the catch-up did not ingest {seed} within {DEADLINE:g} s")
            for number in range(args.trials):
                trials.append(trial(client, folder, number, args.poll))
                found, gone = (trials[-1][key] for key in ("found_s", "gone_s"))
                print(f"trial {number + 1}: found after {'-' if found is None else f'{found:.2f}'} s, gone after "
                      f"{'-' if gone is None else f'{gone:.2f}'} s", file=sys.stderr)
    except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
        print(f"bench.sync_delay: {exc} (server log: {log})", file=sys.stderr)
        sys.exit(2)
    finally:
        stop(process)
    report = {"defaults": {"debounce_ms": 500, "settle_ms": 1000}, "poll_s": args.poll,
              "trials": [{key: None if v is None else round(v, 3) for key, v in t.items()} for t in trials],
              "found": summary([t["found_s"] for t in trials]), "gone": summary([t["gone_s"] for t in trials])}
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        for what in ("found", "gone"):
            row = report[what]
            failed = f" ({row['failed']} failed)" if row["failed"] else ""
            print(f"{what:>5}: median {row['median_s']} s, max {row['max_s']} s over {args.trials} trials{failed}")
    sys.exit(1 if report["found"]["failed"] or report["gone"]["failed"] else 0)


if __name__ == "__main__":
    main()
