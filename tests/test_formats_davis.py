"""DAVIS palette PNGs: palette, streaming writer, round trip, overlap priority, reading rules, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s2d.errors import InputError, ValidationError
from s2d.io.formats import DavisWriter, davis_palette, read_davis, write_davis
from s2d.types import FrameResult, Track, VideoSegmentation

H, W, T = 6, 8, 4


def box(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


A, B, C = box(0, 3, 0, 3), box(3, 6, 4, 8), box(0, 2, 5, 8)  # disjoint
OVER = box(1, 5, 1, 6)  # overlaps A and B


def make_video(overlap: bool = False) -> VideoSegmentation:
    third = OVER if overlap else C
    return VideoSegmentation(H, W, T, [
        Track(1, [A, A, None, A], 0.9),
        Track(2, [B, None, B, B], 0.2),
        Track(9, [None, third, third, None], 0.5),
    ], name="toy", frame_names=["x0", "x1", "x2", "x3"])


def pngs(d: Path) -> list:
    return sorted(p.name for p in d.iterdir())


def one_line_naming(exc: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and path.name in msg


def save(path: Path, arr: np.ndarray, mode: str) -> None:
    if mode == "P":
        img = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.astype(np.uint8).tobytes())
        img.putpalette(davis_palette().reshape(-1).tolist())
    else:
        img = Image.fromarray(arr.astype(np.uint8))
        assert img.mode == mode
    img.save(path)


# ------------------------------------------------------------------------ palette
@pytest.mark.parametrize("index, rgb", [
    (0, (0, 0, 0)), (1, (128, 0, 0)), (2, (0, 128, 0)), (3, (128, 128, 0)), (4, (0, 0, 128)),
    (5, (128, 0, 128)), (6, (0, 128, 128)), (7, (128, 128, 128)), (8, (64, 0, 0)), (255, (224, 224, 192)),
])
def test_palette_is_the_voc_colour_map(index, rgb):
    pal = davis_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert tuple(pal[index]) == rgb


def test_palette_colours_are_distinct():
    assert len({tuple(c) for c in davis_palette()}) == 256


# ------------------------------------------------------------------------ writing
def test_written_pngs_are_indexed_with_our_palette(tmp_path):
    video = make_video()
    paths = write_davis(tmp_path / "toy", video)
    assert [p.name for p in paths] == ["x0.png", "x1.png", "x2.png", "x3.png"]
    assert pngs(tmp_path / "toy") == ["x0.png", "x1.png", "x2.png", "x3.png"]  # no temp files
    for t, p in enumerate(paths):
        with Image.open(p) as im:
            assert im.mode == "P" and im.size == (W, H)
            assert im.getpalette()[:768] == davis_palette().reshape(-1).tolist()
            arr = np.array(im)
        assert arr.max() <= max(video.ids)
        assert np.array_equal(arr, video.frame(t).label_map())


def test_round_trip_without_overlap(tmp_path):
    video = make_video()
    write_davis(tmp_path / "toy", video)
    back = read_davis(tmp_path / "toy")
    assert back.name == "toy" and back.frame_names == video.frame_names
    assert (back.height, back.width, back.num_frames) == (H, W, T)
    assert back.ids == video.ids
    for a, b in zip(video.tracks, back.tracks):
        assert b.score == 1.0
        for t in range(T):
            ma, mb = a.mask(t), b.mask(t)
            assert (ma is None) == (mb is None)
            if ma is not None:
                assert np.array_equal(ma, mb)
    assert read_davis(tmp_path / "toy", name="other").name == "other"


def test_overlap_higher_score_wins(tmp_path):
    video = make_video(overlap=True)
    write_davis(tmp_path, video)
    back = read_davis(tmp_path)
    # frame 1: track 1 (0.9) beats track 9 (0.5); frame 2: track 9 (0.5) beats track 2 (0.2)
    assert np.array_equal(back.track(1).mask(1), A)
    assert np.array_equal(back.track(9).mask(1), OVER & ~A)
    assert np.array_equal(back.track(9).mask(2), OVER)
    assert np.array_equal(back.track(2).mask(2), B & ~OVER)


def test_streaming_writer_names_and_frames(tmp_path):
    fr = FrameResult(0, np.stack([A]), [3], [0.5])
    with DavisWriter(tmp_path / "a", frame_names=["first", "second"]) as w:
        w.write(fr)
        w.write(FrameResult.empty(1, H, W))
        w.write(fr, name="custom")
    assert pngs(tmp_path / "a") == ["custom.png", "first.png", "second.png"]
    assert not np.array(Image.open(tmp_path / "a" / "second.png")).any()  # empty frames still get a PNG
    with pytest.raises(ValidationError, match="closed"):
        w.write(fr)

    with DavisWriter(tmp_path / "b") as w:
        w.write(FrameResult(12, np.stack([A]), [3], [0.5]))
        with pytest.raises(ValidationError, match="size"):
            w.write(FrameResult.empty(13, H + 1, W))
        with pytest.raises(ValidationError, match="path separators"):
            w.write(fr, name="../evil")
    assert pngs(tmp_path / "b") == ["00012.png"]

    # a plain iterable of frames works too
    paths = write_davis(tmp_path / "c", iter([fr, FrameResult.empty(1, H, W)]), frame_names=["p", "q"])
    assert [p.name for p in paths] == ["p.png", "q.png"]


def test_ids_above_255_are_refused(tmp_path):
    big = FrameResult(0, np.stack([A, B]), [4, 256], [0.5, 0.5])
    with DavisWriter(tmp_path / "s") as w:
        with pytest.raises(ValidationError, match="ids 1..255"):
            w.write(big)
    assert pngs(tmp_path / "s") == []
    video = VideoSegmentation(H, W, 2, [Track(1, [A, A]), Track(300, [None, B])])
    with pytest.raises(ValidationError, match="ids 1..255"):
        write_davis(tmp_path / "v", video)
    assert not (tmp_path / "v").exists() or pngs(tmp_path / "v") == []  # checked before writing anything


def test_interrupted_png_write_leaves_nothing(tmp_path, monkeypatch):
    real_save = Image.Image.save

    def failing_save(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)  # the temp file is fully there...
        raise OSError("disk full")            # ...and then the write fails

    fr = FrameResult(0, np.stack([A]), [1], [0.5])
    with DavisWriter(tmp_path) as w:
        w.write(fr)
        monkeypatch.setattr(Image.Image, "save", failing_save)
        with pytest.raises(OSError, match="disk full"):
            w.write(FrameResult(1, np.stack([A]), [1], [0.5]))
    assert pngs(tmp_path) == ["00000.png"]  # neither 00001.png nor a hidden temp file


# ------------------------------------------------------------------------ reading rules
def test_binary_davis2016_gt_is_object_1(tmp_path):
    for i, m in enumerate([A, np.zeros((H, W), bool), B]):
        save(tmp_path / f"{i:05d}.png", m * 255, "L")
    v = read_davis(tmp_path)
    assert v.ids == [1] and v.tracks[0].present_frames() == [0, 2]
    assert np.array_equal(v.tracks[0].mask(2), B)


def test_palette_255_is_void_and_greyscale_ids_are_ids(tmp_path):
    pal = tmp_path / "pal"
    pal.mkdir()
    save(pal / "0.png", A * 2 + B * 255, "P")
    v = read_davis(pal)
    assert v.ids == [2] and np.array_equal(v.tracks[0].mask(0), A)
    grey = tmp_path / "grey"
    grey.mkdir()
    save(grey / "0.png", A * 3 + B * 255, "L")  # not binary: 3 and 255 are both ids
    assert read_davis(grey).ids == [3, 255]


def test_rgb_pngs_map_back_through_the_palette(tmp_path):
    labels = (A * 1 + B * 4).astype(np.uint8)
    Image.fromarray(davis_palette()[labels]).save(tmp_path / "0.png")
    v = read_davis(tmp_path)
    assert v.ids == [1, 4] and np.array_equal(v.track(4).mask(0), B)


def test_natural_order_and_hidden_files_skipped(tmp_path):
    for name in ["frame10", "frame2", "frame1"]:
        save(tmp_path / f"{name}.png", A * 1, "P")
    (tmp_path / ".frame3.1234.tmp.png").write_bytes(b"half-written")
    (tmp_path / "notes.txt").write_text("ignored")
    assert read_davis(tmp_path).frame_names == ["frame1", "frame2", "frame10"]


def test_mixed_sizes_is_an_input_error_naming_the_file(tmp_path):
    save(tmp_path / "00000.png", A * 1, "P")
    save(tmp_path / "00001.png", np.zeros((H + 2, W), np.uint8), "P")
    with pytest.raises(InputError, match="differs from 00000.png") as exc:
        read_davis(tmp_path)
    one_line_naming(exc, tmp_path / "00001.png")


@pytest.mark.parametrize("setup, match, culprit", [
    (lambda d: None, "no such folder", "dir"),
    (lambda d: d.write_text("x"), "not a folder", "dir"),
    (lambda d: d.mkdir(), "no PNG files", "dir"),
    (lambda d: (d.mkdir(), (d / "00000.png").write_bytes(b"not a png")), "not a readable PNG", "00000.png"),
])
def test_bad_folders(tmp_path, setup, match, culprit):
    d = tmp_path / "dir"
    setup(d)
    with pytest.raises(InputError, match=match) as exc:
        read_davis(d)
    one_line_naming(exc, tmp_path / culprit)
