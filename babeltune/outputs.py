"""The one output-path check: every command that takes `--out` calls `check_output` before it reads
data or loads a model, so a path it could not write is an error naming the flag and the path, not a
traceback at the end of the work.

Refused: a folder where a file is expected and a file where a folder is expected (the path itself or
any folder above it); a path in a folder that cannot be written; an existing file that cannot be
written; an existing target that is not a regular file or folder (a device such as /dev/full, a
pipe, a socket): outputs are written to a temporary file and renamed over the target, which would
replace the device node.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

OutputKind = Literal["file", "folder"]


class OutputPathError(ValueError):
    """An output path that cannot be written as asked; the message names the flag and the path."""


def check_output(path: str | Path, kind: OutputKind, flag: str = "--out") -> Path:
    """`path` as a Path if a `kind` ("file" or "folder") can be written there; else `OutputPathError`."""
    path = Path(path)
    where = f"{flag} {path}"
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as exc:
        raise OutputPathError(f"{where}: cannot be used as output ({exc.strerror})") from exc
    if mode is not None:
        _check_existing(path, mode, kind, where)
        return path
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise OutputPathError(f"{where}: {parent} is a file, not a folder, so nothing can be written below it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{where}: folder {parent} is not writable")
    return path


def _check_existing(path: Path, mode: int, kind: OutputKind, where: str) -> None:
    if stat.S_ISDIR(mode):
        if kind == "file":
            raise OutputPathError(f"{where}: is a folder; give a file path (e.g. {path / 'out.jsonl'})")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputPathError(f"{where}: folder is not writable")
        return
    if not stat.S_ISREG(mode):
        raise OutputPathError(f"{where}: exists and is not a regular file (a device, pipe or socket); outputs "
                              "are written to a temporary file and renamed over the target: give a file path")
    if kind == "folder":
        raise OutputPathError(f"{where}: is a file; give a folder path")
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{where}: file (or its folder) is not writable")


def _nearest_existing(folder: Path) -> Path:
    """`folder` or the closest folder above it that exists (`.` for a relative path's root)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")
