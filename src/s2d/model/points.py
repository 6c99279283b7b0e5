"""Point sampling of mask logits and targets (PointRend / Mask2Former style), pure PyTorch.

Coordinates are ``(x, y)`` in [0, 1] relative to the map's extent, so predictions at stride 4 and targets at the
input resolution are sampled at the same image locations.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

__all__ = ["point_sample", "grid_points", "uncertain_points", "uncertainty"]


def point_sample(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``x`` (``N×C×H×W``) at ``coords`` (``N×P×2``, x/y in [0, 1]) → ``N×C×P``.

    ``align_corners=False``: coordinate ``(j + 0.5) / W`` hits the centre of pixel column ``j`` exactly.
    """
    out = F.grid_sample(x, 2.0 * coords[:, :, None, :] - 1.0, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out[..., 0]


def grid_points(n: int, h: int, w: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The centres of every pixel of an ``h×w`` grid, ``n×(h·w)×2`` (row-major), for exact dense losses."""
    ys, xs = torch.meshgrid((torch.arange(h, device=device, dtype=dtype) + 0.5) / h,
                            (torch.arange(w, device=device, dtype=dtype) + 0.5) / w, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)[None].expand(n, h * w, 2)


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of a mask logit: ``−|logit|`` (highest at the decision boundary)."""
    return -logits.abs()


def uncertain_points(logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_ratio: float,
                     score: Callable[[torch.Tensor], torch.Tensor] = uncertainty,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Importance sampling of ``num_points`` locations per mask of ``logits`` (``N×1×H×W``) → ``N×P×2``.

    Draw ``oversample_ratio·P`` uniform candidates, keep the ``importance_ratio·P`` most uncertain ones, fill up
    with fresh uniform points.
    """
    n = logits.shape[0]
    dev = logits.device
    n_cand = max(int(num_points * oversample_ratio), 1)
    cand = torch.rand(n, n_cand, 2, device=dev, generator=generator)
    n_imp = min(int(importance_ratio * num_points), n_cand)
    n_rand = num_points - n_imp
    parts = []
    if n_imp > 0:
        unc = score(point_sample(logits, cand))[:, 0]  # N×n_cand
        idx = unc.topk(n_imp, dim=1).indices
        parts.append(torch.gather(cand, 1, idx[..., None].expand(n, n_imp, 2)))
    if n_rand > 0:
        parts.append(torch.rand(n, n_rand, 2, device=dev, generator=generator))
    return torch.cat(parts, 1)
