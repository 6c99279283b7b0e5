"""Proxy propagate-and-match and temporal grouping (PAPER §2c; reference ``cotracker_matching.py``).

A candidate's grid points are propagated by the tracker over its (merged) visibility range. On every
frame t of the range, the rounded in-bounds positions form a *point mask* P_t (a set of pixels, so two
points on one pixel count once; **tracker visibility is ignored**, as in the reference). Against
*every* single-frame mask m of that frame the score is

    J(m) = |P_t ∩ m| / |P_t|        (0 when P_t is empty)

and m *matches* when J > 0.5. The candidate is flagged *one2x* when on ≥ 5 frames more than one mask
has J > 0.25. Per visibility cluster a binary matrix M[ref, matched] over global mask indices is
cropped to the bounding box of its non-zeros and its rows are clustered with DBSCAN (Hamming; eps and
min_samples depend on the number of columns); rows without any match are noise. Each DBSCAN label is
one object identity; its rows' masks are the object's keymasks.

Point-in-mask tests use :class:`MaskIndex`: each mask is kept as the sorted positions where its
column-major (COCO RLE order) flattening changes value, so a membership test is one
``searchsorted`` and a whole video of masks costs a few kB per mask instead of ``H×W`` bytes.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Sequence, Tuple, Union

import numpy as np

from s2d.errors import ValidationError
from s2d.keymasks.visibility import dbscan_hamming

__all__ = [
    "MaskIndex",
    "point_pixels",
    "point_mask_fractions",
    "one2x_count",
    "crop_to_nonzero",
    "group_matches",
    "choose_per_frame",
    "iter_slices",
]


class MaskIndex:
    """Point-in-mask lookups for all single-frame masks of a video (global index order = frame order).

    Build with :meth:`add` in ascending frame order, then :meth:`finalize`.
    """

    def __init__(self, height: int, width: int, num_frames: int) -> None:
        self.height, self.width, self.num_frames = int(height), int(width), int(num_frames)
        self.hw = self.height * self.width
        self._bounds: List[np.ndarray] = []
        self._frames: List[int] = []
        self.frames: np.ndarray = np.zeros(0, np.int64)
        self.frame_start: np.ndarray = np.zeros(self.num_frames + 1, np.int64)
        self._all: np.ndarray = np.zeros(0, np.int64)
        self._prefix: np.ndarray = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, frame: int, mask: np.ndarray) -> int:
        """Register ``mask`` (bool ``H×W``) on ``frame``; returns its global index."""
        if self._frames and frame < self._frames[-1]:
            raise ValidationError(f"masks must be added in frame order, got {frame} after {self._frames[-1]}")
        if mask.shape != (self.height, self.width):
            raise ValidationError(f"mask shape {mask.shape} != {(self.height, self.width)}")
        flat = np.asarray(mask, dtype=bool).ravel(order="F")
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        if flat.size and flat[0]:
            change = np.concatenate([[0], change])
        self._bounds.append(change.astype(np.int64))
        self._frames.append(int(frame))
        return len(self._frames) - 1

    def finalize(self) -> "MaskIndex":
        m = len(self._frames)
        self.frames = np.asarray(self._frames, dtype=np.int64)
        counts = np.bincount(self.frames, minlength=self.num_frames) if m else np.zeros(self.num_frames, np.int64)
        self.frame_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        sizes = np.array([b.size for b in self._bounds], dtype=np.int64)
        self._prefix = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if m else np.zeros(0, np.int64)
        self._all = (np.concatenate([b + i * self.hw for i, b in enumerate(self._bounds)])
                     if m else np.zeros(0, np.int64))
        self._bounds = []
        return self

    def contains(self, gids: np.ndarray, lin: np.ndarray) -> np.ndarray:
        """Whether mask ``gids[i]`` covers column-major pixel ``lin[i] = x*H + y``."""
        gids = np.asarray(gids, dtype=np.int64)
        q = gids * self.hw + np.asarray(lin, dtype=np.int64)
        pos = np.searchsorted(self._all, q, side="right")
        return ((pos - self._prefix[gids]) & 1).astype(bool)

    def masks_on(self, frame: int) -> range:
        return range(int(self.frame_start[frame]), int(self.frame_start[frame + 1]))


def point_pixels(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Column-major pixel index ``x*H + y`` of the rounded points; −1 where out of bounds or not finite.

    ``points`` is ``...×2`` ``(x, y)`` in frame pixels. Rounding is half-to-even, like ``torch.round``.
    """
    p = np.asarray(points, dtype=np.float64)
    x = p[..., 0]
    y = p[..., 1]
    ok = np.isfinite(x) & np.isfinite(y)
    xr = np.rint(np.where(ok, x, -1.0))
    yr = np.rint(np.where(ok, y, -1.0))
    ok &= (xr >= 0) & (xr < width) & (yr >= 0) & (yr < height)
    lin = xr.astype(np.int64) * height + yr.astype(np.int64)
    return np.where(ok, lin, -1)


def point_mask_fractions(lin: np.ndarray, start: int, index: MaskIndex) -> Tuple[int, np.ndarray]:
    """J of one candidate against every mask of frames ``start .. start + R - 1``.

    Args:
        lin: ``R×n`` pixel indices of the candidate's propagated points on those frames
            (:func:`point_pixels`; −1 = out of bounds).
        start: the first frame of the range.
    Returns:
        ``(g0, J)``: ``J[i]`` is the fraction for global mask ``g0 + i`` (the masks of the range, in
        global order); duplicates of a pixel count once (the reference's binary point mask).
    """
    lin = np.asarray(lin, dtype=np.int64)
    r = lin.shape[0]
    g0 = int(index.frame_start[start])
    g1 = int(index.frame_start[start + r])
    if g1 == g0:
        return g0, np.zeros(0)
    srt = np.sort(lin, axis=1)
    prev = np.concatenate([np.full((r, 1), -2, np.int64), srt[:, :-1]], axis=1)
    uniq = (srt >= 0) & (srt != prev)
    denom = uniq.sum(axis=1)  # |P_t|
    rows, cols = np.nonzero(uniq)
    vals = srt[rows, cols]
    frames = start + rows
    k = (index.frame_start[frames + 1] - index.frame_start[frames])  # masks on each entry's frame
    total = int(k.sum())
    if total == 0:
        return g0, np.zeros(g1 - g0)
    rep = np.repeat(np.arange(vals.size), k)
    offs = np.arange(total) - np.repeat(np.cumsum(k) - k, k)
    gids = index.frame_start[frames][rep] + offs
    inside = index.contains(gids, vals[rep])
    hits = np.bincount(gids[inside] - g0, minlength=g1 - g0).astype(np.float64)
    mask_frames = index.frames[g0:g1] - start
    d = denom[mask_frames].astype(np.float64)
    j = np.divide(hits, d, out=np.zeros_like(hits), where=d > 0)
    return g0, j


def one2x_count(j: np.ndarray, mask_frames: np.ndarray, threshold: float) -> int:
    """Number of frames on which more than one mask has ``J > threshold``."""
    j = np.asarray(j)
    f = np.asarray(mask_frames, dtype=np.int64)[j > threshold]
    if f.size == 0:
        return 0
    return int((np.bincount(f) > 1).sum())


def crop_to_nonzero(matrix: np.ndarray) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Crop a 2-D bool array to the bounding box of its True entries; ``(crop, (row0, col0))``."""
    matrix = np.asarray(matrix, dtype=bool)
    rows = np.flatnonzero(matrix.any(axis=1))
    cols = np.flatnonzero(matrix.any(axis=0))
    if rows.size == 0:
        return np.zeros((0, 0), bool), (0, 0)
    return matrix[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], (int(rows[0]), int(cols[0]))


def group_matches(matches: Dict[int, np.ndarray],
                  eps_min_samples: Callable[[int], Tuple[float, int]], *, all_rows: bool = True
                  ) -> Dict[int, int]:
    """DBSCAN grouping of one visibility cluster's match rows.

    Args:
        matches: ref global mask index → global indices of the masks it matched.
        eps_min_samples: callable ``num_cols -> (eps, min_samples)`` (e.g.
            :meth:`KeymaskConfig.match_dbscan_params`).
        all_rows: as the reference (default), the matrix is indexed by global mask index, cropped to
            the bounding box of its non-zeros, and *every* row inside the box takes part in DBSCAN —
            also the all-zero rows of masks that are not refs of this cluster — before rows without a
            match are set to noise. ``False``: only the refs' rows are clustered (same columns).
    Returns:
        ref → DBSCAN label (−1 = noise), for every ref in ``matches``.
    """
    out = {int(r): -1 for r in matches}
    pairs = [(int(r), np.asarray(c, dtype=np.int64)) for r, c in matches.items() if len(c)]
    if not pairs:
        return out
    r0 = min(r for r, _ in pairs)
    r1 = max(r for r, _ in pairs)
    c0 = min(int(c.min()) for _, c in pairs)
    c1 = max(int(c.max()) for _, c in pairs)
    if all_rows:
        row_of = {r: r - r0 for r, _ in pairs}
        n_rows = r1 - r0 + 1
    else:
        refs = sorted(int(r) for r in matches)
        row_of = {r: i for i, r in enumerate(refs)}
        n_rows = len(refs)
    mat = np.zeros((n_rows, c1 - c0 + 1), dtype=bool)
    for r, c in pairs:
        mat[row_of[r], c - c0] = True
    eps, min_samples = eps_min_samples(mat.shape[1])
    labels = dbscan_hamming(mat, eps, min_samples)
    for r, _ in pairs:
        out[r] = int(labels[row_of[r]])
    return out


def choose_per_frame(members: Sequence[int], frames: Union[Sequence[int], np.ndarray], support: Sequence[float],
                     scores: Sequence[float]) -> Tuple[List[int], List[int]]:
    """Keep one mask per frame of a group: highest support, then highest score, then lowest index.

    ``support[i]`` is the number of group rows that matched member i. Returns
    ``(kept, dropped)`` global indices, kept in frame order.
    """
    best: Dict[int, Tuple[float, float, int]] = {}
    for m, f, s, sc in zip(members, frames, support, scores):
        key = (-float(s), -float(sc), int(m))
        if int(f) not in best or key < best[int(f)]:
            best[int(f)] = key
    kept = [best[f][2] for f in sorted(best)]
    kept_set = set(kept)
    dropped = sorted(int(m) for m in members if int(m) not in kept_set)
    return kept, dropped


def iter_slices(sizes: Iterable[int]) -> List[slice]:
    """Consecutive slices for concatenated blocks of the given sizes."""
    out, o = [], 0
    for s in sizes:
        out.append(slice(o, o + int(s)))
        o += int(s)
    return out
