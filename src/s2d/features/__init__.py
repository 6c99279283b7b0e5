"""Feature backbones behind one interface (:class:`Backbone`): patch features at a known stride for
stage 1 and multi-scale maps (strides 4–32) for the video Mask2Former.

Example::

    from s2d.features import build_backbone
    bb = build_backbone("lite0")                  # or "dino_vits16:/path/dino_deitsmall16_pretrain.pth"
    feats = bb.patch_features(frame_rgb_uint8)    # 1×dim×h×w, unit-norm, h*w ≤ 2048
    pyramid = bb.multiscale(bb.normalize(batch))  # {"res2": …, "res5": …}

Importing this package loads no weights and registers nothing; see :mod:`s2d.features.backbones`
for the names, weights and accepted checkpoint layouts.
"""

from s2d.features.backbones import BACKBONES, DEFAULT_BACKBONE, build_backbone, parse_backbone
from s2d.features.base import FACETS, LEVEL_STRIDES, LEVELS, Backbone, BackboneSpec, token_grid

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "FACETS",
    "LEVELS",
    "LEVEL_STRIDES",
    "Backbone",
    "BackboneSpec",
    "build_backbone",
    "parse_backbone",
    "token_grid",
]
