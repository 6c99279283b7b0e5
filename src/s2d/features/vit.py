"""Vision Transformer backbones with the official DINO and DINOv2 weights (``dino_vits16``, ``dino_vits8``,
``dino_vitb8``, ``dinov2_vits14``).

The architectures are timm's (``vit_small_patch16_224``, ``vit_small_patch8_224``,
``vit_base_patch8_224``, ``vit_small_patch14_dinov2``), built without downloading anything; the weights
come from the official checkpoint files, passed by path:

=================  ===========================================  ====================================
name               official file                                architecture
=================  ===========================================  ====================================
``dino_vits16``    ``dino_deitsmall16_pretrain.pth``             ViT-S/16, 384 channels, 6 heads
``dino_vits8``     ``dino_deitsmall8_pretrain.pth``              ViT-S/8, 384 channels, 6 heads
``dino_vitb8``     ``dino_vitbase8_pretrain.pth``                ViT-B/8, 768 channels, 12 heads
``dinov2_vits14``  ``dinov2_vits14_pretrain.pth``                ViT-S/14 with LayerScale, 384 ch.
=================  ===========================================  ====================================

Official key layout (``facebookresearch/dino`` ``vision_transformer.py``; ``facebookresearch/dinov2``
``dinov2/models/vision_transformer.py``): ``cls_token``, ``pos_embed`` (a 14×14 grid + 1 for DINO
at 224 px — 28×28 + 1 for patch 8 —, 37×37 + 1 for DINOv2 at 518 px), ``patch_embed.proj.{weight,bias}``,
``blocks.{i}.norm1``, ``blocks.{i}.attn.qkv``, ``blocks.{i}.attn.proj``, ``blocks.{i}.norm2``,
``blocks.{i}.mlp.fc1``, ``blocks.{i}.mlp.fc2`` (each ``.weight`` and ``.bias``), DINOv2 also
``blocks.{i}.ls1.gamma``, ``blocks.{i}.ls2.gamma`` and ``mask_token`` (unused here), and ``norm``.
timm uses the same names, so the mapping is the identity except: DINOv2's ``mask_token`` is dropped,
and the chunked block names of DINOv2 training checkpoints (``blocks.{chunk}.{i}.*``, FSDP
``block_chunks > 0``) become ``blocks.{i}.*``. Wrappers (``teacher``, ``module.``, ``backbone.``) are
handled by :func:`s2d.features.checkpoint.read_state_dict`.

The forward pass follows the official code, including its position-embedding interpolation for
other input sizes (bicubic with ``scale_factor = (h + 0.1) / M``, no antialiasing — DINO and DINOv2
``interpolate_offset=0.1``), so features equal those of the official models.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from s2d.errors import SettingError
from s2d.features.base import FACETS, LEVELS, Backbone, level_sizes, resample
from s2d.features.checkpoint import check_layout, load_into, read_state_dict

__all__ = ["ViTConfig", "VIT_CONFIGS", "ViTBackbone", "official_vit_to_timm"]


@dataclass(frozen=True)
class ViTConfig:
    """One ViT backbone: timm architecture, patch size, channels and the official checkpoint's file name."""

    timm_arch: str
    patch: int
    dim: int
    family: str  # "dino" or "dinov2"
    official_file: str


VIT_CONFIGS: Dict[str, ViTConfig] = {
    "dino_vits16": ViTConfig("vit_small_patch16_224", 16, 384, "dino", "dino_deitsmall16_pretrain.pth"),
    "dino_vits8": ViTConfig("vit_small_patch8_224", 8, 384, "dino", "dino_deitsmall8_pretrain.pth"),
    "dino_vitb8": ViTConfig("vit_base_patch8_224", 8, 768, "dino", "dino_vitbase8_pretrain.pth"),
    "dinov2_vits14": ViTConfig("vit_small_patch14_dinov2", 14, 384, "dinov2", "dinov2_vits14_pretrain.pth"),
}

_IGNORED = {"dino": (), "dinov2": ("mask_token",)}
_CHUNKED = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.+)$")


def official_vit_to_timm(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename an official DINO/DINOv2 state dict to timm's ViT names (identity but for chunked blocks)."""
    out: Dict[str, torch.Tensor] = {}
    for k, v in state.items():
        m = _CHUNKED.match(k)
        out[f"blocks.{m.group(2)}.{m.group(3)}" if m else k] = v
    return out


def _timm_vit(arch: str, meta: bool) -> nn.Module:
    import timm

    if meta:
        with torch.device("meta"):
            return timm.create_model(arch, pretrained=False, num_classes=0)
    return timm.create_model(arch, pretrained=False, num_classes=0)


class ViTBackbone(Backbone):
    """A DINO / DINOv2 ViT: patch features from the last layer (facet ``key``, ``value`` or ``token``).

    ``stride`` is the patch size; ``dim`` the embedding width. :meth:`multiscale` builds a parameter-free
    simple feature pyramid from the last layer's normalised tokens (as ViTDet, but with bilinear
    resampling instead of learned (de)convolutions, which belong to the trainable model): every level
    has ``dim`` channels.
    """

    def __init__(self, name: str, weights: Optional[str] = None, facet: str = "key",
                 stride: Optional[int] = None, *, random_init: bool = False) -> None:
        cfg = VIT_CONFIGS[name]
        if stride is not None and stride != cfg.patch:
            raise SettingError(f"backbone {name}: stride is the patch size {cfg.patch}, got {stride}")
        if facet not in FACETS:
            raise SettingError(f"backbone {name}: facet must be one of {', '.join(FACETS)}, got {facet!r}")
        if weights is None and not random_init:
            raise SettingError(f"backbone {name} needs weights: {name}:PATH (the official {cfg.official_file})")
        super().__init__(name, cfg.patch, cfg.dim, {k: cfg.dim for k in LEVELS}, weights=weights)
        self.config = cfg
        self.facet = facet
        vit: Any  # a timm VisionTransformer: its parts are read by name
        if random_init:
            vit = _timm_vit(cfg.timm_arch, meta=False)
        else:
            assert weights is not None  # None without random_init raised above
            vit = _timm_vit(cfg.timm_arch, meta=True)
            expected = {k: tuple(v.shape) for k, v in vit.state_dict().items()}
            state = official_vit_to_timm(read_state_dict(weights))
            check_layout(weights, name, state, expected, ignored=_IGNORED[cfg.family])
            vit = vit.to_empty(device="cpu")
            load_into(vit, state)
        for part in ("norm_pre", "patch_drop", "pos_drop"):
            if not isinstance(getattr(vit, part, nn.Identity()), (nn.Identity, nn.Dropout)):
                raise RuntimeError(f"unexpected timm {cfg.timm_arch}: {part} is not an identity")  # pragma: no cover
        self.vit: Any = vit.eval()
        self.num_heads = int(vit.blocks[-1].attn.num_heads)

    # --------------------------------------------------------------------------- official forward

    def pos_embed_for(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings ``1×(1+h*w)×dim`` for an ``h×w`` patch grid, interpolated as the official code."""
        pe = self.vit.pos_embed
        n = pe.shape[1] - 1
        if n == h * w and h == w:
            return pe
        m = int(math.sqrt(n))
        grid = pe[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), scale_factor=((h + 0.1) / m, (w + 0.1) / m), mode="bicubic",
                             align_corners=False)
        if tuple(grid.shape[-2:]) != (h, w):  # pragma: no cover - the +0.1 offset exists to prevent this
            raise RuntimeError(f"position embedding interpolated to {tuple(grid.shape[-2:])}, not {(h, w)}")
        grid = grid.to(pe.dtype).permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([pe[:, :1], grid], dim=1)

    def _tokens_before_last(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """Tokens (cls first) entering the last block, and the patch grid ``(h, w)``."""
        p = self.vit.patch_embed
        t = p.proj(x)
        h, w = t.shape[-2:]
        t = t.flatten(2).transpose(1, 2)
        if hasattr(p, "norm"):
            t = p.norm(t)
        t = torch.cat([self.vit.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        t = t + self.pos_embed_for(h, w)
        for block in self.vit.blocks[:-1]:
            t = block(t)
        return t, int(h), int(w)

    def last_layer(self, x: torch.Tensor, facet: Optional[str] = None) -> torch.Tensor:
        """``B×dim×h×w`` last-layer features of a normalised input whose sides are multiples of the patch.

        ``facet``: ``"key"`` / ``"value"`` — the last block's attention keys / values (heads
        concatenated, as MaskCut), ``"token"`` — the last block's output after the final LayerNorm.
        The class token is dropped.
        """
        facet = facet or self.facet
        t, h, w = self._tokens_before_last(x)
        last = self.vit.blocks[-1]
        B, N, C = t.shape
        if facet == "token":
            f = self.vit.norm(last(t))
        elif facet in ("key", "value"):
            attn = last.attn
            qkv = attn.qkv(last.norm1(t)).reshape(B, N, 3, self.num_heads, C // self.num_heads)
            qkv = qkv.permute(2, 0, 3, 1, 4)  # 3 × B × heads × N × head_dim
            f = attn.k_norm(qkv[1]) if facet == "key" else qkv[2]
            f = f.transpose(1, 2).reshape(B, N, C)
        else:
            raise SettingError(f"facet must be one of {', '.join(FACETS)}, got {facet!r}")
        return f[:, 1:].transpose(1, 2).reshape(B, C, h, w)

    def _patch_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(x, self.facet)

    def multiscale(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        H, W = x.shape[-2:]
        p = self.stride
        pad_h, pad_w = (-H) % p, (-W) % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # zeros after normalisation = the mean colour
        f = self.last_layer(x, "token")
        sizes = level_sizes(H, W)
        return {k: resample(f, sizes[k]) for k in LEVELS}
