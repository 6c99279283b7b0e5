"""The canonical result types every stage produces and consumes.

A segmented video is a :class:`VideoSegmentation`: frame size, frame count, optional fps and
name, and a list of :class:`Track` objects. A track has an integer id (≥ 1, unique in the video),
a score in [0, 1], a category id, and one entry per frame that is either a COCO RLE (see
:mod:`s2d.rle`) or ``None`` where the object is absent. Masks are stored as RLE, not as arrays, so
a 2,000-frame result costs megabytes, not gigabytes.

While streaming (reading a video, running a model, writing PNGs) the unit is a
:class:`FrameResult`: the decoded masks of all tracks present on one frame. ``VideoSegmentation``
turns into frames with :meth:`VideoSegmentation.iter_frames` and is built from frames with
:meth:`VideoSegmentation.from_frames`. Both validate on construction and raise
:class:`s2d.errors.ValidationError` with a message naming the problem.

Reading and writing files is :mod:`s2d.io.formats`'s job (``read_ytvis``/``write_ytvis_results``,
``read_davis``/``write_davis``, ``read_mots``/``write_mots``, also importable from ``s2d``): one way per format,
and this module imports nothing from ``s2d.io``, so the formats can build on these types without an import cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union, cast

import numpy as np

from s2d import rle as rle_utils
from s2d.errors import ValidationError

MaskLike = Union[np.ndarray, Mapping[str, Any], None]


@dataclass
class Track:
    """One object over the whole video.

    Attributes:
        id: positive integer, unique within its video (DAVIS exports use it as the palette index
            when ≤ 255).
        masks: length-T list; entry ``t`` is a compressed COCO RLE dict of the frame size, or
            ``None`` where the object is absent. Arrays passed in are encoded to RLE.
        score: confidence in [0, 1].
        category_id: 1 for class-agnostic results.
        extra: free-form per-track metadata (e.g. keymask diagnostics) carried through JSON.
    """

    id: int
    masks: List[Optional[dict]]
    score: float = 1.0
    category_id: int = 1
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.id, bool) or not isinstance(self.id, (int, np.integer)) or self.id < 1:
            raise ValidationError(f"track id must be a positive integer, got {self.id!r}")
        self.id = int(self.id)
        try:
            score = float(self.score)
        except (TypeError, ValueError):
            raise ValidationError(f"track {self.id}: score must be a number, got {self.score!r}") from None
        if not (0.0 <= score <= 1.0) or math.isnan(score):
            raise ValidationError(f"track {self.id}: score must be in [0, 1], got {self.score!r}")
        self.score = score
        if isinstance(self.category_id, bool) or not isinstance(self.category_id, (int, np.integer)):
            raise ValidationError(f"track {self.id}: category_id must be an integer, got {self.category_id!r}")
        self.category_id = int(self.category_id)
        masks: List[Optional[dict]] = []
        for t, m in enumerate(self.masks):
            if m is None:
                masks.append(None)
            elif isinstance(m, np.ndarray):
                if m.ndim != 2:
                    raise ValidationError(f"track {self.id}, frame {t}: mask must be H×W, got shape {m.shape}")
                masks.append(rle_utils.encode(m.astype(bool, copy=False)))
            else:
                try:
                    masks.append(rle_utils.to_compressed(m))
                except ValidationError as exc:
                    raise ValidationError(f"track {self.id}, frame {t}: {exc}") from None
        self.masks = masks

    @property
    def num_frames(self) -> int:
        return len(self.masks)

    def present_frames(self) -> List[int]:
        """Indices of frames where the track has a (possibly empty) mask."""
        return [t for t, m in enumerate(self.masks) if m is not None]

    def mask(self, t: int) -> Optional[np.ndarray]:
        """Decoded boolean ``H×W`` mask on frame ``t``, or ``None`` where absent."""
        m = self.masks[t]
        return None if m is None else rle_utils.decode(m)

    def area(self, t: int) -> int:
        m = self.masks[t]
        return 0 if m is None else rle_utils.area(m)


@dataclass
class FrameResult:
    """All objects on one frame, decoded — the unit that streams between stages and writers.

    Attributes:
        index: frame index in the video (0-based).
        masks: ``N×H×W`` bool array.
        ids: ``N`` int array of track ids (positive, unique).
        scores: ``N`` float array in [0, 1].
        category_ids: ``N`` int array (1 when class-agnostic).
    """

    index: int
    masks: np.ndarray
    ids: np.ndarray
    scores: np.ndarray
    category_ids: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.masks = np.asarray(self.masks, dtype=bool)
        if self.masks.ndim != 3:
            raise ValidationError(f"frame {self.index}: masks must be N×H×W, got shape {self.masks.shape}")
        n = self.masks.shape[0]
        self.ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if self.category_ids is None:
            self.category_ids = np.ones(n, dtype=np.int64)
        self.category_ids = np.asarray(self.category_ids, dtype=np.int64).reshape(-1)
        for name, arr in (("ids", self.ids), ("scores", self.scores), ("category_ids", self.category_ids)):
            if arr.shape[0] != n:
                raise ValidationError(f"frame {self.index}: {n} masks but {arr.shape[0]} {name}")
        if n and (self.ids < 1).any():
            raise ValidationError(f"frame {self.index}: track ids must be positive, got {self.ids.tolist()}")
        if len(set(self.ids.tolist())) != n:
            raise ValidationError(f"frame {self.index}: duplicate track ids {self.ids.tolist()}")
        if n and (~np.isfinite(self.scores) | (self.scores < 0) | (self.scores > 1)).any():
            raise ValidationError(f"frame {self.index}: scores must be in [0, 1], got {self.scores.tolist()}")

    @classmethod
    def empty(cls, index: int, height: int, width: int) -> "FrameResult":
        return cls(index, np.zeros((0, height, width), bool), np.zeros(0, np.int64), np.zeros(0))

    @property
    def height(self) -> int:
        return int(self.masks.shape[1])

    @property
    def width(self) -> int:
        return int(self.masks.shape[2])

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def label_map(self) -> np.ndarray:
        """``H×W`` int map: 0 background, else the id of the highest-scoring object covering the pixel.

        Overlaps are resolved by score (ties: the lower id wins), which is the rule for DAVIS PNGs,
        MOTS (which forbids overlaps) and overlays.
        """
        out = np.zeros((self.height, self.width), dtype=np.int64)
        if len(self) == 0:
            return out
        # paint lowest priority first so the highest score ends on top
        order = sorted(range(len(self)), key=lambda i: (self.scores[i], -self.ids[i]))
        for i in order:
            out[self.masks[i]] = self.ids[i]
        return out


@dataclass
class VideoSegmentation:
    """A segmented video: the one result type of s2d.

    Attributes:
        height, width: frame size in pixels; every mask has this size.
        num_frames: T, the length of every track's mask list.
        tracks: the objects; ids unique.
        fps: frames per second of the source, when known.
        name: video name (a video file's stem or a frame folder's name), when known.
        video_id: numeric id used in YouTube-VIS JSON, when known.
        frame_names: optional length-T list of frame names (e.g. the JPEG stems of a frame folder),
            used to name DAVIS PNGs.
    """

    height: int
    width: int
    num_frames: int
    tracks: List[Track] = field(default_factory=list)
    fps: Optional[float] = None
    name: Optional[str] = None
    video_id: Optional[int] = None
    frame_names: Optional[List[str]] = None

    def __post_init__(self) -> None:
        for attr in ("height", "width", "num_frames"):
            v = getattr(self, attr)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValidationError(f"{attr} must be a non-negative integer, got {v!r}")
            setattr(self, attr, int(v))
        if self.fps is not None:
            fps = float(self.fps)
            if not math.isfinite(fps) or fps <= 0:
                raise ValidationError(f"fps must be positive, got {self.fps!r}")
            self.fps = fps
        if self.frame_names is not None:
            self.frame_names = [str(n) for n in self.frame_names]
            if len(self.frame_names) != self.num_frames:
                raise ValidationError(
                    f"{len(self.frame_names)} frame names for {self.num_frames} frames")
        self.tracks = list(self.tracks)
        seen: set = set()
        where = f"video {self.name!r}: " if self.name else ""
        for tr in self.tracks:
            if not isinstance(tr, Track):
                raise ValidationError(f"{where}tracks must be Track objects, got {type(tr).__name__}")
            if tr.id in seen:
                raise ValidationError(f"{where}duplicate track id {tr.id}")
            seen.add(tr.id)
            if tr.num_frames != self.num_frames:
                raise ValidationError(
                    f"{where}track {tr.id} has {tr.num_frames} frames, video has {self.num_frames}")
            for t, m in enumerate(tr.masks):
                if m is not None and rle_utils.size_of(m) != (self.height, self.width):
                    raise ValidationError(
                        f"{where}track {tr.id}, frame {t}: mask size {tuple(rle_utils.size_of(m))} "
                        f"!= frame size {(self.height, self.width)}")

    # ----------------------------------------------------------------- access
    @property
    def size(self) -> Tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)

    @property
    def ids(self) -> List[int]:
        return [t.id for t in self.tracks]

    def track(self, track_id: int) -> Track:
        for t in self.tracks:
            if t.id == track_id:
                return t
        raise KeyError(track_id)

    def frame(self, t: int) -> FrameResult:
        """Decoded :class:`FrameResult` of frame ``t`` (only tracks present there)."""
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} out of range [0, {self.num_frames})")
        present = [tr for tr in self.tracks if tr.masks[t] is not None]
        if not present:
            return FrameResult.empty(t, self.height, self.width)
        return FrameResult(
            index=t,
            masks=np.stack([rle_utils.decode(cast(dict, tr.masks[t])) for tr in present]),
            ids=np.array([tr.id for tr in present]),
            scores=np.array([tr.score for tr in present]),
            category_ids=np.array([tr.category_id for tr in present]),
        )

    def iter_frames(self) -> Iterator[FrameResult]:
        """Yield one decoded :class:`FrameResult` per frame; memory holds one frame at a time."""
        for t in range(self.num_frames):
            yield self.frame(t)

    def frame_name(self, t: int) -> str:
        """Name of frame ``t``: its source name when known, else ``00000``-style."""
        if self.frame_names is not None:
            return self.frame_names[t]
        return f"{t:05d}"

    # ----------------------------------------------------------------- build
    @classmethod
    def from_frames(
        cls,
        frames: Iterable[FrameResult],
        height: int,
        width: int,
        *,
        num_frames: Optional[int] = None,
        fps: Optional[float] = None,
        name: Optional[str] = None,
        video_id: Optional[int] = None,
        frame_names: Optional[Sequence[str]] = None,
        track_scores: Optional[Mapping[int, float]] = None,
    ) -> "VideoSegmentation":
        """Collect streamed :class:`FrameResult` objects (in frame order) into a video result.

        Masks are RLE-encoded as they arrive, so memory grows with the compressed masks only.
        A track's score is ``track_scores[id]`` when given, else the mean of its per-frame scores.
        Frames never yielded (when ``num_frames`` is larger) have no masks.
        """
        masks: Dict[int, Dict[int, dict]] = {}
        scores: Dict[int, List[float]] = {}
        cats: Dict[int, int] = {}
        last = -1
        for fr in frames:
            if fr.index <= last:
                raise ValidationError(f"frames must come in increasing order, got {fr.index} after {last}")
            if (fr.height, fr.width) != (height, width):
                raise ValidationError(
                    f"frame {fr.index}: mask size {(fr.height, fr.width)} != frame size {(height, width)}")
            last = fr.index
            assert fr.category_ids is not None  # FrameResult.__post_init__ sets it
            for i, tid in enumerate(fr.ids.tolist()):
                masks.setdefault(tid, {})[fr.index] = rle_utils.encode(fr.masks[i])
                scores.setdefault(tid, []).append(float(fr.scores[i]))
                cats.setdefault(tid, int(fr.category_ids[i]))
        T = last + 1 if num_frames is None else int(num_frames)
        if last >= T:
            raise ValidationError(f"got frame {last} but num_frames is {T}")
        tracks = []
        for tid in sorted(masks):
            score = (track_scores or {}).get(tid, float(np.mean(scores[tid])))
            tracks.append(Track(tid, [masks[tid].get(t) for t in range(T)], score, cats[tid]))
        return cls(height, width, T, tracks, fps=fps, name=name, video_id=video_id,
                   frame_names=list(frame_names) if frame_names is not None else None)

    def with_tracks(self, tracks: Sequence[Track]) -> "VideoSegmentation":
        """Same video metadata, other tracks (validated)."""
        return VideoSegmentation(self.height, self.width, self.num_frames, list(tracks), self.fps,
                                 self.name, self.video_id, self.frame_names)
