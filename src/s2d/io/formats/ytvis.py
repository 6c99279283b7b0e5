"""YouTube-VIS JSON: results lists and dataset (ground-truth) dicts, in and out.

Two JSON layouts share the name (SPEC §5):

* **results** — a list of ``{"video_id", "category_id", "segmentations": [RLE|null]*T, "score"}``,
  one record per predicted track; what the official evaluation server and ``ytvoseval.py`` read.
  We also write ``"track_id"`` (the s2d track id) and the track's ``extra`` metadata: the official
  tools ignore unknown keys, and keeping the id makes a results file round-trip exactly.
* **dataset** — ``{"videos": [...], "annotations": [...], "categories": [...]}``; the format of
  the YouTube-VIS ground truth and of the sparse pseudo-labels stage 2 writes.

Masks are COCO RLE with ``counts`` as ``str`` (what pycocotools' JSON round trip expects).
``null`` marks a frame where the object is absent. Every problem with an input file becomes an
:class:`s2d.errors.InputError` with a one-line message naming the file, the video, the record and
the frame, because these files are often hand-edited or produced by other tools.

Track ids: a results record's ``"track_id"`` (else ``"id"``) is used when every record of the
video has one; otherwise tracks are numbered 1..n per video in record order. Dataset annotations
use ``"track_id"`` when present, else 1..n per video: their ``"id"`` is a *dataset-global*
annotation counter and would give ids far above 255, which DAVIS PNGs cannot hold.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeGuard, Union

import numpy as np
from pycocotools import mask as mask_utils

from s2d import rle as rle_utils
from s2d.errors import InputError, ValidationError
from s2d.io.atomic import AtomicTextFile, CommitOnExit, atomic_write_text
from s2d.types import Track, VideoSegmentation

PathLike = Union[str, "os.PathLike[str]"]
Videos = Union[VideoSegmentation, Sequence[VideoSegmentation]]

__all__ = [
    "load_json",
    "from_ytvis",
    "read_ytvis",
    "to_ytvis_results",
    "to_ytvis_dataset",
    "write_ytvis_results",
    "write_ytvis_dataset",
    "YtvisResultsWriter",
]

#: keys of a results record that map onto Track fields (everything else goes to ``Track.extra``)
_RESULT_KEYS = frozenset({"video_id", "category_id", "segmentations", "score"})
#: keys of a dataset annotation that are either Track fields or derived from the masks
_ANNOTATION_KEYS = frozenset({"id", "track_id", "video_id", "category_id", "segmentations", "areas",
                              "bboxes", "iscrowd", "height", "width", "length"})


# --------------------------------------------------------------------------- reading
def load_json(path: PathLike) -> Any:
    """Parse a JSON file, turning every failure into a one-line :class:`InputError`."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file")
    if p.is_dir():
        raise InputError(p, "is a folder, expected a JSON file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(p, f"not UTF-8 text (byte {exc.start}): not a JSON file?") from None
    except OSError as exc:
        raise InputError(p, f"cannot read: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(p, f"malformed JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None


@dataclass
class _VideoInfo:
    """What the dataset's ``videos`` entry says about one video."""

    id: int
    height: int
    width: int
    length: int
    name: Optional[str]
    frame_names: Optional[List[str]]


def _is_int(v: Any) -> TypeGuard[int]:  # numpy integers too (they index and hash as ints)
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _parse_videos(videos: Any, path: Optional[Path]) -> Dict[int, _VideoInfo]:
    if not isinstance(videos, list):
        raise InputError(path, f"'videos' must be a list, got {type(videos).__name__}")
    out: Dict[int, _VideoInfo] = {}
    for i, v in enumerate(videos):
        if not isinstance(v, Mapping):
            raise InputError(path, f"videos[{i}] must be an object, got {type(v).__name__}")
        vid = v.get("id")
        if not _is_int(vid):
            raise InputError(path, f"videos[{i}]: 'id' must be an integer, got {vid!r}")
        if vid in out:
            raise InputError(path, f"videos[{i}]: duplicate video id {vid}")
        for key in ("width", "height"):
            if not _is_int(v.get(key)) or v[key] < 0:
                raise InputError(path, f"video {vid}: '{key}' must be a non-negative integer, got {v.get(key)!r}")
        file_names = v.get("file_names")
        if file_names is not None and (not isinstance(file_names, list)
                                       or not all(isinstance(f, str) for f in file_names)):
            raise InputError(path, f"video {vid}: 'file_names' must be a list of strings")
        length = v.get("length")
        if length is None:
            if file_names is None:
                raise InputError(path, f"video {vid}: needs 'length' or 'file_names'")
            length = len(file_names)
        if not _is_int(length) or length < 0:
            raise InputError(path, f"video {vid}: 'length' must be a non-negative integer, got {length!r}")
        if file_names is not None and len(file_names) != length:
            raise InputError(path, f"video {vid}: 'length' is {length} but there are {len(file_names)} file_names")
        name = v.get("name")
        frame_names = None
        if file_names:
            # The folder of the frames is the video's name in every YouTube-VIS release (which has
            # no 'name' key); keep the whole relative folder so nested names round-trip.
            parent = str(PurePosixPath(file_names[0].replace("\\", "/")).parent)
            if parent not in ("", "."):
                name = parent
            frame_names = [PurePosixPath(f.replace("\\", "/")).stem for f in file_names]
        out[int(vid)] = _VideoInfo(int(vid), int(v["height"]), int(v["width"]), int(length),
                                   None if name is None else str(name), frame_names)
    return out


def _normalize_segmentation(seg: Any, size: Optional[Tuple[int, int]], where: str,
                            path: Optional[Path]) -> Optional[dict]:
    """One entry of ``segmentations`` → compressed RLE with str counts, or ``None``."""
    if seg is None:
        return None
    if isinstance(seg, Mapping):
        try:
            return rle_utils.to_compressed(seg)
        except ValidationError as exc:
            raise InputError(path, f"{where}: {exc}") from None
    if isinstance(seg, list) and size is not None and seg and all(isinstance(p, list) for p in seg):
        # COCO polygons (some converted datasets use them); needs the frame size to rasterise.
        h, w = size
        try:
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        except Exception as exc:  # pycocotools raises bare Exceptions on bad polygons
            raise InputError(path, f"{where}: invalid polygon segmentation: {exc}") from None
        return rle_utils.to_compressed(rle)
    raise InputError(path, f"{where}: segmentation must be an RLE object or null, got {type(seg).__name__}")


def _check_size(rle: dict, video_size: Tuple[int, int], origin: str, where: str, path: Optional[Path]) -> None:
    h, w = rle_utils.size_of(rle)
    if (h, w) != video_size:
        H, W = video_size
        raise InputError(path, f"{where}: RLE size {h}x{w} does not match the video's {H}x{W} "
                               f"(height x width, {origin})")


def _segmentations_of(rec: Mapping[str, Any], where: str, path: Optional[Path]) -> list:
    segs = rec.get("segmentations")
    if not isinstance(segs, list):
        raise InputError(path, f"{where}: 'segmentations' must be a list (one entry per frame), "
                               f"got {type(segs).__name__}")
    return segs


def _category_of(rec: Mapping[str, Any], where: str, path: Optional[Path]) -> int:
    cat = rec.get("category_id", 1)
    if not _is_int(cat):
        raise InputError(path, f"{where}: 'category_id' must be an integer, got {cat!r}")
    return int(cat)


def _make_track(tid: Any, masks: List[Optional[dict]], score: Any, cat: int, extra: Dict[str, Any],
                where: str, path: Optional[Path]) -> Track:
    try:
        return Track(tid, masks, score, cat, extra)
    except ValidationError as exc:
        raise InputError(path, f"{where}: {exc}") from None


def _assign_ids(records: List[Tuple[int, Mapping[str, Any]]], keys: Sequence[str], vid: int,
                path: Optional[Path]) -> Tuple[List[int], Optional[str]]:
    """Track ids of one video's records: from the first key all records carry, else 1..n."""
    for key in keys:
        if records and all(key in rec for _, rec in records):
            ids: List[int] = []
            first: Dict[int, int] = {}
            for i, rec in records:
                tid = rec[key]
                if not _is_int(tid) or tid < 1:
                    raise InputError(path, f"video {vid}, record {i}: '{key}' must be a positive integer, got {tid!r}")
                if tid in first:
                    raise InputError(path, f"video {vid}: duplicate {key} {tid} (records {first[tid]} and {i})")
                first[int(tid)] = i
                ids.append(int(tid))
            return ids, key
    return list(range(1, len(records) + 1)), None


def _from_dataset(data: Mapping[str, Any], path: Optional[Path]) -> List[VideoSegmentation]:
    infos = _parse_videos(data["videos"], path)
    anns = data.get("annotations") or []  # test-split files carry no annotations
    if not isinstance(anns, list):
        raise InputError(path, f"'annotations' must be a list, got {type(anns).__name__}")
    per_video: Dict[int, List[Tuple[int, Mapping[str, Any]]]] = {vid: [] for vid in infos}
    for i, ann in enumerate(anns):
        if not isinstance(ann, Mapping):
            raise InputError(path, f"annotations[{i}] must be an object, got {type(ann).__name__}")
        vid = ann.get("video_id")
        if not _is_int(vid) or vid not in infos:
            raise InputError(path, f"annotation {i}: video_id {vid!r} is not in 'videos'")
        per_video[vid].append((i, ann))
    out = []
    for vid, info in infos.items():
        records = per_video[vid]
        ids, id_key = _assign_ids(records, ("track_id",), vid, path)
        tracks = []
        for tid, (i, ann) in zip(ids, records):
            where = f"video {vid}, record {i}"
            segs = _segmentations_of(ann, where, path)
            if len(segs) != info.length:
                raise InputError(path, f"{where}: {len(segs)} segmentations but the video has {info.length} frames")
            masks = []
            for t, seg in enumerate(segs):
                rle = _normalize_segmentation(seg, (info.height, info.width), f"{where}, frame {t}", path)
                if rle is not None:
                    _check_size(rle, (info.height, info.width), "from 'videos'", f"{where}, frame {t}", path)
                masks.append(rle)
            extra = {k: v for k, v in ann.items() if k not in _ANNOTATION_KEYS}
            if ann.get("iscrowd"):
                extra["iscrowd"] = ann["iscrowd"]
            tracks.append(_make_track(tid, masks, 1.0, _category_of(ann, where, path), extra, where, path))
        out.append(_video(info.height, info.width, info.length, tracks, info.name, vid, info.frame_names, path))
    return out


def _video(h: int, w: int, T: int, tracks: List[Track], name: Optional[str], vid: int,
           frame_names: Optional[List[str]], path: Optional[Path]) -> VideoSegmentation:
    try:
        return VideoSegmentation(h, w, T, tracks, name=name, video_id=vid, frame_names=frame_names)
    except ValidationError as exc:
        raise InputError(path, f"video {vid}: {exc}") from None


def _from_results(data: List[Any], path: Optional[Path], videos_info: Optional[Mapping[str, Any]],
                  info_path: Optional[Path]) -> List[VideoSegmentation]:
    infos = None
    if videos_info is not None:
        if not isinstance(videos_info, Mapping) or "videos" not in videos_info:
            raise InputError(info_path, "videos_info must be a YouTube-VIS dataset with a 'videos' list")
        infos = _parse_videos(videos_info["videos"], info_path)
    per_video: Dict[int, List[Tuple[int, Mapping[str, Any]]]] = {}
    for i, rec in enumerate(data):
        if not isinstance(rec, Mapping):
            raise InputError(path, f"record {i} must be an object, got {type(rec).__name__}")
        vid = rec.get("video_id")
        if not _is_int(vid):
            raise InputError(path, f"record {i}: 'video_id' must be an integer, got {vid!r}")
        if infos is not None and vid not in infos:
            raise InputError(path, f"record {i}: video_id {vid} is not in the dataset's 'videos'")
        per_video.setdefault(int(vid), []).append((i, rec))

    out = []
    for vid, records in per_video.items():
        info = infos[vid] if infos is not None else None
        # Frame count and size: from the dataset when given, else from the first record (length)
        # and the first non-null RLE (size) of this video.
        if info is not None:
            T, size, t_origin, s_origin = info.length, (info.height, info.width), "the dataset", "from the dataset"
        else:
            i0, rec0 = records[0]
            T = len(_segmentations_of(rec0, f"video {vid}, record {i0}", path))
            t_origin, size, s_origin = f"record {i0}", None, ""
        ids, id_key = _assign_ids(records, ("track_id", "id"), vid, path)
        tracks = []
        for tid, (i, rec) in zip(ids, records):
            where = f"video {vid}, record {i}"
            segs = _segmentations_of(rec, where, path)
            if len(segs) != T:
                raise InputError(path, f"{where}: {len(segs)} segmentations but the video has {T} frames "
                                       f"(from {t_origin})")
            masks = []
            for t, seg in enumerate(segs):
                rle = _normalize_segmentation(seg, size, f"{where}, frame {t}", path)
                if rle is not None:
                    if size is None:
                        size, s_origin = rle_utils.size_of(rle), f"from record {i}, frame {t}"
                    _check_size(rle, size, s_origin, f"{where}, frame {t}", path)
                masks.append(rle)
            score = rec.get("score", 1.0)
            extra = {k: v for k, v in rec.items() if k not in _RESULT_KEYS and k != id_key}
            tracks.append(_make_track(tid, masks, score, _category_of(rec, where, path), extra, where, path))
        if size is None:
            raise InputError(path, f"video {vid}: every segmentation is null, so the frame size is unknown; "
                                   f"pass videos_info (the YouTube-VIS dataset JSON)")
        out.append(_video(size[0], size[1], T, tracks, info.name if info else None, vid,
                          info.frame_names if info else None, path))
    return out


def from_ytvis(data_or_path: Union[PathLike, Mapping[str, Any], List[Any]], *,
               videos_info: Union[PathLike, Mapping[str, Any], None] = None) -> List[VideoSegmentation]:
    """Videos of a YouTube-VIS results list or dataset dict (or a JSON file holding either).

    * dataset → one :class:`VideoSegmentation` per entry of ``videos`` (in file order, also videos
      without annotations), tracks from the annotations with score 1.0; the video name is the
      folder of its first file name (else ``name``), frame names are the file-name stems.
    * results → one video per ``video_id`` (in order of first appearance), tracks in record
      order. Results carry no frame size, so it comes from the RLE ``size`` fields, or from
      ``videos_info`` (the dataset dict or its path) which also supplies names, frame names and
      lengths and is required when all of a video's segmentations are null.

    Raises :class:`InputError` (one line, naming the file) on anything malformed.
    """
    path = Path(data_or_path) if isinstance(data_or_path, (str, os.PathLike)) else None
    data = load_json(path) if path is not None else data_or_path
    info_path = Path(videos_info) if isinstance(videos_info, (str, os.PathLike)) else None
    if info_path is not None:
        videos_info = load_json(info_path)
    if isinstance(data, list):
        return _from_results(data, path, videos_info, info_path)  # type: ignore[arg-type]
    if isinstance(data, Mapping) and "videos" in data and ("annotations" in data or "categories" in data):
        return _from_dataset(data, path)
    raise InputError(path, "not YouTube-VIS JSON: expected a results list or a dataset object with "
                           "'videos' and 'annotations'")


def read_ytvis(path: PathLike, *, videos_info: Union[PathLike, Mapping[str, Any], None] = None
               ) -> List[VideoSegmentation]:
    """Read a YouTube-VIS JSON file; results or dataset is detected from its structure.

    A list is a results file; an object with ``videos`` and ``annotations`` (or, for test-split
    files without annotations, ``categories``) is a dataset; anything else is an InputError.
    """
    return from_ytvis(Path(path), videos_info=videos_info)


# --------------------------------------------------------------------------- writing
def _as_list(videos: Union[Videos, Iterable[VideoSegmentation]]) -> List[VideoSegmentation]:
    if isinstance(videos, VideoSegmentation):
        return [videos]
    out = list(videos)
    for v in out:
        if not isinstance(v, VideoSegmentation):
            raise ValidationError(f"expected VideoSegmentation objects, got {type(v).__name__}")
    return out


def _video_ids(videos: List[VideoSegmentation], video_ids: Optional[Sequence[int]]) -> List[int]:
    """Explicit ids, else each video's ``video_id``, else the smallest unused positive integers."""
    if video_ids is not None:
        ids = [int(v) for v in video_ids]
        if len(ids) != len(videos):
            raise ValidationError(f"{len(ids)} video_ids for {len(videos)} videos")
    else:
        taken = {int(v.video_id) for v in videos if v.video_id is not None}
        ids, nxt = [], 1
        for v in videos:
            if v.video_id is not None:
                ids.append(int(v.video_id))
                continue
            while nxt in taken:
                nxt += 1
            taken.add(nxt)
            ids.append(nxt)
    if len(set(ids)) != len(ids):
        raise ValidationError(f"duplicate video ids {ids}")
    return ids


def _rle_json(m: Optional[dict]) -> Optional[dict]:
    if m is None:
        return None
    counts = m["counts"].decode("ascii") if isinstance(m["counts"], bytes) else str(m["counts"])
    return {"size": [int(m["size"][0]), int(m["size"][1])], "counts": counts}


def to_ytvis_results(videos: Union[Videos, Iterable[VideoSegmentation]],
                     video_ids: Optional[Sequence[int]] = None) -> List[dict]:
    """YouTube-VIS results records: one per track, ``segmentations`` null where absent.

    ``video_ids`` (parallel to ``videos``) overrides each video's ``video_id``; videos without
    one get the smallest unused positive integers. Each record also carries ``track_id`` and the
    track's ``extra`` keys (never overriding the standard keys).
    """
    vids = _as_list(videos)
    out = []
    for v, vid in zip(vids, _video_ids(vids, video_ids)):
        for tr in v.tracks:
            rec = {"video_id": vid, "category_id": tr.category_id,
                   "segmentations": [_rle_json(m) for m in tr.masks], "score": tr.score, "track_id": tr.id}
            for k, val in tr.extra.items():
                rec.setdefault(k, val)
            out.append(rec)
    return out


def _default_categories(videos: List[VideoSegmentation]) -> List[dict]:
    cats = sorted({tr.category_id for v in videos for tr in v.tracks} | {1})
    return [{"id": c, "name": "object" if c == 1 else f"class_{c}", "supercategory": "object"} for c in cats]


def to_ytvis_dataset(videos: Union[Videos, Iterable[VideoSegmentation]],
                     categories: Optional[Sequence[Mapping[str, Any]]] = None) -> dict:
    """A YouTube-VIS dataset dict (the ground-truth layout) of ``videos``.

    ``file_names`` are ``"<name>/<frame_name>.jpg"`` (the layout of YouTube-VIS JPEG folders);
    ``areas`` and ``bboxes`` are computed from the RLEs (null where absent, ``0`` and
    ``[0, 0, 0, 0]`` for a present but empty mask). Annotation ids run 1..N over the file and
    ``track_id`` keeps the s2d id. ``categories`` defaults to one class-agnostic ``object``
    category (plus any other category id the tracks use).
    """
    vids = _as_list(videos)
    ids = _video_ids(vids, None)
    if categories is None:
        cats = _default_categories(vids)
    else:
        cats = [dict(c) for c in categories]
        known = {c.get("id") for c in cats}
        missing = sorted({tr.category_id for v in vids for tr in v.tracks} - known)
        if missing:
            raise ValidationError(f"category ids {missing} used by tracks are not in 'categories'")
    videos_out: List[Dict[str, Any]] = []
    anns: List[Dict[str, Any]] = []
    for v, vid in zip(vids, ids):
        name = v.name or f"video_{vid}"
        videos_out.append({"id": vid, "name": name, "width": v.width, "height": v.height, "length": v.num_frames,
                           "file_names": [f"{name}/{v.frame_name(t)}.jpg" for t in range(v.num_frames)]})
        for tr in v.tracks:
            areas: List[Optional[int]] = []
            bboxes: List[Optional[List[float]]] = []
            for m in tr.masks:
                if m is None:
                    areas.append(None)
                    bboxes.append(None)
                    continue
                a = rle_utils.area(m)
                box = rle_utils.bbox(m) if a else None
                areas.append(a)
                bboxes.append([0.0, 0.0, 0.0, 0.0] if box is None else [float(x) for x in box])
            extra = dict(tr.extra)
            iscrowd = int(extra.pop("iscrowd", 0) or 0)
            ann = {"id": len(anns) + 1, "video_id": vid, "category_id": tr.category_id,
                   "segmentations": [_rle_json(m) for m in tr.masks], "areas": areas, "bboxes": bboxes,
                   "iscrowd": iscrowd, "height": v.height, "width": v.width, "track_id": tr.id}
            for k, val in extra.items():
                ann.setdefault(k, val)
            anns.append(ann)
    from s2d import __version__
    return {"info": {"description": "written by s2d", "version": __version__}, "licenses": [],
            "videos": videos_out, "annotations": anns, "categories": cats}


def _json_default(obj: Any) -> Any:
    """Let numpy scalars/arrays in ``Track.extra`` serialise instead of failing mid-write."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=_json_default)


class YtvisResultsWriter(CommitOnExit):
    """The one YouTube-VIS results writer: records are streamed to a temp file one at a time (no whole-file
    string in memory) and the file appears under ``path`` only on :meth:`close`; :meth:`abort` (or leaving
    the ``with`` block by an exception) leaves ``path`` as it was.

    Records are written as given (key order kept), compact, one per line; ``segmentations`` may hold RLE
    dicts (``counts`` as ``str`` or ``bytes``) and ``None``::

        with YtvisResultsWriter("results.json") as w:
            w.write({"video_id": 1, "category_id": 1, "track_id": 1, "score": 0.9, "segmentations": segs})
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.records_written = 0
        self._out = AtomicTextFile(self.path)
        self._out.write("[")

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one results record (one track of one video)."""
        if self._out.closed:
            raise ValidationError("YtvisResultsWriter is closed")
        rec = dict(record)
        if "segmentations" in rec:
            rec["segmentations"] = [_rle_json(m) for m in rec["segmentations"]]
        self._out.write(("," if self.records_written else "") + "\n" + _dump(rec))
        self.records_written += 1

    def close(self) -> Path:
        """Finish the file and move it to its final name (idempotent)."""
        if not self._out.closed:
            self._out.write("\n]\n")
        return self._out.close()

    def abort(self) -> None:
        """Drop everything written so far; ``path`` is left as it was."""
        self._out.abort()


def write_ytvis_results(path: PathLike, videos: Union[Videos, Iterable[VideoSegmentation]],
                        video_ids: Optional[Sequence[int]] = None) -> Path:
    """Write :func:`to_ytvis_results` records with :class:`YtvisResultsWriter`; returns the path."""
    with YtvisResultsWriter(path) as writer:
        for record in to_ytvis_results(videos, video_ids):
            writer.write(record)
    return writer.path


def write_ytvis_dataset(path: PathLike, videos: Union[Videos, Iterable[VideoSegmentation]],
                        categories: Optional[Sequence[Mapping[str, Any]]] = None,
                        video_fields: Optional[Sequence[Mapping[str, Any]]] = None) -> Path:
    """Write :func:`to_ytvis_dataset` JSON atomically (temp file + rename); returns the path.

    ``video_fields``: per video, keys that replace or extend its record (e.g. ``source``/``file_names``
    that make the dataset a labelset ``s2d train`` reads)."""
    data = to_ytvis_dataset(videos, categories)
    for rec, extra in zip(data["videos"], video_fields or ()):
        rec.update(extra)
    return atomic_write_text(path, _dump(data))
