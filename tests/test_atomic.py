"""Atomic writes: the final name only ever holds a complete file, and no temp file is left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2d.io.atomic import atomic_open, atomic_path, atomic_write_bytes, atomic_write_text, temp_path_for


def _entries(d: Path) -> list:
    return sorted(p.name for p in d.iterdir())


def test_temp_path_is_hidden_same_dir_same_suffix(tmp_path):
    target = tmp_path / "sub" / "results.json"
    tmp = temp_path_for(target)
    assert tmp.parent == target.parent
    assert tmp.name.startswith(".")
    assert tmp.suffix == ".json"
    assert tmp != temp_path_for(target)  # random part: concurrent writers never collide


@pytest.mark.parametrize("write, content", [
    (atomic_write_text, "héllo\nworld"),
    (atomic_write_bytes, b"\x89PNG\x00\x01"),
])
def test_write_helpers_write_and_replace(tmp_path, write, content):
    target = tmp_path / "deep" / "out.txt"  # parent folders are created
    assert write(target, content) == target
    read = target.read_text(encoding="utf-8") if isinstance(content, str) else target.read_bytes()
    assert read == content
    write(target, content * 2)  # replaces an existing file
    read = target.read_text(encoding="utf-8") if isinstance(content, str) else target.read_bytes()
    assert read == content * 2
    assert _entries(target.parent) == ["out.txt"]


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "a.png"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"data")
        assert not target.exists()  # nothing under the final name until the block ends
    assert target.read_bytes() == b"data"
    assert _entries(tmp_path) == ["a.png"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_path_cleans_up_on_exception(tmp_path, exc):
    target = tmp_path / "a.json"
    with pytest.raises(type(exc)):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise exc
    assert _entries(tmp_path) == []


def test_exception_keeps_the_previous_version(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(ValueError):
        with atomic_open(target) as f:
            f.write("new but incomplete")
            raise ValueError("interrupted")
    assert target.read_text() == "old"
    assert _entries(tmp_path) == ["a.txt"]


@pytest.mark.parametrize("mode", ["a", "r", "r+", "ab"])
def test_atomic_open_rejects_non_write_modes(tmp_path, mode):
    with pytest.raises(ValueError):
        with atomic_open(tmp_path / "x.txt", mode):
            pass


def test_fsync_option(tmp_path):
    target = atomic_write_text(tmp_path / "x.txt", "durable", fsync=True)
    assert target.read_text() == "durable"
    with atomic_path(tmp_path / "y.bin", fsync=True) as tmp:
        tmp.write_bytes(b"1")
    assert (tmp_path / "y.bin").read_bytes() == b"1"
