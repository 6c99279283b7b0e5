"""Default point tracker: chained DIS optical flow with a per-point forward–backward check.

``prepare`` streams the video once and computes forward (t→t+1) and backward (t+1→t) DIS flow for
every neighbouring pair at the flow working size (:attr:`FlowTrackerConfig.flow`, long side 512 by
default), plus one *reliability* mask per direction: the forward–backward consistency mask of
:func:`s2d.features.flow.fb_consistency` (Sundaram et al. 2010, with the tracker's own, looser
``fb_alpha``/``fb_beta``) minus the motion boundaries (:func:`motion_boundary`, same paper), then
median-filtered (``occlusion_window``) so that only *regions* of failures count as occlusion — a point
is visible unless it is confidently occluded. Flows are kept as float16,
masks as uint8, in :class:`~s2d.tracking.video.ArrayStore` s — in RAM for short videos (1.5 MB per pair
at 512×288; the default 256 MiB holds ~180 pairs), memory-mapped from a temporary file beyond that —
so memory does not grow with the video length. An optional :class:`s2d.features.flow.FlowCache`
(e.g. the one stage 1 filled) is read instead of recomputing DIS.

``track`` chains the flow with exact bilinear sampling, one vectorised pass forward and one backward;
each step reads, per active point, 4 cells of one flow field and 1 cell of its reliability mask. A
step from ``p`` is *consistent* when the mask is set at the nearest pixel and ``p`` and its target are
inside the frame. Occlusion, re-acquisition and frame-leaving follow the state machine of
:mod:`s2d.tracking.video` (lost points move with their smoothed velocity and are marked visible
again only after ``reacquire_frames`` consistent steps that agree with that velocity).

Coordinates: queries and results are in pixels of the video given to :meth:`FlowTracker.prepare`
(the original frame size when a path is given, even though frames are decoded at the working size);
:attr:`FlowTracker.size` is that ``(H, W)``, so ``discover_keymasks`` needs no ``tracker_size`` when the
masks have the video's size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from s2d.errors import SettingError
from s2d.features.flow import FlowCache, FlowConfig, FlowPair, compute_flow, fb_consistency, prepare_gray
from s2d.tracking.video import (
    ArrayStore,
    ChainTracker,
    FrameSource,
    PreparedVideo,
    ReacquireRule,
    bilinear,
    check_common,
    is_number,
    inside,
    iter_input_frames,
    working_size_of,
)

__all__ = ["FlowTrackerConfig", "FlowTracker", "motion_boundary"]


@dataclass(frozen=True)
class FlowTrackerConfig:
    """Settings of :class:`FlowTracker`.

    Attributes:
        flow: DIS settings (:class:`s2d.features.flow.FlowConfig`, or a dict of its fields): preset
            ``medium``, working size long side 512. Its ``fb_alpha``/``fb_beta`` (stage 1's motion masks)
            are used by the tracker only when the tracker's own ``fb_alpha``/``fb_beta`` are ``None``,
            so the tracker can share stage 1's :class:`~s2d.features.flow.FlowCache`.
        fb_alpha, fb_beta: forward–backward test of the tracker, ``|f + b̂|² < fb_alpha·(|f|² + |b̂|²) +
            fb_beta`` (working-size px²; default 0.1 and 0.5). Sundaram's 0.01 was made for accurate
            variational flow; DIS's relative error on fast, deforming objects is far larger, and 0.01
            dropped most points of fast objects (bmx-bumps, dog-agility) after a few frames. A true
            occlusion (the target lands on another surface) gives ``|f + b̂| ≈ |b̂|``, far above the bound
            for any ``fb_alpha < 0.5``. ``None`` = the flow config's values.
        occlusion_window: odd window (px at the working size) of the median filter applied to the
            reliability mask (default 5; 0 or 1 = off): isolated failing pixels (DIS noise) are not
            occlusions, isolated passing pixels inside an occluded region are not trusted.
        boundary_alpha, boundary_beta: motion-boundary test of Sundaram et al. (2010): a pixel whose flow
            gradient satisfies ``|∇u|² + |∇v|² > boundary_alpha·|w|² + boundary_beta`` is unreliable
            (DIS blurs flow across object edges, and a point there would be dragged onto the occluder
            while still passing the forward–backward check). Default 0.01 and 0.05: the paper's
            ``beta = 0.002`` flags any flow gradient above 0.03 px/px — every articulated limb, zoom
            or perspective change in real video (it cost ~0.12 of the object points' visibility on
            DAVIS-2016) — while DIS's blur across a true boundary of a few px/frame is ~0.5 px/px.
            ``boundary_alpha=None`` turns it off (better on DAVIS-2016, which has few occlusions, but
            then points slide onto occluders: see tests/test_tracking.py).
        reacquire_frames: K — a lost point is visible again after K consecutive consistent steps
            that agree with its velocity (default 1).
        reacquire_tol_px, reacquire_tol_rel: "agree" means ``|d − v| ≤ tol_px + tol_rel·|v|`` for the
            step's displacement d and the remembered velocity v (working-size px; default 3.0, 1.0: a
            deforming object's points change speed by up to ~100 % between frames; an occluder moving
            differently from the occluded point still disagrees). See benchmarks/results/tracking.md.
        lost_follow_flow: a lost point whose step is inconsistent moves with that step's flow instead
            of its velocity (default False: on DAVIS-2016 it is slightly worse, pos-in −0.006, and
            it drags occluded points along with the occluder).
        ram_limit_mb: flow pairs stay in RAM up to this many MiB, then go to a memory-mapped temporary
            file (default 256; 0 = always on disk).
        cache_dir: where that temporary file's folder is created (default: the system temp dir).
    """

    flow: FlowConfig = field(default_factory=FlowConfig)
    fb_alpha: Optional[float] = 0.1
    fb_beta: Optional[float] = 0.5
    occlusion_window: int = 5
    boundary_alpha: Optional[float] = 0.01
    boundary_beta: float = 0.05
    reacquire_frames: int = 1
    reacquire_tol_px: float = 3.0
    reacquire_tol_rel: float = 1.0
    lost_follow_flow: bool = False
    ram_limit_mb: float = 256.0
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if isinstance(self.flow, dict):  # from JSON / CLI settings
            try:
                object.__setattr__(self, "flow", FlowConfig(**self.flow))
            except TypeError as e:
                raise SettingError(f"bad flow settings: {e}") from None
        if not isinstance(self.flow, FlowConfig):
            raise SettingError(f"flow must be a FlowConfig, got {type(self.flow).__name__}")
        for key in ("fb_alpha", "fb_beta", "boundary_alpha", "boundary_beta"):
            v = getattr(self, key)
            if v is None and key != "boundary_beta":
                continue
            if not is_number(v) or v < 0:
                raise SettingError(f"FlowTrackerConfig.{key} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.lost_follow_flow, (bool, np.bool_)):
            raise SettingError(f"FlowTrackerConfig.lost_follow_flow must be a bool, got {self.lost_follow_flow!r}")
        ow = self.occlusion_window
        if isinstance(ow, bool) or not isinstance(ow, (int, np.integer)) or ow < 0 or (ow > 1 and ow % 2 == 0):
            raise SettingError(f"FlowTrackerConfig.occlusion_window must be 0, 1 or an odd integer >= 3, got {ow!r}")
        check_common("FlowTrackerConfig", self.reacquire_frames, self.reacquire_tol_px, self.reacquire_tol_rel,
                     self.ram_limit_mb)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class FlowTracker(ChainTracker):
    """Chained-DIS-flow point tracker (backend name ``flow``, the default).

    >>> tracker = FlowTracker().prepare("video.mp4")            # doctest: +SKIP
    >>> res = tracker.track(np.array([[10, 120.0, 80.0]]))      # doctest: +SKIP
    >>> res.points.shape, res.visible.shape                    # (T, 1, 2), (T, 1)

    One instance holds one prepared video; ``prepare`` again to switch videos. ``close()`` (or a
    ``with`` block) deletes the temporary store.
    """

    name = "flow"

    def __init__(self, config: Optional[FlowTrackerConfig] = None, **kwargs: Any) -> None:
        super().__init__()
        self._masks: Optional[ArrayStore] = None
        if config is None:
            config = FlowTrackerConfig(**kwargs)
        elif kwargs:
            raise SettingError("pass either a FlowTrackerConfig or keyword settings, not both")
        if not isinstance(config, FlowTrackerConfig):
            raise SettingError(f"config must be a FlowTrackerConfig, got {type(config).__name__}")
        self.config = config
        self._rule = ReacquireRule(config.reacquire_frames, config.reacquire_tol_px, config.reacquire_tol_rel,
                                   bool(config.lost_follow_flow))
        fc = config.flow
        self._alpha = float(fc.fb_alpha if config.fb_alpha is None else config.fb_alpha)
        self._beta = float(fc.fb_beta if config.fb_beta is None else config.fb_beta)

    def prepare(self, source: FrameSource, *, flow_cache: Optional[FlowCache] = None) -> "FlowTracker":
        """Compute and store the flow of every neighbouring frame pair of ``source``.

        Args:
            source: a video file, frame folder or glob (decoded at the working size; coordinates stay
                the original frame size), or an iterable of :class:`~s2d.io.video.Frame` / ``H×W×3``
                uint8 arrays (their size is the coordinate frame). Streamed: two frames in memory.
            flow_cache: optional :class:`~s2d.features.flow.FlowCache` of this video and flow config
                (pairs keyed by the frames' indices); hits skip DIS, misses are computed and stored.

        Returns:
            ``self``.
        """
        self.close()
        cfg = self.config.flow
        if flow_cache is not None and flow_cache.cfg != cfg:
            raise SettingError("flow_cache was made for another flow config than this tracker's")
        frames, orig = iter_input_frames(source, cfg.max_side)
        flows: Optional[ArrayStore] = None
        masks: Optional[ArrayStore] = None
        prev: Optional[Tuple[int, np.ndarray]] = None
        size: Optional[Tuple[int, int]] = orig
        first_shape: Tuple[int, ...] = ()
        n = 0
        try:
            for frame in frames:
                shape = tuple(np.asarray(frame.rgb).shape[:2])
                if n == 0:
                    first_shape = shape
                    if size is None:
                        size = (int(shape[0]), int(shape[1]))
                elif shape != first_shape:
                    raise SettingError(f"frame {frame.index} is {shape}, the first frame was {first_shape}")
                gray = None
                if prev is not None:
                    t0, g0 = prev
                    assert size is not None  # set on the first frame
                    pair = flow_cache.get(t0, frame.index, size) if flow_cache is not None else None
                    if pair is None:
                        gray = prepare_gray(frame.rgb, cfg)
                        pair = FlowPair.from_flows(compute_flow(g0, gray, cfg), compute_flow(gray, g0, cfg), size,
                                                   cfg, t0, frame.index)
                        if flow_cache is not None:
                            flow_cache.put(t0, frame.index, pair)
                    if flows is None:
                        kw: Dict[str, Any] = dict(ram_limit_mb=self.config.ram_limit_mb / 1.25,
                                                  cache_dir=self.config.cache_dir)
                        flows = ArrayStore((2,) + pair.fwd.shape, np.float16, **kw)
                        masks = ArrayStore((2,) + pair.fwd.shape[:2], np.uint8,
                                           ram_limit_mb=self.config.ram_limit_mb / 5, cache_dir=self.config.cache_dir)
                    assert masks is not None  # made with flows
                    flows.append(np.stack([pair.fwd, pair.bwd]))
                    masks.append(np.stack([self._reliable(pair.fwd, pair.bwd, pair.fwd_valid),
                                           self._reliable(pair.bwd, pair.fwd, pair.bwd_valid)]))
                if gray is None:
                    gray = prepare_gray(frame.rgb, cfg)
                prev = (frame.index, gray)
                n += 1
        except BaseException:
            for st in (flows, masks):
                if st is not None:
                    st.close()
            raise
        if n == 0 or size is None:
            raise SettingError("cannot prepare a tracker with a video without frames")
        wsize = working_size_of(size, cfg.max_side)
        if flows is not None and tuple(flows.item_shape[1:3]) != wsize:
            flows.close()
            assert masks is not None  # made with flows
            masks.close()
            raise SettingError(f"flow is {flows.item_shape[1:3]}, expected the working size {wsize}")
        self._store = flows.finalize() if flows is not None else None
        self._masks = masks.finalize() if masks is not None else None
        self._video = PreparedVideo(n, (int(size[0]), int(size[1])), wsize)
        return self

    def _reliable(self, flow: np.ndarray, other: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """uint8 mask: forward–backward consistent and (unless disabled) not on a motion boundary, then
        (``occlusion_window`` > 1) median-filtered so that only regions of failures count."""
        fc = self.config.flow
        if (self._alpha, self._beta) == (float(fc.fb_alpha), float(fc.fb_beta)):
            ok = np.asarray(valid, dtype=bool)
        else:
            ok = fb_consistency(flow, other, self._alpha, self._beta)
        if self.config.boundary_alpha is not None:
            ok = ok & ~motion_boundary(flow, self.config.boundary_alpha, self.config.boundary_beta)
        m: np.ndarray = ok.astype(np.uint8)
        k = int(self.config.occlusion_window)
        if k > 1:
            m = cv2.medianBlur(m, k) if k <= 5 else (cv2.blur(m.astype(np.float32), (k, k)) > 0.5).astype(np.uint8)
        return m

    def _step(self, t: int, direction: int, p: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        k = 0 if direction > 0 else 1
        pair = t if direction > 0 else t - 1
        assert self._store is not None and self._masks is not None  # set by prepare (there are pairs)
        f = bilinear(self._store[pair][k], p)
        m = self._masks[pair][k]
        h, w = m.shape
        xi = np.clip(np.rint(p[:, 0]), 0, w - 1).astype(np.intp)
        yi = np.clip(np.rint(p[:, 1]), 0, h - 1).astype(np.intp)
        ok = m.reshape(-1)[yi * w + xi].astype(bool) & inside(p, (h, w)) & inside(p + f, (h, w))
        return f, ok

    def close(self) -> None:
        masks = getattr(self, "_masks", None)
        if masks is not None:
            masks.close()
        self._masks = None
        super().close()

    def __repr__(self) -> str:
        state = "unprepared" if self._video is None else (
            f"{self._video.num_frames} frames {self._video.size} @ {self._video.working_size}, "
            f"{'disk' if self._store is not None and self._store.on_disk else 'ram'}")
        return f"FlowTracker({state})"


def motion_boundary(flow: np.ndarray, alpha: float = 0.01, beta: float = 0.002) -> np.ndarray:
    """``h×w`` bool: pixels on a motion boundary, ``|∇u|² + |∇v|² > alpha·|w|² + beta`` (Sundaram et al.
    2010; central differences, ``w = (u, v)`` the flow)."""
    f = np.asarray(flow, dtype=np.float32)
    g = np.zeros(f.shape[:2], np.float32)
    for c in range(2):
        gx = cv2.Sobel(f[..., c], cv2.CV_32F, 1, 0, ksize=1, scale=0.5)
        gy = cv2.Sobel(f[..., c], cv2.CV_32F, 0, 1, ksize=1, scale=0.5)
        g += gx * gx + gy * gy
    return g > np.float32(alpha) * np.einsum("ijk,ijk->ij", f, f) + np.float32(beta)
