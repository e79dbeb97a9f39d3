"""Real third-party spreadsheets, from the test fixtures that pyexcel-xlsx and odfpy publish in their source
distributions on PyPI (openpyxl's and odfdo's own sdists carry no test workbooks): Excel workbooks with merged
cells, hidden rows, columns and sheets, dates and an empty sheet; OpenDocument spreadsheets from LibreOffice and
KSpread, one with Chinese sheet names. Fetched once with `pip download` into ~/.cache/kb/thirdparty.

python -m tests.rigs.sheets_files   # fetch them (the tests do it themselves when they are missing)
"""

from __future__ import annotations

from pathlib import Path

from .thirdparty import sdist_files

PYEXCEL_XLSX = "0.6.1"  # pinned: its fixtures are what the tests expect
ODFPY = "1.4.1"


def pyexcel_xlsx_fixtures() -> Path:
    """pyexcel-xlsx's test workbooks (*.xlsx)."""
    return sdist_files("pyexcel-xlsx", PYEXCEL_XLSX, ("tests/fixtures",), (".xlsx",))


def odfpy_examples() -> Path:
    """odfpy's example OpenDocument spreadsheets (*.ods)."""
    return sdist_files("odfpy", ODFPY, ("tests/examples",), (".ods",))


if __name__ == "__main__":
    print(pyexcel_xlsx_fixtures(), odfpy_examples())
