"""Affinity graphs over a token grid: appearance (MaskCut), motion (FlowCut) and depth (CutS3D) cues.

All functions work on *tokens*: ``N = h*w`` nodes in row-major order of an ``h×w`` grid. Maps at pixel
resolution (flow, depth) are pooled onto the grid with :func:`pool_to_grid` (area averaging). Every
affinity is a dense symmetric ``N×N`` float64 matrix with values in ``[eps, 1]``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

__all__ = [
    "depth_affinity",
    "feature_affinity",
    "fuse_affinities",
    "motion_affinity",
    "pool_to_grid",
    "backproject",
]


def pool_to_grid(arr: np.ndarray, grid: Tuple[int, int]) -> np.ndarray:
    """Area-average an ``H×W`` or ``H×W×C`` map onto an ``h×w`` grid; returns ``h×w(×C)`` float32."""
    h, w = int(grid[0]), int(grid[1])
    a = np.asarray(arr, dtype=np.float32)
    if a.shape[:2] == (h, w):
        return a.copy()
    interp = cv2.INTER_AREA if a.shape[0] >= h and a.shape[1] >= w else cv2.INTER_LINEAR
    out = cv2.resize(a, (w, h), interpolation=interp)
    if a.ndim == 3 and out.ndim == 2:  # cv2 drops a trailing channel of size 1
        out = out[..., None]
    return out


def feature_affinity(features: np.ndarray, tau: float = 0.2, eps: float = 1e-5) -> np.ndarray:
    """MaskCut's binary affinity of unit-norm features (``N×C``): 1 where cosine > ``tau``, else ``eps``."""
    f = np.asarray(features, dtype=np.float32)  # float32 product: 2× faster, exact enough for a threshold
    sim = f @ f.T
    return np.where(sim > tau, 1.0, eps)


def motion_affinity(flow_tokens: np.ndarray, sigma: float = 1.0, eps: float = 1e-5) -> np.ndarray:
    """FlowCut-style affinity of per-token motion vectors ``N×D`` (e.g. camera-compensated flow, D=2, or
    both directions stacked, D=4): ``exp(-|u_i - u_j|^2 / sigma^2)``, floored at ``eps``."""
    u = np.asarray(flow_tokens, dtype=np.float64)
    if u.ndim == 1:
        u = u[:, None]
    sq = (u * u).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (u @ u.T), 0.0)
    return np.maximum(np.exp(-d2 / float(sigma) ** 2), eps)


def backproject(depth_grid: np.ndarray, focal: Optional[float] = None) -> np.ndarray:
    """3-D points ``N×3`` of an ``h×w`` depth grid with a pinhole camera at the grid centre.

    ``focal`` in grid cells (default ``max(h, w)``, i.e. a ~53° field of view — depth maps from monocular
    estimators carry no intrinsics, and the cue only needs relative distances).
    """
    d = np.asarray(depth_grid, dtype=np.float64)
    h, w = d.shape
    f = float(focal) if focal else float(max(h, w))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    x = (xs + 0.5 - w / 2.0) / f * d
    y = (ys + 0.5 - h / 2.0) / f * d
    return np.stack([x, y, d], axis=-1).reshape(-1, 3)


def depth_affinity(depth_grid: np.ndarray, sigma: float = 0.25, eps: float = 1e-5) -> np.ndarray:
    """CutS3D-style 3-D affinity: tokens back-projected with their depth (:func:`backproject`); pairs far
    apart in 3-D are down-weighted, ``exp(-|P_i - P_j|^2 / (sigma * median_depth)^2)``."""
    d = np.asarray(depth_grid, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    if not valid.any():
        return np.ones((d.size, d.size))
    med = float(np.median(d[valid]))
    d = np.where(valid, d, med)
    p = backproject(d)
    sq = (p * p).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (p @ p.T), 0.0)
    return np.maximum(np.exp(-d2 / (float(sigma) * med) ** 2), eps)


def fuse_affinities(appearance: Optional[np.ndarray], motion: Optional[np.ndarray], *, fusion: str = "product",
                    motion_weight: float = 0.5, depth: Optional[np.ndarray] = None,
                    eps: float = 1e-5) -> np.ndarray:
    """Combine the cues into one affinity.

    ``"sum"``: ``(1-a)·W_app + a·W_mot``. ``"product"``: ``W_mot · W_app^a`` — appearance can only cut
    edges that motion keeps (``a`` = ``motion_weight`` controls how much; 0 = motion alone). With a
    single cue it is returned unchanged. The depth affinity, when given, multiplies the result.
    """
    if appearance is None and motion is None:
        raise ValueError("fuse_affinities needs at least one cue")
    if appearance is None:
        assert motion is not None  # both None raised above
        w = motion
    elif motion is None:
        w = appearance
    elif fusion == "sum":
        w = (1.0 - motion_weight) * appearance + motion_weight * motion
    elif fusion == "product":
        if motion_weight <= 0:
            w = motion
        elif np.all((appearance == 1.0) | (appearance == eps)):  # binary MaskCut affinity: skip the power
            w = motion * np.where(appearance == 1.0, 1.0, eps ** motion_weight)
        else:
            w = motion * np.power(appearance, motion_weight)
    else:
        raise ValueError(f"unknown fusion {fusion!r}")
    if depth is not None:
        w = w * depth
    return np.maximum(w, eps)
