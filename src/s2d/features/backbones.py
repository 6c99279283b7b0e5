"""Backbone names, ``NAME[:PATH]`` parsing and :func:`build_backbone`.

=================  =================================================  ========  ======  ==============
name               weights                                            stride    dim     normalisation
=================  =================================================  ========  ======  ==============
``lite0``          built in (ImageNet-supervised EfficientNet-Lite0)  8 (4–32)  472     mean=std=0.5
``dino_vits16``    ``dino_deitsmall16_pretrain.pth``                  16        384     ImageNet
``dino_vits8``     ``dino_deitsmall8_pretrain.pth``                   8         384     ImageNet
``dino_vitb8``     ``dino_vitbase8_pretrain.pth``                     8         768     ImageNet
``dinov2_vits14``  ``dinov2_vits14_pretrain.pth``                     14        384     ImageNet
``resnet50``       ``dino_resnet50_pretrain.pth``                     16 (4–32) 3072    ImageNet
``random``         seeded random init (tests)                         8 (4–32)  160     ImageNet
=================  =================================================  ========  ======  ==============

``lite0`` is ImageNet-*supervised*; the DINO weights reproduce the paper's fully unsupervised setting.
No weights are ever downloaded: pass the official files by path, e.g. ``dino_vits16:/ckpt/dino_deitsmall16_pretrain.pth``.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Tuple, Union

import torch

from s2d.errors import SettingError
from s2d.features.base import FACETS, Backbone, BackboneSpec
from s2d.features.cnn import Lite0Backbone, RandomBackbone, ResNet50Backbone
from s2d.features.vit import VIT_CONFIGS, ViTBackbone

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "parse_backbone", "build_backbone"]

DEFAULT_BACKBONE = "lite0"


def _build_lite0(spec: BackboneSpec, random_init: bool) -> Backbone:
    return Lite0Backbone(stride=spec.stride or 8, weights=spec.weights, random_init=random_init)


def _build_resnet50(spec: BackboneSpec, random_init: bool) -> Backbone:
    return ResNet50Backbone(stride=spec.stride or 16, weights=spec.weights, random_init=random_init)


def _build_random(spec: BackboneSpec, random_init: bool) -> Backbone:
    if spec.weights is not None:
        raise SettingError("backbone random takes no weights (use random, not random:PATH)")
    return RandomBackbone(stride=spec.stride or 8)


def _vit_builder(name: str) -> Callable[[BackboneSpec, bool], Backbone]:
    def build(spec: BackboneSpec, random_init: bool) -> Backbone:
        return ViTBackbone(name, weights=spec.weights, facet=spec.facet, stride=spec.stride, random_init=random_init)

    return build


#: name → builder (a constant; nothing registers into it at run time).
_BUILDERS: Dict[str, Callable[[BackboneSpec, bool], Backbone]] = {
    "lite0": _build_lite0,
    **{name: _vit_builder(name) for name in VIT_CONFIGS},
    "resnet50": _build_resnet50,
    "random": _build_random,
}

#: Valid backbone names, default first.
BACKBONES: Tuple[str, ...] = tuple(_BUILDERS)


def _unknown(name: str) -> SettingError:
    return SettingError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}")


def parse_backbone(spec: str, *, facet: str = "key", stride: Optional[int] = None) -> BackboneSpec:
    """Parse ``"NAME"`` or ``"NAME:PATH"`` (e.g. ``"dino_vits16:/ckpt/dino_deitsmall16_pretrain.pth"``).

    The name is case-insensitive; the path (everything after the first ``:``) is kept as given, with
    ``~`` expanded. Raises :class:`s2d.errors.SettingError` for an unknown name (listing the valid
    ones), an empty name or path, ``random:PATH``, or an invalid ``facet`` / ``stride``.
    """
    if not isinstance(spec, str):
        raise SettingError(f"backbone must be a string NAME or NAME:PATH, got {type(spec).__name__}")
    name, sep, path = spec.strip().partition(":")
    name = name.strip().lower()
    if not name:
        raise SettingError(f"empty backbone name in {spec!r}; valid names: {', '.join(BACKBONES)}")
    if name not in _BUILDERS:
        raise _unknown(name)
    weights: Optional[str] = None
    if sep:
        if not path.strip():
            raise SettingError(f"backbone {spec!r}: no checkpoint path after ':'")
        if name == "random":
            raise SettingError("backbone random takes no weights (use random, not random:PATH)")
        weights = os.path.expanduser(path.strip())
    return _validated(BackboneSpec(name, weights, facet, stride))


def _validated(spec: BackboneSpec) -> BackboneSpec:
    if spec.name not in _BUILDERS:
        raise _unknown(spec.name)
    if spec.facet not in FACETS:
        raise SettingError(f"facet must be one of {', '.join(FACETS)}, got {spec.facet!r}")
    if spec.stride is not None:
        if spec.name in VIT_CONFIGS:
            patch = VIT_CONFIGS[spec.name].patch
            if spec.stride != patch:
                raise SettingError(f"backbone {spec.name}: stride is the patch size {patch}, got {spec.stride}")
        elif spec.stride not in (4, 8, 16, 32):
            raise SettingError(f"backbone {spec.name}: stride must be 4, 8, 16 or 32, got {spec.stride}")
    return spec


def build_backbone(spec: Union[str, BackboneSpec] = DEFAULT_BACKBONE, device: Union[str, torch.device] = "cpu", *,
                   random_init: bool = False) -> Backbone:
    """Build a backbone in eval mode on ``device``, with its weights loaded.

    Args:
        spec: ``"NAME"``, ``"NAME:PATH"`` or a :class:`BackboneSpec`.
        device: where the module lives (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``).
        random_init: build the architecture with random weights instead of loading a checkpoint
            (for tests and training from scratch; the DINO/ResNet backbones otherwise need a path).

    Raises:
        s2d.errors.SettingError: unknown name, bad stride/facet, missing weights path.
        s2d.errors.InputError: the checkpoint is missing, unreadable, or not in the expected layout
            (one line naming the file and the first missing/unexpected keys).
    """
    spec = parse_backbone(spec) if isinstance(spec, str) else _validated(spec)
    backbone = _BUILDERS[spec.name](spec, random_init)
    return backbone.to(device).eval()
