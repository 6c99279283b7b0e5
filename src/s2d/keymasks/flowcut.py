"""FlowCut-style discovery for one video: temporal mask matching → short consistent segments.

An alternative to keymask discovery (:mod:`s2d.keymasks.discover`) after FlowCut (Sari & Favaro, arXiv
2505.13174, stage 2): instead of tracking points, the single-frame masks of stage 1 are matched between
nearby frames by their IoU after warping with optical flow, and chains of matches become objects.

Pipeline of :func:`discover_flowcut`, frame by frame (only the last ``k + 1`` frames' grayscale images and
decoded masks are in memory, so memory does not grow with the video's length):

1. Every single-frame mask is decoded when its frame is reached and reduced to the flow working size (area
   interpolation, kept where it covers more than half of a working pixel).
2. **Open segments** are those whose last mask lies at most ``k`` frames back. For each gap ``d`` in use,
   DIS flow from frame ``t`` to frame ``t − d`` (:func:`s2d.features.flow.compute_flow`; it includes the
   camera's motion, which is what a mask moves with) warps the segment's last mask onto frame ``t``.
3. **Pairing**: the IoU of every warped open-segment mask with every mask of frame ``t``; a one-to-one
   assignment maximising the summed IoU (Hungarian), and only pairs with IoU ≥ ``iou_threshold`` are kept.
   A kept pair extends its segment; every unpaired mask of frame ``t`` opens a new segment. A segment not
   extended for more than ``k`` frames is closed, so a mask that is missing on up to ``k − 1`` frames in a
   row is bridged, and one that appears in a new place every frame (flicker) never chains.
4. Segments with at least ``min_length`` masks are the objects (ids 1..n by first frame, then by the
   stage-1 rank of their first mask); their member masks — the stage-1 masks themselves, not the warped
   ones — are the labels. Each object gets the ``saliency`` and ``score_ratio`` of keymask discovery
   (:class:`s2d.keymasks.discover.KeymaskObject`), so ``s2d train``'s gates apply unchanged.

The paper's exact values (the frame distance, the IoU threshold, the segment length, its flow network) are
**not known here**: only its abstract was available (``PAPER.md`` §5). The defaults below were chosen on the
16 ``seen`` DAVIS-2016 training sequences of the shared data (``benchmarks/results/flowcut_vs_keymask.md``),
with DIS flow in place of a learned flow network.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from s2d import rle as rle_utils
from s2d.errors import SettingError, ValidationError
from s2d.features.flow import DIS_PRESETS, FlowConfig, compute_flow, prepare_gray, warp
from s2d.keymasks.discover import KeymaskStats, MaskInfo, _collect_masks, _top_scores, _top_tracks, split_components
from s2d.tracking.video import FrameSource, iter_input_frames
from s2d.types import Track, VideoSegmentation

__all__ = ["FlowCutConfig", "FlowCutObject", "FlowCutResult", "discover_flowcut", "mask_iou", "warped_iou"]


@dataclass(frozen=True)
class FlowCutConfig:
    """Settings of FlowCut-style discovery (``s2d discover --method flowcut``, ``--set flowcut.KEY=VALUE``).

    The paper's values are unknown (only its abstract was available); the defaults were chosen on the 16
    ``seen`` DAVIS-2016 sequences of the shared data.

    Attributes:
        k: masks are paired across frames up to ``k`` apart (a segment may miss ``k − 1`` frames in a row).
        iou_threshold: a pair is kept when the IoU of the warped mask with the other mask is at least this.
        min_length: segments with fewer masks than this are dropped (flicker and fragments).
        warp: warp masks with optical flow before the IoU (``false``: plain IoU, for comparison).
        flow_preset: DIS preset of the flow (``ultrafast``, ``fast``, ``medium``).
        flow_max_side: long side (pixels) of the working size at which flow and IoUs are computed.
        split_components: split every single-frame mask into its 8-connected components first (as keymask
            discovery's ``split_components``), each keeping its mask's score and stage-1 rank.
        component_min_fraction: components smaller than this fraction of the frame are dropped (when splitting).
    """

    k: int = 3
    iou_threshold: float = 0.5
    min_length: int = 5
    warp: bool = True
    flow_preset: str = "medium"
    flow_max_side: int = 512
    split_components: bool = False
    component_min_fraction: float = 0.0005

    def __post_init__(self) -> None:
        for name, lo in (("k", 1), ("min_length", 1), ("flow_max_side", 8)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise SettingError(f"flowcut.{name} must be an integer >= {lo}, got {v!r}")
        for name, strict_lo in (("iou_threshold", True), ("component_min_fraction", False)):
            v = getattr(self, name)
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and v == v
            if not ok or v > 1 or (v <= 0 if strict_lo else v < 0):
                raise SettingError(f"flowcut.{name} must be a number in {'(0' if strict_lo else '[0'}, 1], "
                                   f"got {v!r}")
        for name in ("warp", "split_components"):
            if not isinstance(getattr(self, name), bool):
                raise SettingError(f"flowcut.{name} must be true or false, got {getattr(self, name)!r}")
        if self.flow_preset not in DIS_PRESETS:
            raise SettingError(f"flowcut.flow_preset must be one of {', '.join(DIS_PRESETS)}, "
                               f"got {self.flow_preset!r}")

    @property
    def flow(self) -> FlowConfig:
        """The DIS settings of the flow."""
        return FlowConfig(preset=self.flow_preset, max_side=self.flow_max_side)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FlowCutConfig":
        """Build from a mapping through :mod:`s2d.settings` (unknown keys and wrong types are errors)."""
        from s2d.settings import from_mapping

        return from_mapping(cls, data, prefix="flowcut.", what="flowcut")

    def with_overrides(self, items: Sequence[str]) -> "FlowCutConfig":
        """Apply ``key=value`` strings (as ``--set``); see :func:`s2d.settings.apply_overrides`."""
        from s2d.settings import apply_overrides

        return apply_overrides(self, items, "flowcut", prefix="flowcut.")


@dataclass
class FlowCutObject(KeymaskStats):
    """One chained segment: an object with a mask on each frame it covers.

    Attributes:
        id: 1..n by (first frame, stage-1 rank of the first mask).
        frames: the frames of its masks, ascending (gaps of up to ``k − 1`` frames possible).
        mask_indices: global index of each mask (masks ordered by frame, then by stage-1 rank).
        masks: COCO RLE of each mask (the stage-1 mask, full resolution).
        scores: stage-1 score of each mask.
        link_ious: IoU after warping of each link (one fewer than masks).
        saliency, score_ratio: as :class:`s2d.keymasks.discover.KeymaskObject` (stage-1 rank and relative
            score of its masks).
    """

    id: int
    frames: List[int]
    mask_indices: List[int]
    masks: List[dict]
    scores: List[float]
    link_ious: List[float]
    saliency: float = 0.0
    score_ratio: float = 0.0

    def extra(self) -> Dict[str, Any]:
        """Per-object fields stored in ``Track.extra`` (and thus in the YouTube-VIS records)."""
        return {
            "num_keymasks": self.num_keymasks,
            "segment": [int(self.frames[0]), int(self.frames[-1])],
            "mean_link_iou": round(float(np.mean(self.link_ious)), 4) if self.link_ious else None,
            "saliency": round(float(self.saliency), 4),
            "score_ratio": round(float(self.score_ratio), 4),
        }


@dataclass
class FlowCutResult:
    """The objects of one video and the numbers that describe the run (same outputs as
    :class:`s2d.keymasks.discover.KeymaskResult`: :meth:`to_video`, :meth:`summary`)."""

    objects: List[FlowCutObject]
    diagnostics: Dict[str, Any]
    height: int
    width: int
    num_frames: int
    fps: Optional[float] = None
    name: Optional[str] = None
    video_id: Optional[int] = None
    frame_names: Optional[List[str]] = None

    def to_video(self) -> VideoSegmentation:
        """Sparse video labels: one track per object, RLE on its frames and ``None`` elsewhere."""
        tracks = []
        for obj in self.objects:
            seq: List[Optional[dict]] = [None] * self.num_frames
            for f, m in zip(obj.frames, obj.masks):
                seq[f] = m
            tracks.append(Track(obj.id, seq, obj.score, 1, obj.extra()))
        return VideoSegmentation(self.height, self.width, self.num_frames, tracks, fps=self.fps,
                                 name=self.name, video_id=self.video_id, frame_names=self.frame_names)

    def summary(self) -> Dict[str, Any]:
        """JSON-safe diagnostics: the method, the video-level numbers and one entry per object."""
        return {
            "method": "flowcut",
            "name": self.name,
            "num_frames": self.num_frames,
            "diagnostics": dict(self.diagnostics),
            "objects": [{"id": o.id, "frames": o.frames, "score": o.score, **o.extra()} for o in self.objects],
        }


# --------------------------------------------------------------------------- IoU


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every mask of ``a`` (``N×H×W`` bool) with every mask of ``b`` (``M×H×W``): ``N×M`` float."""
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1.0), 0.0)


def warp_mask(mask: np.ndarray, flow_back: np.ndarray) -> np.ndarray:
    """``mask`` of an earlier frame moved onto a later frame: ``flow_back`` is the flow later → earlier
    (``H×W×2``, the mask's size); a pixel is set where more than half of its bilinear sample is."""
    return warp(mask.astype(np.float32), flow_back) > 0.5


def warped_iou(earlier: np.ndarray, later: np.ndarray, flow_back: Optional[np.ndarray]) -> np.ndarray:
    """IoU of every mask of ``earlier`` (``N×H×W``), warped onto the later frame with ``flow_back`` (later →
    earlier; ``None``: not warped), with every mask of ``later`` (``M×H×W``)."""
    moved = earlier if flow_back is None else np.stack([warp_mask(m, flow_back) for m in earlier])
    return mask_iou(moved, later)


# --------------------------------------------------------------------------- segments


@dataclass
class _Segment:
    """A chain of masks under construction: global indices, their frames and the IoU of each link."""

    members: List[int]
    frames: List[int]
    link_ious: List[float] = field(default_factory=list)

    @property
    def last_frame(self) -> int:
        return self.frames[-1]


@dataclass
class _Masks:
    """The non-empty single-frame masks (RLE) in global order (frame, stage-1 rank) with their infos."""

    infos: List[MaskInfo]
    rles: List[dict]
    by_frame: Dict[int, List[int]]
    empty: int


def _prepare_masks(masks: VideoSegmentation, cfg: FlowCutConfig) -> _Masks:
    """Every non-empty single-frame mask with its :class:`MaskInfo` (split into components if configured)."""
    H, W = masks.height, masks.width
    entries = _collect_masks(masks)
    if cfg.split_components:
        entries = split_components(entries, cfg.component_min_fraction * H * W)
    out = _Masks([], [], {}, 0)
    for frame, _pos, tid, score, rle in entries:
        area = rle_utils.area(rle)
        if area == 0:
            out.empty += 1
            continue
        gi = len(out.infos)
        out.infos.append(MaskInfo(gi, frame, tid, score, int(area)))
        out.rles.append(rle)
        out.by_frame.setdefault(frame, []).append(gi)
    return out


def _shrink(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A full-size bool mask at ``size = (h, w)``: pixels more than half covered (area interpolation)."""
    h, w = size
    if mask.shape == (h, w):
        return mask.astype(bool)
    return cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0.5


def _assign(iou: np.ndarray, threshold: float) -> List[Tuple[int, int, float]]:
    """One-to-one pairs ``(row, col, iou)`` maximising the summed IoU, only those with IoU ≥ ``threshold``."""
    from scipy.optimize import linear_sum_assignment

    if iou.size == 0:
        return []
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols) if iou[r, c] >= threshold]


class _Chainer:
    """Frame-by-frame chaining of masks into segments (steps 2–3 of the module doc)."""

    def __init__(self, ms: _Masks, cfg: FlowCutConfig) -> None:
        self.ms, self.cfg = ms, cfg
        self.open: List[_Segment] = []
        self.closed: List[_Segment] = []
        self.grays: Dict[int, np.ndarray] = {}
        self.small: Dict[int, np.ndarray] = {}  # decoded working-size masks of the last k + 1 frames
        self.flows = 0
        self.pairs_kept = 0

    def step(self, t: int, gray: np.ndarray) -> None:
        """Frame ``t`` (grayscale at the working size): pair its masks with the open segments."""
        k = self.cfg.k
        self.grays[t] = gray
        self.grays.pop(t - k - 1, None)
        for gi in self.ms.by_frame.get(t - k - 1, []):
            self.small.pop(gi, None)
        current = self.ms.by_frame.get(t, [])
        for gi in current:
            self.small[gi] = _shrink(rle_utils.decode(self.ms.rles[gi]), gray.shape[:2])
        self.closed += [s for s in self.open if t - s.last_frame > k]
        self.open = [s for s in self.open if t - s.last_frame <= k]
        matched = self._pair(t, current) if current and self.open else {}
        for j, gi in enumerate(current):
            if j in matched:
                seg, iou = matched[j]
                seg.members.append(gi)
                seg.frames.append(t)
                seg.link_ious.append(iou)
            else:
                self.open.append(_Segment([gi], [t]))

    def _pair(self, t: int, current: List[int]) -> Dict[int, Tuple[_Segment, float]]:
        """Column (mask of frame ``t``) → (segment, IoU) of the kept pairs."""
        later = np.stack([self.small[i] for i in current])
        rows = []
        for d in sorted({t - s.last_frame for s in self.open}):
            segs = [s for s in self.open if t - s.last_frame == d]
            earlier = np.stack([self.small[s.members[-1]] for s in segs])
            rows.append((segs, warped_iou(earlier, later, self._flow_back(t, d))))
        segs = [s for group, _ in rows for s in group]
        iou = np.concatenate([m for _, m in rows], axis=0)
        kept = _assign(iou, self.cfg.iou_threshold)
        self.pairs_kept += len(kept)
        return {c: (segs[r], v) for r, c, v in kept}

    def _flow_back(self, t: int, d: int) -> Optional[np.ndarray]:
        """Flow from frame ``t`` to frame ``t − d`` (``None`` when warping is off)."""
        if not self.cfg.warp:
            return None
        self.flows += 1
        return compute_flow(self.grays[t], self.grays[t - d], self.cfg.flow)

    def segments(self) -> List[_Segment]:
        """All segments, closed and still open."""
        return self.closed + self.open


# --------------------------------------------------------------------------- main entry


def _gray_frames(frames: FrameSource, cfg: FlowCutConfig) -> Iterator[np.ndarray]:
    """Grayscale frames at the flow working size."""
    stream, _ = iter_input_frames(frames, cfg.flow_max_side)
    for frame in stream:
        yield prepare_gray(frame.rgb, cfg.flow)


def discover_flowcut(masks: VideoSegmentation, frames: FrameSource,
                     config: Optional[FlowCutConfig] = None) -> FlowCutResult:
    """FlowCut-style discovery in one video: chain single-frame masks into segments (module doc).

    Args:
        masks: the single-frame masks (stage 1): every non-null frame of every track is one mask, its score
            the track's score; the tracks' order is stage 1's rank on each frame.
        frames: the video (file, frame folder or glob) or an iterable of ``H×W×3`` uint8 frames, with
            ``masks.num_frames`` frames.
        config: settings (:class:`FlowCutConfig` defaults if ``None``).

    Returns:
        :class:`FlowCutResult`; ``diagnostics`` has ``num_masks``, ``empty_masks``, ``segments`` (all chains),
        ``objects``, ``labelled_masks``, ``pairs_kept``, ``flows`` (DIS calls) and ``frames_covered``
        (fraction of frames with a label).
    """
    cfg = config if config is not None else FlowCutConfig()
    if not isinstance(cfg, FlowCutConfig):
        raise SettingError(f"config must be a FlowCutConfig, got {type(cfg).__name__}")
    if not isinstance(masks, VideoSegmentation):
        raise SettingError(f"masks must be a VideoSegmentation, got {type(masks).__name__}")
    chainer = _Chainer(_prepare_masks(masks, cfg), cfg)
    n = 0
    for t, gray in enumerate(_gray_frames(frames, cfg)):
        if t >= masks.num_frames:
            raise ValidationError(f"the video has more frames than the masks' {masks.num_frames}")
        chainer.step(t, gray)
        n = t + 1
    if n != masks.num_frames:
        raise ValidationError(f"the video has {n} frames, the masks {masks.num_frames}")
    objects = _number_objects(chainer, cfg)
    return FlowCutResult(objects, _diagnostics(chainer, objects, masks.num_frames), masks.height, masks.width,
                         masks.num_frames, fps=masks.fps, name=masks.name, video_id=masks.video_id,
                         frame_names=masks.frame_names)


def _number_objects(chainer: _Chainer, cfg: FlowCutConfig) -> List[FlowCutObject]:
    """Segments with at least ``min_length`` masks as objects, ids 1..n by (first frame, first mask index)."""
    ms = chainer.ms
    keep = sorted((s for s in chainer.segments() if len(s.members) >= cfg.min_length), key=lambda s: s.members[0])
    top_track, top_score = _top_tracks(ms.infos), _top_scores(ms.infos)
    objects = []
    for oid, s in enumerate(keep, start=1):
        infos = [ms.infos[i] for i in s.members]
        objects.append(FlowCutObject(
            id=oid, frames=list(s.frames), mask_indices=list(s.members), masks=[ms.rles[i] for i in s.members],
            scores=[i.score for i in infos], link_ious=list(s.link_ious),
            saliency=float(np.mean([top_track[i.frame] == i.track_id for i in infos])),
            score_ratio=float(np.mean([i.score / max(top_score[i.frame], 1e-6) for i in infos]))))
    return objects


def _diagnostics(chainer: _Chainer, objects: List[FlowCutObject], num_frames: int) -> Dict[str, Any]:
    covered = {f for o in objects for f in o.frames}
    return {
        "num_masks": len(chainer.ms.infos),
        "empty_masks": chainer.ms.empty,
        "segments": len(chainer.segments()),
        "objects": len(objects),
        "labelled_masks": sum(o.num_keymasks for o in objects),
        "pairs_kept": chainer.pairs_kept,
        "flows": chainer.flows,
        "frames_covered": len(covered) / num_frames if num_frames else 0.0,
    }
