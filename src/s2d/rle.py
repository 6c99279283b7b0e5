"""COCO run-length encoding helpers (thin wrappers over pycocotools).

Every mask that leaves memory is a COCO RLE ``{"size": [h, w], "counts": str}``: compact (a
480p object mask is ~1 kB), decodable by every VIS tool, and what YouTube-VIS JSON stores.
pycocotools wants Fortran-ordered uint8 arrays and returns ``counts`` as bytes; these helpers
hide both details and validate sizes so a wrong-size RLE fails with a clear message.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Optional, Tuple

import numpy as np
from pycocotools import mask as mask_utils

from s2d.errors import ValidationError

RLE = dict  # {"size": [h, w], "counts": str}


def encode(mask: np.ndarray) -> RLE:
    """Encode a boolean ``H×W`` mask as a compressed COCO RLE with ``counts`` as ``str``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValidationError(f"mask must be 2-D (H×W), got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def to_compressed(rle: Mapping[str, Any]) -> RLE:
    """Return ``rle`` as compressed RLE with str counts; accepts uncompressed (list) counts too."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise ValidationError("RLE must be a dict with 'size' and 'counts'")
    size = rle["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, (int, np.integer)) and v >= 0 for v in size)):
        raise ValidationError(f"RLE 'size' must be [height, width], got {size!r}")
    h, w = int(size[0]), int(size[1])
    counts = rle["counts"]
    if isinstance(counts, list):
        if sum(int(c) for c in counts) != h * w:
            raise ValidationError(f"uncompressed RLE counts sum to {sum(counts)}, expected {h}×{w}={h * w}")
        out = mask_utils.frPyObjects({"size": [h, w], "counts": [int(c) for c in counts]}, h, w)
        counts = out["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if not isinstance(counts, str):
        raise ValidationError(f"RLE 'counts' must be a string or a list of ints, got {type(counts).__name__}")
    return {"size": [h, w], "counts": counts}


def decode(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (compressed or uncompressed) to a boolean ``H×W`` array."""
    rle = to_compressed(rle)
    h, w = rle["size"]
    try:
        with warnings.catch_warnings():
            # pycocotools' Cython decode trips NumPy 2's "__array__ ... copy keyword"
            # DeprecationWarning on every call; it is harmless and not ours to fix.
            warnings.simplefilter("ignore", DeprecationWarning)
            mask = mask_utils.decode({"size": [h, w], "counts": rle["counts"].encode("ascii")})
    except Exception as exc:  # pycocotools raises bare exceptions on garbage counts
        raise ValidationError(f"RLE counts could not be decoded: {exc}") from None
    if mask.shape != (h, w):
        raise ValidationError(f"RLE decodes to {mask.shape}, expected {(h, w)}")
    return mask.astype(bool)


def area(rle: Mapping[str, Any]) -> int:
    """Number of foreground pixels of an RLE (no decode)."""
    rle = to_compressed(rle)
    return int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))


def bbox(rle: Mapping[str, Any]) -> Optional[Tuple[float, float, float, float]]:
    """COCO ``[x, y, w, h]`` box of an RLE, or ``None`` for an empty mask."""
    rle = to_compressed(rle)
    if area(rle) == 0:
        return None
    x, y, w, h = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    return (float(x), float(y), float(w), float(h))


def size_of(rle: Mapping[str, Any]) -> Tuple[int, int]:
    """``(height, width)`` an RLE claims."""
    return int(rle["size"][0]), int(rle["size"][1])
