"""Real third-party slide decks, from the source distributions on PyPI of the libraries that read them:
python-pptx's test decks (tests/test_files and features/steps/test_files), odfpy's example presentations
(tests/examples/*.odp) and odfdo's presentation template (src/odfdo/templates/presentation.otp, an ODF
presentation zip, kept as presentation.odp). odfdo's sdist ships no .odp of its own, hence odfpy's.
Fetched once with `pip download` into ~/.cache/kb/thirdparty, never committed.

python -m tests.rigs.slides_files   # fetch them (the tests do it themselves when they are missing)
"""

from __future__ import annotations

from pathlib import Path

from .thirdparty import CACHE, sdist_files

PYTHON_PPTX = "1.0.2"
ODFPY = "1.4.1"
ODFDO = "3.27.3"


def pptx_decks() -> Path:
    """python-pptx's own test decks (minimal, notes, tables, groups, charts, a deck with no slides...)."""
    return sdist_files("python-pptx", PYTHON_PPTX, ("tests/test_files", "features/steps/test_files"),
                       (".pptx",), flatten=True)


def odp_decks() -> Path:
    """odfpy's example .odp presentations and odfdo's presentation template (as presentation.odp)."""
    odfpy = sdist_files("odfpy", ODFPY, ("tests/examples",), (".odp",), flatten=True)
    odfdo = sdist_files("odfdo", ODFDO, ("src/odfdo/templates",), (".otp",), flatten=True,
                        rename={"presentation.otp": "presentation.odp"})
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
