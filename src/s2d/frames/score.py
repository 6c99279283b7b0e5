"""Scores in [0, 1] for single-frame masks: the top-scored mask of a frame should be its main object.

The score multiplies three label-free cues:

* **motion contrast** (when motion is available): camera-compensated motion inside the mask against a
  ring around it, ``(m_in - m_ring) / (m_in + m_ring + floor)``, clipped to [0, 1]. A moving object has
  motion inside and none around it; a piece of background, or a mask that bled far past the object,
  has similar motion on both sides.
* **cut quality** (NCut candidates, and without motion): ``1 - λ`` of the normalized cut; a clean cut
  has a small generalized eigenvalue.
* **edge agreement**: IoU of the coarse mask with its CRF-refined version — masks whose outline already
  follows image edges change little under the CRF.

and a size prior that discounts masks covering most of the frame (they are usually background).
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

__all__ = ["edge_agreement", "motion_contrast", "size_prior", "combine_score"]


def _ring(mask: np.ndarray, frac: float = 0.25, min_px: int = 3) -> np.ndarray:
    area = float(mask.sum())
    r = max(min_px, int(round(frac * np.sqrt(max(area, 1.0)))))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    dil = cv2.dilate(mask.astype(np.uint8), k) > 0
    return dil & ~mask


def motion_contrast(mask: np.ndarray, saliency: np.ndarray, floor: float = 0.5) -> float:
    """Contrast of ``saliency`` (``h×w`` motion magnitude, px) inside ``mask`` vs a ring around it, in [0, 1].

    ``mask`` is resized to the saliency's size. ``floor`` (px) keeps near-static frames from scoring high
    on noise.
    """
    s = np.asarray(saliency, dtype=np.float32)
    m = np.asarray(mask, dtype=bool)
    if m.shape != s.shape:
        m = cv2.resize(m.astype(np.float32), (s.shape[1], s.shape[0]), interpolation=cv2.INTER_LINEAR) > 0.5
    if not m.any():
        return 0.0
    ring = _ring(m)
    m_in = float(s[m].mean())
    m_out = float(s[ring].mean()) if ring.any() else 0.0
    return float(np.clip((m_in - m_out) / (m_in + m_out + floor), 0.0, 1.0))


def edge_agreement(coarse: np.ndarray, refined: np.ndarray) -> float:
    """IoU of a coarse mask with its refinement (1 = the outline already follows image edges)."""
    a, b = np.asarray(coarse, bool), np.asarray(refined, bool)
    if a.shape != b.shape:
        a = cv2.resize(a.astype(np.float32), (b.shape[1], b.shape[0]), interpolation=cv2.INTER_LINEAR) > 0.5
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / union if union else 0.0


def size_prior(area_frac: float, knee: float = 0.35, max_area: float = 0.8) -> float:
    """1 up to ``knee`` of the frame, falling linearly to 0 at ``max_area``."""
    if area_frac <= knee:
        return 1.0
    return float(np.clip((max_area - area_frac) / (max_area - knee), 0.0, 1.0))


def combine_score(*, area_frac: float, contrast: Optional[float], eigenvalue: Optional[float],
                  agreement: Optional[float], max_area: float = 0.8) -> float:
    """The final score in [0, 1] (see the module docstring)."""
    s = size_prior(area_frac, max_area=max_area)
    if contrast is not None:
        s *= contrast
    elif eigenvalue is not None:
        s *= float(np.clip(1.0 - eigenvalue, 0.0, 1.0))
    if agreement is not None:
        s *= float(np.sqrt(np.clip(agreement, 0.0, 1.0)))
    return float(np.clip(s, 0.0, 1.0))
