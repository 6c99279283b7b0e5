"""Training losses of the video Mask2Former with S2D's **Temporal DropLoss**.

:class:`VideoSetCriterion` (called as ``criterion(outputs, targets)``):

1. Hungarian matching per clip (:class:`s2d.model.matcher.HungarianMatcher`).
2. Objectness loss: cross-entropy over ``[object, no-object]`` for every query, target "object" for matched
   queries and "no-object" for the rest, the no-object class weighted ``no_object_weight`` (0.1).
3. Mask losses on matched queries: the matched (object, frame) pairs are flattened to single-frame masks and,
   with Temporal DropLoss, **every pair whose target mask is empty is removed** — unlabelled frames never
   penalise a prediction. On the kept pairs, points are importance-sampled on uncertain logits (or every
   pixel, see :class:`LossConfig.num_points`) and the losses are the mean point-wise sigmoid BCE and the dice
   loss ``1 − (2Σpq + 1)/(Σp + Σq + 1)``, each summed over the kept pairs and divided by ``num_masks``
   (reference: the number of target objects, ≥ 1; or the number of kept pairs). No pair left → both 0, with
   the graph still attached to the predictions.
4. Deep supervision: the same, with its own matching, on every auxiliary prediction (suffix ``_i``).

Targets are a list (one per clip) of ``{"masks": N×T×H×W bool, "labels": N long}`` (labels are all 0 in
this class-agnostic model; they may be omitted). Objects empty on every frame of a clip are removed first.
Target masks may have any resolution: losses compare predictions and targets at the same relative image
locations.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from s2d.model.config import LossConfig
from s2d.model.matcher import HungarianMatcher, Indices
from s2d.model.points import grid_points, point_sample, uncertain_points

__all__ = ["VideoSetCriterion", "sigmoid_bce_loss", "dice_loss", "objectness_loss", "droploss_pairs"]


def sigmoid_bce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """``K×P`` point logits/targets → Σ_k mean_p BCE / num_masks."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """``K×P`` point logits/targets → Σ_k [1 − (2Σpq + 1)/(Σp + Σq + 1)] / num_masks."""
    p = logits.sigmoid()
    num = 2 * (p * targets).sum(-1)
    den = p.sum(-1) + targets.sum(-1)
    return (1 - (num + 1) / (den + 1)).sum() / num_masks


def objectness_loss(logits: torch.Tensor, matched: Sequence[torch.Tensor], no_object_weight: float) -> torch.Tensor:
    """Weighted cross-entropy over ``[object, no-object]`` (``logits`` B×Q×2): matched queries (indices per
    clip in ``matched``) are "object" (class 0), all others "no-object" (class 1, weight ``no_object_weight``).
    Mean weighted by the class weights, as ``F.cross_entropy(weight=...)``."""
    b, q, _ = logits.shape
    cls = torch.ones(b, q, dtype=torch.int64, device=logits.device)
    for i, src in enumerate(matched):
        cls[i, src.to(logits.device)] = 0
    weight = torch.tensor([1.0, no_object_weight], device=logits.device, dtype=torch.float32)
    return F.cross_entropy(logits.float().transpose(1, 2), cls, weight)


def droploss_pairs(pred_masks: torch.Tensor, targets: Sequence[Dict[str, torch.Tensor]], indices: Indices,
                   drop_empty: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Flatten matched tubes to (object, frame) pairs → ``(pred K×1×h×w, target K×1×H×W float)``.

    With ``drop_empty`` (Temporal DropLoss) pairs whose target mask is empty are removed.
    """
    preds, tgts = [], []
    for b, (src, tgt) in enumerate(indices):
        if len(src) == 0:
            continue
        p = pred_masks[b, src.to(pred_masks.device)]  # M×T×h×w
        t = targets[b]["masks"][tgt.to(targets[b]["masks"].device)].to(pred_masks.device)  # M×T×H×W
        preds.append(p.flatten(0, 1))
        tgts.append(t.flatten(0, 1))
    if not preds:
        h, w = pred_masks.shape[-2:]
        return pred_masks.new_zeros(0, 1, h, w), pred_masks.new_zeros(0, 1, h, w)
    p, t = torch.cat(preds), torch.cat(tgts)
    if drop_empty:
        keep = t.flatten(1).any(1)
        p, t = p[keep], t[keep]
    return p[:, None], t[:, None].to(p.dtype)


def _drop_absent_objects(target: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove objects whose mask is empty on every frame of the clip (as the reference's ``prepare_targets``
    keeps only ids present in some frame): they would otherwise be matched as all-background tubes."""
    masks = target["masks"]
    present = masks.flatten(1).any(1)
    if bool(present.all()):
        return target
    out = dict(target)
    out["masks"] = masks[present]
    if "labels" in target:
        out["labels"] = target["labels"][present.to(target["labels"].device)]
    return out


class VideoSetCriterion(nn.Module):
    """Matching + objectness + point-sampled mask losses with Temporal DropLoss (see the module docstring).

    ``forward(outputs, targets)`` returns a dict with the unweighted terms (``loss_ce``, ``loss_mask``,
    ``loss_dice`` and ``..._i`` for auxiliary prediction ``i``), ``num_pairs`` (kept pairs of the final
    prediction, a float), and ``loss``: the weighted total to back-propagate.
    """

    def __init__(self, config: Optional[LossConfig] = None) -> None:
        super().__init__()
        self.config = (config or LossConfig()).validate()
        c = self.config
        self.matcher = HungarianMatcher(c.class_weight, c.mask_weight, c.dice_weight, c.num_points,
                                        c.match_labeled_frames_only)
        self.weights = {"loss_ce": c.class_weight, "loss_mask": c.mask_weight, "loss_dice": c.dice_weight}

    def mask_losses(self, pred_masks: torch.Tensor, targets: Sequence[Dict[str, torch.Tensor]], indices: Indices,
                    num_instances: float, generator: Optional[torch.Generator] = None
                    ) -> Dict[str, torch.Tensor]:
        c = self.config
        src, tgt = droploss_pairs(pred_masks, targets, indices, drop_empty=c.temporal_droploss)
        k = src.shape[0]
        if k == 0:
            zero = pred_masks.sum() * 0.0  # keeps the graph (and DDP) valid
            return {"loss_mask": zero, "loss_dice": zero.clone(), "num_pairs": torch.tensor(0.0)}
        num_masks = max(float(k), 1.0) if c.num_masks_norm == "pairs" else max(num_instances, 1.0)
        h, w = src.shape[-2:]
        with torch.no_grad():
            if c.num_points is None or c.num_points >= h * w:
                coords = grid_points(k, h, w, src.device, torch.float32)
            else:
                coords = uncertain_points(src.detach().float(), c.num_points, c.oversample_ratio,
                                          c.importance_sample_ratio, generator=generator)
            labels = point_sample(tgt.float(), coords)[:, 0]
        logits = point_sample(src.float(), coords)[:, 0]
        return {"loss_mask": sigmoid_bce_loss(logits, labels, num_masks),
                "loss_dice": dice_loss(logits, labels, num_masks),
                "num_pairs": torch.tensor(float(k))}

    def match(self, outputs: Dict[str, Any], targets: Sequence[Dict[str, torch.Tensor]],
              generator: Optional[torch.Generator] = None) -> Indices:
        """The Hungarian matching of the final prediction to ``targets`` (objects absent from the whole clip left
        out, as :meth:`forward` does): per clip ``(query indices, target indices)``. Pass it back to
        :meth:`forward` to compute the losses of exactly this matching."""
        main = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        return self.matcher(main, [_drop_absent_objects(t) for t in targets], generator)

    def _one(self, outputs: Dict[str, torch.Tensor], targets: Sequence[Dict[str, torch.Tensor]],
             num_instances: float, with_class: bool, generator: Optional[torch.Generator],
             indices: Optional[Indices] = None) -> Dict[str, torch.Tensor]:
        if indices is None:
            indices = self.matcher(outputs, targets, generator)
        out = self.mask_losses(outputs["pred_masks"], targets, indices, num_instances, generator)
        if with_class:
            out["loss_ce"] = objectness_loss(outputs["pred_logits"], [s for s, _ in indices],
                                             self.config.no_object_weight)
        return out

    def forward(self, outputs: Dict[str, Any], targets: Sequence[Dict[str, torch.Tensor]],
                generator: Optional[torch.Generator] = None, num_instances: Optional[float] = None,
                indices: Optional[Indices] = None) -> Dict[str, torch.Tensor]:
        """Losses of a batch. ``num_instances`` overrides the instance count used for normalisation (DDP:
        pass the all-reduced mean count per process, as the reference). ``indices``: the final prediction's
        matching from :meth:`match` (default: matched here)."""
        c = self.config
        if len(targets) != outputs["pred_masks"].shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {outputs['pred_masks'].shape[0]} clips")
        targets = [_drop_absent_objects(t) for t in targets]
        n_inst = float(sum(int(t["masks"].shape[0]) for t in targets)) if num_instances is None else num_instances
        main = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        losses = self._one(main, targets, n_inst, c.class_weight > 0, generator, indices)
        total = self._weighted(losses)
        if c.deep_supervision:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                l_aux = self._one(aux, targets, n_inst, c.class_weight > 0 and c.aux_class_loss, generator)
                total = total + self._weighted(l_aux)
                losses.update({f"{k}_{i}": v for k, v in l_aux.items() if k != "num_pairs"})
        losses["loss"] = total
        return losses

    def _weighted(self, losses: Dict[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for k, w in self.weights.items():
            if k in losses and w:
                term = w * losses[k]
                total = term if total is None else total + term
        assert total is not None
        return total
