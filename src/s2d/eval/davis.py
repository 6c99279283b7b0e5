"""DAVIS region (J), boundary (F) and J&F scores, equal to the official DAVIS-2017 evaluation.

The numbers must equal those of ``davisvideochallenge/davis2017-evaluation`` (SPEC §5, §9) on the
same loaded arrays, so this module reproduces its definitions, including their quirks:

* **J** is the IoU of one object's masks on one frame, with void pixels removed from both; a frame
  where the union is empty scores 1.
* **F** is the boundary F-measure. Boundaries are one pixel wide (the classic ``seg2bmap`` rule
  that compares each pixel with its right, lower and lower-right neighbours and treats the last
  row and column specially). They are matched within a radius of ``ceil(0.008 × image
  diagonal)`` pixels (8 px at 480×854) by dilating with a disk ``x² + y² ≤ r²`` through OpenCV.
  Void pixels are removed from the masks before the boundaries are drawn. Empty-boundary cases:
  both empty → 1; only one empty → 0.
* **Statistics** per object: Mean (NaN-ignoring), Recall (fraction of frames > 0.5) and Decay
  (mean of the first quarter minus mean of the last quarter). The official code stores the quarter
  edges as ``uint8``, so for more than 256 scored frames the edges wrap around modulo 256 and
  the Decay is taken on the wrong frames, often giving NaN. We reproduce that, and the report
  carries a warning when it happens.
* **Protocols.**
  ``unsupervised``: all frames, void used. Proposals are the predicted ids ``1..max id`` (at most
  20, including ids without pixels, like the official reader), padded with empty masks up to the
  number of GT objects. Every proposal is scored against every GT object, and the Hungarian
  method maximises the mean over frames of (J + F) / 2. A GT object left with a padding mask
  scores as an empty prediction.
  ``semi-supervised``: predicted id k is GT object k, missing ids are empty, the first and last
  frames are not scored and void is ignored (the official code passes no void for this task).
  ``union``: all predicted ids merged into one mask and scored like ``semi-supervised`` against
  the union of the GT objects. This is the DAVIS-2016 headline (SPEC §9), whose official toolkit
  also skipped the first and last frames.
* **GT objects** of a palette PNG sequence are the ids ``1..max id of the first frame``, as in
  the official loader. 255 is void, and ids that appear only later are ignored (with a warning).
  Binary DAVIS-2016 masks (any PNG that is not palette-indexed, or a palette PNG whose first
  frame holds only 0 and 255) have one object: every nonzero pixel.
* **Global scores**: each statistic is averaged over all objects of all sequences, and
  J&F-Mean = (J-Mean + F-Mean) / 2.

Where the official tool would stop (more than 20 proposals in the unsupervised task), we go on
and say so. We keep the 20 ids with the highest score, or the largest total area when no scores
are given, and add a warning to the report. A predicted id above 20 is accepted as long as at
most 20 ids are present.

Sequences are read one frame at a time. For each frame we keep only small per-id score rows, so
memory does not grow with the frame count times the number of ids.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union, cast

import cv2
import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

from s2d.errors import InputError

PathLike = Union[str, "os.PathLike[str]"]
Box = Optional[Tuple[int, int, int, int]]

__all__ = [
    "BOUND_TH",
    "MAX_PROPOSALS",
    "PROTOCOLS",
    "VOID_LABEL",
    "db_eval_boundary",
    "db_eval_iou",
    "db_statistics",
    "disk_kernel",
    "evaluate_davis",
    "evaluate_sequence",
    "f_measure",
    "format_davis_table",
    "frame_j",
    "normalize_protocol",
    "seg2bmap",
    "tolerance_radius",
]

BOUND_TH = 0.008
"""Boundary tolerance as a fraction of the image diagonal (official default)."""
MAX_PROPOSALS = 20
"""Most proposals per sequence the official unsupervised task accepts."""
VOID_LABEL = 255
"""Palette index of void pixels in DAVIS-2017 annotations."""
PROTOCOLS = ("unsupervised", "semi-supervised", "union")
GLOBAL_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")

_PROTOCOL_ALIASES = {
    "unsupervised": "unsupervised",
    "unsup": "unsupervised",
    "semi-supervised": "semi-supervised",
    "semi_supervised": "semi-supervised",
    "semisupervised": "semi-supervised",
    "semi": "semi-supervised",
    "union": "union",
}


def normalize_protocol(protocol: str) -> str:
    """Canonical protocol name; ``semi`` and ``semi_supervised`` are accepted for convenience."""
    key = str(protocol).strip().lower()
    if key not in _PROTOCOL_ALIASES:
        raise ValueError(f"unknown DAVIS protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    return _PROTOCOL_ALIASES[key]


# --------------------------------------------------------------------------------------------
# Per-frame metrics
# --------------------------------------------------------------------------------------------


def _as_bool(a: Any) -> np.ndarray:
    arr = np.asarray(a)
    return arr if arr.dtype == bool else arr.astype(bool)


def db_eval_iou(gt: np.ndarray, pred: np.ndarray, void: Optional[np.ndarray] = None) -> np.ndarray:
    """Region similarity J per frame: |G∩P| / |G∪P| over non-void pixels, 1 where G∪P is empty.

    Accepts ``(H, W)`` (returns a 0-d array) or ``(T, H, W)`` (returns ``(T,)``); any nonzero
    value counts as foreground. An empty union means "nothing to find and nothing found", which
    the official code counts as a perfect frame.
    """
    g, p = _as_bool(gt), _as_bool(pred)
    if g.shape != p.shape:
        raise ValueError(f"ground truth {g.shape} and prediction {p.shape} differ in shape")
    if void is not None:
        keep = ~_as_bool(void)
        if keep.shape != g.shape:
            raise ValueError(f"void {keep.shape} and ground truth {g.shape} differ in shape")
        g, p = g & keep, p & keep
    inter = np.count_nonzero(g & p, axis=(-2, -1))
    union = np.count_nonzero(g | p, axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        j = np.true_divide(inter, union)
    j = np.where(union == 0, 1.0, j).astype(np.float64)
    return j


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask (bool, same shape).

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour,
    so boundaries sit half a pixel towards the origin. Pixels outside the image count as
    background, with two exceptions taken from the original rule. On the last row only the right
    neighbour is compared, and in the last column only the lower one. The bottom-right pixel is
    never a boundary. As a result, a mask that touches the bottom or right edge gets no boundary
    along that edge. The official code calls this at the mask's own size, so its resampling
    branch never runs and there is nothing to reproduce from it.
    """
    seg = _as_bool(mask)
    if seg.ndim != 2:
        raise ValueError(f"seg2bmap expects an H×W mask, got shape {seg.shape}")
    right = np.zeros_like(seg)
    below = np.zeros_like(seg)
    diag = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    diag[:-1, :-1] = seg[1:, 1:]
    bmap = (seg != right) | (seg != below) | (seg != diag)
    bmap[-1, :] = seg[-1, :] != right[-1, :]
    bmap[:, -1] = seg[:, -1] != below[:, -1]
    bmap[-1, -1] = False
    return bmap


def tolerance_radius(shape: Tuple[int, int], bound_th: float = BOUND_TH) -> float:
    """Matching radius in pixels: ``bound_th`` itself when ≥ 1, else ceil(bound_th × diagonal)."""
    if bound_th >= 1:
        return float(bound_th)
    h, w = int(shape[0]), int(shape[1])
    return float(math.ceil(bound_th * math.sqrt(h * h + w * w)))


_DISK_CACHE: Dict[float, np.ndarray] = {}


def disk_kernel(radius: float) -> np.ndarray:
    """Disk structuring element (uint8) on the grid ``-r, -r+1, ... ≤ r``: ``x² + y² ≤ r²``.

    The grid starts at ``-r`` even for a fractional radius. That yields an even-sized,
    off-centre kernel, and the official results depend on it when ``bound_th ≥ 1`` is not an
    integer, so the grid is kept as is.
    """
    key = float(radius)
    kernel = _DISK_CACHE.get(key)
    if kernel is None:
        axis = np.arange(-key, key + 1)
        xx, yy = np.meshgrid(axis, axis)
        kernel = ((xx**2 + yy**2) <= key**2).astype(np.uint8)
        _DISK_CACHE[key] = kernel
    return kernel


def _f_from_counts(fg_match: int, n_fg: int, gt_match: int, n_gt: int) -> float:
    """Boundary F from match counts, with the official empty-boundary conventions."""
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0  # precision or recall is 0 while the other is 1
    precision = fg_match / float(n_fg)
    recall = gt_match / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def f_measure(
    pred: np.ndarray, gt: np.ndarray, void: Optional[np.ndarray] = None, bound_th: float = BOUND_TH
) -> float:
    """Boundary F-measure of one frame (prediction first, as in the official ``f_measure``)."""
    p, g = _as_bool(pred), _as_bool(gt)
    if p.ndim != 2 or p.shape != g.shape:
        raise ValueError(f"f_measure expects two H×W masks of one shape, got {p.shape} and {g.shape}")
    if void is not None:
        keep = ~_as_bool(void)
        p, g = p & keep, g & keep
    kernel = disk_kernel(tolerance_radius(p.shape, bound_th))
    pb, gb = seg2bmap(p), seg2bmap(g)
    pd = cv2.dilate(pb.view(np.uint8), kernel) > 0
    gd = cv2.dilate(gb.view(np.uint8), kernel) > 0
    return _f_from_counts(
        int(np.count_nonzero(pb & gd)), int(np.count_nonzero(pb)), int(np.count_nonzero(gb & pd)), int(np.count_nonzero(gb))
    )


def db_eval_boundary(
    gt: np.ndarray, pred: np.ndarray, void: Optional[np.ndarray] = None, bound_th: float = BOUND_TH
) -> np.ndarray:
    """Boundary F per frame for ``(T, H, W)`` stacks (``(T,)`` float64); ``(H, W)`` gives a 0-d array."""
    g, p = np.asarray(gt), np.asarray(pred)
    if g.shape != p.shape:
        raise ValueError(f"ground truth {g.shape} and prediction {p.shape} differ in shape")
    if void is not None and np.shape(void) != g.shape:
        raise ValueError(f"void {np.shape(void)} and ground truth {g.shape} differ in shape")
    if g.ndim == 2:
        return np.asarray(f_measure(p, g, void, bound_th), dtype=np.float64)
    if g.ndim != 3:
        raise ValueError(f"db_eval_boundary expects H×W or T×H×W arrays, got {g.ndim} dimensions")
    out = np.zeros(g.shape[0], dtype=np.float64)
    for t in range(g.shape[0]):
        out[t] = f_measure(p[t], g[t], None if void is None else void[t], bound_th)
    return out


def db_statistics(values: Union[Sequence[float], np.ndarray]) -> Tuple[float, float, float]:
    """(Mean, Recall, Decay) of one object's per-frame scores, as the official ``db_statistics``.

    Recall counts NaN frames as misses. Decay splits the frames into 4 overlapping quarters whose
    edges are ``round(linspace(1, T, 5)) - 1``. Each quarter includes its end edge. The official
    code stores the edges as ``uint8``, so for T > 256 they wrap modulo 256, and so does
    ``edge + 1`` under NumPy ≥ 2. We reproduce both so that long videos score the same.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    n = v.size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(v)) if n else float("nan")
        recall = float(np.mean(v > 0.5)) if n else float("nan")
        edges = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64) % 256
        first = v[int(edges[0]) : (int(edges[1]) + 1) % 256]
        last = v[int(edges[3]) : (int(edges[4]) + 1) % 256]
        m_first = float(np.nanmean(first)) if first.size else float("nan")
        m_last = float(np.nanmean(last)) if last.size else float("nan")
    return mean, recall, m_first - m_last


# --------------------------------------------------------------------------------------------
# Frame-by-frame pairwise scoring (shared by the array API and the folder evaluator)
# --------------------------------------------------------------------------------------------


def _bbox(mask: np.ndarray) -> Box:
    """(y0, y1, x0, x1) half-open bounding box of a bool mask, or None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _grow(box: Tuple[int, int, int, int], r: int, shape: Tuple[int, ...]) -> Tuple[int, int, int, int]:
    return max(0, box[0] - r), min(shape[0], box[1] + r), max(0, box[2] - r), min(shape[1], box[3] + r)


@dataclass
class _Crop:
    """A bool array that covers ``box`` (y0, y1, x0, x1) of the frame; everything outside is False."""

    arr: np.ndarray
    box: Tuple[int, int, int, int]


def _overlap_count(a: Optional[_Crop], b: Optional[_Crop]) -> int:
    """|a ∧ b| over the frame, computed on the intersection of the two crops (exact)."""
    if a is None or b is None:
        return 0
    y0, y1 = max(a.box[0], b.box[0]), min(a.box[1], b.box[1])
    x0, x1 = max(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    if y0 >= y1 or x0 >= x1:
        return 0
    wa = a.arr[y0 - a.box[0] : y1 - a.box[0], x0 - a.box[2] : x1 - a.box[2]]
    wb = b.arr[y0 - b.box[0] : y1 - b.box[0], x0 - b.box[2] : x1 - b.box[2]]
    return int(np.count_nonzero(wa & wb))


@dataclass
class _MaskFeatures:
    """What pairwise J and F need from one mask on one frame (computed once, reused per pair)."""

    mask: Optional[_Crop]  # void removed; None when empty
    area: int
    bnd: Optional[_Crop]  # one-pixel boundary
    n_bnd: int
    dil: Optional[_Crop]  # boundary dilated by the tolerance disk


_EMPTY = _MaskFeatures(None, 0, None, 0, None)


def _features(mask: np.ndarray, keep: Optional[np.ndarray], kernel: np.ndarray, grow: int) -> _MaskFeatures:
    """Crop-local boundary and dilation, equal to the full-frame ones.

    Why crops are exact: ``seg2bmap`` looks only at the right, lower and lower-right neighbours,
    and its special last-row and last-column rules give False on all-background rows. A crop
    grown by one pixel around the mask, clipped to the frame, therefore reproduces the full-frame
    boundary. Its last row or column is either the frame's own (same rule) or background (no
    boundary either way). Likewise, dilation cannot reach farther than the kernel size, and
    OpenCV ignores pixels outside the image when dilating. This makes the per-frame cost scale
    with object size, not frame size.
    """
    m = mask if keep is None else (mask & keep)
    box = _bbox(m)
    if box is None:
        return _EMPTY
    shape = m.shape
    crop = m[box[0] : box[1], box[2] : box[3]]
    bbox = _grow(box, 1, shape)
    bnd = seg2bmap(m[bbox[0] : bbox[1], bbox[2] : bbox[3]])
    dbox = _grow(bbox, grow, shape)
    padded = np.zeros((dbox[1] - dbox[0], dbox[3] - dbox[2]), np.uint8)
    padded[bbox[0] - dbox[0] : bbox[1] - dbox[0], bbox[2] - dbox[2] : bbox[3] - dbox[2]] = bnd
    dil = cv2.dilate(padded, kernel) > 0
    return _MaskFeatures(
        _Crop(crop, box),
        int(np.count_nonzero(crop)),
        _Crop(bnd, bbox),
        int(np.count_nonzero(bnd)),
        _Crop(dil, dbox),
    )


def _pair_scores(g: _MaskFeatures, p: _MaskFeatures) -> Tuple[float, float]:
    """(J, F) of prediction features ``p`` against GT features ``g`` on one frame."""
    inter = _overlap_count(g.mask, p.mask)
    union = g.area + p.area - inter
    j = 1.0 if union == 0 else inter / union
    fg_match = _overlap_count(p.bnd, g.dil)
    gt_match = _overlap_count(g.bnd, p.dil)
    return j, _f_from_counts(fg_match, p.n_bnd, gt_match, g.n_bnd)


class _SequenceScorer:
    """Accumulates per-frame J and F of predicted ids against GT objects, one frame at a time.

    Rows are kept only for ids that have pixels somewhere. On frames where an id has no pixels, its
    scores equal those of an empty mask, which depend only on the GT object. Those values are kept
    once per GT object, so that ids without pixels (and padding) cost nothing.
    """

    def __init__(self, n_gt: int, n_frames: int, pairs: str, bound_th: float = BOUND_TH) -> None:
        self.n_gt = n_gt
        self.n_frames = n_frames
        self.pairs = pairs  # "all" or "diagonal" (id k only against GT object k)
        self.bound_th = bound_th
        self.empty_j = np.ones((n_gt, n_frames), dtype=np.float64)
        self.empty_f = np.ones((n_gt, n_frames), dtype=np.float64)
        self.rows_j: Dict[int, np.ndarray] = {}
        self.rows_f: Dict[int, np.ndarray] = {}
        self.present: Dict[int, np.ndarray] = {}
        self.area: Dict[int, int] = {}
        self._kernel_for: Dict[Tuple[int, int], Tuple[np.ndarray, int]] = {}
        self.t = 0

    def _kernel(self, shape: Tuple[int, int]) -> Tuple[np.ndarray, int]:
        got = self._kernel_for.get(shape)
        if got is None:
            radius = tolerance_radius(shape, self.bound_th)
            kernel = disk_kernel(radius)
            got = (kernel, int(kernel.shape[0]))  # grow boxes by the full kernel size: always enough
            self._kernel_for[shape] = got
        return got

    def add_frame(
        self, gt_masks: Sequence[np.ndarray], pred_masks: Mapping[int, np.ndarray], void: Optional[np.ndarray]
    ) -> None:
        """Score one frame. ``pred_masks`` maps a proposal key to its bool mask; empty ones may be omitted."""
        t = self.t
        if t >= self.n_frames:
            raise RuntimeError("more frames added than announced")
        self.t += 1
        if len(gt_masks) != self.n_gt:
            raise ValueError(f"expected {self.n_gt} GT masks, got {len(gt_masks)}")
        shape = None
        for m in list(gt_masks) + list(pred_masks.values()):
            shape = m.shape if shape is None else shape
            if m.shape != shape:
                raise ValueError(f"masks of one frame differ in shape: {shape} vs {m.shape}")
        if shape is None:
            return
        kernel, grow = self._kernel(shape)
        keep = None if void is None else ~_as_bool(void)
        gts = [_features(_as_bool(m), keep, kernel, grow) for m in gt_masks]
        for n, g in enumerate(gts):
            self.empty_j[n, t] = 1.0 if g.area == 0 else 0.0
            self.empty_f[n, t] = 1.0 if g.n_bnd == 0 else 0.0
        for key, mask in pred_masks.items():
            m = _as_bool(mask)
            if self.pairs == "diagonal" and not (1 <= key <= self.n_gt):
                continue
            raw_area = int(np.count_nonzero(m))
            if raw_area == 0:
                continue
            p = _features(m, keep, kernel, grow)
            self.area[key] = self.area.get(key, 0) + raw_area
            if key not in self.rows_j:
                self.rows_j[key] = np.full((self.n_gt, self.n_frames), np.nan)
                self.rows_f[key] = np.full((self.n_gt, self.n_frames), np.nan)
                self.present[key] = np.zeros(self.n_frames, dtype=bool)
            self.present[key][t] = True
            targets = range(self.n_gt) if self.pairs == "all" else [key - 1]
            for n in targets:
                j, f = _pair_scores(gts[n], p)
                self.rows_j[key][n, t] = j
                self.rows_f[key][n, t] = f

    def rows(self, key: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
        """(N, T) J and F of proposal ``key`` against every GT object; None = an empty proposal."""
        j, f = self.empty_j.copy(), self.empty_f.copy()
        if key is not None and key in self.present:
            on = self.present[key]
            j[:, on] = self.rows_j[key][:, on]
            f[:, on] = self.rows_f[key][:, on]
        return j, f


def _object_stats(j: np.ndarray, f: np.ndarray) -> Dict[str, float]:
    jm, jr, jd = db_statistics(j)
    fm, fr, fd = db_statistics(f)
    return {
        "J&F-Mean": (jm + fm) / 2,
        "J-Mean": jm,
        "J-Recall": jr,
        "J-Decay": jd,
        "F-Mean": fm,
        "F-Recall": fr,
        "F-Decay": fd,
    }


def _match(scorer: _SequenceScorer, keys: List[int], protocol: str) -> Dict[str, Any]:
    """Assign proposals to GT objects per protocol; returns per-object scores and the matching."""
    n_gt = scorer.n_gt
    if protocol == "unsupervised":
        slots: List[Optional[int]] = list(keys) + [None] * max(0, n_gt - len(keys))
        j_all = np.zeros((len(slots), n_gt, scorer.n_frames))
        f_all = np.zeros((len(slots), n_gt, scorer.n_frames))
        for s, key in enumerate(slots):
            j_all[s], f_all[s] = scorer.rows(key)
        # The same float64 arithmetic as the official cost, so that ties break the same way.
        cost = (np.mean(j_all, axis=2) + np.mean(f_all, axis=2)) / 2
        rows, cols = linear_sum_assignment(-cost) if n_gt else (np.zeros(0, int), np.zeros(0, int))
        assigned = {int(c): int(r) for r, c in zip(rows, cols)}
        per_j = np.zeros((n_gt, scorer.n_frames))
        per_f = np.zeros((n_gt, scorer.n_frames))
        matched: List[Optional[int]] = []
        for n in range(n_gt):
            s = assigned[n]
            per_j[n], per_f[n] = j_all[s, n], f_all[s, n]
            matched.append(slots[s])
    else:  # semi-supervised and union: proposal k is object k
        per_j = np.zeros((n_gt, scorer.n_frames))
        per_f = np.zeros((n_gt, scorer.n_frames))
        matched = []
        for n in range(n_gt):
            j, f = scorer.rows(n + 1)
            per_j[n], per_f[n] = j[n], f[n]
            matched.append(n + 1)
    objects = []
    for n in range(n_gt):
        row: Dict[str, Any] = {"object": n + 1, "matched_id": matched[n]}
        row.update(_object_stats(per_j[n], per_f[n]))
        objects.append(row)
    return {"objects": objects, "J": per_j, "F": per_f, "matching": {n + 1: matched[n] for n in range(n_gt)}}


def _scored_frames(n_frames: int, protocol: str) -> List[int]:
    """Frame indices the protocol scores: semi-supervised and union skip the first and last."""
    if protocol == "unsupervised":
        return list(range(n_frames))
    return list(range(1, n_frames - 1))


def evaluate_sequence(
    gt_masks: np.ndarray,
    pred_masks: np.ndarray,
    protocol: str,
    void: Optional[np.ndarray] = None,
) -> Dict[str, Any]:
    """Score one sequence given per-object mask stacks.

    Args:
        gt_masks: ``(N, T, H, W)`` GT objects (object k+1 is ``gt_masks[k]``).
        pred_masks: ``(M, T, H, W)`` predictions; ``pred_masks[m]`` is predicted id m+1. As in the
            official reader, the proposals are ids 1..(largest id with pixels on a scored frame):
            empty rows below it stay (as empty proposals), empty rows above it are dropped.
        protocol: ``unsupervised``, ``semi-supervised`` or ``union``.
        void: optional ``(T, H, W)`` void pixels (used by the unsupervised protocol only, as in
            the official evaluation).

    Returns:
        ``objects``: one dict per GT object (``object``, ``matched_id``, Mean/Recall/Decay of J and F,
        J&F-Mean); ``J``/``F``: ``(N, T')`` per-frame scores on the scored frames; ``frames``: the scored
        frame indices; ``matching``: GT object → predicted id (None = unmatched, scored as empty).
    """
    protocol = normalize_protocol(protocol)
    gt = np.asarray(gt_masks)
    pred = np.asarray(pred_masks)
    if gt.ndim != 4:
        raise ValueError(f"gt_masks must be (N, T, H, W), got shape {gt.shape}")
    if pred.ndim != 4:
        raise ValueError(f"pred_masks must be (M, T, H, W), got shape {pred.shape}")
    if pred.shape[1:] != gt.shape[1:]:
        raise ValueError(f"prediction frames {pred.shape[1:]} differ from GT frames {gt.shape[1:]}")
    n_frames = gt.shape[1]
    if protocol == "union":
        gt = cast(np.ndarray, gt.any(axis=0, keepdims=True))
        pred = cast(np.ndarray, pred.any(axis=0, keepdims=True))
    frames = _scored_frames(n_frames, protocol)
    n_gt = gt.shape[0]
    # Like the official reader, the proposals are ids 1..(largest id with pixels on a scored frame).
    has_pixels = pred[:, frames].any(axis=(1, 2, 3)) if frames else np.zeros(pred.shape[0], bool)
    n_pred = int(np.flatnonzero(has_pixels)[-1]) + 1 if has_pixels.any() else 0
    if protocol == "semi-supervised" and n_pred > n_gt:
        raise InputError(None, f"prediction has id {n_pred} but the ground truth has {n_gt} object(s); "
                         "the semi-supervised protocol maps id k to object k")
    if protocol == "unsupervised" and n_pred > MAX_PROPOSALS:
        raise InputError(None, f"{n_pred} proposals, more than the {MAX_PROPOSALS} the unsupervised protocol allows")
    use_void = void if protocol == "unsupervised" else None
    if use_void is not None:
        use_void = _as_bool(use_void)
        if use_void.shape != gt.shape[1:]:
            raise ValueError(f"void must be (T, H, W) = {gt.shape[1:]}, got {use_void.shape}")
    scorer = _SequenceScorer(n_gt, len(frames), "all" if protocol == "unsupervised" else "diagonal")
    for t in frames:
        scorer.add_frame(
            [gt[n, t] for n in range(n_gt)],
            {m + 1: pred[m, t] for m in range(n_pred)},
            None if use_void is None else use_void[t],
        )
    keys = list(range(1, n_pred + 1)) if protocol == "unsupervised" else list(range(1, n_gt + 1))
    result = _match(scorer, keys, protocol)
    result["frames"] = frames
    result["protocol"] = protocol
    return result


# --------------------------------------------------------------------------------------------
# Folder loading
# --------------------------------------------------------------------------------------------


def _png_stems(folder: Path) -> List[str]:
    """Sorted frame names (without .png) in a folder; hidden files (atomic-write temps) are skipped."""
    return sorted(p.stem for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith(".") and p.is_file())


def _read_png(path: Path) -> Tuple[np.ndarray, str]:
    """(array, PIL mode) of a PNG, or InputError naming the file."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.array(im)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(path, f"cannot read PNG ({exc})") from None
    return arr, mode


def _read_pred_labels(path: Path, shape: Tuple[int, int]) -> np.ndarray:
    if not path.is_file():
        raise InputError(path, "missing prediction frame (one indexed PNG per annotated frame is needed)")
    arr, mode = _read_png(path)
    if arr.ndim != 2:
        raise InputError(path, f"prediction must be an indexed (palette) or grayscale PNG, got mode {mode}")
    if arr.shape != tuple(shape):
        raise InputError(path, f"prediction is {arr.shape[1]}x{arr.shape[0]} but the annotation is {shape[1]}x{shape[0]}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and arr.min() < 0:
        raise InputError(path, "prediction has negative ids")
    return arr


@dataclass
class _GTSequence:
    """A GT sequence folder: frame names, whether it is palette-indexed, and its object count."""

    folder: Path
    frames: List[str]
    palette: bool
    n_objects: int
    shape: Tuple[int, int]
    notes: List[str] = field(default_factory=list)

    def load(self, t: int) -> Tuple[List[np.ndarray], Optional[np.ndarray], np.ndarray]:
        """(object masks, void mask or None, raw labels) of frame ``t``."""
        path = self.folder / f"{self.frames[t]}.png"
        arr, mode = _read_png(path)
        if arr.ndim == 3:  # RGB(A) binary masks: any channel nonzero
            if self.palette:
                raise InputError(path, f"annotation mode {mode} differs from the sequence's first frame (P)")
            arr = cast(np.ndarray, arr.any(axis=2))
        if arr.shape != self.shape:
            raise InputError(path, f"annotation is {arr.shape[1]}x{arr.shape[0]}, the first frame is {self.shape[1]}x{self.shape[0]}")
        if not self.palette:
            return [arr != 0], None, arr
        void = arr == VOID_LABEL
        return [arr == k for k in range(1, self.n_objects + 1)], void, arr


def _open_gt_sequence(folder: Path) -> _GTSequence:
    if not folder.is_dir():
        raise InputError(folder, "ground-truth sequence folder not found")
    frames = _png_stems(folder)
    if not frames:
        raise InputError(folder, "no PNG annotations in this folder")
    first, mode = _read_png(folder / f"{frames[0]}.png")
    if first.ndim == 3:
        first = cast(np.ndarray, first.any(axis=2))
    values = np.unique(first)
    only_binary_values = bool(np.all((values == 0) | (values == VOID_LABEL)) and (values == VOID_LABEL).any())
    palette = mode == "P" and not only_binary_values
    n_objects = 1
    if palette:
        ids = values[(values != 0) & (values != VOID_LABEL)]
        n_objects = int(ids.max()) if ids.size else 0
    return _GTSequence(folder, frames, palette, n_objects, tuple(first.shape[:2]))


def _resolve_gt_dir(gt_root: Path, protocol: str) -> Path:
    """The folder that holds one sub-folder per sequence.

    A DAVIS root is recognised by its ``Annotations/480p`` folder (for the unsupervised task,
    ``Annotations_unsupervised/480p`` wins when present, as in the official code). Any other
    folder is taken to hold the sequence folders directly. The decision looks only at which
    folders exist.
    """
    if not gt_root.is_dir():
        raise InputError(gt_root, "ground-truth folder not found")
    if protocol == "unsupervised" and (gt_root / "Annotations_unsupervised" / "480p").is_dir():
        return gt_root / "Annotations_unsupervised" / "480p"
    if (gt_root / "Annotations" / "480p").is_dir():
        return gt_root / "Annotations" / "480p"
    return gt_root


def _resolve_pred_dir(pred_root: Path, seq: str) -> Path:
    """``PRED/<seq>/davis`` (the ``s2d segment`` layout) when it exists, else ``PRED/<seq>``."""
    base = pred_root / seq
    if (base / "davis").is_dir():
        return base / "davis"
    if not base.is_dir():
        raise InputError(base, f"missing prediction folder for sequence {seq!r}")
    return base


def _select_proposals(
    seq: str, scorer: _SequenceScorer, max_id: int, scores: Optional[Mapping[Any, float]], warn: List[str]
) -> List[int]:
    """Proposal ids for the unsupervised protocol (see module docstring)."""
    if max_id <= MAX_PROPOSALS:
        return list(range(1, max_id + 1))  # official: every id up to the largest, even if empty
    present = sorted(scorer.area)
    if len(present) <= MAX_PROPOSALS:
        return present

    def rank(i: int) -> Tuple[float, int, int]:
        s = None
        if scores is not None:
            s = scores.get(i, scores.get(str(i)))
        return (float(s) if s is not None else -math.inf, scorer.area[i], -i)

    keep = sorted(sorted(present, key=rank, reverse=True)[:MAX_PROPOSALS])
    dropped = sorted(set(present) - set(keep))
    by = "score" if scores else "total area"
    warn.append(
        f"{seq}: {len(present)} predicted ids, kept the {MAX_PROPOSALS} with the highest {by} "
        f"(the official unsupervised protocol takes at most {MAX_PROPOSALS}); dropped ids {dropped}"
    )
    return keep


def _evaluate_folder_sequence(
    seq: str,
    gt_dir: Path,
    pred_root: Path,
    protocol: str,
    scores: Optional[Mapping[Any, float]],
    warn: List[str],
) -> Dict[str, Any]:
    gt = _open_gt_sequence(gt_dir / seq)
    pred_dir = _resolve_pred_dir(pred_root, seq)
    frames = _scored_frames(len(gt.frames), protocol)
    n_gt = 1 if protocol == "union" else gt.n_objects
    pairs = "all" if protocol == "unsupervised" else "diagonal"
    scorer = _SequenceScorer(n_gt, len(frames), pairs)
    max_id = 0
    late_ids: set = set()
    for t in frames:
        objs, void, raw = gt.load(t)
        if gt.palette:
            extra = np.unique(raw[(raw > gt.n_objects) & (raw != VOID_LABEL)])
            late_ids.update(int(v) for v in extra)
        labels = _read_pred_labels(pred_dir / f"{gt.frames[t]}.png", gt.shape)
        if protocol == "union":
            objs = [np.logical_or.reduce(objs)] if objs else [np.zeros(gt.shape, dtype=bool)]
            preds = {1: labels != 0}
            scorer.add_frame(objs, preds, None)
            continue
        ids = np.unique(labels)
        ids = ids[ids != 0]
        if ids.size:
            max_id = max(max_id, int(ids[-1]))
        if protocol == "semi-supervised" and max_id > n_gt:
            raise InputError(
                pred_dir / f"{gt.frames[t]}.png",
                f"predicted id {max_id} but the ground truth of {seq!r} has {n_gt} object(s); the semi-supervised "
                "protocol maps id k to object k (use protocol 'unsupervised' or 'union')",
            )
        preds = {int(i): labels == i for i in ids}
        scorer.add_frame(objs, preds, void if protocol == "unsupervised" else None)
    if late_ids:
        warn.append(
            f"{seq}: GT ids {sorted(late_ids)} do not occur on the first frame and are not scored "
            "(the official loader takes the objects of the first frame)"
        )
    if len(frames) > 256:
        warn.append(f"{seq}: {len(frames)} scored frames; Decay uses the official uint8 quarter edges, which wrap past 256")
    if protocol == "unsupervised":
        keys = _select_proposals(seq, scorer, max_id, scores, warn)
    else:
        keys = list(range(1, n_gt + 1))
    result = _match(scorer, keys, protocol)
    return {
        "sequence": seq,
        "n_frames": len(gt.frames),
        "n_scored_frames": len(frames),
        "n_objects": n_gt,
        "gt_format": "palette" if gt.palette else "binary",
        "pred_dir": str(pred_dir),
        "pred_ids": sorted(scorer.area) if protocol != "union" else None,
        "objects": result["objects"],
    }


def _list_sequences(gt_dir: Path) -> List[str]:
    return sorted(
        p.name for p in gt_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.png"))
    )


def _progress(items: List[str], enabled: Optional[bool]) -> Iterable[str]:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="DAVIS", unit="seq", file=sys.stderr)


def _mean(values: List[float]) -> float:
    """Plain mean (NaN propagates, as with the official ``np.mean`` over objects); NaN when empty."""
    return float(np.mean(values)) if values else float("nan")


def evaluate_davis(
    gt_root: PathLike,
    pred_root: PathLike,
    *,
    protocol: str = "unsupervised",
    sequences: Optional[Iterable[str]] = None,
    scores: Optional[Mapping[str, Mapping[Any, float]]] = None,
    progress: Optional[bool] = None,
) -> Dict[str, Any]:
    """Score a folder of predicted PNGs against DAVIS annotations, one sequence at a time.

    Args:
        gt_root: a DAVIS root (with ``Annotations/480p``) or a folder of sequence folders of PNGs.
        pred_root: ``PRED/<seq>/<frame>.png`` or the ``s2d segment`` layout ``PRED/<seq>/davis/<frame>.png``;
            frame names follow the annotations.
        protocol: ``unsupervised`` (default), ``semi-supervised`` or ``union``.
        sequences: names to score (default: every sequence folder of the GT).
        scores: optional ``{seq: {id: score}}``; with more than 20 predicted ids in the unsupervised protocol
            the highest-scoring 20 are kept (default: the 20 largest by total area).
        progress: show a tqdm bar on stderr (default: only when stderr is a terminal).

    Returns:
        ``{"protocol", "gt_dir", "pred_dir", "global": {J&F-Mean, J-Mean, J-Recall, J-Decay, F-Mean,
        F-Recall, F-Decay}, "sequences": [per-sequence dicts with "objects" rows], "rows": flat per-object
        rows named ``<seq>_<k>``, "n_sequences", "n_objects", "warnings"}``. All numbers are Python floats.
    """
    protocol = normalize_protocol(protocol)
    gt_root_p, pred_root_p = Path(gt_root), Path(pred_root)
    gt_dir = _resolve_gt_dir(gt_root_p, protocol)
    if not pred_root_p.is_dir():
        raise InputError(pred_root_p, "prediction folder not found")
    if sequences is None:
        names = _list_sequences(gt_dir)
        if not names:
            raise InputError(gt_dir, "no sequence folders with PNG annotations found")
    else:
        names = [sequences] if isinstance(sequences, str) else [str(s) for s in sequences]
        if not names:
            raise InputError(gt_dir, "empty list of sequences to evaluate")
    warn: List[str] = []
    seq_rows: List[Dict[str, Any]] = []
    for seq in _progress(names, progress):
        seq_scores = None if scores is None else scores.get(seq)
        res = _evaluate_folder_sequence(seq, gt_dir, pred_root_p, protocol, seq_scores, warn)
        objs = res["objects"]
        for key in ("J&F-Mean", "J-Mean", "F-Mean"):
            res[key] = _mean([o[key] for o in objs])
        seq_rows.append(res)
    rows = []
    for s in seq_rows:
        for o in s["objects"]:
            rows.append({"name": f"{s['sequence']}_{o['object']}", "sequence": s["sequence"], **o})
    glob: Dict[str, float] = {}
    for key in GLOBAL_KEYS[1:]:
        glob[key] = _mean([r[key] for r in rows])
    glob = {"J&F-Mean": (glob["J-Mean"] + glob["F-Mean"]) / 2, **glob}
    return {
        "protocol": protocol,
        "gt_dir": str(gt_dir),
        "pred_dir": str(pred_root_p),
        "global": glob,
        "sequences": seq_rows,
        "rows": rows,
        "n_sequences": len(seq_rows),
        "n_objects": len(rows),
        "warnings": warn,
    }


# --------------------------------------------------------------------------------------------
# Terminal table
# --------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "nan" if math.isnan(x) else f"{x:.3f}"


def format_davis_table(report: Mapping[str, Any]) -> str:
    """Fixed-width text: the global line, then one row per sequence object, then warnings."""
    keys = list(GLOBAL_KEYS)
    width = max(len(k) for k in keys) + 1
    lines = [
        f"DAVIS {report.get('protocol', '?')}: {report.get('n_sequences', 0)} sequence(s), "
        f"{report.get('n_objects', 0)} object(s)",
        "".join(k.rjust(width) for k in keys),
        "".join(_fmt(report["global"].get(k)).rjust(width) for k in keys),
        "",
    ]
    rows = report.get("rows", [])
    name_w = max([len("Sequence")] + [len(str(r["sequence"])) for r in rows]) + 2
    head = "Sequence".ljust(name_w) + "Obj".rjust(4) + "Match".rjust(7) + "".join(k.rjust(width) for k in keys)
    lines.append(head)
    lines.append("-" * len(head))
    for r in rows:
        match = "-" if r.get("matched_id") is None else str(r["matched_id"])
        lines.append(
            str(r["sequence"]).ljust(name_w)
            + str(r["object"]).rjust(4)
            + match.rjust(7)
            + "".join(_fmt(r.get(k)).rjust(width) for k in keys)
        )
    warns = report.get("warnings") or []
    if warns:
        lines.append("")
        lines.append("warnings:")
        lines.extend(f"  {w}" for w in warns)
    return "\n".join(lines)


def frame_j(report: Mapping[str, Any], seq: Mapping[str, Any]) -> Tuple[List[int], Dict[str, np.ndarray]]:
    """J on every scored frame of one sequence of an :func:`evaluate_davis` report (``seq``: one entry of its
    ``"sequences"``), per GT object (``"object k"``) against the id the evaluation matched to it (the union of
    all ids under ``union``), read with the evaluation's own readers: its mean is the report's J-Mean.

    Returns the scored frame indices and the per-object values.

    Raises :class:`InputError` when the ground truth or the predictions the report names are gone.
    """
    protocol = str(report["protocol"])
    gt = _open_gt_sequence(Path(report["gt_dir"]) / str(seq["sequence"]))
    pred_dir = Path(seq["pred_dir"]) if seq.get("pred_dir") else _resolve_pred_dir(Path(report["pred_dir"]),
                                                                                      str(seq["sequence"]))
    frames = _scored_frames(len(gt.frames), protocol)
    matched = [o.get("matched_id") for o in seq.get("objects", [])]
    values = np.zeros((len(matched), len(frames)))
    for k, t in enumerate(frames):
        objs, void, _ = gt.load(t)
        labels = _read_pred_labels(pred_dir / f"{gt.frames[t]}.png", gt.shape)
        if protocol == "union":
            objs = [np.logical_or.reduce(objs)] if objs else [np.zeros(gt.shape, dtype=bool)]
        use_void = void if protocol == "unsupervised" else None
        for n, pid in enumerate(matched):
            pred = labels != 0 if protocol == "union" else (labels == pid if pid is not None else np.zeros(gt.shape, bool))
            values[n, k] = float(db_eval_iou(objs[n], pred, use_void))
    return frames, {f"object {n + 1}": values[n] for n in range(len(matched))}
