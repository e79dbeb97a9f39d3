"""Uploaded files: safe names inside the upload folder, within size and count limits."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from ingest.formats import SUFFIXES


def safe_name(name: str) -> str:
    """A file name that stays inside the upload folder: no folders, no control characters, no leading dots."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")  # control and format characters
    name = re.sub(r"\s+", " ", name).strip().lstrip(".").strip()
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    stem = stem[:150] or "upload"
    return f"{stem}.{suffix[:10]}" if suffix else stem


def place(upload_dir: Path, name: str) -> Path:
    """Where an upload is saved; guaranteed inside `upload_dir`."""
    root = upload_dir.resolve()
    target = (root / safe_name(name)).resolve()
    if target.parent != root:
        raise ValueError(f"upload name {name!r} escapes the upload folder")
    return target


def check(name: str, size: int, max_mb: int) -> str | None:
    """Why an upload is refused, or None."""
    suffix = Path(safe_name(name)).suffix.lower()
    if suffix not in SUFFIXES:
        return f"unsupported file type {suffix or '(none)'!r}: kb reads {', '.join(sorted(SUFFIXES))}"
    if size > max_mb * 1024 * 1024:
        return f"{size / 1024 / 1024:.1f} MB is over the {max_mb} MB limit per file (KB_MAX_UPLOAD_MB)"
    if size == 0:
        return "empty file"
    return None
