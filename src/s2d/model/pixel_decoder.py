"""Pixel decoders: backbone pyramid → stride-4 mask features + multi-scale memory for the transformer decoder.

Two variants behind one interface (``forward(feats) -> (mask_features, memory)``):

* :class:`MSDeformPixelDecoder` — Mask2Former's: a multi-scale deformable-attention encoder over res3–res5,
  then a top-down lateral path to res2. The deformable attention runs in pure PyTorch
  (:func:`ms_deform_attn_core`, bilinear sampling with ``grid_sample``), so no compiled op is needed.
* :class:`FPNPixelDecoder` — a plain top-down FPN (lateral 1×1 + output 3×3 convs); cheaper on CPU.

Both work per frame (a clip of T frames is a batch of ``B·T`` images). ``memory`` lists the res5, res4 and
res3 maps (coarse → fine, strides 32, 16, 8), each ``N×conv_dim×h×w``; ``mask_features`` is
``N×mask_dim×H/4×W/4``.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ms_deform_attn_core", "MSDeformAttn", "MSDeformPixelDecoder", "FPNPixelDecoder",
           "sine_position_2d", "build_pixel_decoder", "group_norm"]

MEMORY_LEVELS = ("res5", "res4", "res3")


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with at most ``groups`` groups that divide ``channels``."""
    g = math.gcd(channels, groups)
    return nn.GroupNorm(g, channels)


def sine_position_2d(n: int, h: int, w: int, dim: int, device: torch.device, dtype: torch.dtype,
                     temperature: float = 10000.0) -> torch.Tensor:
    """DETR-style normalised sine position encoding, ``n×dim×h×w`` (``dim/2`` channels for y, then x)."""
    half = dim // 2
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 1) / (h + 1e-6) * 2 * math.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 1) / (w + 1e-6) * 2 * math.pi
    pos = torch.cat([sine_1d(ys, half)[:, None, :].expand(h, w, half),
                     sine_1d(xs, dim - half)[None, :, :].expand(h, w, dim - half)], dim=-1)
    return pos.permute(2, 0, 1).unsqueeze(0).expand(n, dim, h, w).to(dtype)


def sine_1d(coord: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """``len(coord)×dim`` interleaved sin/cos encoding of (already scaled) coordinates."""
    i = torch.arange(dim, device=coord.device, dtype=torch.float32)
    freq = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / max(dim, 1))
    ang = coord[:, None] / freq[None, :]
    return torch.where(i.long() % 2 == 0, ang.sin(), ang.cos())


# ----------------------------------------------------------------------------------- deformable attention


def ms_deform_attn_core(value: torch.Tensor, shapes: Sequence[Tuple[int, int]], locations: torch.Tensor,
                        weights: torch.Tensor) -> torch.Tensor:
    """Multi-scale deformable attention, pure PyTorch.

    Args:
        value: ``N×S×M×D`` values of all levels concatenated (``S = Σ h_l·w_l``, ``M`` heads of size ``D``).
        shapes: ``(h_l, w_l)`` of each level, in the order of ``value``.
        locations: ``N×Lq×M×L×P×2`` sampling locations ``(x, y)`` in [0, 1] relative to each level's extent
            (0 = left/top edge, 1 = right/bottom edge of the map).
        weights: ``N×Lq×M×L×P`` attention weights (softmax over ``L·P`` already applied).

    Returns:
        ``N×Lq×(M·D)``: for each query and head, ``Σ_{l,p} weight · bilinear(value_l, location)`` with zero
        padding outside the map (``grid_sample``, ``align_corners=False``).
    """
    n, _, m, d = value.shape
    _, lq, _, nl, npnt, _ = locations.shape
    splits = [h * w for h, w in shapes]  # no int() anywhere here: sizes stay symbolic in an ONNX export
    per_level = value.split(splits, dim=1)
    grids = 2 * locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = per_level[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (N·M)×Lq×P×2
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    # (N·M)×D×Lq×L×P
    stacked = torch.stack(sampled, dim=-2).flatten(-2)
    attn_w = weights.transpose(1, 2).reshape(n * m, 1, lq, nl * npnt)
    out = (stacked * attn_w).sum(-1).view(n, m * d, lq)
    return out.transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR) over ``levels`` feature maps."""

    def __init__(self, dim: int, levels: int, heads: int, points: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.dim, self.levels, self.heads, self.points = dim, levels, heads, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        # initial offsets: one direction per head, growing with the point index
        theta = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.heads, 1, 1, 2).repeat(1, self.levels, self.points, 1)
        grid = grid * torch.arange(1, self.points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, reference: torch.Tensor, value_in: torch.Tensor,
                shapes: Sequence[Tuple[int, int]]) -> torch.Tensor:
        """``query`` N×Lq×C, ``reference`` N×Lq×L×2 (x, y in [0, 1]), ``value_in`` N×S×C → N×Lq×C."""
        n, lq, _ = query.shape
        value = self.value_proj(value_in).view(n, value_in.shape[1], self.heads, self.dim // self.heads)
        offsets = self.sampling_offsets(query).view(n, lq, self.heads, self.levels, self.points, 2)
        attn = self.attention_weights(query).view(n, lq, self.heads, self.levels * self.points)
        attn = attn.softmax(-1).view(n, lq, self.heads, self.levels, self.points)
        # offsets in pixels of each level → fractions of its extent (divided level by level, not by a tensor of
        # the sizes, so that an ONNX export keeps the frame size dynamic)
        scaled = torch.stack([torch.stack([offsets[:, :, :, i, :, 0] / w, offsets[:, :, :, i, :, 1] / h], -1)
                              for i, (h, w) in enumerate(shapes)], 3)
        loc = reference[:, :, None, :, None, :] + scaled
        out = ms_deform_attn_core(value, shapes, loc, attn)
        return self.output_proj(out)


class _EncoderLayer(nn.Module):
    def __init__(self, dim: int, ffn: int, levels: int, heads: int, points: int, dropout: float) -> None:
        super().__init__()
        self.attn = MSDeformAttn(dim, levels, heads, points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, ref: torch.Tensor,
                shapes: Sequence[Tuple[int, int]]) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x + pos, ref, x, shapes)))
        return self.norm2(x + self.drop(self.ffn(x)))


def _reference_points(shapes: Sequence[Tuple[int, int]], n: int, device: torch.device,
                      dtype: torch.dtype) -> torch.Tensor:
    """Pixel centres of every level (normalised to [0, 1]), ``n×S×L×2`` (the same point seen on all levels)."""
    refs = []
    for h, w in shapes:
        ys, xs = torch.meshgrid((torch.arange(h, device=device, dtype=dtype) + 0.5) / h,
                                (torch.arange(w, device=device, dtype=dtype) + 0.5) / w, indexing="ij")
        refs.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
    ref = torch.cat(refs, 0)
    return ref[None, :, None, :].expand(n, ref.shape[0], len(shapes), 2)


class _OutputHead(nn.Module):
    """Top-down lateral path from the finest memory level (stride 8) to res2 and the 1×1 mask-feature projection.

    ``res2_dim`` (default ``conv_dim``) sets the width of the stride-4 convs — the most expensive part of the
    pixel decoder at high resolution; when it differs, the memory is first projected by a 1×1 conv.
    """

    def __init__(self, in_ch: int, conv_dim: int, mask_dim: int, res2_dim: Optional[int] = None) -> None:
        super().__init__()
        res2_dim = res2_dim or conv_dim
        self.top = nn.Identity() if res2_dim == conv_dim else nn.Conv2d(conv_dim, res2_dim, 1)
        self.lateral = nn.Sequential(nn.Conv2d(in_ch, res2_dim, 1, bias=False), group_norm(res2_dim))
        self.output = nn.Sequential(nn.Conv2d(res2_dim, res2_dim, 3, padding=1, bias=False), group_norm(res2_dim),
                                    nn.ReLU(inplace=True))
        self.mask_features = nn.Conv2d(res2_dim, mask_dim, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, res2: torch.Tensor, finest: torch.Tensor) -> torch.Tensor:
        y = self.lateral(res2)
        y = y + F.interpolate(self.top(finest), size=y.shape[-2:], mode="bilinear", align_corners=False)
        return self.mask_features(self.output(y))


class MSDeformPixelDecoder(nn.Module):
    """Mask2Former's ``MSDeformAttnPixelDecoder``: deformable encoder over res3–res5 + lateral path to res2."""

    def __init__(self, in_channels: Dict[str, int], conv_dim: int, mask_dim: int, layers: int, heads: int,
                 points: int, ffn: int, dropout: float = 0.0, res2_dim: Optional[int] = None) -> None:
        super().__init__()
        self.conv_dim = conv_dim
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels[k], conv_dim, 1), group_norm(conv_dim)) for k in MEMORY_LEVELS)
        for proj in cast(Iterable[nn.Sequential], self.input_proj):
            conv = cast(nn.Conv2d, proj[0])
            assert conv.bias is not None  # Conv2d's default bias=True
            nn.init.xavier_uniform_(conv.weight, gain=1)
            nn.init.zeros_(conv.bias)
        self.level_embed = nn.Parameter(torch.randn(len(MEMORY_LEVELS), conv_dim) * 0.02)
        self.layers = nn.ModuleList(_EncoderLayer(conv_dim, ffn, len(MEMORY_LEVELS), heads, points, dropout)
                                    for _ in range(layers))
        self.head = _OutputHead(in_channels["res2"], conv_dim, mask_dim, res2_dim)

    def forward(self, feats: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        srcs = [proj(feats[k]) for proj, k in zip(self.input_proj, MEMORY_LEVELS)]
        n = srcs[0].shape[0]
        shapes = [(s.shape[-2], s.shape[-1]) for s in srcs]
        x = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat([
            (sine_position_2d(n, h, w, self.conv_dim, s.device, s.dtype).flatten(2).transpose(1, 2)
             + self.level_embed[i].to(s.dtype)) for i, (s, (h, w)) in enumerate(zip(srcs, shapes))], 1)
        ref = _reference_points(shapes, n, x.device, x.dtype)
        for layer in self.layers:
            x = layer(x, pos, ref, shapes)
        memory = [m.transpose(1, 2).reshape(n, self.conv_dim, h, w)
                  for m, (h, w) in zip(x.split([h * w for h, w in shapes], 1), shapes)]
        return self.head(feats["res2"], memory[-1]), memory


class FPNPixelDecoder(nn.Module):
    """Plain FPN: lateral 1×1 convs, top-down sum, 3×3 output convs (GroupNorm + ReLU)."""

    def __init__(self, in_channels: Dict[str, int], conv_dim: int, mask_dim: int,
                 res2_dim: Optional[int] = None) -> None:
        super().__init__()
        self.conv_dim = conv_dim
        self.lateral = nn.ModuleList(nn.Sequential(nn.Conv2d(in_channels[k], conv_dim, 1, bias=False),
                                                   group_norm(conv_dim)) for k in MEMORY_LEVELS)
        self.output = nn.ModuleList(nn.Sequential(nn.Conv2d(conv_dim, conv_dim, 3, padding=1, bias=False),
                                                  group_norm(conv_dim), nn.ReLU(inplace=True))
                                    for _ in MEMORY_LEVELS)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
        self.head = _OutputHead(in_channels["res2"], conv_dim, mask_dim, res2_dim)

    def forward(self, feats: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        memory: List[torch.Tensor] = []
        prev = None
        for lat, out, k in zip(self.lateral, self.output, MEMORY_LEVELS):
            y = lat(feats[k])
            if prev is not None:
                y = y + F.interpolate(prev, size=y.shape[-2:], mode="nearest")
            prev = out(y)
            memory.append(prev)
        return self.head(feats["res2"], memory[-1]), memory


def build_pixel_decoder(cfg, in_channels: Dict[str, int]) -> nn.Module:
    """The pixel decoder ``cfg.pixel_decoder`` names (``"msdeform"`` or ``"fpn"``) for a backbone's channels."""
    if cfg.pixel_decoder == "msdeform":
        return MSDeformPixelDecoder(in_channels, cfg.conv_dim, cfg.mask_dim, cfg.enc_layers, cfg.enc_heads,
                                    cfg.enc_points, cfg.enc_ffn, cfg.enc_dropout, cfg.res2_dim)
    return FPNPixelDecoder(in_channels, cfg.conv_dim, cfg.mask_dim, cfg.res2_dim)
