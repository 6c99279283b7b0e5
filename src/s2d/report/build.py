"""``s2d report OUTDIR``: one static HTML page about a run, opened from disk (no server, no JavaScript).

What it shows, by what OUTDIR holds:

* ``s2d segment`` output (``OUTDIR/<video>/results.json``, or OUTDIR itself being one video's folder): per
  video the overlay video in a ``<video>`` element, one row per object id (thumbnail, score, first and last
  frame, frames present, area over time) and a timeline of which ids are on which frames.
* ``s2d discover`` output (``OUTDIR/pseudo_labels.json``): per video one row per object with its saliency,
  keymask count and thumbnails of its keymask frames (from the source video under the run's root), and a
  timeline of the keymask frames: what training will use.
* ``s2d eval davis --json`` reports in or beside OUTDIR (or named with ``--eval``): per-sequence J and F
  bars and J per frame (:mod:`s2d.report.evaldata`).

The page (default ``OUTDIR/report.html``) links its pictures from a folder beside it (``report_files/``) and
the overlay videos by relative paths, so the folder can be moved as a whole. An overlay whose codec
browsers do not play (H.264, VP8, VP9 and AV1 are played) is transcoded to VP9 WebM in ``report_files/``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from s2d import rle as rle_utils
from s2d.errors import InputError, S2DError
from s2d.types import VideoSegmentation

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["build_report", "ObjectRow", "VideoSection", "EvalSection"]

PLAYABLE_CODECS = ("h264", "vp8", "vp9", "av1")
MAX_KEYMASK_THUMBS = 6


@dataclass
class ObjectRow:
    """One object id of one video, as the page shows it."""

    id: int
    color: str
    score: float
    first: Optional[int]
    last: Optional[int]
    frames: int
    thumb: Optional[str] = None
    sparkline: Optional[str] = None
    saliency: Optional[float] = None
    keymasks: List[Tuple[int, str]] = field(default_factory=list)  # (frame, thumbnail)


@dataclass
class VideoSection:
    """One video: its overlay, objects and timeline."""

    name: str
    kind: str  # "segment" or "discover"
    num_frames: int
    width: int
    height: int
    objects: List[ObjectRow]
    timeline: Optional[str] = None
    video_src: Optional[str] = None
    notes: List[str] = field(default_factory=list)


@dataclass
class EvalSection:
    """One ``s2d eval davis`` report: global numbers, J/F bars, J per frame of each sequence."""

    source: str
    protocol: str
    glob: Dict[str, float]
    sequences: List[Dict[str, Any]]
    bars: str
    per_frame: List[Tuple[str, str]] = field(default_factory=list)  # (sequence, picture)
    notes: List[str] = field(default_factory=list)


class _Assets:
    """The pictures folder beside the page, and the links to its files from the page."""

    def __init__(self, html: Path) -> None:
        self.html_dir = html.parent
        self.root = html.parent / f"{html.stem}_files"

    def path(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def link(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.html_dir)).as_posix()


# --------------------------------------------------------------------------- inputs
def find_segment_runs(outdir: Path) -> List[Path]:
    """Folders of ``s2d segment`` outputs: ``OUTDIR/*/results.json``, or OUTDIR itself."""
    if (outdir / "results.json").is_file():
        return [outdir]
    return sorted(p.parent for p in outdir.glob("*/results.json") if p.is_file())


def _read_one_video(results: Path, name: str) -> VideoSegmentation:
    from s2d.io.formats import read_ytvis

    videos = read_ytvis(results)
    vids = videos if isinstance(videos, list) else [videos]
    if len(vids) != 1:
        raise InputError(results, f"holds {len(vids)} videos; an s2d segment folder holds one")
    v = vids[0]
    return VideoSegmentation(v.height, v.width, v.num_frames, v.tracks, fps=v.fps, name=name,
                             video_id=v.video_id, frame_names=v.frame_names)


def _playable_video(overlay: Path, assets: _Assets, name: str, notes: List[str]) -> Optional[str]:
    """The link to play ``overlay`` in the page: itself when browsers play its codec, else a VP9 copy."""
    import av

    try:
        with av.open(os.fspath(overlay)) as c:
            codec = c.streams.video[0].codec_context.name
    except (av.FFmpegError, IndexError, OSError) as exc:
        notes.append(f"overlay.mp4 is not readable ({exc}); no video shown")
        return None
    if codec in PLAYABLE_CODECS:
        return assets.link(overlay)
    target = assets.path(name, "overlay.webm")
    _transcode_vp9(overlay, target)
    notes.append(f"overlay.mp4 is {codec}, which browsers do not play: shown as a VP9 WebM copy")
    return assets.link(target)


def _transcode_vp9(src: Path, dst: Path) -> None:
    from s2d.io.video import VideoWriter, open_video

    with open_video(src) as stream:
        info = stream.info
        with VideoWriter(dst, info.fps or 25.0, info.width, info.height) as writer:
            for frame in stream:
                writer.write(frame.rgb)


# --------------------------------------------------------------------------- objects
def _areas(video: VideoSegmentation, tid: int) -> np.ndarray:
    tr = video.track(tid)
    return np.array([tr.area(t) for t in range(tr.num_frames)], dtype=np.float64)


def _object_row(video: VideoSegmentation, tid: int, assets: _Assets, folder: str) -> ObjectRow:
    from s2d.io.overlay import color_for_id
    from s2d.report import plots

    tr = video.track(tid)
    present = tr.present_frames()
    color = plots.hex_color(color_for_id(tid))
    spark = assets.path(folder, f"area_{tid}.png")
    plots.sparkline(spark, _areas(video, tid) / max(video.height * video.width, 1), color)
    row = ObjectRow(tid, color, tr.score, present[0] if present else None, present[-1] if present else None,
                    len(present), sparkline=assets.link(spark))
    if "saliency" in tr.extra:
        row.saliency = float(tr.extra["saliency"])
    return row


def _timeline(video: VideoSegmentation, assets: _Assets, folder: str, *, marker_only: bool) -> str:
    from s2d.io.overlay import color_for_id
    from s2d.report import plots

    rows = [(tr.id, np.array([m is not None for m in tr.masks], dtype=bool), plots.hex_color(color_for_id(tr.id)))
            for tr in video.tracks]
    path = assets.path(folder, "timeline.png")
    title = "keymask frames per object" if marker_only else "frames on which each id is present"
    plots.timeline(path, rows, video.num_frames, title=title, marker_only=marker_only)
    return assets.link(path)


def _best_frame(video: VideoSegmentation, tid: int) -> Optional[int]:
    areas = _areas(video, tid)
    return int(np.argmax(areas)) if areas.max(initial=0) > 0 else None


def _thumbnails(video: VideoSegmentation, wanted: Dict[Tuple[int, int], Path], frames_src: Optional[Path],
                tint: bool, progress: bool, notes: List[str]) -> None:
    """Write the thumbnail of each ``(id, frame)`` in ``wanted``: from ``frames_src`` when readable, else the mask."""
    from s2d.io.overlay import color_for_id
    from s2d.report.thumbs import collect_frames, mask_image, save_thumbnail

    frames: Dict[int, np.ndarray] = {}
    if frames_src is not None:
        try:
            frames = collect_frames(frames_src, {t for _, t in wanted}, progress=progress, desc=video.name or "frames")
        except S2DError as exc:
            notes.append(f"frames not readable ({exc}); thumbnails show the masks")
    for (tid, t), path in wanted.items():
        rle = video.track(tid).masks[t]
        box = rle_utils.bbox(rle) if rle is not None else None
        if rle is None or box is None:
            continue
        mask = rle_utils.decode(rle)
        color = color_for_id(tid)
        rgb = frames.get(t)
        if rgb is None or rgb.shape[:2] != mask.shape:
            save_thumbnail(path, mask_image(mask, color), box)
        else:
            save_thumbnail(path, rgb, box, mask=mask if tint else None, color=color)


# --------------------------------------------------------------------------- sections
def segment_section(folder: Path, assets: _Assets, progress: bool) -> VideoSection:
    """The section of one ``s2d segment`` output folder."""
    name = folder.name
    video = _read_one_video(folder / "results.json", name)
    section = VideoSection(name, "segment", video.num_frames, video.width, video.height, [])
    overlay = folder / "overlay.mp4"
    if overlay.is_file():
        section.video_src = _playable_video(overlay, assets, name, section.notes)
    else:
        section.notes.append("no overlay.mp4 (segment with --format ...,overlay to see the video here)")
    ordered = sorted(video.tracks, key=lambda tr: tr.id)
    section.objects = [_object_row(video, tr.id, assets, name) for tr in ordered]
    wanted: Dict[Tuple[int, int], Path] = {}
    for row in section.objects:
        t = _best_frame(video, row.id)
        if t is not None:
            wanted[(row.id, t)] = assets.path(name, f"thumb_{row.id}.jpg")
            row.thumb = assets.link(wanted[(row.id, t)])
    # the overlay already shows each mask in its colour: no second tint
    _thumbnails(video, wanted, overlay if section.video_src else None, False, progress, section.notes)
    section.timeline = _timeline(video, assets, name, marker_only=False)
    return section


def _discover_root(run: Path) -> Optional[Path]:
    try:
        root = json.loads((run / "settings.json").read_text(encoding="utf-8")).get("root")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(root) if root else None


def _evenly(items: Sequence[int], k: int) -> List[int]:
    if len(items) <= k:
        return list(items)
    return [items[int(round(i * (len(items) - 1) / (k - 1)))] for i in range(k)]


def discover_sections(run: Path, assets: _Assets, progress: bool) -> List[VideoSection]:
    """One section per video of an ``s2d discover`` run (its ``pseudo_labels.json``)."""
    from s2d.io.formats import read_ytvis

    videos = read_ytvis(run / "pseudo_labels.json")
    vids = videos if isinstance(videos, list) else [videos]
    root = _discover_root(run)
    out = []
    for i, video in enumerate(vids):
        name = video.name or f"video{i + 1}"
        folder = f"discover_{i + 1}"
        section = VideoSection(name, "discover", video.num_frames, video.width, video.height, [])
        wanted: Dict[Tuple[int, int], Path] = {}
        for tr in sorted(video.tracks, key=lambda tr: tr.id):
            row = _object_row(video, tr.id, assets, folder)
            for t in _evenly(tr.present_frames(), MAX_KEYMASK_THUMBS):
                wanted[(tr.id, t)] = assets.path(folder, f"key_{tr.id}_{t}.jpg")
                row.keymasks.append((t, assets.link(wanted[(tr.id, t)])))
            section.objects.append(row)
        src = root / name if root is not None else None
        if src is None or not src.exists():
            section.notes.append(f"source frames not found ({src}); thumbnails show the keymasks")
            src = None
        _thumbnails(video, wanted, src, True, progress, section.notes)
        section.timeline = _timeline(video, assets, folder, marker_only=True)
        out.append(section)
    return out


def eval_section(path: Path, report: Dict[str, Any], index: int, assets: _Assets, progress: bool) -> EvalSection:
    """The section of one ``s2d eval davis --json`` report."""
    from tqdm import tqdm

    from s2d.report import plots
    from s2d.eval.davis import frame_j

    folder = f"eval_{index}"
    seqs = list(report["sequences"])
    bars = assets.path(folder, "jf_bars.png")
    plots.jf_bars(bars, seqs, title=f"{path.name}: protocol {report['protocol']}")
    section = EvalSection(str(path), str(report["protocol"]), dict(report.get("global", {})), seqs, assets.link(bars))
    for seq in tqdm(seqs, desc="J per frame", unit="seq", disable=not progress, leave=False):
        try:
            frames, values = frame_j(report, seq)
        except S2DError as exc:
            section.notes.append(f"{seq['sequence']}: no J per frame ({exc})")
            continue
        pic = assets.path(folder, f"j_{len(section.per_frame)}.png")
        plots.j_per_frame(pic, frames, values, title=str(seq["sequence"]))
        section.per_frame.append((str(seq["sequence"]), assets.link(pic)))
    return section


# --------------------------------------------------------------------------- page
def _render(html: Path, context: Dict[str, Any]) -> None:
    import jinja2

    from s2d.io.atomic import atomic_write_text

    env = jinja2.Environment(loader=jinja2.PackageLoader("s2d.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    atomic_write_text(html, env.get_template("report.html.j2").render(**context))


def build_report(outdir: PathLike, *, output: Optional[PathLike] = None, eval_reports: Sequence[PathLike] = (),
                 title: Optional[str] = None, progress: Optional[bool] = None) -> Path:
    """Write the HTML report of a run folder; returns the page's path (see the module docstring).

    Raises :class:`InputError` when OUTDIR is missing or holds nothing to report.
    """
    from s2d.report.evaldata import find_eval_reports

    out = Path(outdir)
    if not out.is_dir():
        raise InputError(out, "no such folder (expected an s2d segment or s2d discover output folder)")
    show = sys.stderr.isatty() if progress is None else bool(progress)
    html = Path(output) if output is not None else out / "report.html"
    assets = _Assets(html)
    runs = find_segment_runs(out)
    discover = (out / "pseudo_labels.json").is_file()
    evals = find_eval_reports(out, [Path(p) for p in eval_reports])
    if not runs and not discover and not evals:
        raise InputError(out, "nothing to report: no <video>/results.json (s2d segment), pseudo_labels.json "
                              "(s2d discover) or s2d eval davis --json report here")
    from tqdm import tqdm

    videos = [segment_section(r, assets, show) for r in tqdm(runs, desc="report", unit="video", disable=not show)]
    if discover:
        videos += discover_sections(out, assets, show)
    sections = [eval_section(p, rep, i + 1, assets, show) for i, (p, rep) in enumerate(evals)]
    from s2d import __version__

    _render(html, {"title": title or f"s2d report: {out.resolve().name}", "outdir": str(out.resolve()),
                   "videos": videos, "evals": sections, "version": __version__})
    return html
