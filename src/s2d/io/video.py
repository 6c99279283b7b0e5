"""Streaming frame input (video files, frame folders, globs) and atomic video output.

Every reader here yields one :class:`Frame` at a time and never keeps earlier frames, so memory does
not depend on the length of the video (SPEC §3, "streams, not whole videos in memory"). Everything a
caller needs to plan (output size, fps, frame counts) is in :class:`VideoInfo`, available right after
:func:`open_video` without decoding the whole video.

Sources
    * a video file (``.mp4 .avi .mov .mkv .webm`` and anything else FFmpeg reads), decoded with PyAV
      using threaded decoding; the display rotation of phone videos is applied;
    * a folder of image frames (``.jpg .jpeg .png .bmp .webp .tif .tiff``, case-insensitive), in natural
      order (``2.png`` before ``10.png``); hidden files and other files are ignored;
    * a glob pattern such as ``"frames/*.jpg"`` (natural order of the matched paths);
    * a live source (:func:`is_live_source`): a network stream (``rtsp://``, ``rtmp://``, ``http(s)://``,
      ``udp://``, ``tcp://``, ``srt://``; PyAV), standard input (``"-"``: a container stream such as MPEG-TS or
      Matroska piped in; PyAV) or a camera (``/dev/videoN``; OpenCV's V4L2 backend). A live source has no
      frame count, is read once, frame by frame as it arrives, and ends when the stream does.

Bad input raises :class:`s2d.errors.InputError` with one line naming the file and the problem: missing
path, a file FFmpeg cannot open, no video stream, no decodable frame, a folder without frames, mixed
frame sizes, an unreadable image, and a corrupt or truncated stream (reported while iterating, after
the good frames were yielded, with the last frame index decoded in the message and as the error's
``frame_index`` attribute).
"""

from __future__ import annotations

import glob as _glob
import math
import os
import re
import uuid
import weakref
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union, cast

import av
import cv2
import numpy as np

from s2d.errors import InputError, SettingError
from s2d.io.atomic import CommitOnExit

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "IMAGE_EXTENSIONS",
    "LIVE_TIMEOUT_S",
    "VIDEO_EXTENSIONS",
    "Frame",
    "VideoInfo",
    "VideoStream",
    "VideoWriter",
    "natural_key",
    "is_live_source",
    "live_name",
    "open_video",
    "probe_video",
    "read_image",
    "read_frames",
    "scaled_size",
]

#: Image suffixes read from frame folders and globs (compared lower-case).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
#: Video suffixes we document and test; any other file is still tried with PyAV.
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})

_GLOB_CHARS = re.compile(r"[*?\[]")
_URL = re.compile(r"^(rtsps?|rtmps?|https?|udp|tcp|srt)://", re.IGNORECASE)
_CAMERA = re.compile(r"^/dev/video(\d+)$")
#: seconds a network stream may take to open, and to deliver data once open, before it is an error
LIVE_TIMEOUT_S = 10.0
_DIGITS = re.compile(r"(\d+)")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class VideoInfo:
    """What a stream will yield, known right after opening.

    Attributes:
        source: the path or glob pattern as given (as ``str``).
        name: video file stem, frame folder name, or for a glob the name of its folder.
        kind: ``"video"``, ``"folder"``, ``"glob"``, or for live sources ``"stream"`` (network, stdin) or
            ``"camera"``.
        fps: frames per second declared by the container (videos); ``None`` for folders and globs
            (callers pick a default, e.g. 25).
        width, height: size of the yielded frames, i.e. after ``max_side`` (and rotation).
        orig_width, orig_height: size of the source frames (after display rotation for videos).
        num_frames: frames this stream yields (after start/end/stride), when the source count is known.
        total_frames: frames in the source, when known (folders and globs always; mp4/mov/avi from the
            container; ``None`` for mkv/webm, whose containers store no frame count).
    """

    source: str
    name: str
    kind: str
    fps: Optional[float]
    width: int
    height: int
    orig_width: int
    orig_height: int
    num_frames: Optional[int]
    total_frames: Optional[int]


@dataclass
class Frame:
    """One decoded frame.

    Attributes:
        index: index in the source (original numbering: with ``stride=2`` the indices are 0, 2, 4, ...),
            so results can be matched to source frames whatever options were used.
        rgb: ``H×W×3`` uint8 RGB array, C-contiguous, owned by this frame.
        name: the file stem for folders and globs (``"00012"``), ``f"{index:05d}"`` for video files —
            the name DAVIS PNG exports use.
    """

    index: int
    rgb: np.ndarray
    name: str


# --------------------------------------------------------------------------- helpers


def is_live_source(source: PathLike) -> bool:
    """Whether ``source`` names a live source: ``"-"`` (standard input), a stream URL or ``/dev/videoN``."""
    text = os.fspath(source)
    return text == "-" or bool(_URL.match(text)) or bool(_CAMERA.match(text))


def live_name(source: PathLike) -> str:
    """The output name of a live source: ``stdin``, ``video0``, or the URL's last path part (else its host),
    with characters other than letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``."""
    text = os.fspath(source)
    if text == "-":
        return "stdin"
    cam = _CAMERA.match(text)
    if cam:
        return f"video{cam.group(1)}"
    rest = _URL.sub("", text).split("?")[0].rstrip("/")
    parts = [p for p in rest.split("/") if p]
    stem = Path(parts[-1]).stem if len(parts) > 1 else (parts[0] if parts else "stream")
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem).strip("_") or "stream"


#: ``open_video(start=N)`` seeks to the keyframe before frame N from this N on (below it, decoding from the
#: first frame is as quick)
SEEK_MIN_FRAMES = 16


def natural_key(text: str) -> Tuple[Any, ...]:
    """Sort key putting ``"2"`` before ``"10"``: digit runs compare as numbers, the rest case-folded.

    ``re.split`` with a capturing group alternates text and digits starting with text, so keys of two
    names always compare element by element with matching types.
    """
    parts = _DIGITS.split(text)
    key: List[Any] = []
    for i, part in enumerate(parts):
        key.append(int(part) if i % 2 else part.casefold())
    return (tuple(key), text)


def scaled_size(width: int, height: int, max_side: Optional[int]) -> Tuple[int, int]:
    """Output ``(width, height)`` so that the longer side is at most ``max_side``, keeping aspect.

    Never upscales. The longer side becomes exactly ``max_side``; the shorter is rounded half up
    (``floor(x + 0.5)``, not Python's banker's rounding) and at least 1, so every reader and writer that
    uses this function agrees on the size.
    """
    if max_side is None or max(width, height) <= max_side:
        return int(width), int(height)
    if width >= height:
        return int(max_side), max(1, int(math.floor(height * max_side / width + 0.5)))
    return max(1, int(math.floor(width * max_side / height + 0.5))), int(max_side)


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to ``width×height``: area averaging when shrinking (no aliasing), bilinear otherwise."""
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    shrink = width <= rgb.shape[1] and height <= rgb.shape[0]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interp)


def _short_reason(exc: BaseException) -> str:
    """One short line from an FFmpeg/OS error (``strerror`` without the errno and the C function name)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    text = " ".join(str(text).split())
    return text[:200]


def _check_options(start: int, end: Optional[int], stride: int, max_side: Optional[int]) -> None:
    for name, value, low in (("start", start, 0), ("stride", stride, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise SettingError(f"{name} must be an integer >= {low}, got {value!r}")
    if end is not None and (isinstance(end, bool) or not isinstance(end, (int, np.integer)) or end < 0):
        raise SettingError(f"end must be None or an integer >= 0, got {end!r}")
    if max_side is not None and (
        isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 1
    ):
        raise SettingError(f"max_side must be None or an integer >= 1, got {max_side!r}")


def _count(total: Optional[int], start: int, end: Optional[int], stride: int) -> Optional[int]:
    """Number of indices in ``range(start, min(end, total), stride)``; ``None`` when total is unknown."""
    if total is None:
        return None
    stop = total if end is None else min(end, total)
    return len(range(start, stop, stride))


def _image_files(folder: Path) -> List[Path]:
    """Image files of a folder in natural order; hidden files (``.DS_Store``, ``._x.jpg``) skipped."""
    out = []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS and entry.is_file():
                out.append(Path(entry.path))
    out.sort(key=lambda p: natural_key(p.name))
    return out


def _glob_files(pattern: str) -> List[Path]:
    paths = [
        Path(p)
        for p in _glob.glob(os.path.expanduser(pattern), recursive=True)
        if os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS and os.path.isfile(p)
    ]
    paths.sort(key=lambda p: natural_key(str(p)))
    return paths


def _glob_name(pattern: str, files: Sequence[Path]) -> str:
    """The folder a glob reads from: the deepest pattern directory without wildcards."""
    parent = Path(os.path.expanduser(pattern)).parent
    while _GLOB_CHARS.search(str(parent)) and parent != parent.parent:
        parent = parent.parent
    if _GLOB_CHARS.search(str(parent)) is None:
        name = parent.resolve().name if str(parent) in ("", ".") else parent.name
        if name:
            return name
    return files[0].parent.name if files else ""


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to RGB uint8.

    ``np.fromfile`` + ``cv2.imdecode`` instead of ``cv2.imread`` so non-ASCII paths work on every OS;
    ``IMREAD_COLOR`` turns grey, 16-bit and alpha images into 8-bit 3-channel BGR.
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(path, f"unreadable image file: {_short_reason(exc)}") from None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise InputError(path, "unreadable image file (cannot be decoded as an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _stream_duration_s(stream: Any) -> Optional[float]:
    """Duration the container declares for this stream, in seconds (mkv/webm: the DURATION tag)."""
    try:
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
    except (TypeError, ValueError):
        pass
    tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    if tag:
        m = re.fullmatch(r"\s*(\d+):(\d+):(\d+(?:\.\d*)?)\s*", str(tag))
        if m:
            return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    return None


def _stream_fps(stream: Any) -> Optional[float]:
    """A PyAV video stream's frame rate (average, else guessed); ``None`` when it declares none."""
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate and float(rate) > 0 else None


def _rotation_steps(frame: Any) -> int:
    """Quarter turns (counter-clockwise, as ``np.rot90`` wants) that display the frame upright."""
    try:
        degrees = float(getattr(frame, "rotation", 0) or 0)
    except (TypeError, ValueError):
        return 0
    return int(round(degrees / 90.0)) % 4


# --------------------------------------------------------------------------- reading


class VideoStream:
    """An opened source: ``.info`` now, frames by iteration, one at a time.

    Use as a context manager (closes the decoder) or just iterate. Each ``iter()`` reads from the
    start again (a video is reopened; the first iteration reuses the container opened for probing).
    Frames are decoded sequentially; with ``start`` ≥ :data:`SEEK_MIN_FRAMES` a video file is first sought to
    the keyframe before ``start`` (constant-frame-rate streams; others decode from frame 0), so reading a
    clip from the middle of a long video costs one GOP, not the whole prefix. Frames before ``start`` and
    between strides are decoded but not converted to RGB, and decoding stops right after the last requested
    frame.
    """

    def __init__(
        self,
        source: PathLike,
        *,
        start: int = 0,
        end: Optional[int] = None,
        stride: int = 1,
        max_side: Optional[int] = None,
        autorotate: bool = True,
    ) -> None:
        _check_options(start, end, stride, max_side)
        self.source = os.fspath(source)
        self.start, self.end, self.stride = int(start), None if end is None else int(end), int(stride)
        self.max_side = None if max_side is None else int(max_side)
        self.autorotate = bool(autorotate)
        self._closed = False
        self._iterators: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._files: List[Path] = []
        self._probe: Optional[Tuple[Any, Any, Any]] = None  # (container, decoder, first frame)
        self._first_image: Optional[np.ndarray] = None
        self._rot = 0
        self._declared_s: Optional[float] = None
        self._fps: Optional[float] = None

        self._camera: Optional[Tuple[Any, np.ndarray]] = None  # (cv2.VideoCapture, first frame RGB)
        path = Path(os.path.expanduser(self.source))
        if is_live_source(self.source):
            self.info = self._open_live()
        elif path.is_dir():
            self.info = self._open_images(_image_files(path), "folder", path.resolve().name, path)
        elif path.exists():
            self.info = self._open_video(path)
        elif _GLOB_CHARS.search(self.source):
            files = _glob_files(self.source)
            self.info = self._open_images(files, "glob", _glob_name(self.source, files), self.source)
        else:
            raise InputError(self.source, "no such file or directory")

    # ------------------------------------------------------------ opening
    def _open_images(self, files: List[Path], kind: str, name: str, where: PathLike) -> VideoInfo:
        if not files:
            what = "folder" if kind == "folder" else "pattern"
            raise InputError(where, f"no image frames (.jpg/.png) in {what}")
        self._files = files
        first = read_image(files[0])
        self._first_image = first
        h, w = first.shape[:2]
        ow, oh = scaled_size(w, h, self.max_side)
        total = len(files)
        return VideoInfo(self.source, name, kind, None, ow, oh, w, h,
                         _count(total, self.start, self.end, self.stride), total)

    def _open_container(self, path: PathLike, target: Any = None, **options: Any) -> Tuple[Any, Any, Any]:
        """Open the file (or ``target``: a URL or file object, reported as ``path``), pick the first video
        stream and decode its first frame.

        Decoding one frame up front tells the real (rotated) frame size and rejects files that open
        but do not decode, before any caller has planned around them.
        """
        try:
            container = av.open(str(path) if target is None else target, mode="r", **options)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise InputError(path, f"not a readable video: {_short_reason(exc)}") from None
        try:
            if not container.streams.video:
                raise InputError(path, "not a readable video: no video stream in file")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            decoder = container.decode(stream)
            try:
                first = next(decoder)
            except StopIteration:
                raise InputError(path, "not a readable video: video stream has no decodable frames") from None
            except (av.FFmpegError, OSError, ValueError) as exc:
                raise InputError(path, f"not a readable video: cannot decode the first frame "
                                       f"({_short_reason(exc)})") from None
        except BaseException:
            container.close()
            raise
        return container, decoder, first

    def _open_video(self, path: Path) -> VideoInfo:
        container, decoder, first = self._open_container(path)
        self._probe = (container, decoder, first)
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        total = int(stream.frames) if stream.frames and stream.frames > 0 else None
        self._rot = _rotation_steps(first) if self.autorotate else 0
        w, h = int(first.width), int(first.height)
        if self._rot % 2:
            w, h = h, w
        ow, oh = scaled_size(w, h, self.max_side)
        self._declared_s = _stream_duration_s(stream)
        self._fps = fps
        return VideoInfo(self.source, path.stem, "video", fps, ow, oh, w, h,
                         _count(total, self.start, self.end, self.stride), total)

    def _open_live(self) -> VideoInfo:
        """A camera (OpenCV) or a network / standard-input stream (PyAV), with its first frame read."""
        name = live_name(self.source)
        cam = _CAMERA.match(self.source)
        if cam:
            cap = cv2.VideoCapture(int(cam.group(1)), cv2.CAP_V4L2)
            ok, bgr = cap.read() if cap.isOpened() else (False, None)
            if not ok or bgr is None:
                cap.release()
                raise InputError(self.source, "cannot read from the camera (missing, busy or no permission)")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            self._camera = (cap, rgb)
            rate = cap.get(cv2.CAP_PROP_FPS)
            fps = float(rate) if rate and rate > 0 else None
            h, w = rgb.shape[:2]
            kind = "camera"
        else:
            if self.source == "-":
                import sys

                target: Any = sys.stdin.buffer
                options: Dict[str, Any] = {}
            else:
                target, options = self.source, {"timeout": (LIVE_TIMEOUT_S, LIVE_TIMEOUT_S)}
            container, decoder, first = self._open_container(self.source, target, **options)
            self._probe = (container, decoder, first)
            fps = _stream_fps(container.streams.video[0])
            w, h = int(first.width), int(first.height)
            kind = "stream"
        self._fps = fps
        ow, oh = scaled_size(w, h, self.max_side)
        return VideoInfo(self.source, name, kind, fps, ow, oh, w, h, None, None)

    @property
    def live(self) -> bool:
        """A live source (camera, network stream, standard input): no frame count, read once."""
        return self.info.kind in ("camera", "stream")

    # ------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Frame]:
        if self._closed:
            raise ValueError(f"{self.source}: stream is closed")
        if self.info.kind == "camera":
            gen = self._iter_camera()
        else:
            gen = self._iter_video() if self.info.kind in ("video", "stream") else self._iter_images()
        self._iterators.add(gen)
        return gen

    def _wanted(self, index: int) -> bool:
        return index >= self.start and (index - self.start) % self.stride == 0

    def _iter_images(self) -> Iterator[Frame]:
        info = self.info
        stop = len(self._files) if self.end is None else min(self.end, len(self._files))
        first_path = self._files[0]
        for i in range(self.start, stop, self.stride):
            path = self._files[i]
            if i == 0 and self._first_image is not None:
                rgb, self._first_image = self._first_image, None
            else:
                rgb = read_image(path)
            h, w = rgb.shape[:2]
            if (w, h) != (info.orig_width, info.orig_height):
                raise InputError(path, f"frame size {w}x{h} differs from {info.orig_width}x{info.orig_height} "
                                       f"of the first frame {first_path.name}")
            rgb = np.ascontiguousarray(_resize(rgb, info.width, info.height))
            yield Frame(i, rgb, path.stem)

    def _to_rgb(self, frame: Any) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24")
        if self._rot:
            rgb = np.rot90(rgb, self._rot)
        rgb = _resize(rgb, self.info.width, self.info.height)
        return np.ascontiguousarray(rgb)

    def _iter_video(self) -> Iterator[Frame]:
        path = Path(os.path.expanduser(self.source))
        if self._probe is not None:
            (container, decoder, first), self._probe = self._probe, None
        elif self.live:
            raise InputError(self.source, "a live stream can be read only once")
        else:
            container, decoder, first = self._open_container(path)
        stream = container.streams.video[0]
        start_s = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
        index = -1
        last_time: Optional[float] = None
        pending: Optional[Any] = first
        if self.info.num_frames == 0:  # start past the known end: nothing to decode
            container.close()
            return
        jump = None if self.live else self._seek(container, stream, first)
        if jump is not None:  # decoding resumes at the keyframe before `start`
            index, pending, decoder = jump
            index -= 1
        try:
            while self.end is None or index + 1 < self.end:
                if pending is not None:
                    frame, pending = pending, None
                else:
                    try:
                        frame = next(decoder)
                    except StopIteration:
                        if not self.live:  # a stream ends when it ends
                            self._check_complete(path, index, last_time, start_s)
                        return
                    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
                        err = InputError(path, f"corrupt video stream after frame {index} "
                                               f"(last decoded frame index {index}): {_short_reason(exc)}")
                        err.frame_index = index  # type: ignore[attr-defined]
                        raise err from None
                index += 1
                if frame.time is not None:
                    last_time = float(frame.time)
                if self._wanted(index):
                    yield Frame(index, self._to_rgb(frame), f"{index:05d}")
                del frame  # release the decoder buffer before decoding the next frame
        finally:
            container.close()

    def _iter_camera(self) -> Iterator[Frame]:
        if self._camera is None:
            raise InputError(self.source, "a camera can be read only once per open_video")
        cap, first = self._camera
        self._camera = None
        pending: Optional[np.ndarray] = first
        index = -1
        try:
            while self.end is None or index + 1 < self.end:
                if pending is not None:
                    rgb, pending = pending, None
                else:
                    ok, bgr = cap.read()
                    if not ok:  # unplugged or closed: the stream ends
                        return
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                index += 1
                if self._wanted(index):
                    yield Frame(index, np.ascontiguousarray(_resize(rgb, self.info.width, self.info.height)),
                                f"{index:05d}")
        finally:
            cap.release()

    def _seek(self, container: Any, stream: Any, first: Any) -> Optional[Tuple[int, Any, Any]]:
        """Jump to the keyframe at or before frame ``start`` instead of decoding every frame before it.

        Returns ``(index of the next frame, that frame, decoder)``, or ``None`` (decode from frame 0) when
        ``start`` is near the beginning or the stream's timestamps do not map onto frame indices (a frame's
        index is ``(pts - pts of frame 0) × fps``, which holds for constant-frame-rate streams: checked on
        the frame the seek lands on, and the container is rewound when it does not hold).
        """
        fps, tb = self._fps, stream.time_base
        if self.start < SEEK_MIN_FRAMES or not fps or not tb or first.pts is None:
            return None
        origin = float(first.pts * tb)
        target = int((origin + (self.start - 0.5) / fps) / tb)  # half a frame early: rounding-safe
        try:
            container.seek(target, stream=stream, backward=True, any_frame=False)
            decoder = container.decode(stream)
            frame = next(decoder)
        except (av.FFmpegError, OSError, ValueError, EOFError, StopIteration):
            frame = None
        if frame is not None and frame.pts is not None:
            pos = (float(frame.pts * tb) - origin) * fps
            if abs(pos - round(pos)) < 0.2 and 0 <= round(pos) <= self.start:
                return int(round(pos)), frame, decoder
        container.seek(0, stream=stream, backward=True, any_frame=False)  # not a mappable stream: from the start
        decoder = container.decode(stream)
        frame = next(decoder, None)
        if frame is None or frame.pts != first.pts:
            raise InputError(self.source, "cannot rewind the video after a failed seek")
        return 0, frame, decoder

    def _check_complete(self, path: Path, last_index: int, last_time: Optional[float], start_s: float) -> None:
        """At end of stream, tell a truncated file from a complete one.

        FFmpeg often stops silently at a cut in the data (e.g. an mp4 whose index precedes the data, an
        avi, an mkv). The container's frame count (mp4/mov/avi) or the stream duration (mkv/webm DURATION
        tag) reveals it. Complete files can also decode fewer frames than they declare (mp4 edit lists
        that trim the start, avi captures with dropped-frame placeholders), so where the container also
        declares a duration, a frame-count shortfall is only an error if the timestamps confirm it.
        """
        decoded = last_index + 1
        total = self.info.total_frames
        frame_s = 1.0 / self._fps if self._fps else 0.0
        reached_s = None if last_time is None else last_time - start_s + frame_s
        declared_s = self._declared_s
        tolerance = max(3 * frame_s, 0.02 * declared_s) if declared_s else 0.0
        time_short = reached_s is not None and declared_s is not None and reached_s < declared_s - tolerance
        if total is not None and decoded < total:
            if reached_s is not None and declared_s is not None and not time_short:
                return
            err = InputError(path, f"video stream ended after frame {last_index} (last decoded frame index), "
                                   f"container declares {total} frames; truncated file?")
        elif total is None and time_short:
            err = InputError(path, f"video stream ended after frame {last_index} (last decoded frame index) at "
                                   f"{reached_s:.2f} s, container declares {declared_s:.2f} s; truncated file?")
        else:
            return
        err.frame_index = last_index  # type: ignore[attr-defined]
        raise err

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the probe container and stop every running iteration (their containers close too)."""
        self._closed = True
        for gen in list(self._iterators):
            gen.close()
        if self._probe is not None:
            self._probe[0].close()
            self._probe = None
        if self._camera is not None:
            self._camera[0].release()
            self._camera = None
        self._first_image = None

    def __enter__(self) -> "VideoStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        i = self.info
        return (f"VideoStream({i.source!r}, kind={i.kind}, {i.width}x{i.height}, fps={i.fps}, "
                f"num_frames={i.num_frames})")


def open_video(
    source: PathLike,
    *,
    start: int = 0,
    end: Optional[int] = None,
    stride: int = 1,
    max_side: Optional[int] = None,
    autorotate: bool = True,
) -> VideoStream:
    """Open a video file, frame folder or glob for streaming.

    Args:
        source: path of a video file or frame folder, a glob pattern of image files, or a live source
            (``"-"``, a stream URL, ``/dev/videoN``; see the module docstring).
        start, end, stride: yield source frames ``range(start, end, stride)``; ``end`` is exclusive and
            ``None`` means to the end. A ``start`` past the end yields nothing (``info.num_frames == 0``
            where the count is known).
        max_side: shrink frames (area interpolation) so that ``max(H, W) <= max_side``; never upscales.
        autorotate: apply the display rotation stored in the video (phone videos), like video players.

    Raises:
        InputError: missing path, unreadable video, folder without frames (details in the module doc).
        ValueError: an option out of range.
    """
    return VideoStream(source, start=start, end=end, stride=stride, max_side=max_side, autorotate=autorotate)


def read_frames(
    source: PathLike,
    *,
    start: int = 0,
    end: Optional[int] = None,
    stride: int = 1,
    max_side: Optional[int] = None,
    autorotate: bool = True,
) -> Iterator[Frame]:
    """Generator of :class:`Frame` (see :func:`open_video`); the source is closed when it finishes.

    Errors about the source itself (missing, unreadable) are raised on the first ``next()``, as for any
    generator; use :func:`open_video` to fail at open time.
    """
    with open_video(source, start=start, end=end, stride=stride, max_side=max_side, autorotate=autorotate) as s:
        yield from s


def probe_video(source: PathLike, *, max_side: Optional[int] = None) -> VideoInfo:
    """:class:`VideoInfo` of a source (decodes at most its first frame)."""
    with open_video(source, max_side=max_side) as s:
        return s.info


# --------------------------------------------------------------------------- writing


def _encoder_available(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # UnknownCodecError, or a codec that exists only as a decoder
        return False
    return True


_DEFAULT_CODECS: Dict[str, Tuple[str, ...]] = {
    ".mp4": ("libx264", "mpeg4"),
    ".m4v": ("libx264", "mpeg4"),
    ".mov": ("libx264", "mpeg4"),
    ".mkv": ("libx264", "mpeg4"),
    ".avi": ("mpeg4", "mjpeg"),
    ".webm": ("libvpx-vp9", "libvpx"),
}


class VideoWriter(CommitOnExit):
    """Write RGB frames to a video file, atomically.

    Frames go to a hidden temp file next to the target (``.<name>.<random>.tmp<ext>``, same extension so
    the muxer is chosen the same way); a clean close renames it onto ``path``. An exception inside the
    ``with`` block (or :meth:`abort`) deletes the temp file, so a crash never leaves a half-written video
    under the final name, and an existing file there stays untouched.

    Codec by extension unless given: H.264 (``libx264``, falling back to ``mpeg4``) for mp4/mov/mkv,
    ``mpeg4`` for avi, VP9 (falling back to VP8) for webm; pixel format ``yuv420p`` for the widest
    player support. yuv420p needs even sizes, so an odd width or height is padded by one replicated
    pixel column/row (``out_width``/``out_height`` tell the stored size).

    Args:
        path: output file; its parent folders are created.
        fps: frame rate (> 0), stored as a fraction (29.97 → 30000/1001).
        width, height: size of the frames passed to :meth:`write`.
        codec: FFmpeg encoder name to force.
        crf: constant-rate quality for libx264 (default 23) and VP9/VP8 (default 32); lower is better.
        bit_rate: target bits/s for other codecs (default about 0.5 bit per pixel per frame, ≥ 1 Mbit/s).
        preset: libx264 speed preset (default ``"medium"``).
    """

    def __init__(
        self,
        path: PathLike,
        fps: float,
        width: int,
        height: int,
        *,
        codec: Optional[str] = None,
        crf: Optional[int] = None,
        bit_rate: Optional[int] = None,
        preset: Optional[str] = None,
    ) -> None:
        self.path = Path(os.fspath(path))
        try:
            fps_f = float(fps)
        except (TypeError, ValueError):
            raise SettingError(f"fps must be a number, got {fps!r}") from None
        if not math.isfinite(fps_f) or fps_f <= 0:
            raise SettingError(f"fps must be positive, got {fps!r}")
        for name, v in (("width", width), ("height", height)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise SettingError(f"{name} must be a positive integer, got {v!r}")
        self.fps = fps_f
        self.width, self.height = int(width), int(height)
        self.out_width, self.out_height = self.width + self.width % 2, self.height + self.height % 2
        ext = self.path.suffix.lower()
        if codec is None:
            if ext not in _DEFAULT_CODECS:
                raise SettingError(f"{self.path}: unsupported video extension {ext!r} "
                                 f"(use one of {', '.join(sorted(_DEFAULT_CODECS))})")
            candidates = [c for c in _DEFAULT_CODECS[ext] if _encoder_available(c)]
            if not candidates:
                raise RuntimeError(f"no encoder for {ext} in this PyAV build (tried {_DEFAULT_CODECS[ext]})")
            codec = candidates[0]
        self.codec = codec
        self.frames_written = 0

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp{self.path.suffix}")
        container_options = {"movflags": "+faststart"} if ext in (".mp4", ".m4v", ".mov") else {}
        self._container = av.open(str(self.tmp_path), mode="w", options=container_options)
        try:
            self._rate = Fraction(fps_f).limit_denominator(1001)
            options: Dict[str, str] = {}
            if codec in ("libx264", "h264"):
                options = {"crf": str(23 if crf is None else crf), "preset": preset or "medium"}
            elif codec in ("libvpx-vp9", "libvpx"):
                options = {"crf": str(32 if crf is None else crf), "b": "0",
                           "deadline": "good", "cpu-used": "5"}
                if codec == "libvpx":
                    options["b"] = str(bit_rate or self._default_bit_rate())
            stream = cast("av.VideoStream", self._container.add_stream(codec, rate=self._rate, options=options))
            stream.width, stream.height = self.out_width, self.out_height
            stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
            if not options:
                stream.bit_rate = int(bit_rate or self._default_bit_rate())
            self._stream = stream
        except BaseException:
            self._discard()
            raise
        self._open = True

    def _default_bit_rate(self) -> int:
        return max(1_000_000, int(0.5 * self.out_width * self.out_height * self.fps))

    def write(self, rgb: np.ndarray) -> None:
        """Encode one ``height×width×3`` uint8 RGB frame."""
        if not self._open:
            raise ValueError(f"{self.path}: writer is closed")
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.shape != (self.height, self.width, 3):
            raise ValueError(f"{self.path}: expected a {self.height}x{self.width}x3 uint8 frame, "
                             f"got {rgb.shape} {rgb.dtype}")
        if (self.out_width, self.out_height) != (self.width, self.height):
            rgb = np.pad(rgb, ((0, self.out_height - self.height), (0, self.out_width - self.width), (0, 0)),
                         mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames_written
        frame.time_base = 1 / self._rate
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and move the finished file onto ``path``.

        Raises ValueError (and writes nothing) when no frame was written: a video without frames is
        not a valid file for most players, and FFmpeg would not create it.
        """
        if not self._open:
            return
        self._open = False
        try:
            if self.frames_written == 0:
                raise ValueError(f"{self.path}: no frames were written; refusing to create an empty video")
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            with open(self.tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tmp_path, self.path)
        except BaseException:
            self._discard()
            raise

    def abort(self) -> None:
        """Stop writing and delete the temp file; ``path`` is not touched."""
        if self._open:
            self._open = False
            self._discard()

    def _discard(self) -> None:
        try:
            self._container.close()
        except Exception:
            pass
        try:
            os.unlink(self.tmp_path)
        except FileNotFoundError:
            pass

