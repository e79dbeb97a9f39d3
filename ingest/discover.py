"""Which files to read: folders walked, kb's own store and hidden files passed over, types kb reads taken.

Also the file's content hash, by which a run tells an unchanged file from one to read again.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path
from typing import Callable, Iterable

from .documents import sha256_of_stream
from .errors import LoadError
from .formats import file_type_of


def sha256_of(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return sha256_of_stream(handle)


def discover(
    paths: Iterable[str | Path],
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    skip: Iterable[str | Path] = (),
) -> tuple[list[Path], list[LoadError]]:
    """Files to ingest under `paths` (folders walked recursively), and errors for paths that can't be.

    In folders only supported types are taken (others are not documents), hidden files and folders
    are passed over, and so are the `skip` folders (kb's own store); a file named explicitly with an
    unsupported type is an error, and so is a folder that cannot be read. Globs match the path
    relative to the folder, or the name.
    """
    found: dict[str, Path] = {}
    errors: list[LoadError] = []
    skipped = {str(Path(p).resolve()) for p in skip}
    wanted = glob_filter(include, exclude)
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            _walk(path, wanted, skipped, found, errors)
        elif path.is_file():
            if file_type_of(path) is None:
                errors.append(LoadError(str(path), f"unsupported file type {path.suffix or '(none)'!r}"))
            elif wanted(path.name):
                found.setdefault(str(path.resolve()), path.resolve())
        elif path.is_symlink() or path.exists():
            errors.append(LoadError(str(path), _not_a_document(path) or "cannot read"))
        else:
            errors.append(LoadError(str(path), "no such file or folder"))
    return list(found.values()), errors


def glob_filter(include: list[str] | None, exclude: list[str] | None) -> Callable[[str], bool]:
    """Whether a relative path passes the include and exclude globs (matched on the path, or the name)."""

    def matches(relative: str, patterns: list[str]) -> bool:
        name = os.path.basename(relative)
        return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in patterns)

    def wanted(relative: str) -> bool:
        if include and not matches(relative, include):
            return False
        return not (exclude and matches(relative, exclude))

    return wanted


def _walk(folder: Path, wanted: Callable[[str], bool], skipped: set[str], found: dict[str, Path],
          errors: list[LoadError]) -> None:
    """Add the documents under `folder` to `found`, and what cannot be read to `errors`."""

    def unreadable(error: OSError) -> None:
        errors.append(LoadError(str(error.filename), f"cannot read folder: {error.strerror or error}"))

    # followlinks=False: a symlinked folder loop cannot make the walk endless. Paths are resolved a folder
    # at a time (a file that is not a link resolves to its folder's real path plus its name): resolving
    # each file by itself stats every folder above it, and that was most of the walk.
    for parent, dirs, files in os.walk(folder, onerror=unreadable):
        real_parent = os.path.realpath(parent)
        dirs[:] = sorted(d for d in dirs
                         if not d.startswith(".") and os.path.realpath(os.path.join(parent, d)) not in skipped)
        here = os.path.relpath(parent, folder)
        for name in sorted(files):
            if name.startswith(".") or file_type_of(name) is None:
                continue
            if not wanted(name if here == "." else os.path.join(here, name)):
                continue
            file = os.path.join(parent, name)
            try:
                linked = stat.S_ISLNK(os.lstat(file).st_mode)
            except OSError:
                linked = True  # gone or unreadable: the slow path below says which
            problem = _not_a_document(Path(file))
            if problem:
                errors.append(LoadError(file, problem))
                continue
            real = os.path.realpath(file) if linked else os.path.join(real_parent, name)
            found.setdefault(real, Path(real))


def _not_a_document(path: Path) -> str | None:
    """Why `path` cannot be read as a file, or None. A pipe would block the run forever on its first read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "broken symbolic link" if path.is_symlink() else "file disappeared before it could be read"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if not stat.S_ISREG(mode):
        return "not a regular file (a pipe, socket or device): not read"
    return None
