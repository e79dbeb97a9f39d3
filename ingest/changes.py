"""Which files a run must read: each file hashed, then compared with the record of its last ingest.

A file is unchanged when its sha256 and the chunking that cut it are the same as recorded (and it is not a scan
an older kb recorded with nothing read); everything else is read again. Files that cannot be read are reported.
"""

from __future__ import annotations

from pathlib import Path

from .discover import sha256_of
from .records import LEGACY_SCAN_WARNING, DocumentRecord
from .report import FileOutcome

Hashes = dict[Path, tuple[int, str] | OSError]


def unread_scan(record: DocumentRecord) -> bool:
    """A scanned PDF recorded, with nothing indexed, by a kb without OCR: read it again now."""
    return record.chunks == 0 and LEGACY_SCAN_WARNING in record.warnings


def hashes(files: list[Path]) -> Hashes:
    """Each file's size and sha256, or why it cannot be read (one thread: hashing releases the GIL)."""
    found: Hashes = {}
    for path in files:
        try:
            found[path] = (path.stat().st_size, sha256_of(path))
        except OSError as exc:
            found[path] = exc
    return found


def files_to_read(files: list[Path], hashed: Hashes, records: dict[str, DocumentRecord], chunking: str,
                  force: bool) -> tuple[list[tuple[Path, str]], list[FileOutcome], dict[str, int]]:
    """The files to read with their hashes; the outcomes of the others (unchanged, unreadable); every readable
    file's size."""
    todo: list[tuple[Path, str]] = []
    outcomes: list[FileOutcome] = []
    sizes: dict[str, int] = {}
    for path in files:
        found = hashed[path]
        if isinstance(found, OSError):
            outcomes.append(FileOutcome(str(path), "failed", reason=f"cannot read: {found.strerror or found}"))
            continue
        sizes[str(path)], digest = found
        record = records.get(str(path))
        if (not force and record and record.sha256 == digest and record.chunking == chunking
                and not unread_scan(record)):
            outcomes.append(FileOutcome(str(path), "unchanged", record.chunks, record.tokens))
        else:
            todo.append((path, digest))
    return todo, outcomes, sizes
