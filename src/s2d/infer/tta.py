"""Test-time augmentation for one clip: a consensus of the model's views (flip, rescale).

Used where the model's predictions become *labels* (the dense labelset of the self-distillation round,
:mod:`s2d.train.dense`): a teacher that agrees with itself under a mirror image and a zoom is more often
right than one view of it, and a student trained on the consensus learns to do in one pass what the
ensemble does in several (the reason self-training uses a stronger teacher than the student).

Each view predicts tubes; the view's masks are mapped back to the base view's frame (un-flipped,
resized); every tube of every augmented view is matched one-to-one to the base view's tubes by mean mask
IoU over the clip (Hungarian, ≥ ``match_iou``). A base tube's consensus mask is the mean over all views of
the mask probability (a view with no match adds zero), its consensus score the mean score (likewise): an
object every view finds keeps its score, an object only one view finds loses it. Tubes found by an
augmented view but not by the base view are left out (the base view decides *which* objects there are).
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
import torch.nn.functional as F

from s2d.infer.linking import match_tubes, tube_iou

__all__ = ["predict_tta"]


@torch.no_grad()
def predict_tta(model: Any, clip: torch.Tensor, score_threshold: float = 0.0, *, flip: bool = True,
                scales: Sequence[float] = (), match_iou: float = 0.5,
                candidate_factor: float = 0.5) -> Dict[str, torch.Tensor]:
    """Consensus prediction of ``model.predict`` over the clip ``T×3×H×W`` (float in [0, 1]) and its views.

    Args:
        flip: add the horizontally mirrored clip.
        scales: add the clip resized by these factors (e.g. ``(1.25,)``; sides rounded to multiples of 4).
        match_iou: smallest mean tube IoU that makes a view's tube the same object as a base tube.
        candidate_factor: views keep tubes scoring ≥ ``candidate_factor × score_threshold`` before the
            consensus, so an object just under the threshold in one view still counts as found there.

    Returns:
        ``{"scores": K, "masks": K×T×H×W bool, "mask_logits": K×T×H×W}`` like ``predict`` (and the base view's
        ``embeds`` when the model gives them), sorted by consensus score, keeping those ≥ ``score_threshold``; with no augmentation it is ``predict`` itself.
    """
    if not flip and not scales:
        return model.predict(clip, score_threshold=score_threshold)
    h, w = clip.shape[-2:]
    low = score_threshold * candidate_factor
    base = model.predict(clip, score_threshold=low)
    k = base["scores"].shape[0]
    if k == 0:
        return base
    prob_sum = base["mask_logits"].sigmoid()
    score_sum = base["scores"].clone()
    views = 1
    for view in _views(clip, flip, scales):
        out = model.predict(view["clip"], score_threshold=low, size=(h, w))
        logits = out["mask_logits"]
        if view["flip"]:
            logits = logits.flip(-1)
        views += 1
        if logits.shape[0] == 0:
            continue
        pairs = match_tubes(tube_iou(base["masks"], logits > 0), match_iou)
        for i, j in pairs.items():
            prob_sum[i] += logits[j].sigmoid()
            score_sum[i] += out["scores"][j]
    prob = prob_sum / views
    scores = score_sum / views
    order = scores.argsort(descending=True)
    order = order[scores[order] >= score_threshold]
    logit = torch.logit(prob[order].clamp(1e-6, 1 - 1e-6))
    out = {"scores": scores[order], "masks": logit > 0, "mask_logits": logit}
    if "embeds" in base:  # the base view's queries name the objects
        out["embeds"] = base["embeds"][order]
    return out


def _views(clip: torch.Tensor, flip: bool, scales: Sequence[float]):
    h, w = clip.shape[-2:]
    if flip:
        yield {"clip": clip.flip(-1), "flip": True}
    for s in scales:
        size = (max(4, int(round(h * s / 4)) * 4), max(4, int(round(w * s / 4)) * 4))
        if size == (h, w):
            continue
        yield {"clip": F.interpolate(clip, size=size, mode="bilinear", align_corners=False), "flip": False}
