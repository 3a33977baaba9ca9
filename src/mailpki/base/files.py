"""Writing files so a crash leaves the old content or the new, never half of one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path


def write_atomically(path: Path, data: bytes, *, private: bool = False, sync: bool = True) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it.

    `sync=False` leaves the fsync to the caller (`sync_files`, once for a batch): the
    file is still complete or absent, but may be lost in a power cut until then."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sync_files(paths: Iterable[Path]) -> None:
    """Make files written with `sync=False` durable: each file's data, then each of
    their folders once (the renames)."""
    folders: set[Path] = set()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        folders.add(path.parent)
    for folder in folders:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def folder_entries(folder: Path) -> tuple[bool, set[str]]:
    """(whether `folder` exists, the names in it): taken before making things in it, so
    that `remove_new_entries` can undo exactly what was made."""
    return (True, set(os.listdir(folder))) if folder.exists() else (False, set())


def remove_new_entries(folder: Path, existed: bool, before: set[str]) -> None:
    """Undo a failed creation in `folder`: all of it if it did not exist, else only the
    entries that were not among `before` (symlinks are removed, never followed)."""
    if not folder.exists():
        return
    if not existed:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for name in set(os.listdir(folder)) - before:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
