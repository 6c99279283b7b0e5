"""Object thumbnails: a crop of the frame around an object's mask, saved as a small JPEG.

Frames come from a video (the overlay of ``s2d segment``, or the source video of ``s2d discover``), decoded
once in order; only the frames some thumbnail needs are kept. Without frames, a thumbnail shows the mask
itself (the object's colour on grey).
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, Optional, Tuple, Union

import numpy as np
from PIL import Image

PathLike = Union[str, "os.PathLike[str]"]
Box = Tuple[float, float, float, float]  # COCO x, y, w, h

__all__ = ["collect_frames", "crop_box", "save_thumbnail", "mask_image"]

THUMB_HEIGHT = 72
THUMB_MAX_WIDTH = 150


def collect_frames(source: PathLike, wanted: Iterable[int], *, progress: bool = False,
                   desc: str = "frames") -> Dict[int, np.ndarray]:
    """RGB frames ``{index: H×W×3}`` of ``source`` at the ``wanted`` indices (one sequential decode,
    stopped after the last wanted frame). Missing indices (a shorter video) are simply absent."""
    from tqdm import tqdm

    from s2d.io.video import open_video

    want = set(int(i) for i in wanted)
    out: Dict[int, np.ndarray] = {}
    if not want:
        return out
    last = max(want)
    with open_video(source, end=last + 1) as stream:
        for frame in tqdm(stream, total=last + 1, desc=desc, unit="frame", disable=not progress, leave=False):
            if frame.index in want:
                out[frame.index] = frame.rgb
    return out


def crop_box(box: Box, size: Tuple[int, int], *, pad: float = 0.15, min_side: int = 16) -> Tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of the box grown by ``pad`` of its size (at least ``min_side`` px), inside the frame."""
    H, W = size
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    half_w = max(w * (1 + 2 * pad), min_side) / 2
    half_h = max(h * (1 + 2 * pad), min_side) / 2
    x0, x1 = int(max(0, cx - half_w)), int(min(W, np.ceil(cx + half_w)))
    y0, y1 = int(max(0, cy - half_h)), int(min(H, np.ceil(cy + half_h)))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def mask_image(mask: np.ndarray, color: Tuple[int, int, int]) -> np.ndarray:
    """An RGB picture of a mask: its colour on grey (when no frame is available)."""
    img = np.full(mask.shape + (3,), 60, dtype=np.uint8)
    img[mask] = color
    return img


def save_thumbnail(path: PathLike, rgb: np.ndarray, box: Box, *, mask: Optional[np.ndarray] = None,
                   color: Tuple[int, int, int] = (255, 255, 255)) -> None:
    """Crop ``rgb`` around ``box``, tint ``mask`` (when given) with ``color``, and save a small JPEG."""
    x0, y0, x1, y1 = crop_box(box, rgb.shape[:2])
    crop = rgb[y0:y1, x0:x1].astype(np.float32)
    if mask is not None:
        m = mask[y0:y1, x0:x1]
        crop[m] = 0.55 * crop[m] + 0.45 * np.asarray(color, np.float32)
    img = Image.fromarray(np.clip(crop + 0.5, 0, 255).astype(np.uint8))
    scale = min(THUMB_HEIGHT / img.height, THUMB_MAX_WIDTH / img.width)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR)
    img.save(os.fspath(path), format="JPEG", quality=85)
