"""Linking mask tubes of overlapping chunks into video-wide tracks (SPEC §4, stage 4).

A video model predicts mask *tubes* for one chunk of frames at a time, and the same object gets an
arbitrary query slot in every chunk. Consecutive chunks share some frames, so a tube of the new chunk is
the continuation of the previous chunk's tube whose masks agree with it on the shared frames: mean IoU over
those frames, one-to-one by Hungarian assignment, accepted at IoU ≥ ``link_iou``.

Identities that survive a bad chunk (issue #16):

* **Two thresholds.** The caller says which tubes may *start* a track (``starts``: confident tubes, score
  ≥ ``score_threshold`` in :class:`~s2d.infer.SegmentConfig`). A tube that may not start one is kept only if
  it continues a track, so an object whose score dips just under the start threshold for a chunk keeps its id
  instead of vanishing, while weak tubes never create objects.
* **Track memory.** A track missing from a chunk is remembered for ``memory`` chunks with its last mask. A
  tube that continues no live track but overlaps a remembered track's last mask by ≥ ``link_iou`` (on the
  first frame the tube has pixels) takes that track's id back: an object missed for a chunk or two returns under its old
  id. Beyond ``memory`` chunks the id is never given out again.

* **Adjacent chunks.** Chunks that share no frame (``overlap=0``, as in online mode, one frame per chunk) are
  linked by the IoU of the last chunk's masks on its last frame with the new tubes' masks on their first frame,
  when those frames are consecutive.
* **Query embeddings.** With ``embed_weight`` λ > 0 and the tubes' query embeddings given (unit vectors, from
  :meth:`s2d.model.VideoMask2Former.predict`), the similarity of a tube and a track is ``(1 − λ)·IoU +
  λ·max(0, cos)``, where the track's embedding is a running mean of its tubes' (momentum
  :data:`EMBED_MOMENTUM`); acceptance is still at ``link_iou``. An object that moved while it was missed can
  then be recognised by what it looks like to the model, not only by where it was.

Track ids count up from 1 in first-seen order.

The same :class:`TubeLinker` serves streaming inference (:mod:`s2d.infer.predictor`) and, through it, the
dense labelset (:func:`s2d.train.dense.predict_video_dense`).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from s2d.errors import SettingError

__all__ = ["EMBED_MOMENTUM", "TubeLinker", "match_tubes", "tube_iou"]

#: weight of a track's previous embedding when a new tube continues it (running mean over its chunks)
EMBED_MOMENTUM = 0.7

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


def group_duplicates(masks: Masks, scores: Sequence[float], max_iou: float) -> Dict[int, List[int]]:
    """Non-maximum suppression of tubes, for a model that puts two queries on one object: ``{kept: [absorbed]}``,
    kept tubes in the given order. Going down the scores, a tube whose mean IoU with a kept tube exceeds
    ``max_iou`` is absorbed by the best such tube; the others are kept. ``max_iou`` ≥ 1 keeps all."""
    n = len(scores)
    if max_iou >= 1.0 or n < 2:
        return {k: [] for k in range(n)}
    iou = tube_iou(masks, masks)
    groups: Dict[int, List[int]] = {}
    for k in sorted(range(n), key=lambda i: -float(scores[i])):
        over = [j for j in groups if iou[k, j] > max_iou]
        if over:
            groups[max(over, key=lambda j: iou[k, j])].append(k)
        else:
            groups[k] = []
    return {k: groups[k] for k in sorted(groups)}


class TubeLinker:
    """Give the tubes of consecutive chunks video-wide track ids.

    Call :meth:`link` once per chunk, in video order, with the chunk's frame indices and its tubes' masks.
    The linker remembers the last chunk (its frames, tube ids and masks: memory of one chunk) and, for
    ``memory`` chunks, the last mask of each track that went missing; it matches the new chunk's tubes to
    them and returns one id per tube.

    Args:
        link_iou: smallest mean IoU over the shared frames that continues a track (0 < link_iou ≤ 1).
        memory: chunks a track that went missing stays linkable (0: a missed chunk ends it).
        embed_weight: λ, the weight of the query-embedding similarity in the linking score (0: masks only).
        birth_overlap: a tube that continues no track starts a new one only when at most this share of its
            pixels lies under the chunk's other kept tubes (those continuing tracks, then earlier new ones):
            a second query on an object already tracked does not become a second id. 1: never suppressed.

    Example::

        linker = TubeLinker(0.3)
        ids = linker.link([0, 1, 2, 3], masks_a)   # first chunk: new ids 1..K
        ids = linker.link([2, 3, 4, 5], masks_b)   # matched on frames 2-3, others get fresh ids
    """

    def __init__(self, link_iou: float = 0.3, memory: int = 0, embed_weight: float = 0.0,
                 birth_overlap: float = 1.0) -> None:
        if not 0.0 < float(link_iou) <= 1.0:
            raise SettingError(f"link_iou must be in (0, 1], got {link_iou!r}")
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 0:
            raise SettingError(f"track memory must be an integer >= 0 (chunks), got {memory!r}")
        if not 0.0 <= float(embed_weight) <= 1.0:
            raise SettingError(f"link embedding weight must be in [0, 1], got {embed_weight!r}")
        if not 0.0 < float(birth_overlap) <= 1.0:
            raise SettingError(f"birth overlap must be in (0, 1], got {birth_overlap!r}")
        self.birth_overlap = float(birth_overlap)
        self.link_iou = float(link_iou)
        self.memory = memory
        self.embed_weight = float(embed_weight)
        self._embeds: Dict[int, torch.Tensor] = {}  # track id -> running mean of its tubes' embeddings
        self.next_id = 1
        self.frames: List[int] = []  # frame indices of the last chunk
        self.ids: List[int] = []  # track id of each kept tube of the last chunk
        self._masks: Optional[torch.Tensor] = None  # K×L×H×W masks of the last chunk's kept tubes
        self._chunk = 0  # chunks linked so far
        # track id -> (chunk it was last kept in, its mask on its last frame with pixels, h×w): tracks that
        # went missing
        self._ended: Dict[int, Tuple[int, torch.Tensor]] = {}

    def shared_frames(self, frames: Sequence[int]) -> List[int]:
        """The frames of ``frames`` that the last linked chunk also covered (in ``frames`` order)."""
        last = set(self.frames)
        return [int(t) for t in frames if int(t) in last]

    def link(self, frames: Sequence[int], masks: Masks, *, starts: Optional[Sequence[bool]] = None,
             limit: Optional[int] = None, embeds: Optional[torch.Tensor] = None) -> List[int]:
        """Track ids of the tubes of a new chunk.

        Args:
            frames: the chunk's frame indices (length L).
            masks: ``K×L×H×W`` bool masks of its K tubes, best first.
            starts: per tube, whether it may start a new track (default: all may). A tube that may not and
                continues no track gets id 0: it is dropped.
            limit: keep at most this many tubes (the first ones, in the given order, among those not dropped).
            embeds: ``K×C`` unit query embeddings of the tubes (used when ``embed_weight`` > 0).

        Returns:
            ``K`` ids: the id of the continued track, a new id (next free, in tube order), or 0 (dropped).
        """
        frames = [int(t) for t in frames]
        masks = _as_tensor(masks)
        if masks.ndim != 4 or masks.shape[1] != len(frames):
            raise ValueError(f"masks must be K×{len(frames)}×H×W for {len(frames)} frames, got {tuple(masks.shape)}")
        n = masks.shape[0]
        starts = [True] * n if starts is None else [bool(s) for s in starts]
        if len(starts) != n:
            raise ValueError(f"starts has {len(starts)} entries for {n} tubes")
        if embeds is not None and (embeds.ndim != 2 or embeds.shape[0] != n):
            raise ValueError(f"embeds must be {n}×C for {n} tubes, got {tuple(embeds.shape)}")
        emb = embeds.detach().float().cpu() if embeds is not None and self.embed_weight > 0 else None
        assign = self._continue_live(frames, masks, emb)
        assign.update(self._continue_ended(masks, [k for k in range(n) if k not in assign], emb))
        ids: List[int] = []
        kept = 0
        taken = self._taken(masks, assign)
        for k in range(n):
            tid = assign.get(k)
            if (limit is not None and kept >= limit) or (tid is None and not starts[k]):
                ids.append(0)
                continue
            if tid is None:
                if taken is not None and self._inside(masks[k], taken):
                    ids.append(0)
                    continue
                tid, self.next_id = self.next_id, self.next_id + 1
                if taken is not None:
                    taken |= masks[k].bool()
            ids.append(tid)
            kept += 1
            if emb is not None:
                old = self._embeds.get(tid)
                new = emb[k] if old is None else EMBED_MOMENTUM * old + (1 - EMBED_MOMENTUM) * emb[k]
                self._embeds[tid] = new / new.norm().clamp(min=1e-6)
        self._remember(frames, masks, ids)
        return ids

    def _taken(self, masks: torch.Tensor, assign: Dict[int, int]) -> Optional[torch.Tensor]:
        """``L×H×W`` union of the tubes that continue tracks (``None`` when births are never suppressed)."""
        if self.birth_overlap >= 1.0:
            return None
        taken = torch.zeros(masks.shape[1:], dtype=torch.bool, device=masks.device)
        for k in assign:
            taken |= masks[k].bool()
        return taken

    def _inside(self, tube: torch.Tensor, taken: torch.Tensor) -> bool:
        """Whether more than ``birth_overlap`` of the tube's pixels lie under ``taken``."""
        area = int(tube.sum())
        return area > 0 and int((tube.bool() & taken).sum()) > self.birth_overlap * area

    def _score(self, iou: np.ndarray, emb: Optional[torch.Tensor], tracks: Sequence[int],
               rows: Sequence[int]) -> np.ndarray:
        """Linking scores of tubes ``rows`` (of ``emb``) against ``tracks``: IoU, blended with the embedding
        similarity where both sides have one."""
        if emb is None or not rows:
            return iou
        have = [t in self._embeds for t in tracks]
        if not any(have):
            return iou
        ref = torch.stack([self._embeds.get(t, torch.zeros(emb.shape[1])) for t in tracks])
        cos = (emb[list(rows)] @ ref.T).clamp(min=0).numpy()
        lam = self.embed_weight
        return np.where(np.asarray(have)[None], (1 - lam) * iou + lam * cos, iou)

    def _continue_live(self, frames: List[int], masks: torch.Tensor, emb: Optional[torch.Tensor]) -> Dict[int, int]:
        """``{tube: id}`` of the tubes that continue a track of the last chunk: IoU on the shared frames, or
        from the last chunk's last frame to the new first frame when the chunks are adjacent."""
        if not (self.ids and masks.shape[0]):
            return {}
        assert self._masks is not None  # set with self.ids
        shared = self.shared_frames(frames)
        if shared:
            cur = masks[:, [frames.index(t) for t in shared]]
            reference = self._masks[:, [self.frames.index(t) for t in shared]]
        elif frames[0] == self.frames[-1] + 1:
            cur, reference = masks[:, :1], self._masks[:, -1:]
        else:
            return {}
        iou = tube_iou(cur, reference.to(cur.device))
        pairs = match_tubes(self._score(iou, emb, self.ids, range(masks.shape[0])), self.link_iou)
        return {k: self.ids[j] for k, j in pairs.items()}

    def _continue_ended(self, masks: torch.Tensor, free: List[int], emb: Optional[torch.Tensor]) -> Dict[int, int]:
        """``{tube: id}`` of free tubes whose first non-empty frame overlaps a remembered track's last mask."""
        recall = list(self._ended)  # _remember keeps only the tracks still within the memory
        if not (free and recall):
            return {}
        last = torch.stack([self._ended[tid][1] for tid in recall])[:, None]  # R×1×H×W
        sub = masks[free]
        at = sub.flatten(2).any(-1).to(torch.uint8).argmax(1)  # each tube's first frame with pixels
        first = sub[torch.arange(len(free)), at][:, None]  # F×1×H×W
        if first.shape[-2:] != last.shape[-2:]:
            return {}
        iou = tube_iou(first, last.to(first.device))
        pairs = match_tubes(self._score(iou, emb, recall, free), self.link_iou)
        return {free[k]: recall[j] for k, j in pairs.items()}

    def _remember(self, frames: List[int], masks: torch.Tensor, ids: List[int]) -> None:
        """Keep the chunk's kept tubes; tracks of the last chunk that were not continued become ended."""
        kept = [k for k, i in enumerate(ids) if i > 0]
        new_ids = [ids[k] for k in kept]
        if self.memory and self._masks is not None:
            for j, tid in enumerate(self.ids):
                if tid not in new_ids:  # kept in the last chunk, missing from this one: remember its last pixels
                    has = self._masks[j].flatten(1).any(-1).nonzero().flatten()
                    last = self._masks[j, int(has[-1]) if len(has) else -1]
                    self._ended[tid] = (self._chunk - 1, last.clone())
        self._chunk += 1
        # chunks missed so far by the next chunk's time: ``self._chunk - seen - 1``
        self._ended = {t: v for t, v in self._ended.items()
                       if t not in new_ids and self._chunk - v[0] - 1 <= self.memory}
        if self._embeds:  # only tracks that can still be continued keep an embedding
            alive = set(new_ids) | set(self._ended)
            self._embeds = {t: e for t, e in self._embeds.items() if t in alive}
        self.frames, self.ids, self._masks = frames, new_ids, masks[kept]
