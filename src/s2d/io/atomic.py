"""Atomic file writes: write to a hidden temp file beside the target, then rename.

Why: an interrupted run (Ctrl-C, OOM kill, a bug half-way through a stream) must never leave a
truncated JSON, PNG or checkpoint under the final name, because resumable stages (discovery,
training) treat "file exists" as "work done" (SPEC §8). ``os.replace`` within one directory is
atomic on POSIX and Windows, so the temp file lives in the *same* directory as the target.

The temp name is hidden (leading dot, so globs like ``*.png`` never pick up a half-written file)
and keeps the target's suffix, because writers such as PIL, OpenCV and PyAV choose the format from
the file extension.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path
from typing import IO, Any, Iterator, Optional, TypeVar, Union

PathLike = Union[str, "os.PathLike[str]"]
_W = TypeVar("_W", bound="CommitOnExit")

__all__ = ["temp_path_for", "atomic_path", "atomic_open", "atomic_write_text", "atomic_write_bytes",
           "remove_stale_temps", "AtomicTextFile", "CommitOnExit"]

_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp(\.[^.]*)?$")


def temp_path_for(path: PathLike) -> Path:
    """A fresh hidden temp path in ``path``'s directory with the same suffix.

    ``results.json`` → ``.results.3f9a1c2e.tmp.json``. The random part lets concurrent writers
    (several worker processes) target the same directory without clobbering each other.
    """
    path = Path(path)
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temp path to write ``path``'s content to; rename it to ``path`` on success.

    On any exception (including ``KeyboardInterrupt``) the temp file is deleted and ``path`` is
    left untouched (an older version stays). Parent folders are created. The body must create
    the temp file (a missing one raises ``FileNotFoundError`` at the rename).

    ``fsync=True`` flushes the data to disk before the rename, which also protects against power
    loss; off by default because per-frame writers (DAVIS PNGs) would pay it on every frame.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", *, fsync: bool = False, **kwargs: Any) -> Iterator[IO[Any]]:
    """``open()`` for writing that only lands under ``path`` if the ``with`` body succeeds.

    ``mode`` must be a write mode (``"w"``, ``"wb"``, ``"x"``…); ``"a"`` makes no sense for an
    atomic replace and is rejected. Text mode defaults to UTF-8.
    """
    if not any(c in mode for c in "wx") or "a" in mode:
        raise ValueError(f"atomic_open needs a write mode, got {mode!r}")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path, fsync=False) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())


def atomic_write_bytes(path: PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``Path(path)``."""
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8", fsync: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8 by default); returns ``Path(path)``."""
    with atomic_open(path, "w", encoding=encoding, fsync=fsync) as f:
        f.write(text)
    return Path(path)


def remove_stale_temps(folder: PathLike) -> int:
    """Delete the temp files (:func:`temp_path_for` names) a killed run left in ``folder``; returns how many.

    An exception removes its temp file itself; only a hard kill (SIGKILL, power loss) leaves one. Commands
    call this when they start on an output folder they own (``s2d discover``, ``s2d train``, ``s2d segment``),
    before their own writers start.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for entry in folder.iterdir():
        if _TEMP_NAME.match(entry.name) and entry.is_file():
            _remove_quietly(entry)
            removed += 1
    return removed


class CommitOnExit:
    """The ``with`` protocol of every streaming writer: leaving the block normally calls ``close()`` (the output
    appears under its name), leaving it by an exception calls ``abort()`` (nothing is left half-written)."""

    def close(self) -> Any:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self: _W) -> _W:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class AtomicTextFile(CommitOnExit):
    """A text file written piece by piece (streaming writers) that appears under ``path`` only when complete.

    Text goes to a hidden temp file beside ``path``; :meth:`close` renames it to ``path``; :meth:`abort`, or an
    exception inside the ``with`` block, deletes it and leaves ``path`` as it was. Dropped without either, it
    deletes its temp file too.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temp_path_for(self.path)
        self._file: Optional[IO[str]] = open(self._tmp, "w", encoding="utf-8", newline="\n")

    @property
    def closed(self) -> bool:
        return self._file is None

    def write(self, text: str) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: writer is closed")
        self._file.write(text)

    def close(self) -> Path:
        """Finish the file and move it to its final name (idempotent)."""
        if self._file is not None:
            f, self._file = self._file, None
            try:
                f.close()
                os.replace(self._tmp, self.path)
            except BaseException:
                _remove_quietly(self._tmp)
                raise
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; ``path`` is left as it was."""
        if self._file is not None:
            f, self._file = self._file, None
            f.close()
            _remove_quietly(self._tmp)

    def __del__(self) -> None:  # a writer dropped without close() must not leave a temp file
        try:
            self.abort()
        except Exception:
            pass
