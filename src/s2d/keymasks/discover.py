"""Keymask discovery for one video: :func:`discover_keymasks` → :class:`KeymaskResult`.

Pipeline (PAPER §2, the reference ``keymask_ident/`` step by step):

1. Every single-frame mask gets two point sets (:mod:`s2d.keymasks.grid`): the 50×50 grid points
   inside it (visibility) and the ``clamp(floor(area/800), 25, 50)`` grid points (matching).
2. **Visibility**: one tracker call per frame with the visibility points of *all* masks of that frame
   concatenated; each mask's γ curve (T floats) is reduced from the call at once, the tracks are
   dropped. DBSCAN over ``γ > 0.3`` → clusters, ranges, candidates (:mod:`s2d.keymasks.visibility`).
3. **Matching**: one tracker call per frame with the matching points of all candidates of that frame;
   per candidate the point-mask fractions against every mask of every frame of its (merged) range are
   computed on the fly (:mod:`s2d.keymasks.matching`); only the matched mask indices are kept.
4. **Grouping**: per visibility cluster DBSCAN over the cropped match matrix → groups = objects; all
   rows of a group are its keymasks. Where a group has several masks on one frame, one is kept:
   the one matched by most rows of the group, then the highest mask score, then the lowest mask
   index (the reference keeps an arbitrary one).
5. Objects are numbered 1..n by (first keymask frame, visibility cluster, group label) after the
   optional one2x filter.

Tracker cost: one call per frame with masks (visibility) plus one per frame with candidates (matching);
nothing of the tracks is kept beyond the call that produced it.

Deviations from the reference: a visibility cluster whose match matrix is empty is skipped (the
reference abandons the whole video); several masks of a group on one frame are resolved by the rule
above; the matching grid's area rule is applied at a reference frame size (see
:mod:`s2d.keymasks.config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from s2d import rle as rle_utils
from s2d.errors import SettingError, ValidationError
from s2d.keymasks.config import KeymaskConfig
from s2d.keymasks.grid import grid_points
from s2d.keymasks.matching import (
    MaskIndex,
    choose_per_frame,
    group_matches,
    iter_slices,
    one2x_count,
    point_mask_fractions,
    point_pixels,
)
from s2d.keymasks.visibility import VisibilityCluster, binarize, group_by_visibility
from s2d.tracking.base import PointTracker, TrackResult
from s2d.types import Track, VideoSegmentation

__all__ = ["MaskInfo", "KeymaskObject", "KeymaskResult", "discover_keymasks"]

Range = Tuple[int, int]
#: ``progress(phase, done, total)`` with phase ``"visibility"`` or ``"matching"``, counted in frames
Progress = Callable[[str, int, int], None]


@dataclass
class MaskInfo:
    """What discovery did with one single-frame mask (``KeymaskResult.masks[index]``).

    Attributes:
        index: global mask index (masks ordered by frame, then by their track's position in the input).
        frame: the frame the mask lies on.
        track_id: id of the input track it came from.
        score: the input track's score.
        area: pixels.
        visibility_points: number of 50×50 grid points inside the mask.
        match_grid: G of its matching grid; ``match_points`` the points inside it.
        cluster: visibility DBSCAN label (−1 = noise).
        candidate: whether it was a candidate (propagated and matched).
        range: the frame range it was matched over (candidates only).
        num_matches: masks it matched (candidates only).
        one2x: 1 if flagged one-to-many, 0 if not, ``None`` when not a candidate.
        one2x_frames: frames with more than one mask above the one2x threshold.
        group: match-DBSCAN label within its cluster (−1 = noise or not a candidate).
        object_id: id of the object it is a keymask of (0 = none).
        duplicate: in a group but dropped because the group had another mask on its frame.
    """

    index: int
    frame: int
    track_id: int
    score: float
    area: int
    visibility_points: int = 0
    match_grid: int = 0
    match_points: int = 0
    cluster: int = -1
    candidate: bool = False
    range: Optional[Range] = None
    num_matches: int = 0
    one2x: Optional[int] = None
    one2x_frames: int = 0
    group: int = -1
    object_id: int = 0
    duplicate: bool = False


class KeymaskStats:
    """The per-object figures both discovery methods report, from ``frames`` and ``scores`` (one stage-1 score per
    labelled frame) of the dataclass that mixes this in."""

    frames: List[int]
    scores: List[float]

    @property
    def num_keymasks(self) -> int:
        """Number of labelled frames (read by ``data.min_keymasks``)."""
        return len(self.frames)

    @property
    def score(self) -> float:
        """Mean stage-1 score of its masks."""
        return float(np.clip(np.mean(self.scores), 0.0, 1.0)) if self.scores else 0.0


@dataclass
class KeymaskObject(KeymaskStats):
    """One discovered object identity with its keymasks (one per keymask frame).

    Attributes:
        id: 1..n in order of (first keymask frame, cluster, group).
        cluster, group: the visibility cluster and the match-DBSCAN label it comes from.
        frames: keymask frames, ascending.
        mask_indices: global mask index of the keymask on each of ``frames``.
        masks: COCO RLE of each keymask.
        scores: input score of each keymask.
        visibility_ranges: the cluster's majority-visible ranges (unmerged, as the reference writes).
        match_range: the range its rows were matched over (merged ranges by default).
        members: all group rows (keymasks plus dropped duplicates).
        duplicates: global indices dropped by the one-per-frame rule.
        one2x_mean: mean one2x flag over all group rows.
        saliency: fraction of its keymasks that were the top-scored single-frame mask of their frame (ties:
            the input order, which is stage 1's own ranking). Stage 1 ranks the salient, moving object first and
            background regions after it, and background regions are temporally coherent too, so they become
            objects as well: on the 23 shared DAVIS sequences, objects lying mostly on the GT object had mean
            saliency 0.89 and the others 0.15 (ROC AUC 0.94). Training can drop low-saliency objects
            (``data.min_saliency``).
        score_ratio: mean over its keymasks of the keymask's input score over the best input score of its
            frame. Where saliency is split between objects of similar rank (two cars: 0.50 and 0.48), each of
            them keeps a high ratio (0.85 and 0.88). On the 16 ``seen`` DAVIS sequences it separates objects
            lying on the GT object from the rest slightly better than saliency (ROC AUC 0.95 vs 0.93;
            ``benchmarks/RESULTS.md``). Training can drop low-ratio objects (``data.min_score_ratio``).
    """

    id: int
    cluster: int
    group: int
    frames: List[int]
    mask_indices: List[int]
    masks: List[dict]
    scores: List[float]
    visibility_ranges: List[Range]
    match_range: Range
    members: List[int]
    duplicates: List[int]
    one2x_mean: float
    saliency: float = 0.0
    score_ratio: float = 0.0

    @property
    def one2x(self) -> float:
        """``one2x_mean`` rounded to 2 decimals (the value the reference writes and filters on)."""
        return round(float(self.one2x_mean), 2)

    def extra(self) -> Dict[str, Any]:
        """Diagnostics stored in ``Track.extra`` (and thus in YouTube-VIS JSON records)."""
        return {
            "one2x": self.one2x,
            "visibility_ranges": [[int(s), int(e)] for s, e in self.visibility_ranges],
            "num_keymasks": self.num_keymasks,
            "visibility_cluster": int(self.cluster),
            "group": int(self.group),
            "saliency": round(float(self.saliency), 4),
            "score_ratio": round(float(self.score_ratio), 4),
        }


@dataclass
class KeymaskResult:
    """Keymasks of one video plus everything needed to judge them.

    Attributes:
        objects: discovered objects, ids 1..n.
        masks: one :class:`MaskInfo` per single-frame mask (global index order).
        visible: ``M×T`` bool, the binary visibility vectors (``γ > threshold``).
        clusters: the visibility clusters (ranges, candidates).
        diagnostics: video-level numbers (see :func:`discover_keymasks`).
        height, width, num_frames, fps, name, video_id, frame_names: the input video's metadata.
    """

    objects: List[KeymaskObject]
    masks: List[MaskInfo]
    visible: np.ndarray
    clusters: List[VisibilityCluster]
    diagnostics: Dict[str, Any]
    height: int
    width: int
    num_frames: int
    fps: Optional[float] = None
    name: Optional[str] = None
    video_id: Optional[int] = None
    frame_names: Optional[List[str]] = None

    def to_video(self) -> VideoSegmentation:
        """Sparse video labels: one track per object, RLE on its keymask frames and ``None`` elsewhere.

        Track score = mean score of its keymasks; ``Track.extra`` holds ``one2x``,
        ``visibility_ranges``, ``num_keymasks``, ``visibility_cluster`` and ``group``.
        """
        tracks = []
        for obj in self.objects:
            seq: List[Optional[dict]] = [None] * self.num_frames
            for f, m in zip(obj.frames, obj.masks):
                seq[f] = m
            tracks.append(Track(obj.id, seq, obj.score, 1, obj.extra()))
        return VideoSegmentation(self.height, self.width, self.num_frames, tracks, fps=self.fps,
                                 name=self.name, video_id=self.video_id, frame_names=self.frame_names)

    @property
    def keymask_indices(self) -> List[int]:
        """Global indices of all keymasks."""
        return sorted(i for o in self.objects for i in o.mask_indices)

    def summary(self) -> Dict[str, Any]:
        """JSON-safe diagnostics: the video-level numbers, the clusters and one entry per object."""
        d = dict(self.diagnostics)
        for k in ("cluster_coverage", "visibility_to_temporal_factor"):
            d[k] = {str(c): v for c, v in d[k].items()}
        return {
            "name": self.name,
            "num_frames": self.num_frames,
            "diagnostics": d,
            "clusters": [{"label": c.label, "size": int(c.members.size),
                          "ranges": [[int(s), int(e)] for s, e in c.ranges],
                          "candidates": len(c.candidates)} for c in self.clusters],
            "objects": [{"id": o.id, "frames": o.frames, "score": o.score, **o.extra(),
                         "one2x_mean": o.one2x_mean, "duplicates": len(o.duplicates),
                         "match_range": list(o.match_range)} for o in self.objects],
        }


# --------------------------------------------------------------------------- helpers


def _collect_masks(video: VideoSegmentation) -> List[Tuple[int, int, int, float, dict]]:
    """``(frame, input position, track id, score, rle)`` of every non-null mask, in global order."""
    out = []
    for pos, tr in enumerate(video.tracks):
        for t, m in enumerate(tr.masks):
            if m is not None:
                out.append((t, pos, tr.id, float(tr.score), m))
    out.sort(key=lambda e: (e[0], e[1]))
    return out


def split_components(entries: List[Tuple[int, int, int, float, dict]], min_area: float
                     ) -> List[Tuple[int, int, int, float, dict]]:
    """Every mask of ``entries`` (as :func:`_collect_masks` gives them) replaced by its 8-connected components
    of at least ``min_area`` pixels, each with the mask's frame, position, track id and score; a mask with
    one component stays as it was."""
    import cv2

    out = []
    for frame, pos, tid, score, rle in entries:
        m = rle_utils.decode(rle)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
        if n <= 2:
            out.append((frame, pos, tid, score, rle))
            continue
        for k in range(1, n):
            if stats[k, cv2.CC_STAT_AREA] >= max(min_area, 1):
                out.append((frame, pos, tid, score, rle_utils.encode(lab == k)))
    return out


def _call_tracker(tracker: PointTracker, queries: np.ndarray, num_frames: int,
                  frame_range: Optional[Tuple[int, int]] = None) -> TrackResult:
    """Track ``queries``; with ``frame_range`` (end exclusive) only those frames are tracked, which makes
    the matching step cost proportional to a candidate's range instead of the whole video."""
    res = tracker.track(queries) if frame_range is None else tracker.track(queries, frame_range=frame_range)
    n = queries.shape[0]
    pts = np.asarray(res.points)
    vis = np.asarray(res.visible)
    if pts.shape != (num_frames, n, 2) or vis.shape != (num_frames, n):
        raise ValidationError(f"tracker returned points {pts.shape} and visibility {vis.shape} for {n} queries; "
                              f"expected {(num_frames, n, 2)} and {(num_frames, n)} (is it prepared with the "
                              f"same {num_frames}-frame video?)")
    return res


def _queries(frame: int, pts: np.ndarray, scale: np.ndarray) -> np.ndarray:
    q = np.empty((pts.shape[0], 3), dtype=np.float32)
    q[:, 0] = frame
    q[:, 1:] = pts * scale
    return q


# --------------------------------------------------------------------------- intermediate objects


@dataclass
class _MaskSet:
    """Phase 1: the non-empty masks in global order, their point sets and the point-in-mask index."""

    height: int
    width: int
    num_frames: int
    index: MaskIndex
    infos: List[MaskInfo]
    rles: List[dict]
    vis_pts: List[np.ndarray]
    match_pts: List[np.ndarray]
    empty: int

    @property
    def frames_of(self) -> np.ndarray:
        """The frame of every mask (global index order)."""
        return self.index.frames


@dataclass
class _Tracking:
    """The prepared tracker with the point mapping to its frame size; counts the calls made through it."""

    tracker: PointTracker
    num_frames: int
    scale: np.ndarray
    rescale: bool  # tracker_size given: tracked points are mapped back to the masks' frame size
    progress: Optional[Progress]
    calls: int = 0

    def track(self, frame: int, pts: np.ndarray, frame_range: Optional[Range] = None) -> TrackResult:
        """Track ``pts`` (mask frame pixels) queried on ``frame``; ``frame_range`` end exclusive."""
        res = _call_tracker(self.tracker, _queries(frame, pts, self.scale), self.num_frames, frame_range)
        self.calls += 1
        return res

    def report(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)


@dataclass
class _Candidates:
    """Phase 3: visibility DBSCAN labels, the clusters and the frames every candidate is matched over."""

    labels: np.ndarray
    clusters: List[VisibilityCluster]
    ranges: Dict[int, Range]  # candidate mask index → (start, end) inclusive


@dataclass
class _Group:
    """Phase 5: one match-DBSCAN group of a visibility cluster (an object before the one2x filter and ids)."""

    cluster: int
    group: int
    kept: List[int]
    dropped: List[int]
    members: List[int]
    ranges: List[Range]
    match_range: Range
    one2x_mean: float


@dataclass
class _Grouping:
    """Phase 5 for the whole video: the groups in (cluster, label) order and the per-cluster numbers."""

    groups: List[_Group] = field(default_factory=list)
    cluster_coverage: Dict[int, float] = field(default_factory=dict)
    visibility_to_temporal: Dict[int, int] = field(default_factory=dict)
    grouped: int = 0
    duplicates: int = 0


# --------------------------------------------------------------------------- main entry


def discover_keymasks(masks: VideoSegmentation, tracker: PointTracker,
                      config: Optional[KeymaskConfig] = None, *,
                      tracker_size: Optional[Tuple[int, int]] = None,
                      progress: Optional[Progress] = None) -> KeymaskResult:
    """Discover keymasks and object identities in one video (PAPER §2).

    Args:
        masks: the single-frame masks: every non-null frame of every track is one mask (stage 1
            output has exactly one per track); its score is the track's score. Empty masks are
            ignored (counted in ``diagnostics["empty_masks"]``).
        tracker: a :class:`s2d.tracking.base.PointTracker` already prepared with this video
            (``masks.num_frames`` frames).
        config: settings; defaults are the reference values.
        tracker_size: ``(height, width)`` of the frames the tracker works on when it differs from the
            masks' size; points are mapped with the align-corners factor ``(W_t - 1) / (W - 1)``.
        progress: optional callback ``(phase, frames_done, frames_total)``.

    Returns:
        :class:`KeymaskResult`; ``diagnostics`` has ``num_masks``, ``empty_masks``, ``clustered``,
        ``noise``, ``num_clusters``, ``candidates``, ``grouped`` (candidates in a non-noise group),
        ``coverage`` (grouped / candidates, the reference's video coverage), ``cluster_coverage``
        and ``visibility_to_temporal_factor`` per cluster label, ``keymasks``, ``duplicates_dropped``,
        ``objects``, ``one2x_filtered``, ``keymask_frames_covered`` (fraction of frames with a
        keymask) and ``tracker_calls``.
    """
    cfg = _check_inputs(masks, config)
    scale = _tracker_scale(tracker_size, masks.height, masks.width)
    mask_set = _prepare_masks(masks, cfg)  # 1. point sets, point-in-mask index
    tracking = _Tracking(tracker, masks.num_frames, scale, tracker_size is not None, progress)
    visible = _visibility_vectors(mask_set, tracking, cfg)  # 2. visibility curves
    cand = _find_candidates(visible, mask_set, cfg)  # 3. visibility grouping
    matched = _match_candidates(mask_set, cand, tracking, cfg)  # 4. propagate and match
    grouping = _group_candidates(mask_set, cand, matched, cfg)  # 5. temporal grouping
    objects, filtered = _number_objects(mask_set, grouping.groups, cfg)  # 6. one2x filter, ordering, ids
    diagnostics = _diagnostics(mask_set, cand, grouping, objects, filtered, tracking.calls)
    return KeymaskResult(objects, mask_set.infos, visible, cand.clusters, diagnostics, masks.height, masks.width,
                         masks.num_frames, fps=masks.fps, name=masks.name, video_id=masks.video_id,
                         frame_names=masks.frame_names)


def _check_inputs(masks: VideoSegmentation, config: Optional[KeymaskConfig]) -> KeymaskConfig:
    cfg = config if config is not None else KeymaskConfig()
    if not isinstance(cfg, KeymaskConfig):
        raise SettingError(f"config must be a KeymaskConfig, got {type(cfg).__name__}")
    if not isinstance(masks, VideoSegmentation):
        raise SettingError(f"masks must be a VideoSegmentation, got {type(masks).__name__}")
    return cfg


def _tracker_scale(tracker_size: Optional[Tuple[int, int]], H: int, W: int) -> np.ndarray:
    """``(x, y)`` factor from mask frame pixels to tracker frame pixels (align corners)."""
    if tracker_size is None:
        return np.array([1.0, 1.0])
    th, tw = (int(v) for v in tracker_size)
    if th < 2 or tw < 2:
        raise SettingError(f"tracker_size must be (height, width) of at least 2×2, got {tracker_size!r}")
    return np.array([(tw - 1) / (W - 1) if W > 1 else 1.0, (th - 1) / (H - 1) if H > 1 else 1.0])


# ---- 1. masks, point sets, point-in-mask index (each mask decoded once)


def _prepare_masks(masks: VideoSegmentation, cfg: KeymaskConfig) -> _MaskSet:
    H, W, T = masks.height, masks.width, masks.num_frames
    entries = _collect_masks(masks)
    if cfg.split_components:
        entries = split_components(entries, cfg.component_min_fraction * H * W)
    out = _MaskSet(H, W, T, MaskIndex(H, W, T), [], [], [], [], 0)
    for frame, _pos, tid, score, rle in entries:
        area = rle_utils.area(rle)
        if area == 0:
            out.empty += 1
            continue
        bitmap = rle_utils.decode(rle)
        gi = out.index.add(frame, bitmap)
        vp = grid_points(bitmap, cfg.visibility_grid, cfg.grid_model_size, cfg.margin)
        g = cfg.match_grid_size(area, H * W)
        mp = vp if g == cfg.visibility_grid else grid_points(bitmap, g, cfg.grid_model_size, cfg.margin)
        out.infos.append(MaskInfo(gi, frame, tid, score, int(area), visibility_points=len(vp), match_grid=g,
                                  match_points=len(mp)))
        out.rles.append(rle)
        out.vis_pts.append(vp)
        out.match_pts.append(mp)
    out.index.finalize()
    return out


# ---- 2. visibility curves: one tracker call per frame, reduced at once


def _visibility_vectors(ms: _MaskSet, tracking: _Tracking, cfg: KeymaskConfig) -> np.ndarray:
    """The ``M×T`` binary visibility vectors (``γ > visibility_threshold``)."""
    index, T = ms.index, ms.num_frames
    gamma = np.full((len(ms.infos), T), np.nan, dtype=np.float32)
    frames_with_masks = [t for t in range(T) if index.frame_start[t + 1] > index.frame_start[t]]
    for done, t in enumerate(frames_with_masks):
        ids = list(index.masks_on(t))
        sizes = [len(ms.vis_pts[i]) for i in ids]
        if sum(sizes):
            res = tracking.track(t, np.concatenate([ms.vis_pts[i] for i in ids]))
            vis = np.asarray(res.visible, dtype=bool)
            for i, sl in zip(ids, iter_slices(sizes)):
                if sl.stop > sl.start:
                    gamma[i] = vis[:, sl].mean(axis=1)
            del res, vis
        tracking.report("visibility", done + 1, len(frames_with_masks))
    return binarize(gamma, cfg.visibility_threshold)


# ---- 3. visibility grouping


def _find_candidates(visible: np.ndarray, ms: _MaskSet, cfg: KeymaskConfig) -> _Candidates:
    labels, clusters = group_by_visibility(visible, ms.frames_of, cfg.visibility_eps, cfg.visibility_min_samples,
                                           cfg.candidate_visible_fraction)
    for info, lab in zip(ms.infos, labels):
        info.cluster = int(lab)
    ranges: Dict[int, Range] = {}
    for c in clusters:
        if not c.ranges:
            continue
        merged = c.merged_range
        for m, rng in c.candidates.items():
            ranges[m] = merged if cfg.merge_vranges else rng
    for m, rng in ranges.items():
        ms.infos[m].candidate = True
        ms.infos[m].range = (int(rng[0]), int(rng[1]))
    return _Candidates(labels, clusters, ranges)


# ---- 4. propagate and match: one tracker call per frame with candidates


def _match_candidates(ms: _MaskSet, cand: _Candidates, tracking: _Tracking, cfg: KeymaskConfig
                      ) -> Dict[int, np.ndarray]:
    """Matched global mask indices of every candidate (one tracker call per frame with candidates)."""
    matched: Dict[int, np.ndarray] = {}
    by_frame: Dict[int, List[int]] = {}
    for m in sorted(cand.ranges):
        by_frame.setdefault(int(ms.frames_of[m]), []).append(m)
    for done, t in enumerate(sorted(by_frame)):
        ids = by_frame[t]
        sizes = [len(ms.match_pts[i]) for i in ids]
        lin = None
        lo = min(cand.ranges[i][0] for i in ids)  # only the frames some candidate of t is matched on
        hi = max(cand.ranges[i][1] for i in ids)
        if sum(sizes):
            lin = _propagate(ms, tracking, t, np.concatenate([ms.match_pts[i] for i in ids]), lo, hi)
        for i, sl in zip(ids, iter_slices(sizes)):
            matched[i] = _match_one(ms, cfg, i, cand.ranges[i], None if sl.stop == sl.start else lin, lo, sl)
        tracking.report("matching", done + 1, len(by_frame))
    return matched


def _propagate(ms: _MaskSet, tracking: _Tracking, frame: int, pts: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Pixel index of ``pts`` tracked from ``frame`` on frames ``lo..hi``: ``(hi-lo+1)×N``, −1 = out of bounds."""
    res = tracking.track(frame, pts, frame_range=(lo, hi + 1))
    tracked = np.asarray(res.points[lo:hi + 1], dtype=np.float64)
    if tracking.rescale:
        tracked = tracked / tracking.scale
    return point_pixels(tracked, ms.height, ms.width)


def _match_one(ms: _MaskSet, cfg: KeymaskConfig, i: int, rng: Range, lin: Optional[np.ndarray], lo: int,
               sl: slice) -> np.ndarray:
    """Candidate ``i``'s matches from its columns ``sl`` of ``lin`` (rows from frame ``lo``); sets its one2x."""
    info = ms.infos[i]
    a, b = rng
    if lin is None:
        info.one2x, info.one2x_frames = 0, 0
        return np.zeros(0, np.int64)
    g0, j = point_mask_fractions(lin[a - lo:b - lo + 1, sl], a, ms.index)
    gids = g0 + np.arange(j.size)
    matched = gids[j > cfg.matching_threshold]
    n2x = one2x_count(j, ms.frames_of[gids], cfg.one2x_threshold)
    info.num_matches = int(matched.size)
    info.one2x_frames = n2x
    info.one2x = 1 if n2x >= cfg.one2x_min_frames else 0
    return matched


# ---- 5. temporal grouping per visibility cluster → objects


def _group_candidates(ms: _MaskSet, cand: _Candidates, matched: Dict[int, np.ndarray], cfg: KeymaskConfig
                      ) -> _Grouping:
    out = _Grouping()
    for c in cand.clusters:
        refs = {m: matched[m] for m in c.candidates if m in matched}
        if not refs:
            continue
        glabels = group_matches(refs, cfg.match_dbscan_params, all_rows=cfg.match_all_rows)
        groups: Dict[int, List[int]] = {}
        for m, g in glabels.items():
            ms.infos[m].group = g
            if g >= 0:
                groups.setdefault(g, []).append(m)
        n_grouped = sum(len(v) for v in groups.values())
        out.grouped += n_grouped
        out.cluster_coverage[c.label] = n_grouped / len(refs)
        out.visibility_to_temporal[c.label] = len(groups)
        for g, members in sorted(groups.items()):
            group = _make_group(ms, c, g, sorted(members), matched, cand.ranges)
            out.duplicates += len(group.dropped)
            out.groups.append(group)
    return out


def _make_group(ms: _MaskSet, c: VisibilityCluster, g: int, members: List[int], matched: Dict[int, np.ndarray],
                ranges: Dict[int, Range]) -> _Group:
    """Group ``g`` of cluster ``c``: one keymask per frame kept (the others flagged duplicates)."""
    row_sets = [set(matched[r].tolist()) for r in members]
    support = [sum(1 for rs in row_sets if m in rs) for m in members]
    kept, dropped = choose_per_frame(members, ms.frames_of[members], support, [ms.infos[m].score for m in members])
    for m in dropped:
        ms.infos[m].duplicate = True
    return _Group(cluster=c.label, group=g, kept=kept, dropped=dropped, members=members, ranges=list(c.ranges),
                  match_range=(min(ranges[m][0] for m in members), max(ranges[m][1] for m in members)),
                  one2x_mean=float(np.mean([ms.infos[m].one2x or 0 for m in members])))


# ---- 6. one2x filter, ordering, ids


def _number_objects(ms: _MaskSet, groups: List[_Group], cfg: KeymaskConfig) -> Tuple[List[KeymaskObject], int]:
    """The objects, ids 1..n by (first keymask frame, cluster, group), and how many the one2x filter dropped."""
    filtered = 0
    if cfg.one2x_filter is not None:
        keep = [o for o in groups if round(o.one2x_mean, 2) <= cfg.one2x_filter]
        filtered = len(groups) - len(keep)
        groups = keep
    frames_of, infos = ms.frames_of, ms.infos
    groups = sorted(groups, key=lambda o: (int(frames_of[o.kept[0]]), o.cluster, o.group))
    top_track = _top_tracks(infos)
    top_score = _top_scores(infos)
    objects: List[KeymaskObject] = []
    for oid, o in enumerate(groups, start=1):
        for m in o.kept:
            infos[m].object_id = oid
        objects.append(KeymaskObject(
            id=oid, cluster=o.cluster, group=o.group,
            frames=[int(frames_of[m]) for m in o.kept], mask_indices=list(o.kept),
            masks=[ms.rles[m] for m in o.kept], scores=[infos[m].score for m in o.kept],
            visibility_ranges=o.ranges, match_range=(int(o.match_range[0]), int(o.match_range[1])),
            members=o.members, duplicates=o.dropped, one2x_mean=o.one2x_mean,
            saliency=float(np.mean([top_track[int(frames_of[m])] == infos[m].track_id for m in o.kept])),
            score_ratio=float(np.mean([infos[m].score / max(top_score[int(frames_of[m])], 1e-6) for m in o.kept]))))
    return objects, filtered


def _top_scores(infos: List[MaskInfo]) -> Dict[int, float]:
    """Frame → the best input score of a mask on it."""
    best: Dict[int, float] = {}
    for info in infos:
        best[info.frame] = max(best.get(info.frame, float("-inf")), float(info.score))
    return best


def _top_tracks(infos: List[MaskInfo]) -> Dict[int, int]:
    """Frame → track id of the input mask (track) ranked first on it by stage 1 (ties keep the input order);
    the components of a split mask share its track id, so each of them counts as top-scored."""
    top_of_frame: Dict[int, int] = {}
    for pos, info in enumerate(infos):
        best = top_of_frame.get(info.frame)
        if best is None or info.score > infos[best].score:
            top_of_frame[info.frame] = pos
    return {f: infos[p].track_id for f, p in top_of_frame.items()}


def _diagnostics(ms: _MaskSet, cand: _Candidates, grouping: _Grouping, objects: List[KeymaskObject],
                 filtered: int, tracker_calls: int) -> Dict[str, Any]:
    """The video-level numbers of :attr:`KeymaskResult.diagnostics` (see :func:`discover_keymasks`)."""
    T = ms.num_frames
    n_cand = len(cand.ranges)
    covered = set(f for o in objects for f in o.frames)
    return {
        "num_masks": len(ms.infos),
        "empty_masks": ms.empty,
        "clustered": int((cand.labels >= 0).sum()),
        "noise": int((cand.labels < 0).sum()),
        "num_clusters": len(cand.clusters),
        "candidates": n_cand,
        "grouped": grouping.grouped,
        "coverage": grouping.grouped / n_cand if n_cand else 0.0,
        "cluster_coverage": grouping.cluster_coverage,
        "visibility_to_temporal_factor": grouping.visibility_to_temporal,
        "keymasks": sum(o.num_keymasks for o in objects),
        "duplicates_dropped": grouping.duplicates,
        "objects": len(objects),
        "one2x_filtered": filtered,
        "keymask_frames_covered": len(covered) / T if T else 0.0,
        "tracker_calls": tracker_calls,
    }
