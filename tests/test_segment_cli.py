"""`s2d segment` end to end: every output format, many inputs, and bad input (one line, exit 2).

The model is the tiny random-init video Mask2Former saved as a checkpoint, with ``--score-threshold 0`` so
that it outputs objects; inputs are tiny synthetic clips written with the project's own ``VideoWriter``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import List

import numpy as np
import pytest
from PIL import Image

from s2d.cli import main
from s2d.io.formats.mots import read_mots
from s2d.io.video import VideoWriter, open_video
from tests.helpers import moving_square

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--score-threshold", "0", "--max-side", "64", "--chunk", "4", "--overlap", "1"]


def clip(n: int, h: int = 48, w: int = 64) -> List[np.ndarray]:
    return moving_square(n, h, w)


def write_mp4(path: Path, frames: List[np.ndarray], **kw) -> Path:
    with VideoWriter(path, 10, frames[0].shape[1], frames[0].shape[0], **kw) as w:
        for f in frames:
            w.write(f)
    return path


def run(argv: List[str], capsys: pytest.CaptureFixture) -> tuple:
    rc = main(argv)
    err = capsys.readouterr().err
    return rc, [line for line in err.splitlines() if line.strip()]


def check_outputs(folder: Path, T: int, h: int, w: int, png_names: List[str]) -> None:
    from pycocotools import mask as mask_utils

    # YouTube-VIS results: T entries per track, decodable by pycocotools at the original size
    records = json.loads((folder / "results.json").read_text())
    assert records, "score threshold 0 must give objects"
    for r in records:
        assert r["video_id"] == 1 and r["category_id"] == 1 and 0 <= r["score"] <= 1
        assert len(r["segmentations"]) == T
        for s in r["segmentations"]:
            if s is not None:
                with warnings.catch_warnings():  # pycocotools vs NumPy 2 "copy keyword" deprecation
                    warnings.simplefilter("ignore", DeprecationWarning)
                    m = mask_utils.decode({"size": s["size"], "counts": s["counts"].encode()})
                assert m.shape == (h, w) and m.any()
    # DAVIS: palette PNGs named after the input frames
    pngs = sorted((folder / "davis").glob("*.png"))
    assert [p.stem for p in pngs] == png_names
    ids = set()
    for p in pngs:
        with Image.open(p) as im:
            assert im.mode == "P" and im.size == (w, h)
            ids |= set(np.unique(np.array(im)).tolist())
    assert ids - {0} <= {r["track_id"] for r in records}
    # MOTS: readable, same frame count and size
    mots = read_mots(folder / "mots.txt", num_frames=T)
    assert (mots.height, mots.width, mots.num_frames) == (h, w, T)
    assert set(mots.ids) <= {r["track_id"] for r in records}
    # overlay: a video of T frames at the original size
    with open_video(folder / "overlay.mp4") as s:
        frames = list(s)
        assert len(frames) == T and frames[0].rgb.shape == (h, w, 3)


def test_segment_a_video_and_a_frame_folder_in_all_formats(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    from helpers import make_frame_folder

    video = write_mp4(tmp_path / "cars.mp4", clip(9))
    names = [f"img_{i * 5:04d}" for i in range(6)]
    folder = make_frame_folder(tmp_path / "walk", clip(6, 40, 56), names=names, ext=".jpg")
    out = tmp_path / "out"
    rc, err = run(["segment", str(video), str(folder), "-o", str(out), "--model", str(tiny_ckpt),
                   "--format", "ytvis,davis,mots,overlay", *FAST], capsys)
    assert rc == 0, err
    check_outputs(out / "cars", 9, 48, 64, [f"{i:05d}" for i in range(9)])
    check_outputs(out / "walk", 6, 40, 56, names)
    assert any(line.startswith("segment: cars: 9 frames") for line in err)
    assert not list(out.rglob(".*"))  # no temp files left behind


def test_default_formats_and_python_dash_m(tiny_ckpt: Path, tmp_path: Path) -> None:
    video = write_mp4(tmp_path / "a.mp4", clip(3))
    proc = subprocess.run([sys.executable, "-m", "s2d", "segment", str(video), "-o", str(tmp_path / "o"),
                           "--model", str(tiny_ckpt), *FAST], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "o" / "a").iterdir()) == ["davis", "overlay.mp4", "results.json"]


def test_missing_input_is_one_line_and_the_others_go_on(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    good = write_mp4(tmp_path / "good.mp4", clip(5))
    out = tmp_path / "out"
    rc, err = run(["segment", str(tmp_path / "missing.mp4"), str(good), "-o", str(out), "--model", str(tiny_ckpt),
                   "--format", "ytvis,davis", *FAST], capsys)
    assert rc == 1  # some inputs failed, the others are done
    errors = [line for line in err if line.startswith("s2d: error:")]
    assert len(errors) == 1 and "missing.mp4" in errors[0] and "no such file" in errors[0]
    assert not any("Traceback" in line for line in err)
    assert len(json.loads((out / "good" / "results.json").read_text())[0]["segmentations"]) == 5
    assert len(list((out / "good" / "davis").glob("*.png"))) == 5


def test_truncated_video_keeps_the_decoded_frames(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    path = write_mp4(tmp_path / "cut.mp4", clip(30), codec="mpeg4")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    decoded = []
    with pytest.raises(Exception):
        for f in open_video(path):
            decoded.append(f.index)
    n = len(decoded)
    assert 0 < n < 30
    good = write_mp4(tmp_path / "fine.mp4", clip(4))
    out = tmp_path / "out"
    rc, err = run(["segment", str(path), str(good), "-o", str(out), "--model", str(tiny_ckpt),
                   "--format", "ytvis,davis,mots,overlay", *FAST], capsys)
    assert rc == 1
    errors = [line for line in err if line.startswith("s2d: error:")]
    assert len(errors) == 1 and "cut.mp4" in errors[0] and f"frame {n - 1}" in errors[0]
    # everything up to the failing frame is written
    check_outputs(out / "cut", n, 48, 64, [f"{i:05d}" for i in range(n)])
    check_outputs(out / "fine", 4, 48, 64, [f"{i:05d}" for i in range(4)])


@pytest.mark.parametrize("argv,match", [
    (["--format", "ytvis,gif"], "unknown format 'gif'"),
    (["--format", ","], "--format needs at least one"),
    (["--chunk", "4", "--overlap", "4"], "overlap must be"),
    (["--chunk", "0"], "chunk must be"),
    (["--score-threshold", "2"], "score threshold"),
    (["--device", "gpu7"], "not a torch device"),
    (["--set", "link_iou=0"], "link IoU"),
    (["--set", "nosuch=1"], "unknown segment setting 'nosuch'"),
])
def test_bad_options_are_one_line_errors(tiny_ckpt: Path, tmp_path: Path, capsys, argv: List[str], match: str) -> None:
    video = write_mp4(tmp_path / "v.mp4", clip(2))
    rc, err = run(["segment", str(video), "-o", str(tmp_path / "o"), "--model", str(tiny_ckpt), *argv], capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith("s2d: error:") and match in err[0], err
    assert not (tmp_path / "o").exists()


def test_same_name_twice_fails_before_any_work(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    a = write_mp4(tmp_path / "x" / "clip.mp4", clip(2))
    b = write_mp4(tmp_path / "y" / "clip.mp4", clip(2))
    rc, err = run(["segment", str(a), str(b), "-o", str(tmp_path / "o"), "--model", str(tiny_ckpt)], capsys)
    assert rc == 2 and len(err) == 1 and "OUTDIR/clip" in err[0]
    assert not (tmp_path / "o").exists()


def test_bad_checkpoint_and_missing_default_model(tmp_path: Path, capsys) -> None:
    from s2d.infer import default_model_path

    video = write_mp4(tmp_path / "v.mp4", clip(2))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    rc, err = run(["segment", str(video), "-o", str(tmp_path / "o"), "--model", str(bad)], capsys)
    assert rc == 2 and len(err) == 1 and "bad.pt" in err[0] and "unreadable checkpoint" in err[0]
    if not default_model_path().is_file():
        rc, err = run(["segment", str(video), "-o", str(tmp_path / "o")], capsys)
        assert rc == 2 and len(err) == 1 and "default model is not installed" in err[0]


def test_ids_that_do_not_fit_a_png_are_left_out_with_a_note(tmp_path: Path) -> None:
    """Ids are never reused, so a long video can pass 254; the PNGs skip those ids, the other formats keep them."""
    from s2d.infer.segment import _Outputs
    from s2d.types import FrameResult

    out = _Outputs(tmp_path / "v", ("ytvis", "davis", "mots"), 10.0, 4, 6)
    masks = np.zeros((2, 4, 6), bool)
    masks[0, :2] = True
    masks[1, 2:] = True
    out.write(np.zeros((4, 6, 3), np.uint8), "00000", FrameResult(0, masks, [3, 300], [0.9, 0.8]))
    out.finish({3: 0.9, 300: 0.8})
    with Image.open(tmp_path / "v" / "davis" / "00000.png") as im:
        assert sorted(np.unique(np.array(im)).tolist()) == [0, 3]
    assert out.notes and "above 254" in out.notes[0]
    assert {r["track_id"] for r in json.loads((tmp_path / "v" / "results.json").read_text())} == {3, 300}
    assert set(read_mots(tmp_path / "v" / "mots.txt").ids) == {3, 300}
