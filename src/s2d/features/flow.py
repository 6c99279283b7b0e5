"""Classical dense optical flow (OpenCV DIS) and the flow utilities stages 1 and 2 share.

Why classical flow: no learned flow weights (RAFT, ...) can be obtained here (SPEC §2), and DIS costs a few
milliseconds per pair on a CPU. Stage 1 uses it for motion masks and motion affinities, stage 2 chains it
into a point tracker whose per-point visibility comes from the forward–backward consistency check.

Conventions used throughout (and by :mod:`s2d.features.camera`):

* a flow field is an ``H×W×2`` float32 array; ``flow[y, x] = (dx, dy)`` in pixels of that array, from
  frame 0 to frame 1: the pixel centred at ``(x, y)`` in frame 0 moves to ``(x + dx, y + dy)`` in frame 1;
* points are ``N×2`` arrays of ``(x, y)`` in the same pixel coordinates (pixel centres at integers);
* flow is computed at a reduced *working size* (:attr:`FlowConfig.max_side` on the long side): DIS
  ``medium`` at 512×288 costs 16 ms per flow vs 41 ms at 854×480 (2 cores), and a cached pair at that
  size fits the disk budget of SPEC §9. Everything is returned at the working size;
  :attr:`FlowPair.scale` and :func:`resize_flow` map back to the frame size.

Main entry points: :class:`FlowConfig`, :func:`compute_flow`, :func:`flow_pair` (forward, backward and the
consistency masks), :func:`iter_flow_pairs` (streaming over a video, two frames in memory) with the
optional on-disk :class:`FlowCache`, and the helpers :func:`warp`, :func:`sample_flow`, :func:`resize_flow`.
"""

from __future__ import annotations

import dataclasses
import functools
import glob as _glob
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, Optional, Tuple, Union

import cv2
import numpy as np
from numpy.typing import DTypeLike

from s2d.errors import SettingError
from s2d.io.atomic import atomic_write_bytes, atomic_write_text
from s2d.io.video import IMAGE_EXTENSIONS, Frame, natural_key, scaled_size

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "DIS_PRESETS",
    "FlowConfig",
    "FlowPair",
    "FlowCache",
    "compute_flow",
    "flow_pair",
    "fb_consistency",
    "iter_flow_pairs",
    "pixel_grid",
    "prepare_gray",
    "resize_flow",
    "sample_bilinear",
    "sample_flow",
    "video_fingerprint",
    "warp",
    "working_size",
]

#: DIS presets by name (OpenCV's ``DISOPTICAL_FLOW_PRESET_*``).
DIS_PRESETS: Dict[str, int] = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

#: Variational refinement iterations used when :attr:`FlowConfig.variational_refinement` is forced on
#: (OpenCV's own value in the ``fast`` and ``medium`` presets).
_VAR_REFINE_ITERS = 5


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class FlowConfig:
    """How dense flow is computed. Defaults chosen by ``benchmarks/bench_flow.py`` on the 23 shared
    DAVIS-2016 sequences (2 CPU cores; J = motion-only baseline with the forward–backward check).

    Attributes:
        preset: DIS preset, ``"ultrafast"``, ``"fast"`` or ``"medium"`` (default). At 512×288:
            ``medium`` 16 ms per flow, J 0.507; ``fast`` 4.6 ms, J 0.424; ``ultrafast`` 3.1 ms, J 0.381.
            ``medium`` is the only preset whose finest pyramid level is half resolution (quarter for
            the others), which is what the motion masks need; ``fast`` at 854×480 (9 ms, J 0.469) is
            the choice when speed matters more.
        max_side: long side of the working size in pixels (default 512; ``None`` = frame size, never
            upscaled). 854×480 frames are processed at 512×288: ``medium`` at full 480p is 2.6× slower
            for +0.02 J, and its cache entries would be 2.8× larger than SPEC §9's budget allows.
        finest_scale: ``None`` keeps the preset's finest pyramid level (1 for ``medium``, 2 for the
            others); 0 matches patches at the working size itself: ``medium`` at 512×288 then costs
            60 ms per flow for J 0.538, and objects only a few patches wide (small frames) get
            usable flow.
        variational_refinement: ``None`` keeps the preset's setting (off for ``ultrafast``, on otherwise);
            ``True`` forces 5 iterations, ``False`` turns it off. Refinement smooths the patch-based
            flow inside objects and sharpens it at edges.
        fb_alpha, fb_beta: forward–backward consistency check of Sundaram, Brox & Keutzer (ECCV 2010):
            a pixel is consistent when ``|f + b∘f|² < fb_alpha·(|f|² + |b∘f|²) + fb_beta`` (pixels² at the
            working size), where ``b∘f`` is the backward flow sampled at the forward target. The paper's
            0.01 / 0.5 are kept: the relative term tolerates the larger errors of fast motion.
    """

    preset: str = "medium"
    max_side: Optional[int] = 512
    finest_scale: Optional[int] = None
    variational_refinement: Optional[bool] = None
    fb_alpha: float = 0.01
    fb_beta: float = 0.5

    def __post_init__(self) -> None:
        if self.preset not in DIS_PRESETS:
            raise SettingError(f"flow preset must be one of {', '.join(DIS_PRESETS)}, got {self.preset!r}")
        ms = self.max_side
        if ms is not None and (isinstance(ms, bool) or not isinstance(ms, (int, np.integer)) or ms < 8):
            raise SettingError(f"flow max_side must be None or an integer >= 8, got {ms!r}")
        fs = self.finest_scale
        if fs is not None and (isinstance(fs, bool) or not isinstance(fs, (int, np.integer)) or not 0 <= fs <= 4):
            raise SettingError(f"finest_scale must be None or an integer in 0..4, got {fs!r}")
        vr = self.variational_refinement
        if not (vr is None or isinstance(vr, bool)):
            raise SettingError(f"variational_refinement must be None, True or False, got {vr!r}")
        for name in ("fb_alpha", "fb_beta"):
            v = getattr(self, name)
            number = isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)
            if not number or not np.isfinite(v) or v < 0:
                raise SettingError(f"{name} must be a finite number >= 0, got {v!r}")

    def to_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Stable short hash of every field (part of the flow cache key)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


def working_size(height: int, width: int, cfg: FlowConfig) -> Tuple[int, int]:
    """``(h, w)`` at which flow is computed for ``height×width`` frames (long side ≤ ``cfg.max_side``).

    Uses :func:`s2d.io.video.scaled_size`, so it agrees with a reader opened with the same ``max_side``.
    """
    w, h = scaled_size(int(width), int(height), cfg.max_side)
    return h, w


# --------------------------------------------------------------------------- DIS


_LOCAL = threading.local()


def _dis(cfg: FlowConfig) -> "cv2.DISOpticalFlow":
    """The DIS instance for ``cfg``'s settings, one per thread (creating one allocates its buffers and
    OpenCV objects are not thread-safe; reusing one also reuses its buffers across same-size calls).

    The preset's finest pyramid scale is restored on every call: OpenCV lowers the instance's
    ``finest_scale`` permanently when it meets a frame too small for it (dis_flow.cpp), which would
    silently change every later result of a reused instance.
    """
    cache = getattr(_LOCAL, "dis", None)
    if cache is None:
        cache = _LOCAL.dis = {}
    key = (cfg.preset, cfg.finest_scale, cfg.variational_refinement)
    entry = cache.get(key)
    if entry is None:
        # OpenCV's stubs lack this alias of cv2.DISOpticalFlow.create (it exists at run time)
        inst = cv2.DISOpticalFlow_create(DIS_PRESETS[cfg.preset])  # type: ignore[attr-defined]
        if cfg.variational_refinement is False:
            inst.setVariationalRefinementIterations(0)
        elif cfg.variational_refinement is True and inst.getVariationalRefinementIterations() == 0:
            inst.setVariationalRefinementIterations(_VAR_REFINE_ITERS)
        if cfg.finest_scale is not None:
            inst.setFinestScale(int(cfg.finest_scale))
        entry = cache[key] = (inst, inst.getFinestScale())
    inst, finest = entry
    inst.setFinestScale(finest)
    return inst


def prepare_gray(img: np.ndarray, cfg: FlowConfig) -> np.ndarray:
    """``img`` (``H×W×3`` uint8 RGB, or ``H×W`` uint8 gray) → uint8 gray at :func:`working_size`.

    Shrinking uses area averaging (no aliasing, which DIS's patch matching is sensitive to). Float
    images in [0, 1] or [0, 255] are accepted and converted.
    """
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"expected an H×W×3 RGB or H×W gray image, got shape {a.shape}")
    if a.dtype != np.uint8:
        f = a.astype(np.float32)
        if f.size and float(np.nanmax(f)) <= 1.0:
            f = f * 255.0
        a = np.clip(np.nan_to_num(f), 0, 255).round().astype(np.uint8)
    gray = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY) if a.ndim == 3 else a
    h, w = working_size(gray.shape[0], gray.shape[1], cfg)
    if (h, w) != gray.shape:
        gray = cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(gray)


_MIN_DIS_SIDE = 16  # DIS needs at least one patch (8–12 px) per side on its finest level


def _dis_calc(g0: np.ndarray, g1: np.ndarray, cfg: FlowConfig) -> np.ndarray:
    if g0.shape != g1.shape:
        raise ValueError(f"frames differ in size: {g0.shape} vs {g1.shape}")
    h, w = g0.shape
    if min(h, w) < _MIN_DIS_SIDE:
        # Tiny frames: pad by edge replication so DIS has room for its patches, then crop.
        ph, pw = max(0, _MIN_DIS_SIDE - h), max(0, _MIN_DIS_SIDE - w)
        g0 = cv2.copyMakeBorder(g0, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
        g1 = cv2.copyMakeBorder(g1, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
        # OpenCV's stubs type the output argument `flow` as required; None (allocate) is valid at run time
        return np.ascontiguousarray(_dis(cfg).calc(g0, g1, None)[:h, :w])  # type: ignore[call-overload]
    flow = _dis(cfg).calc(g0, g1, None)  # type: ignore[call-overload]
    return flow.astype(np.float32, copy=False)


def compute_flow(img0: np.ndarray, img1: np.ndarray, cfg: Optional[FlowConfig] = None) -> np.ndarray:
    """Dense flow ``img0 → img1``: ``h×w×2`` float32 at :func:`working_size`, in working-size pixels.

    ``img0``/``img1``: ``H×W×3`` uint8 RGB (or ``H×W`` gray) of the same size. DIS runs on grayscale.
    ``resize_flow(flow, (H, W))`` gives it at the frame size, in frame pixels.
    """
    cfg = cfg or FlowConfig()
    return _dis_calc(prepare_gray(img0, cfg), prepare_gray(img1, cfg), cfg)


# --------------------------------------------------------------------------- warping / sampling


@functools.lru_cache(maxsize=8)
def pixel_grid(h: int, w: int) -> np.ndarray:
    """``h×w×2`` float32 array of pixel-centre coordinates ``(x, y)`` (cached per size, read-only).

    ``pixel_grid(h, w) + flow`` is the position every pixel moves to (a ``cv2.remap`` map).
    """
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    g = np.ascontiguousarray(np.stack([xs, ys], axis=-1))
    g.flags.writeable = False
    return g


def _remap(src: np.ndarray, mx: np.ndarray, my: Optional[np.ndarray], interpolation: int, border: int,
           border_value: float) -> np.ndarray:
    """cv2.remap for any dtype and channel count (OpenCV handles ≤ 4 channels of a few dtypes)."""
    a = np.asarray(src)
    out_dtype: DTypeLike = a.dtype
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
        out_dtype = np.bool_
    elif a.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        a = a.astype(np.float32)
    if a.ndim == 3 and a.shape[2] > 4:
        parts = [_remap(a[..., i:i + 4], mx, my, interpolation, border, border_value)
                 for i in range(0, a.shape[2], 4)]
        parts = [p if p.ndim == 3 else p[..., None] for p in parts]
        out = np.concatenate(parts, axis=2)
    else:
        out = cv2.remap(np.ascontiguousarray(a), mx, my, interpolation, borderMode=border,
                        borderValue=border_value)
        if a.ndim == 3 and out.ndim == 2:  # OpenCV drops a trailing singleton channel
            out = out[..., None]
    if out_dtype == np.bool_:
        return out.astype(bool)
    return out.astype(out_dtype, copy=False)


def warp(image_or_map: np.ndarray, flow: np.ndarray, *, interpolation: int = cv2.INTER_LINEAR,
         border: int = cv2.BORDER_CONSTANT, border_value: float = 0.0) -> np.ndarray:
    """Backward warp: ``out[y, x] = image_or_map[y + dy, x + dx]`` with ``(dx, dy) = flow[y, x]``.

    With ``flow`` = forward flow 0→1 and ``image_or_map`` = frame 1 (or any per-pixel map of frame 1:
    a mask, the backward flow, features), the result is aligned with frame 0. ``image_or_map`` is
    ``H×W`` or ``H×W×C`` of the flow's size (any C, any numeric dtype; bool maps come back bool, use
    ``interpolation=cv2.INTER_NEAREST`` for labels). Samples outside the frame get ``border_value``.
    """
    flow = np.asarray(flow, dtype=np.float32)
    a = np.asarray(image_or_map)
    if a.shape[:2] != flow.shape[:2]:
        raise ValueError(f"map {a.shape[:2]} and flow {flow.shape[:2]} differ in size")
    return _remap(a, pixel_grid(*flow.shape[:2]) + flow, None, interpolation, border, border_value)


def sample_bilinear(image_or_map: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Exact bilinear samples of an ``H×W`` or ``H×W×C`` map at sub-pixel ``points`` (``N×2`` of ``(x, y)``).

    Returns ``N`` (or ``N×C``) float32. Points outside the frame take the nearest border value; non-finite
    points give NaN. Plain NumPy rather than ``cv2.remap``, whose fixed-point weights are only 1/32 px
    accurate — an error a chained tracker would accumulate over hundreds of frames.
    """
    a = np.asarray(image_or_map)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    h, w = a.shape[:2]
    tail = a.shape[2:]
    out = np.full((len(pts),) + tail, np.nan, np.float32)
    ok = np.isfinite(pts).all(axis=1)
    if not ok.any():
        return out
    x = np.clip(pts[ok, 0], 0, w - 1)
    y = np.clip(pts[ok, 1], 0, h - 1)
    x0 = np.floor(x).astype(np.intp)
    y0 = np.floor(y).astype(np.intp)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = (x - x0).reshape((-1,) + (1,) * len(tail))
    fy = (y - y0).reshape((-1,) + (1,) * len(tail))
    af = a.astype(np.float64, copy=False)
    top = af[y0, x0] * (1 - fx) + af[y0, x1] * fx
    bot = af[y1, x0] * (1 - fx) + af[y1, x1] * fx
    out[ok] = top * (1 - fy) + bot * fy
    return out


def sample_flow(flow: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear flow at sub-pixel ``points`` (``N×2`` of ``(x, y)``) → ``N×2`` float32.

    Points outside the frame take the nearest border value (the tracker decides visibility itself);
    non-finite points (lost tracks) give NaN. See :func:`sample_bilinear`.
    """
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be H×W×2, got {flow.shape}")
    return sample_bilinear(flow, points).reshape(-1, 2)


def resize_flow(flow: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resize an ``H×W×2`` flow to ``size = (h, w)`` and scale its vectors (``dx·w/W``, ``dy·h/H``).

    Shrinking averages (area), growing interpolates bilinearly.
    """
    flow = np.asarray(flow, dtype=np.float32)
    h, w = int(size[0]), int(size[1])
    H, W = flow.shape[:2]
    if (h, w) == (H, W):
        return flow.copy()
    interp = cv2.INTER_AREA if (h <= H and w <= W) else cv2.INTER_LINEAR
    out = cv2.resize(flow, (w, h), interpolation=interp)
    out[..., 0] *= w / W
    out[..., 1] *= h / H
    return out


# --------------------------------------------------------------------------- forward–backward pairs


def fb_consistency(fwd: np.ndarray, bwd: np.ndarray, alpha: float = 0.01, beta: float = 0.5) -> np.ndarray:
    """Forward–backward consistency mask of ``fwd`` (0→1) given ``bwd`` (1→0): ``H×W`` bool.

    Sundaram et al. 2010: with ``b̂(x) = bwd(x + fwd(x))`` (bilinear, ``cv2.remap``), ``x`` is
    consistent iff ``|fwd + b̂|² < alpha·(|fwd|² + |b̂|²) + beta``. Pixels whose target leaves frame 1
    are inconsistent (no backward flow to compare with). False marks occlusions and flow errors.
    """
    fwd = np.asarray(fwd, dtype=np.float32)
    bwd = np.asarray(bwd, dtype=np.float32)
    if fwd.shape != bwd.shape or fwd.ndim != 3 or fwd.shape[2] != 2:
        raise ValueError(f"fwd and bwd must both be H×W×2, got {fwd.shape} and {bwd.shape}")
    h, w = fwd.shape[:2]
    target = pixel_grid(h, w) + fwd  # h×w×2 absolute (x, y) in frame 1
    bw = cv2.remap(bwd, target, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    s = fwd + bw
    diff = np.einsum("ijk,ijk->ij", s, s)
    bound = np.einsum("ijk,ijk->ij", fwd, fwd)
    bound += np.einsum("ijk,ijk->ij", bw, bw)
    bound *= np.float32(alpha)
    bound += np.float32(beta)
    inside = cv2.inRange(target, (0.0, 0.0), (float(w - 1), float(h - 1))) > 0
    return (diff < bound) & inside


@dataclass
class FlowPair:
    """Forward and backward flow between two frames, at the working size, with consistency masks.

    Attributes:
        fwd: ``h×w×2`` float32, frame 0 → frame 1 (working-size pixels).
        bwd: ``h×w×2`` float32, frame 1 → frame 0.
        fwd_valid: ``h×w`` bool on frame 0: True where ``fwd`` passes the forward–backward check
            (False = occluded in frame 1, leaves the frame, or unreliable).
        bwd_valid: ``h×w`` bool on frame 1, the same for ``bwd``.
        image_size: ``(H, W)`` of the input frames (flow is at ``fwd.shape[:2]``).
        t0, t1: source frame indices when known (set by :func:`iter_flow_pairs` and :class:`FlowCache`).
    """

    fwd: np.ndarray
    bwd: np.ndarray
    fwd_valid: np.ndarray
    bwd_valid: np.ndarray
    image_size: Tuple[int, int]
    t0: Optional[int] = None
    t1: Optional[int] = None

    def __post_init__(self) -> None:
        hw = self.fwd.shape[:2]
        if (self.fwd.shape != self.bwd.shape or self.fwd.shape[-1:] != (2,) or self.fwd_valid.shape != hw
                or self.bwd_valid.shape != hw):
            raise ValueError(f"inconsistent FlowPair shapes: fwd {self.fwd.shape}, bwd {self.bwd.shape}, "
                             f"fwd_valid {self.fwd_valid.shape}, bwd_valid {self.bwd_valid.shape}")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    @property
    def size(self) -> Tuple[int, int]:
        """``(h, w)`` of the flow fields (the working size)."""
        return int(self.fwd.shape[0]), int(self.fwd.shape[1])

    @property
    def scale(self) -> Tuple[float, float]:
        """``(sx, sy)`` = working size / image size; frame-size pixels = working pixels / scale."""
        h, w = self.size
        return w / self.image_size[1], h / self.image_size[0]

    @classmethod
    def from_flows(cls, fwd: np.ndarray, bwd: np.ndarray, image_size: Tuple[int, int],
                   cfg: Optional[FlowConfig] = None, t0: Optional[int] = None,
                   t1: Optional[int] = None) -> "FlowPair":
        """Build a pair (computing both consistency masks) from two flows."""
        cfg = cfg or FlowConfig()
        fwd = np.ascontiguousarray(fwd, dtype=np.float32)
        bwd = np.ascontiguousarray(bwd, dtype=np.float32)
        return cls(fwd, bwd, fb_consistency(fwd, bwd, cfg.fb_alpha, cfg.fb_beta),
                   fb_consistency(bwd, fwd, cfg.fb_alpha, cfg.fb_beta), image_size, t0, t1)


def flow_pair(img0: np.ndarray, img1: np.ndarray, cfg: Optional[FlowConfig] = None) -> FlowPair:
    """Forward and backward DIS flow between two frames plus both consistency masks (:class:`FlowPair`)."""
    cfg = cfg or FlowConfig()
    g0, g1 = prepare_gray(img0, cfg), prepare_gray(img1, cfg)
    return FlowPair.from_flows(_dis_calc(g0, g1, cfg), _dis_calc(g1, g0, cfg),
                               np.asarray(img0).shape[:2], cfg)


# --------------------------------------------------------------------------- cache

# Storage: fwd and bwd quantised to 1/8 px (int16, ±4096 px range) and stored as one 4-channel 16-bit
# PNG per pair. PNG's per-row prediction filters turn smooth flow into small residuals before deflate,
# so this is ~14× smaller than raw float16 and exact up to the 1/16 px rounding — well below DIS's own
# error. Measured at 512×288 on the shared DAVIS frames: 78 KiB per pair on average (183 KiB on the
# fastest motion) ≈ 0.8 GB per 10k frames (SPEC §9: ~1 GB); encoding 28 ms, loading 4 ms + 6 ms for the
# consistency masks vs ~37 ms to recompute the pair. See benchmarks/bench_flow.py.
_Q = 8.0
_Q_OFFSET = 32768
_CACHE_FORMAT = 1


def video_fingerprint(source: PathLike) -> Dict[str, object]:
    """What identifies a video's content cheaply: resolved path, size and mtime.

    For a video file: its resolved path, byte size and mtime (ns). For a frame folder or a glob: the
    resolved folder/pattern plus a hash over every image file's (name, size, mtime), so adding,
    removing or rewriting a frame changes the fingerprint.
    """
    text = os.fspath(source)
    p = Path(os.path.expanduser(text))
    if p.is_file():
        st = p.stat()
        return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if p.is_dir():
        files = [Path(e.path) for e in os.scandir(p) if not e.name.startswith(".")
                 and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file()]
        root = str(p.resolve())
    else:
        files = [Path(f) for f in _glob.glob(os.path.expanduser(text), recursive=True)
                 if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS and os.path.isfile(f)]
        root = os.path.abspath(os.path.expanduser(text))
    files.sort(key=lambda f: natural_key(str(f)))
    h = hashlib.sha1()
    total = 0
    for f in files:
        st = f.stat()
        total += st.st_size
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"path": root, "size": total, "files": len(files), "files_sha1": h.hexdigest()}


class FlowCache:
    """On-disk cache of :class:`FlowPair` flows for one video under ``root_dir/video_key/``.

    One file ``{t0:06d}_{t1:06d}.png`` per pair holding ``fwd`` and ``bwd`` (1/8 px, 16-bit, see above);
    the consistency masks are recomputed on load (≈ 2 ms). Writes are atomic, so an interrupted run
    never leaves a truncated entry, and several processes may share a cache. Unreadable entries are
    treated as misses. Use :meth:`for_video` to derive ``video_key`` from the video file/folder (path,
    size, mtime), the working size and the flow config, so a changed video or config never hits a
    stale entry. The cache is optional: everything can be recomputed.
    """

    def __init__(self, root_dir: PathLike, video_key: str, cfg: Optional[FlowConfig] = None) -> None:
        if not video_key or any(c in video_key for c in "/\\") or video_key in (".", ".."):
            raise SettingError(f"flow cache key must be a plain name, got {video_key!r}")
        self.root = Path(root_dir)
        self.key = video_key
        self.dir = self.root / video_key
        self.cfg = cfg or FlowConfig()

    @staticmethod
    def make_key(source: PathLike, cfg: FlowConfig, image_size: Optional[Tuple[int, int]] = None) -> str:
        """``<stem>-<hash>``: hash of :func:`video_fingerprint`, the working size and ``cfg``."""
        fp = video_fingerprint(source)
        ws = None if image_size is None else working_size(image_size[0], image_size[1], cfg)
        blob = json.dumps({"video": fp, "working_size": ws, "cfg": cfg.to_dict(), "format": _CACHE_FORMAT},
                          sort_keys=True, default=str)
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(os.fspath(source)).stem)[:40] or "video"
        return f"{stem}-{hashlib.sha1(blob.encode()).hexdigest()[:16]}"

    @classmethod
    def for_video(cls, root_dir: PathLike, source: PathLike, cfg: Optional[FlowConfig] = None,
                  image_size: Optional[Tuple[int, int]] = None) -> "FlowCache":
        """The cache of ``source`` (a video file, frame folder or glob) under ``root_dir`` for ``cfg``."""
        cfg = cfg or FlowConfig()
        cache = cls(root_dir, cls.make_key(source, cfg, image_size), cfg)
        meta = cache.dir / "meta.json"
        if not meta.exists():
            atomic_write_text(meta, json.dumps({"source": os.fspath(source), "fingerprint": video_fingerprint(source),
                                                "cfg": cfg.to_dict(), "format": _CACHE_FORMAT}, indent=1, default=str))
        return cache

    def path(self, t0: int, t1: int) -> Path:
        return self.dir / f"{int(t0):06d}_{int(t1):06d}.png"

    def __contains__(self, pair: Tuple[int, int]) -> bool:
        return self.path(*pair).exists()

    @staticmethod
    def encode(fwd: np.ndarray, bwd: np.ndarray) -> bytes:
        """Bytes of the 16-bit 4-channel PNG holding ``fwd`` and ``bwd`` quantised to 1/8 px."""
        q = np.concatenate([fwd, bwd], axis=2).astype(np.float32) * _Q
        q = np.clip(np.rint(q) + _Q_OFFSET, 0, 65535).astype(np.uint16)
        ok, buf = cv2.imencode(".png", q, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:
            raise RuntimeError("PNG encoding of a flow pair failed")
        return buf.tobytes()

    @staticmethod
    def decode(data: bytes) -> Tuple[np.ndarray, np.ndarray]:
        q = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if q is None or q.dtype != np.uint16 or q.ndim != 3 or q.shape[2] != 4:
            raise ValueError("not a flow-cache PNG")
        f = (q.astype(np.float32) - _Q_OFFSET) / _Q
        return np.ascontiguousarray(f[..., :2]), np.ascontiguousarray(f[..., 2:])

    def put(self, t0: int, t1: int, pair: FlowPair) -> Path:
        """Store ``pair`` (flows between frames ``t0`` and ``t1``) atomically; returns the file path."""
        return self.put_flows(t0, t1, pair.fwd, pair.bwd)

    def put_flows(self, t0: int, t1: int, fwd: np.ndarray, bwd: np.ndarray) -> Path:
        """Store the two ``h×w×2`` flows of frames ``t0 → t1`` and ``t1 → t0`` (no masks needed)."""
        return atomic_write_bytes(self.path(t0, t1), self.encode(fwd, bwd))

    def get(self, t0: int, t1: int, image_size: Optional[Tuple[int, int]] = None) -> Optional[FlowPair]:
        """The cached pair for ``(t0, t1)`` or ``None`` (missing or unreadable entry).

        ``image_size`` (``(H, W)`` of the frames) is only metadata for :attr:`FlowPair.scale`; the
        working size is used when omitted.
        """
        p = self.path(t0, t1)
        try:
            data = p.read_bytes()
            fwd, bwd = self.decode(data)
        except (OSError, ValueError, cv2.error):
            return None
        return FlowPair.from_flows(fwd, bwd, image_size or fwd.shape[:2], self.cfg, t0, t1)

    def nbytes(self) -> int:
        """Bytes used by the cached pairs of this video."""
        if not self.dir.is_dir():
            return 0
        return sum(f.stat().st_size for f in self.dir.glob("*_*.png"))

    def __repr__(self) -> str:
        return f"FlowCache({str(self.dir)!r})"


# --------------------------------------------------------------------------- streaming


def iter_flow_pairs(frames: Iterable[Frame], cfg: Optional[FlowConfig] = None,
                    cache: Optional[FlowCache] = None, step: int = 1) -> Iterator[Tuple[int, FlowPair]]:
    """Yield ``(t0, FlowPair)`` for consecutive kept frames of a stream, holding two frames at a time.

    ``step`` keeps every ``step``-th frame of the stream (the first is always kept), so pairs are
    ``(frames[0], frames[step])``, ``(frames[step], frames[2·step])``, ...; ``t0``/``pair.t1`` are the
    frames' own ``Frame.index`` values (source numbering). With a ``cache``, hits skip DIS and misses
    are computed and stored. Only the grayscale working-size image of the previous frame is kept.
    """
    cfg = cfg or (cache.cfg if cache is not None else FlowConfig())
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise SettingError(f"step must be an integer >= 1, got {step!r}")
    prev: Optional[Tuple[int, np.ndarray, Tuple[int, int]]] = None
    for k, frame in enumerate(frames):
        if k % step:
            continue
        size = tuple(frame.rgb.shape[:2])
        gray: Optional[np.ndarray] = None
        if prev is not None:
            t0, g0, size0 = prev
            if size0 != size:
                raise ValueError(f"frame {frame.index} is {size}, frame {t0} was {size0}")
            pair = cache.get(t0, frame.index, size) if cache is not None else None
            if pair is None:
                gray = prepare_gray(frame.rgb, cfg)
                pair = FlowPair.from_flows(_dis_calc(g0, gray, cfg), _dis_calc(gray, g0, cfg), size, cfg,
                                           t0, frame.index)
                if cache is not None:
                    cache.put(t0, frame.index, pair)
            yield t0, pair
        if gray is None:
            gray = prepare_gray(frame.rgb, cfg)
        prev = (frame.index, gray, size)
