"""MOTS txt: one line per object per frame, ``time_frame id class_id img_height img_width rle``.

The text format of KITTI MOTS and MOTSChallenge (Voigtlaender et al., 2019), read by
``mots_tools`` and TrackEval. ``rle`` is a COCO compressed RLE string of an ``img_height ×
img_width`` mask; fields are separated by single spaces, e.g.::

    52 1005 1 375 1242 WSV:2d;1O10000O10000O1O100O100...

Conventions and the choices made here:

* **Frame numbers.** KITTI MOTS counts ``time_frame`` from 0, MOTSChallenge from 1 (its images
  are ``000001.jpg``...). We write ``frame_index + frame_offset`` with ``frame_offset=0`` by
  default (KITTI MOTS); pass ``frame_offset=1`` for MOTSChallenge. The reader takes the same
  option and subtracts it.
* **Ids.** In the datasets' ground truth the object id is ``class_id * 1000 + instance`` (1005 =
  car #5) and ``class_id`` is 1 = car, 2 = pedestrian, 10 = ignore region (object id 10000).
  s2d results are class-agnostic, so by default we write ``id`` = the s2d track id and
  ``class_id`` = the track's ``category_id`` (1 when class-agnostic); ``class_id=`` overrides the
  class of every line (e.g. 2 to score against MOTSChallenge pedestrians) and ``mots_ids=True``
  writes ``class_id * 1000 + track_id`` (track ids must then be < 1000). Ignore regions
  (class 10 / id 10000) are skipped when reading: they are not objects.
* **No overlaps.** MOTS forbids two objects on one pixel (``mots_tools`` rejects such files), so
  each frame is flattened with :meth:`s2d.types.FrameResult.label_map` (higher score wins) before
  encoding; an object left with no pixels is not written. MOTS has no scores: read tracks get 1.0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from s2d import rle as rle_utils
from s2d.errors import InputError, ValidationError
from s2d.io.atomic import AtomicTextFile, CommitOnExit
from s2d.types import FrameResult, Track, VideoSegmentation

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["MotsWriter", "write_mots", "read_mots", "format_frame", "IGNORE_CLASS_ID", "IGNORE_OBJECT_ID"]

IGNORE_CLASS_ID = 10
IGNORE_OBJECT_ID = 10000
_FIELDS = "'frame id class_id h w rle'"


def format_frame(frame: FrameResult, *, frame_offset: int = 0, class_id: Optional[int] = None,
                 mots_ids: bool = False) -> List[str]:
    """The MOTS lines (without newline) of one frame, sorted by id, overlaps resolved by score."""
    if len(frame) == 0:
        return []
    labels = frame.label_map()
    h, w = frame.height, frame.width
    lines = []
    for i in np.argsort(frame.ids, kind="stable"):
        tid = int(frame.ids[i])
        mask = labels == tid
        if not mask.any():
            continue  # fully covered by higher-scoring objects (or empty to begin with)
        assert frame.category_ids is not None  # FrameResult.__post_init__ sets it
        cls = int(frame.category_ids[i]) if class_id is None else int(class_id)
        if mots_ids:
            if tid >= 1000:
                raise ValidationError(f"frame {frame.index}: track id {tid} does not fit MOTS ids "
                                      f"(class_id * 1000 + id needs ids < 1000)")
            obj = cls * 1000 + tid
        else:
            obj = tid
        lines.append(f"{frame.index + frame_offset} {obj} {cls} {h} {w} {rle_utils.encode(mask)['counts']}")
    return lines


class MotsWriter(CommitOnExit):
    """Stream :class:`FrameResult` objects into one MOTS txt file, atomically.

    Lines go to a hidden temp file beside ``path``; :meth:`close` (or leaving the ``with`` block
    normally) renames it to ``path``. An exception inside the ``with`` block (or :meth:`abort`)
    deletes the temp file, so ``path`` only ever holds a complete file. Memory holds one frame.
    """

    def __init__(self, path: PathLike, *, frame_offset: int = 0, class_id: Optional[int] = None,
                 mots_ids: bool = False) -> None:
        self.path = Path(path)
        self.frame_offset = int(frame_offset)
        self.class_id = class_id
        self.mots_ids = bool(mots_ids)
        self.lines_written = 0
        self._last_index = -1
        self._out = AtomicTextFile(self.path)

    def write(self, frame: FrameResult) -> int:
        """Append one frame's objects; returns the number of lines written for it."""
        if self._out.closed:
            raise ValidationError("MotsWriter is closed")
        if not isinstance(frame, FrameResult):
            raise ValidationError(f"expected a FrameResult, got {type(frame).__name__}")
        if frame.index <= self._last_index:
            raise ValidationError(f"frames must come in increasing order, got {frame.index} after {self._last_index}")
        self._last_index = frame.index
        lines = format_frame(frame, frame_offset=self.frame_offset, class_id=self.class_id, mots_ids=self.mots_ids)
        if lines:
            self._out.write("\n".join(lines) + "\n")
        self.lines_written += len(lines)
        return len(lines)

    def close(self) -> Path:
        """Finish the file and move it to its final name (idempotent)."""
        return self._out.close()

    def abort(self) -> None:
        """Drop everything written so far; ``path`` is left as it was."""
        self._out.abort()


def write_mots(path: PathLike, video: Union[VideoSegmentation, Iterable[FrameResult]], *,
               frame_offset: int = 0, class_id: Optional[int] = None, mots_ids: bool = False) -> Path:
    """Write a whole video (or a stream of frames) as one MOTS txt file, atomically."""
    frames = video.iter_frames() if isinstance(video, VideoSegmentation) else video
    with MotsWriter(path, frame_offset=frame_offset, class_id=class_id, mots_ids=mots_ids) as writer:
        for fr in frames:
            writer.write(fr)
    return writer.path


def _int_field(value: str, what: str, lineno: int, path: Path) -> int:
    try:
        return int(value)
    except ValueError:
        raise InputError(path, f"line {lineno}: {what} must be an integer, got {value!r}") from None


def read_mots(path: PathLike, *, num_frames: Optional[int] = None, frame_offset: int = 0,
              mots_ids: bool = False, size: Optional[Tuple[int, int]] = None,
              name: Optional[str] = None) -> VideoSegmentation:
    """Read a MOTS txt file into a :class:`VideoSegmentation` (score 1.0, category = class_id).

    The frame size comes from the ``h w`` fields (or ``size`` for a file without objects); the
    frame count is ``num_frames`` or the last frame + 1. ``mots_ids=True`` takes the track id as
    ``id % 1000``. RLE strings are kept as they are (no decode), so reading is cheap.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file")
    if p.is_dir():
        raise InputError(p, "is a folder, expected a MOTS txt file")
    masks: Dict[int, Dict[int, dict]] = {}
    cats: Dict[int, int] = {}
    hw: Optional[Tuple[int, int]] = None if size is None else (int(size[0]), int(size[1]))
    hw_line = 0
    last_frame = -1
    try:
        f = open(p, "r", encoding="utf-8")
    except OSError as exc:
        raise InputError(p, f"cannot read: {exc.strerror or exc}") from None
    with f:
        try:
            for lineno, line in enumerate(f, start=1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 6:
                    raise InputError(p, f"line {lineno}: expected 6 fields {_FIELDS}, got {len(fields)}")
                frame = _int_field(fields[0], "frame", lineno, p) - frame_offset
                obj = _int_field(fields[1], "id", lineno, p)
                cls = _int_field(fields[2], "class_id", lineno, p)
                h = _int_field(fields[3], "h", lineno, p)
                w = _int_field(fields[4], "w", lineno, p)
                if cls == IGNORE_CLASS_ID or obj == IGNORE_OBJECT_ID:
                    continue
                if frame < 0:
                    raise InputError(p, f"line {lineno}: frame {frame + frame_offset} is before the first frame "
                                        f"(frame_offset={frame_offset})")
                if num_frames is not None and frame >= num_frames:
                    raise InputError(p, f"line {lineno}: frame {frame + frame_offset} is past the video's "
                                        f"{num_frames} frames")
                if h <= 0 or w <= 0:
                    raise InputError(p, f"line {lineno}: h and w must be positive, got {h} {w}")
                if hw is None:
                    hw, hw_line = (h, w), lineno
                elif (h, w) != hw:
                    origin = f"line {hw_line}" if hw_line else "size="
                    raise InputError(p, f"line {lineno}: size {h}x{w} differs from {hw[0]}x{hw[1]} ({origin})")
                tid = obj % 1000 if mots_ids else obj
                if tid < 1:
                    raise InputError(p, f"line {lineno}: object id {obj} gives track id {tid}; ids must be positive")
                if cats.setdefault(tid, cls) != cls:
                    raise InputError(p, f"line {lineno}: track {tid} has class_id {cls} here but {cats[tid]} before")
                per_frame = masks.setdefault(tid, {})
                if frame in per_frame:
                    raise InputError(p, f"line {lineno}: track {tid} appears twice on frame {frame + frame_offset}")
                try:
                    per_frame[frame] = rle_utils.to_compressed({"size": [h, w], "counts": fields[5]})
                except ValidationError as exc:
                    raise InputError(p, f"line {lineno}: {exc}") from None
                last_frame = max(last_frame, frame)
        except UnicodeDecodeError as exc:
            raise InputError(p, f"not UTF-8 text (byte {exc.start}): not a MOTS txt file?") from None
    if hw is None:
        raise InputError(p, "no objects in the file, so the frame size is unknown; pass size=(height, width)")
    T = last_frame + 1 if num_frames is None else int(num_frames)
    tracks = [Track(tid, [masks[tid].get(t) for t in range(T)], 1.0, cats[tid]) for tid in sorted(masks)]
    return VideoSegmentation(hw[0], hw[1], T, tracks, name=name if name is not None else p.stem)
