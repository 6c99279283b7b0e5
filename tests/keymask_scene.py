"""A synthetic two-object scene and an exact point tracker for keymask-discovery tests.

The tracker is a test double of an external component (the point tracker), not of the code under
test: it knows every object's path and occlusion schedule and returns exact positions and
visibility, so discovery is tested on its own logic.

Scene (T=36, 96×128): object A — a 22×22 square moving right along y≈30, always visible; object B — a
disc of radius 12 moving left along y≈68, fully hidden (occluded) on frames 15..19. Background is
static. Painting order: B above A (they never overlap anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from s2d.tracking.base import TrackResult
from s2d.types import Track, VideoSegmentation

T, H, W = 36, 96, 128
OCCLUDED_B = set(range(15, 20))


@dataclass
class MovingObject:
    name: str
    center: Callable[[int], Tuple[float, float]]  # t -> (x, y)
    shape: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (dx, dy) offsets -> inside
    hidden: Set[int]

    def mask(self, t: int, grow: int = 0) -> np.ndarray:
        cx, cy = self.center(t)
        yy, xx = np.mgrid[:H, :W]
        m = self.shape(xx - cx, yy - cy)
        if grow:
            import cv2
            k = np.ones((2 * abs(grow) + 1,) * 2, np.uint8)
            m = (cv2.dilate if grow > 0 else cv2.erode)(m.astype(np.uint8), k).astype(bool)
        return m


def _square(half: float):
    return lambda dx, dy: (np.abs(dx) <= half) & (np.abs(dy) <= half)


def _disc(r: float):
    return lambda dx, dy: dx * dx + dy * dy <= r * r


OBJ_A = MovingObject("A", lambda t: (20.0 + 80.0 * t / (T - 1), 30.0), _square(10.5), set())
OBJ_B = MovingObject("B", lambda t: (100.0 - 70.0 * t / (T - 1), 68.0), _disc(12.0), OCCLUDED_B)
OBJECTS = [OBJ_A, OBJ_B]


class ExactTracker:
    """PointTracker over the scene: a query belongs to the front-most visible object containing its
    rounded position at its query frame (else to the static background) and moves with it.
    Object points are invisible on the object's hidden frames; background points are invisible where
    a visible object covers them. Counts its calls."""

    def __init__(self, objects: Sequence[MovingObject] = OBJECTS, num_frames: int = T) -> None:
        self.objects = list(objects)
        self.num_frames = num_frames
        self.calls = 0
        self.queries_seen = 0
        k = len(self.objects)
        # per-frame label map of visible objects (-1 = background); later objects on top
        self.labels = np.full((num_frames, H, W), -1, np.int8)
        self.offset = np.zeros((k + 1, num_frames, 2))  # row k = background (static)
        self.hidden = np.zeros((k + 1, num_frames), bool)
        for i, o in enumerate(self.objects):
            for t in range(num_frames):
                if t not in o.hidden:
                    self.labels[t][o.mask(t)] = i
                self.offset[i, t] = o.center(t)
                self.hidden[i, t] = t in o.hidden

    def _label_at(self, t: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        xi = np.clip(np.rint(x).astype(int), 0, W - 1)
        yi = np.clip(np.rint(y).astype(int), 0, H - 1)
        return self.labels[t, yi, xi]

    def track(self, queries: np.ndarray, frame_range=None) -> TrackResult:
        self.calls += 1
        q = np.asarray(queries, dtype=np.float64)
        n = q.shape[0]
        self.queries_seen += n
        t0 = q[:, 0].astype(int)
        owner = self._label_at(t0, q[:, 1], q[:, 2]).astype(int)
        owner[owner < 0] = len(self.objects)
        ts = np.arange(self.num_frames)[:, None]
        shift = self.offset[owner][:, :, :] - self.offset[owner, t0][:, None, :]  # n×T×2
        pts = q[None, :, 1:] + shift.transpose(1, 0, 2)  # T×n×2
        bg = owner == len(self.objects)
        vis = ~self.hidden[owner].T  # T×n
        under = self._label_at(np.broadcast_to(ts, (self.num_frames, n)), pts[..., 0], pts[..., 1])
        vis = np.where(bg[None, :], under < 0, vis)
        vis &= (pts[..., 0] >= 0) & (pts[..., 0] <= W - 1) & (pts[..., 1] >= 0) & (pts[..., 1] <= H - 1)
        vis[t0, np.arange(n)] = True
        return TrackResult(pts.astype(np.float32), vis)


def blob(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


@dataclass
class NoisyMasks:
    video: VideoSegmentation
    truth: Dict[int, str]  # input track id -> "A" / "B" / "merged" / "random" / "dupA"


def noisy_masks(*, missing_a: Sequence[int] = (7, 22), missing_b: Sequence[int] = (28,),
                merged: Sequence[int] = (5, 25), random_blobs: Optional[Dict[int, np.ndarray]] = None,
                duplicate_a: Optional[Dict[int, Tuple[np.ndarray, float]]] = None,
                grown: Sequence[int] = (3, 9, 14, 31), a: MovingObject = OBJ_A,
                b: MovingObject = OBJ_B) -> NoisyMasks:
    """Single-frame masks of the scene with deliberate errors.

    * A and B get their true mask on each frame (dilated by 1 px on ``grown`` frames), except where
      missing, where B is hidden, and on ``merged`` frames, which get one mask covering both objects
      (the box around both) instead;
    * ``random_blobs``: frame -> an extra background blob;
    * ``duplicate_a``: frame -> (extra mask, score) added for A;
    * ``a``, ``b``: the two objects (default OBJ_A, OBJ_B); no mask on an object's hidden frames.
    Every mask is its own single-frame track.
    """
    if random_blobs is None:
        random_blobs = {10: blob(110, 88, 9, 6), 30: blob(12, 88, 8, 6)}
    duplicate_a = duplicate_a or {}
    tracks: List[Track] = []
    truth: Dict[int, str] = {}

    def add(t: int, m: np.ndarray, score: float, kind: str) -> None:
        tid = len(tracks) + 1
        seq: List[Optional[np.ndarray]] = [None] * T
        seq[t] = m
        tracks.append(Track(tid, seq, score))
        truth[tid] = kind

    for t in range(T):
        grow = 1 if t in grown else 0
        if t in merged:
            both = a.mask(t) | b.mask(t)
            ys, xs = np.nonzero(both)
            box = np.zeros((H, W), bool)
            box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
            add(t, box, 0.9, "merged")
        else:
            if t not in missing_a and t not in a.hidden:
                add(t, a.mask(t, grow), 0.8, "A")
            if t not in missing_b and t not in b.hidden:
                add(t, b.mask(t, grow), 0.7, "B")
        if t in duplicate_a:
            m, s = duplicate_a[t]
            add(t, m, s, "dupA")
        if t in random_blobs:
            add(t, random_blobs[t], 0.6, "random")
    return NoisyMasks(VideoSegmentation(H, W, T, tracks, name="synthetic"), truth)
