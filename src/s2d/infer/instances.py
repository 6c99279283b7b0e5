"""Split a predicted mask tube into its space-time connected parts: one tube per separate object.

A video model trained on single-object clips learns "the moving foreground": one query whose mask covers several
objects that are far apart (two cars, the four tiles of a mosaic). Objects that are apart in space stay apart over
a short chunk, so the parts of a tube that never touch on any of its frames are different objects. Two parts touch
when their pixels, grown by ``gap`` pixels, overlap on the same frame or on consecutive frames (motion of up to
``gap`` pixels between frames keeps one object in one piece).

:func:`split_tubes` gives each such part its own tube (same score; logits outside the part pushed to ``-20``).
Parts smaller than ``min_fraction`` of the tube's largest part or than ``min_area`` pixels, or present on fewer
than half of its frames, stay with the largest part, so specks, thin appendages and a small fast object that does not overlap itself from
frame to frame do not become objects. Objects that touch (a juggler and the ball at his foot) are not separated.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

__all__ = ["split_tubes", "tube_parts"]

_OFF = -20.0  # logit given to pixels outside a split part


def tube_parts(tube: np.ndarray, gap: int = 2) -> np.ndarray:
    """Label the space-time parts of one tube: ``L×H×W`` bool → ``L×H×W`` int32 (0 = background, parts 1..n).

    Pixels are joined when their ``gap``-grown masks overlap on the same or the next frame.
    """
    import cv2
    from scipy import ndimage

    tube = np.asarray(tube, dtype=bool)
    if not tube.any():
        return np.zeros(tube.shape, np.int32)
    if gap > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))
        grown = np.stack([cv2.dilate(f.astype(np.uint8), k).astype(bool) for f in tube])
    else:
        grown = tube
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True  # 8-connected within a frame
    structure[0, 1, 1] = structure[2, 1, 1] = True  # and the same pixel on the neighbouring frames
    labels, _ = ndimage.label(grown, structure=structure)
    return np.where(tube, labels, 0).astype(np.int32)


def split_tubes(masks: torch.Tensor, scores: torch.Tensor, logits: Optional[torch.Tensor] = None, *,
                min_fraction: float = 0.1, min_area: float = 0.0, gap: int = 2
                ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """Split every tube into its space-time parts (see the module docstring).

    Args:
        masks: ``K×L×H×W`` bool tubes.
        scores: ``K`` tube scores.
        logits: optional ``K×L×H×W`` mask logits (same size as ``masks``).
        min_fraction: parts with fewer pixels than this fraction of the tube's largest part (or present on fewer
            than half of the tube's frames) are merged into it.
        min_area: so are parts smaller than this many pixels per frame (on average over the frames they are
            on): specks of texture become no objects.
        gap: pixels two parts may be apart and still count as touching.

    Returns:
        ``(masks, scores, logits, source)`` with one row per part, in tube order; ``source[i]`` is the input
        tube of part ``i``. A tube with one part is returned unchanged.
    """
    from scipy import ndimage

    out_m, out_s, out_l, src = [], [], [], []
    for k in range(masks.shape[0]):
        tube = masks[k].cpu().numpy()
        lab = tube_parts(tube, gap)
        ids, sizes = np.unique(lab[lab > 0], return_counts=True)
        if ids.size > 1:
            # a part is connected over consecutive frames, so the frames it is on are its box's time extent
            frames = np.array([sl[0].stop - sl[0].start for sl in ndimage.find_objects(lab)])[ids - 1]
            big = ids[(sizes >= min_fraction * sizes.max()) & (2 * frames >= lab.shape[0])
                      & (sizes >= min_area * frames)]
        else:
            big = ids
        if big.size <= 1:
            out_m.append(masks[k])
            out_s.append(scores[k])
            if logits is not None:
                out_l.append(logits[k])
            src.append(k)
            continue
        main = ids[sizes.argmax()]
        owner = np.where(np.isin(lab, big), lab, np.where(lab > 0, main, 0))  # small parts join the largest
        for part in big:
            sel = torch.from_numpy(owner == part).to(masks.device)
            out_m.append(sel)
            out_s.append(scores[k])
            if logits is not None:
                region = torch.from_numpy(_region(owner, part)).to(logits.device)
                out_l.append(torch.where(region, logits[k], torch.full_like(logits[k], _OFF)))
            src.append(k)
    if not out_m:
        return masks, scores, logits, torch.zeros(0, dtype=torch.long)
    return (torch.stack(out_m), torch.stack(out_s), torch.stack(out_l) if logits is not None else None,
            torch.tensor(src, dtype=torch.long))


def _region(owner: np.ndarray, part: int) -> np.ndarray:
    """Pixels nearer to ``part`` than to any other part on each frame (so that upsampled logits keep the part's
    soft edge but never spill onto its neighbours)."""
    import cv2

    out = np.zeros(owner.shape, bool)
    for t in range(owner.shape[0]):
        mine = owner[t] == part
        if not mine.any():
            continue
        other = (owner[t] > 0) & ~mine
        if not other.any():
            out[t] = True
            continue
        d_mine = cv2.distanceTransform((~mine).astype(np.uint8), cv2.DIST_L2, 3)
        d_other = cv2.distanceTransform((~other).astype(np.uint8), cv2.DIST_L2, 3)
        out[t] = d_mine <= d_other
    return out
