"""Dense labelset from the distilled teacher (PAPER.md §3 "dense label generation", FINDINGS.md §1).

Every training video is predicted in sliding windows of ``window`` frames overlapping by ``overlap`` frames
(at ``max_side``), predictions with score ≥ ``score_threshold`` (0.75) are kept and linked across windows by
mean mask IoU on the shared frames (Hungarian, ≥ ``link_iou``; unmatched → new object; the
:class:`s2d.infer.linking.TubeLinker` that streaming inference uses too). With ``tta_flip``/``tta_scales``
each window's prediction is the consensus of the teacher's views (:func:`s2d.infer.tta.predict_tta`).
Masks can be refined at the working size (``refine="crf"``: :func:`s2d.frames.refine.crf_refine` on the
frame, or any ``refine_fn(rgb, mask) -> mask``; off by default, it measured worse), brought to the video's
size and written as RLE. With ``keep_keymasks``
each keymask object is matched to a dense object (mean IoU on its keymask frames ≥ ``keymask_iou``) whose
masks it replaces on those frames (the keymask wins on its frame); unmatched keymask objects are kept as
they are. Output: the same YTVIS
format as ``pseudo_labels.json`` (``videos`` records copied, so ``source``/``file_names`` still resolve).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from s2d import rle as rle_utils
from s2d.infer.instances import split_tubes
from s2d.infer.linking import TubeLinker, match_tubes
from s2d.infer.refine import guided_masks
from s2d.infer.tta import predict_tta
from s2d.io.atomic import atomic_write_text
from s2d.train.config import DenseConfig
from s2d.train.data import Labelset, LabelledVideo, iter_video_frames, load_labelset

__all__ = ["build_dense_labelset", "predict_video_dense", "RefineFn"]

PathLike = Union[str, "os.PathLike[str]"]
RefineFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _window_starts(T: int, cfg: DenseConfig) -> List[int]:
    step = cfg.window - cfg.overlap
    starts = list(range(0, max(1, T - cfg.window + 1), step))
    if starts[-1] + cfg.window < T:
        starts.append(max(0, T - cfg.window))
    return starts


@torch.no_grad()
def predict_video_dense(model: Any, frames: Iterable[np.ndarray], length: int, cfg: DenseConfig,
                        refine_fn: Optional[RefineFn] = None) -> List[Dict[str, Any]]:
    """Sliding-window prediction of one video, streaming: at most ``window`` frames and the masks of the
    frames still shared with the next window are held in memory. Returns objects ``{"score", "segs": [RLE |
    None] * length}`` at the frames' size (masks predicted at ``cfg.max_side``, upsampled, then refined)."""
    T = int(length)
    it = iter(frames)
    buf: Dict[int, tuple] = {}
    nxt_read = 0
    objects: List[Dict[str, Any]] = []  # track id i is objects[i - 1]
    linker = TubeLinker(cfg.link_iou)
    full = work_size = None

    def fetch(upto: int) -> None:
        nonlocal nxt_read, full, work_size
        while nxt_read <= upto:
            rgb = next(it)
            if full is None:
                full = rgb.shape[:2]
                work_size = full
                if cfg.max_side and max(full) > cfg.max_side:
                    sc = cfg.max_side / max(full)
                    work_size = (max(4, int(round(full[0] * sc)) // 4 * 4), max(4, int(round(full[1] * sc)) // 4 * 4))
            work = rgb if tuple(work_size) == tuple(rgb.shape[:2]) else _resize_rgb(rgb, work_size)
            buf[nxt_read] = (rgb, work)
            nxt_read += 1

    def finalize(t: int) -> None:
        work = buf.pop(t)[1]
        for o in objects:
            m = o["masks"].pop(t, None)
            if m is None:
                continue
            mm = m.numpy()
            if refine_fn is not None and mm.any():  # at the working size (CRF cost grows with pixels)
                mm = np.asarray(refine_fn(work, mm), dtype=bool)
            if mm.shape != tuple(full):
                mm = F.interpolate(torch.from_numpy(mm)[None, None].float(), size=tuple(full), mode="bilinear",
                                   align_corners=False)[0, 0].numpy() > 0.5
            if mm.any():
                o["segs"][t] = rle_utils.encode(mm)

    starts = _window_starts(T, cfg) if T else []
    for wi, s in enumerate(starts):
        idx = list(range(s, min(T, s + cfg.window)))
        fetch(idx[-1])
        clip = torch.from_numpy(np.stack([buf[t][1] for t in idx])).permute(0, 3, 1, 2).float().div_(255.0)
        res = predict_tta(model, clip, cfg.score_threshold, flip=cfg.tta_flip, scales=cfg.tta_scales)
        masks = res["masks"].cpu()  # K×t×h×w
        if cfg.refine == "guided" and len(masks):  # edges onto the frame's edges (s2d.infer.refine)
            lg = res["mask_logits"].cpu()
            masks = torch.from_numpy(np.stack([guided_masks(buf[t][1], lg[:, j], cfg.guided_radius, cfg.guided_eps)
                                               for j, t in enumerate(idx)], 1))
        keep = masks.flatten(1).sum(1) >= cfg.min_area
        masks, scores = masks[keep], res["scores"].cpu()[keep]
        if cfg.split and len(masks):  # separate objects that one query covers (s2d.infer.instances)
            masks, scores, _, _ = split_tubes(masks, scores,
                                              min_area=cfg.split_min_area * masks.shape[-2] * masks.shape[-1])
        shared = linker.shared_frames(idx)
        reference = None
        if shared and linker.ids and len(masks):  # match against the masks each track keeps on those frames
            h, w = masks.shape[-2:]
            reference = torch.stack([torch.stack([objects[i - 1]["masks"].get(t, torch.zeros(h, w, dtype=torch.bool))
                                                  for t in shared]) for i in linker.ids])
        for k, tid in enumerate(linker.link(idx, masks, reference)):
            if tid <= len(objects):
                o = objects[tid - 1]
                o["scores"].append(float(scores[k]))
            else:
                o = {"scores": [float(scores[k])], "masks": {}, "segs": [None] * T}
                objects.append(o)
            for j, t in enumerate(idx):
                if t not in o["masks"] and o["segs"][t] is None:  # an earlier window keeps a shared frame
                    o["masks"][t] = masks[k, j]
        upto = starts[wi + 1] if wi + 1 < len(starts) else T
        for t in sorted(buf):
            if t < upto:
                finalize(t)
    out = []
    for o in objects:
        if any(sg is not None for sg in o["segs"]):
            out.append({"score": float(np.mean(o["scores"])), "segs": o["segs"], "keymask": False})
    return out


def build_dense_labelset(model: Any, data: Union[Labelset, PathLike], videos_root: PathLike, out_path: PathLike,
                         cfg: Optional[DenseConfig] = None, *, refine_fn: Optional[RefineFn] = None,
                         progress: bool = True, min_saliency: float = 0.0, min_keymasks: int = 0) -> Path:
    """Predict every video of ``data`` with ``model`` (the teacher) and write the dense labelset JSON."""
    cfg = cfg or DenseConfig()
    labelset = data if isinstance(data, Labelset) else load_labelset(data, min_saliency=min_saliency,
                                                                             min_keymasks=min_keymasks)
    if refine_fn is None and cfg.refine == "crf":
        from s2d.frames.refine import crf_refine

        refine_fn = crf_refine
    from tqdm import tqdm

    videos, anns = [], []
    for video in tqdm(labelset.videos, desc="dense labels", unit="video", disable=not progress):
        length = video.length if not cfg.max_frames else min(video.length, int(cfg.max_frames))
        tracks = predict_video_dense(model, iter_video_frames(videos_root, video), length, cfg, refine_fn)
        for tr in tracks:  # frames past max_frames stay unlabelled
            tr["segs"] = tr["segs"] + [None] * (video.length - length)
        if cfg.keep_keymasks:
            _merge_keymasks(video, tracks, cfg)
        rec = dict(video.record)
        videos.append(rec)
        for tr in tracks:
            segs = tr["segs"]
            boxes = [None if sg is None else rle_utils.bbox(sg) for sg in segs]
            anns.append({"id": len(anns) + 1, "video_id": rec["id"], "category_id": 1, "iscrowd": 0,
                         "segmentations": segs, "areas": [None if sg is None else rle_utils.area(sg) for sg in segs],
                         "bboxes": [None if b is None else list(b) for b in boxes], "score": tr["score"],
                         "keymask": tr["keymask"], "height": video.height, "width": video.width})
    out = dict(labelset.data)
    out["info"] = dict(out.get("info") or {})
    out["info"]["description"] = "s2d dense labelset (teacher predictions, keymasks kept)"
    out["info"]["dense"] = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    out["videos"], out["annotations"] = videos, anns
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(out), fsync=True)
    return path


def _resize_rgb(rgb: np.ndarray, size: tuple) -> np.ndarray:
    import cv2

    return cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)


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
                if d is None or tuple(rle_utils.size_of(d)) != tuple(rle_utils.size_of(ks[t])):
                    vals.append(0.0)
                    continue
                vals.append(float(mask_utils.iou([_coco(ks[t])], [_coco(d)], [0])[0, 0]))
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
