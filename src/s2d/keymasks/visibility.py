"""Visibility grouping (PAPER §2b; reference ``identify_visibility_windows.py``).

Every single-frame mask has a visibility curve γ (length T): the fraction of its tracked grid points
the tracker reports visible on each frame. The binary vectors ``γ > 0.3`` of all masks of a video are
clustered with DBSCAN (Hamming distance = fraction of frames that differ; eps 0.2, min_samples 5);
noise masks (label −1) are dropped. Per cluster a frame is *majority-visible* when more than half of
the members are visible there; contiguous runs of such frames are the cluster's visibility ranges
(inclusive). A member is a *candidate* of a range when it is visible on more than 30 % of the range's
frames and its own frame lies inside the range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

from s2d.errors import SettingError

__all__ = [
    "VisibilityCluster",
    "binarize",
    "dbscan_hamming",
    "majority_visible",
    "visible_ranges",
    "highly_visible_rows",
    "group_by_visibility",
]

Range = Tuple[int, int]


@dataclass
class VisibilityCluster:
    """One non-noise DBSCAN cluster of visibility vectors.

    Attributes:
        label: DBSCAN label (0, 1, ...; in order of first appearance among the mask rows).
        members: global mask indices of the members, ascending.
        majority: length-T bool, the per-frame majority vote.
        ranges: majority-visible runs ``(start, end)`` inclusive, in time order.
        candidates: global mask index → the range it is a candidate of.
    """

    label: int
    members: np.ndarray
    majority: np.ndarray
    ranges: List[Range]
    candidates: Dict[int, Range] = field(default_factory=dict)

    @property
    def merged_range(self) -> Range:
        """``(min start, max end)`` of the ranges (the reference's ``merge_vranges``)."""
        if not self.ranges:
            raise ValueError(f"cluster {self.label} has no visibility range")
        return (min(r[0] for r in self.ranges), max(r[1] for r in self.ranges))


def binarize(gamma: np.ndarray, threshold: float) -> np.ndarray:
    """``gamma > threshold`` (NaN — a mask without grid points — is never visible)."""
    g = np.asarray(gamma, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(g, nan=-np.inf) > threshold


def dbscan_hamming(rows: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    """sklearn ``DBSCAN(eps, min_samples, metric="hamming")`` labels of the bool rows (−1 = noise)."""
    rows = np.asarray(rows, dtype=bool)
    if rows.ndim != 2:
        raise SettingError(f"rows must be a 2-D array, got shape {rows.shape}")
    if rows.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if rows.shape[1] == 0:  # every distance is 0/0; treat all rows as identical
        rows = np.zeros((rows.shape[0], 1), dtype=bool)
    from sklearn.cluster import DBSCAN  # deferred: sklearn import costs ~1 s

    return DBSCAN(eps=float(eps), min_samples=int(min_samples), metric="hamming").fit(rows).labels_.astype(np.int64)


def majority_visible(cluster_vis: np.ndarray) -> np.ndarray:
    """Per-frame vote: more than half of the rows visible (ties are not visible)."""
    cluster_vis = np.asarray(cluster_vis, dtype=bool)
    n = cluster_vis.shape[0]
    return cluster_vis.sum(axis=0) > (n / 2.0)


def visible_ranges(flags: Union[Sequence[bool], np.ndarray]) -> List[Range]:
    """Contiguous runs of True as inclusive ``(start, end)`` pairs."""
    v = np.asarray(flags, dtype=bool).astype(np.int8)
    if v.size == 0:
        return []
    d = np.diff(np.concatenate([[0], v, [0]]))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


def highly_visible_rows(cluster_vis: np.ndarray, ranges: Sequence[Range], threshold: float
                        ) -> Dict[Range, np.ndarray]:
    """Per range, the row indices visible on more than ``threshold`` of its frames."""
    cluster_vis = np.asarray(cluster_vis, dtype=bool)
    out: Dict[Range, np.ndarray] = {}
    for s, e in ranges:
        frac = cluster_vis[:, s:e + 1].sum(axis=1) / float(e - s + 1)
        out[(s, e)] = np.flatnonzero(frac > threshold)
    return out


def group_by_visibility(visible: np.ndarray, frames: np.ndarray, eps: float, min_samples: int,
                        candidate_fraction: float) -> Tuple[np.ndarray, List[VisibilityCluster]]:
    """Cluster the ``M×T`` binary visibility matrix and find each cluster's ranges and candidates.

    Args:
        visible: ``M×T`` bool, row m = mask m's visibility vector.
        frames: ``M`` ints, the frame each mask lies on.
    Returns:
        ``(labels, clusters)``: the DBSCAN label of every mask (−1 = noise) and the clusters in label
        order.
    """
    visible = np.asarray(visible, dtype=bool)
    frames = np.asarray(frames, dtype=np.int64)
    if visible.ndim != 2 or frames.shape != (visible.shape[0],):
        raise SettingError(f"visible must be M×T and frames length M, got {visible.shape} and {frames.shape}")
    labels = dbscan_hamming(visible, eps, min_samples)
    clusters: List[VisibilityCluster] = []
    for lab in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == lab)
        cvis = visible[members]
        maj = majority_visible(cvis)
        ranges = visible_ranges(maj)
        cands: Dict[int, Range] = {}
        for rng, rows in highly_visible_rows(cvis, ranges, candidate_fraction).items():
            for r in rows:
                m = int(members[r])
                if rng[0] <= frames[m] <= rng[1]:
                    cands[m] = rng
        clusters.append(VisibilityCluster(int(lab), members, maj, ranges, dict(sorted(cands.items()))))
    return labels, clusters
