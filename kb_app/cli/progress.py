"""What `kb` shows while documents are ingested (a progress bar on stderr) and after (the run's summary)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from ingest.report import FileOutcome, IngestReport
from ingest.report import Progress as ProgressEvents
from kb_app.cli.output import display, err


class _Rate(ProgressColumn):
    """Tokens per second over the run so far."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0
        tokens = task.fields.get("tokens", 0)
        rate = tokens / elapsed if elapsed > 0 else 0
        return Text(f"{rate:,.0f} tok/s", style="cyan")


def file_line(console: Console, outcome: FileOutcome, style: str, reason: str) -> None:
    """One file and what happened to it, on a line of its own: never cut, however long the path (the
    terminal wraps it; a table cell would end it with an ellipsis)."""
    console.print(f"[{style}]{outcome.status}[/] {escape(display(outcome.source))}: {escape(reason)}", soft_wrap=True)


class RichProgress(ProgressEvents):
    """Files, chunks, tokens/s and ETA (by bytes of the files left) on stderr."""

    def __init__(self, console: Console) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[files]} files"),
            TextColumn("{task.fields[chunks]} chunks"),
            _Rate(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = None
        self.files = self.files_total = self.chunks = self.planned_chunks = self.tokens = 0

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def _update(self, advance: int = 0) -> None:
        if self.task is not None:
            self.bar.update(
                self.task,
                advance=advance,
                files=f"{self.files}/{self.files_total}",
                chunks=f"{self.chunks}/{self.planned_chunks}",
                tokens=self.tokens,
            )

    def start(self, files: int, total_bytes: int) -> None:
        # A new run (kb eval --vary ingests once per variant): counts start again.
        self.files = self.chunks = self.planned_chunks = self.tokens = 0
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.files_total = files
        self.task = self.bar.add_task("ingest", total=max(total_bytes, 1), files="", chunks="", tokens=0)
        self._update()

    def planned(self, chunks: int, tokens: int) -> None:
        self.planned_chunks += chunks
        self._update()

    def embedded(self, chunks: int, tokens: int) -> None:
        self.chunks += chunks
        self.tokens += tokens
        self._update()

    def file_progress(self, source: str, done: int, total: int) -> None:
        pass  # one bar for the run is enough on a terminal

    def file_done(self, outcome: FileOutcome, size: int) -> None:
        self.files += 1
        self._update(size)
        if outcome.status == "failed":
            file_line(self.bar.console, outcome, "red", outcome.reason)

    def waiting(self, message: str) -> None:
        self.bar.console.print(f"[yellow]{escape(message)}[/]")


def print_summary(report: IngestReport) -> None:
    """The run in one paragraph, then each file that failed or was stored with a warning, in full."""
    failed = report.of("failed")
    chunks_per_s = report.chunks / report.seconds if report.seconds else 0
    shard = f" shard {report.shard} ({report.other_shards} files left to the other shards)" if report.shard else ""
    err.print(
        f"[bold]{report.collection}[/]{shard} ({escape(report.model)}): "
        f"[green]{len(report.of('ingested'))} ingested[/], {len(report.of('unchanged'))} unchanged, "
        + (f"{len(report.of('pruned'))} pruned, " if report.of("pruned") else "")
        + f"[{'red' if failed else 'green'}]{len(failed)} failed[/]; "
        f"{report.chunks} chunks"
        + (f" ({report.embedded} embedded, {report.reused} reused from the store)" if report.reused else "")
        + f", {report.tokens:,} tokens in {report.seconds:.1f} s "
        f"({chunks_per_s:.1f} chunks/s); {report.stats.requests} requests, {report.stats.retries} retries"
        + "".join(f"; {escape(url)}: up to {limit['peak']} in flight" for url, limit in report.stats.in_flight.items()
                  if report.stats.requests)
    )
    for outcome in failed:
        file_line(err, outcome, "red", outcome.reason)
    for outcome in report.outcomes:
        if outcome.warnings and outcome.status != "failed":
            file_line(err, outcome, "yellow", "; ".join(outcome.warnings))
