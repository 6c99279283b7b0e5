"""Edge-aware upsampling of mask probabilities: a guided filter with the frame as guide.

The model's mask logits come at stride 4 of its working size (about 144×81 for a 576-px frame) and are upsampled
about ×6 to an 854×480 frame, so boundaries sit inside the object and thin parts are lost. A guided filter
(He et al., "Guided Image Filtering", TPAMI 2013; OpenCV's ``ximgproc`` implementation) makes the upsampled
probability locally an affine function of the image's colours: edges in the probability move onto the image's
edges within ``radius`` pixels, while a region where the image is flat keeps the model's probability, so
low-contrast objects are not erased (the failure of a dense CRF on these masks, ``benchmarks/RESULTS.md``).
Measured on the 14 dev sequences with the shipped model (radius 32 px at 854×480, eps 0.01): union J 0.620 →
0.640, F 0.542 → 0.581, 0.03 s per frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["guided_probability", "guided_masks"]


def guided_probability(rgb: np.ndarray, prob: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Filter ``prob`` (``H×W`` float in [0, 1]) guided by ``rgb`` (``H×W×3`` uint8); returns ``H×W`` float32.

    ``radius``: window radius in pixels; ``eps``: regularisation, in squared 0–255 colour levels (larger =
    smoother, closer to a box filter of ``prob``; the default 0.01 lets the image's edges decide).
    """
    import cv2

    rgb = np.ascontiguousarray(rgb)
    if rgb.shape[:2] != prob.shape:
        raise ValueError(f"image {rgb.shape[:2]} and probability {prob.shape} differ in size")
    return cv2.ximgproc.guidedFilter(rgb, np.ascontiguousarray(prob, dtype=np.float32), int(radius), float(eps))


def guided_masks(rgb: np.ndarray, logits: "torch.Tensor", radius: float, eps: float,
                 size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """``K×h×w`` mask logits → ``K×H×W`` bool masks: each object's probability upsampled bilinearly to ``rgb``'s
    size, guided-filtered there with a window radius of ``radius`` × its long side, resized to ``size``
    (default ``rgb``'s) and thresholded at 0.5. One object at a time, so memory holds one map."""
    import cv2
    import torch.nn.functional as F

    rh, rw = rgb.shape[:2]
    size = (rh, rw) if size is None else (int(size[0]), int(size[1]))
    r = max(1, int(round(radius * max(rh, rw))))
    masks = np.zeros((logits.shape[0],) + size, dtype=bool)
    if logits.shape[0] == 0:
        return masks
    # the guide's local statistics are computed once per frame and shared by its objects (≈3× faster with two)
    gf = cv2.ximgproc.createGuidedFilter(np.ascontiguousarray(rgb), r, float(eps))
    for k in range(logits.shape[0]):
        lg = logits[k].float()[None, None]
        if tuple(lg.shape[-2:]) != (rh, rw):
            lg = F.interpolate(lg, size=(rh, rw), mode="bilinear", align_corners=False)
        q = gf.filter(np.ascontiguousarray(lg[0, 0].sigmoid().cpu().numpy(), dtype=np.float32))
        if q.shape != size:
            q = cv2.resize(q, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        masks[k] = q > 0.5
    return masks
