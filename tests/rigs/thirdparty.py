"""Real third-party bad and odd PDFs, from the test resources that pypdf and OCRmyPDF publish in their
source distributions on PyPI: encrypted variants (RC4 and AES, revisions 2 to 6), repaired and invalid
files, image-only scans. Fetched once with `pip download` into ~/.cache/kb/thirdparty, never committed.

python -m tests.rigs.thirdparty   # fetch them (the tests do it themselves when they are missing)
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

CACHE = Path.home() / ".cache" / "kb" / "thirdparty"
OCRMYPDF = "17.13.0"  # pinned: its resources are what the tests expect


def sdist_files(package: str, release: str, folders: tuple[str, ...], suffixes: tuple[str, ...] = (), *,
                flatten: bool = False, rename: dict[str, str] | None = None) -> Path:
    """The files under `folders` (ending in one of `suffixes`, lowercase; any file when none are given) of a
    package's source distribution on PyPI, extracted once into the cache. Below the folder their layout is kept,
    or, with `flatten`, only their names (`rename` maps a name to another)."""
    key = hashlib.sha256(repr((folders, suffixes, flatten, rename)).encode()).hexdigest()[:8]
    target = CACHE / f"{package}-{release}-{key}"
    done = target / ".complete"
    if done.exists():
        return target
    with tempfile.TemporaryDirectory() as scratch:
        # --no-binary for this package only: its build backend (odfdo's uv_build) may come as a wheel.
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", package, "--no-deps",
                        f"{package}=={release}", "-d", scratch], check=True, timeout=600)
        archive = next(Path(scratch).glob("*.tar.gz"))
        root = archive.name.removesuffix(".tar.gz")
        with tarfile.open(archive) as tar:
            members = []
            for member in tar.getmembers():
                inside = next((f"{root}/{f}/" for f in folders if member.name.startswith(f"{root}/{f}/")), None)
                if inside is None or not member.isfile() or not member.name.lower().endswith(suffixes or ("",)):
                    continue
                name = Path(member.name).name if flatten else member.name[len(inside):]
                member.name = (rename or {}).get(name, name)
                members.append(member)
            tar.extractall(target, members=members, filter="data")
    done.touch()
    return target


def pypdf_resources() -> Path:
    """pypdf's own test PDFs for the installed pypdf (encryption/ holds the R2..R6 variants; user
    password `asdfzxcv`)."""
    return sdist_files("pypdf", version("pypdf"), ("resources",), (".pdf",))


def ocrmypdf_resources() -> Path:
    """OCRmyPDF's test PDFs: mostly scans without a text layer, and an invalid file."""
    return sdist_files("ocrmypdf", OCRMYPDF, ("tests/resources",), (".pdf",))


if __name__ == "__main__":
    print(pypdf_resources(), ocrmypdf_resources())
