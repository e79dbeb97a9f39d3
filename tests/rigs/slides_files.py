"""Real third-party slide decks, from the source distributions on PyPI of the libraries that read them:
python-pptx's test decks (tests/test_files and features/steps/test_files), odfpy's example presentations
(tests/examples/*.odp) and odfdo's presentation template (src/odfdo/templates/presentation.otp, an ODF
presentation zip, kept as presentation.odp). odfdo's sdist ships no .odp of its own, hence odfpy's.
Fetched once with `pip download` into ~/.cache/kb/thirdparty, never committed.

python -m tests.rigs.slides_files   # fetch them (the tests do it themselves when they are missing)
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .thirdparty import CACHE

PYTHON_PPTX = "1.0.2"
ODFPY = "1.4.1"
ODFDO = "3.27.3"


def _decks(package: str, release: str, folders: tuple[str, ...], suffixes: tuple[str, ...],
           rename: dict[str, str] | None = None) -> Path:
    """The files ending in `suffixes` from `folders` of the package's sdist, flat in one cache folder."""
    target = CACHE / f"{package}-{release}-decks"
    done = target / ".complete"
    if done.exists():
        return target
    with tempfile.TemporaryDirectory() as scratch:
        # --no-binary only for the package itself: its build backend may come as a wheel.
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", package, "--no-deps",
                        f"{package}=={release}", "-d", scratch], check=True, timeout=600)
        archive = next(Path(scratch).glob("*.tar.gz"))
        root = archive.name.removesuffix(".tar.gz")
        prefixes = tuple(f"{root}/{folder}/" for folder in folders)
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(prefixes)
                       and m.name.lower().endswith(suffixes)]
            for member in members:
                name = member.name.rsplit("/", 1)[1]
                member.name = (rename or {}).get(name, name)
            tar.extractall(target, members=members, filter="data")
    done.touch()
    return target


def pptx_decks() -> Path:
    """python-pptx's own test decks (minimal, notes, tables, groups, charts, a deck with no slides...)."""
    return _decks("python-pptx", PYTHON_PPTX, ("tests/test_files", "features/steps/test_files"), (".pptx",))


def odp_decks() -> Path:
    """odfpy's example .odp presentations and odfdo's presentation template (as presentation.odp)."""
    odfpy = _decks("odfpy", ODFPY, ("tests/examples",), (".odp",))
    odfdo = _decks("odfdo", ODFDO, ("src/odfdo/templates",), (".otp",), {"presentation.otp": "presentation.odp"})
    return _merge(odfpy, odfdo)


def _merge(first: Path, second: Path) -> Path:
    """Both folders' decks in one folder (links, so nothing is copied twice)."""
    target = CACHE / "odp-decks"
    target.mkdir(parents=True, exist_ok=True)
    for folder in (first, second):
        for deck in folder.glob("*.odp"):
            link = target / deck.name
            if not link.exists():
                link.symlink_to(deck)
    return target


if __name__ == "__main__":
    print(pptx_decks(), odp_decks())
