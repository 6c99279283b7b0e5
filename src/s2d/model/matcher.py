"""Hungarian matching of predicted mask tubes to target tubes over a clip (SciPy ``linear_sum_assignment``).

Cost of assigning query ``q`` to target ``n`` =
``class_weight · (−p_q(object)) + mask_weight · BCE(q, n) + dice_weight · dice(q, n)``, where BCE and dice are
computed on points sampled uniformly at random (the same points for every query, target and frame) over the
clip's T frames. By default (the reference code) all frames count — frames where a target is empty count as
background; with ``labeled_frames_only`` each target's costs use only its non-empty frames.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from s2d.model.points import grid_points, point_sample

__all__ = ["HungarianMatcher", "hungarian", "pairwise_mask_costs"]

Indices = List[Tuple[torch.Tensor, torch.Tensor]]


def hungarian(cost: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost assignment of a ``Q×N`` cost matrix → ``(query_idx, target_idx)`` int64, sorted by query."""
    c = cost.detach().float().cpu().numpy()
    if c.size == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty.clone()
    c = np.nan_to_num(c, nan=1e6, posinf=1e6, neginf=-1e6)
    rows, cols = linear_sum_assignment(c)
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


def pairwise_mask_costs(pred: torch.Tensor, tgt: torch.Tensor,
                        frame_weight: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid-BCE and dice costs between every prediction and target tube at sampled points.

    Args:
        pred: ``Q×T×P`` mask logits at the points.
        tgt: ``N×T×P`` target values in [0, 1] at the same points.
        frame_weight: ``N×T`` which frames count for each target (``None``: all).

    Returns:
        ``(bce, dice)``, each ``Q×N``: BCE averaged over the counted frames' points, and
        ``1 − (2Σσ·y + 1) / (Σσ + Σy + 1)`` summed over the counted frames' points.
    """
    q, t, p = pred.shape
    n = tgt.shape[0]
    w = torch.ones(n, t, dtype=pred.dtype, device=pred.device) if frame_weight is None else frame_weight.to(pred)
    pred, tgt = pred.float(), tgt.float()
    w = w.float()
    # BCE(x, y) = softplus(x) − x·y, summed per frame
    sp = F.softplus(pred).sum(-1)  # Q×T
    xy = torch.einsum("qtp,ntp->qnt", pred, tgt)  # Q×N×T
    bce_t = sp[:, None, :] - xy
    bce = (bce_t * w[None]).sum(-1) / (w.sum(-1)[None] * p).clamp(min=1)
    sig = pred.sigmoid()
    inter = torch.einsum("qtp,ntp->qnt", sig, tgt)
    num = 2 * (inter * w[None]).sum(-1)
    den = (sig.sum(-1) @ w.t()) + (tgt.sum(-1) * w).sum(-1)[None]
    dice = 1 - (num + 1) / (den + 1)
    return bce, dice


class HungarianMatcher:
    """Matches each clip's predictions (``pred_logits`` B×Q×2, ``pred_masks`` B×Q×T×h×w) to its targets.

    Args:
        class_weight, mask_weight, dice_weight: cost weights.
        num_points: random points per clip (shared by all frames); ``None`` or ≥ h·w: every pixel of the
            prediction grid (deterministic).
        labeled_frames_only: costs over each target's non-empty frames only.
    """

    def __init__(self, class_weight: float = 2.0, mask_weight: float = 5.0, dice_weight: float = 5.0,
                 num_points: Optional[int] = 12544, labeled_frames_only: bool = False) -> None:
        self.class_weight, self.mask_weight, self.dice_weight = class_weight, mask_weight, dice_weight
        self.num_points = num_points
        self.labeled_frames_only = labeled_frames_only

    @torch.no_grad()
    def cost_matrix(self, logits: torch.Tensor, masks: torch.Tensor, tgt_masks: torch.Tensor,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``Q×N`` cost for one clip: ``logits`` Q×2, ``masks`` Q×T×h×w, ``tgt_masks`` N×T×H×W."""
        q, t, h, w = masks.shape
        n = tgt_masks.shape[0]
        cost = torch.zeros(q, n, device=masks.device)
        if n == 0:
            return cost
        if self.class_weight:
            cost = cost - self.class_weight * logits.float().softmax(-1)[:, :1]
        if self.num_points is None or self.num_points >= h * w:
            coords = grid_points(1, h, w, masks.device)
        else:
            coords = torch.rand(1, self.num_points, 2, device=masks.device, generator=generator)
        tgt = tgt_masks.to(device=masks.device, dtype=torch.float32)
        pt = point_sample(tgt, coords.expand(n, -1, -1))  # N×T×P
        pp = point_sample(masks.float(), coords.expand(q, -1, -1))  # Q×T×P
        fw = tgt_masks.flatten(2).any(-1) if self.labeled_frames_only else None
        bce, dice = pairwise_mask_costs(pp, pt, fw)
        return cost + self.mask_weight * bce + self.dice_weight * dice

    @torch.no_grad()
    def __call__(self, outputs: Dict[str, torch.Tensor], targets: Sequence[Dict[str, torch.Tensor]],
                 generator: Optional[torch.Generator] = None) -> Indices:
        """Per clip ``(query_idx, target_idx)`` (int64, on CPU), as many pairs as ``min(Q, N)``."""
        out: Indices = []
        for b, target in enumerate(targets):
            c = self.cost_matrix(outputs["pred_logits"][b], outputs["pred_masks"][b], target["masks"], generator)
            out.append(hungarian(c))
        return out
