"""Overlay drawing, id colours and overlay videos."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from s2d.io.overlay import OverlayWriter, color_for_id, draw_overlay
from s2d.io.video import open_video
from s2d.types import FrameResult

H, W = 64, 96


def _frame_result(index: int = 0) -> FrameResult:
    """Two overlapping boxes in the left half: id 3 (score 0.9) over id 7 (score 0.4)."""
    masks = np.zeros((2, H, W), bool)
    masks[0, 10:40, 5:35] = True  # id 3
    masks[1, 25:55, 20:45] = True  # id 7, overlaps id 3 in [25:40, 20:35]
    return FrameResult(index, masks, ids=[3, 7], scores=[0.9, 0.4])


def _background(value: int = 90) -> np.ndarray:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:] = (value, value + 10, value + 20)
    return rgb


def test_colors_are_deterministic_and_distinct():
    colors = [color_for_id(i) for i in range(1, 21)]
    assert colors == [color_for_id(i) for i in range(1, 21)]  # same id, same colour, always
    assert color_for_id(np.int64(5)) == color_for_id(5)
    for c in colors:
        assert len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
    dists = [np.linalg.norm(np.subtract(a, b)) for a, b in itertools.combinations(colors, 2)]
    assert min(dists) > 40, min(dists)  # out of 441: no two of the first 20 ids look alike
    assert len(set(color_for_id(i) for i in range(1, 256))) == 255


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_color_rejects_non_ids(bad):
    with pytest.raises(ValueError):
        color_for_id(bad)


@pytest.mark.parametrize("contours,labels", [(True, True), (False, False)])
def test_draw_overlay_tints_masks_and_keeps_background(contours, labels):
    rgb = _background()
    fr = _frame_result()
    out = draw_overlay(rgb, fr, alpha=0.5, contours=contours, labels=labels)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.array_equal(rgb, _background())  # input untouched
    # far from any mask, contour or label: unchanged
    assert np.array_equal(out[:, 60:], rgb[:, 60:])
    # a pixel inside id 7 only, away from its contour and label: blended half-way to id 7's colour
    y, x = 52, 42
    expected = np.round(0.5 * rgb[y, x].astype(float) + 0.5 * np.array(color_for_id(7))).astype(int)
    assert np.abs(out[y, x].astype(int) - expected).max() <= 1
    c7 = np.array(color_for_id(7))
    assert np.linalg.norm(out[y, x] - c7) < np.linalg.norm(rgb[y, x].astype(int) - c7)
    if not (contours or labels):
        # the overlap goes to the higher score (id 3), as label_map() decides
        y, x = 27, 22
        expected3 = np.round(0.5 * rgb[y, x].astype(float) + 0.5 * np.array(color_for_id(3))).astype(int)
        assert np.abs(out[y, x].astype(int) - expected3).max() <= 1
        # without decorations, every pixel outside the masks is untouched
        fg = fr.label_map() > 0
        assert np.array_equal(out[~fg], rgb[~fg])


def test_contours_and_labels_draw_on_top():
    rgb = _background()
    plain = draw_overlay(rgb, _frame_result(), contours=False, labels=False)
    decorated = draw_overlay(rgb, _frame_result(), contours=True, labels=True)
    changed = np.any(plain != decorated, axis=2)
    assert changed.sum() > 50  # outlines and the id text are drawn
    assert not changed[:, 60:].any()  # ...only near the objects


def test_draw_overlay_alpha_and_empty_frames():
    rgb = _background()
    assert np.array_equal(draw_overlay(rgb, FrameResult.empty(0, H, W)), rgb)
    out = draw_overlay(rgb, _frame_result(), alpha=0.0, contours=False, labels=False)
    assert np.array_equal(out, rgb)
    out = draw_overlay(rgb, _frame_result(), alpha=1.0, contours=False, labels=False)
    assert tuple(out[52, 42]) == color_for_id(7)
    with pytest.raises(ValueError):
        draw_overlay(rgb, _frame_result(), alpha=1.5)
    with pytest.raises(ValueError):
        draw_overlay(rgb[..., 0], _frame_result())


def test_draw_overlay_resizes_masks_to_the_image():
    big = np.zeros((2 * H, 2 * W, 3), np.uint8)
    out = draw_overlay(big, _frame_result(), alpha=1.0, contours=False, labels=False)
    assert tuple(out[2 * 52, 2 * 42]) == color_for_id(7)
    assert not out[:, 120:].any()


def test_overlay_video_roundtrip(tmp_path):
    path = tmp_path / "overlay.mp4"
    with OverlayWriter(path, fps=15, width=W, height=H) as ow:
        for t in range(8):
            ow.write(_background(40 + 10 * t), _frame_result(t) if t % 2 == 0 else None)
    assert sorted(os.listdir(tmp_path)) == ["overlay.mp4"]
    with open_video(path) as s:
        info = s.info
        frames = list(s)
    assert (info.width, info.height, info.total_frames) == (W, H, 8)
    assert info.fps == pytest.approx(15.0)
    assert len(frames) == 8
    c7 = np.array(color_for_id(7), float)
    inside = frames[0].rgb[48:54, 38:44].reshape(-1, 3).mean(0)
    expected = 0.5 * np.array([40, 50, 60]) + 0.5 * c7
    assert np.abs(inside - expected).max() < 12  # tint survives the codec
    untinted = frames[1].rgb[48:54, 38:44].reshape(-1, 3).mean(0)
    assert np.abs(untinted - np.array([50, 60, 70])).max() < 6  # frames without results stay plain


def test_overlay_writer_is_atomic(tmp_path):
    path = tmp_path / "overlay.mp4"
    with pytest.raises(KeyboardInterrupt):
        with OverlayWriter(path, fps=10, width=W, height=H) as ow:
            for t in range(60):
                ow.write(_background(), _frame_result(t))
            raise KeyboardInterrupt  # even an interrupt must not leave a half-written video
    assert os.listdir(tmp_path) == []
