"""Writing outputs safely: the one place every command's files go through.

* an output that is one of the run's inputs (the same file, however named) is refused;
* an output path that is a symbolic link is refused (never written through);
* the bytes go to a temporary file beside the target (created exclusively, links not
  followed) and are renamed onto it, so a reader never sees half a file and a killed
  run leaves the old file; a failed write (read-only folder, full disk) removes the
  temporary file and raises one :class:`~facepoints.errors.OutputError` line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from facepoints.errors import OutputError


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def guard_output(path: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """``path`` if writing it would overwrite no input and follow no link; else OutputError."""
    p = Path(path)
    if p.is_symlink():
        raise OutputError(f"{p}: is a symbolic link; facepoints does not write through links (remove it or "
                          "choose another output)")
    for i in inputs:
        i = Path(i)
        if _same(p, i) or p.resolve() == i.resolve():
            raise OutputError(f"{p}: is an input of this run ({i}); outputs never overwrite inputs, choose "
                              "another output path")
    return p


def write_bytes(path: str | Path, data: bytes, inputs: Iterable[str | Path] = ()) -> Path:
    """Write ``data`` to ``path`` by the rules in the module doc."""
    p = guard_output(path, inputs)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, p)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{p}: could not be written ({e.strerror or e})") from None
    return p


def write_text(path: str | Path, text: str, inputs: Iterable[str | Path] = ()) -> Path:
    return write_bytes(path, text.encode("utf-8"), inputs)


def replace_from(tmp: str | Path, path: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """Move a finished temporary file (written by a library that wants a file name, e.g. a
    video writer) onto ``path`` by the same rules; the temporary file is removed on failure."""
    tmp = Path(tmp)
    try:
        p = guard_output(path, inputs)
        os.replace(tmp, p)
    except (OSError, OutputError) as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OutputError):
            raise
        raise OutputError(f"{path}: could not be written ({e.strerror or e})") from None
    return p


def temp_beside(path: str | Path, suffix: str = "") -> Path:
    """A temporary file name beside ``path`` (for :func:`replace_from`), keeping its suffix
    so libraries that choose a format by the name still do."""
    p = Path(path)
    return p.with_name(f".{p.stem}.tmp{os.getpid()}{suffix or p.suffix}")
