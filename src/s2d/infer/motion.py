"""How much each tube moves on its own: camera-compensated flow inside its masks (``s2d segment``'s ``min_motion``).

Static things the model also finds (rocks, a bench, patches of sky) cost on every metric that counts all objects,
and they are what separates them from the objects users mean: those move at some point. The meter computes DIS
flow between consecutive frames at a small size, removes the camera's motion (a homography fitted by RANSAC,
:mod:`s2d.features.camera`) and averages what remains inside a tube's masks. The predictor lets a tube *start* an
object only when it moves; an object that stops later keeps its id.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from s2d.features.camera import fit_camera_motion, residual_flow
from s2d.features.flow import FlowConfig, compute_flow

__all__ = ["MotionMeter"]


class MotionMeter:
    """Residual (object) motion of the frames of one stream, in percent of the frame's long side per frame.

    Call :meth:`update` with each chunk's frames (stream positions and working-size RGB, in order; frames seen
    before are skipped), then :meth:`tube_motion` with the chunk's tube masks. A frame's motion map is the flow
    from the frame before it, so the first frame of a stream has none.

    Args:
        max_side: long side of the flow's working size in pixels.
        preset: DIS preset (:class:`~s2d.features.flow.FlowConfig`); ``"fast"`` costs a few ms at 320 px.
    """

    def __init__(self, max_side: int = 320, preset: str = "fast") -> None:
        self.flow = FlowConfig(preset=preset, max_side=max_side)
        self._maps: Dict[int, np.ndarray] = {}  # stream position -> h×w motion map (percent of the long side)
        self._last: Optional[Tuple[int, np.ndarray]] = None  # (position, RGB) of the latest frame seen

    def update(self, frames: Sequence[Tuple[int, np.ndarray]]) -> None:
        """Motion maps of the frames not seen yet; only the maps of ``frames`` are kept."""
        for pos, rgb in frames:
            if pos in self._maps or (self._last is not None and pos <= self._last[0]):
                continue
            if self._last is not None and self._last[0] == pos - 1:
                self._maps[pos] = self._motion(self._last[1], rgb)
            self._last = (pos, rgb)
        keep = {int(p) for p, _ in frames}
        self._maps = {p: m for p, m in self._maps.items() if p in keep}

    def _motion(self, prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
        flow = compute_flow(prev, cur, self.flow)
        fit = fit_camera_motion(flow)
        mag = np.linalg.norm(residual_flow(flow, fit.H), axis=-1)
        return (mag * (100.0 / max(flow.shape[:2]))).astype(np.float32)

    def tube_motion(self, positions: Sequence[int], masks: torch.Tensor) -> np.ndarray:
        """Per tube of ``masks`` (``K×L×h×w``, frames at ``positions``): the mean over its frames with a motion
        map and pixels of the mean motion inside its mask; NaN for a tube with no such frame."""
        k = masks.shape[0]
        sums, counts = np.zeros(k), np.zeros(k)
        for j, pos in enumerate(positions):
            mp = self._maps.get(int(pos))
            if mp is None or k == 0:
                continue
            small = F.interpolate(masks[:, j:j + 1].float(), size=mp.shape, mode="nearest")[:, 0]  # K×h×w
            area = small.flatten(1).sum(1).numpy()
            inside = (small * torch.from_numpy(mp)).flatten(1).sum(1).numpy()
            has = area > 0
            sums[has] += inside[has] / area[has]
            counts[has] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
