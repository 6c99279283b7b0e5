"""`s2d masks` end to end on tiny synthetic videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_frame_folder, make_video

from s2d.cli import main
from s2d.io.formats import read_ytvis


def moving_square_frames(n: int = 5, h: int = 64, w: int = 96) -> list:
    import cv2

    rng = np.random.default_rng(0)
    bg = cv2.resize(rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    obj = cv2.resize(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8), (20, 20), interpolation=cv2.INTER_CUBIC)
    frames = []
    for i in range(n):
        f = bg.copy()
        f[20:40, 20 + 3 * i:40 + 3 * i] = obj
        frames.append(np.ascontiguousarray(f))
    return frames


def test_masks_on_a_video_writes_valid_ytvis_at_original_size(tmp_path: Path) -> None:
    video = make_video(tmp_path / "sq.mp4", moving_square_frames(), fps=10)
    out = tmp_path / "masks.json"
    rc = main(["masks", str(video), "-o", str(out), "--backbone", "random", "--set", "max_tokens=64", "--max-masks", "2", "--overlay", str(tmp_path / "ov.mp4")])
    assert rc == 0
    records = json.loads(out.read_text())
    assert records, "expected at least one mask"
    for r in records:
        assert r["category_id"] == 1 and 0.0 <= r["score"] <= 1.0
        segs = r["segmentations"]
        assert len(segs) == 5
        present = [t for t, s in enumerate(segs) if s is not None]
        assert present == [r["frame"]]
        assert segs[r["frame"]]["size"] == [64, 96]
    videos = read_ytvis(out)
    assert len(videos) == 1 and (videos[0].height, videos[0].width, videos[0].num_frames) == (64, 96, 5)
    assert (tmp_path / "ov.mp4").stat().st_size > 0
    # the moving square is found on most frames (top-scored mask of each frame)
    truth = np.zeros((64, 96), bool)
    hits = 0
    for t in range(5):
        recs = [r for r in records if r["frame"] == t]
        if not recs:
            continue
        best = max(recs, key=lambda r: r["score"])
        tr = next(tr for tr in videos[0].tracks if tr.masks[t] is not None and abs(tr.score - best["score"]) < 1e-6)
        m = tr.mask(t)
        truth[:] = False
        truth[20:40, 20 + 3 * t:40 + 3 * t] = True
        hits += (m & truth).sum() / max(1, (m | truth).sum()) > 0.5
    assert hits >= 3


def test_masks_on_a_frame_folder_motion_off(tmp_path: Path) -> None:
    folder = make_frame_folder(tmp_path / "frames", moving_square_frames(3))
    out = tmp_path / "m.json"
    assert main(["masks", str(folder), "-o", str(out), "--backbone", "random", "--no-motion", "--max-side", "48",
                 "--set", "max_tokens=48", "--set", "refine=none"]) == 0
    videos = read_ytvis(out)
    assert videos[0].num_frames == 3
    assert (videos[0].height, videos[0].width) == (64, 96)  # the input's original size, not --max-side


def test_masks_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["masks", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "missing.mp4" in err and "no such file" in err
    folder = make_frame_folder(tmp_path / "f", moving_square_frames(2))
    rc = main(["masks", str(folder), "-o", str(tmp_path / "o.json"), "--backbone", "nosuchnet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "nosuchnet" in err
    rc = main(["masks", str(folder), "-o", str(tmp_path / "o.json"), "--backbone", "dino_vits16:/nope.pth"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "nope.pth" in err
    rc = main(["masks", str(folder), "-o", str(tmp_path / "o.json"), "--set", "bogus=1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "bogus" in err
    assert not (tmp_path / "o.json").exists()


def test_masks_with_depth_maps_and_a_config_file(tmp_path: Path) -> None:
    frames = moving_square_frames(3)
    folder = make_frame_folder(tmp_path / "frames", frames)
    depth = tmp_path / "depth"
    depth.mkdir()
    for i in range(3):
        d = np.full((64, 96), 5.0, np.float32)
        d[20:40, 20 + 3 * i:40 + 3 * i] = 1.0
        np.save(depth / f"{i:05d}.npy", d)
    cfg = tmp_path / "masks.yaml"
    cfg.write_text("masks:\n  max_tokens: 96\n  crf_iters: 2\n")
    out = tmp_path / "m.json"
    assert main(["masks", str(folder), "-o", str(out), "--backbone", "none", "--depth", str(depth),
                 "--config", str(cfg)]) == 0
    assert read_ytvis(out)[0].num_frames == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("masks:\n  max_tokens: many\n")
    assert main(["masks", str(folder), "-o", str(out), "--config", str(bad)]) == 2
