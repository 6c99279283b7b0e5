"""Pyramidal Lucas-Kanade point tracker (backend name ``lk``).

``prepare`` streams the video once and keeps every frame as a grayscale image at the working size
(long side :attr:`LKTrackerConfig.max_side`, 512 by default) in an
:class:`~s2d.tracking.video.ArrayStore` (RAM up to ``ram_limit_mb``, memory-mapped temporary file
beyond). ``track`` chains ``cv2.calcOpticalFlowPyrLK`` frame to frame, forward and backward in time,
all active points in one call per step. A step t→t±1 is *consistent* when both LK calls (there and
back) converge, the back-tracked point lands within ``fb_threshold`` px of the start (the standard
forward–backward error of Kalal et al. 2010) and the target is inside the frame. Occlusion and
re-acquisition follow the state machine of :mod:`s2d.tracking.video`.

LK costs two LK solves per point and step (vs. 8 bilinear samples for the ``flow`` backend), so it is
several times slower for the thousands of points keymask discovery tracks; it needs no dense flow and
is a useful cross-check. Textureless points (minimum eigenvalue below ``min_eig_threshold``) are
reported invisible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple, cast

import cv2
import numpy as np

from s2d.errors import SettingError
from s2d.features.flow import FlowConfig, prepare_gray
from s2d.tracking.video import (
    ArrayStore,
    ChainTracker,
    FrameSource,
    PreparedVideo,
    ReacquireRule,
    check_common,
    is_number,
    inside,
    iter_input_frames,
    working_size_of,
)

__all__ = ["LKTrackerConfig", "LKTracker"]


@dataclass(frozen=True)
class LKTrackerConfig:
    """Settings of :class:`LKTracker`.

    Attributes:
        max_side: long side of the working size (default 512; ``None`` = frame size, never upscaled).
        win_size: LK window side in pixels (default 21).
        max_level: pyramid levels above the base (default 3: motions up to ~8× the window).
        iterations, eps: LK stopping criteria (default 30 iterations or 0.01 px).
        min_eig_threshold: OpenCV's minimum-eigenvalue threshold; weaker points fail (default 1e-4).
        fb_threshold: maximal forward–backward error in working-size px for a consistent step
            (default 1.0).
        reacquire_frames, reacquire_tol_px, reacquire_tol_rel, ram_limit_mb, cache_dir: as in
            :class:`s2d.tracking.flow.FlowTrackerConfig` (1, 2.0, 0.5, 256 MiB, system temp dir).
    """

    max_side: Optional[int] = 512
    win_size: int = 21
    max_level: int = 3
    iterations: int = 30
    eps: float = 0.01
    min_eig_threshold: float = 1e-4
    fb_threshold: float = 1.0
    reacquire_frames: int = 1
    reacquire_tol_px: float = 2.0
    reacquire_tol_rel: float = 0.5
    ram_limit_mb: float = 256.0
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        ms = self.max_side
        if ms is not None and (isinstance(ms, bool) or not isinstance(ms, (int, np.integer)) or ms < 8):
            raise SettingError(f"LKTrackerConfig.max_side must be None or an integer >= 8, got {ms!r}")
        for key, lo in (("win_size", 3), ("max_level", 0), ("iterations", 1)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise SettingError(f"LKTrackerConfig.{key} must be an integer >= {lo}, got {v!r}")
        for key in ("eps", "min_eig_threshold", "fb_threshold"):
            v = getattr(self, key)
            if not is_number(v) or v < 0:
                raise SettingError(f"LKTrackerConfig.{key} must be a finite number >= 0, got {v!r}")
        check_common("LKTrackerConfig", self.reacquire_frames, self.reacquire_tol_px, self.reacquire_tol_rel,
                     self.ram_limit_mb)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class LKTracker(ChainTracker):
    """Pyramidal Lucas-Kanade point tracker with the forward–backward error check.

    Same interface as :class:`s2d.tracking.flow.FlowTracker`: ``prepare(source)`` once per video,
    then ``track(queries, frame_range=None)`` any number of times; ``size`` is the coordinate frame.
    """

    name = "lk"

    def __init__(self, config: Optional[LKTrackerConfig] = None, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = LKTrackerConfig(**kwargs)
        elif kwargs:
            raise SettingError("pass either an LKTrackerConfig or keyword settings, not both")
        if not isinstance(config, LKTrackerConfig):
            raise SettingError(f"config must be an LKTrackerConfig, got {type(config).__name__}")
        self.config = config
        self._rule = ReacquireRule(config.reacquire_frames, config.reacquire_tol_px, config.reacquire_tol_rel)
        self._gray_cfg = FlowConfig(max_side=config.max_side)  # only its max_side is used (prepare_gray)
        self._lk_kw: Dict[str, Any] = dict(winSize=(config.win_size, config.win_size), maxLevel=config.max_level,
                           criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, config.iterations, config.eps),
                           minEigThreshold=config.min_eig_threshold)
        self._img: Dict[int, np.ndarray] = {}

    def prepare(self, source: FrameSource) -> "LKTracker":
        """Store the grayscale working-size frames of ``source`` (path or iterable; see ``FlowTracker.prepare``)."""
        self.close()
        frames, orig = iter_input_frames(source, self.config.max_side)
        store: Optional[ArrayStore] = None
        size = orig
        n = 0
        try:
            for frame in frames:
                gray = prepare_gray(frame.rgb, self._gray_cfg)
                if store is None:
                    if size is None:
                        size = tuple(np.asarray(frame.rgb).shape[:2])
                    store = ArrayStore(gray.shape, np.uint8, ram_limit_mb=self.config.ram_limit_mb,
                                       cache_dir=self.config.cache_dir)
                elif gray.shape != store.item_shape:
                    raise SettingError(f"frame {frame.index} differs in size from the first frame")
                store.append(gray)
                n += 1
        except BaseException:
            if store is not None:
                store.close()
            raise
        if store is None or size is None:
            raise SettingError("cannot prepare a tracker with a video without frames")
        wsize = working_size_of(size, self.config.max_side)
        if tuple(store.item_shape) != wsize:
            store.close()
            raise SettingError(f"frames are {store.item_shape}, expected the working size {wsize}")
        self._store = store.finalize()
        self._video = PreparedVideo(n, (int(size[0]), int(size[1])), wsize)
        return self

    def _image(self, t: int) -> np.ndarray:
        """Frame t as a contiguous array; the last two are kept (each step reads frames t and t±1)."""
        img = self._img.get(t)
        if img is None:
            assert self._store is not None  # set by prepare
            img = np.array(self._store[t])
            if len(self._img) >= 2:
                self._img.pop(next(iter(self._img)))
            self._img[t] = img
        return img

    def _step(self, t: int, direction: int, p: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        a, b = self._image(t), self._image(t + direction)
        p0 = np.ascontiguousarray(p, dtype=np.float32).reshape(-1, 1, 2)
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, **self._lk_kw)
        pb, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, None, **self._lk_kw)
        p1 = p1.reshape(-1, 2).astype(np.float64)
        err = np.linalg.norm(pb.reshape(-1, 2).astype(np.float64) - p, axis=1)
        assert self._video is not None  # set by prepare
        ws = self._video.working_size
        ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (err < self.config.fb_threshold) & inside(p1, ws) & inside(p, ws)
        d = p1 - p
        d[~np.isfinite(d).all(axis=1)] = np.nan
        return d, ok

    def track(self, queries: np.ndarray, frame_range: Optional[Tuple[int, int]] = None):
        try:
            return super().track(queries, frame_range)
        finally:
            self._img.clear()

    track.__doc__ = ChainTracker.track.__doc__

    def close(self) -> None:
        self._img.clear()
        super().close()

    def __repr__(self) -> str:
        v = self._video
        state = "unprepared" if v is None else (
            f"{v.num_frames} frames {v.size} @ {v.working_size}, "
            f"{'disk' if cast(ArrayStore, self._store).on_disk else 'ram'}")
        return f"LKTracker({state})"
