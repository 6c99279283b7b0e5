"""The motion gate of ``s2d segment`` (``min_motion``): camera-compensated flow inside a tube decides whether it
may start an object. Real DIS flow on small textured frames."""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import pytest
import torch

from s2d.errors import SettingError
from s2d.infer import SegmentConfig, VideoPredictor
from s2d.infer.motion import MotionMeter

H, W = 180, 320


def textured(n: int, *, pan: int = 0, step: int = 3) -> List[np.ndarray]:
    """``n`` frames: a background of random 4-px blobs shifted ``pan`` px per frame (a panning camera) and a 64×64
    textured patch at rows 60-124 moving ``step`` px per frame on top of it. The red channel's top-left 2×2
    pixels hold 3·t (the frame index, for the scripted model below)."""
    rng = np.random.default_rng(0)
    world = rng.integers(0, 256, (H // 4 + 1, (W + pan * n) // 4 + 1, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    patch = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    frames = []
    for t in range(n):
        f = np.ascontiguousarray(world[:H, pan * t:pan * t + W])
        x = 20 + step * t
        f[60:124, x:x + 64] = patch
        f[:2, :2, 0] = 3 * t
        frames.append(f)
    return frames


def box(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.mark.parametrize("pan", [0, 3])
def test_a_moving_patch_moves_and_the_background_does_not(pan: int) -> None:
    frames = textured(4, pan=pan)
    meter = MotionMeter()
    meter.update(list(enumerate(frames)))
    moving = torch.stack([box(66, 118, 26 + 3 * t, 78 + 3 * t) for t in range(4)])
    still = torch.stack([box(140, 175, 200, 300)] * 4)
    first_only = torch.stack([box(140, 175, 200, 300)] + [torch.zeros(H, W, dtype=torch.bool)] * 3)
    got = meter.tube_motion(range(4), torch.stack([moving, still, first_only]))
    # the patch moves 3 px per frame against the world (0.94 % of a 320 px frame; DIS "fast" reads about 0.7 of
    # it on this synthetic patch); still background reads ~0 whether or not the camera pans
    assert got[0] > 0.5
    assert got[1] < 0.05
    assert np.isnan(got[2])  # only on frame 0, which has no flow before it


def test_frames_seen_before_are_not_measured_again() -> None:
    frames = textured(6)
    meter = MotionMeter()
    meter.update(list(enumerate(frames[:4])))
    kept = dict(meter._maps)
    meter.update([(2, frames[2]), (3, frames[3]), (4, frames[4]), (5, frames[5])])  # overlap of 2
    assert set(meter._maps) == {2, 3, 4, 5} and meter._maps[3] is kept[3]


class Scripted:
    """Two tubes, both scoring 0.9: ``a`` on the moving patch and ``b`` on still background."""

    def predict(self, clip: torch.Tensor, score_threshold: float = 0.0, **_: object) -> Dict[str, torch.Tensor]:
        ts = [int(round(float(clip[i, 0, 0, 0]))) // 3 for i in range(clip.shape[0])]
        a = torch.stack([box(62, 122, 22 + 3 * t, 82 + 3 * t) for t in ts])
        b = torch.stack([box(140, 175, 200, 300) for _ in ts])
        masks = torch.stack([a, b])
        return {"scores": torch.tensor([0.9, 0.9]), "masks": masks, "mask_logits": masks.float() * 8 - 4}


@pytest.mark.parametrize("min_motion, expected", [
    (0.0, [1, 2]),  # off: both are objects
    (0.3, [1]),     # the still tube never starts one
])
def test_only_moving_tubes_start_objects(min_motion: float, expected: List[int]) -> None:
    cfg = SegmentConfig(chunk=4, overlap=2, max_side=None, score_threshold=0.5, min_area=1, refine="none",
                        split=False, min_motion=min_motion)
    out = list(VideoPredictor(Scripted(), cfg)(textured(8)))
    assert all(sorted(fr.ids.tolist()) == expected for fr in out)


@pytest.mark.parametrize("bad", [-0.1, 100, "x"])
def test_bad_min_motion_is_a_setting_error(bad) -> None:
    with pytest.raises(SettingError, match="min motion"):
        SegmentConfig(min_motion=bad)
