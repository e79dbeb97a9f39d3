"""Real third-party Word and OpenDocument files, from the source distributions python-docx and odfdo publish on
PyPI: python-docx's test documents (tests/test_files and features/steps/test_files: tables, nested tables,
headers, images, documents without core properties or styles) and the ODF templates odfdo ships (its sdist
carries no test documents). Fetched once with `pip download` into ~/.cache/kb/thirdparty, never committed.

python -m tests.rigs.word_files   # fetch them (the tests do it themselves when they are missing)
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

CACHE = Path.home() / ".cache" / "kb" / "thirdparty"
PYTHON_DOCX = "1.2.0"  # pinned: the tests expect these releases' files
ODFDO = "3.27.3"


def _fetch(package: str, release: str, folders: tuple[str, ...], suffixes: tuple[str, ...]) -> Path:
    """The files with `suffixes` under `folders` of the package's sdist, flattened into one cached folder."""
    target = CACHE / f"{package}-{release}-word"
    done = target / ".complete"
    if done.exists():
        return target
    with tempfile.TemporaryDirectory() as scratch:
        # --no-binary for this package only: its build backend (odfdo: uv_build) may come as a wheel.
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", package, "--no-deps",
                        f"{package}=={release}", "-d", scratch], check=True, timeout=600)
        archive = next(Path(scratch).glob("*.tar.gz"))
        root = archive.name.removesuffix(".tar.gz")
        prefixes = tuple(f"{root}/{folder}/" for folder in folders)
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(prefixes)
                       and m.name.lower().endswith(suffixes)]
            for member in members:
                member.name = Path(member.name).name
            tar.extractall(target, members=members, filter="data")
    done.touch()
    return target


def python_docx_files() -> Path:
    """python-docx's own test .docx files (both of its test folders, flattened)."""
    return _fetch("python-docx", PYTHON_DOCX, ("tests/test_files", "features/steps/test_files"), (".docx",))


def odfdo_files() -> Path:
    """odfdo's shipped templates: lpod_styles.odt (a styled text document) and text.ott (the empty template)."""
    return _fetch("odfdo", ODFDO, ("src/odfdo/templates",), (".odt", ".ott"))


if __name__ == "__main__":
    print(python_docx_files(), odfdo_files())
