"""Test-time augmentation consensus (s2d.infer.tta) on a hand-made model whose views are known."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s2d.infer.tta import predict_tta


class BrightModel:
    """Predicts object 1 = bright pixels (score 0.9) on any view: equivariant under flip and resize.
    With ``left_ghost`` it also predicts object 2 = the left quarter of the frame (score 0.8) — a region
    that moves under a mirror, so the flipped view puts it on the other side."""

    def __init__(self, left_ghost: bool = False) -> None:
        self.left_ghost = left_ghost
        self.calls = []

    def predict(self, clip, score_threshold=0.0, size=None):
        self.calls.append(tuple(clip.shape))
        logit = (clip.mean(1) - 0.5) * 20  # T×H×W
        tubes, scores = [logit], [0.9]
        if self.left_ghost:
            g = torch.full_like(logit, -10.0)
            g[..., : clip.shape[-1] // 4] = 10.0
            tubes.append(g)
            scores.append(0.8)
        logits = torch.stack(tubes)
        if size is not None and tuple(size) != tuple(logits.shape[-2:]):
            logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
        s = torch.tensor(scores)
        keep = s >= score_threshold
        return {"scores": s[keep], "masks": logits[keep] > 0, "mask_logits": logits[keep]}


def _clip() -> torch.Tensor:
    clip = torch.zeros(2, 3, 32, 48)
    clip[:, :, 8:20, 30:44] = 1.0  # a bright box right of centre
    return clip


def test_no_augmentation_is_predict_itself():
    m = BrightModel()
    out = predict_tta(m, _clip(), 0.5, flip=False)
    assert len(m.calls) == 1 and out["scores"].tolist() == pytest.approx([0.9])


@pytest.mark.parametrize("flip,scales,views", [(True, (), 2), (False, (1.5,), 2), (True, (1.25, 0.75), 4)])
def test_equivariant_object_keeps_mask_and_score(flip, scales, views):
    m = BrightModel()
    clip = _clip()
    out = predict_tta(m, clip, 0.5, flip=flip, scales=scales)
    assert len(m.calls) == views
    assert out["scores"].tolist() == pytest.approx([0.9])
    expected = clip.mean(1) > 0.5
    assert out["masks"].shape == (1, 2, 32, 48)
    assert torch.equal(out["masks"][0], expected)


def test_object_one_view_disagrees_with_loses_its_score():
    # the ghost sits on the left in the base view and on the right in the mirrored one: no match, so its
    # consensus score is 0.8 / 2 and it falls below 0.5; the real object is found by both and stays
    out = predict_tta(BrightModel(left_ghost=True), _clip(), 0.5, flip=True)
    assert out["scores"].tolist() == pytest.approx([0.9])
    low = predict_tta(BrightModel(left_ghost=True), _clip(), 0.3, flip=True)
    assert low["scores"].tolist() == pytest.approx([0.9, 0.4])
