"""Normalized cuts (Shi & Malik) on a token graph, applied iteratively as in MaskCut.

One cut solves the generalized eigenproblem ``(D - W) x = λ D x`` for the second-smallest eigenvector.
Equivalently (and much faster for dense graphs) the second-*largest* eigenvector ``y`` of the normalized
affinity ``D^-1/2 W D^-1/2`` (eigenvalue ``1 - λ``) is computed with Lanczos (``scipy.sparse.linalg.eigsh``)
and mapped back by ``x = D^-1/2 y``; small graphs use the dense ``scipy.linalg.eigh`` directly.

Bipartition at the mean of ``x``; the seed is ``argmax |x|`` and the foreground is the side containing it;
a foreground covering at least ``flip_corners`` of the 4 grid corners is flipped (MaskCut's rule: objects
rarely fill the corners). The foreground is then reduced to the connected component holding the seed
(or the largest). Its tokens are removed from the graph and the next cut runs on the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import cv2
import numpy as np
import scipy.linalg
import scipy.sparse.linalg

__all__ = ["Cut", "corner_count", "iterative_ncut", "ncut_bipartition", "second_eigenvector"]

_DENSE_MAX = 400  # nodes up to which the dense generalized solver is used


@dataclass
class Cut:
    """One foreground found by :func:`iterative_ncut`.

    Attributes:
        mask: ``h×w`` bool token mask.
        eigenvalue: λ of the generalized problem (0 = a perfect cut, 1 = none); lower is better.
        eigvec: ``h×w`` float map of the eigenvector (NaN on tokens not in the graph), sign such that the
            foreground is positive — a soft mask.
        seed: ``(row, col)`` of the seed token.
    """

    mask: np.ndarray
    eigenvalue: float
    eigvec: np.ndarray
    seed: Tuple[int, int]


def second_eigenvector(W: np.ndarray) -> Tuple[np.ndarray, float]:
    """Second-smallest generalized eigenvector ``x`` of ``(D - W) x = λ D x`` and its ``λ``."""
    W = np.asarray(W, dtype=np.float64)
    n = W.shape[0]
    d = W.sum(1)
    d = np.maximum(d, 1e-12)
    if n <= _DENSE_MAX:
        vals, vecs = scipy.linalg.eigh(np.diag(d) - W, np.diag(d), subset_by_index=[1, 1])
        return vecs[:, 0], float(vals[0])
    dis = 1.0 / np.sqrt(d)
    A = W * dis[:, None] * dis[None, :]
    v0 = np.sqrt(d)  # the trivial top eigenvector; a deterministic, non-degenerate start
    v0 = v0 / np.linalg.norm(v0) + 1e-3 * np.cos(np.arange(n))
    vals, vecs = scipy.sparse.linalg.eigsh(A, k=2, which="LA", v0=v0, tol=1e-6, maxiter=5 * n)
    order = np.argsort(vals)[::-1]
    y = vecs[:, order[1]]
    return y * dis, float(1.0 - vals[order[1]])


def corner_count(mask: np.ndarray) -> int:
    """How many of the 4 corners of an ``h×w`` bool grid are True."""
    m = np.asarray(mask, dtype=bool)
    return int(m[0, 0]) + int(m[0, -1]) + int(m[-1, 0]) + int(m[-1, -1])


def _component_with(mask: np.ndarray, seed: Tuple[int, int]) -> np.ndarray:
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    if n <= 2:
        return mask
    lab = labels[seed]
    if lab == 0:  # seed not in the mask (after a flip): keep the largest component
        counts = np.bincount(labels.ravel())
        counts[0] = 0
        lab = int(np.argmax(counts))
    return labels == lab


def ncut_bipartition(W: np.ndarray, grid: Tuple[int, int], active: Optional[np.ndarray] = None,
                     flip_corners: int = 2) -> Optional[Cut]:
    """One normalized cut of the tokens ``active`` (``h×w`` bool; default all) of the graph ``W`` (``N×N``).

    Returns ``None`` when fewer than 3 active tokens remain.
    """
    h, w = grid
    active = np.ones((h, w), bool) if active is None else np.asarray(active, bool)
    idx = np.flatnonzero(active.ravel())
    if idx.size < 3:
        return None
    sub = W[np.ix_(idx, idx)]
    x, lam = second_eigenvector(sub)
    side = x > x.mean()
    seed_local = int(np.argmax(np.abs(x)))
    if not side[seed_local]:
        side, x = ~side, -x
    fg: np.ndarray = np.zeros(h * w, bool)
    fg[idx[side]] = True
    fg = fg.reshape(h, w)
    seed = (int(idx[seed_local] // w), int(idx[seed_local] % w))
    if flip_corners and corner_count(fg) >= flip_corners:
        flipped = np.zeros(h * w, bool)
        flipped[idx[~side]] = True
        fg, x = flipped.reshape(h, w), -x
        seed_local = int(np.argmax(np.where(~side, np.abs(x), -np.inf)))
        seed = (int(idx[seed_local] // w), int(idx[seed_local] % w))
    fg = _component_with(fg, seed)
    vec = np.full(h * w, np.nan)
    vec[idx] = x / (np.abs(x).max() + 1e-12)
    return Cut(fg, lam, vec.reshape(h, w), seed)


def iterative_ncut(W: np.ndarray, grid: Tuple[int, int], max_masks: int = 3, flip_corners: int = 2,
                   min_tokens: int = 2) -> List[Cut]:
    """Up to ``max_masks`` foregrounds: cut, remove the foreground's tokens, cut the rest again.

    Stops early when too few tokens remain or a foreground has fewer than ``min_tokens`` tokens.
    """
    h, w = grid
    W = np.asarray(W, dtype=np.float64)
    if W.shape != (h * w, h * w):
        raise ValueError(f"affinity {W.shape} does not match the grid {grid}")
    active = np.ones((h, w), bool)
    cuts: List[Cut] = []
    for _ in range(int(max_masks)):
        cut = ncut_bipartition(W, grid, active, flip_corners)
        if cut is None or cut.mask.sum() < min_tokens:
            break
        cuts.append(cut)
        active &= ~cut.mask
        if active.sum() < 3:
            break
    return cuts
