"""Typed configuration of the video Mask2Former (:class:`ModelConfig`) and its training losses (:class:`LossConfig`).

Three presets (:func:`model_preset`):

* ``tiny``  — tests: the seeded ``random`` backbone, hidden 32, 8 queries, 2 decoder layers, FPN pixel decoder.
* ``cpu``   — the default shipped model: ImageNet EfficientNet-Lite0 backbone, hidden 128, 30 queries,
  4 decoder layers, a light FPN pixel decoder (64-channel stride-4 path) with stride-4 mask features.
* ``paper`` — the reference architecture (VideoCutLER / S2D configs): ResNet-50, hidden 256, 100 queries,
  9 masked-attention decoder layers (+1 prediction from the learnable queries, the reference "9+1"),
  MSDeformAttn pixel decoder with 6 encoder layers (dropout 0.3 there and 0 in the decoder, as the reference
  code applies ``MASK_FORMER.DROPOUT``); losses mask/dice 5/5, 12544 points, oversample 3.0, importance
  0.75, no-object weight 0.1, with the objectness loss on (class weight 2.0, SPEC §9).

Configs are plain dataclasses: ``cfg.to_dict()`` / ``ModelConfig.from_dict(d)`` round-trip (checkpoints store
the dict), and :func:`apply_overrides` applies ``key=value`` strings such as ``"loss.num_points=4096"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Mapping, Optional

from s2d.errors import SettingError

__all__ = ["ModelConfig", "LossConfig", "PRESETS", "model_preset", "apply_overrides"]

PIXEL_DECODERS = ("msdeform", "fpn")
NUM_MASKS_NORMS = ("instances", "pairs")


@dataclass(frozen=True)
class LossConfig:
    """Matching costs and loss weights (Mask2Former ``SetCriterion`` + Hungarian matcher, S2D Temporal DropLoss).

    Attributes:
        class_weight: weight of the objectness cross-entropy (and of the class cost in matching).
            The S2D configs use 0; we keep it on because we start without a pretrained class head.
        mask_weight: weight of the point-sampled sigmoid BCE mask loss (and matching cost).
        dice_weight: weight of the dice loss (and matching cost).
        no_object_weight: cross-entropy weight of the "no object" class (``eos_coef``).
        num_points: points sampled per (object, frame) mask for the losses and per clip for matching.
            ``None`` (or any value ≥ the prediction's h·w) uses every pixel of the prediction grid
            instead — deterministic, for tests and small inputs.
        oversample_ratio: candidate points per sampled point for importance sampling.
        importance_sample_ratio: fraction of points taken from the most uncertain candidates (−|logit|).
        temporal_droploss: drop every matched (object, frame) pair whose target mask is empty before the
            mask losses (S2D's "masks-only" strategy). ``False`` is the plain VideoMask2Former ("full").
        match_labeled_frames_only: matching costs over each target's non-empty frames only. ``False`` (the
            reference) matches over all T frames, empty target frames counting as background.
        num_masks_norm: divisor of the summed mask/dice losses: ``"instances"`` (the reference code: the
            number of target objects in the batch, ≥ 1) or ``"pairs"`` (the number of kept (object, frame)
            pairs, ≥ 1).
        deep_supervision: also apply the losses (with their own matching) to every auxiliary prediction.
        aux_class_loss: include the objectness loss in the auxiliary predictions (the S2D code skips it).
    """

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: Optional[int] = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    temporal_droploss: bool = True
    match_labeled_frames_only: bool = False
    num_masks_norm: str = "instances"
    deep_supervision: bool = True
    aux_class_loss: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "LossConfig":
        for name in ("class_weight", "mask_weight", "dice_weight", "no_object_weight"):
            if getattr(self, name) < 0:
                raise SettingError(f"loss.{name} must be ≥ 0, got {getattr(self, name)}")
        if self.num_points is not None and self.num_points < 1:
            raise SettingError(f"loss.num_points must be ≥ 1 or None, got {self.num_points}")
        if self.oversample_ratio < 1:
            raise SettingError(f"loss.oversample_ratio must be ≥ 1, got {self.oversample_ratio}")
        if not 0 <= self.importance_sample_ratio <= 1:
            raise SettingError(f"loss.importance_sample_ratio must be in [0, 1], got {self.importance_sample_ratio}")
        if self.num_masks_norm not in NUM_MASKS_NORMS:
            raise SettingError(f"loss.num_masks_norm must be one of {NUM_MASKS_NORMS}, got {self.num_masks_norm!r}")
        return self


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`s2d.model.VideoMask2Former`.

    Attributes:
        backbone: ``"NAME"`` or ``"NAME:PATH"`` as :func:`s2d.features.build_backbone` accepts
            (``random``, ``lite0``, ``resnet50:/path/dino_resnet50.pth``, ...).
        backbone_random_init: build the backbone with random weights (no checkpoint needed; a model
            checkpoint then supplies them).
        freeze_backbone_bn: keep the backbone's BatchNorm layers in eval mode while training (the reference
            uses frozen BN); their affine parameters still train.
        pixel_decoder: ``"msdeform"`` (multi-scale deformable attention encoder on res3–res5 + FPN to res2,
            as Mask2Former) or ``"fpn"`` (a plain top-down FPN; lighter).
        conv_dim: channels of the pixel decoder (and of the multi-scale memory).
        res2_dim: channels of the stride-4 convs of the pixel decoder (``None``: ``conv_dim``); smaller is
            much cheaper at high resolution.
        mask_dim: channels of the stride-4 mask features (= the mask-embedding size).
        enc_layers, enc_heads, enc_points, enc_ffn, enc_dropout: MSDeformAttn encoder depth, heads, sampling
            points per head and level, FFN width, dropout (the reference's ``MASK_FORMER.DROPOUT`` acts here only).
        hidden_dim: transformer-decoder width.
        num_queries: object queries Q.
        dec_layers: masked-attention decoder layers; the model makes ``dec_layers + 1`` predictions (one from
            the learnable queries, one after every layer; all but the last are auxiliary outputs).
        nheads, dim_feedforward, dropout, pre_norm: decoder attention heads, FFN width, dropout (0 in the
            reference decoder, whatever the config says), pre-LN.
        enforce_input_proj: always project the memory with a 1×1 conv, even when ``conv_dim == hidden_dim``.
        self_attn_key_pos: add the query positional embedding to the keys of the decoder's self-attention as
            well as to its queries (Mask2Former: ``q = k = tgt + query_pos``; on in the ``paper`` preset). Off:
            queries only, the layout the shipped ``cpu`` model was trained with.
        query_propagation: the online model (``s2d segment --online``): frames go through the decoder one at a
            time and each frame's queries start from the previous frame's (the learned query features plus a
            zero-initialised linear map of the previous frame's query embeddings), so query ``k`` follows the
            same object from frame to frame. A clip of T frames is unrolled in :meth:`forward`; a model
            distilled from an offline one starts out equal to it on single frames.
        size_divisibility: inputs are zero-padded (after normalisation) to a multiple of this.
        loss: :class:`LossConfig` used when training this model.
    """

    backbone: str = "lite0"
    backbone_random_init: bool = False
    freeze_backbone_bn: bool = True
    pixel_decoder: str = "fpn"
    conv_dim: int = 128
    res2_dim: Optional[int] = None
    mask_dim: int = 128
    enc_layers: int = 6
    enc_heads: int = 8
    enc_points: int = 4
    enc_ffn: int = 1024
    enc_dropout: float = 0.0
    hidden_dim: int = 128
    num_queries: int = 30
    dec_layers: int = 4
    nheads: int = 8
    dim_feedforward: int = 512
    dropout: float = 0.0
    pre_norm: bool = False
    enforce_input_proj: bool = False
    self_attn_key_pos: bool = False
    query_propagation: bool = False
    size_divisibility: int = 32
    loss: LossConfig = field(default_factory=LossConfig)

    # ------------------------------------------------------------------ (de)serialisation

    def validate(self) -> "ModelConfig":
        if self.pixel_decoder not in PIXEL_DECODERS:
            raise SettingError(f"pixel_decoder must be one of {PIXEL_DECODERS}, got {self.pixel_decoder!r}")
        for name in ("conv_dim", "mask_dim", "hidden_dim", "num_queries", "nheads", "dim_feedforward",
                     "enc_heads", "enc_points", "enc_ffn", "size_divisibility"):
            if int(getattr(self, name)) < 1:
                raise SettingError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.res2_dim is not None and self.res2_dim < 1:
            raise SettingError(f"res2_dim must be ≥ 1 or None, got {self.res2_dim}")
        if self.dec_layers < 0 or self.enc_layers < 0:
            raise SettingError("dec_layers and enc_layers must be ≥ 0")
        if self.hidden_dim % self.nheads:
            raise SettingError(f"hidden_dim {self.hidden_dim} is not divisible by nheads {self.nheads}")
        if self.pixel_decoder == "msdeform" and self.conv_dim % self.enc_heads:
            raise SettingError(f"conv_dim {self.conv_dim} is not divisible by enc_heads {self.enc_heads}")
        for name in ("dropout", "enc_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise SettingError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.size_divisibility % 32:
            raise SettingError(f"size_divisibility must be a multiple of 32, got {self.size_divisibility}")
        self.loss.validate()
        return self

    def __post_init__(self) -> None:
        self.validate()

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Build from a mapping (a checkpoint's stored config); unknown keys and bad values are errors."""
        from s2d.settings import from_mapping

        return from_mapping(cls, d, what="model")

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes).validate()


def _tiny() -> ModelConfig:
    return ModelConfig(
        backbone="random", backbone_random_init=True, pixel_decoder="fpn", conv_dim=32, mask_dim=32,
        enc_layers=1, enc_heads=4, enc_points=2, enc_ffn=64, hidden_dim=32, num_queries=8, dec_layers=2,
        nheads=4, dim_feedforward=64, dropout=0.0,
        loss=LossConfig(num_points=1024),
    )


def _cpu() -> ModelConfig:
    return ModelConfig(
        backbone="lite0", pixel_decoder="fpn", conv_dim=128, res2_dim=64, mask_dim=128, hidden_dim=128,
        num_queries=30,
        dec_layers=4, nheads=8, dim_feedforward=512, dropout=0.0,
        loss=LossConfig(num_points=4096),
    )


def _paper() -> ModelConfig:
    return ModelConfig(
        backbone="resnet50", pixel_decoder="msdeform", conv_dim=256, mask_dim=256, enc_layers=6, enc_heads=8,
        enc_points=4, enc_ffn=1024, enc_dropout=0.3, hidden_dim=256, num_queries=100, dec_layers=9, nheads=8,
        dim_feedforward=2048, dropout=0.0, self_attn_key_pos=True,
        loss=LossConfig(class_weight=2.0, mask_weight=5.0, dice_weight=5.0, no_object_weight=0.1,
                        num_points=12544, oversample_ratio=3.0, importance_sample_ratio=0.75),
    )


PRESETS = {"tiny": _tiny, "cpu": _cpu, "paper": _paper}


def model_preset(name: str) -> ModelConfig:
    """A fresh :class:`ModelConfig` of preset ``name`` (``tiny``, ``cpu`` or ``paper``)."""
    try:
        return PRESETS[name]().validate()
    except KeyError:
        raise SettingError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def apply_overrides(cfg: ModelConfig, overrides: Iterable[str]) -> ModelConfig:
    """Apply ``key=value`` strings (``"num_queries=50"``, ``"loss.num_points=4096"``) to a copy of ``cfg``
    (:func:`s2d.settings.apply_overrides`)."""
    from s2d.settings import apply_overrides as apply

    return apply(cfg, list(overrides), "model")
