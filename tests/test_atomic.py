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


def test_stale_temps_of_a_killed_run_are_removed_on_the_next_start(tmp_path):
    """Only temp names (.<stem>.<8 hex>.tmp<suffix>) go; user files that merely look similar stay."""
    from s2d.io.atomic import remove_stale_temps, temp_path_for

    stale = [temp_path_for(tmp_path / "last.pt"), temp_path_for(tmp_path / "results.json"),
             temp_path_for(tmp_path / "00001.png")]
    keep = [tmp_path / "last.pt", tmp_path / ".hidden", tmp_path / ".notes.tmp.txt", tmp_path / "a.12345678.tmp.json"]
    for p in stale + keep:
        p.write_text("x")
    assert remove_stale_temps(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)
    assert remove_stale_temps(tmp_path / "missing") == 0


def test_segment_removes_temps_a_killed_run_left(tmp_path):
    from s2d.infer import SegmentConfig, segment_video
    from s2d.io.atomic import temp_path_for
    from s2d.model import VideoMask2Former, model_preset
    import numpy as np
    import torch

    torch.manual_seed(0)
    model = VideoMask2Former(model_preset("tiny")).eval()
    frames = [np.zeros((32, 32, 3), np.uint8) for _ in range(3)]
    (tmp_path / "o" / "clip" / "davis").mkdir(parents=True)
    left = [temp_path_for(tmp_path / "o" / "clip" / "results.json"),
            temp_path_for(tmp_path / "o" / "clip" / "davis" / "00000.png")]
    for p in left:
        p.write_text("half")
    from PIL import Image

    (tmp_path / "clip").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "clip" / f"{i:05d}.jpg")
    segment_video(tmp_path / "clip", tmp_path / "o", SegmentConfig(max_side=32, refine="none"),
                  formats=("ytvis", "davis"), model=model, progress=False)
    assert not any(p.exists() for p in left)
    assert (tmp_path / "o" / "clip" / "results.json").exists()
