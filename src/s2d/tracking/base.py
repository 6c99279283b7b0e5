"""The point-tracker interface every backend implements (flow chaining, Lucas-Kanade, CoTracker3).

A tracker follows query points through a whole video, forward *and* backward in time from each
point's query frame, and says per frame whether each point is visible. Keymask discovery (stage 2)
calls it once per frame with the points of all masks of that frame, so one call shares the
tracker's work between masks.

Shapes: ``queries`` is ``N×3`` float ``(t, x, y)`` in pixels of the frames the tracker is given;
``TrackResult.points`` is ``T×N×2`` float32 ``(x, y)`` and ``TrackResult.visible`` is ``T×N`` bool.
A point is always visible at its own query frame.

``frame_range=(start, end)`` (optional; inclusive start, exclusive end) restricts tracking to those
frames — e.g. a keymask candidate's range (note that keymask ranges are inclusive ``(a, b)``, pass
``(a, b + 1)``). Every query frame must lie in the range; outside it ``points`` is NaN and
``visible`` False, and the result still has all T frames. Backends only touch frames in the range,
so a short range is proportionally cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Tuple, runtime_checkable

import numpy as np


@dataclass
class TrackResult:
    """Positions and visibility of N query points on every one of T frames.

    Attributes:
        points: ``T×N×2`` float32 ``(x, y)``; where a point is not visible the position is the
            tracker's best guess (or the last reliable one) and must not be trusted.
        visible: ``T×N`` bool.
    """

    points: np.ndarray
    visible: np.ndarray

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32)
        self.visible = np.asarray(self.visible, dtype=bool)
        if self.points.ndim != 3 or self.points.shape[2] != 2:
            raise ValueError(f"points must be T×N×2, got {self.points.shape}")
        if self.visible.shape != self.points.shape[:2]:
            raise ValueError(f"visible must be T×N = {self.points.shape[:2]}, got {self.visible.shape}")

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.points.shape[1])


@runtime_checkable
class PointTracker(Protocol):
    """Tracks query points through a video prepared by :meth:`prepare`.

    ``prepare`` receives the video once (streamed frames, or a cached flow field) and may build
    per-video state (e.g. the chained optical flow on disk); ``track`` is then called many times.
    """

    def track(self, queries: np.ndarray, frame_range: Optional[Tuple[int, int]] = None) -> TrackResult:
        """Track ``N×3`` queries ``(t, x, y)`` over all frames of the prepared video (or only over
        ``frame_range = (start, end)``, end exclusive; NaN / invisible elsewhere)."""
        ...
