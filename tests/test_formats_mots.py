"""MOTS txt: exact line format, round trip, overlap resolution, options, atomic streaming, bad lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from s2d.errors import InputError, ValidationError
from s2d.io.formats import MotsWriter, read_mots, write_mots
from s2d.types import FrameResult, Track, VideoSegmentation

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W, T = 6, 8, 4


def box(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


A, B, C = box(0, 3, 0, 3), box(3, 6, 4, 8), box(0, 2, 5, 8)
OVER = box(1, 5, 1, 6)


def make_video(overlap: bool = False) -> VideoSegmentation:
    third = OVER if overlap else C
    return VideoSegmentation(H, W, T, [
        Track(1, [A, A, None, A], 0.9),
        Track(2, [B, None, B, B], 0.2, category_id=2),
        Track(9, [None, third, third, None], 0.5),
    ], name="toy")


def files(d: Path) -> list:
    return sorted(p.name for p in d.iterdir())


def one_line_naming(exc: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and path.name in msg


def test_exact_line_format_hand_checked(tmp_path):
    # 3×4 frame. Object 1: pixel (0, 0) → column-major runs [0 bg, 1 fg, 11 bg] → "01;".
    # Object 2: rows 1-2 × cols 1-2 → runs [4, 2, 1, 2, 3]; COCO's string stores counts[i] -
    # counts[i-2] for i > 2 → 4, 2, 1, 0, 2 → "42102".
    m1 = np.zeros((3, 4), bool)
    m1[0, 0] = True
    m2 = np.zeros((3, 4), bool)
    m2[1:3, 1:3] = True
    frame = FrameResult(4, np.stack([m2, m1]), [2, 1], [0.5, 0.7])
    path = write_mots(tmp_path / "seq.txt", [frame])
    assert path.read_text() == "4 1 1 3 4 01;\n4 2 1 3 4 42102\n"
    for line, m in zip(path.read_text().splitlines(), (m1, m2)):
        f, oid, cls, h, w, counts = line.split(" ")
        assert np.array_equal(mask_utils.decode({"size": [int(h), int(w)], "counts": counts.encode()}), m)

    write_mots(tmp_path / "challenge.txt", [frame], frame_offset=1, class_id=2, mots_ids=True)
    assert (tmp_path / "challenge.txt").read_text() == "5 2001 2 3 4 01;\n5 2002 2 3 4 42102\n"


@pytest.mark.parametrize("opts", [{}, {"frame_offset": 1}, {"mots_ids": True}])
def test_round_trip(tmp_path, opts):
    video = make_video()
    path = write_mots(tmp_path / "toy.txt", video, **opts)
    back = read_mots(path, num_frames=T, **opts)
    assert back.name == "toy" and (back.height, back.width, back.num_frames) == (H, W, T)
    assert back.ids == video.ids
    for a, b in zip(video.tracks, back.tracks):
        assert b.category_id == a.category_id and b.score == 1.0
        for t in range(T):
            ma, mb = a.mask(t), b.mask(t)
            assert (ma is None) == (mb is None)
            if ma is not None:
                assert np.array_equal(ma, mb)
    assert files(tmp_path) == ["toy.txt"]


def test_lines_are_sorted_and_frame_count_inferred(tmp_path):
    frames = list(make_video().iter_frames()) + [FrameResult.empty(T, H, W)]  # last frame empty
    path = write_mots(tmp_path / "x.txt", frames)
    keys = [tuple(int(v) for v in line.split()[:2]) for line in path.read_text().splitlines()]
    assert keys == sorted(keys) and len(keys) == 8
    assert read_mots(path).num_frames == T  # the last frame with an object + 1 ...
    assert read_mots(path, num_frames=T + 1).num_frames == T + 1  # ... unless told


def test_overlaps_resolved_by_score(tmp_path):
    path = write_mots(tmp_path / "x.txt", make_video(overlap=True))
    back = read_mots(path, num_frames=T)
    assert np.array_equal(back.track(9).mask(1), OVER & ~A)    # track 1 (0.9) beats 9 (0.5)
    assert np.array_equal(back.track(2).mask(2), B & ~OVER)    # track 9 (0.5) beats 2 (0.2)
    covered = FrameResult(0, np.stack([A, A & box(0, 1, 0, 1)]), [1, 2], [0.9, 0.1])
    write_mots(tmp_path / "y.txt", [covered])
    assert [line.split()[1] for line in (tmp_path / "y.txt").read_text().splitlines()] == ["1"]


def test_ignore_regions_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("0 2001 2 3 4 01;\n\n0 10000 10 3 4 42102\n1 2001 2 3 4 42102\n")
    v = read_mots(path, mots_ids=True)
    assert v.ids == [1] and v.tracks[0].category_id == 2 and v.num_frames == 2
    assert read_mots(path).ids == [2001]


def test_empty_file_needs_a_size(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(InputError, match="size"):
        read_mots(path)
    v = read_mots(path, size=(H, W), num_frames=3)
    assert (v.height, v.width, v.num_frames, v.tracks) == (H, W, 3, [])


@pytest.mark.parametrize("exc", [RuntimeError("model crashed"), KeyboardInterrupt()])
def test_streaming_writer_is_atomic(tmp_path, exc):
    target = tmp_path / "seq.txt"
    target.write_text("previous complete file\n")
    with pytest.raises(type(exc)):
        with MotsWriter(target) as w:
            w.write(FrameResult(0, np.stack([A]), [1], [0.5]))
            assert target.read_text() == "previous complete file\n"  # nothing visible mid-stream
            raise exc
    assert files(tmp_path) == ["seq.txt"]  # no temp file left
    assert target.read_text() == "previous complete file\n"


def test_streaming_writer_without_with(tmp_path):
    w = MotsWriter(tmp_path / "a.txt")
    assert w.write(FrameResult(0, np.stack([A, B]), [1, 2], [0.5, 0.5])) == 2
    assert w.write(FrameResult.empty(1, H, W)) == 0
    with pytest.raises(ValidationError, match="increasing order"):
        w.write(FrameResult.empty(1, H, W))
    assert not (tmp_path / "a.txt").exists()
    assert w.close() == tmp_path / "a.txt" and w.lines_written == 2
    with pytest.raises(ValidationError, match="closed"):
        w.write(FrameResult.empty(2, H, W))
    w2 = MotsWriter(tmp_path / "b.txt")
    w2.abort()
    assert files(tmp_path) == ["a.txt"]


def test_mots_ids_need_small_track_ids(tmp_path):
    with pytest.raises(ValidationError, match="< 1000"):
        write_mots(tmp_path / "x.txt", [FrameResult(0, np.stack([A]), [1000], [0.5])], mots_ids=True)
    assert files(tmp_path) == []


GOOD = "0 1 1 3 4 01;"
BAD_LINES = [
    ("fields", GOOD + "\n0 2 1 3 4\n", "line 2: expected 6 fields 'frame id class_id h w rle', got 5"),
    ("extra_field", "0 2 1 3 4 01; x\n", "line 1: expected 6 fields"),
    ("frame_int", "a 1 1 3 4 01;\n", "line 1: frame must be an integer"),
    ("id_int", "0 1.5 1 3 4 01;\n", "line 1: id must be an integer"),
    ("size_mismatch", GOOD + "\n1 1 1 4 4 01;\n", "line 2: size 4x4 differs from 3x4 .line 1."),
    ("zero_size", "0 1 1 0 4 01;\n", "line 1: h and w must be positive"),
    ("duplicate", GOOD + "\n0 1 1 3 4 42102\n", "line 2: track 1 appears twice on frame 0"),
    ("class_change", GOOD + "\n1 1 2 3 4 01;\n", "line 2: track 1 has class_id 2 here but 1 before"),
    ("zero_id", "0 0 1 3 4 01;\n", "line 1: object id 0 gives track id 0"),
    ("past_end", "7 1 1 3 4 01;\n", "line 1: frame 7 is past the video's 3 frames"),
]


@pytest.mark.parametrize("name, text, match", BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_bad_lines_are_one_line_input_errors(tmp_path, name, text, match):
    path = tmp_path / f"{name}.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as exc:
        read_mots(path, num_frames=3)
    one_line_naming(exc, path)


def test_frame_before_offset_and_missing_file(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text(GOOD + "\n")
    with pytest.raises(InputError, match="before the first frame") as exc:
        read_mots(path, frame_offset=1)
    one_line_naming(exc, path)
    with pytest.raises(InputError, match="no such file") as exc:
        read_mots(tmp_path / "missing.txt")
    one_line_naming(exc, tmp_path / "missing.txt")
