"""Query points of a single-frame mask: the points of a regular G×G grid that fall inside it.

This reproduces CoTracker's ``_compute_sparse_tracks(grid_size=G, segm_mask=mask)`` as the reference
calls it, at any frame size:

1. the grid is laid out over the model resolution ``(Hm, Wm)`` (384×512) with a margin
   ``m = Wm / 64``: ``x_j = linspace(m, Wm - m, G)``, ``y_i = linspace(m, Hm - m, G)``, row-major;
2. the mask is nearest-resized to ``(Hm, Wm)`` (PyTorch ``mode="nearest"``: source index
   ``floor(dst * in / out)``) and a grid point is kept where the resized mask is set at
   ``(round(y), round(x))``;
3. the kept points are mapped to frame pixels with the align-corners factor ``(W - 1) / (Wm - 1)``,
   ``(H - 1) / (Hm - 1)`` (how CoTracker scales its tracks back, and the query points themselves).

So a G×G grid is always G×G over the whole frame, whatever its aspect ratio, and the number of points
inside a mask depends on the fraction of the frame it covers, not on the frame's resolution.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from s2d.errors import SettingError

__all__ = ["model_grid", "grid_points", "to_frame_coords"]

REFERENCE_MODEL_SIZE: Tuple[int, int] = (384, 512)


def model_grid(grid: int, model_size: Tuple[int, int] = REFERENCE_MODEL_SIZE,
               margin: Optional[float] = None) -> np.ndarray:
    """``G*G × 2`` float64 ``(x, y)`` grid over ``model_size = (Hm, Wm)``, row-major (CoTracker's
    ``get_points_on_a_grid``); ``margin`` defaults to ``Wm / 64``."""
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 1:
        raise SettingError(f"grid size must be a positive integer, got {grid!r}")
    hm, wm = int(model_size[0]), int(model_size[1])
    if grid == 1:
        return np.array([[wm / 2.0, hm / 2.0]])
    m = wm / 64.0 if margin is None else float(margin)
    ys = np.linspace(m, hm - m, int(grid))
    xs = np.linspace(m, wm - m, int(grid))
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def _nearest_src(idx: np.ndarray, in_size: int, out_size: int) -> np.ndarray:
    """Source index of PyTorch's ``F.interpolate(mode="nearest")`` for destination indices ``idx``."""
    if in_size == out_size:
        return idx
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.floor(idx.astype(np.float32) * scale).astype(np.int64)
    return np.minimum(src, in_size - 1)


def to_frame_coords(points_model: np.ndarray, frame_size: Tuple[int, int],
                    model_size: Tuple[int, int] = REFERENCE_MODEL_SIZE) -> np.ndarray:
    """Map model-resolution ``(x, y)`` points to frame pixels with the align-corners factors."""
    h, w = int(frame_size[0]), int(frame_size[1])
    hm, wm = int(model_size[0]), int(model_size[1])
    sx = (w - 1) / (wm - 1) if wm > 1 else 1.0
    sy = (h - 1) / (hm - 1) if hm > 1 else 1.0
    return np.asarray(points_model, dtype=np.float64) * np.array([sx, sy])


def grid_points(mask: np.ndarray, grid: int, model_size: Tuple[int, int] = REFERENCE_MODEL_SIZE,
                margin: Optional[float] = None) -> np.ndarray:
    """``N × 2`` float32 ``(x, y)`` frame-pixel positions of the G×G grid points inside ``mask``.

    ``mask`` is a boolean ``H×W`` array at the frame's resolution; ``N`` may be 0 for a mask too
    small to contain a grid point.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise SettingError(f"mask must be H×W, got shape {mask.shape}")
    h, w = mask.shape
    hm, wm = int(model_size[0]), int(model_size[1])
    pts = model_grid(grid, (hm, wm), margin)
    # torch.round rounds half to even, as np.rint does
    xi = np.clip(np.rint(pts[:, 0]).astype(np.int64), 0, wm - 1)
    yi = np.clip(np.rint(pts[:, 1]).astype(np.int64), 0, hm - 1)
    keep = mask[_nearest_src(yi, h, hm), _nearest_src(xi, w, wm)].astype(bool)
    return to_frame_coords(pts[keep], (h, w), (hm, wm)).astype(np.float32)
