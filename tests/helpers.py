"""Helpers that write tiny synthetic videos and frame folders for tests (shared by all test modules).

The writers use PyAV and OpenCV directly, not :mod:`s2d.io.video`, so reader tests do not depend on the
code under test for their inputs.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

import av
import cv2
import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

# Per-frame colour: R encodes the frame index, B its mirror, G is constant. Flat colours survive lossy
# codecs within a few levels, so a decoded frame is identified by round((R - R0) / STEP).
R0, STEP, G_LEVEL = 20, 18, 100


def frame_color(i: int) -> tuple:
    """RGB of synthetic frame ``i`` (indices repeat every 12 frames)."""
    k = i % 12
    return (R0 + STEP * k, G_LEVEL, 230 - STEP * k)


def make_frames(n: int = 12, height: int = 32, width: int = 48, *, pattern: bool = False) -> List[np.ndarray]:
    """``n`` frames, ``height×width×3`` uint8 RGB, frame ``i`` filled with :func:`frame_color` ``(i)``.

    ``pattern=True`` adds a moving white square (gives codecs motion to encode; harmless for index
    identification since it covers a small area).
    """
    frames = []
    for i in range(n):
        a = np.empty((height, width, 3), np.uint8)
        a[:] = frame_color(i)
        if pattern:
            s = max(2, min(height, width) // 6)
            x = (i * 3) % max(1, width - s)
            a[:s, x:x + s] = 255
        frames.append(a)
    return frames


def moving_square(n: int, height: int = 48, width: int = 64) -> List[np.ndarray]:
    """``n`` frames of a red square moving 2 px per frame over a fixed random background (seed 0): one clear
    moving object, for end-to-end runs of the tiny model."""
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    frames = []
    for t in range(n):
        f = bg.copy()
        f[12:28, 4 + 2 * t:20 + 2 * t] = (250, 40, 40)
        frames.append(f)
    return frames


def frame_index_of(rgb: np.ndarray) -> int:
    """Recover ``i % 12`` from a decoded synthetic frame (robust to codec noise and resizing)."""
    r = float(np.median(rgb[..., 0]))
    return int(round((r - R0) / STEP))


def codec_available(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def make_video(path: PathLike, frames: Sequence[np.ndarray], fps: float = 10, *, codec: Optional[str] = None,
               options: Optional[dict] = None, container_options: Optional[dict] = None,
               rotation: Optional[int] = None) -> Path:
    """Write RGB ``frames`` to ``path`` with PyAV; the container follows the extension.

    Default codec per extension: libx264 (mp4/mov/mkv), mpeg4 (avi), libvpx-vp9 (webm). Frame sizes must
    be even for the yuv420p codecs. ``rotation`` stores a display rotation (degrees counter-clockwise).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if codec is None:
        codec = {".avi": "mpeg4", ".webm": "libvpx-vp9"}.get(ext, "libx264")
    h, w = frames[0].shape[:2]
    opts = dict(options or {})
    if codec == "libx264":
        opts.setdefault("crf", "18")
        opts.setdefault("preset", "ultrafast")
    if codec in ("libvpx-vp9", "libvpx"):
        opts.setdefault("deadline", "realtime")
        opts.setdefault("cpu-used", "8")
    with av.open(str(path), mode="w", options=container_options or {}) as c:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=opts)
        s.width, s.height = w, h
        s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec == "mpeg4":
            s.bit_rate = 2_000_000
        if rotation:
            s.set_display_rotation(rotation)
        for a in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def make_frame_folder(folder: PathLike, frames: Sequence[np.ndarray], *, names: Optional[Iterable[str]] = None,
                      ext: str = ".png") -> Path:
    """Write ``frames`` as images ``folder/<name><ext>`` (names default to ``00000``, ``00001``, ...)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(names) if names is not None else [f"{i:05d}" for i in range(len(frames))]
    assert len(names) == len(frames)
    for name, a in zip(names, frames):
        ok = cv2.imwrite(str(folder / f"{name}{ext}"), cv2.cvtColor(a, cv2.COLOR_RGB2BGR))
        assert ok, folder / f"{name}{ext}"
    return folder
