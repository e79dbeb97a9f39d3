"""Real third-party Word and OpenDocument files, from the source distributions python-docx and odfdo publish on
PyPI: python-docx's test documents (tests/test_files and features/steps/test_files: tables, nested tables,
headers, images, documents without core properties or styles) and the ODF templates odfdo ships (its sdist
carries no test documents). Fetched once with `pip download` into ~/.cache/kb/thirdparty, never committed.

python -m tests.rigs.word_files   # fetch them (the tests do it themselves when they are missing)
"""

from __future__ import annotations

from pathlib import Path

from .thirdparty import sdist_files

PYTHON_DOCX = "1.2.0"  # pinned: the tests expect these releases' files
ODFDO = "3.27.3"


def python_docx_files() -> Path:
    """python-docx's own test .docx files (both of its test folders, flattened)."""
    return sdist_files("python-docx", PYTHON_DOCX, ("tests/test_files", "features/steps/test_files"), (".docx",),
                       flatten=True)


def odfdo_files() -> Path:
    """odfdo's shipped templates: lpod_styles.odt (a styled text document) and text.ott (the empty template)."""
    return sdist_files("odfdo", ODFDO, ("src/odfdo/templates",), (".odt", ".ott"), flatten=True)


if __name__ == "__main__":
    print(python_docx_files(), odfdo_files())
