"""`kb`: ingest, search and report, as a thin shell over the library.

Exit codes: 0 success; 1 some files failed (the rest were ingested); 2 kb could not run (bad settings,
model mismatch, store unreachable). Progress and summaries go to stderr, `--json` output to stdout.
A `KbError` from any command is reported in one place (`run_cli`), as one line.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape

from ingest.errors import KbError
from kb_app.cli.asking import ask_command
from kb_app.cli.benchmarking import bench_command
from kb_app.cli.evaluating import eval_command
from kb_app.cli.ingesting import ingest_command, reembed_command
from kb_app.cli.managing import delete_command, status_command
from kb_app.cli.mcp import mcp_command
from kb_app.cli.output import err
from kb_app.cli.searching import search_command
from kb_app.cli.serving import serve_command
from kb_app.cli.ui import ui_command
from kb_app.cli.watching import watch_command

app = typer.Typer(
    name="kb",
    help="Turn a folder of documents into a searchable, multilingual knowledge base.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("ingest")(ingest_command)
app.command("reembed")(reembed_command)
app.command("search")(search_command)
app.command("ask")(ask_command)
app.command("status")(status_command)
app.command("delete")(delete_command)
app.command("bench")(bench_command)
app.command("eval")(eval_command)
app.command("ui")(ui_command)
app.command("serve")(serve_command)
app.command("watch")(watch_command)
app.command("mcp")(mcp_command)


def run_cli(command: typer.Typer, expected: tuple[type[Exception], ...] = (KbError,)) -> None:
    """Run a typer app: an `expected` error is the user's to act on, said in one line (exit 2); anything else
    still ends with a message, not a traceback (unless KB_DEBUG is set)."""
    try:
        command()
    except expected as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(2)
    except Exception as exc:
        if os.environ.get("KB_DEBUG"):
            raise
        err.print(f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(str(exc))} "
                  "(set KB_DEBUG=1 for a traceback)")
        sys.exit(2)


def main() -> None:
    """The `kb` command."""
    run_cli(app)


if __name__ == "__main__":
    main()
