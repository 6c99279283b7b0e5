"""DAVIS indexed PNGs: one palette PNG per frame, pixel value = object id.

The layout every semi-/unsupervised VOS tool reads and writes (DAVIS 2017, YouTube-VOS, the
official ``davis2017-evaluation`` code): ``<dir>/<frame_name>.png``, mode ``"P"``, the standard
DAVIS palette (the PASCAL VOC colour map), 0 = background, ids 1..255 that stay the same object
over the whole video. A pixel holds one id, so overlapping masks are resolved with
:meth:`s2d.types.FrameResult.label_map` (higher score wins, SPEC §5).

Ids above 255 do not fit a PNG byte and are an error, not silently remapped: ids are written frame
by frame and must mean the same object in every frame, so a remap decided after some frames are on
disk would break that (and a remap decided up front needs the whole video, which a streaming writer
does not have). Keep at most 255 ids per video (score threshold, max objects) instead.

Reading (SPEC §9): palette PNGs give ids directly with 255 = *void* (ignored, as in the official
DAVIS code); greyscale PNGs give ids directly, except that binary DAVIS-2016 ground truth (8-bit
greyscale, values only {0, 255} in every frame of the video) is one object, id 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from s2d.errors import InputError, ValidationError
from s2d.io.atomic import atomic_path
from s2d.io.video import natural_key
from s2d.types import FrameResult, Track, VideoSegmentation

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["davis_palette", "DavisWriter", "write_davis", "read_davis", "natural_key", "MAX_DAVIS_ID"]

#: the largest id an 8-bit palette PNG can hold
MAX_DAVIS_ID = 255


def davis_palette() -> np.ndarray:
    """The standard DAVIS palette as a ``256×3`` uint8 array (index 1 = (128, 0, 0), ...).

    It is the PASCAL VOC colour map: the bits of the index are dealt round-robin to R, G, B,
    most significant colour bit first. Generated rather than stored, it is the exact palette the
    DAVIS annotation PNGs embed.
    """
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


_PALETTE_FLAT: Optional[List[int]] = None


def _palette_flat() -> List[int]:
    global _PALETTE_FLAT
    if _PALETTE_FLAT is None:
        _PALETTE_FLAT = davis_palette().reshape(-1).tolist()
    return _PALETTE_FLAT


def _check_name(name: str) -> str:
    name = str(name)
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValidationError(f"invalid frame name {name!r} for a PNG file (no path separators)")
    return name


class DavisWriter:
    """Stream :class:`FrameResult` objects into ``<dir>/<frame_name>.png``, one PNG per call.

    Each PNG is written atomically (hidden temp file + rename), so an interrupted run leaves only
    complete frames. Names: ``name=`` of :meth:`write`, else ``frame_names[frame.index]``, else
    the zero-padded frame index (``00000.png``, the DAVIS convention). Use as a context manager.
    """

    def __init__(self, directory: PathLike, frame_names: Optional[Sequence[str]] = None, *,
                 size: Optional[Tuple[int, int]] = None) -> None:
        self.directory = Path(directory)
        self.frame_names = None if frame_names is None else [str(n) for n in frame_names]
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.paths: List[Path] = []
        self._closed = False
        self.directory.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> "DavisWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish; nothing is buffered (every PNG is complete once :meth:`write` returns)."""
        self._closed = True

    def _name_of(self, frame: FrameResult, name: Optional[str]) -> str:
        if name is not None:
            return _check_name(name)
        if self.frame_names is not None:
            if not 0 <= frame.index < len(self.frame_names):
                raise ValidationError(f"frame {frame.index} has no name: {len(self.frame_names)} frame names given")
            return _check_name(self.frame_names[frame.index])
        return f"{frame.index:05d}"

    def write(self, frame: FrameResult, name: Optional[str] = None) -> Path:
        """Write one frame's label map; returns the PNG path."""
        if self._closed:
            raise ValidationError("DavisWriter is closed")
        if not isinstance(frame, FrameResult):
            raise ValidationError(f"expected a FrameResult, got {type(frame).__name__}")
        size = (frame.height, frame.width)
        if self.size is None:
            self.size = size
        elif size != self.size:
            raise ValidationError(f"frame {frame.index}: size {size} differs from the video's {self.size}; "
                                  f"DAVIS PNGs of one video share one size")
        if len(frame) and int(frame.ids.max()) > MAX_DAVIS_ID:
            raise ValidationError(
                f"frame {frame.index}: track id {int(frame.ids.max())} does not fit a DAVIS PNG (ids 1..255); "
                f"keep at most 255 objects per video (raise the score threshold or lower max objects)")
        labels = np.ascontiguousarray(frame.label_map().astype(np.uint8))
        img = Image.frombytes("P", (frame.width, frame.height), labels.tobytes())
        img.putpalette(_palette_flat())
        path = self.directory / f"{self._name_of(frame, name)}.png"
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG")
        self.paths.append(path)
        return path


def write_davis(directory: PathLike, video: Union[VideoSegmentation, Iterable[FrameResult]], *,
                frame_names: Optional[Sequence[str]] = None) -> List[Path]:
    """Write a whole video (or a stream of frames) as DAVIS PNGs; returns the paths in order.

    A :class:`VideoSegmentation` gets one PNG per frame (empty frames included) named by its
    ``frame_names`` (else ``00000``...), and its ids are checked before anything is written.
    A PNG cannot tell a present-but-empty mask (or one fully covered by a higher-scoring object)
    from an absent one: both read back as ``None``.
    """
    if isinstance(video, VideoSegmentation):
        too_big = [i for i in video.ids if i > MAX_DAVIS_ID]
        if too_big:
            raise ValidationError(
                f"track ids {too_big[:5]} do not fit a DAVIS PNG (ids 1..255); keep at most 255 objects "
                f"per video (raise the score threshold or lower max objects)")
        names: Optional[Sequence[str]] = (frame_names if frame_names is not None
                                          else [video.frame_name(t) for t in range(video.num_frames)])
        frames: Iterable[FrameResult] = video.iter_frames()
        size: Optional[Tuple[int, int]] = video.size
    else:
        names, frames, size = frame_names, video, None
    with DavisWriter(directory, names, size=size) as writer:
        for fr in frames:
            writer.write(fr)
    return writer.paths


# --------------------------------------------------------------------------- reading
def _palette_lookup() -> dict:
    pal = davis_palette().astype(np.int64)
    codes = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    return {int(c): (0 if i == 255 else i) for i, c in enumerate(codes)}


def _read_labels(path: Path) -> Tuple[np.ndarray, bool]:
    """Label array of one PNG and whether it could be binary DAVIS-2016 GT (8-bit grey, {0,255})."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                arr = np.array(im, dtype=np.int64)
                arr[arr == 255] = 0  # void, as in the official DAVIS code
                return arr, False
            if mode == "L":
                arr = np.array(im, dtype=np.int64)
                return arr, bool(np.isin(arr, (0, 255)).all())
            if mode == "1":
                return np.array(im).astype(np.int64), False
            if mode.startswith("I"):  # 16/32-bit ids (e.g. MOTS-style PNGs)
                arr = np.array(im).astype(np.int64)
                arr[arr < 0] = 0
                return arr, False
            if mode in ("RGB", "RGBA"):
                # palette PNGs re-saved as RGB by an image editor: map colours back to ids
                rgb = np.array(im.convert("RGB"), dtype=np.int64)
                codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
                lookup = _palette_lookup()
                uniq, inv = np.unique(codes, return_inverse=True)
                ids = []
                for c in uniq.tolist():
                    if c not in lookup:
                        raise InputError(path, f"RGB PNG has colour {(c >> 16, (c >> 8) & 255, c & 255)} "
                                               f"that is not in the DAVIS palette")
                    ids.append(lookup[c])
                return np.asarray(ids, dtype=np.int64)[inv.reshape(codes.shape)], False
            raise InputError(path, f"unsupported PNG mode {mode!r} (expected palette or greyscale ids)")
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, f"not a readable PNG image: {exc}") from None


def read_davis(directory: PathLike, *, name: Optional[str] = None) -> VideoSegmentation:
    """Read ``<dir>/*.png`` (natural order) into a :class:`VideoSegmentation` with score 1.0 tracks.

    Frame names are the PNG stems, the video name is ``name`` or the folder's name. Hidden files
    (half-written temp files of an interrupted writer) are skipped. Raises :class:`InputError`
    naming the offending file on a missing/empty folder, an unreadable PNG or mixed frame sizes.
    """
    d = Path(directory)
    if not d.exists():
        raise InputError(d, "no such folder")
    if not d.is_dir():
        raise InputError(d, "not a folder (expected a folder of DAVIS PNGs)")
    files = sorted((p for p in d.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith(".")
                    and p.is_file()), key=lambda p: natural_key(p.name))
    if not files:
        raise InputError(d, "no PNG files")
    try:
        with Image.open(files[0]) as im:
            width, height = im.size
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(files[0], f"not a readable PNG image: {exc}") from None
    binary = True

    def frames() -> Iterable[FrameResult]:
        nonlocal binary
        for t, f in enumerate(files):
            labels, maybe_binary = _read_labels(f)
            binary = binary and maybe_binary
            if labels.shape != (height, width):
                raise InputError(f, f"frame size {labels.shape[1]}x{labels.shape[0]} (width x height) differs "
                                    f"from {files[0].name}'s {width}x{height}; all frames must share one size")
            ids = np.unique(labels)
            ids = ids[ids > 0]
            yield FrameResult(t, labels[None] == ids[:, None, None], ids, np.ones(len(ids)))

    video = VideoSegmentation.from_frames(frames(), height, width, num_frames=len(files),
                                          name=name if name is not None else d.name,
                                          frame_names=[f.stem for f in files])
    if binary and video.tracks:
        # DAVIS-2016 GT: 255 is "the object", not id 255 (values ⊆ {0,255} means no other id exists)
        video = video.with_tracks([Track(1, tr.masks, tr.score, tr.category_id, tr.extra) for tr in video.tracks])
    return video
