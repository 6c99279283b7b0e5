"""Per-video preparation shared by the tracker backends: frame input, a RAM-or-disk array store, and
the chaining engine (forward/backward passes with the occlusion / re-acquisition state machine).

**Store policy** (:class:`ArrayStore`). A backend keeps one fixed-shape array per frame or frame pair
(the flow tracker: forward and backward flow as float16; the Lucas-Kanade tracker: the grayscale frame).
Items are kept in RAM while their total stays under ``ram_limit_mb``; past that the store spills
everything to one raw file in a private temporary folder (under ``cache_dir`` or the system temp
dir) and is read back memory-mapped, so process memory does not grow with the video length (pages
come from the OS page cache). The folder is deleted by :meth:`ArrayStore.close` (trackers call it in
``close()`` / ``with`` / on garbage collection).

**Coordinates.** Queries and results are in pixels of the frames given to ``prepare`` (the *video
size*, :attr:`PreparedVideo.size`), pixel centres at integers. Backends work at a smaller *working size*
(long side ``max_side``); the two are related by the pixel-centre mapping used by area resizing:
``x_work = (x + 0.5) · w / W − 0.5``.

**Chaining engine** (:func:`chain`). One pass forward and one backward over the frames, each step
moving all *active* points (those whose query frame has been reached) with one vectorised call of a
backend *step* function ``step(t, direction, points) -> (displacement, consistent)``. State machine
per point (``K`` = ``reacquire_frames``):

* at its query frame a point is visible;
* a visible point whose step is consistent moves by the step's displacement and stays visible;
* an inconsistent step (occlusion, flow failure, leaving the frame) makes it *lost* (invisible); it
  then keeps moving with its velocity — the running average (factor 0.5) of its trusted steps — a
  constant-velocity prediction (the flow at its position would drag it along with the occluder);
  a point lost on its very first step has no velocity yet: it moves with the median displacement
  of the consistent points of that step and is never re-acquired in that direction (nothing to
  check a re-acquisition against);
* a lost point is *re-acquired* only after ``K`` consecutive steps that are consistent **and** whose
  displacement agrees with its remembered velocity (``|d − v| ≤ tol_px + tol_rel·|v|``): a point under
  an occluder sees consistent flow of the occluder, which moves differently and is not taken for it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike

from s2d.errors import SettingError
from s2d.io.video import Frame, open_video, scaled_size

PathLike = Union[str, "os.PathLike[str]"]
FrameSource = Union[PathLike, Iterable[Union[Frame, np.ndarray]]]

__all__ = ["ArrayStore", "PreparedVideo", "ReacquireRule", "StepFn", "bilinear", "chain", "check_queries",
           "inside", "is_number", "iter_input_frames", "working_size_of"]

#: ``step(t, direction, points) -> (displacement N×2 float64, consistent N bool)``: moves points from
#: frame ``t`` to ``t + direction`` (working-size pixels).
StepFn = Callable[[int, int, np.ndarray], Tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------- store


class ArrayStore:
    """Append-only list of same-shape arrays, in RAM up to ``ram_limit_mb`` then memory-mapped on disk.

    Args:
        item_shape, dtype: shape and dtype of every item.
        ram_limit_mb: items stay in RAM while their total is at most this many MiB (0 = always disk).
        cache_dir: parent of the private temporary folder used once the store spills (``None`` = the
            system temp dir). The folder is removed by :meth:`close`.
    """

    def __init__(self, item_shape: Tuple[int, ...], dtype: DTypeLike, *, ram_limit_mb: float = 256.0,
                 cache_dir: Optional[PathLike] = None) -> None:
        self.item_shape = tuple(int(s) for s in item_shape)
        self.dtype = np.dtype(dtype)
        self.item_bytes = int(np.prod(self.item_shape)) * self.dtype.itemsize
        self.ram_limit = float(ram_limit_mb) * 2 ** 20
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self._ram: Optional[List[np.ndarray]] = []
        self._dir: Optional[str] = None
        self._file: Optional[BinaryIO] = None
        self._mm: Optional[np.ndarray] = None
        self._n = 0
        self._finalizer: Optional[weakref.finalize] = None

    # -- writing
    def append(self, item: np.ndarray) -> None:
        a = np.ascontiguousarray(item, dtype=self.dtype)
        if a.shape != self.item_shape:
            raise ValueError(f"store item must be {self.item_shape}, got {a.shape}")
        if self._mm is not None:
            raise RuntimeError("store is finalized")
        if self._ram is not None and (self._n + 1) * self.item_bytes > self.ram_limit:
            self._spill()
        if self._ram is not None:
            self._ram.append(a)
        else:
            assert self._file is not None  # opened by _spill, which dropped the RAM list
            self._file.write(a.tobytes())
        self._n += 1

    def _spill(self) -> None:
        if self.cache_dir is not None:
            os.makedirs(self.cache_dir, exist_ok=True)
        self._dir = tempfile.mkdtemp(prefix="s2d-track-", dir=self.cache_dir)
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._file = open(os.path.join(self._dir, "items.bin"), "wb")
        for a in self._ram or []:
            self._file.write(a.tobytes())
        self._ram = None

    def finalize(self) -> "ArrayStore":
        """End writing; a spilled store is reopened read-only memory-mapped."""
        if self._file is not None:
            self._file.close()
            self._file = None
            assert self._dir is not None  # made by _spill with the file
            if self._n:
                self._mm = np.memmap(os.path.join(self._dir, "items.bin"), dtype=self.dtype, mode="r",
                                     shape=(self._n,) + self.item_shape)
        return self

    # -- reading
    @property
    def on_disk(self) -> bool:
        """True once the store has spilled to its temporary folder."""
        return self._dir is not None

    @property
    def path(self) -> Optional[Path]:
        """The temporary folder of a spilled store (``None`` while in RAM)."""
        return None if self._dir is None else Path(self._dir)

    @property
    def nbytes(self) -> int:
        return self._n * self.item_bytes

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> np.ndarray:
        if not -self._n <= i < self._n:
            raise IndexError(i)
        if self._ram is not None:
            return self._ram[i]
        if self._mm is None:
            raise RuntimeError("store must be finalized before reading")
        return self._mm[i]

    def close(self) -> None:
        """Free the items and delete the temporary folder (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._mm = None
        self._ram = []
        self._n = 0
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._dir = None


# --------------------------------------------------------------------------- input frames


def iter_input_frames(source: FrameSource,
                      max_side: Optional[int]) -> Tuple[Iterator[Frame], Optional[Tuple[int, int]]]:
    """Frames of ``source`` and, for a path, the original ``(H, W)``.

    A path (video file, frame folder, glob) is opened with :func:`s2d.io.video.open_video` at
    ``max_side`` (decoding straight to the working size); the coordinates stay those of the original
    frames. An iterable may yield :class:`~s2d.io.video.Frame` or ``H×W×3``/``H×W`` uint8 arrays; its
    frames define the coordinates.
    """
    if isinstance(source, (str, os.PathLike)):
        stream = open_video(source, max_side=max_side)
        info = stream.info
        return iter(stream), (int(info.orig_height), int(info.orig_width))

    def gen() -> Iterator[Frame]:
        for i, f in enumerate(source):
            if isinstance(f, Frame):
                yield f
            else:
                yield Frame(i, np.asarray(f), f"{i:05d}")

    return gen(), None


@dataclass
class PreparedVideo:
    """Geometry of a prepared video: ``size`` (coordinates of queries/results) and ``working_size``."""

    num_frames: int
    size: Tuple[int, int]
    working_size: Tuple[int, int]

    @property
    def scale(self) -> Tuple[float, float]:
        """``(sx, sy)`` = working / video size."""
        return self.working_size[1] / self.size[1], self.working_size[0] / self.size[0]

    def to_working(self, xy: np.ndarray) -> np.ndarray:
        sx, sy = self.scale
        out = np.asarray(xy, dtype=np.float64).copy()
        out[..., 0] = (out[..., 0] + 0.5) * sx - 0.5
        out[..., 1] = (out[..., 1] + 0.5) * sy - 0.5
        return out

    def to_video(self, xy: np.ndarray, inplace: bool = False) -> np.ndarray:
        """Working-size → video-size pixels (``inplace`` reuses a float array of any precision)."""
        sx, sy = self.scale
        out = xy if inplace else np.asarray(xy, dtype=np.float64).copy()
        if (sx, sy) != (1.0, 1.0):
            out[..., 0] += 0.5
            out[..., 0] /= sx
            out[..., 0] -= 0.5
            out[..., 1] += 0.5
            out[..., 1] /= sy
            out[..., 1] -= 0.5
        return out


def working_size_of(size: Tuple[int, int], max_side: Optional[int]) -> Tuple[int, int]:
    w, h = scaled_size(int(size[1]), int(size[0]), max_side)
    return h, w


# --------------------------------------------------------------------------- sampling


def bilinear(field: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinear samples of an ``h×w×C`` array (any dtype, may be a memmap) at ``N×2`` ``(x, y)`` points.

    Coordinates are clamped to the frame (border values outside). Returns ``N×C`` float64. Only the
    4·N touched cells are read (cheap on a memory-mapped field).
    """
    h, w = field.shape[:2]
    c = field.shape[2]
    flat = field.reshape(h * w, c)
    x = np.clip(pts[:, 0], 0.0, w - 1.0)
    y = np.clip(pts[:, 1], 0.0, h - 1.0)
    x0 = np.minimum(x.astype(np.intp), w - 2) if w > 1 else np.zeros(len(x), np.intp)
    y0 = np.minimum(y.astype(np.intp), h - 2) if h > 1 else np.zeros(len(y), np.intp)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    dx = 1 if w > 1 else 0
    dy = w if h > 1 else 0
    i00 = y0 * w + x0
    a = flat[i00].astype(np.float64)
    b = flat[i00 + dx].astype(np.float64)
    cc = flat[i00 + dy].astype(np.float64)
    d = flat[i00 + dy + dx].astype(np.float64)
    top = a + (b - a) * fx
    bot = cc + (d - cc) * fx
    return top + (bot - top) * fy


def inside(pts: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Points within the frame ``size = (h, w)`` (pixel centres 0..w−1, 0..h−1)."""
    h, w = size
    return (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)


# --------------------------------------------------------------------------- queries / ranges


def check_queries(queries: np.ndarray, num_frames: int,
                  frame_range: Optional[Tuple[int, int]]) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Validate ``N×3`` queries and ``frame_range``; returns ``(queries float64, (lo, hi))``."""
    q = np.asarray(queries, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 3:
        if q.size == 0:
            q = q.reshape(0, 3)
        else:
            raise SettingError(f"queries must be N×3 (t, x, y), got shape {q.shape}")
    if num_frames <= 0:
        raise SettingError("the tracker is not prepared (call prepare() with a video first)")
    if frame_range is None:
        lo, hi = 0, num_frames
    else:
        try:
            lo, hi = (int(v) for v in frame_range)
        except (TypeError, ValueError):
            raise SettingError(f"frame_range must be (start, end), got {frame_range!r}") from None
        if not 0 <= lo < hi <= num_frames:
            raise SettingError(f"frame_range must satisfy 0 <= start < end <= {num_frames}, got {frame_range!r}")
    if len(q):
        if not np.isfinite(q).all():
            raise SettingError("queries must be finite")
        t = q[:, 0]
        if (t != np.round(t)).any() or t.min() < lo or t.max() >= hi:
            raise SettingError(f"query frames must be integers in [{lo}, {hi}) "
                               f"(got {t.min():g}..{t.max():g})")
    return q, (lo, hi)


# --------------------------------------------------------------------------- chaining


_V_SMOOTH = 0.5  # weight of the previous velocity in the running average


@dataclass(frozen=True)
class ReacquireRule:
    """Re-acquisition (``frames`` = K, ``tol_px``, ``tol_rel``) and how lost points move: with
    ``follow_flow`` a lost point whose step is *inconsistent* (a flow error rather than a trackable
    occluder) moves with the step's own displacement — DIS's best guess — instead of its velocity;
    a consistent step that disagrees with the velocity (likely an occluder's motion) is still replaced
    by the velocity."""

    frames: int
    tol_px: float
    tol_rel: float
    follow_flow: bool = False


def _run_pass(step: StepFn, qt: np.ndarray, qxy: np.ndarray, frames: range, direction: int,
              rule: ReacquireRule, pts_out: np.ndarray, vis_out: np.ndarray) -> None:
    """One pass over ``frames`` (in order), adding queries at their frame and stepping all active points."""
    order = np.argsort(qt if direction > 0 else -qt, kind="stable")
    sorted_t = qt[order]
    idx = np.zeros(0, np.intp)
    p = np.zeros((0, 2))
    v = np.zeros((0, 2))
    vis = np.zeros(0, bool)
    streak = np.zeros(0, np.int32)
    k = 0
    n_q = len(order)
    last = frames[-1] if len(frames) else None
    for t in frames:
        k1 = k
        while k1 < n_q and sorted_t[k1] == t:
            k1 += 1
        if k1 > k:
            new = order[k:k1]
            idx = np.concatenate([idx, new])
            p = np.concatenate([p, qxy[new]])
            v = np.concatenate([v, np.full((len(new), 2), np.nan)])
            vis = np.concatenate([vis, np.ones(len(new), bool)])
            streak = np.concatenate([streak, np.zeros(len(new), np.int32)])
            k = k1
        if len(idx):
            pts_out[t, idx] = p
            vis_out[t, idx] = vis
        if t == last or not len(idx):
            continue
        d, ok = step(t, direction, p)
        d = np.asarray(d, dtype=np.float64)
        finite = np.isfinite(d).all(axis=1)
        ok = np.asarray(ok, dtype=bool) & finite
        no_v = np.isnan(v[:, 0])
        # prediction for untrusted steps: the point's velocity; a point without one (lost
        # on its first step) gets the median displacement of this step's consistent visible points
        # (the dominant, usually camera, motion) — never its own untrusted flow, which near an
        # occluder is the occluder's motion
        if no_v.any():
            good = vis & ok
            glob = np.median(d[good], axis=0) if good.any() else np.zeros(2)
            fallback = np.where(no_v[:, None], glob[None, :], v)
        else:
            fallback = v
        if rule.follow_flow:
            fallback = np.where((~ok & finite)[:, None], d, fallback)
        diff = np.hypot(d[:, 0] - fallback[:, 0], d[:, 1] - fallback[:, 1])
        speed = np.hypot(fallback[:, 0], fallback[:, 1])
        agrees = ok & ~no_v & (diff <= rule.tol_px + rule.tol_rel * speed)
        keep = vis & ok
        regain = ~vis & agrees
        move = keep | regain
        p = p + np.where(move[:, None], d, fallback)
        # velocity: running average of the trusted displacements (smooths a last step that was
        # already partly dragged by an approaching occluder)
        v = np.where(move[:, None], np.where(np.isnan(v), d, _V_SMOOTH * v + (1 - _V_SMOOTH) * d), v)
        streak = np.where(regain, streak + 1, 0).astype(np.int32)
        vis = keep | (regain & (streak >= rule.frames))
        streak = np.where(vis, 0, streak).astype(np.int32)


def chain(step: StepFn, queries_work: np.ndarray, num_frames: int, frame_range: Tuple[int, int],
          rule: ReacquireRule) -> Tuple[np.ndarray, np.ndarray]:
    """Forward and backward passes; returns ``(points T×N×2 float32 working px, visible T×N bool)``.

    Frames outside ``frame_range`` get NaN positions and ``visible=False``.
    """
    n = queries_work.shape[0]
    pts = np.full((num_frames, n, 2), np.nan, np.float32)
    vis = np.zeros((num_frames, n), bool)
    if n == 0:
        return pts, vis
    lo, hi = frame_range
    qt = queries_work[:, 0].astype(np.int64)
    qxy = queries_work[:, 1:3]
    _run_pass(step, qt, qxy, range(lo, hi), +1, rule, pts, vis)
    _run_pass(step, qt, qxy, range(hi - 1, lo - 1, -1), -1, rule, pts, vis)
    # the two passes agree at the query frame; make it exact and visible
    ar = np.arange(n)
    pts[qt, ar] = qxy
    vis[qt, ar] = True
    return pts, vis


# --------------------------------------------------------------------------- shared tracker shell


def is_number(v: object) -> bool:
    """A finite real number (not a bool)."""
    return (not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))
            and bool(np.isfinite(v)))


def check_common(name: str, reacquire_frames: int, tol_px: float, tol_rel: float, ram_limit_mb: float) -> None:
    """Validate the settings every chaining backend shares (raises :class:`SettingError`)."""
    if isinstance(reacquire_frames, bool) or not isinstance(reacquire_frames, (int, np.integer)) \
            or reacquire_frames < 1:
        raise SettingError(f"{name}.reacquire_frames must be an integer >= 1, got {reacquire_frames!r}")
    for key, v in (("reacquire_tol_px", tol_px), ("reacquire_tol_rel", tol_rel), ("ram_limit_mb", ram_limit_mb)):
        if not is_number(v) or v < 0:
            raise SettingError(f"{name}.{key} must be a finite number >= 0, got {v!r}")


class ChainTracker:
    """Shell shared by the chaining backends: per-video geometry, the store, ``track`` and cleanup.

    Subclasses implement :meth:`prepare` (filling ``self._store`` and ``self._video``) and
    :meth:`_step`. Use as a context manager or call :meth:`close` to delete a spilled store.
    """

    _rule: ReacquireRule

    def __init__(self) -> None:
        self._store: Optional[ArrayStore] = None
        self._video: Optional[PreparedVideo] = None

    # -- geometry
    @property
    def prepared(self) -> bool:
        return self._video is not None

    def _need(self) -> PreparedVideo:
        if self._video is None:
            raise SettingError("the tracker is not prepared (call prepare() with a video first)")
        return self._video

    @property
    def num_frames(self) -> int:
        """Frames of the prepared video."""
        return self._need().num_frames

    @property
    def size(self) -> Tuple[int, int]:
        """``(H, W)`` of the coordinates queries and results are in (the video given to ``prepare``)."""
        return self._need().size

    @property
    def working_size(self) -> Tuple[int, int]:
        """``(h, w)`` the backend computes at."""
        return self._need().working_size

    @property
    def store(self) -> Optional[ArrayStore]:
        """The per-video array store (RAM or memory-mapped disk; see :class:`ArrayStore`)."""
        return self._store

    # -- tracking
    def _step(self, t: int, direction: int, pts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def track(self, queries: np.ndarray, frame_range: Optional[Tuple[int, int]] = None):  # -> TrackResult
        """Track ``N×3`` queries ``(t, x, y)`` (video-size pixels) forward and backward through the video.

        Args:
            queries: ``N×3`` ``(frame, x, y)``; frames are integers (float arrays are fine).
            frame_range: optional ``(start, end)``, end exclusive: only these frames are tracked; query
                frames must lie inside; other frames get NaN and ``visible=False``.

        Returns:
            :class:`~s2d.tracking.base.TrackResult` with ``points`` ``T×N×2`` float32 in video-size pixels
            (positions of invisible points are predictions, not to be trusted) and ``visible`` ``T×N``.
        """
        from s2d.tracking.base import TrackResult

        video = self._need()
        q, rng = check_queries(queries, video.num_frames, frame_range)
        qw = q.copy()
        qw[:, 1:3] = video.to_working(q[:, 1:3])
        pts, vis = chain(self._step, qw, video.num_frames, rng, self._rule)
        pts = video.to_video(pts, inplace=True)
        pts[q[:, 0].astype(np.intp), np.arange(len(q))] = q[:, 1:3]  # exact at the query frame
        return TrackResult(pts, vis)

    # -- lifetime
    def close(self) -> None:
        """Release the prepared video (deletes a spilled store's temporary folder)."""
        if self._store is not None:
            self._store.close()
        self._store = None
        self._video = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
