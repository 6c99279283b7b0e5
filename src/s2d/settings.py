"""The one settings parser: ``--set key=value`` strings and YAML/JSON mappings onto typed settings dataclasses.

Every command reads its settings through this module, so a value means the same everywhere. The declared type
of the field (not the text) decides how a value is read:

* ``bool``: ``true/false``, ``yes/no``, ``on/off``, ``1/0``;
* ``int`` / ``float``: numbers, ``1e-4`` included (PyYAML reads that as text; it is read again here);
* ``str``: the text as given;
* ``Optional[X]``: ``none``, ``null`` or ``~`` for unset, else as ``X``;
* ``Tuple[X, ...]``, ``Tuple[X, Y]``, ``List[X]``: ``[a, b]`` (YAML flow syntax) or a bare ``a`` (one item);
* a nested settings dataclass: a mapping (YAML) or dotted keys (``--set solver.lr=3e-5``).

Keys are checked against the dataclass fields. A bad key or value raises one
:class:`~s2d.errors.SettingError` line that names the key, what it accepts (the known keys, or the type) and
where it came from (``--set`` or the file). Range checks stay with each settings class, which validates
itself on construction (``__post_init__``); the functions here construct it.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Dict, Mapping, Sequence, Tuple, TypeVar

from s2d.errors import SettingError

__all__ = ["parse_setting", "coerce", "field_types", "parse_field", "from_mapping", "merge", "apply_overrides",
           "split_item"]

T = TypeVar("T")
_NONE_WORDS = ("none", "null", "~")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> Dict[str, Any]:
    """``{field name: resolved type}`` of the settings dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _where(source: str) -> str:
    return f" (from {source})" if source else ""


def _bad(key: str, wants: str, value: Any, source: str) -> SettingError:
    return SettingError(f"{key} must be {wants}, got {value!r}{_where(source)}")


def coerce(value: Any, hint: Any, key: str, source: str = "") -> Any:
    """``value`` (text from ``--set``, or a YAML/JSON value) as the type ``hint`` of setting ``key``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        options = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
            if len(options) < len(args):
                return None
            raise _bad(key, "set (not null)", value, source)
        return coerce(value, options[0], key, source) if len(options) == 1 else value
    if origin in (tuple, list):
        return _coerce_sequence(value, origin, args, key, source)
    if dataclasses.is_dataclass(hint):
        settings_cls = typing.cast(type, hint)
        if isinstance(value, settings_cls):
            return value
        if isinstance(value, Mapping):
            return from_mapping(settings_cls, value, source=source, prefix=key + ".")
        raise _bad(key, f"a mapping of {settings_cls.__name__} settings", value, source)
    return _coerce_scalar(value, hint, key, source)


def _coerce_scalar(value: Any, hint: Any, key: str, source: str) -> Any:
    text = value.strip() if isinstance(value, str) else None
    if hint is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _TRUE_WORDS + _FALSE_WORDS:
            return text.lower() in _TRUE_WORDS
        raise _bad(key, "true or false", value, source)
    if hint in (int, float):
        number: Any = value
        if text is not None:
            try:
                number = float(text)
            except ValueError:
                raise _bad(key, "a number", value, source) from None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise _bad(key, "a number", value, source)
        if hint is float:
            return float(number)
        if float(number).is_integer():
            return int(number)
        raise _bad(key, "an integer", value, source)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _bad(key, "text", value, source)
    return value  # Any, Dict[...]: taken as given


def _coerce_sequence(value: Any, origin: type, args: Tuple[Any, ...], key: str, source: str) -> Any:
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value) if value.strip() else []
        except yaml.YAMLError:
            raise _bad(key, "a list such as [1, 2]", value, source) from None
    if not isinstance(value, (list, tuple)):
        value = [value]
    if origin is list:
        items = [coerce(v, args[0] if args else Any, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return items
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
    if args and len(value) != len(args):
        raise _bad(key, f"a list of {len(args)} values", list(value), source)
    return tuple(coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))


def _unknown(cls: type, key: str, source: str, prefix: str, what: str) -> SettingError:
    known = ", ".join(prefix + name for name in sorted(field_types(cls)))
    kind = f"{what} setting" if what else "setting"
    return SettingError(f"unknown {kind} {prefix + key!r}{_where(source)}; known: {known}")


def from_mapping(cls: type[T], data: Mapping[str, Any], *, source: str = "", prefix: str = "", what: str = "") -> T:
    """An instance of the settings dataclass ``cls`` from a mapping (a YAML section, a checkpoint's dict): the
    mapping applied onto the defaults (:func:`merge`), so missing keys keep their defaults; unknown keys, values
    of the wrong type and values the class rejects are one-line :class:`SettingError` messages naming the key
    (with ``prefix``) and ``source``."""
    return merge(cls(), data, source=source, prefix=prefix, what=what)


def merge(settings: T, data: Mapping[str, Any], *, source: str = "", prefix: str = "", what: str = "") -> T:
    """A copy of ``settings`` with the mapping ``data`` applied on top (nested sections merge key by key),
    checked as :func:`from_mapping` checks."""
    if not isinstance(data, Mapping):
        raise SettingError(f"{prefix.rstrip('.') or type(settings).__name__} must be a mapping of settings, "
                           f"got {data!r}{_where(source)}")
    types = field_types(typing.cast(type, type(settings)))
    changes = {}
    for key, value in data.items():
        if key not in types:
            raise _unknown(type(settings), str(key), source, prefix, what)
        current = getattr(settings, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = merge(current, value, source=source, prefix=prefix + key + ".", what=what)
        else:
            changes[key] = coerce(value, types[key], prefix + key, source)
    return _construct(type(settings), changes, source, base=settings)


def _construct(cls: type[T], kwargs: Mapping[str, Any], source: str, base: Any = None) -> T:
    """``cls(**kwargs)`` (or ``base`` with ``kwargs`` replaced); the settings classes validate themselves on
    construction, and a rejection names ``source``."""
    try:
        obj = cls(**kwargs) if base is None else dataclasses.replace(base, **kwargs)
    except SettingError as exc:
        if source and source not in str(exc):
            raise SettingError(f"{exc}{_where(source)}") from None
        raise
    return obj


def split_item(item: str) -> Tuple[str, str]:
    """``"a.b=3"`` → ``("a.b", "3")``; the key's dashes read as underscores."""
    key, sep, raw = str(item).partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise SettingError(f"--set expects key=value, got {item!r}")
    return key, raw.strip()


def parse_field(cls: type, key: str, raw: Any, source: str = "--set", prefix: str = "", what: str = "") -> Any:
    """The value ``raw`` read as the (possibly dotted, nested) field ``key`` of settings class ``cls``."""
    head, _, rest = key.partition(".")
    types = field_types(cls)
    if head not in types:
        raise _unknown(cls, head, source, prefix, what)
    hint = types[head]
    if rest:
        if not dataclasses.is_dataclass(hint):
            raise SettingError(f"{prefix + head} has no sub-settings, got {prefix + key!r}{_where(source)}")
        return parse_field(typing.cast(type, hint), rest, raw, source, prefix + head + ".", what)
    return coerce(raw, hint, prefix + key, source)


def parse_setting(raw: str, current: Any, key: str) -> Any:
    """Read ``raw`` for a setting ``key`` that is not a dataclass field, typed like its ``current`` value
    (``None``: a number where ``raw`` is one, else the text)."""
    if raw.strip().lower() in _NONE_WORDS and not isinstance(current, (bool, str)):
        return None
    if current is not None:
        return coerce(raw, type(current), key)
    try:
        number = float(raw)
    except ValueError:
        return raw
    return int(number) if number.is_integer() else number


def apply_overrides(settings: T, items: Sequence[str], what: str = "", source: str = "--set",
                    prefix: str = "") -> T:
    """A copy of the settings dataclass ``settings`` with ``key=value`` strings applied; dotted keys reach
    nested settings (``solver.lr=3e-5``). The copy is validated as its class does on construction."""
    changes: Dict[str, Any] = {}
    nested: Dict[str, list] = {}
    for item in items:
        key, raw = split_item(item)
        head, _, rest = key.partition(".")
        if (rest and head in field_types(typing.cast(type, type(settings)))
                and dataclasses.is_dataclass(getattr(settings, head))):
            nested.setdefault(head, []).append(f"{rest}={raw}")
        else:
            changes[key] = parse_field(type(settings), key, raw, source, prefix, what)
    for head, sub in nested.items():
        changes[head] = apply_overrides(getattr(settings, head), sub, what, source, prefix + head + ".")
    return _construct(type(settings), changes, source, base=settings)
