"""The video Mask2Former (s2d.model): shapes, gradients, deformable attention, configs and checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from s2d.errors import InputError, SettingError
from s2d.model import (
    LossConfig,
    ModelConfig,
    VideoMask2Former,
    VideoSetCriterion,
    apply_overrides,
    model_preset,
    ms_deform_attn_core,
)
from s2d.model.pixel_decoder import MSDeformAttn


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _targets(b: int, t: int, h: int, w: int):
    out = []
    for i in range(b):
        m = torch.zeros(2, t, h, w, dtype=torch.bool)
        m[0, :, 8:30, 10 + i:40 + i] = True
        m[1, 0, 30:60, 50:90] = True  # second object labelled on the first frame only
        out.append({"masks": m, "labels": torch.zeros(2, dtype=torch.long)})
    return out


@pytest.mark.parametrize("decoder", ["fpn", "msdeform"])
@pytest.mark.parametrize("t", [3, 1])
def test_tiny_forward_backward_shapes_and_gradients(decoder: str, t: int) -> None:
    torch.manual_seed(0)
    cfg = model_preset("tiny").replace(pixel_decoder=decoder)
    model = VideoMask2Former(cfg)
    crit = VideoSetCriterion(cfg.loss)
    clips = torch.rand(2, t, 3, 64, 96)
    out = model(clips)
    q = cfg.num_queries
    assert out["pred_logits"].shape == (2, q, 2)
    assert out["pred_masks"].shape == (2, q, t, 16, 24)
    assert len(out["aux_outputs"]) == cfg.dec_layers
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (2, q, 2) and aux["pred_masks"].shape == (2, q, t, 16, 24)
    losses = crit(out, _targets(2, t, 64, 96))
    assert torch.isfinite(losses["loss"])
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_mask_0", "loss_dice_0", "loss_ce_0"} <= set(losses)
    losses["loss"].backward()
    for part in (model.backbone, model.pixel_decoder, model.decoder):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), type(part).__name__
        assert any(g.abs().sum() > 0 for g in grads), type(part).__name__
    # the stride-4 mask path and the query embeddings get gradients
    assert model.pixel_decoder.head.mask_features.weight.grad.abs().sum() > 0
    assert model.decoder.query_feat.weight.grad.abs().sum() > 0


def test_narrow_stride4_path() -> None:
    cfg = model_preset("tiny").replace(res2_dim=16)
    model = VideoMask2Former(cfg)
    out = model(torch.rand(1, 2, 3, 64, 96))
    assert out["pred_masks"].shape == (1, cfg.num_queries, 2, 16, 24)
    assert model.pixel_decoder.head.output[0].weight.shape[0] == 16


def test_odd_input_size_is_padded_and_cropped() -> None:
    model = VideoMask2Former("tiny")
    out = model(torch.rand(1, 2, 3, 50, 70))
    assert out["pred_masks"].shape[-2:] == (13, 18)
    res = model.predict(torch.rand(2, 3, 50, 70), top_k=5)
    assert res["masks"].shape == (5, 2, 50, 70) and res["masks"].dtype == torch.bool
    assert torch.all(res["scores"][:-1] >= res["scores"][1:])
    assert float(res["scores"].min()) >= 0 and float(res["scores"].max()) <= 1
    assert model.training  # predict restores the mode


def test_eval_without_aux_outputs_gives_the_same_prediction() -> None:
    model = VideoMask2Former(model_preset("tiny").replace(dec_layers=4)).eval()
    x = torch.rand(1, 3, 3, 64, 96)
    with torch.no_grad():
        a = model(x, aux=True)
        b = model(x)  # eval mode: no auxiliary outputs
    assert len(a["aux_outputs"]) == 4 and b["aux_outputs"] == []
    assert torch.allclose(a["pred_masks"], b["pred_masks"]) and torch.allclose(a["pred_logits"], b["pred_logits"])


def test_normalized_input_equals_raw_input() -> None:
    model = VideoMask2Former("tiny").eval()
    x = torch.rand(1, 2, 3, 64, 64)
    a = model(x)["pred_masks"]
    b = model(model.backbone.normalize(x.flatten(0, 1)).view_as(x), normalized=True)["pred_masks"]
    assert torch.allclose(a, b, atol=1e-5)
    u8 = (x * 255).round().to(torch.uint8)
    assert torch.allclose(model(u8)["pred_masks"], model(u8.float() / 255)["pred_masks"], atol=1e-5)


def _bilinear_zero_pad(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Explicit bilinear interpolation of ``img`` (D×H×W) at continuous pixel coords (pixel centres at .0)."""
    d, h, w = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(d, dtype=img.dtype)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def test_ms_deform_attn_core_matches_explicit_reference() -> None:
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (2, 2)]
    n, m, d, lq, p = 2, 2, 3, 5, 3
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, d, generator=g, dtype=torch.float64)
    loc = torch.rand(n, lq, m, len(shapes), p, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2  # some outside
    weights = torch.rand(n, lq, m, len(shapes), p, generator=g, dtype=torch.float64)
    weights = weights / weights.flatten(-2).sum(-1)[..., None, None]
    got = ms_deform_attn_core(value, shapes, loc, weights)
    assert got.shape == (n, lq, m * d)
    starts = [0, shapes[0][0] * shapes[0][1]]
    ref = torch.zeros(n, lq, m, d, dtype=torch.float64)
    for b in range(n):
        for q in range(lq):
            for hd in range(m):
                for lvl, (h, w) in enumerate(shapes):
                    img = value[b, starts[lvl]:starts[lvl] + h * w, hd].T.reshape(d, h, w)
                    for k in range(p):
                        x = float(loc[b, q, hd, lvl, k, 0]) * w - 0.5
                        y = float(loc[b, q, hd, lvl, k, 1]) * h - 0.5
                        ref[b, q, hd] += weights[b, q, hd, lvl, k] * _bilinear_zero_pad(img, x, y)
    assert torch.allclose(got, ref.reshape(n, lq, m * d), atol=1e-10)


def test_ms_deform_attn_module_runs_and_backprops() -> None:
    attn = MSDeformAttn(dim=16, levels=2, heads=4, points=2)
    shapes = [(4, 6), (2, 3)]
    src = torch.randn(1, 30, 16, requires_grad=True)
    ref = torch.rand(1, 30, 2, 2)
    out = attn(src, ref, src, shapes)
    assert out.shape == (1, 30, 16)
    out.sum().backward()
    assert src.grad is not None and attn.value_proj.weight.grad is not None


def test_presets_and_overrides() -> None:
    for name in ("tiny", "cpu", "paper"):
        cfg = model_preset(name)
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    paper = model_preset("paper")
    assert (paper.backbone, paper.hidden_dim, paper.num_queries, paper.dec_layers) == ("resnet50", 256, 100, 9)
    assert paper.pixel_decoder == "msdeform" and paper.enc_layers == 6 and paper.enc_dropout == 0.3
    assert (paper.loss.mask_weight, paper.loss.dice_weight, paper.loss.no_object_weight) == (5.0, 5.0, 0.1)
    assert (paper.loss.num_points, paper.loss.oversample_ratio, paper.loss.importance_sample_ratio) == (12544, 3.0, 0.75)
    cfg = apply_overrides(model_preset("tiny"), ["num_queries=5", "loss.num_points=none", "loss.temporal_droploss=false"])
    assert cfg.num_queries == 5 and cfg.loss.num_points is None and cfg.loss.temporal_droploss is False
    with pytest.raises(SettingError):
        model_preset("huge")
    with pytest.raises(SettingError):
        apply_overrides(model_preset("tiny"), ["nope=1"])
    with pytest.raises(SettingError):
        model_preset("tiny").replace(pixel_decoder="unet")
    with pytest.raises(SettingError):
        LossConfig(num_masks_norm="frames").validate()


def test_checkpoint_roundtrip_gives_identical_outputs(tmp_path) -> None:
    torch.manual_seed(1)
    model = VideoMask2Former(model_preset("tiny").replace(pixel_decoder="msdeform")).eval()
    with torch.no_grad():  # make the weights differ from a fresh initialisation
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "sub" / "model.pt"
    model.save_checkpoint(path, extra={"step": 7})
    assert path.is_file() and not list(path.parent.glob("*.tmp*"))
    x = torch.rand(1, 3, 3, 64, 96)
    torch.manual_seed(123)
    loaded = VideoMask2Former.from_checkpoint(path, device="cpu").eval()
    assert loaded.config == model.config
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a["pred_masks"], b["pred_masks"]) and torch.equal(a["pred_logits"], b["pred_logits"])
    fresh = VideoMask2Former(model.config)
    assert fresh.load_checkpoint(path) == {"step": 7}


def test_compact_checkpoint_is_smaller_and_predicts_the_same(tmp_path) -> None:
    # lite0 has an ImageNet classifier head the model never uses: the compact file leaves it out
    torch.manual_seed(2)
    model = VideoMask2Former(model_preset("tiny").replace(backbone="lite0")).eval()
    assert model.unused_backbone_parameters
    full, compact = tmp_path / "full.pt", tmp_path / "compact.pt"
    model.save_checkpoint(full, extra={"step": 3})
    model.save_checkpoint(compact, extra={"step": 3}, compact=True)
    assert compact.stat().st_size < 0.45 * full.stat().st_size
    loaded = VideoMask2Former.from_checkpoint(compact).eval()
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(3, 3, 64, 96)
    a, b = model.predict(x), loaded.predict(x)
    assert torch.allclose(a["mask_logits"], b["mask_logits"], atol=0.05, rtol=0.02)
    agree = (a["masks"] == b["masks"]).float().mean()
    assert agree > 0.99
    assert VideoMask2Former(model.config).load_checkpoint(compact) == {"step": 3, "compact": True}


def test_mismatched_checkpoint_is_one_line_input_error(tmp_path) -> None:
    path = tmp_path / "model.pt"
    VideoMask2Former("tiny").save_checkpoint(path)
    other = VideoMask2Former(model_preset("tiny").replace(pixel_decoder="msdeform", num_queries=4))
    with pytest.raises(InputError) as ei:
        other.load_checkpoint(path)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg
    assert "missing keys" in msg and "unexpected keys" in msg and "shape mismatch" in msg
    assert "pixel_decoder." in msg and "decoder.query_feat.weight" in msg and "in all" in msg
    with pytest.raises(InputError, match="not found"):
        VideoMask2Former.from_checkpoint(tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="unreadable"):
        VideoMask2Former.from_checkpoint(bad)


# ------------------------------------------------------------------------------------------ overfit


def _moving_shapes(n: int = 9, h: int = 64, w: int = 96):
    """A red square moving right along the top and a blue disc moving left along the bottom, on noisy grey."""
    g = torch.Generator().manual_seed(0)
    frames = torch.empty(n, 3, h, w)
    masks = torch.zeros(2, n, h, w, dtype=torch.bool)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for t in range(n):
        f = 0.45 + 0.05 * torch.rand(3, h, w, generator=g)
        square = (yy >= 4 + t) & (yy < 26 + t) & (xx >= 6 + 4 * t) & (xx < 28 + 4 * t)
        disc = (yy - 50) ** 2 + (xx - (80 - 4 * t)) ** 2 < 11 ** 2
        f[:, square] = torch.tensor([0.9, 0.2, 0.1])[:, None]
        f[:, disc] = torch.tensor([0.1, 0.3, 0.9])[:, None]
        frames[t] = f
        masks[0, t], masks[1, t] = square & ~disc, disc  # they never overlap
    return frames, masks


def test_tiny_model_overfits_sparse_labels_and_fills_unlabelled_frames() -> None:
    """Train on 3-frame clips labelled on every 3rd frame only (Temporal DropLoss); the unlabelled frames are
    then predicted with IoU > 0.8."""
    _overfit_sparse_moving_shapes()  # one thread (module fixture): one reduction order


def _overfit_sparse_moving_shapes(seed: int = 0, steps: int = 200) -> None:
    torch.manual_seed(seed)
    frames, masks = _moving_shapes()
    sparse = masks.clone()
    sparse[:, [t for t in range(frames.shape[0]) if t % 3]] = False
    cfg = model_preset("tiny").replace(loss=LossConfig(num_points=None))
    model = VideoMask2Former(cfg)
    crit = VideoSetCriterion(cfg.loss)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        starts = torch.randperm(frames.shape[0] - 2, generator=g)[:2].tolist()
        clips = torch.stack([frames[s:s + 3] for s in starts])
        losses = crit(model(clips), [{"masks": sparse[:, s:s + 3]} for s in starts])
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    ious = []
    for s in (0, 3, 6):  # each window: frame s labelled, s+1 and s+2 not
        res = model.predict(frames[s:s + 3], top_k=2)
        assert float(res["scores"].min()) > 0.5
        for obj in range(2):
            lab = masks[obj, s]
            inter = (res["masks"][:, 0] & lab).flatten(1).sum(1)
            union = (res["masks"][:, 0] | lab).flatten(1).sum(1)
            k = int((inter.float() / union.float()).argmax())  # the query of this object (on the labelled frame)
            for dt in (1, 2):
                p, gt = res["masks"][k, dt], masks[obj, s + dt]
                ious.append(float((p & gt).sum()) / float((p | gt).sum()))
    assert min(ious) > 0.8, ious


def test_paper_architecture_builds_and_runs_small() -> None:
    model = VideoMask2Former("paper", backbone_random_init=True).eval()
    assert len(model.decoder.cross) == 9 and len(model.pixel_decoder.layers) == 6
    with torch.no_grad():
        out = model(torch.rand(1, 2, 3, 64, 64), aux=True)
    assert out["pred_logits"].shape == (1, 100, 2) and out["pred_masks"].shape == (1, 100, 2, 16, 16)
    assert len(out["aux_outputs"]) == 9  # the reference's "9 + 1" predictions
    n = sum(p.numel() for p in model.parameters())
    assert 40e6 < n < 50e6  # Mask2Former R50 (~44 M)


@pytest.mark.parametrize("key_pos", [True, False])
def test_decoder_self_attention_matches_the_reference_form(key_pos):
    """self_attn_key_pos=True is Mask2Former's SelfAttentionLayer.forward_post (q = k = tgt + query_pos,
    value = tgt, residual, LayerNorm); False keeps the layout default.pt was trained with (pos on q only)."""
    from s2d.model.transformer_decoder import _AttnLayer

    torch.manual_seed(0)
    layer = _AttnLayer(16, 4, 0.0, False, self_key_pos=key_pos).eval()
    tgt, pos = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    got = layer(tgt, pos, tgt, None, self_attn=True)
    q = tgt + pos
    k = q if key_pos else tgt
    want = layer.norm(tgt + layer.attn(q, k, tgt, need_weights=False)[0])
    assert torch.allclose(got, want, atol=1e-6)
    assert model_preset("paper").self_attn_key_pos and not model_preset("cpu").self_attn_key_pos
