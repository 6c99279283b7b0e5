"""Matching, objectness and mask losses, and Temporal DropLoss checked numerically (s2d.model)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from s2d.model import (
    HungarianMatcher,
    LossConfig,
    VideoSetCriterion,
    hungarian,
    objectness_loss,
    point_sample,
    uncertain_points,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


EXACT = dict(num_points=None, class_weight=0.0, deep_supervision=False)  # every pixel, no class term


def _outputs(masks: torch.Tensor, logits: torch.Tensor = None):
    """Wrap ``B×Q×T×h×w`` mask logits as model outputs (object logits default to 0)."""
    if logits is None:
        logits = torch.zeros(*masks.shape[:2], 2)
    return {"pred_logits": logits, "pred_masks": masks}


def _box(t: int, h: int, w: int, boxes) -> torch.Tensor:
    """``T×h×w`` bool with ``boxes[k] = (y0, y1, x0, x1)`` on frame k (``None`` = empty frame)."""
    m = torch.zeros(t, h, w, dtype=torch.bool)
    for k, b in enumerate(boxes):
        if b is not None:
            m[k, b[0]:b[1], b[2]:b[3]] = True
    return m


# ------------------------------------------------------------------------------------------ matching


def test_hungarian_beats_greedy_on_hand_made_costs() -> None:
    cost = torch.tensor([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
    rows, cols = hungarian(cost)
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [1, 0, 2]
    assert float(cost[rows, cols].sum()) == 5.0
    # greedy (take the global minimum, repeat) picks (1,1), (2,2), (0,0): total 6
    c, greedy, used_r, used_c = cost.clone(), 0.0, set(), set()
    for _ in range(3):
        masked = c.clone()
        for r in used_r:
            masked[r] = math.inf
        for k in used_c:
            masked[:, k] = math.inf
        r, k = divmod(int(masked.argmin()), 3)
        greedy += float(c[r, k])
        used_r.add(r)
        used_c.add(k)
    assert greedy == 6.0
    # more queries than targets: every target gets exactly one query
    rows, cols = hungarian(torch.tensor([[5.0, 5.0], [1.0, 9.0], [9.0, 1.0], [0.5, 0.5]]))
    assert sorted(cols.tolist()) == [0, 1] and len(rows) == 2
    assert hungarian(torch.zeros(4, 0))[0].numel() == 0


@pytest.mark.parametrize("num_points", [None, 256])
def test_matcher_recovers_permutation_of_targets(num_points) -> None:
    g = torch.Generator().manual_seed(0)
    t, h, w = 3, 16, 20
    tgt = torch.zeros(3, t, h, w, dtype=torch.bool)
    tgt[0] = _box(t, h, w, [(0, 6, 0, 6), (1, 7, 1, 7), None])
    tgt[1] = _box(t, h, w, [(8, 16, 10, 20), (8, 16, 9, 19), (8, 16, 8, 18)])
    tgt[2] = _box(t, h, w, [(2, 5, 12, 19), None, (3, 6, 12, 19)])
    perm = [2, 0, 1]  # query q+1 predicts target perm[q]; queries 0 and 4 predict nothing
    pred = torch.full((1, 5, t, h, w), -8.0)
    for q, j in enumerate(perm):
        pred[0, q + 1] = torch.where(tgt[j], 8.0, -8.0)
    matcher = HungarianMatcher(class_weight=2.0, num_points=num_points)
    (rows, cols), = matcher(_outputs(pred), [{"masks": tgt}], generator=g)
    assert dict(zip(rows.tolist(), cols.tolist())) == {1: 2, 2: 0, 3: 1}


def test_match_labeled_frames_only_changes_the_assignment() -> None:
    """Target labelled on frame 0 only. Query 0 matches frame 0 slightly worse but is empty elsewhere; query 1 is
    exact on frame 0 and also segments the (unlabelled) object on frames 1–2. All-frames matching (reference)
    prefers query 0; labelled-frames-only prefers query 1."""
    t, h, w = 3, 12, 12
    tgt = _box(t, h, w, [(2, 8, 2, 8), None, None])[None]
    q0 = _box(t, h, w, [(2, 8, 2, 7), None, None])
    q1 = _box(t, h, w, [(2, 8, 2, 8), (3, 9, 3, 9), (4, 10, 4, 10)])
    pred = torch.stack([q0, q1]).float().mul(16).sub(8)[None]
    out = _outputs(pred)
    rows, _ = HungarianMatcher(0.0, 5.0, 5.0, None, labeled_frames_only=False)(out, [{"masks": tgt}])[0]
    assert rows.tolist() == [0]
    rows, _ = HungarianMatcher(0.0, 5.0, 5.0, None, labeled_frames_only=True)(out, [{"masks": tgt}])[0]
    assert rows.tolist() == [1]


# ------------------------------------------------------------------------------------------ objectness


def test_objectness_loss_hand_computed() -> None:
    logits = torch.tensor([[[2.0, 0.0], [0.5, 1.0], [-1.0, 1.0]]])
    loss = objectness_loss(logits, [torch.tensor([1])], no_object_weight=0.1)
    ce = lambda lg, k: -F.log_softmax(lg, -1)[k]  # noqa: E731
    want = (0.1 * ce(logits[0, 0], 1) + 1.0 * ce(logits[0, 1], 0) + 0.1 * ce(logits[0, 2], 1)) / (0.1 + 1.0 + 0.1)
    assert torch.allclose(loss, want)


def test_criterion_objectness_pushes_matched_query_to_object() -> None:
    pred = torch.full((1, 2, 1, 4, 4), -5.0, requires_grad=True)
    logits = torch.zeros(1, 2, 2, requires_grad=True)
    with torch.no_grad():
        pred[0, 1, 0, :2, :2] = 5.0
    tgt = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    tgt[0, 0, :2, :2] = True
    crit = VideoSetCriterion(LossConfig(num_points=None, deep_supervision=False))
    losses = crit(_outputs(pred, logits), [{"masks": tgt, "labels": torch.zeros(1, dtype=torch.long)}])
    losses["loss"].backward()
    # matched query 1: raise its object logit; unmatched query 0: raise its no-object logit
    assert logits.grad[0, 1, 0] < 0 and logits.grad[0, 0, 1] < 0


# ------------------------------------------------------------------------------------------ mask losses


def test_bce_and_dice_hand_computed_with_all_points() -> None:
    """One object, two frames of 2×2; frame 1 unlabelled. All points used (num_points=None)."""
    x0 = torch.tensor([[2.0, -1.0], [0.0, 1.0]])
    x1 = torch.tensor([[3.0, 3.0], [3.0, 3.0]])
    pred = torch.stack([x0, x1])[None, None]  # 1×1×2×2×2
    tgt = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    tgt[0, 0, 0, 0] = True
    y0 = tgt[0, 0].float()

    def bce(x, y):
        return float((F.softplus(x) - x * y).mean())

    def dice(x, y):
        p = torch.sigmoid(x)
        return float(1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1))

    # hand values on frame 0 (no torch loss functions involved)
    s = [1 / (1 + math.exp(-v)) for v in (2.0, -1.0, 0.0, 1.0)]
    bce0 = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0)) + math.log(2.0) + math.log1p(math.exp(1.0))) / 4
    dice0 = 1 - (2 * s[0] + 1) / (sum(s) + 1 + 1)
    assert abs(bce(x0, y0) - bce0) < 1e-6 and abs(dice(x0, y0) - dice0) < 1e-6

    crit = VideoSetCriterion(LossConfig(**EXACT))
    losses = crit(_outputs(pred), [{"masks": tgt}])
    assert losses["num_pairs"] == 1
    assert abs(float(losses["loss_mask"]) - bce0) < 1e-6
    assert abs(float(losses["loss_dice"]) - dice0) < 1e-6
    assert abs(float(losses["loss"]) - 5 * (bce0 + dice0)) < 1e-5

    # without Temporal DropLoss the empty frame counts (as background), normalised by 1 instance
    full = VideoSetCriterion(LossConfig(**EXACT, temporal_droploss=False))(_outputs(pred), [{"masks": tgt}])
    y1 = torch.zeros(2, 2)
    assert abs(float(full["loss_mask"]) - (bce0 + bce(x1, y1))) < 1e-6
    assert abs(float(full["loss_dice"]) - (dice0 + dice(x1, y1))) < 1e-6


@pytest.mark.parametrize("num_points", [None, 50])
@pytest.mark.parametrize("norm", ["instances", "pairs"])
def test_droploss_ignores_predictions_on_unlabelled_frames(num_points, norm) -> None:
    """(a) Changing the prediction arbitrarily on frames where the target is empty does not change the loss."""
    torch.manual_seed(0)
    t, h, w = 3, 8, 10
    tgt = torch.stack([_box(t, 32, 40, [(4, 20, 4, 24), None, (8, 24, 8, 28)]),
                       _box(t, 32, 40, [None, (16, 30, 20, 38), None])])
    pred = torch.randn(1, 2, t, h, w)
    cfg = LossConfig(num_points=num_points, class_weight=0.0, deep_supervision=False, num_masks_norm=norm)
    crit = VideoSetCriterion(cfg)
    indices = [(torch.tensor([0, 1]), torch.tensor([0, 1]))]
    changed = pred.clone()
    changed[0, 0, 1] = torch.randn(h, w) * 10  # target 0 empty on frame 1
    changed[0, 1, 0] = 7.0                      # target 1 empty on frames 0 and 2
    changed[0, 1, 2] = -3.0
    a = crit.mask_losses(pred, [{"masks": tgt}], indices, 2.0, torch.Generator().manual_seed(5))
    b = crit.mask_losses(changed, [{"masks": tgt}], indices, 2.0, torch.Generator().manual_seed(5))
    assert a["num_pairs"] == b["num_pairs"] == 3
    assert torch.equal(a["loss_mask"], b["loss_mask"]) and torch.equal(a["loss_dice"], b["loss_dice"])
    # the gradient of the unlabelled (object, frame) pairs is exactly zero
    p = changed.clone().requires_grad_(True)
    out = crit.mask_losses(p, [{"masks": tgt}], indices, 2.0, torch.Generator().manual_seed(5))
    (out["loss_mask"] + out["loss_dice"]).backward()
    assert p.grad[0, 0, 1].abs().sum() == 0 and p.grad[0, 1, 0].abs().sum() == 0 and p.grad[0, 1, 2].abs().sum() == 0
    assert p.grad[0, 0, 0].abs().sum() > 0 and p.grad[0, 1, 1].abs().sum() > 0


@pytest.mark.parametrize("norm", ["instances", "pairs"])
def test_droploss_unlabelled_nonoverlapping_frame_equals_clip_without_it(norm) -> None:
    """(b) A prediction on an unlabelled frame that does not overlap the object: the full criterion (matching
    included) gives the same loss as on the clip without that frame."""
    h, w = 16, 16
    tgt = _box(3, h, w, [(2, 8, 2, 8), (3, 9, 3, 9), None])[None]
    pred_tube = _box(3, h, w, [(2, 8, 2, 7), (3, 9, 3, 9), (10, 15, 10, 15)]).float().mul(8).sub(4)
    other = torch.full((3, h, w), -4.0)
    pred = torch.stack([other, pred_tube])[None]
    cfg = LossConfig(num_points=None, deep_supervision=False, num_masks_norm=norm)
    crit = VideoSetCriterion(cfg)
    logits = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    full = crit(_outputs(pred, logits), [{"masks": tgt}])
    cut = crit(_outputs(pred[:, :, :2], logits), [{"masks": tgt[:, :2]}])
    for k in ("loss_mask", "loss_dice", "loss_ce", "loss"):
        assert torch.allclose(full[k], cut[k], atol=1e-7), k
    assert full["num_pairs"] == cut["num_pairs"] == 2
    # without DropLoss the same frame is penalised
    plain = VideoSetCriterion(LossConfig(num_points=None, deep_supervision=False, temporal_droploss=False))
    assert plain(_outputs(pred, logits), [{"masks": tgt}])["loss_mask"] > cut["loss_mask"]


def test_droploss_with_no_labelled_pair_gives_zero_and_valid_graph() -> None:
    pred = torch.randn(1, 3, 2, 4, 4, requires_grad=True)
    logits = torch.zeros(1, 3, 2, requires_grad=True)
    tgt = torch.zeros(1, 2, 16, 16, dtype=torch.bool)  # one object, empty on both frames
    crit = VideoSetCriterion(LossConfig(num_points=64))
    out = {"pred_logits": logits, "pred_masks": pred,
           "aux_outputs": [{"pred_logits": logits * 1.0, "pred_masks": pred * 1.0}]}
    losses = crit(out, [{"masks": tgt}])
    assert float(losses["loss_mask"].detach()) == 0.0 and float(losses["loss_dice"].detach()) == 0.0
    assert float(losses["loss_mask_0"].detach()) == 0.0 and losses["num_pairs"] == 0
    losses["loss"].backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) == 0.0
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0  # objectness still trains
    # no objects at all: everything is no-object
    empty = crit({"pred_logits": logits, "pred_masks": pred}, [{"masks": torch.zeros(0, 2, 16, 16, dtype=torch.bool)}])
    assert float(empty["loss_mask"].detach()) == 0.0 and float(empty["loss_ce"].detach()) > 0


def test_deep_supervision_sums_weighted_terms() -> None:
    torch.manual_seed(0)
    pred = torch.randn(1, 2, 2, 6, 6)
    tgt = _box(2, 6, 6, [(1, 4, 1, 4), None])[None]
    aux = {"pred_logits": torch.randn(1, 2, 2), "pred_masks": torch.randn(1, 2, 2, 6, 6)}
    out = {"pred_logits": torch.randn(1, 2, 2), "pred_masks": pred, "aux_outputs": [aux, aux]}
    crit = VideoSetCriterion(LossConfig(num_points=None))
    losses = crit(out, [{"masks": tgt}])
    total = sum(crit.weights[k] * losses[k + s] for k in ("loss_ce", "loss_mask", "loss_dice") for s in ("", "_0", "_1"))
    assert torch.allclose(losses["loss"], total)
    no_aux_ce = VideoSetCriterion(LossConfig(num_points=None, aux_class_loss=False))(out, [{"masks": tgt}])
    assert "loss_ce_0" not in no_aux_ce and "loss_mask_1" in no_aux_ce


def test_point_sampling_helpers() -> None:
    x = torch.arange(12, dtype=torch.float32).view(1, 1, 3, 4)
    centres = torch.tensor([[[0.125, 1 / 6], [0.875, 5 / 6], [0.375, 0.5]]])
    assert torch.allclose(point_sample(x, centres)[0, 0], torch.tensor([0.0, 11.0, 5.0]), atol=1e-5)
    # importance sampling: the uncertain band (logit 0) of a mask attracts most points
    logits = torch.full((2, 1, 20, 20), 10.0)
    logits[:, :, :, 10:12] = 0.0
    g = torch.Generator().manual_seed(0)
    pts = uncertain_points(logits, 100, 3.0, 0.75, generator=g)
    assert pts.shape == (2, 100, 2)
    in_band = ((pts[..., 0] >= 0.5) & (pts[..., 0] < 0.6)).float().mean()
    assert in_band > 0.25  # uniform sampling would put ~10 % there


def test_objects_absent_from_the_whole_clip_are_ignored() -> None:
    torch.manual_seed(0)
    pred = torch.randn(1, 3, 2, 6, 6)
    logits = torch.randn(1, 3, 2)
    present = _box(2, 6, 6, [(1, 4, 1, 4), None])
    crit = VideoSetCriterion(LossConfig(num_points=None, deep_supervision=False))
    one = crit(_outputs(pred, logits), [{"masks": present[None], "labels": torch.zeros(1, dtype=torch.long)}])
    two = crit(_outputs(pred, logits), [{"masks": torch.stack([present, torch.zeros_like(present)]),
                                         "labels": torch.zeros(2, dtype=torch.long)}])
    for k in ("loss", "loss_ce", "loss_mask", "loss_dice"):
        assert torch.allclose(one[k], two[k]), k


def test_full_criterion_ignores_unlabelled_frames_when_matching_on_labelled_frames() -> None:
    """With ``match_labeled_frames_only`` the whole criterion (matching, deep supervision, importance-sampled
    points) is blind to predictions on frames where no target is labelled."""
    torch.manual_seed(0)
    t, h, w = 3, 8, 8
    tgt = torch.stack([_box(t, 32, 32, [(4, 20, 4, 24), None, None]), _box(t, 32, 32, [(16, 30, 8, 30), None, None])])
    aux = {"pred_logits": torch.randn(1, 4, 2), "pred_masks": torch.randn(1, 4, t, h, w)}
    out = {"pred_logits": torch.randn(1, 4, 2), "pred_masks": torch.randn(1, 4, t, h, w), "aux_outputs": [aux]}
    changed = {"pred_logits": out["pred_logits"], "pred_masks": out["pred_masks"].clone(),
               "aux_outputs": [{"pred_logits": aux["pred_logits"], "pred_masks": aux["pred_masks"].clone()}]}
    changed["pred_masks"][:, :, 1:] = torch.randn(1, 4, 2, h, w) * 5
    changed["aux_outputs"][0]["pred_masks"][:, :, 1:] = 3.0
    crit = VideoSetCriterion(LossConfig(num_points=40, match_labeled_frames_only=True))
    a = crit(out, [{"masks": tgt}], generator=torch.Generator().manual_seed(3))
    b = crit(changed, [{"masks": tgt}], generator=torch.Generator().manual_seed(3))
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
