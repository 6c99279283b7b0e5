"""Linking mask tubes of overlapping chunks into video-wide tracks (SPEC §4, stage 4).

A video model predicts mask *tubes* for one chunk of frames at a time, and the same object gets an
arbitrary query slot in every chunk. Consecutive chunks share some frames, so a tube of the new chunk is
the continuation of the previous chunk's tube whose masks agree with it on the shared frames: mean IoU over
those frames, one-to-one by Hungarian assignment, accepted at IoU ≥ ``link_iou``. A tube that matches
nothing starts a new track. Track ids count up from 1 in first-seen order and are never given out twice,
so a track that ends (its object left, or a chunk missed it) stays ended: a returning object gets a new id
rather than silently taking over an old one.

The same :class:`TubeLinker` serves streaming inference (:mod:`s2d.infer.predictor`) and the dense
labelset (:func:`s2d.train.dense.predict_video_dense`).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from s2d.errors import SettingError

__all__ = ["TubeLinker", "match_tubes", "tube_iou"]

Masks = Union[np.ndarray, torch.Tensor]


def _as_tensor(x: Masks) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def tube_iou(a: Masks, b: Masks) -> np.ndarray:
    """Mean over frames of the mask IoU of every pair of tubes.

    Args:
        a: ``N×S×H×W`` bool masks (N tubes on S frames).
        b: ``M×S×H×W`` bool masks on the same S frames.

    Returns:
        ``N×M`` float array; a frame where both masks are empty counts as IoU 0 (no evidence of a match).
    """
    a, b = _as_tensor(a), _as_tensor(b)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"tubes cover different frames/sizes: {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}")
    if a.shape[0] == 0 or b.shape[0] == 0 or a.shape[1] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    a, b = a.flatten(2).float(), b.flatten(2).float()
    inter = torch.einsum("ntp,mtp->nmt", a, b)
    union = a.sum(-1)[:, None] + b.sum(-1)[None] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
    return iou.mean(-1).cpu().numpy()


def match_tubes(iou: np.ndarray, min_iou: float) -> Dict[int, int]:
    """One-to-one matching maximising the summed IoU (Hungarian), keeping pairs with IoU ≥ ``min_iou``.

    Returns ``{row: column}`` for the accepted pairs.
    """
    iou = np.asarray(iou, dtype=np.float64)
    if iou.size == 0:
        return {}
    rows, cols = linear_sum_assignment(-iou)
    return {int(r): int(c) for r, c in zip(rows, cols) if iou[r, c] >= min_iou}


class TubeLinker:
    """Give the tubes of consecutive chunks video-wide track ids.

    Call :meth:`link` once per chunk, in video order, with the chunk's frame indices and its tubes' masks.
    The linker remembers the last chunk (its frames, tube ids and masks: memory of one chunk), matches the
    new chunk's tubes to it on the frames both cover, and returns one id per tube.

    Args:
        link_iou: smallest mean IoU over the shared frames that continues a track (0 < link_iou ≤ 1).

    Example::

        linker = TubeLinker(0.3)
        ids = linker.link([0, 1, 2, 3], masks_a)   # first chunk: new ids 1..K
        ids = linker.link([2, 3, 4, 5], masks_b)   # matched on frames 2-3, others get fresh ids
    """

    def __init__(self, link_iou: float = 0.3) -> None:
        if not 0.0 < float(link_iou) <= 1.0:
            raise SettingError(f"link_iou must be in (0, 1], got {link_iou!r}")
        self.link_iou = float(link_iou)
        self.next_id = 1
        self.frames: List[int] = []  # frame indices of the last chunk
        self.ids: List[int] = []  # track id of each tube of the last chunk
        self._masks: Optional[torch.Tensor] = None  # K×L×H×W masks of the last chunk

    def shared_frames(self, frames: Sequence[int]) -> List[int]:
        """The frames of ``frames`` that the last linked chunk also covered (in ``frames`` order)."""
        last = set(self.frames)
        return [int(t) for t in frames if int(t) in last]

    def link(self, frames: Sequence[int], masks: Masks, reference: Optional[Masks] = None) -> List[int]:
        """Track ids of the tubes of a new chunk.

        Args:
            frames: the chunk's frame indices (length L).
            masks: ``K×L×H×W`` bool masks of its K tubes.
            reference: what the previous tubes (``self.ids``, in that order) are matched against on the
                shared frames, ``len(self.ids)×S×H×W`` with S = ``len(self.shared_frames(frames))``; default:
                the previous chunk's own masks. The dense labelset passes the masks it has kept per track.

        Returns:
            ``K`` ids: the id of the matched previous tube, or a new id (next free, in tube order).
        """
        frames = [int(t) for t in frames]
        masks = _as_tensor(masks)
        if masks.ndim != 4 or masks.shape[1] != len(frames):
            raise ValueError(f"masks must be K×{len(frames)}×H×W for {len(frames)} frames, got {tuple(masks.shape)}")
        shared = self.shared_frames(frames)
        assign: Dict[int, int] = {}
        if shared and self.ids and masks.shape[0]:
            cur = masks[:, [frames.index(t) for t in shared]]
            if reference is None:
                assert self._masks is not None
                reference = self._masks[:, [self.frames.index(t) for t in shared]]
            reference = _as_tensor(reference)
            if reference.shape[0] != len(self.ids):
                raise ValueError(f"reference has {reference.shape[0]} tubes, the last chunk {len(self.ids)}")
            pairs = match_tubes(tube_iou(cur, reference.to(cur.device)), self.link_iou)
            assign = {k: self.ids[j] for k, j in pairs.items()}
        ids = []
        for k in range(masks.shape[0]):
            if k not in assign:
                assign[k] = self.next_id
                self.next_id += 1
            ids.append(assign[k])
        self.frames, self.ids, self._masks = frames, ids, masks
        return ids
