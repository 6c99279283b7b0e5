"""`--set key=value` parsing shared by the stages' settings dataclasses."""

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import pytest

from s2d.errors import SettingError
from s2d.settings import apply_overrides, from_mapping, parse_setting


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


@dataclass
class _Inner:
    lr: float = 1e-4
    size: Tuple[int, int] = (256, 448)
    scales: Tuple[float, ...] = ()
    names: List[str] = field(default_factory=list)
    steps: Optional[int] = 300

    def __post_init__(self):  # as every settings class: valid on construction
        if self.lr <= 0:
            raise SettingError(f"lr must be > 0, got {self.lr}")


@dataclass
class _Outer:
    flag: bool = False
    inner: _Inner = field(default_factory=_Inner)


@pytest.mark.parametrize("item, want", [
    ("inner.lr=1e-5", {"lr": 1e-5}), ("inner.lr=3", {"lr": 3.0}), ("inner.size=[128, 224]", {"size": (128, 224)}),
    ("inner.scales=1.25", {"scales": (1.25,)}), ("inner.scales=[]", {"scales": ()}),
    ("inner.names=[a, b]", {"names": ["a", "b"]}), ("inner.steps=null", {"steps": None}),
    ("inner.steps=12", {"steps": 12}),
])
def test_nested_overrides_follow_the_field_types(item, want):
    got = apply_overrides(_Outer(), [item], "demo").inner
    for key, value in want.items():
        assert getattr(got, key) == value and type(getattr(got, key)) is type(value)


@pytest.mark.parametrize("item, message", [
    ("inner.typo=1", r"unknown demo setting 'inner.typo' \(from --set\); known: inner.lr, inner.names"),
    ("inner.lr=abc", r"inner.lr must be a number, got 'abc' \(from --set\)"),
    ("inner.size=[1, 2, 3]", r"inner.size must be a list of 2 values"),
    ("inner.lr=-1", r"lr must be > 0, got -1.0 \(from --set\)"),
    ("flag.x=1", r"flag has no sub-settings"),
    ("inner.steps=2.5", r"inner.steps must be an integer"),
])
def test_nested_override_errors_name_the_key_and_source(item, message):
    with pytest.raises(SettingError, match=message):
        apply_overrides(_Outer(), [item], "demo")


@pytest.mark.parametrize("data, want", [
    ({"flag": True, "inner": {"lr": "1e-4", "size": [64, 64]}}, _Outer(True, _Inner(1e-4, (64, 64)))),
    ({"inner": {"steps": None}}, _Outer(False, _Inner(steps=None))),
    ({}, _Outer()),
])
def test_from_mapping_reads_yaml_values_by_field_type(data, want):
    assert from_mapping(_Outer, data, source="cfg.yaml") == want


@pytest.mark.parametrize("data, message", [
    ({"inner": {"lr": "fast"}}, r"inner.lr must be a number, got 'fast' \(from cfg.yaml\)"),
    ({"flag": "perhaps"}, r"flag must be true or false"),
    ({"inner": 3}, r"inner must be a mapping"),
    ({"outer": 1}, r"unknown setting 'outer' \(from cfg.yaml\)"),
])
def test_from_mapping_errors(data, message):
    with pytest.raises(SettingError, match=message):
        from_mapping(_Outer, data, source="cfg.yaml")
