"""The class-agnostic video Mask2Former: backbone → pixel decoder → video transformer decoder.

Example::

    from s2d.model import VideoMask2Former, model_preset
    model = VideoMask2Former(model_preset("tiny"))
    out = model(clips)                      # clips: B×T×3×H×W float in [0, 1]
    out["pred_logits"]                      # B×Q×2  (object, no-object)
    out["pred_masks"]                       # B×Q×T×ceil(H/4)×ceil(W/4) mask logits
    res = model.predict(clips[0])           # per-query scores and T×H×W masks at the input size
    model.save_checkpoint("run/model.pt")
    model = VideoMask2Former.from_checkpoint("run/model.pt", device="cpu")
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple, Union, cast

import torch
import torch.nn.functional as F
from torch import nn

from s2d.errors import InputError
from s2d.features import Backbone, build_backbone
from s2d.io.atomic import atomic_path
from s2d.model.config import ModelConfig, model_preset
from s2d.model.pixel_decoder import build_pixel_decoder
from s2d.model.transformer_decoder import VideoTransformerDecoder

__all__ = ["VideoMask2Former", "CHECKPOINT_FORMAT", "predictions"]

CHECKPOINT_FORMAT = "s2d.video_mask2former/1"
PathLike = Union[str, "os.PathLike[str]"]


class VideoMask2Former(nn.Module):
    """Class-agnostic video instance segmentation model (one object class + no-object).

    Args:
        config: a :class:`ModelConfig` or a preset name (``"tiny"``, ``"cpu"``, ``"paper"``).
        device: where to build it (``"cpu"``, ``"cuda"``...).
        backbone_random_init: override ``config.backbone_random_init`` (``from_checkpoint`` builds the backbone
            randomly since the checkpoint holds its weights).
    """

    def __init__(self, config: Union[ModelConfig, str] = "cpu", device: Union[str, torch.device] = "cpu", *,
                 backbone_random_init: Optional[bool] = None) -> None:
        super().__init__()
        cfg = model_preset(config) if isinstance(config, str) else config.validate()
        self.config = cfg
        rnd = cfg.backbone_random_init if backbone_random_init is None else backbone_random_init
        self.backbone = build_backbone(cfg.backbone, "cpu", random_init=rnd)
        self.unused_backbone_parameters = _freeze_unused(self.backbone)
        self.pixel_decoder = build_pixel_decoder(cfg, self.backbone.out_channels)
        self.decoder = VideoTransformerDecoder(cfg.conv_dim, cfg.hidden_dim, cfg.num_queries, cfg.nheads,
                                               cfg.dim_feedforward, cfg.dec_layers, cfg.mask_dim, cfg.dropout,
                                               cfg.pre_norm, 3, cfg.enforce_input_proj, cfg.self_attn_key_pos,
                                               cfg.query_propagation)
        self.to(device)
        self.train()

    # ------------------------------------------------------------------ module plumbing

    @property
    def device(self) -> torch.device:
        return self.decoder.query_feat.weight.device

    def train(self, mode: bool = True) -> "VideoMask2Former":
        super().train(mode)
        if mode and self.config.freeze_backbone_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------------------------------ forward

    def encode(self, frames: torch.Tensor, normalized: bool = False) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """The per-frame part of the forward pass (backbone and pixel decoder): no frame sees another here.

        ``frames``: ``N×3×H×W`` as in :meth:`forward`. Returns ``(mask_features N×D×H'×W', memory)`` with
        ``memory`` the pixel decoder's levels ``N×C×h×w`` (coarse → fine). Streaming inference keeps the encodings
        of the frames two overlapping chunks share and passes them back through ``forward(..., encoded=)``,
        so no frame goes through the backbone twice.
        """
        h, w = frames.shape[-2:]
        x = frames.to(self.device)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if not normalized:
            x = self.backbone.normalize(x)
        div = self.config.size_divisibility
        ph, pw = (-h) % div, (-w) % div
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        feats = self.backbone.multiscale(x)
        return self.pixel_decoder(feats)

    def forward(self, clips: torch.Tensor, normalized: bool = False, aux: Optional[bool] = None,
                encoded: Optional[Tuple[torch.Tensor, List[torch.Tensor]]] = None,
                prev_queries: Optional[torch.Tensor] = None) -> Dict[str, Any]:
        """Predict mask tubes and objectness for a batch of clips.

        Args:
            clips: ``B×T×3×H×W`` (or one clip ``T×3×H×W``) RGB: float in [0, 1] (or uint8), or already
                normalised with the backbone's mean/std when ``normalized=True``. For training use sides divisible
                by 4: the losses compare the stride-4 logits and the targets at the same relative positions.
            aux: also return the auxiliary predictions (deep supervision); default: in training mode only.
            encoded: :meth:`encode` of the ``B·T`` frames, computed earlier (then only their shape is read
                from ``clips``).
            prev_queries: for the online model (``query_propagation``): the ``pred_embeds`` of the frame
                before the clip (``B×Q×C``); ``None`` starts from the learned queries alone.

        Returns:
            ``{"pred_logits": B×Q×2, "pred_masks": B×Q×T×ceil(H/4)×ceil(W/4), "aux_outputs": [...]}``;
            the aux list holds ``dec_layers`` dicts of the same two keys (the learnable-query prediction and
            every layer but the last; empty when ``aux`` is false). Mask logits cover the input frame (stride 4);
            the input is zero-padded to ``size_divisibility`` inside and the masks cropped back.
        """
        if clips.ndim == 4:
            clips = clips[None]
        if clips.ndim != 5 or clips.shape[2] != 3:
            raise ValueError(f"expected clips of shape B×T×3×H×W, got {tuple(clips.shape)}")
        b, t, _, h, w = clips.shape
        if encoded is None:
            mask_features, memory = self.encode(clips.reshape(b * t, 3, h, w), normalized)
        else:
            mask_features, memory = encoded
            if mask_features.shape[0] != b * t:
                raise ValueError(f"encoded features of {mask_features.shape[0]} frames for {b}×{t} frames")
        mask_features = mask_features.view(b, t, *mask_features.shape[1:])
        aux = self.training if aux is None else aux
        if self.config.query_propagation:
            out = self._unroll(memory, mask_features, aux, prev_queries)
        else:
            out = self.decoder(memory, mask_features, aux=aux)
        hm, wm = -(-h // 4), -(-w // 4)
        if (hm, wm) != tuple(out["pred_masks"].shape[-2:]):
            out["pred_masks"] = out["pred_masks"][..., :hm, :wm]
            for a in out["aux_outputs"]:
                a["pred_masks"] = a["pred_masks"][..., :hm, :wm]
        return out

    def _unroll(self, memory: List[torch.Tensor], mask_features: torch.Tensor, aux: bool,
                prev: Optional[torch.Tensor]) -> Dict[str, Any]:
        """The online model on a clip: the decoder on one frame at a time, each frame's queries started from the
        previous frame's embeddings. Masks are stacked over the frames, objectness is the mean of the frames'
        logits (a query's score for the clip), ``pred_embeds`` are the last frame's."""
        b, t = mask_features.shape[:2]
        frames = []
        for i in range(t):
            mem = [m.view(b, t, *m.shape[1:])[:, i] for m in memory]
            out = self.decoder(mem, mask_features[:, i:i + 1], aux=aux, prev=prev)
            prev = out["pred_embeds"]
            frames.append(out)

        def stack(outs: List[Dict[str, Any]]) -> Dict[str, Any]:
            return {"pred_logits": torch.stack([o["pred_logits"] for o in outs]).mean(0),
                    "pred_masks": torch.cat([o["pred_masks"] for o in outs], dim=2)}

        res = stack(frames)
        res["pred_embeds"] = frames[-1]["pred_embeds"]
        levels = len(frames[0]["aux_outputs"])
        res["aux_outputs"] = [stack([f["aux_outputs"][k] for f in frames]) for k in range(levels)]
        return res

    @torch.no_grad()
    def predict(self, clip: torch.Tensor, normalized: bool = False, size: Optional[tuple] = None,
                score_threshold: float = 0.0, top_k: Optional[int] = None,
                encoded: Optional[Tuple[torch.Tensor, List[torch.Tensor]]] = None,
                prev_queries: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Inference on one clip ``T×3×H×W`` (or ``1×T×3×H×W``) in eval mode.

        Scores are Mask2Former's: softmax object probability × mask quality (mean sigmoid inside the
        binarised mask). Returns ``{"scores": K, "masks": K×T×H×W bool, "mask_logits": K×T×H×W float,
        "embeds": K×C}`` sorted by score (highest first), at ``size`` (default: the input size), keeping queries
        with score ≥ ``score_threshold`` and at most ``top_k``; ``embeds`` are the queries' features at unit
        length (compare them by dot product). The module's train/eval mode is restored afterwards.
        ``encoded``: the clip's :meth:`encode` output when the caller has it already (computed in eval mode).
        For the online model, ``prev_queries`` is the previous frame's ``"queries"`` entry of the result: the
        embeddings of all Q queries (``1×Q×C``), to pass on with the next frame.
        """
        if clip.ndim == 5:
            if clip.shape[0] != 1:
                raise ValueError("predict takes one clip; loop over the batch")
            clip = clip[0]
        h, w = clip.shape[-2:]
        size = (int(h), int(w)) if size is None else (int(size[0]), int(size[1]))
        was = self.training
        self.eval()
        try:
            out = self(clip[None], normalized=normalized, aux=False, encoded=encoded, prev_queries=prev_queries)
        finally:
            self.train(was)
        return predictions(out, (int(h), int(w)), size, score_threshold, top_k)

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, path: PathLike, extra: Optional[Dict[str, Any]] = None, *,
                        compact: bool = False) -> None:
        """Write ``{"format", "config", "model", "extra"}`` atomically (temp file + rename).

        ``compact=True`` writes a model for shipping, not for resuming: floating-point weights as float16
        (loading casts them back to the model's dtype) and without the backbone parameters the model never
        uses (e.g. an ImageNet classifier head), about a third of the float32 size.
        """
        unused = {"backbone." + n for n in self.unused_backbone_parameters} if compact else set()
        state = {}
        for k, v in self.state_dict().items():
            if k in unused:
                continue
            v = v.detach().cpu()
            state[k] = v.half() if compact and v.is_floating_point() else v
        payload = {"format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "model": state,
                   "extra": dict(extra or {}, compact=True) if compact else (extra or {})}
        with atomic_path(path, fsync=True) as tmp:
            torch.save(payload, tmp)

    def load_checkpoint(self, path: PathLike, strict: bool = True) -> Dict[str, Any]:
        """Load weights saved by :meth:`save_checkpoint` (or a bare state dict) into this model.

        Raises :class:`s2d.errors.InputError` (one line) when the file is missing/unreadable or its keys or
        shapes do not match this model's config (listing missing, unexpected and mis-shaped keys).
        Returns the checkpoint's ``extra`` dict.
        """
        payload = _read_checkpoint(path)
        state = payload["model"] if isinstance(payload, dict) and "model" in payload else payload
        if not isinstance(state, dict):
            raise InputError(path, "not a model checkpoint (no state dict inside)")
        own = self.state_dict()
        unused = {"backbone." + n for n in self.unused_backbone_parameters}  # a compact checkpoint omits them
        missing = [k for k in own if k not in state and k not in unused]
        unexpected = [k for k in state if k not in own]
        shaped = [f"{k} {tuple(state[k].shape)}≠{tuple(own[k].shape)}" for k in own
                  if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
        if strict and (missing or unexpected or shaped):
            parts = []
            for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shaped)):
                if keys:
                    shown = ", ".join(keys[:8]) + (f", … ({len(keys)} in all)" if len(keys) > 8 else "")
                    parts.append(f"{label}: {shown}")
            raise InputError(path, "checkpoint does not match the model config; " + "; ".join(parts))
        self.load_state_dict({k: (v.to(own[k].dtype) if v.is_floating_point() else v)
                              for k, v in state.items() if k in own and k not in shaped}, strict=False)
        return dict(payload.get("extra", {})) if isinstance(payload, dict) else {}

    @classmethod
    def from_checkpoint(cls, path: PathLike, device: Union[str, torch.device] = "cpu",
                        config: Optional[ModelConfig] = None) -> "VideoMask2Former":
        """Build the model from a checkpoint's stored config (or ``config``) and load its weights."""
        payload = _read_checkpoint(path)
        if config is None:
            if not isinstance(payload, dict) or "config" not in payload:
                raise InputError(path, "checkpoint has no model config; pass config=")
            try:
                config = ModelConfig.from_dict(payload["config"])
            except Exception as e:  # noqa: BLE001 - a bad stored config is bad input
                raise InputError(path, f"invalid model config in checkpoint: {e}") from None
        model = cls(config, "cpu", backbone_random_init=True)
        model.load_checkpoint(path)
        return model.to(device)


def predictions(out: Dict[str, Any], input_size: Tuple[int, int], size: Tuple[int, int], score_threshold: float = 0.0,
                top_k: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """:meth:`VideoMask2Former.predict`'s post-processing of the raw outputs of one clip (``pred_logits`` 1×Q×2,
    ``pred_masks`` 1×Q×T×h4×w4, ``pred_embeds`` 1×Q×C) at ``input_size`` ``(H, W)``: scores, masks and logits at
    ``size``, embeddings; shared by every backend that produces those outputs (e.g. ONNX Runtime)."""
    h, w = input_size
    prob = out["pred_logits"][0].float().softmax(-1)[:, 0]
    logits = out["pred_masks"][0].float()  # Q×T×h×w
    # score = prob × quality with quality ≤ 1: queries with prob below the threshold can never pass, so
    # skip upsampling them (most of the cost at full resolution; exact, not an approximation)
    cand = (prob >= score_threshold).nonzero().flatten()
    prob, logits = prob[cand], logits[cand]
    embeds = F.normalize(out["pred_embeds"][0].float()[cand], dim=-1)
    # upsample to the padded-then-cropped stride-4 grid's extent: stride 4 covers 4·h4 ≥ H pixels
    q, t, h4, w4 = logits.shape
    up = F.interpolate(logits, size=(h4 * 4, w4 * 4), mode="bilinear", align_corners=False)[..., :h, :w]
    if size != (h, w):
        up = F.interpolate(up, size=size, mode="bilinear", align_corners=False)
    masks = up > 0
    sig = up.sigmoid()
    quality = (sig * masks).flatten(1).sum(1) / masks.flatten(1).sum(1).clamp(min=1)
    scores = prob * quality
    order = scores.argsort(descending=True)
    order = order[scores[order] >= score_threshold]
    if top_k is not None:
        order = order[:top_k]
    return {"scores": scores[order], "masks": masks[order], "mask_logits": up[order], "embeds": embeds[order],
            "queries": out["pred_embeds"]}


def _freeze_unused(backbone: Backbone) -> List[str]:
    """Set ``requires_grad=False`` on backbone parameters that :meth:`multiscale` never uses (e.g. the
    classifier head of an ImageNet CNN), so optimisers and DDP see only live parameters. Returns their names."""
    params = [(n, p) for n, p in backbone.named_parameters() if p.requires_grad]
    if not params:
        return []
    was = backbone.training
    backbone.eval()
    try:
        with torch.enable_grad():
            feats = backbone.multiscale(torch.zeros(1, 3, 64, 64))
            grads = torch.autograd.grad(cast(torch.Tensor, sum(f.float().sum() for f in feats.values())),
                                        [p for _, p in params], allow_unused=True)
    finally:
        backbone.train(was)
    unused = [n for (n, p), g in zip(params, grads) if g is None]
    for (n, p), g in zip(params, grads):
        if g is None:
            p.requires_grad_(False)
    return unused


def _read_checkpoint(path: PathLike) -> Any:
    if not os.path.isfile(path):
        raise InputError(path, "checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise InputError(path, f"unreadable checkpoint ({type(e).__name__}: {e})") from None
