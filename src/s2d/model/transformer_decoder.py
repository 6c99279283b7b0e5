"""Video masked-attention transformer decoder (Mask2Former-VIS / VideoMaskFormer style).

Q learnable object queries attend to the multi-scale memory of **all T frames of the clip at once**: the
memory of each level is flattened over time and space into one key sequence of ``T·h·w`` tokens with a 3-D
(t, y, x) sine position encoding. Each layer is masked cross-attention → self-attention → FFN (post-norm by
default), cycling through the levels coarse → fine. After the learnable queries and after every layer the
prediction heads give, per query,

* an objectness logit pair (``[object, no-object]``, softmax as Mask2Former), and
* a mask tube over the clip: ``mask_embed(query) · mask_features[t]`` → ``Q×T×H/4×W/4`` logits.

The attention mask of a layer is the previous prediction resized to the next level: a query attends only
where its tube has sigmoid ≥ 0.5 (everywhere when that region is empty).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from s2d.model.pixel_decoder import sine_1d

__all__ = ["VideoTransformerDecoder", "sine_position_3d"]


def sine_position_3d(t: int, h: int, w: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(t·h·w)×dim`` position encoding: ``[sine(y) | sine(x)] + sine(t)``, each coordinate scaled to (0, 2π]."""
    half = dim // 2
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 1) / (h + 1e-6) * 2 * math.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 1) / (w + 1e-6) * 2 * math.pi
    ts = (torch.arange(t, device=device, dtype=torch.float32) + 1) / (t + 1e-6) * 2 * math.pi
    spatial = torch.cat([sine_1d(ys, half)[:, None, :].expand(h, w, half),
                         sine_1d(xs, dim - half)[None, :, :].expand(h, w, dim - half)], -1)
    pos = spatial[None] + sine_1d(ts, dim)[:, None, None, :]
    return pos.reshape(t * h * w, dim).to(dtype)


class _MLP(nn.Module):
    def __init__(self, dims: List[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class _AttnLayer(nn.Module):
    """Multi-head attention + residual + LayerNorm (post-norm unless ``pre_norm``).

    In self-attention the keys are the queries themselves; ``self_key_pos`` adds the query positional
    embedding to them too (Mask2Former's ``q = k = tgt + query_pos``), else only the queries get it (the
    layout ``default.pt`` was trained with).
    """

    def __init__(self, dim: int, heads: int, dropout: float, pre_norm: bool, self_key_pos: bool = False) -> None:
        super().__init__()
        self.self_key_pos = self_key_pos
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, q: torch.Tensor, q_pos: torch.Tensor, kv: torch.Tensor, kv_pos: Optional[torch.Tensor],
                attn_mask: Optional[torch.Tensor] = None, self_attn: bool = False) -> torch.Tensor:
        x = self.norm(q) if self.pre_norm else q
        if self_attn:
            kv = x
            kv_pos = q_pos if self.self_key_pos else None
        k = kv if kv_pos is None else kv + kv_pos
        out = self.attn(x + q_pos, k, kv, attn_mask=attn_mask, need_weights=False)[0]
        out = q + self.drop(out)
        return out if self.pre_norm else self.norm(out)


class _FFNLayer(nn.Module):
    def __init__(self, dim: int, ffn: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x) if self.pre_norm else x
        y = x + self.drop(self.lin2(self.drop(F.relu(self.lin1(y)))))
        return y if self.pre_norm else self.norm(y)


class VideoTransformerDecoder(nn.Module):
    """Masked-attention decoder over a clip's multi-scale memory (see the module docstring).

    Args:
        in_channels: channels of the memory maps (the pixel decoder's ``conv_dim``).
        hidden_dim, num_queries, nheads, dim_feedforward, dec_layers, dropout, pre_norm: as in
            :class:`s2d.model.ModelConfig`.
        mask_dim: channels of the mask features.
        num_levels: memory levels cycled through (3: res5, res4, res3).
        enforce_input_proj: project the memory with a 1×1 conv even when ``in_channels == hidden_dim``.
    """

    def __init__(self, in_channels: int, hidden_dim: int, num_queries: int, nheads: int, dim_feedforward: int,
                 dec_layers: int, mask_dim: int, dropout: float = 0.0, pre_norm: bool = False,
                 num_levels: int = 3, enforce_input_proj: bool = False, self_attn_key_pos: bool = False,
                 query_propagation: bool = False) -> None:
        super().__init__()
        self.hidden_dim, self.num_queries, self.nheads = hidden_dim, num_queries, nheads
        self.num_levels = num_levels
        self.cross = nn.ModuleList(_AttnLayer(hidden_dim, nheads, dropout, pre_norm) for _ in range(dec_layers))
        self.self_attn = nn.ModuleList(_AttnLayer(hidden_dim, nheads, dropout, pre_norm, self_attn_key_pos)
                                       for _ in range(dec_layers))
        self.ffn = nn.ModuleList(_FFNLayer(hidden_dim, dim_feedforward, dropout, pre_norm) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        # online model: the previous frame's query embeddings, mapped and added to the learned query features;
        # zero-initialised so that a model started from an offline one is that model on every frame at first
        self.propagate: Optional[nn.Linear] = None
        if query_propagation:
            self.propagate = nn.Linear(hidden_dim, hidden_dim)
            nn.init.zeros_(self.propagate.weight)
            nn.init.zeros_(self.propagate.bias)
        self.level_embed = nn.Embedding(num_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(num_levels):
            if in_channels != hidden_dim or enforce_input_proj:
                conv = nn.Conv2d(in_channels, hidden_dim, 1)
                nn.init.kaiming_uniform_(conv.weight, a=1)
                assert conv.bias is not None  # Conv2d's default bias=True
                nn.init.zeros_(conv.bias)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Identity())
        self.class_embed = nn.Linear(hidden_dim, 2)  # [object, no-object]
        self.mask_embed = _MLP([hidden_dim, hidden_dim, hidden_dim, mask_dim])
        for mod in list(self.cross) + list(self.self_attn) + list(self.ffn):
            for p in mod.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    def forward(self, memory: List[torch.Tensor], mask_features: torch.Tensor,
                aux: bool = True, prev: Optional[torch.Tensor] = None) -> Dict[str, object]:
        """``memory``: ``num_levels`` maps ``(B·T)×C×h×w`` (coarse → fine); ``mask_features``: ``B×T×D×H×W``;
        ``prev``: the previous frame's ``pred_embeds`` (``B×Q×C``), for a decoder built with query propagation.

        Returns ``{"pred_logits": B×Q×2, "pred_masks": B×Q×T×H×W, "pred_embeds": B×Q×C, "aux_outputs":
        [{...}] * dec_layers}``; ``pred_embeds`` are the last layer's normalised query features (what the heads
        read: an object's identity in feature space, used to link tubes across chunks). With ``aux=False`` the
        auxiliary list is empty and their full-resolution masks are never computed.
        """
        b, t = mask_features.shape[:2]
        srcs, poss, sizes = [], [], []
        for i in range(self.num_levels):
            m = self.input_proj[i](memory[i])
            h, w = m.shape[-2:]
            sizes.append((h, w))  # no int(): the sizes stay symbolic in an ONNX export (dynamic frame size)
            # (B·T)×C×h×w → B×(T·h·w)×C: the key sequence spans the whole clip
            src = m.view(b, t, self.hidden_dim, h * w).permute(0, 1, 3, 2).reshape(b, t * h * w, self.hidden_dim)
            srcs.append(src + self.level_embed.weight[i].to(src.dtype))
            poss.append(sine_position_3d(t, h, w, self.hidden_dim, src.device, src.dtype)[None])
        # Bilinear resizing is linear, so resize(embed · features) == embed · resize(features): the attention
        # masks come from mask features resized once per level instead of resizing every query's mask.
        flat = mask_features.detach().flatten(0, 1)
        small = [F.interpolate(flat, size=sz, mode="bilinear", align_corners=False).view(b, t, flat.shape[1], *sz)
                 for sz in sizes]

        query_pos = self.query_embed.weight[None].expand(b, -1, -1)
        out = self.query_feat.weight[None].expand(b, -1, -1)
        if prev is not None and self.propagate is not None:
            out = out + self.propagate(prev.to(out.dtype))
        n_layers = len(self.cross)

        preds = [self._heads(out, mask_features, small[0], full=aux or n_layers == 0)]
        for i in range(n_layers):
            lvl = i % self.num_levels
            out = self.cross[i](out, query_pos, srcs[lvl], poss[lvl], attn_mask=preds[-1][2])
            out = self.self_attn[i](out, query_pos, out, None, self_attn=True)
            out = self.ffn[i](out)
            last = i == n_layers - 1
            preds.append(self._heads(out, mask_features, None if last else small[(i + 1) % self.num_levels],
                                     full=aux or last))
        return {
            "pred_logits": preds[-1][0],
            "pred_masks": preds[-1][1],
            "pred_embeds": self.decoder_norm(out),
            "aux_outputs": [{"pred_logits": lg, "pred_masks": mk} for lg, mk, _ in preds[:-1]] if aux else [],
        }

    def _heads(self, out: torch.Tensor, mask_features: torch.Tensor, small: Optional[torch.Tensor],
               full: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Objectness logits, full mask logits (if ``full``) and the attention mask for the next layer (from
        ``small``, the mask features at the next level's size; ``None``: no next layer)."""
        x = self.decoder_norm(out)
        logits = self.class_embed(x)
        emb = self.mask_embed(x)
        masks = torch.einsum("bqc,btchw->bqthw", emb, mask_features) if full else None
        attn_mask = None
        if small is not None:
            with torch.no_grad():
                low = torch.einsum("bqc,btchw->bqthw", emb.detach(), small)
                b, q = low.shape[:2]
                blocked = (low < 0).reshape(b, q, -1)  # sigmoid < 0.5; B×Q×(T·h·w), True = may not attend
                blocked = blocked & ~blocked.all(-1, keepdim=True)  # no in-place boolean indexing: exportable
                attn_mask = blocked[:, None].expand(b, self.nheads, q, blocked.shape[-1]).reshape(b * self.nheads, q, -1)
        return logits, masks, attn_mask
