"""Typed settings of stage 1 (single-frame masks): :class:`MaskConfig`.

Every field has a documented default chosen on the mean over all 23 shared DAVIS-2016 sequences (see
``benchmarks/bench_stage1.py``), never on one clip. The dataclass is flat so that it maps one-to-one to a
YAML mapping and to ``--set key=value`` overrides on the command line (:meth:`MaskConfig.with_overrides`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence

from s2d.errors import SettingError

__all__ = ["MaskConfig", "REFINE_MODES", "FUSIONS"]

REFINE_MODES = ("crf", "none")
FUSIONS = ("product", "sum")


@dataclass(frozen=True)
class MaskConfig:
    """How stage 1 turns one frame (plus its neighbours' motion) into up to ``max_masks`` scored masks.

    Graph and cut:
        max_masks: K, the number of iterative normalized cuts per frame (default 3).
        max_tokens: upper bound of graph nodes (token grid ``h*w``); the backbone's features and the flow
            are pooled onto this grid. The eigen-solve costs grow ~quadratically (default 1024).
        feature_tau: MaskCut threshold on the cosine similarity of patch features; pairs above it get
            affinity 1, others ``affinity_eps`` (default 0.2).
        affinity_eps: floor of every affinity so the graph stays connected (default 1e-5).
        use_features: use the backbone's appearance affinity at all (default True).
        motion: use motion (default True for videos; a single image has none).
        motion_sigma: scale in working-size flow pixels of the motion affinity
            ``exp(-|u_i - u_j|^2 / sigma^2)`` on camera-compensated flow (default 1.0, FlowCut-style).
        motion_weight: in ``"sum"`` fusion the weight of the motion affinity (appearance gets
            ``1 - motion_weight``); in ``"product"`` fusion the exponent of the appearance term's influence
            (0 = motion only, 1 = both must agree). Default 0.5.
        fusion: ``"product"`` (an edge is strong only where motion *and* appearance agree; default) or
            ``"sum"`` (weighted sum).
        depth_sigma: scale of the optional 3-D (depth) cue, as a fraction of the median scene depth;
            affinities are multiplied by ``exp(-|P_i - P_j|^2 / (sigma*median_depth)^2)`` (default 0.25).
        flip_corners: flip a bipartition whose foreground covers at least this many of the grid's 4
            corners (default 2, MaskCut's rule).

    Motion:
        flow_max_side: long side of the optical-flow working size (default 512).
        flow_preset: DIS preset (default ``"medium"``).
        bidirectional: use the motion towards *both* neighbours (t−1 and t+1): the motion saliency is the
            mean of both directions' compensated flow magnitudes (measured: +0.02 J over t+1 alone and
            better than their minimum, which also removes true motion where one direction is occluded),
            and the motion affinity compares both flow vectors (default True; the first/last frame use one
            side).
        saliency_candidate: add the motion-saliency mask (Otsu threshold on the camera-compensated flow
            magnitude, largest component) to the candidates beside the NCut masks (default True).

    Refinement and output:
        refine: ``"crf"`` (fully connected CRF on the image; default) or ``"none"``.
        crf_max_side: long side of the image the CRF runs on; masks are upsampled afterwards (default 384:
            measured J within 0.001 of 512 at half the CRF time).
        crf_iters, crf_unary, crf_gauss_sxy, crf_gauss_compat, crf_bilateral_sxy, crf_bilateral_srgb,
        crf_bilateral_compat: the CRF (defaults: 8 iterations, unary 0.7/0.3, Gaussian sxy 3 compat 3,
            bilateral sxy 60 srgb 10 compat 3; lengths in pixels of a 512-px long side, scaled with ``crf_max_side``). Measured on the
            motion-saliency masks: bilateral compat 3 > 5 > 10 (+0.05 J over 10), srgb 10 > 20.
        crf_soft_unary: clip range ``[1-u, u]`` of the soft unary used for the motion-saliency candidate,
            whose CRF starts from a sigmoid of the motion magnitude instead of a hard mask (default 0.8).
        min_area: masks smaller than this fraction of the frame are dropped (default 0.002).
        max_area: masks larger than this fraction of the frame are dropped (default 0.8).
        dedup_iou: of two masks overlapping more than this IoU only the higher-scored one is kept
            (default 0.8).
    """

    max_masks: int = 3
    max_tokens: int = 1024
    feature_tau: float = 0.2
    affinity_eps: float = 1e-5
    use_features: bool = True
    motion: bool = True
    motion_sigma: float = 1.0
    motion_weight: float = 0.5
    fusion: str = "product"
    depth_sigma: float = 0.25
    flip_corners: int = 2
    flow_max_side: int = 512
    flow_preset: str = "medium"
    bidirectional: bool = True
    saliency_candidate: bool = True
    refine: str = "crf"
    crf_max_side: int = 384
    crf_iters: int = 8
    crf_unary: float = 0.7
    crf_soft_unary: float = 0.8
    crf_gauss_sxy: float = 3.0
    crf_gauss_compat: float = 3.0
    crf_bilateral_sxy: float = 60.0
    crf_bilateral_srgb: float = 10.0
    crf_bilateral_compat: float = 3.0
    min_area: float = 0.002
    max_area: float = 0.8
    dedup_iou: float = 0.8

    def __post_init__(self) -> None:
        def positive_int(name: str, lo: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise SettingError(f"{name} must be an integer >= {lo}, got {v!r}")

        def number(name: str, lo: float, hi: Optional[float] = None, strict: bool = False) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SettingError(f"{name} must be a number, got {v!r}")
            bad = v <= lo if strict else v < lo
            if bad or (hi is not None and v > hi) or v != v:
                rng = f"({lo}, {hi}]" if strict else f"[{lo}, {hi}]"
                raise SettingError(f"{name} must be in {rng if hi is not None else ('> ' if strict else '>= ') + str(lo)}, got {v!r}")

        positive_int("max_masks")
        positive_int("max_tokens", 16)
        positive_int("flow_max_side", 16)
        positive_int("crf_max_side", 16)
        positive_int("crf_iters", 0)
        positive_int("flip_corners", 0)
        number("feature_tau", -1.0, 1.0)
        number("affinity_eps", 0.0, 1.0, strict=True)
        number("motion_sigma", 0.0, strict=True)
        number("motion_weight", 0.0, 1.0)
        number("depth_sigma", 0.0, strict=True)
        number("crf_unary", 0.5, 1.0, strict=True)
        number("crf_soft_unary", 0.5, 1.0, strict=True)
        for n in ("crf_gauss_sxy", "crf_gauss_compat", "crf_bilateral_sxy", "crf_bilateral_srgb",
                  "crf_bilateral_compat"):
            number(n, 0.0)
        number("min_area", 0.0, 1.0)
        number("max_area", 0.0, 1.0, strict=True)
        number("dedup_iou", 0.0, 1.0)
        for n in ("use_features", "motion", "bidirectional", "saliency_candidate"):
            if not isinstance(getattr(self, n), bool):
                raise SettingError(f"{n} must be true or false, got {getattr(self, n)!r}")
        if self.fusion not in FUSIONS:
            raise SettingError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.refine not in REFINE_MODES:
            raise SettingError(f"refine must be one of {', '.join(REFINE_MODES)}, got {self.refine!r}")
        if self.flow_preset not in ("ultrafast", "fast", "medium"):
            raise SettingError(f"flow_preset must be ultrafast, fast or medium, got {self.flow_preset!r}")
        if not self.use_features and not self.motion:
            raise SettingError("stage 1 needs a cue: use_features and motion cannot both be false")

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MaskConfig":
        """Build from a mapping (e.g. a YAML file's ``masks:`` section) through :mod:`s2d.settings`:
        unknown keys and values of the wrong type are errors."""
        from s2d.settings import from_mapping

        return from_mapping(cls, data, what="mask")

    def with_overrides(self, items: Sequence[str]) -> "MaskConfig":
        """Apply ``key=value`` strings (as ``--set``); see :func:`s2d.settings.apply_overrides`."""
        from s2d.settings import apply_overrides

        return apply_overrides(self, items, "mask")
