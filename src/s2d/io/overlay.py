"""Overlays: instance masks drawn on frames, and overlay videos.

Colours are a pure function of the track id, so an object keeps its colour over a video, between
runs and between the overlay and any other visualisation that uses :func:`color_for_id`. Overlaps are
resolved like every other export, by :meth:`s2d.types.FrameResult.label_map` (higher score on top), so
the overlay shows exactly what a DAVIS PNG export would contain.
"""

from __future__ import annotations

import colorsys
import os
from typing import Any, Optional, Tuple, Union

import cv2
import numpy as np

from s2d.io.video import VideoWriter
from s2d.types import FrameResult

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["OverlayWriter", "color_for_id", "draw_overlay"]

_PHI = 0.618033988749895  # golden ratio conjugate: consecutive ids land far apart on the hue circle
# Hue offset and saturation/value cycles chosen to maximise the smallest RGB distance between the
# colours of ids 1..20 (≈59 of 441): hue alone gets close for some pairs, brightness separates them.
_HUE0 = 0.45
_SAT = (0.9, 0.6)
_VAL = (0.95, 0.7, 0.85)


def color_for_id(track_id: int) -> Tuple[int, int, int]:
    """Deterministic RGB colour of a track id (≥ 1): golden-ratio hue steps with alternating
    saturation and brightness, so ids 1..20 are clearly distinct and any id always gets the same colour.
    """
    if isinstance(track_id, bool) or not isinstance(track_id, (int, np.integer)) or track_id < 1:
        raise ValueError(f"track id must be a positive integer, got {track_id!r}")
    i = int(track_id)
    hue = (_HUE0 + i * _PHI) % 1.0
    sat = _SAT[i % len(_SAT)]
    val = _VAL[(i // len(_SAT)) % len(_VAL)]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def _label_anchor(region: np.ndarray) -> Tuple[int, int]:
    """``(x, y)`` of the most interior pixel of a binary region (max of the distance transform).

    The centroid can fall outside a non-convex object (a ring, a person with spread arms); the most
    interior pixel is always inside. Computed on the region's bounding box to stay cheap.
    """
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = np.zeros((y1 - y0 + 2, x1 - x0 + 2), np.uint8)  # 1-px border so edges count as outside
    crop[1:-1, 1:-1] = region[y0:y1, x0:x1]
    dist = cv2.distanceTransform(crop, cv2.DIST_L2, 3)
    cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x0 + cx - 1), int(y0 + cy - 1)


def draw_overlay(
    rgb: np.ndarray,
    frame: FrameResult,
    *,
    alpha: float = 0.5,
    contours: bool = True,
    labels: bool = True,
) -> np.ndarray:
    """Draw the objects of ``frame`` on a copy of ``rgb`` (``H×W×3`` uint8 RGB).

    Each visible object's pixels are blended with its colour (``(1-alpha)*pixel + alpha*colour``),
    outlined, and labelled with its id at its most interior pixel. Background pixels away from contours
    and labels are left exactly as they were. When the masks have another size than the image (e.g.
    masks at working resolution, image at full size), the label map is resized with nearest neighbour.
    """
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an H×W×3 uint8 RGB image, got {img.shape} {img.dtype}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    out = np.array(img, copy=True, order="C")
    if len(frame) == 0:
        return out
    h, w = img.shape[:2]
    labels_map = frame.label_map()
    if labels_map.shape != (h, w):
        labels_map = cv2.resize(labels_map.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST)
    ids = [int(i) for i in np.unique(labels_map) if i > 0]
    if not ids:
        return out

    # blend all objects in one pass through a small lookup table of the ids present
    lut_ids = np.array(ids, dtype=np.int64)
    colors = np.array([color_for_id(i) for i in ids], dtype=np.float32)
    fg = labels_map > 0
    which = np.searchsorted(lut_ids, labels_map[fg])
    out[fg] = np.clip((1.0 - alpha) * img[fg].astype(np.float32) + alpha * colors[which] + 0.5, 0, 255).astype(
        np.uint8)

    thickness = max(1, int(round(min(h, w) / 240)))
    font_scale = max(0.35, min(h, w) / 720)
    font_thick = max(1, int(round(font_scale * 1.5)))
    for k, tid in enumerate(ids):
        region = (labels_map == tid).astype(np.uint8)
        color = tuple(int(c) for c in colors[k])
        if contours:
            cnts, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, cnts, -1, color, thickness, lineType=cv2.LINE_AA)
        if labels:
            text = str(tid)
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, font_thick)
            cx, cy = _label_anchor(region)
            x = int(min(max(cx - tw // 2, 0), max(w - tw, 0)))
            y = int(min(max(cy + th // 2, th), h - 1))
            # dark outline under the coloured text keeps it readable on any background
            cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), font_thick + 2,
                        cv2.LINE_AA)
            cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), font_thick,
                        cv2.LINE_AA)
    return out


class OverlayWriter:
    """Overlay video writer: ``write(rgb, frame_result)`` draws and encodes one frame.

    A thin wrapper of :class:`s2d.io.video.VideoWriter`, so the file appears atomically under ``path``
    only when the ``with`` block ends without an exception.
    """

    def __init__(
        self,
        path: PathLike,
        fps: float,
        width: int,
        height: int,
        *,
        alpha: float = 0.5,
        contours: bool = True,
        labels: bool = True,
        **writer_kwargs: Any,
    ) -> None:
        self.alpha, self.contours, self.labels = float(alpha), bool(contours), bool(labels)
        self.writer = VideoWriter(path, fps, width, height, **writer_kwargs)

    @property
    def path(self) -> "os.PathLike[str]":
        return self.writer.path

    def write(self, rgb: np.ndarray, frame: Optional[FrameResult]) -> None:
        """Draw ``frame`` (``None``: nothing detected) on ``rgb`` and encode it."""
        if frame is not None:
            rgb = draw_overlay(rgb, frame, alpha=self.alpha, contours=self.contours, labels=self.labels)
        self.writer.write(rgb)

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()

    def __enter__(self) -> "OverlayWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.writer.__exit__(exc_type, exc, tb)
