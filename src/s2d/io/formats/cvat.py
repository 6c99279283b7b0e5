"""CVAT for video 1.1 XML: tracks of per-frame masks, written for hand correction in CVAT and read back.

What this follows (CVAT's "XML annotation format" page, version 1.1, section *Interpolation* —
https://docs.cvat.ai/docs/other/xml_format/ — and CVAT's own reader and writer,
``cvat/apps/dataset_manager/formats/cvat.py``, ``dump_as_cvat_interpolation`` and ``load_anno``):

* The file is ``<annotations><version>1.1</version><meta><task>…</task></meta><track …>…</track>…``. The
  task's ``<size>`` is the frame count, ``<mode>`` is ``interpolation`` (a video task) and ``<original_size>``
  holds the frame width and height. One ``<label>`` (default ``object``, ``<type>mask</type>``) declares the
  two attributes this module writes on every mask: ``track_id`` (the s2d object id) and ``score``.
* A mask is ``<mask frame outside occluded keyframe rle left top width height z_order>``. ``rle`` runs over
  the mask's bounding box ``left, top, width, height`` (pixels, the box inclusive of its last row and
  column) in row-major order, as comma-separated counts that alternate background/foreground and start
  with background (``0`` when the box's first pixel is foreground) — the encoding of the page's example
  ``rle="3, 5, 7, …"``, and how CVAT's writer prints its mask points (``"3, 5, 7"``).
* ``outside="1"`` on a frame means the object has left the picture from that frame on.

**Layout.** CVAT's importer (``load_anno``) turns a ``<track>`` of masks into a single mask *shape* made of the
track's first keyframe ("mask track are not supported"), so a per-object track with a mask on every frame
would lose every frame but the first on import. The default layout, ``"shapes"``, is therefore the one CVAT
itself exports masks in: every mask of an object on a frame is its own one-frame ``<track>`` (a keyframe on
its frame and an ``outside`` copy on the next frame, when there is one), and the object's identity is the
``track_id`` attribute, which CVAT keeps on import and export when the task's label declares it (create the
task with a label ``object`` that has a text attribute ``track_id``, and ``score`` if wanted; attributes
the label does not declare are dropped). ``layout="tracks"`` writes one ``<track>`` per object with a mask
on every frame it is present (the structure the format page describes) for tools that read mask tracks.

:func:`read_cvat` reads both, and CVAT's own exports: masks and polygons (rasterised as COCO polygons);
``outside`` masks are absences; a shape's object is its ``track_id`` attribute, else its ``<track>``; two
masks of one object on one frame are merged (a hand-drawn second piece). Labels map to category ids in the
order ``<meta>`` lists them (1 = the first). A present but empty mask cannot be written (it has no box):
it reads back as absent, as in DAVIS PNGs.
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from pycocotools import mask as mask_utils

from s2d import rle as rle_utils
from s2d.errors import InputError, ValidationError
from s2d.io.atomic import AtomicTextFile, CommitOnExit
from s2d.types import FrameResult, Track, VideoSegmentation

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["CvatWriter", "write_cvat", "read_cvat", "mask_to_cvat_rle", "cvat_rle_to_mask", "LAYOUTS"]

#: ``shapes``: one one-frame ``<track>`` per object and frame (what CVAT imports); ``tracks``: one per object
LAYOUTS = ("shapes", "tracks")
_SHAPE_TAGS = ("mask", "polygon")
_OTHER_SHAPES = ("box", "polyline", "points", "ellipse", "cuboid", "skeleton", "tag")

CvatRle = Tuple[List[int], int, int, int, int]  # counts, left, top, width, height


# --------------------------------------------------------------------------- RLE
def mask_to_cvat_rle(mask: np.ndarray) -> Optional[CvatRle]:
    """``(counts, left, top, width, height)`` of a boolean ``H×W`` mask, or ``None`` when it is empty.

    Counts run row by row over the mask's bounding box, alternating background and foreground,
    background first (a leading ``0`` when the box's first pixel is foreground).
    """
    m = np.asarray(mask, dtype=bool)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return None
    top, left = int(rows[0]), int(cols[0])
    crop = m[top:int(rows[-1]) + 1, left:int(cols[-1]) + 1]
    flat = crop.ravel()
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return counts, left, top, int(crop.shape[1]), int(crop.shape[0])


def cvat_rle_to_mask(counts: Sequence[int], left: int, top: int, width: int, height: int,
                     frame_size: Tuple[int, int]) -> np.ndarray:
    """The boolean ``H×W`` frame mask of a CVAT mask (inverse of :func:`mask_to_cvat_rle`).

    Raises :class:`ValidationError` when the box leaves the frame or the counts overrun the box; counts
    that stop short of the box's end leave the rest background.
    """
    H, W = frame_size
    if width < 1 or height < 1 or left < 0 or top < 0 or left + width > W or top + height > H:
        raise ValidationError(f"mask box left={left} top={top} width={width} height={height} "
                              f"is not inside the {W}x{H} frame")
    runs = np.asarray(counts, dtype=np.int64)
    if (runs < 0).any():
        raise ValidationError("mask rle has a negative count")
    total = int(runs.sum())
    if total > width * height:
        raise ValidationError(f"mask rle counts sum to {total}, more than the box's {width}x{height}={width * height}")
    values = (np.arange(runs.size) % 2).astype(bool)
    flat = np.zeros(width * height, dtype=bool)
    flat[:total] = np.repeat(values, runs)
    out = np.zeros((H, W), dtype=bool)
    out[top:top + height, left:left + width] = flat.reshape(height, width)
    return out


# --------------------------------------------------------------------------- writing
def _meta_xml(name: str, size: int, height: int, width: int, labels: Sequence[str]) -> str:
    """The ``<meta>`` block of a video task (CVAT 1.1) with the mask labels and their two attributes."""
    now = _dt.datetime.now(_dt.timezone.utc).isoformat()
    attrs = "".join(
        f"<attribute><name>{a}</name><mutable>False</mutable><input_type>text</input_type>"
        f"<default_value></default_value><values></values></attribute>" for a in ("track_id", "score"))
    label_xml = "".join(f"\n        <label><name>{escape(lab)}</name><type>mask</type><attributes>{attrs}"
                        f"</attributes></label>" for lab in labels)
    return (f"  <meta>\n    <task>\n      <id>0</id>\n      <name>{escape(name)}</name>\n      <size>{size}</size>\n"
            f"      <mode>interpolation</mode>\n      <overlap>0</overlap>\n      <bugtracker></bugtracker>\n"
            f"      <flipped>False</flipped>\n      <created>{now}</created>\n      <updated>{now}</updated>\n"
            f"      <labels>{label_xml}\n      </labels>\n"
            f"      <segments><segment><id>0</id><start>0</start><stop>{max(size - 1, 0)}</stop><url></url>"
            f"</segment></segments>\n"
            f"      <owner><username>s2d</username><email></email></owner>\n"
            f"      <original_size><width>{width}</width><height>{height}</height></original_size>\n"
            f"    </task>\n    <dumped>{now}</dumped>\n  </meta>\n")


def _mask_xml(frame: int, rle: CvatRle, *, outside: bool, z_order: int, track_id: int, score: float) -> str:
    counts, left, top, width, height = rle
    return (f'    <mask frame="{frame}" keyframe="1" outside="{int(outside)}" occluded="0" '
            f'rle="{", ".join(map(str, counts))}" left="{left}" top="{top}" width="{width}" height="{height}" '
            f'z_order="{z_order}">\n'
            f'      <attribute name="track_id">{track_id}</attribute>\n'
            f'      <attribute name="score">{score:.6g}</attribute>\n    </mask>\n')


def _track_xml(index: int, label: str, masks: Iterable[str]) -> str:
    return f'  <track id="{index}" label={quoteattr(label)} source="auto">\n{"".join(masks)}  </track>\n'


def _z_orders(frame: FrameResult) -> Dict[int, int]:
    """z_order of each id on a frame: the rank of its score (higher score on top, as ``label_map``)."""
    order = sorted(range(len(frame)), key=lambda i: (frame.scores[i], -frame.ids[i]))
    return {int(frame.ids[i]): z for z, i in enumerate(order)}


class CvatWriter(CommitOnExit):
    """Stream :class:`FrameResult` objects into one CVAT-for-video XML file (``"shapes"`` layout), atomically.

    The ``<meta>`` block needs the frame count, which a stream only knows at its end, so the tracks go to
    a temporary spool file and :meth:`close` writes header, meta and tracks to a hidden temp file beside
    ``path`` and renames it; :meth:`abort` (or an exception in the ``with`` block) leaves ``path`` as it was.
    Memory holds one frame; each mask's ``outside`` copy is written when the next frame arrives.

    Args:
        path: the XML file.
        height, width: frame size.
        name: the task name (the video's name).
        num_frames: the frame count when known (else the last frame written + 1).
        labels: label names; a frame's ``category_ids`` pick from them (1 = the first).
        track_scores: each id's score (default: its score on the frame).
    """

    def __init__(self, path: PathLike, height: int, width: int, *, name: str = "video",
                 num_frames: Optional[int] = None, labels: Sequence[str] = ("object",),
                 track_scores: Optional[Dict[int, float]] = None) -> None:
        if not labels:
            raise ValidationError("CVAT export needs at least one label name")
        self.path = Path(path)
        self.size = (int(height), int(width))
        self.name, self.num_frames, self.labels = str(name), num_frames, [str(x) for x in labels]
        self.track_scores = dict(track_scores or {})
        self.tracks_written = 0
        self._spool: Optional[IO[str]] = tempfile.TemporaryFile("w+", encoding="utf-8")
        self._pending: List[Tuple[int, str, CvatRle, int, int, float]] = []  # frame, label, rle, z, id, score
        self._last_index = -1

    def _label(self, category_id: int) -> str:
        if not 1 <= category_id <= len(self.labels):
            raise ValidationError(f"category_id {category_id} has no label (labels: {self.labels})")
        return self.labels[category_id - 1]

    def _flush(self, next_frame_exists: bool) -> None:
        assert self._spool is not None
        for frame, label, rle, z, tid, score in self._pending:
            masks = [_mask_xml(frame, rle, outside=False, z_order=z, track_id=tid, score=score)]
            if next_frame_exists:
                masks.append(_mask_xml(frame + 1, rle, outside=True, z_order=z, track_id=tid, score=score))
            self._spool.write(_track_xml(self.tracks_written, label, masks))
            self.tracks_written += 1
        self._pending = []

    def write(self, frame: FrameResult) -> None:
        """Add one frame's objects (frames in increasing order)."""
        if self._spool is None:
            raise ValidationError("CvatWriter is closed")
        if not isinstance(frame, FrameResult):
            raise ValidationError(f"expected a FrameResult, got {type(frame).__name__}")
        if frame.index <= self._last_index:
            raise ValidationError(f"frames must come in increasing order, got {frame.index} after {self._last_index}")
        if (frame.height, frame.width) != self.size:
            raise ValidationError(f"frame {frame.index}: size {(frame.height, frame.width)} != {self.size}")
        self._flush(next_frame_exists=True)  # a later frame: the one after the pending frame exists
        self._last_index = frame.index
        z = _z_orders(frame)
        assert frame.category_ids is not None  # FrameResult.__post_init__ sets it
        for i, tid in enumerate(frame.ids.tolist()):
            rle = mask_to_cvat_rle(frame.masks[i])
            if rle is None:
                continue  # an empty mask has no box
            score = self.track_scores.get(tid, float(frame.scores[i]))
            self._pending.append((frame.index, self._label(int(frame.category_ids[i])), rle, z[tid], tid, score))

    def close(self) -> Path:
        """Write the file under its name (idempotent)."""
        if self._spool is None:
            return self.path
        T = self._last_index + 1 if self.num_frames is None else int(self.num_frames)
        if self._last_index >= T:
            raise ValidationError(f"got frame {self._last_index} but num_frames is {T}")
        self._flush(next_frame_exists=bool(self._pending) and self._pending[0][0] + 1 < T)
        spool, self._spool = self._spool, None
        with spool, AtomicTextFile(self.path) as out:
            out.write('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n')
            out.write(_meta_xml(self.name, T, self.size[0], self.size[1], self.labels))
            spool.seek(0)
            for chunk in iter(lambda: spool.read(1 << 20), ""):
                out.write(chunk)
            out.write("</annotations>\n")
        return self.path

    def abort(self) -> None:
        """Drop everything; ``path`` is left as it was."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def _labels_of(video: VideoSegmentation, labels: Optional[Sequence[str]]) -> List[str]:
    if labels is not None:
        return [str(x) for x in labels]
    top = max([tr.category_id for tr in video.tracks] + [1])
    return ["object"] + [f"class_{c}" for c in range(2, top + 1)]


def _object_tracks_xml(video: VideoSegmentation, labels: List[str]) -> Iterator[str]:
    """``layout="tracks"``: one ``<track>`` per object, a mask on each frame it is present, ``outside`` after."""
    ranked = sorted(video.tracks, key=lambda tr: (tr.score, -tr.id))
    z = {tr.id: k for k, tr in enumerate(ranked)}
    for index, tr in enumerate(video.tracks):
        if not 1 <= tr.category_id <= len(labels):
            raise ValidationError(f"track {tr.id}: category_id {tr.category_id} has no label (labels: {labels})")
        masks, last = [], None
        for t in range(video.num_frames):
            mask = tr.mask(t)
            rle = None if mask is None else mask_to_cvat_rle(mask)
            if rle is not None:
                masks.append(_mask_xml(t, rle, outside=False, z_order=z[tr.id], track_id=tr.id, score=tr.score))
                last = rle
            elif last is not None:
                masks.append(_mask_xml(t, last, outside=True, z_order=z[tr.id], track_id=tr.id, score=tr.score))
                last = None
        if masks:
            yield _track_xml(index, labels[tr.category_id - 1], masks)


def write_cvat(path: PathLike, video: VideoSegmentation, *, layout: str = "shapes",
               labels: Optional[Sequence[str]] = None) -> Path:
    """Write one video's tracks as a CVAT-for-video 1.1 XML file, atomically; returns the path.

    ``layout``: ``"shapes"`` (default; one one-frame track per object and frame, what CVAT imports) or
    ``"tracks"`` (one track per object). ``labels``: label names by category id (default ``object`` for 1).
    """
    if layout not in LAYOUTS:
        raise ValidationError(f"unknown CVAT layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    names = _labels_of(video, labels)
    name = video.name or "video"
    if layout == "shapes":
        scores = {tr.id: tr.score for tr in video.tracks}
        with CvatWriter(path, video.height, video.width, name=name, num_frames=video.num_frames,
                        labels=names, track_scores=scores) as writer:
            for fr in video.iter_frames():
                writer.write(fr)
        return writer.path
    with AtomicTextFile(path) as out:
        out.write('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n')
        out.write(_meta_xml(name, video.num_frames, video.height, video.width, names))
        for text in _object_tracks_xml(video, names):
            out.write(text)
        out.write("</annotations>\n")
    return Path(path)


# --------------------------------------------------------------------------- reading
@dataclass
class _Meta:
    name: Optional[str] = None
    size: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    mode: Optional[str] = None
    labels: List[str] = field(default_factory=list)


@dataclass
class _Object:
    """What the shapes of one object give: per frame its mask, its label and its score."""

    masks: Dict[int, dict] = field(default_factory=dict)  # frame -> COCO RLE (compact: files can be long)
    label: str = ""
    score: Optional[float] = None


def _int_text(el: Optional[ET.Element], what: str, path: Path) -> Optional[int]:
    if el is None or el.text is None or not el.text.strip():
        return None
    try:
        return int(el.text.strip())
    except ValueError:
        raise InputError(path, f"<meta>: {what} must be an integer, got {el.text.strip()!r}") from None


def _parse_meta(meta: ET.Element, path: Path) -> _Meta:
    task = meta.find("task")
    if task is None:
        task = meta.find("job")
    if task is None:
        raise InputError(path, "<meta> has no <task> (CVAT project exports are not read; export the task)")
    out = _Meta(name=(task.findtext("name") or "").strip() or None, size=_int_text(task.find("size"), "size", path),
                mode=(task.findtext("mode") or "").strip() or None)
    out.width = _int_text(task.find("original_size/width"), "original_size/width", path)
    out.height = _int_text(task.find("original_size/height"), "original_size/height", path)
    out.labels = [(lab.findtext("name") or "").strip() for lab in task.iterfind("labels/label")]
    return out


def _attr_int(el: ET.Element, key: str, where: str, path: Path, default: Optional[int] = None) -> int:
    value = el.get(key)
    if value is None:
        if default is None:
            raise InputError(path, f"{where}: missing attribute '{key}'")
        return default
    try:
        return int(float(value)) if key in ("left", "top", "width", "height") else int(value)
    except ValueError:
        raise InputError(path, f"{where}: '{key}' must be an integer, got {value!r}") from None


def _shape_attributes(el: ET.Element) -> Dict[str, str]:
    return {a.get("name", ""): (a.text or "").strip() for a in el.iterfind("attribute")}


def _shape_mask(el: ET.Element, size: Tuple[int, int], where: str, path: Path) -> np.ndarray:
    """The frame mask of a ``<mask>`` or ``<polygon>`` element."""
    H, W = size
    if el.tag == "polygon":
        try:
            flat = [float(v) for pair in el.get("points", "").split(";") for v in pair.split(",")]
            rle = mask_utils.merge(mask_utils.frPyObjects([flat], H, W))
        except (ValueError, IndexError, Exception) as exc:  # pycocotools raises bare Exceptions
            raise InputError(path, f"{where}: invalid polygon points: {exc}") from None
        return rle_utils.decode(rle_utils.to_compressed(rle))
    try:
        counts = [int(c) for c in el.get("rle", "").replace(" ", "").split(",") if c != ""]
    except ValueError:
        raise InputError(path, f"{where}: 'rle' must be comma-separated integers") from None
    box = [_attr_int(el, k, where, path) for k in ("left", "top", "width", "height")]
    try:
        return cvat_rle_to_mask(counts, box[0], box[1], box[2], box[3], size)
    except ValidationError as exc:
        raise InputError(path, f"{where}: {exc}") from None


def _object_id(attrs: Dict[str, str], fallback: int, where: str, path: Path) -> Tuple[int, bool]:
    """``(id, explicit)``: the ``track_id`` attribute when there is one, else ``fallback``."""
    raw = attrs.get("track_id")
    if raw is None or raw == "":
        return fallback, False
    try:
        tid = int(float(raw))
    except ValueError:
        raise InputError(path, f"{where}: attribute track_id must be an integer, got {raw!r}") from None
    if tid < 1:
        raise InputError(path, f"{where}: attribute track_id must be positive, got {tid}")
    return tid, True


def _read_track(track: ET.Element, index: int, size: Tuple[int, int], objects: Dict[Tuple[bool, int], _Object],
                path: Path) -> int:
    """Add the shapes of one ``<track>`` to ``objects``; returns the last frame seen (-1 if none)."""
    label = track.get("label", "")
    last = -1
    for el in track:
        if el.tag in _OTHER_SHAPES:
            raise InputError(path, f"track {track.get('id', index)}: <{el.tag}> shapes are not masks; s2d reads "
                                   f"<mask> and <polygon>")
        if el.tag not in _SHAPE_TAGS:
            continue
        frame = _attr_int(el, "frame", f"track {track.get('id', index)}", path)
        where = f"track {track.get('id', index)}, frame {frame}"
        if frame < 0:
            raise InputError(path, f"{where}: negative frame")
        last = max(last, frame)
        if el.get("outside", "0") == "1":
            continue
        attrs = _shape_attributes(el)
        tid, explicit = _object_id(attrs, index, where, path)
        obj = objects.setdefault((explicit, tid), _Object(label=label))
        mask = _shape_mask(el, size, where, path)
        if frame in obj.masks:  # a second piece of the object on this frame: merge
            mask = mask | rle_utils.decode(obj.masks[frame])
        obj.masks[frame] = rle_utils.encode(mask)
        if obj.score is None and attrs.get("score"):
            try:
                obj.score = float(attrs["score"])
            except ValueError:
                raise InputError(path, f"{where}: attribute score must be a number, got {attrs['score']!r}") from None
    return last


def _number_objects(objects: Dict[Tuple[bool, int], _Object]) -> List[Tuple[int, _Object]]:
    """Explicit ``track_id`` ids as they are; objects of tracks without one get the next free ids."""
    taken = {tid for explicit, tid in objects if explicit}
    out = [(tid, obj) for (explicit, tid), obj in objects.items() if explicit]
    nxt = 1
    for (explicit, _), obj in objects.items():
        if explicit:
            continue
        while nxt in taken:
            nxt += 1
        taken.add(nxt)
        out.append((nxt, obj))
    return sorted(out, key=lambda p: p[0])


def _parse_tree(path: Path) -> ET.Element:
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a CVAT XML file")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise InputError(path, f"malformed XML: {exc}") from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    if root.tag != "annotations":
        raise InputError(path, f"root element is <{root.tag}>, expected <annotations> (CVAT XML)")
    return root


def read_cvat(path: PathLike, *, name: Optional[str] = None) -> VideoSegmentation:
    """Read a CVAT-for-video 1.1 XML file into a :class:`VideoSegmentation` (see the module docstring).

    The frame size is ``<original_size>``, the frame count ``<size>`` (or the last frame + 1), the name
    ``name`` or the task's name. Scores come from the ``score`` attribute (1.0 without one).
    """
    p = Path(path)
    root = _parse_tree(p)
    meta_el = root.find("meta")
    if meta_el is None:
        raise InputError(p, "no <meta> element (CVAT XML 1.1 starts with <version> and <meta>)")
    meta = _parse_meta(meta_el, p)
    if meta.mode == "annotation" or root.find("image") is not None:
        raise InputError(p, "a CVAT-for-images file (<image> elements); export the task as 'CVAT for video 1.1'")
    if meta.height is None or meta.width is None:
        raise InputError(p, "<meta> has no <original_size> with the frame width and height")
    size = (meta.height, meta.width)
    objects: Dict[Tuple[bool, int], _Object] = {}
    last = -1
    for index, track in enumerate(root.iterfind("track")):
        last = max(last, _read_track(track, index + 1, size, objects, p))
    T = meta.size if meta.size is not None else last + 1
    if last >= T:
        raise InputError(p, f"a shape on frame {last}, but the task has {T} frames (<size>)")
    labels = meta.labels or sorted({obj.label for obj in objects.values()})
    tracks = []
    for tid, obj in _number_objects(objects):
        if obj.label not in labels:
            raise InputError(p, f"object {tid}: label {obj.label!r} is not among the labels in <meta>")
        score = 1.0 if obj.score is None else min(max(obj.score, 0.0), 1.0)
        tracks.append(Track(tid, [obj.masks.get(t) for t in range(T)], score, labels.index(obj.label) + 1))
    return VideoSegmentation(size[0], size[1], T, tracks, name=name if name is not None else meta.name)
