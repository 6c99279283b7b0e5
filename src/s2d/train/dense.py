"""Dense labelset from the distilled teacher (PAPER.md §3 "dense label generation", FINDINGS.md §1):
predict, then merge keymasks.

**Predict.** Every training video is run through the one streaming predictor of ``s2d segment``
(:class:`s2d.infer.predictor.VideoPredictor`), with the settings of :meth:`DenseConfig.segment_config`:
chunks of ``window`` frames overlapping by ``overlap`` (at ``max_side``), tubes scoring ≥ ``score_threshold``
(0.75), linked across chunks by mask IoU on the shared frames (≥ ``link_iou``), optionally split into
connected parts, refined (``guided`` / ``crf``) and with TTA consensus, at the video's size. So the labels
are what ``s2d segment`` with those settings would write — except that, by default
(``resolve_overlaps=False``), masks keep the pixels they share with a higher-scoring object, as the teacher
predicts them (resolving them measured worse: ``benchmarks/RESULTS.md``).

**Merge keymasks.** With ``keep_keymasks`` each keymask object is matched to a dense object (mean IoU on its
keymask frames ≥ ``keymask_iou``) whose masks it replaces on those frames (the keymask wins on its frame);
unmatched keymask objects are kept as they are. Output: the same YTVIS format as ``pseudo_labels.json``
(``videos`` records copied, so ``source``/``file_names`` still resolve).

**Shards.** Under DDP every rank labels every ``world``-th video (:func:`write_dense_shard`) and rank 0 joins
the shards in the labelset's video order (:func:`merge_dense_shards`): the file is byte-identical to the one a
single process writes.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Union, cast

import numpy as np
import torch
from pycocotools import mask as mask_utils

from s2d import rle as rle_utils
from s2d.infer.linking import match_tubes
from s2d.io.atomic import atomic_write_text
from s2d.train.config import DenseConfig
from s2d.train.data import Labelset, LabelledVideo, iter_video_frames, load_labelset

__all__ = ["build_dense_labelset", "merge_dense_shards", "predict_video_dense", "shard_path", "write_dense_shard",
           "RefineFn"]

PathLike = Union[str, "os.PathLike[str]"]
RefineFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@torch.no_grad()
def predict_video_dense(model: Any, frames: Iterable[np.ndarray], length: int, cfg: DenseConfig,
                        refine_fn: Optional[RefineFn] = None) -> List[Dict[str, Any]]:
    """The first ``length`` frames predicted as ``s2d segment`` runs the model (the one streaming
    :class:`~s2d.infer.predictor.VideoPredictor`, with :meth:`DenseConfig.segment_config`), collected per
    track. Returns objects ``{"score", "segs": [RLE | None] * length, "keymask": False}`` at the frames'
    size; memory holds one chunk plus the RLEs. ``refine_fn(rgb, mask) -> mask`` replaces the CRF of
    ``refine="crf"`` (and turns that mode on)."""
    from s2d.infer.predictor import VideoPredictor

    seg_cfg = cfg.segment_config()
    if refine_fn is not None:
        seg_cfg = seg_cfg.replace(refine="crf")
    predictor = VideoPredictor(model, seg_cfg, refine_fn=refine_fn)
    T = int(length)
    segs: Dict[int, List[Optional[Dict[str, Any]]]] = {}
    for result in predictor(itertools.islice(iter(frames), T)):
        for k, tid in enumerate(result.ids.tolist()):
            segs.setdefault(int(tid), [None] * T)[result.index] = rle_utils.encode(result.masks[k])
    scores = predictor.track_scores
    return [{"score": float(scores[tid]), "segs": segs[tid], "keymask": False} for tid in sorted(segs)]


def build_dense_labelset(model: Any, data: Union[Labelset, PathLike], videos_root: PathLike, out_path: PathLike,
                         cfg: Optional[DenseConfig] = None, *, refine_fn: Optional[RefineFn] = None,
                         progress: bool = True, min_saliency: float = 0.0, min_keymasks: int = 0,
                         min_score_ratio: float = 0.0) -> Path:
    """Predict every video of ``data`` with ``model`` (the teacher) and write the dense labelset JSON (one
    process: :func:`write_dense_shard` of the only shard, then :func:`merge_dense_shards`)."""
    cfg = cfg or DenseConfig()
    labelset = data if isinstance(data, Labelset) else load_labelset(data, min_saliency=min_saliency,
                                                                             min_keymasks=min_keymasks,
                                                                             min_score_ratio=min_score_ratio)
    write_dense_shard(model, labelset, videos_root, out_path, cfg, rank=0, world=1, refine_fn=refine_fn,
                      progress=progress)
    return merge_dense_shards(labelset, out_path, cfg, world=1)


def shard_path(out_path: PathLike, rank: int) -> Path:
    """Where rank ``rank`` writes its part of the dense labelset ``out_path``."""
    p = Path(out_path)
    return p.with_name(f"{p.stem}.shard{rank}{p.suffix}")


def write_dense_shard(model: Any, labelset: Labelset, videos_root: PathLike, out_path: PathLike,
                      cfg: DenseConfig, *, rank: int, world: int, refine_fn: Optional[RefineFn] = None,
                      progress: bool = True) -> Path:
    """Label this rank's share of the videos (every ``world``-th, from ``rank``) and write them to
    :func:`shard_path`: per video, its objects without ids (the merge numbers them)."""
    from tqdm import tqdm

    mine = list(range(rank, len(labelset.videos), world))
    parts = []
    for i in tqdm(mine, desc="dense labels", unit="video", disable=not progress):
        video = labelset.videos[i]
        length = video.length if not cfg.max_frames else min(video.length, int(cfg.max_frames))
        tracks = predict_video_dense(model, iter_video_frames(videos_root, video), length, cfg, refine_fn)
        for tr in tracks:  # frames past max_frames stay unlabelled
            tr["segs"] = tr["segs"] + [None] * (video.length - length)
        if cfg.keep_keymasks:
            _merge_keymasks(video, tracks, cfg)
        parts.append({"video": i, "objects": [_annotation(tr, video) for tr in tracks]})
    path = shard_path(out_path, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(parts), fsync=True)
    return path


def merge_dense_shards(labelset: Labelset, out_path: PathLike, cfg: DenseConfig, *, world: int) -> Path:
    """Join the ``world`` shards into the dense labelset ``out_path`` in the labelset's video order, objects
    numbered 1..m: the same file however many ranks labelled it. The shards are removed afterwards."""
    by_video: Dict[int, List[Dict[str, Any]]] = {}
    shards = [shard_path(out_path, r) for r in range(world)]
    for sp in shards:
        for part in json.loads(sp.read_text()):
            by_video[int(part["video"])] = part["objects"]
    videos: List[Dict[str, Any]] = []
    anns: List[Dict[str, Any]] = []
    for i, video in enumerate(labelset.videos):
        rec = dict(video.record)
        videos.append(rec)
        for obj in by_video[i]:
            anns.append({"id": len(anns) + 1, "video_id": rec["id"], **obj})
    out = dict(labelset.data)
    out["info"] = dict(out.get("info") or {})
    out["info"]["description"] = "s2d dense labelset (teacher predictions, keymasks kept)"
    out["info"]["dense"] = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    out["videos"], out["annotations"] = videos, anns
    path = Path(out_path)
    atomic_write_text(path, json.dumps(out), fsync=True)
    for sp in shards:
        sp.unlink()
    return path


def _annotation(tr: Dict[str, Any], video: LabelledVideo) -> Dict[str, Any]:
    """A dense track as a YouTube-VIS annotation, without its ids."""
    segs = tr["segs"]
    boxes = [None if sg is None else rle_utils.bbox(sg) for sg in segs]
    return {"category_id": 1, "iscrowd": 0, "segmentations": segs,
            "areas": [None if sg is None else rle_utils.area(sg) for sg in segs],
            "bboxes": [None if b is None else list(b) for b in boxes], "score": tr["score"],
            "keymask": tr["keymask"], "height": video.height, "width": video.width}


def _merge_keymasks(video: LabelledVideo, tracks: List[Dict[str, Any]], cfg: DenseConfig) -> None:
    """Keymask objects replace the masks of their matched dense object on their frames (keymask wins)."""
    keys = [obj for obj in video.objects if any(r is not None for r in obj)]
    if not keys:
        return
    iou = np.zeros((len(keys), len(tracks)))
    for i, ks in enumerate(keys):
        frames = [t for t, r in enumerate(ks) if r is not None]
        for j, tr in enumerate(tracks):
            vals = []
            for t in frames:
                d = tr["segs"][t]
                if d is None or tuple(rle_utils.size_of(d)) != tuple(rle_utils.size_of(cast(dict, ks[t]))):
                    vals.append(0.0)
                    continue
                vals.append(float(mask_utils.iou([_coco(cast(dict, ks[t]))], [_coco(d)], [0])[0, 0]))
            iou[i, j] = float(np.mean(vals))
    matched = match_tubes(iou, cfg.keymask_iou) if tracks else {}
    for i, ks in enumerate(keys):
        if i in matched:
            tr = tracks[matched[i]]
            tr["keymask"] = True
        else:
            tr = {"score": 1.0, "segs": [None] * len(ks), "keymask": True}
            tracks.append(tr)
        for t, r in enumerate(ks):
            if r is not None:
                tr["segs"][t] = rle_utils.to_compressed(r)


def _coco(r: dict) -> dict:
    r = rle_utils.to_compressed(r)
    return {"size": r["size"], "counts": r["counts"].encode("ascii")}
