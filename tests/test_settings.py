"""`--set key=value` parsing shared by the stages' settings dataclasses."""

from dataclasses import dataclass
from typing import Optional

import pytest

from s2d.errors import SettingError
from s2d.settings import apply_overrides, parse_setting


@pytest.mark.parametrize("raw, current, want", [
    ("true", False, True), ("off", True, False), ("3", 1, 3), ("3.0", 1, 3), ("0.25", 1.0, 0.25),
    ("2", 0.5, 2.0), ("none", "crf", "none"), ("crf", "none", "crf"), ("null", None, None),
    ("7", None, 7), ("0.3", None, 0.3), ("text", None, "text"), ("none", 0.5, None),
])
def test_parse_setting(raw, current, want):
    got = parse_setting(raw, current, "k")
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("raw, current", [("maybe", True), ("1.5", 3), ("abc", 0.5)])
def test_parse_setting_errors(raw, current):
    with pytest.raises(SettingError):
        parse_setting(raw, current, "k")


@dataclass(frozen=True)
class _Cfg:
    k: int = 3
    thr: Optional[float] = 0.5
    refine: str = "crf"


def test_apply_overrides():
    cfg = apply_overrides(_Cfg(), ["k=5", "thr=none", "refine=none", "k=6"], "demo")
    assert cfg == _Cfg(6, None, "none")
    with pytest.raises(SettingError, match="unknown demo setting 'x'"):
        apply_overrides(_Cfg(), ["x=1"], "demo")
    with pytest.raises(SettingError, match="key=value"):
        apply_overrides(_Cfg(), ["k"], "demo")
