"""Clips for stage-3 training from a (sparse or dense) labelset such as ``pseudo_labels.json``.

* :func:`load_labelset` reads the YTVIS-style JSON that ``s2d discover`` writes: per video ``source``
  (path relative to the videos root), ``source_kind`` (``"folder"`` | ``"video"``), ``file_names``
  (``<rel>/<frame file>`` for folders, ``<rel>/<index:05d>`` for video files), ``length``, ``height``, ``width``;
  per annotation ``segmentations[t]`` = RLE or ``null`` (unlabelled).
* :func:`sample_clip_frames` — the reference rule (PAPER.md §3): a uniformly chosen window of ``T``
  consecutive frames all labelled for some object; where a video has none, a labelled frame plus random
  frames within ± ``frame_range`` (unlabelled frames carry empty targets → no mask loss).
* :class:`ClipDataset` decodes only the frames of a clip (image files, or ``open_video(start, end)`` for
  video files), decodes masks from RLE and applies one random scale / crop / flip / brightness / contrast to
  all frames. Every draw comes from a generator seeded by ``(seed, sample index)``, so a run's data depend
  only on the step and rank — resume and DDP sharding need no sampler state.
* :func:`clip_loader` — the ``torch.utils.data`` pipeline over it: :class:`StepSampler` hands step ``s`` of
  rank ``r`` the sample indices ``(s·world + r)·B … +B`` (deterministic per (seed, step, rank), so a run
  resumed mid-epoch at step ``s`` draws exactly what the uninterrupted run drew), ``data.num_workers`` worker
  processes decode and augment ahead of the step (``prefetch_factor`` batches each), pinned memory on CUDA.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union, cast

import numpy as np
import torch
import torch.nn.functional as F

from s2d import rle as rle_utils
from s2d.errors import InputError
from s2d.train.config import DataConfig

__all__ = ["LabelledVideo", "Labelset", "load_labelset", "labelled_windows", "sample_clip_frames",
           "ClipDataset", "StepSampler", "clip_loader", "collate_clips", "paste_objects", "resolve_video",
           "read_frames_at", "iter_video_frames"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class LabelledVideo:
    """One video of a labelset; ``objects[i][t]`` is an RLE or ``None``."""

    id: int
    source: str
    kind: str
    file_names: List[str]
    length: int
    height: int
    width: int
    objects: List[List[Optional[dict]]] = field(default_factory=list)
    record: Dict[str, Any] = field(default_factory=dict)
    annotations: List[Dict[str, Any]] = field(default_factory=list)

    def labelled_frames(self) -> List[int]:
        return sorted({t for obj in self.objects for t, m in enumerate(obj) if m is not None})


@dataclass
class Labelset:
    path: Optional[Path]
    videos: List[LabelledVideo]
    data: Dict[str, Any]


def load_labelset(path: PathLike, min_saliency: float = 0.0, min_keymasks: int = 0,
                  min_score_ratio: float = 0.0) -> Labelset:
    """Read a labelset JSON; raises :class:`InputError` naming the file on any structural problem.

    ``min_saliency``: leave out objects whose ``saliency`` (written by ``s2d discover``: the fraction of their
    keymasks that stage 1 ranked first on their frame) is below this; objects without the field are kept.
    ``min_keymasks``: leave out objects labelled on fewer frames than this (short-lived objects are mostly
    moving parts and flicker).
    ``min_score_ratio``: leave out objects whose ``score_ratio`` (written by ``s2d discover``: the mean over
    their keymasks of the keymask's stage-1 score over the best stage-1 score of its frame) is below this;
    unlike saliency it does not split between several objects of similar rank (two cars). A labelset without
    the field is an error when this gate is on. Left-out objects are simply unlabelled, so the model learns not to report them
    (no-object).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "labelset file not found")
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(p, f"unreadable labelset JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list) \
            or not isinstance(data.get("annotations"), list):
        raise InputError(p, "not a labelset (expected a YTVIS dataset with 'videos' and 'annotations')")
    videos: Dict[int, LabelledVideo] = {}
    for i, v in enumerate(data["videos"]):
        try:
            names = list(v["file_names"])
            length = int(v.get("length", len(names)))
            src = v.get("source")
            if src is None:  # plain YTVIS: the folder of the first frame
                src = os.path.dirname(names[0])
            kind = v.get("source_kind", "folder")
            videos[int(v["id"])] = LabelledVideo(int(v["id"]), str(src), str(kind), names, length,
                                                 int(v["height"]), int(v["width"]), record=dict(v))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise InputError(p, f"video #{i}: malformed record ({type(e).__name__}: {e})") from None
        if kind not in ("folder", "video"):
            raise InputError(p, f"video #{i}: source_kind must be 'folder' or 'video', got {kind!r}")
    for j, a in enumerate(data["annotations"]):
        try:
            vid = videos[int(a["video_id"])]
            segs = list(a["segmentations"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(p, f"annotation #{j}: malformed or unknown video ({type(e).__name__}: {e})") from None
        if len(segs) != vid.length:
            raise InputError(p, f"annotation #{j}: {len(segs)} segmentations for a {vid.length}-frame video")
        sal = a.get("saliency")
        if min_saliency > 0 and isinstance(sal, (int, float)) and sal < min_saliency:
            continue
        if min_keymasks > 0 and sum(1 for m in segs if m) < min_keymasks:
            continue
        if min_score_ratio > 0:
            ratio = a.get("score_ratio")
            if not isinstance(ratio, (int, float)):
                raise InputError(p, f"annotation #{j}: no 'score_ratio' for data.min_score_ratio (written by "
                                    f"s2d discover since this version; rerun discovery or set it to 0)")
            if ratio < min_score_ratio:
                continue
        vid.objects.append([s if s else None for s in segs])
        vid.annotations.append(a)
    return Labelset(p, list(videos.values()), data)


def resolve_video(root: PathLike, video: LabelledVideo) -> Path:
    """Path of a video's source under ``root``; :class:`InputError` when missing."""
    path = Path(root) / video.source
    if video.kind == "folder" and not path.is_dir():
        raise InputError(path, f"frame folder of video {video.source!r} not found under the videos root")
    if video.kind == "video" and not path.is_file():
        raise InputError(path, f"video file {video.source!r} not found under the videos root")
    return path


def read_frames_at(root: PathLike, video: LabelledVideo, indices: Sequence[int]) -> List[np.ndarray]:
    """Decode only ``indices`` (any order, repeats allowed) → list of ``H×W×3`` uint8 RGB."""
    from s2d.io.video import read_image, open_video

    want = sorted(set(int(i) for i in indices))
    got: Dict[int, np.ndarray] = {}
    if video.kind == "folder":
        for t in want:
            f = Path(root) / video.file_names[t]
            if not f.is_file():
                raise InputError(f, f"frame {t} of video {video.source!r} not found under the videos root")
            got[t] = read_image(f)
    else:
        path = resolve_video(root, video)
        with open_video(path, start=want[0], end=want[-1] + 1) as stream:
            for fr in stream:
                if fr.index in want:
                    got[fr.index] = fr.rgb
        missing = [t for t in want if t not in got]
        if missing:
            raise InputError(path, f"video ended before frame {missing[0]} (labelset says {video.length} frames)")
    return [got[int(i)] for i in indices]


def iter_video_frames(root: PathLike, video: LabelledVideo) -> Iterator[np.ndarray]:
    """All frames of a video in order (one decoded at a time), as ``H×W×3`` uint8 RGB."""
    from s2d.io.video import read_image, open_video

    if video.kind == "folder":
        for t, name in enumerate(video.file_names[:video.length]):
            f = Path(root) / name
            if not f.is_file():
                raise InputError(f, f"frame {t} of video {video.source!r} not found under the videos root")
            yield read_image(f)
        return
    path = resolve_video(root, video)
    n = 0
    with open_video(path, end=video.length) as stream:
        for fr in stream:
            n += 1
            yield fr.rgb
    if n < video.length:
        raise InputError(path, f"video ended at frame {n} (labelset says {video.length} frames)")


def labelled_windows(video: LabelledVideo, clip_len: int) -> List[int]:
    """Start frames of every window of ``clip_len`` consecutive frames all labelled for some object."""
    starts = set()
    for obj in video.objects:
        lab = np.array([m is not None for m in obj], dtype=bool)
        if lab.size < clip_len:
            continue
        run = np.convolve(lab.astype(np.int32), np.ones(clip_len, dtype=np.int32), mode="valid")
        starts.update(np.nonzero(run == clip_len)[0].tolist())
    return sorted(starts)


def sample_clip_frames(video: LabelledVideo, clip_len: int, frame_range: int, rng: random.Random) -> List[int]:
    """Frame indices (sorted) of one clip by the reference rule (see the module docstring)."""
    windows = labelled_windows(video, clip_len)
    if windows:
        s = rng.choice(windows)
        return list(range(s, s + clip_len))
    labelled = video.labelled_frames()
    ref = rng.choice(labelled) if labelled else rng.randrange(video.length)
    lo, hi = max(0, ref - frame_range), min(video.length, ref + frame_range + 1)
    pool = [t for t in range(lo, hi) if t != ref]
    if len(pool) >= clip_len - 1:
        others = rng.sample(pool, clip_len - 1)
    else:  # very short video: repeat frames
        others = [rng.choice(pool or [ref]) for _ in range(clip_len - 1)]
    return sorted([ref] + others)


class ClipDataset(torch.utils.data.Dataset):
    """Random augmented clips of a labelset: ``ds.sample(index)`` → ``(clip T×3×H×W float [0,1], target)``.

    ``target = {"masks": N×T×H×W bool, "labels": N long zeros, "video_id", "frames"}`` with the objects labelled
    on at least one frame of the clip; unlabelled (object, frame) pairs are empty masks.
    """

    def __init__(self, labelset: Union[Labelset, PathLike], videos_root: PathLike, cfg: DataConfig,
                 seed: int = 0) -> None:
        self.labelset = (labelset if isinstance(labelset, Labelset)
                         else load_labelset(labelset, min_saliency=cfg.min_saliency,
                                            min_keymasks=cfg.min_keymasks, min_score_ratio=cfg.min_score_ratio))
        self.root = Path(videos_root)
        self.cfg = cfg
        self.seed = int(seed)
        self.videos = [v for v in self.labelset.videos if v.objects and v.labelled_frames()]
        if not self.videos:
            raise InputError(self.labelset.path, "labelset has no labelled frame to train on")
        for v in self.videos:  # fail early and clearly on a wrong --videos root
            resolve_video(self.root, v)

    def __len__(self) -> int:
        return len(self.videos)

    def rng(self, index: int) -> random.Random:
        return random.Random(f"{self.seed}:{index}")

    def sample(self, index: int) -> Tuple[torch.Tensor, Dict[str, Any]]:
        rng = self.rng(index)
        video = self.videos[rng.randrange(len(self.videos))]
        frames = sample_clip_frames(video, self.cfg.clip_len, self.cfg.frame_range, rng)
        clip, target = self.load(video, frames, rng)
        if self.cfg.copy_paste > 0 and len(self.videos) > 1 and rng.random() < self.cfg.copy_paste:
            masks = target["masks"]
            for _ in range(rng.randint(1, self.cfg.paste_max)):
                donor = self.videos[rng.randrange(len(self.videos))]
                if donor.id == video.id:
                    continue
                dframes = sample_clip_frames(donor, self.cfg.clip_len, self.cfg.frame_range, rng)
                dclip, dtarget = self.load(donor, dframes, rng)
                clip, masks = paste_objects(clip, masks, dclip, dtarget["masks"], self.cfg.paste_scale, rng)
            target = {**target, "masks": masks, "labels": torch.zeros(masks.shape[0], dtype=torch.long)}
        return clip, target

    def load(self, video: LabelledVideo, frames: Sequence[int], rng: random.Random
             ) -> Tuple[torch.Tensor, Dict[str, Any]]:
        rgbs = read_frames_at(self.root, video, frames)
        h0, w0 = rgbs[0].shape[:2]
        clip = torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).float().div_(255.0)  # T×3×h×w
        objs = [o for o in video.objects if any(o[t] is not None for t in frames)]
        masks = torch.zeros(len(objs), len(frames), h0, w0, dtype=torch.bool)
        for i, o in enumerate(objs):
            for j, t in enumerate(frames):
                if o[t] is not None:
                    m = rle_utils.decode(cast(dict, o[t]))
                    if m.shape != (h0, w0):
                        m = cv2_resize_nearest(m, (h0, w0))
                    masks[i, j] = torch.from_numpy(m)
        clip, masks = augment(clip, masks, self.cfg, rng)
        target = {"masks": masks, "labels": torch.zeros(len(objs), dtype=torch.long),
                  "video_id": video.id, "frames": list(frames)}
        return clip, target

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, Dict[str, Any]]:
        return self.sample(index)

    def batch(self, indices: Sequence[int]) -> Tuple[torch.Tensor, List[Dict[str, Any]]]:
        return collate_clips([self.sample(i) for i in indices])


def collate_clips(items: Sequence[Tuple[torch.Tensor, Dict[str, Any]]]) -> Tuple[torch.Tensor, List[Dict[str, Any]]]:
    """Samples → ``(B×T×3×H×W clips, [target] * B)`` (targets hold different numbers of objects)."""
    return torch.stack([c for c, _ in items]), [t for _, t in items]


class StepSampler(torch.utils.data.Sampler):
    """The sample indices of steps ``start .. total - 1`` for one rank: step ``s`` gets
    ``(s·world + rank)·batch_size`` and the ``batch_size − 1`` after it."""

    def __init__(self, batch_size: int, start: int, total: int, rank: int = 0, world: int = 1) -> None:
        self.batch_size, self.start, self.total, self.rank, self.world = batch_size, start, total, rank, world

    def __iter__(self) -> Iterator[List[int]]:
        for step in range(self.start, self.total):
            first = (step * self.world + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))

    def __len__(self) -> int:
        return max(0, self.total - self.start)


def _worker_init(_: int) -> None:
    """One thread per data worker: the workers run beside the training process's own threads."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def clip_loader(dataset: ClipDataset, start: int, total: int, *, rank: int = 0, world: int = 1,
                pin_memory: bool = False) -> "torch.utils.data.DataLoader":
    """Batches of steps ``start .. total - 1`` (:class:`StepSampler`), read by ``dataset.cfg.num_workers``
    worker processes (0: in this process) with ``prefetch_factor`` batches each in flight."""
    cfg = dataset.cfg
    workers = int(cfg.num_workers)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=StepSampler(cfg.batch_size, start, total, rank, world), num_workers=workers,
        collate_fn=collate_clips, pin_memory=pin_memory, worker_init_fn=_worker_init if workers else None,
        prefetch_factor=cfg.prefetch_factor if workers else None, persistent_workers=False,
        # fresh worker processes: a fork of a process whose OpenMP / torch thread pools are in use can hang
        multiprocessing_context="spawn" if workers else None,
        # the loader draws its workers' base seed from this generator, not from the global RNG that training
        # draws from (and checkpoints): a resumed run's RNG then continues as the uninterrupted run's
        generator=torch.Generator().manual_seed(0))


def cv2_resize_nearest(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(mask.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST).astype(bool)


def augment(clip: torch.Tensor, masks: torch.Tensor, cfg: DataConfig, rng: random.Random
            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random scale, then crop (or zero-pad where the scaled clip is smaller) to ``cfg.size``, flip,
    brightness/contrast — the same for every frame. Scale 1 = the smallest size covering ``cfg.size``."""
    H, W = cfg.size
    h0, w0 = clip.shape[-2:]
    cover = max(H / h0, W / w0)
    s = cover * rng.uniform(cfg.min_scale, cfg.max_scale)
    nh, nw = max(1, round(h0 * s)), max(1, round(w0 * s))
    clip = F.interpolate(clip, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    n, t = masks.shape[:2]
    if masks.numel():
        mm = F.interpolate(masks.flatten(0, 1)[:, None].float(), size=(nh, nw), mode="bilinear",
                           align_corners=False)
        masks = (mm[:, 0] > 0.5).view(n, t, nh, nw)
    else:
        masks = masks.new_zeros(n, t, nh, nw)
    out_c = clip.new_zeros(clip.shape[0], 3, H, W)
    out_m = masks.new_zeros(n, t, H, W)
    (sy, dy, ly), (sx, dx, lx) = _crop_or_pad(nh, H, rng), _crop_or_pad(nw, W, rng)
    out_c[..., dy:dy + ly, dx:dx + lx] = clip[..., sy:sy + ly, sx:sx + lx]
    out_m[..., dy:dy + ly, dx:dx + lx] = masks[..., sy:sy + ly, sx:sx + lx]
    clip, masks = out_c, out_m
    if cfg.flip and rng.random() < 0.5:
        clip, masks = clip.flip(-1), masks.flip(-1)
    if cfg.brightness > 0:
        clip = clip * rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    if cfg.contrast > 0:
        c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
        mean = clip.mean()
        clip = (clip - mean) * c + mean
    return clip.clamp_(0, 1).contiguous(), masks.contiguous()


def paste_objects(clip: torch.Tensor, masks: torch.Tensor, donor: torch.Tensor, donor_masks: torch.Tensor,
                  scale: Tuple[float, float], rng: random.Random) -> Tuple[torch.Tensor, torch.Tensor]:
    """Video copy-paste: the donor clip's objects that are labelled on every frame, cut out together, resized
    by a factor from ``scale`` and pasted at one random place onto every frame of ``clip`` (their pixels
    replace the clip's, blended over a 1-px halo outside the masks).

    ``clip`` / ``donor``: ``T×3×H×W`` in [0, 1]; ``masks`` / ``donor_masks``: ``N×T×H×W`` bool (empty frames are
    unlabelled). Returns the new clip and masks: the clip's objects lose the pixels the pasted ones cover
    (objects left empty on every frame are dropped), then the pasted objects follow. Nothing is pasted when
    no donor object is labelled on all frames.
    """
    T, _, H, W = clip.shape
    full = donor_masks.flatten(2).any(-1).all(-1) if donor_masks.numel() else torch.zeros(0, dtype=torch.bool)
    if not bool(full.any()):
        return clip, masks
    dm = donor_masks[full]
    union = dm.any(0).any(0)
    ys, xs = torch.nonzero(union, as_tuple=True)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    bh, bw = y1 - y0, x1 - x0
    f = min(rng.uniform(*scale), H / bh, W / bw)
    nh, nw = max(1, int(bh * f)), max(1, int(bw * f))
    crop = F.interpolate(donor[..., y0:y1, x0:x1], size=(nh, nw), mode="bilinear", align_corners=False,
                         antialias=True)
    cm = F.interpolate(dm[..., y0:y1, x0:x1].flatten(0, 1)[:, None].float(), size=(nh, nw), mode="bilinear",
                       align_corners=False)[:, 0].view(dm.shape[0], T, nh, nw) > 0.5
    keep = cm.flatten(2).any(-1).all(-1)  # tiny objects can vanish when shrunk
    if not bool(keep.any()):
        return clip, masks
    cm = cm[keep]
    dy, dx = rng.randint(0, H - nh), rng.randint(0, W - nw)
    pasted = masks.new_zeros(cm.shape[0], T, H, W)
    pasted[..., dy:dy + nh, dx:dx + nw] = cm
    cover = pasted.any(0)  # T×H×W
    alpha = torch.maximum(cover[:, None].float(),  # T×1×H×W: 1 under the masks, a soft 1-px halo around them
                          F.avg_pool2d(cover[:, None].float(), 3, stride=1, padding=1, count_include_pad=False))
    src = clip.clone()
    src[..., dy:dy + nh, dx:dx + nw] = crop
    clip = clip * (1 - alpha) + src * alpha
    masks = masks & ~cover[None]
    masks = masks[masks.flatten(1).any(1)]
    return clip.clamp_(0, 1), torch.cat([masks, pasted], 0)


def _crop_or_pad(n: int, size: int, rng: random.Random) -> Tuple[int, int, int]:
    """(source offset, destination offset, length) of a random crop (n ≥ size) or placement (n < size)."""
    if n >= size:
        return rng.randint(0, n - size), 0, size
    return 0, rng.randint(0, size - n), n
