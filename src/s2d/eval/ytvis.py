"""YouTube-VIS video AP/AR, numerically equal to the official ``youtubevos/cocoapi`` scorer.

Published VIS numbers come from the YouTube-VIS fork of the COCO API (``ytvos.py`` and
``ytvoseval.py``). A score is only comparable with a paper when every detail of that scorer is
reproduced, including the odd ones, so this module follows its definitions step by step (and
``benchmarks/compare_official_ytvis.py`` checks it against the real code on random inputs):

* **Video IoU** of a prediction ``P`` and a ground truth ``G`` is ``Σ_t |P_t ∩ G_t| / Σ_t |P_t ∪ G_t|``
  over the frames both lists have (the official ``zip`` stops at the shorter list). A missing
  (``None``) frame is an empty mask; a frame pair whose RLE sizes differ adds nothing at all
  (pycocotools' ``merge`` returns an empty mask then). Crowd GT uses the same plain IoU.
* **Areas**: an object's area is the mean of its per-frame areas that are truthy (``None`` *and*
  zero areas are left out); 0 when there are none. GT uses the JSON's ``areas`` list, predictions
  their mask areas. Area ranges are ``[0, 1e10]``, ``[0, 128²]``, ``[128², 256²]``, ``[256², 1e10]``,
  bounds inclusive.
* **Crowd / ignore**: a GT is ignored iff ``iscrowd`` is truthy (the official code overwrites any
  ``ignore`` field). Crowd GT may absorb several predictions.
* **Class-agnostic** (official ``useCats=0``): all GT and predictions of a video are pooled, but
  only those whose category is listed in the GT ``categories`` (as in the official code).
* **Matching and accumulation** are COCO's greedy matching per video, 10 IoU thresholds
  ``0.50:0.05:0.95``, 101 recall points with the interpolated (monotone) precision. Equal scores
  keep a fixed order (stable ``mergesort``): by video id, then (class-agnostic) by category id,
  then by position in the results file.
* **Summary**: the 12 COCO numbers; ``AP`` uses ``maxDets == 100`` literally (so it is -1 if 100
  is not among ``max_dets``), the others ``max_dets[0..2]``; -1 where nothing could be scored.
* A matched GT whose annotation ``id`` is 0 does not count as a match (the official stores the
  GT id as the match flag).

Inputs that make the official code crash (results for unknown videos, no results at all, missing
``iscrowd``/``areas``) get a clear :class:`~s2d.errors.InputError` or the natural extension: no
results score AP 0 where there is GT; ``iscrowd`` defaults to 0; missing ``areas`` are computed
from the masks.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils

from s2d.errors import InputError, PathLike

__all__ = [
    "STAT_KEYS",
    "evaluate_ytvis",
    "format_ytvis_table",
    "load_ytvis_gt",
    "load_ytvis_results",
]

# Same construction as the official Params, so the float values (e.g. 0.8999999999999999) agree.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
AREA_LABELS = ("all", "small", "medium", "large")
AREA_RANGES = ((0 ** 2, 1e5 ** 2), (0 ** 2, 128 ** 2), (128 ** 2, 256 ** 2), (256 ** 2, 1e5 ** 2))

# (key, is_ap, iou threshold or None for the mean over all, area label, max-dets selector):
# the selector is an index into the sorted max_dets, or the literal 100 the official uses for AP.
_STATS: Tuple[Tuple[str, bool, Optional[float], str, Tuple[str, int]], ...] = (
    ("AP", True, None, "all", ("literal", 100)),
    ("AP50", True, 0.5, "all", ("index", 2)),
    ("AP75", True, 0.75, "all", ("index", 2)),
    ("APs", True, None, "small", ("index", 2)),
    ("APm", True, None, "medium", ("index", 2)),
    ("APl", True, None, "large", ("index", 2)),
    ("AR1", False, None, "all", ("index", 0)),
    ("AR10", False, None, "all", ("index", 1)),
    ("AR100", False, None, "all", ("index", 2)),
    ("ARs", False, None, "small", ("index", 2)),
    ("ARm", False, None, "medium", ("index", 2)),
    ("ARl", False, None, "large", ("index", 2)),
)
STAT_KEYS: Tuple[str, ...] = tuple(s[0] for s in _STATS)


# ----------------------------------------------------------------------------------------------
# loading and validation
# ----------------------------------------------------------------------------------------------

def _read_json(path: PathLike) -> Any:
    """Parse a JSON file, turning every way it can fail into a one-line InputError."""
    if not os.path.exists(path):
        raise InputError(path, "file not found")
    if os.path.isdir(path):
        raise InputError(path, "is a directory, expected a JSON file")
    try:
        with open(path, "rb") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not valid JSON (not UTF-8 text: {exc.reason})") from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _rle_problem(seg: Mapping[str, Any]) -> Optional[str]:
    """Why ``seg`` is not a usable COCO RLE dict, or None when it is."""
    size = seg.get("size")
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(_is_int(v) and v >= 0 for v in size)):
        return f"RLE 'size' must be [height, width], got {size!r}"
    counts = seg.get("counts")
    if isinstance(counts, str):
        return None
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            return "uncompressed RLE 'counts' must be non-negative integers"
        if sum(counts) != size[0] * size[1]:
            return f"uncompressed RLE counts sum to {sum(counts)}, expected {size[0]}×{size[1]}={size[0] * size[1]}"
        return None
    return f"RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}"


def _seg_problem(seg: Any, allow_polygon: bool) -> Optional[str]:
    """Why one frame's segmentation is unusable, or None. Falsy frames (None, {}, []) are absent."""
    if not seg:
        return None
    if isinstance(seg, dict):
        return _rle_problem(seg)
    if allow_polygon and isinstance(seg, list):
        if all(isinstance(p, list) and p and all(_is_number(c) for c in p) for p in seg):
            return None
        return "polygon segmentation must be a list of coordinate lists"
    kinds = "None, an RLE dict or a polygon list" if allow_polygon else "None or an RLE dict"
    return f"frame segmentation must be {kinds}, got {type(seg).__name__}"


def _check_unique_ids(items: List[Any], what: str, path: Optional[PathLike]) -> None:
    seen = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InputError(path, f"{what}[{i}] must be an object, got {type(item).__name__}")
        if not _is_int(item.get("id")):
            raise InputError(path, f"{what}[{i}] needs an integer 'id', got {item.get('id')!r}")
        if item["id"] in seen:
            raise InputError(path, f"{what}[{i}]: duplicate id {item['id']}")
        seen.add(item["id"])


def _validate_gt(gt: Any, path: Optional[PathLike]) -> None:
    """Raise InputError unless ``gt`` is a well-formed YouTube-VIS dataset dict."""
    if not isinstance(gt, dict):
        raise InputError(path, f"ground truth must be a JSON object, got {type(gt).__name__}")
    missing = [k for k in ("videos", "annotations", "categories") if k not in gt]
    if missing:
        raise InputError(path, f"ground truth lacks key(s) {', '.join(repr(k) for k in missing)}")
    for key in ("videos", "annotations", "categories"):
        if not isinstance(gt[key], list):
            raise InputError(path, f"ground truth '{key}' must be a list, got {type(gt[key]).__name__}")
    _check_unique_ids(gt["videos"], "videos", path)
    _check_unique_ids(gt["categories"], "categories", path)
    _check_unique_ids(gt["annotations"], "annotations", path)
    for i, v in enumerate(gt["videos"]):
        for key in ("height", "width"):
            if key in v and not _is_int(v[key]):
                raise InputError(path, f"videos[{i}]: '{key}' must be an integer, got {v[key]!r}")
    for i, ann in enumerate(gt["annotations"]):
        where = f"annotations[{i}]"
        for key in ("video_id", "category_id"):
            if not _is_int(ann.get(key)):
                raise InputError(path, f"{where} needs an integer '{key}', got {ann.get(key)!r}")
        segs = ann.get("segmentations")
        if not isinstance(segs, list):
            raise InputError(path, f"{where} needs a 'segmentations' list (one entry per frame)")
        for t, seg in enumerate(segs):
            problem = _seg_problem(seg, allow_polygon=True)
            if problem:
                raise InputError(path, f"{where} frame {t}: {problem}")
        if "areas" in ann and ann["areas"] is not None:
            areas = ann["areas"]
            if not isinstance(areas, list) or not all(a is None or _is_number(a) for a in areas):
                raise InputError(path, f"{where}: 'areas' must be a list of numbers or nulls")
        if "iscrowd" in ann and not (_is_number(ann["iscrowd"]) or isinstance(ann["iscrowd"], bool)):
            raise InputError(path, f"{where}: 'iscrowd' must be 0 or 1, got {ann['iscrowd']!r}")


def _validate_results(results: Any, path: Optional[PathLike]) -> None:
    """Raise InputError unless ``results`` is a list of YouTube-VIS prediction dicts."""
    if not isinstance(results, list):
        raise InputError(path, f"results must be a JSON list of predictions, got {type(results).__name__}")
    for i, res in enumerate(results):
        where = f"prediction [{i}]"
        if not isinstance(res, dict):
            raise InputError(path, f"{where} must be an object, got {type(res).__name__}")
        missing = [k for k in ("video_id", "category_id", "segmentations", "score") if k not in res]
        if missing:
            raise InputError(path, f"{where} lacks key(s) {', '.join(repr(k) for k in missing)}")
        for key in ("video_id", "category_id"):
            if not _is_int(res[key]):
                raise InputError(path, f"{where}: '{key}' must be an integer, got {res[key]!r}")
        score = res["score"]
        if not _is_number(score) or math.isnan(score):
            raise InputError(path, f"{where}: 'score' must be a number, got {score!r}")
        if not isinstance(res["segmentations"], list):
            raise InputError(path, f"{where}: 'segmentations' must be a list (one RLE or null per frame)")
        for t, seg in enumerate(res["segmentations"]):
            problem = _seg_problem(seg, allow_polygon=False)
            if problem:
                raise InputError(path, f"{where} frame {t}: {problem}")


def _check_results_against_gt(results: List[dict], gt: dict, path: Optional[PathLike], strict: bool) -> None:
    """Results must name known videos; with ``strict`` also match each video's size and length."""
    videos = {v["id"]: v for v in gt["videos"]}
    unknown = sorted({r["video_id"] for r in results} - set(videos))
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise InputError(path, f"predictions for video id(s) not in the ground truth: {shown}")
    if not strict:
        return
    for i, res in enumerate(results):
        video = videos[res["video_id"]]
        length = video.get("length", len(video["file_names"]) if isinstance(video.get("file_names"), list) else None)
        segs = res["segmentations"]
        if _is_int(length) and len(segs) != length:
            raise InputError(path, f"prediction [{i}] has {len(segs)} frames, video {res['video_id']} has {length}")
        if _is_int(video.get("height")) and _is_int(video.get("width")):
            want = [video["height"], video["width"]]
            for t, seg in enumerate(segs):
                if seg and list(seg["size"]) != want:
                    raise InputError(path, f"prediction [{i}] frame {t}: RLE size {list(seg['size'])} "
                                           f"differs from video {res['video_id']} size {want}")


def load_ytvis_gt(path: PathLike) -> dict:
    """Read a YouTube-VIS dataset JSON (``videos``, ``annotations``, ``categories``).

    Raises :class:`InputError` naming ``path`` for a missing file, malformed JSON, missing keys,
    duplicate ids or unusable segmentations, so the CLI can say what is wrong in one line.
    """
    data = _read_json(path)
    _validate_gt(data, path)
    return data


def load_ytvis_results(path: PathLike, gt: Optional[dict] = None) -> list:
    """Read a YouTube-VIS results JSON: a list of ``{video_id, category_id, segmentations, score}``.

    With ``gt`` the predictions are also checked against the dataset: every ``video_id`` must be
    a GT video, and every RLE must have the video's ``[height, width]`` and one entry per frame
    (the official scorer silently scores such mismatches as non-overlapping, which hides bugs).
    """
    data = _read_json(path)
    _validate_results(data, path)
    if gt is not None:
        _check_results_against_gt(data, gt, path, strict=True)
    return data


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------

@dataclass
class _Track:
    """One GT or predicted object: per-frame compressed RLEs (None where absent) and its metadata."""

    ann_id: int          # GT annotation id; for predictions 1-based position in the results list
    category: int
    segs: List[Optional[dict]]
    pixel_areas: List[Optional[int]]  # measured mask area per frame, None where absent
    avg_area: float
    score: float = 0.0
    crowd: bool = False  # official int(iscrowd): may match several predictions
    ignore: bool = False  # official bool(iscrowd): never counted as GT


@dataclass
class _VideoEval:
    """Per (video, category-or-pool, area range) matching outcome (official ``evaluateVid``)."""

    scores: np.ndarray     # (D,) sorted by descending score
    dt_gt_id: np.ndarray   # (T, D) id of the matched GT, 0 when unmatched
    dt_ignore: np.ndarray  # (T, D) bool
    gt_ignore: np.ndarray  # (G,) bool


def _mean_truthy_area(areas: Sequence[Any]) -> float:
    """Official avg_area: mean of the truthy per-frame areas (None and 0 are left out), else 0."""
    kept = [a for a in areas if a]
    return float(np.array(kept).mean()) if kept else 0.0


def _to_rle(seg: Any, video: Mapping[str, Any]) -> Optional[dict]:
    """One frame as a compressed RLE, like the official ``annToRLE``; falsy frames are None."""
    if not seg:
        return None
    if isinstance(seg, list):  # polygons: rasterised at the video size and merged, as annToRLE does
        if not (_is_int(video.get("height")) and _is_int(video.get("width"))):
            raise InputError(None, f"video {video.get('id')}: polygon segmentations need 'height' and 'width'")
        return mask_utils.merge(mask_utils.frPyObjects(seg, video["height"], video["width"]))
    if isinstance(seg["counts"], list):  # uncompressed RLE keeps its own size (frUncompressedRLE)
        h, w = int(seg["size"][0]), int(seg["size"][1])
        return mask_utils.frPyObjects({"size": [h, w], "counts": seg["counts"]}, h, w)
    return seg  # compressed: pycocotools reads str counts as they are; only read, never modified


def _frame_areas(segs: Sequence[Optional[dict]]) -> List[Optional[int]]:
    """Mask area of every present frame (one pycocotools call), None where absent."""
    present = [s for s in segs if s is not None]
    areas = iter(mask_utils.area(present).tolist() if present else [])
    return [next(areas) if s is not None else None for s in segs]


def _frame_table(tracks: Sequence[_Track], n_frames: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(N, F) arrays: pixel area (0 if absent), presence, RLE height and width (-1 if absent)."""
    area = np.zeros((len(tracks), n_frames), dtype=np.int64)
    present = np.zeros((len(tracks), n_frames), dtype=bool)
    height = np.full((len(tracks), n_frames), -1, dtype=np.int64)
    width = np.full((len(tracks), n_frames), -1, dtype=np.int64)
    for i, tr in enumerate(tracks):
        for t, (seg, a) in enumerate(zip(tr.segs[:n_frames], tr.pixel_areas[:n_frames])):
            if seg is not None:
                assert a is not None  # pixel_areas comes from _frame_areas(segs): set wherever seg is
                area[i, t], present[i, t] = a, True
                height[i, t], width[i, t] = seg["size"][0], seg["size"][1]
    return area, present, height, width


def _video_iou(dts: Sequence[_Track], gts: Sequence[_Track]) -> np.ndarray:
    """(D, G) video IoU Σ|P∩G| / Σ|P∪G|, exactly as the official ``iou_seq``.

    Per frame, one pycocotools call gives every pairwise intersection: with ``iscrowd=1`` its
    ``iou`` is ``|P∩G| / |P|``, which times ``|P|`` and rounded is the exact integer. Sums stay
    integers so the final division is bit-identical to the official float accumulation. A pair
    only counts the frames both sequences have (the official ``zip``); a frame where both are
    present but their RLE sizes differ adds nothing (pycocotools' ``merge`` gives an empty mask).
    """
    n_d, n_g = len(dts), len(gts)
    if n_d == 0 or n_g == 0:
        return np.zeros((n_d, n_g))
    len_d = np.array([len(d.segs) for d in dts])
    len_g = np.array([len(g.segs) for g in gts])
    n_frames = int(min(len_d.max(), len_g.max()))
    area_d, has_d, h_d, w_d = _frame_table(dts, n_frames)
    area_g, has_g, h_g, w_g = _frame_table(gts, n_frames)
    frames = np.arange(n_frames)
    valid = (frames[None, :] < len_d[:, None])[:, None, :] & (frames[None, :] < len_g[:, None])[None, :, :]
    pd, pg = has_d[:, None, :], has_g[None, :, :]
    ad, ag = area_d[:, None, :], area_g[None, :, :]
    both = valid & pd & pg & (h_d[:, None, :] == h_g[None, :, :]) & (w_d[:, None, :] == w_g[None, :, :])
    inter = np.zeros((n_d, n_g, n_frames), dtype=np.int64)
    for t in np.nonzero(both.any(axis=(0, 1)))[0]:
        d_idx: np.ndarray = np.nonzero(has_d[:, t])[0]
        g_idx: np.ndarray = np.nonzero(has_g[:, t])[0]
        ratio = np.asarray(mask_utils.iou([dts[i].segs[t] for i in d_idx], [gts[j].segs[t] for j in g_idx],
                                          [1] * len(g_idx)), dtype=np.float64)
        inter[np.ix_(d_idx, g_idx, [t])] = np.rint(ratio * area_d[d_idx, t][:, None]).astype(np.int64)[:, :, None]
    inter = np.where(both, inter, 0)
    union = (np.where(both, ad + ag - inter, 0)
             + np.where(valid & pd & ~pg, ad, 0)
             + np.where(valid & ~pd & pg, ag, 0)).sum(axis=2)
    inter_sum = inter.sum(axis=2)
    ious = np.zeros((n_d, n_g), dtype=np.float64)
    np.divide(inter_sum.astype(np.float64), union.astype(np.float64), out=ious, where=union > 0)
    return ious


def _last_argmax(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per row: index of the *last* maximum, and whether the row had any candidate (value ≥ 0)."""
    if values.shape[1] == 0:
        return np.zeros(values.shape[0], dtype=np.int64), np.zeros(values.shape[0], dtype=bool)
    rev = values[:, ::-1]
    idx = values.shape[1] - 1 - np.argmax(rev, axis=1)
    return idx, rev.max(axis=1) >= 0


def _match(ious: np.ndarray, gts: Sequence[_Track], gt_ignore: np.ndarray,
           dt_out_of_range: np.ndarray, scores: np.ndarray) -> _VideoEval:
    """COCO greedy matching for one video at all IoU thresholds (official ``evaluateVid``).

    ``gts`` are already ordered regular-first. For each prediction in score order, at each
    threshold, the official loop keeps the best still-free GT with IoU ≥ threshold, preferring the
    later GT on equal IoU, and only falls back to ignored GT when no regular GT qualifies. That is
    "last argmax among regular candidates, else among ignored ones", computed for all thresholds
    at once.
    """
    n_t = len(IOU_THRESHOLDS)
    n_d, n_g = ious.shape
    dt_gt_id = np.zeros((n_t, n_d))
    dt_ignore = np.zeros((n_t, n_d), dtype=bool)
    if n_d and n_g:
        thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]
        crowd = np.array([g.crowd for g in gts], dtype=bool)
        gt_ids = np.array([g.ann_id for g in gts], dtype=np.float64)
        n_regular = int(np.count_nonzero(~gt_ignore))
        taken = np.zeros((n_t, n_g), dtype=bool)
        rows = np.arange(n_t)
        for d in range(n_d):
            cand = (~taken | crowd[None, :]) & (ious[d][None, :] >= thr)
            vals = np.where(cand, ious[d][None, :], -1.0)
            reg_idx, reg_any = _last_argmax(vals[:, :n_regular])
            ign_idx, ign_any = _last_argmax(vals[:, n_regular:])
            m = np.where(reg_any, reg_idx, np.where(ign_any, ign_idx + n_regular, -1))
            hit = m >= 0
            if not hit.any():
                continue
            dt_gt_id[rows[hit], d] = gt_ids[m[hit]]
            dt_ignore[rows[hit], d] = gt_ignore[m[hit]]
            taken[rows[hit], m[hit]] = True
    # unmatched predictions outside the area range are not counted as false positives
    dt_ignore |= (dt_gt_id == 0) & dt_out_of_range[None, :]
    return _VideoEval(scores=scores, dt_gt_id=dt_gt_id, dt_ignore=dt_ignore, gt_ignore=gt_ignore)


def _evaluate_group(dts: List[_Track], gts: List[_Track], ious: np.ndarray) -> List[_VideoEval]:
    """All area ranges for one (video, category) group; ``dts`` sorted and truncated already."""
    scores = np.array([d.score for d in dts], dtype=np.float64)
    dt_area = np.array([d.avg_area for d in dts], dtype=np.float64)
    gt_area = np.array([g.avg_area for g in gts], dtype=np.float64)
    gt_flag = np.array([g.ignore for g in gts], dtype=bool)
    out = []
    for lo, hi in AREA_RANGES:
        ignore = gt_flag | (gt_area < lo) | (gt_area > hi)
        order = np.argsort(ignore.astype(np.int64), kind="mergesort")
        out.append(_match(ious[:, order], [gts[j] for j in order], ignore[order],
                          (dt_area < lo) | (dt_area > hi), scores))
    return out


def _accumulate(evals: Dict[Tuple[int, int], List[Optional[_VideoEval]]], n_cat: int,
                max_dets: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Official ``accumulate``: precision (T,R,K,A,M) and recall (T,K,A,M), -1 where no GT."""
    n_t, n_r, n_a, n_m = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES), len(max_dets)
    precision = -np.ones((n_t, n_r, n_cat, n_a, n_m))
    recall = -np.ones((n_t, n_cat, n_a, n_m))
    for (k, a), per_video in evals.items():
        found = [e for e in per_video if e is not None]
        if not found:
            continue
        for m, max_det in enumerate(max_dets):
            scores = np.concatenate([e.scores[:max_det] for e in found])
            order = np.argsort(-scores, kind="mergesort")
            dtm = np.concatenate([e.dt_gt_id[:, :max_det] for e in found], axis=1)[:, order]
            dt_ig = np.concatenate([e.dt_ignore[:, :max_det] for e in found], axis=1)[:, order]
            gt_ig = np.concatenate([e.gt_ignore for e in found])
            n_pos = np.count_nonzero(gt_ig == 0)
            if n_pos == 0:
                continue
            tps = np.logical_and(dtm, np.logical_not(dt_ig))
            fps = np.logical_and(np.logical_not(dtm), np.logical_not(dt_ig))
            tp_sum = np.cumsum(tps, axis=1).astype(np.float64)
            fp_sum = np.cumsum(fps, axis=1).astype(np.float64)
            n_det = tp_sum.shape[1]
            for t in range(n_t):
                rc = tp_sum[t] / n_pos
                pr = tp_sum[t] / (fp_sum[t] + tp_sum[t] + np.spacing(1))
                recall[t, k, a, m] = rc[-1] if n_det else 0
                # interpolated precision: best precision at any higher recall
                pr = np.maximum.accumulate(pr[::-1])[::-1] if n_det else pr
                idx = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
                q = np.zeros(n_r)
                ok = idx < n_det  # official: an IndexError stops filling, the rest stays 0
                q[ok] = pr[idx[ok]]
                precision[t, :, k, a, m] = q
    return precision, recall


def _summarize(precision: np.ndarray, recall: np.ndarray, max_dets: Sequence[int]) -> Dict[str, float]:
    """The 12 official ``stats``: means over entries > -1 of the selected slices, else -1."""
    stats: Dict[str, float] = {}
    for key, is_ap, iou_thr, area, (sel_kind, sel_val) in _STATS:
        want = sel_val if sel_kind == "literal" else max_dets[sel_val]
        aind = [i for i, lbl in enumerate(AREA_LABELS) if lbl == area]
        mind = [i for i, md in enumerate(max_dets) if md == want]
        s = precision if is_ap else recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == IOU_THRESHOLDS)[0]]
        s = s[:, :, :, aind, mind] if is_ap else s[:, :, aind, mind]
        kept = s[s > -1]
        stats[key] = float(np.mean(kept)) if kept.size else -1.0
    return stats


def _top_scores(dts: Sequence[_Track], sel: List[int], max_det: int) -> List[int]:
    """``sel`` reordered by descending score, ties in their given order, cut to ``max_det``."""
    order = np.argsort(np.array([-dts[i].score for i in sel], dtype=np.float64), kind="mergesort")
    return [sel[o] for o in order[:max_det]]


def _parse_max_dets(max_dets: Sequence[int]) -> List[int]:
    vals = list(max_dets)
    if len(vals) != 3 or not all(_is_int(v) and v > 0 for v in vals):
        raise ValueError(f"max_dets must be three positive integers, got {max_dets!r}")
    return sorted(int(v) for v in vals)  # the official sorts them too


def evaluate_ytvis(gt: dict, results: list, *, class_agnostic: bool = False,
                   max_dets: Sequence[int] = (1, 10, 100)) -> Dict[str, float]:
    """Score YouTube-VIS predictions exactly like the official YTVOSeval (``iouType='segm'``).

    Returns the 12 official ``stats`` as fractions (``AP, AP50, AP75, APs, APm, APl, AR1, AR10,
    AR100, ARs, ARm, ARl``; -1 where the official gives -1, e.g. no GT in an area range) plus
    ``num_videos``, ``num_gt`` (non-crowd GT objects scored), ``num_pred`` (predictions in a GT
    category) and ``num_pred_unknown_category`` (predictions dropped because their category is
    not in the GT ``categories``; the official drops them in class-agnostic mode too).
    ``AR1/AR10/AR100`` are recall at ``max_dets[0..2]``.
    """
    _validate_gt(gt, None)
    _validate_results(results, None)
    _check_results_against_gt(results, gt, None, strict=False)
    mdets = _parse_max_dets(max_dets)
    max_det = mdets[-1]

    videos = {v["id"]: v for v in gt["videos"]}
    vid_ids = sorted(videos)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    cat_index = {c: k for k, c in enumerate(cat_ids)}

    gts_by_video: Dict[int, List[_Track]] = defaultdict(list)
    for ann in gt["annotations"]:
        if ann["video_id"] not in videos or ann["category_id"] not in cat_index:
            continue  # the official only loads annotations of listed videos and categories
        video = videos[ann["video_id"]]
        segs = [_to_rle(s, video) for s in ann["segmentations"]]
        pixel_areas = _frame_areas(segs)
        areas = ann.get("areas")
        if areas is None:  # the official needs 'areas'; we use the measured mask areas instead
            areas = pixel_areas
        iscrowd = ann.get("iscrowd", 0)
        gts_by_video[ann["video_id"]].append(_Track(
            ann_id=ann["id"], category=ann["category_id"], segs=segs, pixel_areas=pixel_areas,
            avg_area=_mean_truthy_area(areas), crowd=int(iscrowd) != 0, ignore=bool(iscrowd)))

    dts_by_video: Dict[int, List[_Track]] = defaultdict(list)
    unknown_cat = 0
    for i, res in enumerate(results):
        if res["category_id"] not in cat_index:
            unknown_cat += 1
            continue
        video = videos[res["video_id"]]
        segs = [_to_rle(s, video) for s in res["segmentations"]]
        pixel_areas = _frame_areas(segs)
        dts_by_video[res["video_id"]].append(_Track(
            ann_id=i + 1, category=res["category_id"], segs=segs, pixel_areas=pixel_areas,
            avg_area=_mean_truthy_area(pixel_areas), score=float(res["score"])))

    n_cat = 1 if class_agnostic else len(cat_ids)
    evals: Dict[Tuple[int, int], List[Optional[_VideoEval]]] = {
        (k, a): [None] * len(vid_ids) for k in range(n_cat) for a in range(len(AREA_RANGES))}
    for v_pos, vid in enumerate(vid_ids):
        v_gts, v_dts = gts_by_video.get(vid, []), dts_by_video.get(vid, [])
        if not v_gts and not v_dts:
            continue
        # groups in the official order: by category id, file order within a category
        gt_by_cat: Dict[int, List[int]] = defaultdict(list)
        dt_by_cat: Dict[int, List[int]] = defaultdict(list)
        for j, g in enumerate(v_gts):
            gt_by_cat[g.category].append(j)
        for i, d in enumerate(v_dts):
            dt_by_cat[d.category].append(i)
        if class_agnostic:
            groups = [(0, [j for c in cat_ids for j in gt_by_cat[c]], [i for c in cat_ids for i in dt_by_cat[c]])]
        else:
            groups = [(cat_index[c], gt_by_cat[c], dt_by_cat[c]) for c in cat_ids if gt_by_cat[c] or dt_by_cat[c]]
        # highest score first (stable, as the official mergesort), at most max_det per group
        groups = [(k, g_sel, _top_scores(v_dts, d_sel, max_det)) for k, g_sel, d_sel in groups]
        kept = sorted({i for _, _, dsel in groups for i in dsel})
        pos = {i: n for n, i in enumerate(kept)}
        ious = _video_iou([v_dts[i] for i in kept], v_gts)
        for k, g_sel, d_sel in groups:
            sub = ious[np.ix_([pos[i] for i in d_sel], g_sel)] if d_sel and g_sel else np.zeros((len(d_sel), len(g_sel)))
            for a, e in enumerate(_evaluate_group([v_dts[i] for i in d_sel], [v_gts[j] for j in g_sel], sub)):
                evals[(k, a)][v_pos] = e

    precision, recall = _accumulate(evals, n_cat, mdets)
    metrics: Dict[str, float] = _summarize(precision, recall, mdets)
    metrics["num_videos"] = len(vid_ids)
    metrics["num_gt"] = sum(1 for gs in gts_by_video.values() for g in gs if not g.ignore)
    metrics["num_pred"] = sum(len(ds) for ds in dts_by_video.values())
    metrics["num_pred_unknown_category"] = unknown_cat
    return metrics


# ----------------------------------------------------------------------------------------------
# presentation
# ----------------------------------------------------------------------------------------------

_TABLE_ROWS = {
    "AP": ("0.50:0.95", "all", "100"), "AP50": ("0.50", "all", "100"), "AP75": ("0.75", "all", "100"),
    "APs": ("0.50:0.95", "small", "100"), "APm": ("0.50:0.95", "medium", "100"),
    "APl": ("0.50:0.95", "large", "100"), "AR1": ("0.50:0.95", "all", "1"),
    "AR10": ("0.50:0.95", "all", "10"), "AR100": ("0.50:0.95", "all", "100"),
    "ARs": ("0.50:0.95", "small", "100"), "ARm": ("0.50:0.95", "medium", "100"),
    "ARl": ("0.50:0.95", "large", "100"),
}


def format_ytvis_table(metrics: Mapping[str, Any]) -> str:
    """Fixed-width terminal table: values ×100 with one decimal, -1 (not scorable) as ``n/a``.

    Areas are in pixels: small < 128², medium 128²–256², large > 256² (mean over frames).
    """
    lines = [f"{'metric':<7} {'IoU':<10} {'area':<7} {'maxDets':>7} {'value':>7}"]
    lines.append("-" * len(lines[0]))
    for key in STAT_KEYS:
        if key not in metrics:
            continue
        value = float(metrics[key])
        shown = "n/a" if value == -1 else f"{100.0 * value:.1f}"
        iou, area, mdet = _TABLE_ROWS[key]
        lines.append(f"{key:<7} {iou:<10} {area:<7} {mdet:>7} {shown:>7}")
    counts = [(k, label) for k, label in (("num_videos", "videos"), ("num_gt", "GT objects"),
                                          ("num_pred", "predictions")) if k in metrics]
    if counts:
        lines.append("-" * len(lines[0]))
        lines.append("  ".join(f"{label}: {int(metrics[k])}" for k, label in counts))
    if metrics.get("num_pred_unknown_category"):
        lines.append(f"{int(metrics['num_pred_unknown_category'])} predictions ignored: category not in the GT")
    return "\n".join(lines)
