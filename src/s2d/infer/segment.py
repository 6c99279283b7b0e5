"""``s2d segment`` for one video: stream the predictor's frames into the requested writers.

Layout for an input named NAME (a video file's stem or a frame folder's name)::

    OUTDIR/NAME/results.json    YouTube-VIS results (video_id 1, category_id 1, one record per track)
    OUTDIR/NAME/davis/*.png     one palette PNG per frame, named after the input frame (00000.png... for videos)
    OUTDIR/NAME/mots.txt        MOTS txt
    OUTDIR/NAME/overlay.mp4     the masks drawn over the frames, at the original size

Every writer consumes the frames as they stream, so memory stays bounded by the chunk; the YouTube-VIS
records hold compressed RLEs only (about a kilobyte per object and frame). Files appear atomically: a PNG
is complete once written; ``results.json``, ``mots.txt`` and ``overlay.mp4`` appear under their names only
when the video ends. A corrupt or truncated stream ends the video early: every output is finished with the
frames decoded so far and the :class:`~s2d.errors.InputError` naming the failing frame is re-raised. Any
other failure (a bug, Ctrl-C) leaves the PNGs already written and no partial ``results.json``, ``mots.txt``
or ``overlay.mp4`` — except Ctrl-C on a live source (camera, network stream, stdin), which is how such a run
ends: every output is completed with the frames segmented so far, then ``KeyboardInterrupt`` is re-raised.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from s2d import rle as rle_utils
from s2d.errors import InputError
from s2d.infer.config import DEFAULT_FORMATS, SegmentConfig, check_formats
from s2d.io.atomic import remove_stale_temps
from s2d.infer.predictor import VideoPredictor
from s2d.types import FrameResult

__all__ = ["SegmentSummary", "segment_video", "output_dir"]

PathLike = Union[str, "os.PathLike[str]"]
#: DAVIS palette PNGs hold ids 1..254 (255 is "void" in the official DAVIS code and reads back as background)
MAX_PNG_ID = 254
#: libx264 preset of overlay videos: a preview, so encoding speed matters more than size ("veryfast" is
#: 2.5× faster than "medium" at 480p for about the same file size)
OVERLAY_PRESET = "veryfast"


@dataclass
class SegmentSummary:
    """What :func:`segment_video` did for one video.

    Attributes:
        name: the video's name (its output subfolder).
        outdir: ``OUTDIR/NAME``.
        frames: frames segmented (all of them, or those decoded before a corrupt frame).
        objects: track ids found in the video.
        seconds: wall-clock time from opening the video to the last file written.
        files: the outputs written, by format.
        notes: things the user should know (e.g. ids that do not fit a DAVIS PNG).
    """

    name: str
    outdir: Path
    frames: int
    objects: int
    seconds: float
    files: Dict[str, Path] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Frames segmented per second, end to end."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def output_dir(outdir: PathLike, name: str) -> Path:
    """``OUTDIR/NAME``, the folder of one video's outputs."""
    return Path(outdir) / name


class _Outputs:
    """The writers of one video; ``finish()`` completes them, ``abort()`` drops the unfinished ones."""

    def __init__(self, folder: Path, formats: Sequence[str], fps: float, height: int, width: int) -> None:
        self.folder, self.formats = folder, tuple(formats)
        self.height, self.width = height, width
        self.frames = 0
        self.files: Dict[str, Path] = {}
        self.notes: List[str] = []
        self._segs: Dict[int, Dict[int, dict]] = {}  # ytvis: track id -> {frame: RLE}
        self._skipped_ids: set = set()
        self.ids: set = set()  # track ids with pixels on some frame
        self.davis = self.mots = self.overlay = None
        folder.mkdir(parents=True, exist_ok=True)
        for old in (folder, folder / "davis"):  # what a killed run left half-written
            remove_stale_temps(old)
        try:
            if "davis" in formats:
                from s2d.io.formats.davis import DavisWriter

                pngs = folder / "davis"
                if pngs.is_dir():  # a previous run's frames would mix with this run's
                    for old in pngs.glob("*.png"):
                        old.unlink()
                self.davis = DavisWriter(pngs, size=(height, width))
            if "mots" in formats:
                from s2d.io.formats.mots import MotsWriter

                self.mots = MotsWriter(folder / "mots.txt")
            if "overlay" in formats:
                from s2d.io.overlay import OverlayWriter

                self.overlay = OverlayWriter(folder / "overlay.mp4", fps, width, height, preset=OVERLAY_PRESET)
        except BaseException:
            self.abort()
            raise

    def write(self, rgb: Any, name: str, fr: FrameResult) -> None:
        self.ids.update(fr.ids.tolist())
        if "ytvis" in self.formats:
            for i, tid in enumerate(fr.ids.tolist()):
                self._segs.setdefault(tid, {})[fr.index] = rle_utils.encode(fr.masks[i])
        if self.davis is not None:
            png = fr
            fits = fr.ids <= MAX_PNG_ID
            if not fits.all():
                assert fr.category_ids is not None  # FrameResult.__post_init__ sets it
                self._skipped_ids.update(fr.ids[~fits].tolist())
                png = FrameResult(fr.index, fr.masks[fits], fr.ids[fits], fr.scores[fits], fr.category_ids[fits])
            self.davis.write(png, name=name)
        if self.mots is not None:
            self.mots.write(fr)
        if self.overlay is not None:
            self.overlay.write(rgb, fr)
        self.frames += 1

    def finish(self, track_scores: Dict[int, float]) -> None:
        """Close every writer with the frames written so far (also after a corrupt frame)."""
        if self.davis is not None:
            self.davis.close()
            self.files["davis"] = self.folder / "davis"
            if self._skipped_ids:
                self.notes.append(f"{len(self._skipped_ids)} track(s) with ids above {MAX_PNG_ID} are not in the "
                                  f"DAVIS PNGs (8-bit ids); they are in the other outputs")
        if self.mots is not None:
            self.files["mots"] = self.mots.close()
        if self.overlay is not None:
            if self.frames:
                self.overlay.close()
                self.files["overlay"] = Path(self.overlay.path)
            else:
                self.overlay.abort()  # a video without frames is not a valid file
        if "ytvis" in self.formats:
            self.files["ytvis"] = self._write_ytvis(track_scores)

    def _write_ytvis(self, track_scores: Dict[int, float]) -> Path:
        from s2d.io.formats import YtvisResultsWriter

        T = self.frames
        with YtvisResultsWriter(self.folder / "results.json") as writer:  # record by record
            for tid in sorted(self._segs):
                segs = self._segs[tid]
                score = round(min(max(float(track_scores.get(tid, 0.0)), 0.0), 1.0), 6)
                writer.write({"video_id": 1, "category_id": 1, "track_id": tid, "score": score,
                              "segmentations": [segs.get(t) for t in range(T)]})
        return writer.path

    def abort(self) -> None:
        for w in (self.mots, self.overlay):
            if w is not None:
                w.abort()
        if self.davis is not None:
            self.davis.close()


class _WriterThread:
    """Runs ``outputs.write`` on a background thread, so PNG/RLE encoding and overlay drawing and encoding (which
    release the GIL, as torch does) overlap with the model's work on the next chunk. The queue is bounded
    (``maxsize`` frames), so memory stays bounded by the chunk; a writer error is re-raised in the caller."""

    _STOP = object()

    def __init__(self, outputs: _Outputs, maxsize: int = 16) -> None:
        import queue
        import threading

        self.outputs = outputs
        self.error: Optional[BaseException] = None
        self.queue: "queue.Queue[Any]" = queue.Queue(maxsize=maxsize)
        self.thread = threading.Thread(target=self._run, name="s2d-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is self._STOP:
                return
            if self.error is None:  # after an error, drain without writing
                try:
                    self.outputs.write(*item)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    self.error = exc

    def put(self, rgb: Any, name: str, fr: FrameResult) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((rgb, name, fr))

    def close(self) -> None:
        """Wait until every queued frame is written; re-raise a writer error."""
        if self.thread.is_alive():
            self.queue.put(self._STOP)
            self.thread.join()
        if self.error is not None:
            raise self.error


def segment_video(source: PathLike, outdir: PathLike, config: Optional[SegmentConfig] = None,
                  formats: Sequence[str] = DEFAULT_FORMATS, *, model: Any = None, progress: bool = True,
                  name: Optional[str] = None) -> SegmentSummary:
    """Segment one video (file, frame folder or glob) and write its outputs under ``OUTDIR/NAME``.

    Args:
        source: the input video.
        outdir: the output root; this video's files go to ``outdir/NAME``.
        config: inference settings (default :class:`SegmentConfig`).
        formats: any of ``ytvis``, ``davis``, ``mots``, ``overlay`` (a sequence or ``"ytvis,davis"``).
        model: an already loaded model (load it once for many videos); default: ``load_model(config.model,
            config.device)``.
        progress: show a tqdm bar over the frames.
        name: NAME (default: the video file's stem or the frame folder's name).

    Returns:
        A :class:`SegmentSummary`.

    Raises:
        InputError: the source is missing or unreadable; for a stream that breaks part-way, after the
            outputs of the frames before it are written, with the failing frame in the message.
    """
    from tqdm import tqdm

    from s2d.io.video import open_video

    config = config or SegmentConfig()
    formats = check_formats(formats)
    t0 = time.perf_counter()
    with open_video(source) as stream:
        info = stream.info
        if model is None:
            from s2d.infer.weights import load_model

            model = load_model(config.model, config.device, online=config.online, backend=config.backend)
        name = name or info.name
        folder = output_dir(outdir, name)
        outputs = _Outputs(folder, formats, info.fps or 25.0, info.orig_height, info.orig_width)
        predictor = VideoPredictor(model, config)
        bar = tqdm(total=info.num_frames, desc=name, unit="frame", disable=not progress, file=sys.stderr)
        writer = _WriterThread(outputs)
        try:
            for frame, result in predictor.stream(stream):
                writer.put(frame.rgb, frame.name, result)
                bar.update(1)
            writer.close()
        except InputError as exc:  # a corrupt stream: keep the frames done, then report the frame
            bar.close()
            writer.close()
            outputs.finish(predictor.track_scores)
            where = (f"; kept the outputs of the {outputs.frames} frame(s) before it in {folder}"
                     if outputs.frames else "")
            err = InputError(exc.path or os.fspath(source), exc.problem + where)
            err.frame_index = getattr(exc, "frame_index", None)  # type: ignore[attr-defined]
            raise err from None
        except BaseException as exc:
            bar.close()
            try:
                writer.close()
            finally:
                # a live source ends with Ctrl-C: complete the outputs of the frames so far; else drop them
                if isinstance(exc, KeyboardInterrupt) and stream.live and outputs.frames:
                    outputs.finish(predictor.track_scores)
                else:
                    outputs.abort()
            raise
        bar.close()
        if outputs.frames == 0:
            outputs.abort()
            raise InputError(source, "no frames")
        outputs.finish(predictor.track_scores)
    return SegmentSummary(name, folder, outputs.frames, len(outputs.ids), time.perf_counter() - t0, outputs.files,
                          outputs.notes)
