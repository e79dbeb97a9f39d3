"""Where `kb` writes: progress, summaries and errors to stderr; results (and `--json`) to stdout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

err = Console(stderr=True)
out = Console(soft_wrap=True)


def display(source: str) -> str:
    """A stored path as the user typed it: relative to the working folder when under it."""
    try:
        return str(Path(source).relative_to(Path.cwd()))
    except ValueError:
        return source


def snippet(text: str, size: int) -> str:
    """A passage on one line, cut to `size` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat[:size] + ("…" if len(flat) > size else "")


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
