"""``--set key=value`` overrides for the flat, frozen settings dataclasses of the stages.

One parser so every command treats a value the same way: the *current* value's type decides how the
text is read (``true``/``false`` for booleans, numbers for ints and floats, text kept for strings,
``none``/``null`` for unset optional numbers). Bad keys and values raise one-line
:class:`~s2d.errors.SettingError` messages that list the known keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence, TypeVar

from s2d.errors import SettingError

T = TypeVar("T")
_NONE_WORDS = ("none", "null", "~")


def parse_setting(raw: str, current: Any, key: str) -> Any:
    """Read ``raw`` as a value for setting ``key`` whose current value is ``current``."""
    low = raw.lower()
    if isinstance(current, bool):
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        raise SettingError(f"{key} must be true or false, got {raw!r}")
    if isinstance(current, str):
        return raw
    if low in _NONE_WORDS:
        return None
    try:
        number = float(raw)
    except ValueError:
        if current is None:
            return raw
        raise SettingError(f"{key} must be a number, got {raw!r}") from None
    if isinstance(current, float):
        return number
    if number.is_integer():
        return int(number)
    if isinstance(current, int):
        raise SettingError(f"{key} must be an integer, got {raw!r}")
    return number


def apply_overrides(settings: T, items: Sequence[str], what: str) -> T:
    """A copy of the dataclass ``settings`` with ``key=value`` strings applied (``what`` names it in errors)."""
    fields = {f.name for f in dataclasses.fields(settings)}
    changes = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise SettingError(f"--set expects key=value, got {item!r}")
        if key not in fields:
            raise SettingError(f"unknown {what} setting {key!r} (known: {', '.join(sorted(fields))})")
        changes[key] = parse_setting(raw.strip(), getattr(settings, key), key)
    return dataclasses.replace(settings, **changes)
