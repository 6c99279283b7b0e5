"""Errors that the CLI reports as one line (``error: <path>: <problem>``) without a traceback.

Library code raises these for *bad input* — a missing file, a corrupt stream, a malformed JSON —
so callers can tell a user's mistake from a bug. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class S2DError(Exception):
    """Base class of all errors caused by bad input or a bad setting (never by a bug)."""


class InputError(S2DError):
    """A named input (file, folder, JSON, checkpoint) is missing, unreadable or invalid.

    ``str(err)`` is one line: ``"<path>: <problem>"`` (or just the problem when no path applies).
    """

    def __init__(self, path: Optional[PathLike], problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(self.problem if self.path is None else f"{self.path}: {self.problem}")


class ValidationError(S2DError, ValueError):
    """A result object was constructed with inconsistent data (wrong mask size, duplicate ids, ...)."""


class SettingError(S2DError, ValueError):
    """An option has an invalid value (``stride=0``, a negative threshold, an unknown preset name)."""
