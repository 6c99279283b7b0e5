"""Keymask discovery over many videos: inputs, per-video pipeline, parallel/Ray execution, resume, merge.

``s2d discover`` is built from three pieces:

1. :func:`collect_inputs` turns what the user typed (video files, frame folders, or a dataset root with
   an explicit ``--layout``) into :class:`VideoInput` entries, each named by its path relative to one
   root — the name stage 3 resolves with ``s2d train --videos ROOT`` (SPEC §9). Layouts are never
   guessed from path names.
2. :func:`discover_video` runs one video end to end — stage 1 masks (or reads ``s2d masks`` output),
   prepares the point tracker, runs :func:`~s2d.keymasks.discover.discover_keymasks` — and returns
   a JSON-ready per-video record.
3. :func:`run_discovery` runs all videos (in-process, in a process pool, or on Ray), writes one file
   per video atomically, skips finished ones on ``--resume``, logs failures without stopping, and
   merges everything into ``OUTDIR/pseudo_labels.json`` (YouTube-VIS dataset format, one category).

Every worker computes the same function on the same input, so the merged JSON does not depend on
the number of workers or on Ray (a test checks this).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from s2d.device import resolve_device
from s2d.errors import InputError, S2DError, SettingError
from s2d.io.atomic import remove_stale_temps
from s2d.io.video import VIDEO_EXTENSIONS

LAYOUTS = ("ytvis", "davis", "folders")
#: video files the ``folders`` layout and plain inputs take: exactly what the video reader opens
VIDEO_EXTS = tuple(sorted(VIDEO_EXTENSIONS))
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}
#: discovery methods: keymask discovery with a point tracker (:mod:`s2d.keymasks.discover`, the default) and
#: FlowCut-style temporal mask matching (:mod:`s2d.keymasks.flowcut`)
METHODS = ("keymask", "flowcut")


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class VideoInput:
    """One video to process.

    Attributes:
        source: absolute path of the video file or frame folder.
        rel: its path relative to the root (POSIX separators) — the video's name in the outputs.
        kind: ``"video"`` (a file decoded with PyAV) or ``"folder"`` (image frames).
    """

    source: str
    rel: str
    kind: str

    @property
    def key(self) -> str:
        """File-system-safe, collision-free name of the per-video output file."""
        stem = self.rel.replace("/", "__").replace("\\", "__")
        digest = hashlib.sha1(self.rel.encode()).hexdigest()[:8]
        return f"{stem}.{digest}"


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") for p in folder.iterdir())


def _kind_of(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() in VIDEO_EXTS:
            return "video"
        raise InputError(path, f"not a video file (expected one of {', '.join(VIDEO_EXTS)})")
    if path.is_dir():
        if _has_images(path):
            return "folder"
        raise InputError(path, "no image frames in this folder; for a dataset root pass --layout "
                               + "|".join(LAYOUTS))
    raise InputError(path, "no such file or directory")


def _layout_dir(root: Path, layout: str) -> Path:
    sub = {"ytvis": Path("JPEGImages"), "davis": Path("JPEGImages") / "480p", "folders": Path(".")}[layout]
    d = root / sub
    if not d.is_dir():
        raise InputError(root, f"--layout {layout} expects a folder {sub.as_posix()}/ of videos here")
    return d


def collect_inputs(inputs: Sequence[str], layout: Optional[str] = None,
                   root: Optional[str] = None) -> Tuple[Path, List[VideoInput]]:
    """Resolve the user's inputs into videos and the root their names are relative to.

    Args:
        inputs: video files and frame folders; with ``layout``, exactly one dataset root.
        layout: ``ytvis`` (``ROOT/JPEGImages/<video>/``), ``davis`` (``ROOT/JPEGImages/480p/<seq>/``) or
            ``folders`` (``ROOT/<video>/`` frame folders and/or ``ROOT/<video>.mp4`` files); ``None``
            when the inputs are the videos themselves.
        root: the root names are relative to; default: the dataset root, or the common parent folder
            of the inputs.

    Returns:
        ``(root, videos)`` with videos sorted by name.
    """
    if not inputs:
        raise SettingError("give at least one input video, frame folder or dataset root")
    if layout is not None and layout not in LAYOUTS:
        raise SettingError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    paths = [Path(p).resolve() for p in inputs]
    for p in paths:
        if not p.exists():
            raise InputError(p, "no such file or directory")
    entries: List[Tuple[Path, str]] = []
    if layout is not None:
        if len(paths) != 1 or not paths[0].is_dir():
            raise SettingError("--layout takes exactly one dataset root folder")
        base = paths[0]
        folder = _layout_dir(base, layout)
        for child in sorted(folder.iterdir()):
            if child.name.startswith("."):
                continue
            if child.is_dir() and _has_images(child):
                entries.append((child, "folder"))
            elif child.is_file() and child.suffix.lower() in VIDEO_EXTS and layout == "folders":
                entries.append((child, "video"))
        if not entries:
            raise InputError(folder, "no videos or frame folders found for --layout " + layout)
        default_root = base
    else:
        entries = [(p, _kind_of(p)) for p in paths]
        default_root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    base_root = Path(root).resolve() if root is not None else default_root
    videos = []
    for p, kind in entries:
        try:
            rel = p.relative_to(base_root).as_posix()
        except ValueError:
            raise SettingError(f"{p} is not inside the root {base_root}") from None
        videos.append(VideoInput(str(p), rel, kind))
    names = [v.rel for v in videos]
    if len(set(names)) != len(names):
        raise SettingError("the same video was given twice")
    return base_root, sorted(videos, key=lambda v: v.rel)


# --------------------------------------------------------------------------- settings
@dataclass
class DiscoverSettings:
    """Everything one video's discovery needs; picklable so workers and Ray tasks get a copy.

    Attributes:
        masks: stage-1 settings as a dict of :class:`s2d.frames.MaskConfig` fields (defaults if empty).
        keymasks: :class:`~s2d.keymasks.config.KeymaskConfig` fields (``method="keymask"``).
        method: ``"keymask"`` (keymask discovery with the point tracker) or ``"flowcut"`` (FlowCut-style
            temporal mask matching, :mod:`s2d.keymasks.flowcut`; no point tracker).
        flowcut: :class:`~s2d.keymasks.flowcut.FlowCutConfig` fields (``method="flowcut"``).
        tracker: tracker backend name (``flow``, ``lk`` or ``cotracker3``; :func:`s2d.tracking.build_tracker`).
        tracker_settings: keyword settings of the tracker's config.
        backbone: stage-1 feature backbone spec.
        device: torch device of the backbone (``"auto"``: CUDA when available; :mod:`s2d.device`).
        max_side: long side stage 1 works at (``None``: as stored).
        masks_from: a ``s2d masks`` results JSON (single video) or a folder of them named
            ``<key>.json``/``<name>.json`` to read instead of running stage 1.
        cache_dir: where trackers may spill flow fields (``None``: the system temp folder).
        threads: torch/OpenCV threads per worker (``None``: the process pool splits the machine's cores
            between its workers, a Ray task gets 1), and the CPUs Ray reserves for each task.
    """

    masks: Dict[str, Any] = field(default_factory=dict)
    keymasks: Dict[str, Any] = field(default_factory=dict)
    tracker: str = "flow"
    tracker_settings: Dict[str, Any] = field(default_factory=dict)
    backbone: str = "lite0"
    device: str = "auto"
    max_side: Optional[int] = None
    masks_from: Optional[str] = None
    cache_dir: Optional[str] = None
    threads: Optional[int] = None
    method: str = "keymask"
    flowcut: Dict[str, Any] = field(default_factory=dict)

    def check(self) -> "DiscoverSettings":
        """Build every stage's config once, so a bad key or value is a one-line :class:`SettingError` (naming
        it) before any video runs or anything is written; returns ``self``."""
        from s2d.frames import MaskConfig
        from s2d.keymasks.config import KeymaskConfig

        if not isinstance(self.masks, dict) or not isinstance(self.keymasks, dict):
            raise SettingError("stage-1 and keymask settings must be mappings of setting names to values")
        try:
            MaskConfig.from_dict(self.masks)
        except (TypeError, ValueError) as exc:  # SettingError is a ValueError
            raise SettingError(f"stage-1 settings (masks.KEY): {exc}") from None
        KeymaskConfig.from_dict(self.keymasks)
        self._check_method()
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise SettingError(f"threads must be an integer >= 1, got {self.threads!r}")
        resolve_device(self.device)
        if self.method == "keymask":
            close = getattr(_build_tracker(self), "close", None)
            if close is not None:
                close()
        return self

    def _check_method(self) -> None:
        """The method is known and only its own settings are given (a setting of the other method would be
        silently unused)."""
        from s2d.keymasks.flowcut import FlowCutConfig

        if self.method not in METHODS:
            raise SettingError(f"unknown discovery method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not isinstance(self.flowcut, dict):
            raise SettingError("flowcut settings must be a mapping of setting names to values")
        FlowCutConfig.from_dict(self.flowcut)
        if self.method == "keymask" and self.flowcut:
            raise SettingError(f"flowcut.{next(iter(self.flowcut))} is a setting of --method flowcut")
        if self.method == "flowcut" and self.keymasks:
            raise SettingError(f"{next(iter(self.keymasks))} is a keymask setting; --method flowcut takes "
                               "flowcut.KEY settings")
        if self.method == "flowcut" and (self.tracker_settings or self.tracker != "flow"):
            raise SettingError("--tracker and tracker.KEY settings apply to --method keymask only; --method flowcut "
                               "uses no point tracker")

    def with_overrides(self, items: Sequence[str]) -> "DiscoverSettings":
        """A copy with ``--set`` strings applied, each read by its field's type (:mod:`s2d.settings`):
        ``masks.KEY`` (stage 1, :class:`~s2d.frames.MaskConfig`), ``tracker.KEY`` (the tracker's config, e.g.
        ``tracker.flow.preset``), ``flowcut.KEY`` (:class:`~s2d.keymasks.flowcut.FlowCutConfig`) or ``KEY``
        (:class:`~s2d.keymasks.config.KeymaskConfig`)."""
        from s2d.frames import MaskConfig
        from s2d.keymasks.config import KeymaskConfig
        from s2d.keymasks.flowcut import FlowCutConfig
        from s2d.settings import parse_field, split_item

        masks, keymasks, flowcut = dict(self.masks), dict(self.keymasks), dict(self.flowcut)
        tracker = copy.deepcopy(self.tracker_settings)
        for item in items:
            key, raw = split_item(item)
            section, _, name = key.partition(".")
            if section == "masks" and name:
                masks[name] = parse_field(MaskConfig, name, raw, prefix="masks.", what="stage-1")
            elif section == "tracker" and name:
                config_class = type(_build_tracker(dataclasses.replace(self, tracker_settings={})).config)
                value = parse_field(config_class, name, raw, prefix="tracker.", what="tracker")
                _set_dotted(tracker, name, value)
            elif section == "flowcut" and name:
                flowcut[name] = parse_field(FlowCutConfig, name, raw, prefix="flowcut.", what="flowcut")
            elif name:
                raise SettingError(f"--set {key}: unknown section {section!r} "
                                   "(use masks.KEY, tracker.KEY, flowcut.KEY or KEY)")
            else:
                keymasks[key] = parse_field(KeymaskConfig, key, raw, what="keymask")
        out = dataclasses.replace(self, masks=masks, keymasks=keymasks, tracker_settings=tracker, flowcut=flowcut)
        out._check_method()  # a flowcut value out of range or a setting of the other method: before any output
        return out

    def fingerprint(self) -> Dict[str, Any]:
        """The settings that change results (stored in OUTDIR/settings.json; a resume must match)."""
        d = asdict(self)
        for k in ("cache_dir", "threads", "device"):
            d.pop(k)
        if self.method == "keymask" and not self.flowcut:  # as before methods existed: old runs resume
            d.pop("method")
            d.pop("flowcut")
        return d


# --------------------------------------------------------------------------- one video
def _single_frame_masks(video: VideoInput, settings: DiscoverSettings, progress: bool):
    """Stage 1 for one video as a VideoSegmentation of single-frame tracks (or read from ``masks_from``)."""
    from s2d.types import VideoSegmentation

    if settings.masks_from:
        from s2d.io.formats import read_ytvis

        src = Path(settings.masks_from)
        if src.is_dir():
            cands = [src / f"{video.key}.json", src / f"{Path(video.rel).name}.json",
                     src / f"{Path(video.rel).stem}.json"]
            found = next((c for c in cands if c.is_file()), None)
            if found is None:
                raise InputError(src, f"no masks file for {video.rel} (looked for {cands[0].name}, "
                                      f"{cands[1].name}, {cands[2].name})")
            src = found
        vids = read_ytvis(src)
        if len(vids) != 1:
            raise InputError(src, f"holds {len(vids)} videos; expected the masks of one video")
        return vids[0]

    from tqdm import tqdm

    from s2d.frames import FrameSegmenter, MaskConfig
    from s2d.frames.segmenter import segment_video
    from s2d.io.video import probe_video

    cfg = MaskConfig.from_dict(settings.masks)
    seg = FrameSegmenter(cfg, backbone=settings.backbone, device=resolve_device(settings.device))
    info = probe_video(video.source)
    next_id = [1]

    def frames():
        for fm in tqdm(segment_video(video.source, seg, max_side=settings.max_side),
                       total=info.num_frames, desc=f"masks {video.rel}", unit="frame", leave=False,
                       disable=not progress):
            fr = fm.to_frame_result(first_id=next_id[0])
            next_id[0] += len(fm)
            yield fr

    # the length is what decodes, not what the container declares: complete mp4s can declare a frame or two
    # more (edit lists, dropped B-frames), and the tracker, training and export all count decoded frames
    return VideoSegmentation.from_frames(frames(), info.orig_height, info.orig_width,
                                         fps=info.fps, name=video.rel)


def _set_dotted(target: Dict[str, Any], dotted: str, value: Any) -> None:
    head, _, rest = dotted.partition(".")
    if rest:
        _set_dotted(target.setdefault(head, {}), rest, value)
    else:
        target[head] = value


def _build_tracker(settings: DiscoverSettings):
    from s2d.tracking import build_tracker

    kw = dict(settings.tracker_settings)
    if settings.tracker == "cotracker3":  # a torch model: runs on the run's device, spills nothing
        kw.setdefault("device", settings.device)
    elif settings.cache_dir and "cache_dir" not in kw:
        kw["cache_dir"] = settings.cache_dir
    return build_tracker(settings.tracker, **kw)


def _keymask_discovery(video: VideoInput, settings: DiscoverSettings, masks: Any) -> Tuple[Any, float]:
    """Keymask discovery of one video with the point tracker: the result and the tracker's preparation time."""
    from s2d.keymasks.config import KeymaskConfig
    from s2d.keymasks.discover import discover_keymasks

    tracker = _build_tracker(settings)
    try:
        t0 = time.perf_counter()
        tracker.prepare(video.source)
        prepare_s = time.perf_counter() - t0
        kcfg = KeymaskConfig.from_dict(settings.keymasks) if settings.keymasks else KeymaskConfig()
        return discover_keymasks(masks, tracker, kcfg), prepare_s
    finally:
        close = getattr(tracker, "close", None)
        if close is not None:
            close()


def _flowcut_discovery(video: VideoInput, settings: DiscoverSettings, masks: Any) -> Tuple[Any, float]:
    """FlowCut-style discovery of one video (no tracker to prepare: its flow is part of the discovery time)."""
    from s2d.keymasks.flowcut import FlowCutConfig, discover_flowcut

    return discover_flowcut(masks, video.source, FlowCutConfig.from_dict(settings.flowcut)), 0.0


def discover_video(video: VideoInput, settings: DiscoverSettings, *, progress: bool = False) -> Dict[str, Any]:
    """Run stage 1 (or read its output) and discovery (``settings.method``) on one video.

    Returns a JSON-ready record: ``{"video": {...}, "annotations": [...], "diagnostics": {...},
    "timings": {...}}`` where annotations are YouTube-VIS style with RLE on keymask frames and
    ``null`` elsewhere (per-object diagnostics as extra keys); both methods give the same record.
    """
    from s2d.io.formats import to_ytvis_dataset

    if settings.threads:
        import cv2
        import torch

        torch.set_num_threads(settings.threads)
        cv2.setNumThreads(settings.threads)
    t0 = time.perf_counter()
    masks = _single_frame_masks(video, settings, progress)
    t1 = time.perf_counter()
    run = _flowcut_discovery if settings.method == "flowcut" else _keymask_discovery
    result, prepare_s = run(video, settings, masks)
    t2 = t1 + prepare_s
    t3 = time.perf_counter()
    sparse = result.to_video()
    sparse.name = video.rel
    data = to_ytvis_dataset([sparse])
    vid = data["videos"][0]
    vid.update({"name": video.rel, "source": video.rel, "source_kind": video.kind,
                "length": masks.num_frames, "width": masks.width, "height": masks.height})
    if masks.fps:
        vid["fps"] = masks.fps
    return {
        "video": vid,
        "annotations": data["annotations"],
        "diagnostics": result.summary(),
        "timings": {"masks_s": t1 - t0, "tracker_prepare_s": t2 - t1, "discovery_s": t3 - t2,
                    "frames": masks.num_frames, "single_frame_masks": sum(1 for _ in masks.tracks)},
    }


# --------------------------------------------------------------------------- many videos
def _one_line(exc: BaseException) -> str:
    if isinstance(exc, S2DError):
        return str(exc)
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _process(video: VideoInput, settings: DiscoverSettings, out_path: str, progress: bool) -> Dict[str, Any]:
    """Worker body: discover one video, write its file atomically; never raises (errors are returned)."""
    from s2d.io.atomic import atomic_write_text

    try:
        record = discover_video(video, settings, progress=progress)
        atomic_write_text(out_path, json.dumps(record), fsync=True)
        return {"rel": video.rel, "status": "done", "objects": len(record["annotations"]),
                "frames": record["video"]["length"]}
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a crash in one video must not stop the others
        return {"rel": video.rel, "status": "failed", "error": _one_line(exc),
                "traceback": traceback.format_exc(limit=20)}


def _worker_init(threads: Optional[int]) -> None:
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


@dataclass
class DiscoveryReport:
    """What :func:`run_discovery` did."""

    outdir: str
    merged: Optional[str]
    done: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)


def video_output_path(outdir: Path, video: VideoInput) -> Path:
    return outdir / "videos" / f"{video.key}.json"


def _check_resume(outdir: Path, root: Path, settings: DiscoverSettings, resume: bool) -> None:
    from s2d.io.atomic import atomic_write_text

    meta_path = outdir / "settings.json"
    meta = {"root": str(root), "settings": settings.fingerprint()}
    existing = list((outdir / "videos").glob("*.json")) if (outdir / "videos").is_dir() else []
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(meta_path, f"unreadable: {exc}") from None
        if not resume:
            raise SettingError(f"{outdir} already holds a discovery run; pass --resume to continue it "
                               "or choose another output folder")
        if old.get("settings") != meta["settings"]:
            raise SettingError(f"{outdir} was started with other settings; --resume needs the same "
                               "settings (or choose another output folder)")
        if old.get("root") is not None and old["root"] != meta["root"]:
            raise SettingError(f"{outdir} was started with root {old['root']}, not {root}; --resume needs the same "
                               f"root (video names are relative to it), e.g. --root {old['root']}")
    elif existing and not resume:
        raise SettingError(f"{outdir} already has results; pass --resume or choose another output folder")
    atomic_write_text(meta_path, json.dumps(meta, indent=2), fsync=True)


def run_discovery(videos: Sequence[VideoInput], outdir: str, settings: DiscoverSettings, *,
                  root: Optional[Path] = None, workers: int = 1, ray_address: Optional[str] = None,
                  resume: bool = False, progress: bool = True,
                  log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> DiscoveryReport:
    """Discover keymasks in every video, one output file each, then merge into ``pseudo_labels.json``.

    Args:
        videos: from :func:`collect_inputs`.
        outdir: output folder (created). Holds ``videos/<key>.json``, ``settings.json``,
            ``failed.jsonl`` and the merged ``pseudo_labels.json``.
        settings: per-video settings.
        root: the root the video names are relative to (recorded in the merged JSON).
        workers: parallel processes (1 = in this process).
        ray_address: run on Ray instead: ``"auto"`` (connect to a running cluster or start a local one)
            or a cluster address. Needs the ``ray`` extra.
        resume: continue a run in ``outdir``: finished videos are skipped, failed ones retried.
        progress: show progress bars (videos; frames too when ``workers == 1``).

    Returns:
        :class:`DiscoveryReport`. Failures are logged to ``failed.jsonl`` and do not stop the run.
    """
    if workers < 1:
        raise SettingError(f"--workers must be >= 1, got {workers}")
    settings.check()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "videos").mkdir(exist_ok=True)
    _check_resume(out, root or Path("."), settings, resume)
    for folder in (out, out / "videos"):  # what a killed run left half-written
        remove_stale_temps(folder)
    report = DiscoveryReport(str(out), None)
    todo = []
    for v in videos:
        if video_output_path(out, v).is_file():
            report.skipped.append(v.rel)
        else:
            todo.append(v)
    if report.skipped:
        log(f"resume: {len(report.skipped)} finished video(s) skipped")

    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="discover", unit="video", disable=not progress or not todo)
    results: List[Dict[str, Any]] = []
    try:
        if ray_address is not None:
            results = _run_ray(todo, settings, out, ray_address, bar)
        elif workers == 1 or len(todo) <= 1:
            for v in todo:
                results.append(_process(v, settings, str(video_output_path(out, v)), progress))
                bar.update(1)
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            per = settings.threads or max(1, (os.cpu_count() or 1) // workers)
            wsettings = DiscoverSettings(**{**asdict(settings), "threads": per})
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                     initargs=(per,)) as pool:
                futs = [pool.submit(_process, v, wsettings, str(video_output_path(out, v)), False) for v in todo]
                for f in as_completed(futs):
                    results.append(f.result())
                    bar.update(1)
    finally:
        bar.close()
    for r in sorted(results, key=lambda r: r["rel"]):
        if r["status"] == "done":
            report.done.append(r["rel"])
        else:
            report.failed[r["rel"]] = r["error"]
            log(f"failed: {r['rel']}: {r['error']}")
    if report.failed:
        from s2d.io.atomic import atomic_write_text

        lines = [json.dumps({"video": r["rel"], "error": r["error"], "traceback": r.get("traceback", "")})
                 for r in results if r["status"] == "failed"]
        atomic_write_text(out / "failed.jsonl", "\n".join(lines) + "\n")
    elif (out / "failed.jsonl").exists():
        (out / "failed.jsonl").unlink()
    report.merged = str(merge_outputs(out, videos, root))
    return report


def _run_ray(todo: Sequence[VideoInput], settings: DiscoverSettings, out: Path, address: str,
             bar: Any) -> List[Dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise SettingError("Ray is not installed; install the extra: pip install 's2d[ray]'") from None
    started = False
    if not ray.is_initialized():
        if address == "auto":
            ray.init(ignore_reinit_error=True, log_to_driver=False)
        else:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        started = True
    try:
        # one thread per task unless ``threads`` says otherwise, and Ray reserves that many CPUs for it: the
        # tasks of a node never ask for more cores than it has (as the process pool splits the cores)
        per = settings.threads or 1
        rsettings = DiscoverSettings(**{**asdict(settings), "threads": per})
        task = ray.remote(num_cpus=per)(_process)
        pending = {task.remote(v, rsettings, str(video_output_path(out, v)), False): v for v in todo}
        results = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                results.append(ray.get(ref))
                bar.update(1)
        return results
    finally:
        if started:
            ray.shutdown()


def merge_outputs(outdir: Path, videos: Sequence[VideoInput], root: Optional[Path] = None) -> Path:
    """Merge the per-video files of ``videos`` (those finished) into ``outdir/pseudo_labels.json``.

    Videos are numbered 1..n in name order and annotations 1..m, so the merge is identical however
    the videos were processed. ``file_names`` are ``<rel>/<frame>.jpg`` for frame folders (the real
    relative paths) and ``<rel>/<index:05d>`` for video files, whose frames are decoded on the fly by
    index; ``source``/``source_kind`` say which.
    """
    from s2d.io.atomic import atomic_write_text

    merged_videos: List[Dict[str, Any]] = []
    merged_anns: List[Dict[str, Any]] = []
    for v in sorted(videos, key=lambda v: v.rel):
        p = video_output_path(outdir, v)
        if not p.is_file():
            continue
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(p, f"unreadable per-video result: {exc}") from None
        vid = dict(rec["video"])
        vid["id"] = len(merged_videos) + 1
        vid["file_names"] = frame_file_names(v, vid["length"])
        merged_videos.append(vid)
        for ann in rec["annotations"]:
            a = dict(ann)
            a["id"] = len(merged_anns) + 1
            a["video_id"] = vid["id"]
            a["category_id"] = 1
            a.setdefault("iscrowd", 0)
            merged_anns.append(a)
    data = {
        "info": {"description": "s2d keymask pseudo-labels (sparse: masks on keymask frames only)",
                 "root": str(root) if root is not None else None},
        "videos": merged_videos,
        "annotations": merged_anns,
        "categories": [CATEGORY],
    }
    path = outdir / "pseudo_labels.json"
    atomic_write_text(path, json.dumps(data), fsync=True)
    return path


def labelset_video_fields(source: str, length: int) -> Dict[str, Any]:
    """``source``, ``source_kind`` and ``file_names`` that make a dataset record of the video file or frame
    folder ``source`` a labelset `s2d train --videos PARENT` can read, PARENT being the folder holding
    ``source`` (the default root of :func:`collect_inputs`, named as :func:`merge_outputs` names videos)."""
    _, vids = collect_inputs([source])
    v = vids[0]
    return {"source": v.rel, "source_kind": v.kind, "file_names": frame_file_names(v, length)}


def frame_file_names(video: VideoInput, length: int) -> List[str]:
    """``file_names`` of a labelset record: real relative frame paths of a folder, ``<rel>/<index:05d>`` for a
    video file (frames decoded by index)."""
    if video.kind == "folder":
        from s2d.io.video import natural_key

        frames = sorted((p for p in Path(video.source).iterdir()
                         if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")),
                        key=lambda p: natural_key(p.name))
        names = [f"{video.rel}/{p.name}" for p in frames]
        return names[:length]
    return [f"{video.rel}/{i:05d}" for i in range(length)]
