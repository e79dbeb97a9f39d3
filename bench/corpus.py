"""Real benchmark corpora, fetched by script from Debian's archive (no model or data hub involved).

Each named corpus is a list of documentation folders inside Debian packages. `fetch(name)` downloads the
packages with `apt-get download`, unpacks them with `dpkg-deb -x` into a cache outside the work tree
(`$KB_BENCH_CACHE`, else `$XDG_CACHE_HOME/kb/bench`, else `~/.cache/kb/bench`) and returns the folders.
It is idempotent: an unpacked package is kept (with the version it came from) and reused.

    python -m bench.corpus docs          # prints the folders, one a line
    python -m bench.run --corpus docs --compare     # the same, fetched on demand

Corpora (their sizes: docs/benchmarks.md; `python -m bench.corpus NAME --describe` counts them):

- `docs`: the HTML manuals of Python 3.11 (with the reST sources Sphinx ships beside them as .txt),
  PostgreSQL 15 and git (HTML + AsciiDoc .txt).
- `python-library`: the HTML pages of the Python 3.11 `library/` folder.
- `pdf`: the R manuals (r-doc-pdf) and the LaTeX package manuals of texlive-latex-recommended-doc.
- `large`: the package manuals of texlive-latex-extra-doc and texlive-pstricks-doc (mostly PDFs, the rest
  Markdown, text and HTML), for memory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# name -> [(Debian package, folder inside it)]
CORPORA: dict[str, list[tuple[str, str]]] = {
    "docs": [
        ("python3.11-doc", "usr/share/doc/python3.11/html"),
        ("postgresql-doc-15", "usr/share/doc/postgresql-doc-15/html"),
        ("git-doc", "usr/share/doc/git-doc"),
    ],
    "python-library": [("python3.11-doc", "usr/share/doc/python3.11/html/library")],
    "pdf": [
        ("r-doc-pdf", "usr/share/R/doc/manual"),
        ("texlive-latex-recommended-doc", "usr/share/doc/texlive-doc"),
    ],
    "large": [
        ("texlive-latex-extra-doc", "usr/share/doc/texlive-doc"),
        ("texlive-pstricks-doc", "usr/share/doc/texlive-doc"),
    ],
}

_MARKER = ".kb-unpacked"


class CorpusError(RuntimeError):
    pass


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    root: Path  # where it was unpacked


def cache_dir() -> Path:
    explicit = os.environ.get("KB_BENCH_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kb" / "bench"


def _run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def _download(package: str, into: Path) -> Path:
    """`apt-get download` into `into`; refreshes the package lists once if apt does not know the package."""
    for attempt in range(2):
        done = _run(["apt-get", "download", package], cwd=into)
        debs = sorted(into.glob(f"{package}_*.deb"))
        if done.returncode == 0 and debs:
            return debs[-1]
        if attempt == 0:
            # A fresh machine may have no (or stale) package lists: what `apt-get update` is for.
            _run(["apt-get", "update"])
    raise CorpusError(f"apt-get download {package} failed: {done.stderr.strip()[-500:]}")


def fetch_package(package: str, cache: Path | None = None) -> Package:
    """Download and unpack one Debian package into the cache (once); its unpacked root."""
    cache = cache or cache_dir()
    root = cache / "packages" / package
    marker = root / _MARKER
    if marker.is_file():
        return Package(package, marker.read_text().strip(), root)
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise CorpusError("fetching a corpus needs apt-get and dpkg-deb (a Debian or Ubuntu machine)")
    (cache / "packages").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{package}-", dir=cache / "packages") as scratch:
        scratch_path = Path(scratch)
        deb = _download(package, scratch_path)
        version = _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()
        unpacked = scratch_path / "root"
        done = _run(["dpkg-deb", "-x", str(deb), str(unpacked)])
        if done.returncode != 0:
            raise CorpusError(f"dpkg-deb -x {deb.name} failed: {done.stderr.strip()[-500:]}")
        (unpacked / _MARKER).write_text(version + "\n")
        if root.exists() and not marker.is_file():  # a half-finished earlier attempt
            shutil.rmtree(root)
        try:
            unpacked.rename(root)  # atomic: a folder with a marker is always complete
        except OSError:
            if not marker.is_file():  # not another process that got there first
                raise
    return Package(package, version, root)


def fetch(name: str, cache: Path | None = None) -> list[Path]:
    """The folders of corpus `name`, downloaded and unpacked first if they are not in the cache."""
    if name not in CORPORA:
        raise CorpusError(f"unknown corpus {name!r}: one of {', '.join(CORPORA)}")
    folders = []
    for package, folder in CORPORA[name]:
        unpacked = fetch_package(package, cache)
        path = unpacked.root / folder
        if not path.is_dir():
            raise CorpusError(f"{package} {unpacked.version} has no folder {folder}")
        folders.append(path)
    return folders


def versions(name: str, cache: Path | None = None) -> dict[str, str]:
    """Package -> version of an already fetched corpus."""
    cache = cache or cache_dir()
    return {package: (cache / "packages" / package / _MARKER).read_text().strip()
            for package, _ in CORPORA[name] if (cache / "packages" / package / _MARKER).is_file()}


def describe(paths: list[Path]) -> dict:
    """Files kb would take from `paths` (kb's own discovery), and their size."""
    from ingest.discover import discover

    files, _ = discover(paths)
    by_type: dict[str, int] = {}
    for file in files:
        by_type[file.suffix.lower()] = by_type.get(file.suffix.lower(), 0) + 1
    return {"files": len(files), "bytes": sum(f.stat().st_size for f in files), "by_type": by_type}


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.corpus",
                                     description="Fetch a benchmark corpus; print its folders.")
    parser.add_argument("name", choices=sorted(CORPORA))
    parser.add_argument("--describe", action="store_true", help="also count files and bytes (on stderr)")
    args = parser.parse_args(argv)
    try:
        folders = fetch(args.name)
    except CorpusError as exc:
        sys.exit(f"error: {exc}")
    for folder in folders:
        print(folder)
    if args.describe:
        print(describe(folders), versions(args.name), file=sys.stderr)


if __name__ == "__main__":
    main()
