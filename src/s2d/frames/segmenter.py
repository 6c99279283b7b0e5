"""Stage 1 per frame and per video: motion + features + depth → affinity → iterative NCut → CRF → scores.

:class:`FrameSegmenter` turns one frame (with the optical flow to its neighbours and, optionally, a depth
map) into a :class:`FrameMasks`: up to ``max_masks`` (+1 motion-saliency candidate) boolean masks with
scores, sorted best first. :func:`segment_video` streams a whole video, holding three frames at a time
(previous, current, next) and each flow pair once, so memory does not grow with the video's length.

Example::

    from s2d.frames import FrameSegmenter, MaskConfig, segment_video
    seg = FrameSegmenter(MaskConfig(max_masks=3), backbone="lite0")
    for fm in segment_video("bikes.mp4", seg):
        print(fm.index, fm.scores)           # fm.masks: N×H×W bool at the video's original size
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from s2d.device import resolve_device
from s2d.errors import InputError
from s2d.frames.affinity import depth_affinity, feature_affinity, fuse_affinities, motion_affinity, pool_to_grid
from s2d.frames.config import MaskConfig
from s2d.frames.ncut import iterative_ncut
from s2d.frames.refine import crf_refine, resize_mask, resize_soft
from s2d.frames.score import combine_score, edge_agreement, motion_contrast

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["FrameMasks", "FrameSegmenter", "Motion", "DepthFolder", "segment_video", "motion_from_flow"]

_STRIDE_NO_FEATURES = 8


@dataclass
class Motion:
    """Camera-compensated motion of frame t towards one neighbour, at the flow working size.

    Attributes:
        residual: ``h×w×2`` float32 residual flow (flow minus the fitted camera homography), px.
        valid: ``h×w`` bool forward–backward consistency of the flow.
        magnitude: ``h×w`` float32 ``|residual|`` with 0 on invalid pixels (the motion saliency).
    """

    residual: np.ndarray
    valid: np.ndarray
    magnitude: np.ndarray


def motion_from_flow(flow: np.ndarray, valid: Optional[np.ndarray] = None) -> Motion:
    """Remove the camera motion (RANSAC homography on the consistent flow) from a flow field."""
    from s2d.features.camera import fit_camera_motion, residual_flow

    flow = np.asarray(flow, dtype=np.float32)
    valid = np.ones(flow.shape[:2], bool) if valid is None else np.asarray(valid, bool)
    fit = fit_camera_motion(flow, valid if valid.mean() > 0.2 else None)
    res = residual_flow(flow, fit.H)
    mag = np.linalg.norm(res, axis=-1).astype(np.float32)
    mag[~valid] = 0.0
    return Motion(res, valid, mag)


@dataclass
class FrameMasks:
    """Stage-1 output for one frame.

    Attributes:
        index: frame index in the source.
        masks: ``N×H×W`` bool, best first.
        scores: ``N`` float in [0, 1], descending.
        sources: ``N`` strings naming each mask's origin (``"ncut1"``…, ``"saliency"``).
        timings: seconds spent per step on this frame (``features``, ``flow``, ``ncut``, ``refine``).
        name: the frame's name (file stem, or ``f"{index:05d}"`` for video files).
        rgb: the processed frame (only when :func:`segment_video` is asked to keep it, e.g. for overlays).
    """

    index: int
    masks: np.ndarray
    scores: np.ndarray
    sources: List[str] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)
    name: str = ""
    rgb: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def to_frame_result(self, first_id: int = 1) -> Any:
        """As a :class:`s2d.types.FrameResult` with ids ``first_id, first_id+1, …``."""
        from s2d.types import FrameResult

        n = len(self)
        return FrameResult(self.index, self.masks, np.arange(first_id, first_id + n), self.scores)


class FrameSegmenter:
    """Single-frame unsupervised instance masks (stage 1).

    Args:
        cfg: the settings (:class:`MaskConfig`).
        backbone: a :class:`s2d.features.Backbone`, a spec string (``"lite0"``, ``"dino_vits16:PATH"``) or
            ``None`` (no appearance cue; motion only). Ignored when ``cfg.use_features`` is false.
        device: torch device for the backbone (``"auto"``: CUDA when available, ``"cpu"``, ``"cuda"``;
            :mod:`s2d.device`).
    """

    def __init__(self, cfg: Optional[MaskConfig] = None, backbone: Any = "lite0", device: Any = "auto") -> None:
        self.cfg = cfg or MaskConfig()
        self.backbone = None
        if self.cfg.use_features and backbone is not None:
            if isinstance(backbone, str):
                from s2d.features import build_backbone

                backbone = build_backbone(backbone, resolve_device(device))
            self.backbone = backbone
        if self.backbone is None and not self.cfg.motion:
            from s2d.errors import SettingError

            raise SettingError("stage 1 needs a cue: give a backbone or enable motion")

    @property
    def flow_config(self) -> Any:
        from s2d.features.flow import FlowConfig

        return FlowConfig(preset=self.cfg.flow_preset, max_side=self.cfg.flow_max_side)

    # ------------------------------------------------------------------ one frame

    def segment(self, rgb: np.ndarray, motions: Sequence[Motion] = (), depth: Optional[np.ndarray] = None,
                index: int = 0, out_size: Optional[Tuple[int, int]] = None) -> FrameMasks:
        """Masks of one frame.

        Args:
            rgb: ``H×W×3`` uint8 RGB frame.
            motions: camera-compensated motion towards the previous and/or next frame (:func:`motion_from_flow`);
                empty for a still image or with motion off.
            depth: optional ``h×w`` depth map (any size; larger = farther) for the 3-D cue.
            index: frame index stored in the result.
            out_size: ``(H, W)`` of the returned masks (default: the frame's).
        """
        cfg = self.cfg
        H, W = rgb.shape[:2]
        out_size = (H, W) if out_size is None else (int(out_size[0]), int(out_size[1]))
        timings = {"features": 0.0, "ncut": 0.0, "refine": 0.0}
        motions = list(motions) if cfg.motion else []

        # --- token grid and appearance
        t0 = time.perf_counter()
        feats = None
        if self.backbone is not None:
            f = self.backbone.patch_features(rgb, max_tokens=cfg.max_tokens)[0]
            grid = (int(f.shape[1]), int(f.shape[2]))
            feats = f.reshape(f.shape[0], -1).T.cpu().numpy()
        else:
            from s2d.features.base import token_grid  # lazy: keeps `import s2d.frames` free of torch

            grid = token_grid(H, W, _STRIDE_NO_FEATURES, cfg.max_tokens)
        timings["features"] = time.perf_counter() - t0

        # --- motion saliency (mean over the directions) and token motion vectors; with both directions the
        # vectors are 4-D, so sigma grows by sqrt(2) to keep the per-direction tolerance
        t0 = time.perf_counter()
        saliency = None
        if motions:
            mags = [m.magnitude for m in motions]
            saliency = mags[-1] if len(mags) == 1 or not cfg.bidirectional else 0.5 * (mags[0] + mags[1])
        W_app = feature_affinity(feats, cfg.feature_tau, cfg.affinity_eps) if feats is not None else None
        W_mot = None
        if motions:
            vecs = [pool_to_grid(np.where(m.valid[..., None], m.residual, 0.0), grid).reshape(-1, 2) for m in motions]
            W_mot = motion_affinity(np.concatenate(vecs, axis=1), cfg.motion_sigma * np.sqrt(len(vecs)),
                                    cfg.affinity_eps)
        W_dep = None
        if depth is not None:
            W_dep = depth_affinity(pool_to_grid(depth, grid), cfg.depth_sigma, cfg.affinity_eps)
        if W_app is None and W_mot is None:  # motion on but no neighbour (single image) and no features
            W_app = np.ones((grid[0] * grid[1],) * 2) if W_dep is not None else None
        cuts = []
        if W_app is not None or W_mot is not None:
            Wf = fuse_affinities(W_app, W_mot, fusion=cfg.fusion, motion_weight=cfg.motion_weight, depth=W_dep,
                                 eps=cfg.affinity_eps)
            cuts = iterative_ncut(Wf, grid, cfg.max_masks, cfg.flip_corners)
        timings["ncut"] = time.perf_counter() - t0

        # --- candidates at the CRF working size
        t0 = time.perf_counter()
        from s2d.io.video import scaled_size

        cw, ch = scaled_size(W, H, cfg.crf_max_side)
        small = rgb if (ch, cw) == (H, W) else cv2.resize(rgb, (cw, ch), interpolation=cv2.INTER_AREA)
        cands: List[Tuple[str, np.ndarray, Optional[float], Optional[np.ndarray]]] = []
        for k, cut in enumerate(cuts):
            cands.append((f"ncut{k + 1}", resize_mask(cut.mask, (ch, cw)), cut.eigenvalue, None))
        if saliency is not None and cfg.saliency_candidate:
            sal_mask, sal_prob = saliency_mask(saliency)
            cands.append(("saliency", resize_mask(sal_mask, (ch, cw)), None, resize_soft(sal_prob, (ch, cw))))

        px = max(ch, cw) / 512.0  # CRF lengths are given for a 512-px long side; keep their scale on the image
        results: List[Tuple[float, str, np.ndarray]] = []
        # candidates that duplicate the motion-saliency mask before refinement are not refined twice
        sal = [c[1] for c in cands if c[0] == "saliency"]
        cands = [c for c in cands if c[0] == "saliency" or not sal or _iou(c[1], sal[0]) <= cfg.dedup_iou]
        for name, coarse, lam, prob in cands:
            area = coarse.mean()
            if area < cfg.min_area or area > cfg.max_area:
                continue
            if cfg.refine == "crf":
                refined = crf_refine(small, coarse, prob=prob, iters=cfg.crf_iters,
                                     unary=cfg.crf_unary if prob is None else cfg.crf_soft_unary,
                                     gauss_sxy=cfg.crf_gauss_sxy * px, gauss_compat=cfg.crf_gauss_compat,
                                     bilateral_sxy=cfg.crf_bilateral_sxy * px, bilateral_srgb=cfg.crf_bilateral_srgb,
                                     bilateral_compat=cfg.crf_bilateral_compat)
                agreement = edge_agreement(coarse, refined)
            else:
                refined, agreement = coarse, None
            area = refined.mean()
            if area < cfg.min_area or area > cfg.max_area:
                continue
            contrast = motion_contrast(refined, saliency) if saliency is not None else None
            score = combine_score(area_frac=float(area), contrast=contrast, eigenvalue=lam, agreement=agreement,
                                  max_area=cfg.max_area)
            results.append((score, name, refined))
        results.sort(key=lambda r: -r[0])
        kept: List[Tuple[float, str, np.ndarray]] = []
        for r in results:
            if all(_iou(r[2], k[2]) <= cfg.dedup_iou for k in kept):
                kept.append(r)
        masks = np.stack([resize_mask(m, out_size) for _, _, m in kept]) if kept else np.zeros((0,) + out_size, bool)
        timings["refine"] = time.perf_counter() - t0
        return FrameMasks(index, masks, np.array([s for s, _, _ in kept], np.float64), [n for _, n, _ in kept],
                          timings)


def saliency_mask(saliency: np.ndarray, softness: float = 0.25, gate_px: int = 7) -> Tuple[np.ndarray, np.ndarray]:
    """The motion-saliency candidate: Otsu threshold on the compensated motion magnitude, largest connected
    component (the classical motion mask), plus a soft foreground probability for the CRF's unary —
    a sigmoid around the threshold (width ``softness``·threshold), gated to within ``gate_px`` pixels of the
    component so that other moving clutter does not leak in."""
    from s2d.features.camera import largest_component, otsu_threshold

    th = otsu_threshold(saliency)
    mask = largest_component(saliency > th)
    z = np.clip((saliency - th) / (softness * th + 1e-3), -30.0, 30.0)
    prob = 1.0 / (1.0 + np.exp(-z))
    k = np.ones((2 * gate_px + 1, 2 * gate_px + 1), np.uint8)
    prob = (prob * (cv2.dilate(mask.astype(np.uint8), k) > 0)).astype(np.float32)
    return mask, prob


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / u if u else 0.0


# --------------------------------------------------------------------------- depth maps


class DepthFolder:
    """Per-frame depth maps from a folder: ``<frame name>.npy`` / ``.png`` (16- or 8-bit), or, when the names
    do not match, the i-th file in natural order for the i-th frame. Larger values = farther."""

    EXTS = (".npy", ".png", ".tif", ".tiff", ".exr")

    def __init__(self, folder: PathLike) -> None:
        from s2d.io.video import natural_key

        self.dir = Path(folder)
        if not self.dir.is_dir():
            raise InputError(self.dir, "depth folder not found")
        self.files = sorted((p for p in self.dir.iterdir() if p.suffix.lower() in self.EXTS),
                            key=lambda p: natural_key(p.name))
        if not self.files:
            raise InputError(self.dir, "no depth maps (.npy or .png) in the folder")
        self.by_stem = {p.stem: p for p in self.files}

    def get(self, name: str, position: int) -> np.ndarray:
        p = self.by_stem.get(name)
        if p is None:
            if position >= len(self.files):
                raise InputError(self.dir, f"no depth map for frame {name!r} (only {len(self.files)} maps)")
            p = self.files[position]
        try:
            if p.suffix.lower() == ".npy":
                d = np.load(p)
            else:
                d = cv2.imread(str(p), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
                if d is None:
                    raise ValueError("unreadable image")
        except Exception as exc:  # noqa: BLE001 - report any decoder failure as bad input
            raise InputError(p, f"cannot read depth map: {exc}") from None
        d = np.asarray(d, dtype=np.float32)
        if d.ndim == 3:
            d = d[..., 0]
        if d.ndim != 2:
            raise InputError(p, f"depth map must be 2-D, got shape {d.shape}")
        return d


# --------------------------------------------------------------------------- streaming over a video


def segment_video(source: PathLike, segmenter: FrameSegmenter, *, max_side: Optional[int] = None,
                  depth_dir: Optional[PathLike] = None, out_size: Optional[Tuple[int, int]] = None,
                  stream: Any = None, keep_rgb: bool = False) -> Iterator[FrameMasks]:
    """Yield :class:`FrameMasks` for every frame of a video file or frame folder, in order.

    Frames are processed at ``max_side`` (long side; ``None`` = as stored) and masks returned at
    ``out_size`` (default: the source's original size). Holds the previous, current and next frame and
    their two flow pairs only. ``stream`` may be an already opened :class:`s2d.io.video.VideoStream`;
    ``keep_rgb`` attaches the processed frame to each result (``FrameMasks.rgb``).
    """
    from s2d.features.flow import flow_pair
    from s2d.io.video import open_video

    cfg = segmenter.cfg
    fcfg = segmenter.flow_config
    depth = DepthFolder(depth_dir) if depth_dir is not None else None
    own = stream is None
    st = open_video(source, max_side=max_side) if own else stream
    try:
        size = out_size or (st.info.orig_height, st.info.orig_width)
        it = iter(st)
        prev_pair = None  # FlowPair (t-1, t)
        cur = next(it, None)
        position = 0
        while cur is not None:
            nxt = next(it, None)
            t0 = time.perf_counter()
            pair = flow_pair(cur.rgb, nxt.rgb, fcfg) if (cfg.motion and nxt is not None) else None
            motions = []
            if cfg.motion:
                if prev_pair is not None:
                    motions.append(motion_from_flow(prev_pair.bwd, prev_pair.bwd_valid))
                if pair is not None:
                    motions.append(motion_from_flow(pair.fwd, pair.fwd_valid))
            t_flow = time.perf_counter() - t0
            d = depth.get(cur.name, position) if depth is not None else None
            fm = segmenter.segment(cur.rgb, motions, d, index=cur.index, out_size=size)
            fm.timings["flow"] = t_flow
            fm.name = cur.name
            if keep_rgb:
                fm.rgb = cur.rgb
            yield fm
            prev_pair, cur = pair, nxt
            position += 1
    finally:
        if own:
            st.close()
