"""Streaming frame input (video files, folders, globs), its errors, and the atomic VideoWriter."""

from __future__ import annotations

import os
import re
import tracemalloc
import weakref
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import codec_available, frame_color, make_frame_folder, make_frames, make_video

from s2d.errors import InputError
from s2d.io.video import VideoWriter, natural_key, open_video, probe_video, read_frames, scaled_size

N = 12  # frames in the tiny synthetic videos


def assert_is_frame(rgb: np.ndarray, i: int, tol: int = 10) -> None:
    """``rgb`` is synthetic frame ``i`` (checks R and B, so a BGR mix-up fails)."""
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.flags.c_contiguous
    r, g, b = (float(np.median(rgb[..., c])) for c in range(3))
    er, eg, eb = frame_color(i)
    assert abs(r - er) <= tol and abs(g - eg) <= tol and abs(b - eb) <= tol, (i, (r, g, b), (er, eg, eb))


# ----------------------------------------------------------------------------- containers

CONTAINERS = [
    # (extension, codec, container stores a frame count)
    ("mp4", "libx264", True),
    ("mp4", "mpeg4", True),
    ("mov", "libx264", True),
    ("mkv", "libx264", False),
    ("mkv", "mpeg4", False),
    ("avi", "mpeg4", True),
    ("avi", "mjpeg", True),
    ("webm", "libvpx-vp9", False),
    ("webm", "libvpx", False),
]


@pytest.mark.parametrize("ext,codec,counted", CONTAINERS, ids=[f"{e}-{c}" for e, c, _ in CONTAINERS])
def test_containers_decode_every_frame_in_order(tmp_path, tiny_frames, ext, codec, counted):
    if not codec_available(codec):
        pytest.skip(f"encoder {codec} not in this PyAV build")
    path = make_video(tmp_path / f"clip.{ext}", tiny_frames, fps=10, codec=codec)
    with open_video(path) as stream:
        info = stream.info
        assert (info.kind, info.name, info.source) == ("video", "clip", str(path))
        assert (info.width, info.height, info.orig_width, info.orig_height) == (48, 32, 48, 32)
        assert info.fps == pytest.approx(10.0)
        assert info.total_frames == (N if counted else None)
        assert info.num_frames == (N if counted else None)
        frames = list(stream)
    assert [f.index for f in frames] == list(range(N))
    assert [f.name for f in frames] == [f"{i:05d}" for i in range(N)]
    for f in frames:
        assert f.rgb.shape == (32, 48, 3)
        assert_is_frame(f.rgb, f.index)


def test_fps_from_container_is_kept_exactly(tmp_path):
    path = make_video(tmp_path / "ntsc.mp4", make_frames(6), fps=30000 / 1001)
    assert probe_video(path).fps == pytest.approx(29.97, abs=1e-3)
    path = make_video(tmp_path / "pal.mkv", make_frames(6), fps=25)
    assert probe_video(path).fps == pytest.approx(25.0)


def test_display_rotation_is_applied(tmp_path):
    frames = make_frames(3, 32, 48)
    for a in frames:
        a[:8, :8] = 255  # marker at the stored top-left
    path = make_video(tmp_path / "phone.mp4", frames, rotation=90)  # 90° counter-clockwise to display
    with open_video(path) as s:
        assert (s.info.width, s.info.height) == (32, 48)
        rgb = next(iter(s)).rgb
    assert rgb.shape == (48, 32, 3)
    assert rgb[-4:, :4].min() > 200  # top-left turned counter-clockwise ends bottom-left
    with open_video(path, autorotate=False) as s:
        assert (s.info.width, s.info.height) == (48, 32)
        assert next(iter(s)).rgb[:4, :4].min() > 200


# ----------------------------------------------------------------------------- folders and globs


def test_folder_natural_sort_ignores_non_images(tmp_path):
    frames = make_frames(4)
    folder = tmp_path / "seq"
    # natural order 1, 2, 10, 11 with mixed-case extensions; lexicographic order would be 1, 10, 11, 2
    make_frame_folder(folder, frames[:1], names=["1"], ext=".png")
    make_frame_folder(folder, frames[1:2], names=["2"], ext=".PNG")
    make_frame_folder(folder, frames[2:3], names=["10"], ext=".png")
    make_frame_folder(folder, frames[3:4], names=["11"], ext=".JPG")
    (folder / "notes.txt").write_text("not a frame")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    (folder / "._1.png").write_bytes(b"AppleDouble junk")  # hidden macOS resource fork with an image name
    (folder / "sub.png").mkdir()  # a directory with an image-like name
    with open_video(folder) as s:
        info = s.info
        got = list(s)
    assert (info.kind, info.name, info.fps, info.total_frames, info.num_frames) == ("folder", "seq", None, 4, 4)
    assert [f.name for f in got] == ["1", "2", "10", "11"]
    assert [f.index for f in got] == [0, 1, 2, 3]
    for i, f in enumerate(got):
        assert_is_frame(f.rgb, i, tol=0 if i < 3 else 6)  # PNG exact, JPEG close


def test_glob_pattern(tmp_path, tiny_frames):
    folder = make_frame_folder(tmp_path / "clipA", tiny_frames, names=[str(i) for i in range(N)])
    (folder / "extra.txt").write_text("x")
    with open_video(str(folder / "*")) as s:
        assert (s.info.kind, s.info.name, s.info.total_frames) == ("glob", "clipA", N)
        got = list(s)
    assert [f.name for f in got] == [str(i) for i in range(N)]
    for f in got:
        assert_is_frame(f.rgb, f.index, tol=0)
    # a pattern selecting part of the folder
    with open_video(str(folder / "1*.png")) as s:
        assert [f.name for f in s] == ["1", "10", "11"]


def test_natural_key_orders_numbers_numerically():
    names = ["frame10.png", "frame2.png", "Frame1.png", "frame02b.png", "a", "10", "9"]
    assert sorted(names, key=natural_key) == ["9", "10", "a", "Frame1.png", "frame2.png", "frame02b.png",
                                              "frame10.png"]


# ----------------------------------------------------------------------------- start / end / stride

RANGES = [
    # (start, end, stride)
    (0, None, 1),
    (2, None, 1),
    (0, 5, 1),
    (1, 10, 3),
    (0, None, 5),
    (11, None, 1),
    (3, 3, 1),
    (0, 100, 4),
    (12, None, 1),  # start at the end: nothing, not an error
    (20, 30, 2),
]


@pytest.fixture(params=["video", "folder"])
def tiny_source(request, tiny_video, tiny_frame_folder):
    return tiny_video if request.param == "video" else tiny_frame_folder


@pytest.mark.parametrize("start,end,stride", RANGES)
def test_start_end_stride(tiny_source, start, end, stride):
    expected = list(range(start, N if end is None else min(end, N), stride))
    with open_video(tiny_source, start=start, end=end, stride=stride) as s:
        assert s.info.num_frames == len(expected)
        assert s.info.total_frames == N
        got = list(s)
    assert [f.index for f in got] == expected
    for f in got:
        assert_is_frame(f.rgb, f.index)
    assert [f.index for f in read_frames(tiny_source, start=start, end=end, stride=stride)] == expected


@pytest.mark.parametrize("kwargs", [{"start": -1}, {"stride": 0}, {"end": -2}, {"max_side": 0}, {"stride": 1.5}])
def test_bad_options_raise_value_error(tiny_video, kwargs):
    with pytest.raises(ValueError):
        open_video(tiny_video, **kwargs)


# ----------------------------------------------------------------------------- max_side

SIZES = [
    # (source w, h, max_side) -> output (w, h)
    ((48, 32), None, (48, 32)),
    ((48, 32), 100, (48, 32)),  # never upscale
    ((48, 32), 48, (48, 32)),
    ((48, 32), 24, (24, 16)),
    ((48, 32), 10, (10, 7)),  # 6.67 rounds half up
    ((48, 32), 1, (1, 1)),
    ((32, 48), 24, (16, 24)),  # portrait
    ((30, 30), 16, (16, 16)),
]


@pytest.mark.parametrize("src,max_side,out", SIZES)
def test_scaled_size(src, max_side, out):
    assert scaled_size(*src, max_side) == out


@pytest.mark.parametrize("kind", ["video", "folder"])
@pytest.mark.parametrize("src,max_side,out", [s for s in SIZES if s[0][0] % 2 == 0 and s[0][1] % 2 == 0])
def test_max_side_resizes_frames_and_reports_size(tmp_path, kind, src, max_side, out):
    frames = make_frames(3, src[1], src[0])
    path = (make_video(tmp_path / "v.mp4", frames) if kind == "video"
            else make_frame_folder(tmp_path / "f", frames))
    with open_video(path, max_side=max_side) as s:
        i = s.info
        assert (i.width, i.height, i.orig_width, i.orig_height) == (*out, *src)
        got = list(s)
    assert len(got) == 3
    for f in got:
        assert f.rgb.shape == (out[1], out[0], 3)
        assert_is_frame(f.rgb, f.index)


# ----------------------------------------------------------------------------- stream behaviour


def test_info_is_available_before_iterating_and_iterating_twice_rereads(tiny_video):
    s = open_video(tiny_video, stride=3)
    assert s.info.num_frames == 4
    first = [f.index for f in s]
    second = [f.index for f in s]
    assert first == second == [0, 3, 6, 9]
    it = iter(s)
    next(it)
    s.close()  # closing stops a running iteration and refuses new ones
    assert list(it) == []
    with pytest.raises(ValueError, match="closed"):
        iter(s)


def test_frames_are_independent_arrays(tiny_video):
    frames = list(open_video(tiny_video))
    assert not np.shares_memory(frames[0].rgb, frames[1].rgb)
    assert_is_frame(frames[0].rgb, 0)


def test_end_stops_decoding_before_a_damaged_tail(tmp_path):
    """Decoding stops after ``end``: a file truncated later in the stream reads fine up to there."""
    path = make_video(tmp_path / "fs.mp4", make_frames(60, 64, 96, pattern=True), codec="mpeg4",
                      container_options={"movflags": "+faststart"})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    assert [f.index for f in open_video(path, end=5)] == [0, 1, 2, 3, 4]


def _peak_bytes_while_iterating(path: Path, max_side: int) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        n = 0
        for f in open_video(path, max_side=max_side):
            n += int(f.rgb[0, 0, 0] >= 0)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streaming_memory_does_not_grow_with_length(tmp_path):
    """Python-side allocations must not scale with the number of frames.

    tracemalloc sees numpy-allocated arrays but not FFmpeg's buffers, so frames are resized
    (``max_side``): the yielded arrays are then numpy's own and traced. Each is 48×64×3 = 9 KiB;
    keeping 300 would cost 2.7 MiB. The peak for 300 frames must stay close to that for 50 frames and
    far below the cost of keeping frames. (The reader keeping no frame is also checked directly below.)
    """
    frames = make_frames(300, 96, 128, pattern=True)
    long = make_video(tmp_path / "long.mp4", frames, fps=25)
    short = make_video(tmp_path / "short.mp4", frames[:50], fps=25)
    del frames
    frame_bytes = 48 * 64 * 3
    _peak_bytes_while_iterating(short, 64)  # warm-up: first-use allocations of PyAV/numpy/cv2
    peak_short = _peak_bytes_while_iterating(short, 64)
    peak_long = _peak_bytes_while_iterating(long, 64)
    assert peak_short > frame_bytes  # the measurement does see the frames
    assert peak_long < 1.5 * peak_short + 4 * frame_bytes, (peak_short, peak_long)
    assert peak_long < 20 * frame_bytes, peak_long


@pytest.mark.parametrize("max_side", [None, 24])
def test_reader_keeps_no_frame_alive(tiny_source, max_side):
    """Once the caller drops a frame, its pixels are freed: at most the current frame stays referenced."""
    refs = []
    for f in open_video(tiny_source, max_side=max_side):
        refs.append(weakref.ref(f.rgb))
        del f
        assert sum(r() is not None for r in refs) <= 1
    assert len(refs) == N


# ----------------------------------------------------------------------------- bad input


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="no such file or directory") as e:
        open_video(tmp_path / "nope.mp4")
    assert str(tmp_path / "nope.mp4") in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("content", [None, "txt"])
def test_folder_without_frames(tmp_path, content):
    folder = tmp_path / "empty"
    folder.mkdir()
    if content:
        (folder / "readme.txt").write_text("no frames here")
    with pytest.raises(InputError, match=r"no image frames \(\.jpg/\.png\) in folder") as e:
        open_video(folder)
    assert e.value.path == str(folder)


def test_glob_without_matches(tmp_path):
    with pytest.raises(InputError, match="no image frames"):
        open_video(str(tmp_path / "*.jpg"))


@pytest.mark.parametrize("name,data", [
    ("notes.mp4", b"this is a text file, not a video\n" * 20),
    ("empty.mp4", b""),
    ("random.mkv", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))),
])
def test_not_a_video(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match="not a readable video") as e:
        open_video(path)
    assert e.value.path == str(path) and "\n" not in str(e.value)


def test_file_without_video_stream(tmp_path):
    path = tmp_path / "audio.wav"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(InputError, match="no video stream"):
        open_video(path)


def test_truncated_mp4_with_index_at_end_fails_at_open(tmp_path, tiny_frames):
    """PyAV's mp4 muxer writes the moov index last: cutting the file loses it, FFmpeg cannot open it."""
    path = make_video(tmp_path / "cut.mp4", tiny_frames)
    data = path.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat")
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(InputError, match="not a readable video"):
        open_video(path)


def _collect_until_error(path: Path):
    got = []
    with pytest.raises(InputError) as e:
        for f in open_video(path):
            got.append(f.index)
    return got, e.value


def test_truncated_faststart_mp4_reports_frame_reached(tmp_path):
    """With the index first, FFmpeg decodes up to the cut and stops silently; the declared count tells."""
    path = make_video(tmp_path / "cut.mp4", make_frames(60, 64, 96, pattern=True), codec="mpeg4",
                      container_options={"movflags": "+faststart"})
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    path.write_bytes(data[: int(len(data) * 0.6)])
    assert probe_video(path).total_frames == 60
    got, err = _collect_until_error(path)
    assert 0 < len(got) < 60 and got == list(range(len(got)))
    assert re.search(rf"video stream ended after frame {got[-1]} .*container declares 60 frames", str(err))
    assert err.frame_index == got[-1] and err.path == str(path)


TRUNCATED = [
    # (extension, codec, what reveals the cut)
    ("avi", "mpeg4", r"(container declares 60 frames|corrupt video stream)"),
    ("avi", "mjpeg", r"(container declares 60 frames|corrupt video stream)"),
    ("mkv", "libx264", r"container declares 6\.00 s"),  # no frame count, but a per-stream duration
    ("webm", "libvpx-vp9", r"container declares 6\.00 s"),
]


@pytest.mark.parametrize("ext,codec,reason", TRUNCATED, ids=[f"{e}-{c}" for e, c, _ in TRUNCATED])
def test_truncated_streams_report_frame_reached(tmp_path, ext, codec, reason):
    """Cut at 60 %: the good frames come out, then an InputError names the last index decoded."""
    if not codec_available(codec):
        pytest.skip(f"encoder {codec} not in this PyAV build")
    path = make_video(tmp_path / f"cut.{ext}", make_frames(60, 64, 96, pattern=True), fps=10, codec=codec)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    got, err = _collect_until_error(path)
    assert 0 < len(got) < 60 and got == list(range(len(got)))
    assert re.search(rf"after frame {got[-1]} ", str(err)) and re.search(reason, str(err)), str(err)
    assert err.frame_index == got[-1] and "\n" not in str(err)


def test_corrupt_mp4_middle_reports_frame_reached(tmp_path):
    """Garbage over the middle of the mdat box: the decoder fails and the error names the last good index."""
    path = make_video(tmp_path / "bad.mp4", make_frames(60, 64, 96, pattern=True))
    data = bytearray(path.read_bytes())
    start = data.find(b"mdat") + 4
    end = data.find(b"moov") - 4
    mid = (start + end) // 2
    n = (end - start) // 10
    data[mid:mid + n] = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    got, err = _collect_until_error(path)
    assert 0 < len(got) < 60 and got == list(range(len(got)))
    m = re.search(r"(corrupt video stream|video stream ended) after frame (\d+)", str(err))
    assert m and int(m.group(2)) == got[-1] == err.frame_index
    assert "\n" not in str(err)


def test_mixed_frame_sizes_name_the_frame_and_both_sizes(tmp_path):
    folder = make_frame_folder(tmp_path / "mixed", make_frames(3, 32, 48))
    make_frame_folder(folder, make_frames(1, 40, 48), names=["00003"])
    got = []
    with pytest.raises(InputError) as e:
        for f in open_video(folder):
            got.append(f.index)
    assert got == [0, 1, 2]
    assert e.value.path == str(folder / "00003.png")
    assert "48x40" in str(e.value) and "48x32" in str(e.value) and "00000.png" in str(e.value)


@pytest.mark.parametrize("which", [0, 2])
def test_unreadable_image_is_named(tmp_path, which):
    folder = make_frame_folder(tmp_path / "f", make_frames(4))
    bad = folder / f"{which:05d}.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="unreadable image") as e:
        list(open_video(folder))  # the first frame fails at open, a later one while iterating
    assert e.value.path == str(bad)


# ----------------------------------------------------------------------------- VideoWriter

WRITER_CASES = [("mp4", "libx264"), ("mov", "libx264"), ("mkv", "libx264"), ("avi", "mpeg4"), ("webm", "libvpx-vp9")]


@pytest.mark.parametrize("ext,codec", WRITER_CASES)
def test_writer_roundtrip(tmp_path, tiny_frames, ext, codec):
    if not codec_available(codec):
        pytest.skip(f"encoder {codec} not in this PyAV build")
    path = tmp_path / "out" / f"result.{ext}"  # parent folders are created
    with VideoWriter(path, 12.5, 48, 32) as w:
        assert w.codec == codec
        for a in tiny_frames:
            w.write(a)
    assert path.is_file() and sorted(os.listdir(path.parent)) == [path.name]
    with open_video(path) as s:
        assert (s.info.width, s.info.height) == (48, 32)
        assert s.info.fps == pytest.approx(12.5)
        got = list(s)
    assert len(got) == N
    for f in got:
        assert_is_frame(f.rgb, f.index, tol=12)


def test_writer_pads_odd_sizes(tmp_path):
    frames = make_frames(3, 31, 45)
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, 10, 45, 31) as w:
        assert (w.out_width, w.out_height) == (46, 32)
        for a in frames:
            w.write(a)
    info = probe_video(path)
    assert (info.width, info.height, info.total_frames) == (46, 32, 3)


def test_writer_is_atomic_on_exception(tmp_path, tiny_frames):
    path = tmp_path / "crash.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(path, 10, 48, 32) as w:
            for i in range(60):  # enough to get past the encoder's look-ahead, so data hit the temp file
                w.write(tiny_frames[i % N])
            assert w.tmp_path.exists() and w.tmp_path.parent == path.parent and w.tmp_path.name.startswith(".")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_writer_failure_keeps_existing_file(tmp_path, tiny_frames):
    path = tmp_path / "keep.mp4"
    path.write_bytes(b"previous result")
    with pytest.raises(ValueError):
        with VideoWriter(path, 10, 48, 32) as w:
            w.write(tiny_frames[0])
            w.write(np.zeros((10, 10, 3), np.uint8))  # wrong size
    assert path.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["keep.mp4"]


def test_writer_without_frames_writes_nothing(tmp_path):
    path = tmp_path / "empty.mp4"
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(path, 10, 48, 32):
            pass
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs", [{"fps": 0}, {"fps": float("nan")}, {"width": 0}, {"path": "x.gif"}])
def test_writer_rejects_bad_settings(tmp_path, kwargs):
    args = {"path": tmp_path / "v.mp4", "fps": 10, "width": 48, "height": 32, **kwargs}
    if kwargs.get("path"):
        args["path"] = tmp_path / kwargs["path"]
    with pytest.raises(ValueError):
        VideoWriter(args["path"], args["fps"], args["width"], args["height"])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("gop, start, end", [(12, 40, 44), (12, 16, 17), (12, 47, None), (5, 23, 30), (100, 60, 62)])
def test_seeking_to_a_start_frame_gives_the_sequential_frames(tmp_path, gop, start, end):
    """open_video(start=N) seeks to the keyframe before N; the frames and their indices equal those of decoding
    every frame from the first (the reference: start=0, then skipping)."""
    from tests.helpers import make_video

    rng = np.random.default_rng(gop)
    frames = [np.clip(rng.normal(100 + 2 * t, 40, (32, 48, 3)), 0, 255).astype(np.uint8) for t in range(80)]
    path = make_video(tmp_path / "v.mp4", frames, fps=25, options={"g": str(gop), "bf": "2"})
    with open_video(path) as v:
        ref = {f.index: f.rgb for f in v if f.index >= start and (end is None or f.index < end)}
    with open_video(path, start=start, end=end) as v:
        got = {f.index: f.rgb for f in v}
    assert sorted(got) == sorted(ref) and got
    assert all(np.array_equal(got[i], ref[i]) for i in ref)
