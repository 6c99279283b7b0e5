"""FiftyOne video datasets: per-frame instance masks with track ids, through FiftyOne's own Python API.

FiftyOne (https://docs.voxel51.com) is optional: ``pip install 's2d[fiftyone]'``; without it these functions
raise a one-line :class:`s2d.errors.S2DError`. It is imported when a function runs, never at import time.

Layout (FiftyOne's conventions for video instance segmentation):

* one ``fo.Sample`` per video (``filepath`` = the source video; ``metadata`` = ``fo.VideoMetadata`` with the
  frame size, count and rate), and on frame ``t + 1`` (FiftyOne numbers frames from 1) a field
  ``detections`` (``fo.Detections``) holding one ``fo.Detection`` per object present on frame ``t``;
* a detection's ``bounding_box`` is ``[x, y, w, h]`` relative to the frame size (the mask's tight box),
  ``mask`` is the boolean mask inside that box, ``index`` is the s2d track id (FiftyOne's field for an
  object's identity across frames), ``confidence`` the track's score and ``label`` its category name.

:func:`read_fiftyone` reads such datasets (and any with box-relative instance masks) back; a mask whose
shape differs from its box in pixels is resized with nearest neighbour, as FiftyOne draws it. Datasets live
in FiftyOne's database (MongoDB), which FiftyOne starts itself, or which ``database_uri`` names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from s2d.errors import InputError, S2DError
from s2d.types import FrameResult, VideoSegmentation

if TYPE_CHECKING:
    import fiftyone as fo

PathLike = Union[str, "os.PathLike[str]"]
RelBox = Tuple[float, float, float, float]

__all__ = ["write_fiftyone", "read_fiftyone", "frame_detections", "detections_to_frame", "mask_to_box_crop",
           "box_crop_to_mask", "require_fiftyone"]

FIELD = "detections"


def require_fiftyone() -> Any:
    """The ``fiftyone`` module, or a one-line :class:`S2DError` saying how to install it."""
    try:
        import fiftyone
    except ImportError:
        raise S2DError("FiftyOne export needs the fiftyone package: pip install 's2d[fiftyone]'") from None
    return fiftyone


# --------------------------------------------------------------------------- geometry
def mask_to_box_crop(mask: np.ndarray) -> Optional[Tuple[RelBox, np.ndarray]]:
    """``(relative [x, y, w, h], boolean crop)`` of a full-frame mask's tight box; ``None`` when empty."""
    m = np.asarray(mask, dtype=bool)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return None
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    H, W = m.shape
    return (x0 / W, y0 / H, (x1 - x0) / W, (y1 - y0) / H), m[y0:y1, x0:x1].copy()


def box_crop_to_mask(box: Sequence[float], crop: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """The full-frame boolean mask of a relative box and the mask inside it (inverse of :func:`mask_to_box_crop`)."""
    import cv2

    H, W = size
    x0, y0 = int(round(box[0] * W)), int(round(box[1] * H))
    x1, y1 = int(round((box[0] + box[2]) * W)), int(round((box[1] + box[3]) * H))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    out = np.zeros((H, W), dtype=bool)
    if x1 <= x0 or y1 <= y0:
        return out
    c = np.asarray(crop).astype(bool)
    if c.shape != (y1 - y0, x1 - x0):
        c = cv2.resize(c.astype(np.uint8), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST).astype(bool)
    out[y0:y1, x0:x1] = c
    return out


# --------------------------------------------------------------------------- writing
def _label_names(video: VideoSegmentation) -> Dict[int, str]:
    return {tr.category_id: ("object" if tr.category_id == 1 else f"class_{tr.category_id}") for tr in video.tracks}


def frame_detections(video: VideoSegmentation) -> Iterator[Tuple[int, List["fo.Detection"]]]:
    """``(frame number from 1, [fo.Detection])`` for each frame with objects (empty masks are left out)."""
    fo = require_fiftyone()
    names = _label_names(video)
    for t in range(video.num_frames):
        dets = []
        for tr in video.tracks:
            mask = tr.mask(t)
            bc = None if mask is None else mask_to_box_crop(mask)
            if bc is None:
                continue
            dets.append(fo.Detection(label=names[tr.category_id], bounding_box=list(bc[0]), mask=bc[1],
                                     index=tr.id, confidence=tr.score))
        if dets:
            yield t + 1, dets


def _sample(video: VideoSegmentation, source: PathLike) -> "fo.Sample":
    fo = require_fiftyone()
    sample = fo.Sample(filepath=str(Path(source).resolve()))
    sample["metadata"] = fo.VideoMetadata(frame_width=video.width, frame_height=video.height,
                                          total_frame_count=video.num_frames, frame_rate=video.fps)
    if video.name:
        sample["s2d_name"] = video.name
    for number, dets in frame_detections(video):
        sample.frames[number][FIELD] = fo.Detections(detections=dets)
    return sample


def write_fiftyone(name: str, videos: Sequence[Tuple[VideoSegmentation, PathLike]], *,
                   overwrite: bool = True, persistent: bool = True) -> "fo.Dataset":
    """Create the FiftyOne video dataset ``name`` with one sample per ``(result, source video)``; returns it.

    ``overwrite`` replaces a dataset of that name; ``persistent`` keeps it after the process ends (what
    ``fiftyone app launch NAME`` needs).
    """
    fo = require_fiftyone()
    for _, source in videos:
        if not Path(source).is_file():
            raise InputError(source, "no such video file (a FiftyOne video sample needs the video)")
    samples = [_sample(v, src) for v, src in videos]
    dataset = fo.Dataset(name, overwrite=overwrite)
    dataset.persistent = persistent
    dataset.add_samples(samples)
    return dataset


# --------------------------------------------------------------------------- reading
def _frame_size(sample: Any) -> Tuple[int, int]:
    meta = sample["metadata"] if sample.has_field("metadata") else None
    if meta is not None and getattr(meta, "frame_height", None) and getattr(meta, "frame_width", None):
        return int(meta.frame_height), int(meta.frame_width)
    from s2d.io.video import probe_video

    info = probe_video(sample.filepath)
    return info.orig_height, info.orig_width


def _frame_count(sample: Any, last: int) -> int:
    meta = sample["metadata"] if sample.has_field("metadata") else None
    total = getattr(meta, "total_frame_count", None) if meta is not None else None
    return max(int(total), last) if total else last


def detections_to_frame(index: int, detections: Sequence[Any], size: Tuple[int, int],
                        categories: Dict[str, int]) -> FrameResult:
    """The :class:`FrameResult` of one frame's ``fo.Detection`` list (``index`` is 0-based)."""
    masks, ids, scores, cats = [], [], [], []
    for det in detections:
        if det.index is None or det.mask is None:
            raise InputError(None, f"frame {index + 1}: a detection without index or mask; s2d reads instance "
                                   f"masks with track ids (fo.Detection mask and index)")
        masks.append(box_crop_to_mask(det.bounding_box, det.mask, size))
        ids.append(int(det.index))
        scores.append(1.0 if det.confidence is None else float(det.confidence))
        cats.append(categories.setdefault(str(det.label), len(categories) + 1))
    if not masks:
        return FrameResult.empty(index, size[0], size[1])
    return FrameResult(index, np.stack(masks), np.asarray(ids), np.asarray(scores), np.asarray(cats))


def _video_of(sample: Any, field: str) -> VideoSegmentation:
    size = _frame_size(sample)
    categories: Dict[str, int] = {"object": 1}
    frames = []
    last = 0
    for number, frame in sample.frames.items():
        dets = frame[field] if frame.has_field(field) and frame[field] is not None else None
        if dets is not None and dets.detections:
            frames.append(detections_to_frame(number - 1, dets.detections, size, categories))
            last = max(last, number)
    name = sample["s2d_name"] if sample.has_field("s2d_name") else Path(sample.filepath).stem
    return VideoSegmentation.from_frames(frames, size[0], size[1], num_frames=_frame_count(sample, last), name=name)


def read_fiftyone(dataset: Union[str, "fo.Dataset"], *, field: str = FIELD) -> List[VideoSegmentation]:
    """One :class:`VideoSegmentation` per sample of a FiftyOne video dataset (a name or the dataset).

    A track's score is the mean of its detections' confidences.
    """
    fo = require_fiftyone()
    if isinstance(dataset, str):
        if not fo.dataset_exists(dataset):
            raise InputError(None, f"no FiftyOne dataset named {dataset!r}")
        dataset = fo.load_dataset(dataset)
    return [_video_of(sample, field) for sample in dataset]
