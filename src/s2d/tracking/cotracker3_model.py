"""The CoTracker3 *offline* network (Karaev et al. 2024) in plain PyTorch, with the official parameter names.

The module tree mirrors the layout of the official ``scaled_offline.pth`` state dict (``fnet.*`` feature
encoder, ``updateformer.*`` transformer, ``corr_mlp.*``, the ``time_emb`` buffer), so the official weights
load with a strict ``load_state_dict``. The computation follows the official offline model step by step —
same tensor operations in the same order — because the equality check (``benchmarks/cotracker3_equality.py``)
asks for tracks within 1e-4 px of the official implementation.

One forward pass (:meth:`CoTracker3Offline.forward`) on a clip at the model resolution:

1. the encoder maps every frame to 128-d features at stride 4, L2-normalised per pixel, plus three 2×
   average-pooled levels (a 4-level pyramid);
2. each query samples a 7×7 patch of features around itself at its query frame on every level;
3. ``iters`` refinement steps: at the current estimate of every point on every frame, a 7×7 patch of the
   frame's features is correlated with the query's 7×7 patch (a 7⁴ = 2401-d correlation per level, embedded
   by ``corr_mlp``); with the visibility and confidence logits and a sine encoding of the motion to the
   neighbouring frames this forms one token per (point, frame); the update transformer (attention over time
   per point, and across points through 64 learned *virtual tracks* per frame) predicts increments of the
   position, visibility and confidence.

Coordinates are ``(x, y)`` in pixels of the model-resolution frames, pixel centres at integers.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CoTracker3Offline", "BasicEncoder", "UpdateFormer", "grid_points", "random_state_dict",
           "feature_maps"]

STRIDE = 4
LATENT_DIM = 128
HIDDEN_SIZE = 384
CORR_RADIUS = 3
CORR_LEVELS = 4
NUM_VIRTUAL = 64
# token width: visibility + confidence logits, 4 levels × 256-d correlation embedding, sine encoding of the
# 4 relative-motion numbers (4 + 4·2·10)
INPUT_DIM = 1110


# --------------------------------------------------------------------------- small helpers


def grid_points(size: int, extent: Tuple[int, int], device: Optional[torch.device] = None) -> torch.Tensor:
    """``1×size²×2`` ``(x, y)`` points of a regular grid over an ``extent = (H, W)`` frame, row-major, with a
    margin of ``W/64`` from the border (CoTracker's support-grid layout)."""
    if size == 1:
        return torch.tensor([extent[1] / 2, extent[0] / 2], device=device)[None, None]
    h, w = extent
    margin = w / 64
    ys = torch.linspace(margin, h - margin, size, device=device)
    xs = torch.linspace(margin, w - margin, size, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(1, -1, 2)


def sample_grid(field: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear (trilinear for a 5-D ``field``) sampling at pixel coordinates, borders clamped.

    ``field`` is ``B×C×H×W`` with ``coords`` ``(x, y)``, or ``B×C×T×H×W`` with ``coords`` ``(t, x, y)``;
    pixel centres at integers (``align_corners=True``).
    """
    sizes = field.shape[2:]
    if len(sizes) == 3:
        coords = coords[..., [1, 2, 0]]  # (t, x, y) → grid_sample's (x, y, t)
    factors = torch.tensor([2 / max(s - 1, 1) for s in reversed(sizes)], device=coords.device)
    coords = coords * factors
    coords -= 1
    return F.grid_sample(field, coords, align_corners=True, padding_mode="border")


def patch_offsets(radius: int, device: torch.device) -> torch.Tensor:
    """``(2r+1)×(2r+1)×3`` offsets ``(0, dx, dy)``: the first patch axis moves x, the second moves y."""
    d = torch.linspace(-radius, radius, 2 * radius + 1, device=device)
    first, second = torch.meshgrid(d, d, indexing="ij")
    return torch.stack([torch.zeros_like(first), first, second], dim=-1)


def patch_points(centres: torch.Tensor, radius: int) -> torch.Tensor:
    """``B×N×3`` ``(t, x, y)`` centres → ``B×N×k×k×3`` patch points (``k = 2r+1``)."""
    b, n, _ = centres.shape
    k = 2 * radius + 1
    return centres.reshape(b, n, 1, 1, 3) + patch_offsets(radius, centres.device).view(1, 1, k, k, 3)


def sine_encoding(x: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """``x`` followed by ``sin`` and ``cos`` (as ``sin(· + π/2)``) of ``x·2^k``, ``k = 0..num_freqs-1``."""
    scales = torch.tensor([2 ** i for i in range(num_freqs)], dtype=x.dtype, device=x.device)
    xb = (x[..., None, :] * scales[:, None]).reshape(list(x.shape[:-1]) + [-1])
    return torch.cat([x, torch.sin(torch.cat([xb, xb + 0.5 * torch.pi], dim=-1))], dim=-1)


def sincos_time_embedding(dim: int, length: int) -> torch.Tensor:
    """``1×length×dim`` sine/cosine embedding of the frame index (the ``time_emb`` buffer)."""
    omega = torch.arange(dim // 2, dtype=torch.double) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    pos = torch.linspace(0, length - 1, length).reshape(-1)
    out = torch.einsum("m,d->md", pos, omega)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)[None].float()


# --------------------------------------------------------------------------- feature encoder


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with instance norm and ReLU, plus a (strided 1×1) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1)
        self.norm1 = nn.InstanceNorm2d(planes)
        self.norm2 = nn.InstanceNorm2d(planes)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride),
                                            nn.InstanceNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


class BasicEncoder(nn.Module):
    """Per-frame CNN: four residual stages (strides 2, 4, 8, 16) fused at stride 4 into 128-d features."""

    def __init__(self, output_dim: int = LATENT_DIM, stride: int = STRIDE) -> None:
        super().__init__()
        self.stride = stride
        half, three_q = output_dim // 2, output_dim // 4 * 3
        self.conv1 = nn.Conv2d(3, half, kernel_size=7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(half)
        self.layer1 = self._stage(half, half, 1)
        self.layer2 = self._stage(half, three_q, 2)
        self.layer3 = self._stage(three_q, output_dim, 2)
        self.layer4 = self._stage(output_dim, output_dim, 2)
        self.conv2 = nn.Conv2d(half + three_q + 2 * output_dim, output_dim * 2, kernel_size=3, padding=1)
        self.norm2 = nn.InstanceNorm2d(output_dim * 2)
        self.conv3 = nn.Conv2d(output_dim * 2, output_dim, kernel_size=1)

    @staticmethod
    def _stage(in_planes: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(ResidualBlock(in_planes, planes, stride), ResidualBlock(planes, planes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        a = self.layer1(F.relu(self.norm1(self.conv1(x))))
        b = self.layer2(a)
        c = self.layer3(b)
        d = self.layer4(c)
        size = (h // self.stride, w // self.stride)
        parts = [F.interpolate(f, size, mode="bilinear", align_corners=True) for f in (a, b, c, d)]
        x = F.relu(self.norm2(self.conv2(torch.cat(parts, dim=1))))
        return self.conv3(x)


# --------------------------------------------------------------------------- update transformer


class Mlp(nn.Module):
    """Linear → GELU → linear (``tanh_gelu`` selects the tanh approximation of GELU)."""

    def __init__(self, in_features: int, hidden: int, out_features: Optional[int] = None,
                 tanh_gelu: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, out_features or in_features)
        self.approximate = "tanh" if tanh_gelu else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class Attention(nn.Module):
    """Multi-head attention (8 heads of 48) with a joint key/value projection."""

    def __init__(self, dim: int, num_heads: int = 8, dim_head: int = 48) -> None:
        super().__init__()
        inner = dim_head * num_heads
        self.scale = dim_head ** -0.5
        self.heads = num_heads
        self.to_q = nn.Linear(dim, inner)
        self.to_kv = nn.Linear(dim, inner * 2)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n1, c = x.shape
        h = self.heads
        context = x if context is None else context
        q = self.to_q(x).reshape(b, n1, h, c // h).permute(0, 2, 1, 3)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        n2 = context.shape[1]
        k = k.reshape(b, n2, h, c // h).permute(0, 2, 1, 3)
        v = v.reshape(b, n2, h, c // h).permute(0, 2, 1, 3)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.to_out((attn @ v).transpose(1, 2).reshape(b, n1, c))


class AttnBlock(nn.Module):
    """Pre-norm self-attention block with a 4× MLP."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, dim * 4, tanh_gelu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Pre-norm cross-attention block (queries ``x``, keys/values a normalised ``context``) with a 4× MLP."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, dim * 4, tanh_gelu=True)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.cross_attn(self.norm1(x), context=self.norm_context(context))
        return x + self.mlp(self.norm2(x))


class UpdateFormer(nn.Module):
    """Alternating attention over time (per track) and across tracks (through virtual tracks, per frame).

    Input ``B×N×T×INPUT_DIM`` tokens; output ``B×N×T×4``: Δx, Δy, Δvisibility-logit, Δconfidence-logit.
    The attribute name ``virual_tracks`` is the official (misspelt) parameter name.
    """

    def __init__(self, depth: int = 3, num_heads: int = 8) -> None:
        super().__init__()
        self.input_transform = nn.Linear(INPUT_DIM, HIDDEN_SIZE)
        self.flow_head = nn.Linear(HIDDEN_SIZE, 2)
        self.vis_conf_head = nn.Linear(HIDDEN_SIZE, 2)
        self.virual_tracks = nn.Parameter(torch.randn(1, NUM_VIRTUAL, 1, HIDDEN_SIZE))
        self.time_blocks = nn.ModuleList([AttnBlock(HIDDEN_SIZE, num_heads) for _ in range(depth)])
        self.space_virtual_blocks = nn.ModuleList([AttnBlock(HIDDEN_SIZE, num_heads) for _ in range(depth)])
        self.space_point2virtual_blocks = nn.ModuleList([CrossAttnBlock(HIDDEN_SIZE, num_heads)
                                                         for _ in range(depth)])
        self.space_virtual2point_blocks = nn.ModuleList([CrossAttnBlock(HIDDEN_SIZE, num_heads)
                                                         for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.input_transform(x)
        b, _, t, _ = tokens.shape
        tokens = torch.cat([tokens, self.virual_tracks.repeat(b, 1, t, 1)], dim=1)
        n = tokens.shape[1]
        for i, time_block in enumerate(self.time_blocks):
            tokens = time_block(tokens.contiguous().view(b * n, t, -1)).view(b, n, t, -1)
            tokens = self._space_step(tokens, i)
        tokens = tokens[:, : n - NUM_VIRTUAL]
        return torch.cat([self.flow_head(tokens), self.vis_conf_head(tokens)], dim=-1)

    def _space_step(self, tokens: torch.Tensor, i: int) -> torch.Tensor:
        """Per frame: virtual tracks read the points, attend among themselves, and the points read them."""
        b, n, t, _ = tokens.shape
        space = tokens.permute(0, 2, 1, 3).contiguous().view(b * t, n, -1)
        points, virtual = space[:, : n - NUM_VIRTUAL], space[:, n - NUM_VIRTUAL:]
        virtual = self.space_virtual2point_blocks[i](virtual, points)
        virtual = self.space_virtual_blocks[i](virtual)
        points = self.space_point2virtual_blocks[i](points, virtual)
        return torch.cat([points, virtual], dim=1).view(b, t, n, -1).permute(0, 2, 1, 3)


# --------------------------------------------------------------------------- the tracker network


def feature_maps(fnet: BasicEncoder, frames: torch.Tensor) -> torch.Tensor:
    """``K×3×H×W`` frames (values 0..255, float) → ``K×128×H/4×W/4`` per-pixel L2-normalised features."""
    f = fnet(2 * (frames / 255.0) - 1.0).permute(0, 2, 3, 1)
    norm = torch.sqrt(torch.maximum(torch.sum(torch.square(f), dim=-1, keepdim=True),
                                    torch.tensor(1e-12, device=f.device)))
    return (f / norm).permute(0, 3, 1, 2)


class CoTracker3Offline(nn.Module):
    """The offline CoTracker3 network; parameter names match the official ``scaled_offline.pth``.

    Args:
        window_len: length of the learned time embedding (``time_emb``; 60 in ``scaled_offline.pth``);
            a clip of any length T uses it linearly interpolated to T frames.
        model_resolution: ``(H, W)`` of the frames the network sees (384×512); it scales the motion input.
    """

    time_emb: torch.Tensor

    def __init__(self, window_len: int = 60, model_resolution: Tuple[int, int] = (384, 512)) -> None:
        super().__init__()
        self.window_len = int(window_len)
        self.model_resolution = (int(model_resolution[0]), int(model_resolution[1]))
        self.stride = STRIDE
        self.fnet = BasicEncoder()
        self.updateformer = UpdateFormer()
        self.corr_mlp = Mlp(49 * 49, 384, 256)
        self.register_buffer("time_emb", sincos_time_embedding(INPUT_DIM, self.window_len))

    # -- pyramid and query features
    @staticmethod
    def pyramid(fmaps: torch.Tensor) -> List[torch.Tensor]:
        """``B×T×C×h×w`` features → 4 levels, each a 2× average pooling of the previous one."""
        levels = [fmaps]
        b, t, c = fmaps.shape[:3]
        for _ in range(CORR_LEVELS - 1):
            pooled = F.avg_pool2d(fmaps.reshape(b * t, c, fmaps.shape[-2], fmaps.shape[-1]), 2, stride=2)
            fmaps = pooled.reshape(b, t, c, pooled.shape[-2], pooled.shape[-1])
            levels.append(fmaps)
        return levels

    @staticmethod
    def query_patches(fmaps: torch.Tensor, frames: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """7×7 feature patch of every query at its own frame: ``B×N×7×7×C``."""
        b, n = frames.shape
        k = 2 * CORR_RADIUS + 1
        centres = torch.cat([frames[:, :, None].to(xy.dtype), xy], dim=-1)  # B N 3 (t, x, y)
        pts = patch_points(centres, CORR_RADIUS).reshape(b, n, k * k, 3).permute(0, 2, 1, 3)
        feats = sample_grid(fmaps.permute(0, 2, 1, 3, 4), pts.unsqueeze(3))  # B C k² N 1
        feats = feats.permute(0, 2, 3, 1, 4).reshape(b, k * k, n, fmaps.shape[2])
        return feats.view(b, k, k, n, -1).permute(0, 3, 1, 2, 4)

    @staticmethod
    def frame_patches(fmaps: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """7×7 feature patch around every current estimate ``xy`` (``(B·T)×N×2``): ``B×T×N×7×7×C``."""
        b, t, c, h, w = fmaps.shape
        n = xy.shape[1]
        k = 2 * CORR_RADIUS + 1
        centres = torch.cat([torch.zeros_like(xy[..., :1]), xy], dim=-1)
        feats = sample_grid(fmaps.reshape(b * t, c, 1, h, w), patch_points(centres, CORR_RADIUS))
        return feats.view(b, t, c, n, k, k).permute(0, 1, 3, 4, 5, 2)

    def time_embedding(self, t: int) -> torch.Tensor:
        """The time embedding for a ``t``-frame clip (linear interpolation of ``time_emb``)."""
        if t == self.time_emb.shape[1]:
            return self.time_emb
        emb = F.interpolate(self.time_emb.float().permute(0, 2, 1), size=t, mode="linear")
        return emb.permute(0, 2, 1)

    # -- one refinement step
    def correlation_tokens(self, levels: List[torch.Tensor], patches: List[torch.Tensor],
                           coords: torch.Tensor) -> torch.Tensor:
        """``B×T×N×1024``: per level, the 7⁴ correlation of frame and query patches through ``corr_mlp``."""
        b, t, n, _ = coords.shape
        flat = coords.reshape(b * t, n, 2)
        embs = []
        for i, (fmaps, query) in enumerate(zip(levels, patches)):
            # contiguous operands: the same sums, several times faster than the strided layout on CPU
            frame = self.frame_patches(fmaps, flat / 2 ** i).contiguous()
            corr = torch.einsum("btnhwc,bnijc->btnhwij", frame, query)
            embs.append(self.corr_mlp(corr.reshape(b * t * n, 49 * 49)))
        return torch.cat(embs, dim=-1).view(b, t, n, -1)

    def motion_tokens(self, coords: torch.Tensor) -> torch.Tensor:
        """Sine encoding of the displacement to the next and from the previous frame (zero at the ends)."""
        fwd = F.pad(coords[:, :-1] - coords[:, 1:], (0, 0, 0, 0, 0, 1))
        bwd = F.pad(coords[:, 1:] - coords[:, :-1], (0, 0, 0, 0, 1, 0))
        h, w = self.model_resolution
        scale = torch.tensor([w, h], device=coords.device) / self.stride
        return sine_encoding(torch.cat([fwd / scale, bwd / scale], dim=-1), 10)

    def forward(self, fmaps: torch.Tensor, queries: torch.Tensor, iters: int = 6
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Track ``queries`` through a clip.

        Args:
            fmaps: ``B×T×128×H/4×W/4`` features of the clip (:func:`feature_maps`).
            queries: ``B×N×3`` ``(t, x, y)``, model-resolution pixels.
            iters: refinement steps (6 in the official predictor).

        Returns:
            ``(tracks B×T×N×2, visibility B×T×N, confidence B×T×N)``, probabilities after a sigmoid.
        """
        b, t = fmaps.shape[:2]
        n = queries.shape[1]
        frames = queries[:, :, 0].long()
        xy = queries[..., 1:3] / self.stride
        levels = self.pyramid(fmaps)
        patches = [self.query_patches(lv, frames, xy / 2 ** i).contiguous() for i, lv in enumerate(levels)]
        vis = torch.zeros((b, t, n), device=queries.device).float()
        conf = torch.zeros((b, t, n), device=queries.device).float()
        coords = xy.reshape(b, 1, n, 2).expand(b, t, n, 2).float()
        time_emb = self.time_embedding(t)
        for _ in range(iters):
            x = torch.cat([vis[..., None], conf[..., None], self.correlation_tokens(levels, patches, coords),
                           self.motion_tokens(coords)], dim=-1)
            x = x.permute(0, 2, 1, 3).reshape(b * n, t, -1)
            x = (x + time_emb).view(b, n, t, -1)
            delta = self.updateformer(x)
            vis = vis + delta[..., 2].permute(0, 2, 1)
            conf = conf + delta[..., 3].permute(0, 2, 1)
            coords = coords + delta[..., :2].permute(0, 2, 1, 3)
        return coords * float(self.stride), torch.sigmoid(vis), torch.sigmoid(conf)


# --------------------------------------------------------------------------- random weights for tests


def random_state_dict(seed: int, window_len: int = 60) -> Dict[str, torch.Tensor]:
    """A random-weight state dict in the official ``scaled_offline.pth`` layout, a pure function of ``seed``.

    Used by the equality check and its CI test (no official weights here). Weights are drawn key by key in
    sorted order from one CPU generator, scaled so that a forward pass does something non-trivial: the
    position heads move points by pixels and the visibility logits spread on both sides of the 0.9
    threshold. ``time_emb`` keeps its fixed sine/cosine values.
    """
    gen = torch.Generator().manual_seed(int(seed))
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in CoTracker3Offline(window_len=window_len).state_dict().items()}
    out: Dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if key == "time_emb":
            out[key] = sincos_time_embedding(INPUT_DIM, window_len)
            continue
        noise = torch.randn(shape, generator=gen)
        out[key] = noise * _random_scale(key, shape) + _random_offset(key)
    return out


def _random_offset(key: str) -> torch.Tensor:
    """Mean of a random parameter: 1 for norm gains; a negative visibility bias, which brings the summed
    visibility logits of seed 0 to both sides of the 0.9 threshold (about 60 % visible)."""
    if key.endswith("norm_context.weight"):
        return torch.tensor(1.0)
    if key == "updateformer.vis_conf_head.bias":
        return torch.tensor([-2.0, 0.0])
    return torch.tensor(0.0)


def _random_scale(key: str, shape: torch.Size) -> float:
    """Standard deviation of a random parameter (fan-in scaling for weights, small biases)."""
    if key.endswith("norm_context.weight") or key.endswith("norm_context.bias"):
        return 0.1
    if key.endswith(".bias"):
        return 0.1 if "vis_conf_head" in key else 0.02
    if key.endswith("virual_tracks"):
        return 1.0
    fan_in = 1
    for s in shape[1:]:
        fan_in *= int(s)
    gain = {"updateformer.flow_head.weight": 0.5, "updateformer.vis_conf_head.weight": 0.4}.get(key, 1.0)
    if key.startswith("fnet."):
        gain = 2.0 ** 0.5  # ReLU network
    return gain / max(fan_in, 1) ** 0.5
