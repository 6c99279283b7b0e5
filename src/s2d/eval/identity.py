"""Identity measures per ground-truth object: does one predicted id follow one object, and only it?

DAVIS J&F matches one predicted id to each object for the whole sequence; these numbers say *why* it fails when
it does. For each GT object and frame, the **dominant id** is the predicted id holding most of the object's pixels,
provided it holds at least ``cover`` (default 25 %) of them; otherwise the frame has none. Per object:

* ``fragments`` — distinct dominant ids over the sequence (ideal 1; 0 when never covered);
* ``switches`` — changes of the dominant id between consecutive frames that have one (ideal 0);
* ``merged`` — share of its frames whose dominant id also holds ≥ ``cover`` of *another* GT object (ideal 0:
  one id spanning two objects);
* ``covered`` — share of its frames that have a dominant id (ideal 1).

Frames are label maps (``H×W`` integer arrays, 0 = background; GT value 255 = void, ignored), streamed one at a
time, so memory does not grow with the sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

__all__ = ["ObjectIdentity", "identity_stats", "mean_identity"]


@dataclass
class ObjectIdentity:
    """Identity measures of one GT object (see the module docstring)."""

    object: int
    frames: int = 0
    dominant: List[Optional[int]] = field(default_factory=list)
    merged_frames: int = 0

    @property
    def fragments(self) -> int:
        return len({d for d in self.dominant if d is not None})

    @property
    def switches(self) -> int:
        seq = [d for d in self.dominant if d is not None]
        return sum(a != b for a, b in zip(seq, seq[1:]))

    @property
    def merged(self) -> float:
        return self.merged_frames / self.frames if self.frames else 0.0

    @property
    def covered(self) -> float:
        return sum(d is not None for d in self.dominant) / self.frames if self.frames else 0.0

    def to_dict(self) -> Dict[str, float]:
        return {"object": self.object, "frames": self.frames, "fragments": self.fragments,
                "switches": self.switches, "merged": self.merged, "covered": self.covered}


def _holdings(gt: np.ndarray, pred: np.ndarray, objects: List[int]) -> Dict[int, Tuple[np.ndarray, np.ndarray, int]]:
    """Per object: (predicted ids > 0 inside it, their pixel counts, object area)."""
    out = {}
    for o in objects:
        inside = pred[gt == o]
        ids, counts = np.unique(inside[inside > 0], return_counts=True)
        out[o] = (ids, counts, int(inside.size))
    return out


def identity_stats(frames: Iterable[Tuple[np.ndarray, Optional[np.ndarray]]], cover: float = 0.25
                   ) -> List[ObjectIdentity]:
    """Identity measures of every GT object of one sequence.

    Args:
        frames: ``(gt, pred)`` label maps per frame, in order; ``pred`` may be ``None`` (nothing predicted).
        cover: the share of an object's pixels an id must hold to count as covering it.

    Returns:
        One :class:`ObjectIdentity` per GT object, by object id, over the frames where the object is present
        in the ground truth.
    """
    if not 0.0 < cover <= 1.0:
        raise ValueError(f"cover must be in (0, 1], got {cover}")
    stats: Dict[int, ObjectIdentity] = {}
    for gt, pred in frames:
        gt = np.asarray(gt)
        if pred is not None and np.asarray(pred).shape != gt.shape:
            raise ValueError(f"prediction of shape {np.asarray(pred).shape} for ground truth of shape {gt.shape}")
        objects = [int(o) for o in np.unique(gt) if o not in (0, 255)]
        hold = _holdings(gt, np.asarray(pred), objects) if pred is not None else {}
        dominant: Dict[int, Optional[int]] = {}
        for o in objects:
            d = None
            if o in hold:
                ids, counts, area = hold[o]
                if counts.size and counts.max() >= cover * area:
                    d = int(ids[counts.argmax()])
            dominant[o] = d
        for o in objects:
            st = stats.setdefault(o, ObjectIdentity(o))
            st.frames += 1
            st.dominant.append(dominant[o])
            d = dominant[o]
            if d is not None and any(
                    o2 != o and d in hold[o2][0] and hold[o2][1][hold[o2][0] == d][0] >= cover * hold[o2][2]
                    for o2 in objects):
                st.merged_frames += 1
    return [stats[o] for o in sorted(stats)]


def mean_identity(objects: Iterable[ObjectIdentity]) -> Dict[str, float]:
    """Mean of each measure over objects (``nan`` for none)."""
    rows = [o.to_dict() for o in objects]
    keys = ("fragments", "switches", "merged", "covered")
    if not rows:
        return {k: float("nan") for k in keys} | {"objects": 0}
    return {k: float(np.mean([r[k] for r in rows])) for k in keys} | {"objects": len(rows)}
