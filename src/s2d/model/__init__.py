"""Class-agnostic video Mask2Former in pure PyTorch (stage 3 of S2D): model, matcher and losses.

Example::

    from s2d.model import VideoMask2Former, VideoSetCriterion, model_preset
    cfg = model_preset("tiny")                      # or "cpu" (default shipped model), "paper"
    model = VideoMask2Former(cfg)
    criterion = VideoSetCriterion(cfg.loss)         # Hungarian matching + Temporal DropLoss
    out = model(clips)                              # clips: B×T×3×H×W in [0, 1]
    losses = criterion(out, [{"masks": m} for m in target_masks])   # m: N×T×H×W bool, empty = unlabelled
    losses["loss"].backward()

Importing this package builds nothing and loads no weights.
"""

from s2d.model.config import PRESETS, LossConfig, ModelConfig, apply_overrides, model_preset
from s2d.model.losses import VideoSetCriterion, dice_loss, droploss_pairs, objectness_loss, sigmoid_bce_loss
from s2d.model.matcher import HungarianMatcher, hungarian, pairwise_mask_costs
from s2d.model.pixel_decoder import FPNPixelDecoder, MSDeformAttn, MSDeformPixelDecoder, ms_deform_attn_core
from s2d.model.points import grid_points, point_sample, uncertain_points
from s2d.model.transformer_decoder import VideoTransformerDecoder
from s2d.model.video_mask2former import CHECKPOINT_FORMAT, VideoMask2Former

__all__ = [
    "CHECKPOINT_FORMAT",
    "FPNPixelDecoder",
    "HungarianMatcher",
    "LossConfig",
    "MSDeformAttn",
    "MSDeformPixelDecoder",
    "ModelConfig",
    "PRESETS",
    "VideoMask2Former",
    "VideoSetCriterion",
    "VideoTransformerDecoder",
    "apply_overrides",
    "dice_loss",
    "droploss_pairs",
    "grid_points",
    "hungarian",
    "model_preset",
    "ms_deform_attn_core",
    "objectness_loss",
    "pairwise_mask_costs",
    "point_sample",
    "sigmoid_bce_loss",
    "uncertain_points",
]
