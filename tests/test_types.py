"""The canonical result types validate on construction and convert between tracks and frames."""

from __future__ import annotations

import math

import numpy as np
import pytest

from s2d import rle
from s2d.errors import ValidationError
from s2d.types import FrameResult, Track, VideoSegmentation

H, W, T = 6, 8, 4


def box(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


A, B, C = box(0, 3, 0, 3), box(3, 6, 4, 8), box(1, 5, 1, 6)  # C overlaps A and B


def make_video() -> VideoSegmentation:
    return VideoSegmentation(H, W, T, [
        Track(1, [A, A, None, A], 0.9),
        Track(2, [B, None, B, np.zeros((H, W), bool)], 0.6, category_id=3),
        Track(5, [None, C, C, None], 0.3),
    ], fps=25, name="toy", video_id=4, frame_names=["a", "b", "c", "d"])


# ---------------------------------------------------------------- Track
@pytest.mark.parametrize("kwargs, match", [
    (dict(id=0), "positive integer"),
    (dict(id=-3), "positive integer"),
    (dict(id=1.0), "positive integer"),
    (dict(id=True), "positive integer"),
    (dict(id="1"), "positive integer"),
    (dict(score=1.5), r"\[0, 1\]"),
    (dict(score=-0.01), r"\[0, 1\]"),
    (dict(score=float("nan")), r"\[0, 1\]"),
    (dict(score=float("inf")), r"\[0, 1\]"),
    (dict(score="high"), "number"),
    (dict(category_id=1.5), "category_id"),
    (dict(masks=[np.zeros((2, H, W), bool)]), "H×W"),
    (dict(masks=[{"size": [H, W]}]), "RLE"),
    (dict(masks=[{"size": [H, W], "counts": [1, 2]}]), "sum to"),
    (dict(masks=[[1, 2, 3]]), "RLE"),
])
def test_track_validation(kwargs, match):
    args = dict(id=1, masks=[A], score=0.5)
    args.update(kwargs)
    with pytest.raises(ValidationError, match=match):
        Track(**args)


def test_track_normalises_masks():
    uncompressed = {"size": [H, W], "counts": [2, 3, H * W - 5]}
    tr = Track(np.int64(3), [A, None, rle.encode(B), uncompressed], np.float32(0.25))
    assert tr.id == 3 and type(tr.id) is int and tr.score == 0.25
    assert all(m is None or isinstance(m["counts"], str) for m in tr.masks)
    assert tr.present_frames() == [0, 2, 3]
    assert np.array_equal(tr.mask(0), A) and tr.mask(1) is None
    assert tr.area(2) == B.sum() and tr.area(1) == 0 and tr.area(3) == 3


# ---------------------------------------------------------------- FrameResult
@pytest.mark.parametrize("kwargs, match", [
    (dict(masks=np.zeros((H, W), bool)), "N×H×W"),
    (dict(ids=[1]), "2 masks but 1 ids"),
    (dict(scores=[0.5]), "2 masks but 1 scores"),
    (dict(category_ids=[1, 1, 1]), "category_ids"),
    (dict(ids=[1, 1]), "duplicate"),
    (dict(ids=[0, 1]), "positive"),
    (dict(scores=[0.5, 1.2]), r"\[0, 1\]"),
    (dict(scores=[float("nan"), 0.5]), r"\[0, 1\]"),
])
def test_frame_result_validation(kwargs, match):
    args = dict(index=0, masks=np.stack([A, B]), ids=[1, 2], scores=[0.5, 0.7])
    args.update(kwargs)
    with pytest.raises(ValidationError, match=match):
        FrameResult(**args)


@pytest.mark.parametrize("scores, ids, expected_top", [
    ([0.9, 0.3], [1, 5], 1),   # higher score wins
    ([0.3, 0.9], [1, 5], 5),
    ([0.5, 0.5], [7, 2], 2),   # tie: lower id wins
])
def test_label_map_priority(scores, ids, expected_top):
    fr = FrameResult(0, np.stack([A, C]), ids, scores)
    lm = fr.label_map()
    overlap = A & C
    assert overlap.any()
    assert (lm[overlap] == expected_top).all()
    other = ids[1] if expected_top == ids[0] else ids[0]
    assert (lm[(A | C) & ~overlap] > 0).all()
    assert (lm[C & ~A] == ids[1]).all() and (lm[A & ~C] == ids[0]).all()
    assert (lm[~(A | C)] == 0).all()
    assert set(np.unique(lm)) == {0, expected_top, other}


def test_empty_frame():
    fr = FrameResult.empty(3, H, W)
    assert len(fr) == 0 and (fr.height, fr.width) == (H, W)
    assert not fr.label_map().any()


# ---------------------------------------------------------------- VideoSegmentation
def _track(tid=1, masks=None, score=0.5):
    return Track(tid, masks if masks is not None else [A] * T, score)


@pytest.mark.parametrize("build, match", [
    (lambda: VideoSegmentation(H, W, T, [_track(masks=[box(0, 1, 0, 1, 5, 8)] * T)]), "mask size"),
    (lambda: VideoSegmentation(H, W, T, [_track(1), _track(1)]), "duplicate track id 1"),
    (lambda: VideoSegmentation(H, W, T, [_track(masks=[A] * (T - 1))]), "has 3 frames, video has 4"),
    (lambda: VideoSegmentation(H, W, T, [object()]), "Track objects"),
    (lambda: VideoSegmentation(-1, W, T), "height"),
    (lambda: VideoSegmentation(H, 8.0, T), "width"),
    (lambda: VideoSegmentation(H, W, T, fps=0), "fps"),
    (lambda: VideoSegmentation(H, W, T, fps=math.nan), "fps"),
    (lambda: VideoSegmentation(H, W, T, frame_names=["a"]), "frame names"),
])
def test_video_validation(build, match):
    with pytest.raises(ValidationError, match=match):
        build()


def test_video_error_names_the_video():
    with pytest.raises(ValidationError, match="video 'cat'"):
        VideoSegmentation(H, W, T, [_track(1), _track(1)], name="cat")


def test_frames_round_trip():
    video = make_video()
    frames = list(video.iter_frames())
    assert [f.index for f in frames] == list(range(T))
    assert frames[0].ids.tolist() == [1, 2] and frames[1].ids.tolist() == [1, 5]
    assert frames[3].ids.tolist() == [1, 2]  # a present-but-empty mask is still present
    assert frames[0].category_ids.tolist() == [1, 3]
    back = VideoSegmentation.from_frames(frames, H, W, fps=video.fps, name=video.name, video_id=video.video_id,
                                         frame_names=video.frame_names,
                                         track_scores={t.id: t.score for t in video.tracks})
    assert back == video


def test_from_frames_mean_score_and_trailing_frames():
    fr0 = FrameResult(0, np.stack([A]), [4], [0.2])
    fr2 = FrameResult(2, np.stack([A]), [4], [0.6])
    v = VideoSegmentation.from_frames([fr0, fr2], H, W, num_frames=5)
    assert v.num_frames == 5 and v.ids == [4]
    assert v.tracks[0].score == pytest.approx(0.4)
    assert v.tracks[0].present_frames() == [0, 2]


@pytest.mark.parametrize("frames, kwargs, match", [
    ([FrameResult.empty(1, H, W), FrameResult.empty(0, H, W)], {}, "increasing order"),
    ([FrameResult.empty(0, H, W + 1)], {}, "frame size"),
    ([FrameResult.empty(3, H, W)], dict(num_frames=2), "num_frames"),
])
def test_from_frames_errors(frames, kwargs, match):
    with pytest.raises(ValidationError, match=match):
        VideoSegmentation.from_frames(frames, H, W, **kwargs)


def test_access_helpers():
    video = make_video()
    assert video.size == (H, W) and video.ids == [1, 2, 5]
    assert video.track(5).score == 0.3
    with pytest.raises(KeyError):
        video.track(9)
    with pytest.raises(IndexError):
        video.frame(T)
    assert video.frame_name(2) == "c"
    assert VideoSegmentation(H, W, 12).frame_name(11) == "00011"
    assert len(video.with_tracks(video.tracks[:1]).tracks) == 1
