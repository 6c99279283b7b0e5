"""The report's figures, drawn with matplotlib into PNG files.

Figures are built with :class:`matplotlib.figure.Figure` and saved through the Agg canvas, never through
``pyplot``: no global state, no backend switch, nothing left open. matplotlib is imported when a figure is
drawn, not when :mod:`s2d.report` is imported.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np

from s2d.errors import S2DError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["sparkline", "timeline", "jf_bars", "j_per_frame", "hex_color"]


def _figure(width_px: int, height_px: int, dpi: int = 100) -> "Figure":
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise S2DError("s2d report needs matplotlib: pip install matplotlib") from None
    return Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)


def hex_color(rgb: Tuple[int, int, int]) -> str:
    """``#rrggbb`` of an RGB triple."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _save(fig: "Figure", path: PathLike) -> None:
    fig.savefig(os.fspath(path), format="png", dpi=fig.dpi, transparent=False, facecolor="white")


def sparkline(path: PathLike, values: Union[Sequence[float], np.ndarray], color: str, *, width: int = 180, height: int = 36) -> None:
    """Area over time: a filled line over all frames, no axes (absent frames are 0)."""
    fig = _figure(width, height)
    ax = fig.add_axes((0.0, 0.04, 1.0, 0.92))
    x = np.arange(len(values))
    y = np.asarray(values, dtype=float)
    ax.fill_between(x, y, color=color, alpha=0.35, linewidth=0)
    ax.plot(x, y, color=color, linewidth=1.0)
    ax.set_xlim(0, max(len(values) - 1, 1))
    ax.set_ylim(0, max(float(y.max()) if y.size else 0.0, 1e-6) * 1.05)
    ax.set_axis_off()
    _save(fig, path)


def _runs(present: np.ndarray) -> List[Tuple[int, int]]:
    """``(start, length)`` of each run of ``True`` in a boolean vector."""
    padded = np.concatenate([[False], present, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2])]


def timeline(path: PathLike, rows: Sequence[Tuple[int, np.ndarray, str]], num_frames: int, *,
             title: str = "", marker_only: bool = False, width: int = 900) -> None:
    """Which ids are present on which frames: one row per id, a bar per run of frames (or a tick per
    frame with ``marker_only``, for sparse keymask frames)."""
    height = 60 + 18 * max(len(rows), 1)
    fig = _figure(width, height)
    ax = fig.add_axes((0.07, 42 / height, 0.91, 1 - 60 / height))
    for k, (tid, present, color) in enumerate(rows):
        if marker_only:
            ax.vlines(np.flatnonzero(present) + 0.5, k - 0.35, k + 0.35, color=color, linewidth=1.5)
        else:
            ax.broken_barh(_runs(present), (k - 0.35, 0.7), facecolors=color)
    ax.set_yticks(range(len(rows)), [str(tid) for tid, _, _ in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, max(num_frames, 1))
    ax.set_xlabel("frame")
    ax.set_ylabel("id")
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path)


def jf_bars(path: PathLike, sequences: Sequence[Mapping[str, object]], *, title: str = "") -> None:
    """Per-sequence J-Mean and F-Mean as grouped bars (the keys of ``s2d eval davis --json`` rows)."""
    names = [str(s["sequence"]) for s in sequences]
    j = [float(s.get("J-Mean", np.nan)) for s in sequences]  # type: ignore[arg-type]
    f = [float(s.get("F-Mean", np.nan)) for s in sequences]  # type: ignore[arg-type]
    fig = _figure(max(420, 60 * len(names) + 120), 300)
    ax = fig.add_axes((0.1, 0.3, 0.86, 0.6))
    x = np.arange(len(names))
    ax.bar(x - 0.2, j, 0.4, label="J (region)", color="#4c72b0")
    ax.bar(x + 0.2, f, 0.4, label="F (boundary)", color="#dd8452")
    ax.set_xticks(x, names, rotation=40, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path)


def j_per_frame(path: PathLike, frames: Sequence[int], per_object: Dict[str, np.ndarray], *, title: str = "") -> None:
    """J on each scored frame, one line per ground-truth object."""
    fig = _figure(420, 220)
    ax = fig.add_axes((0.12, 0.2, 0.84, 0.68))
    for label, values in per_object.items():
        ax.plot(list(frames), values, linewidth=1.2, label=label)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("frame", fontsize=8)
    ax.set_ylabel("J", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if len(per_object) > 1:
        ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path)
