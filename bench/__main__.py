"""`python -m bench`: the benchmarks of kb, each run as `python -m bench.<tool> --help` says."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

HERE = Path(__file__).parent
# Modules that serve the tools rather than being one.
NOT_TOOLS = {"__init__", "__main__", "servers"}


def tools() -> dict[str, str]:
    """Each tool's name and the first line of its docstring, read without importing it (some need extras)."""
    found = {}
    for path in sorted(HERE.glob("*.py")):
        if path.stem not in NOT_TOOLS:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            found[path.stem] = doc.strip().splitlines()[0] if doc else ""
    return found


def main() -> None:
    print("The benchmarks of kb, run from a checkout as `python -m bench.<tool> [--help]`:\n")
    for name, summary in tools().items():
        print(f"  python -m bench.{name:<15} {summary}")
    print("\nFigures and the commands that reproduce them: docs/benchmarks.md")
    sys.exit(0)


if __name__ == "__main__":
    main()
