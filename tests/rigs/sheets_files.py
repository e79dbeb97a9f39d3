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


def write_million_cells(path: Path) -> Path:
    """A 1,000,000-cell workbook: 100,000 rows x 10 columns under a header row, written streaming (openpyxl's
    write-only mode), for the memory bound of kb's sheet reader."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("Big")
    sheet.append([f"c{x}" for x in range(10)])
    for y in range(100_000):
        sheet.append([y * 10 + x for x in range(10)])
    book.save(path)
    return path
