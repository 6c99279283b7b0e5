"""Settings of streaming inference (``s2d segment``), one typed, validated dataclass.

The defaults are the shipped behaviour of ``s2d segment``; the CLI only overrides what the user passes.
:data:`DEFAULT_REFINE` is the one place that decides which edge refinement output masks get by default (SPEC §4
asks for it where the speed target allows): ``guided``, measured on the dev split (``benchmarks/bench_dev.py``)
and for speed by ``benchmarks/bench_segment.py``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

from s2d.errors import SettingError

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "DEFAULT_FORMATS", "DEFAULT_REFINE", "FORMATS", "REFINE_MODES", "SegmentConfig", "check_formats",
           "parse_formats"]

#: Edge refinement of the output masks unless ``--refine`` says otherwise ("none", "guided" or "crf").
DEFAULT_REFINE = "guided"
REFINE_MODES = ("none", "guided", "crf")
#: Output formats of ``s2d segment``, in the order they are listed and written.
FORMATS = ("ytvis", "davis", "mots", "overlay")
#: Runtimes of the video model: PyTorch (default), or ONNX Runtime on a file from ``s2d export-model`` (extra
#: ``s2d[onnx]``). ONNX Runtime measured 1.4× the frames/s of PyTorch on the 2-core CPU, with masks equal but for
#: a few pixels per video, not bit-equal: PyTorch stays the default (``benchmarks/results/onnx.md``, issue #19).
BACKENDS = ("torch", "onnxruntime")
DEFAULT_BACKEND = "torch"
DEFAULT_FORMATS = ("ytvis", "davis", "overlay")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


@dataclass(frozen=True)
class SegmentConfig:
    """How ``s2d segment`` runs the video model over a video.

    Attributes:
        model: ``"default"`` (the packaged weights) or the path of a checkpoint written by ``s2d train``; with
            ``backend="onnxruntime"``, the path of a ``.onnx`` file written by ``s2d export-model``.
        backend: ``"torch"`` or ``"onnxruntime"`` (:mod:`s2d.infer.onnx_backend`; the extra ``s2d[onnx]``).
        score_threshold: a tube whose score (objectness × mask quality, in [0, 1]) is at least this may start
            a new object. 0.7 was chosen on the ``seen`` DAVIS split (``benchmarks/RESULTS.md``, stage 4).
        continue_threshold: a tube scoring at least this (and under ``score_threshold``) is kept only when it
            continues an object of an earlier chunk (:class:`~s2d.infer.linking.TubeLinker`): an object
            whose score dips for a chunk keeps its id, and weak tubes never start objects. At or above
            ``score_threshold`` (the default): one threshold for both. Measured on the dev benchmark with
            three models (``benchmarks/RESULTS.md``): 0.5 adds 0.005 union J&F and mosaic J&F on the shipped
            model, nothing on a second, and costs a third 0.02 matched J&F, so it is off by default.
        track_memory: frames an object missing from the video stays linkable by its last mask and embedding,
            so it gets its id back when it returns (0: a chunk without it ends its track); counted in chunks of
            ``step`` frames, rounded up (48 frames: 8 chunks of the default chunking, 48 frames online). On the
            dev mosaics 8 chunks gained 0.004–0.008 J&F with fewer fragments on each of three models and
            lowered no single-object figure (3 and 8 chunks measured alike); online, 48 frames instead of 8
            issue 36 ids instead of 176 on a 2,000-frame video.
        max_objects: at most this many tubes per chunk, highest scores first (so at most this many objects
            on any frame).
        chunk: frames the model sees at once (L). Memory grows with the chunk, never with the video.
        overlap: frames shared by consecutive chunks (0 ≤ overlap < chunk); tubes are linked across chunks
            by their masks on these frames (with ``overlap=0``, by the masks of the last and first frames of
            consecutive chunks).
        max_side: the model runs on frames resized (up or down, aspect kept) so that the long side is this
            many pixels. ``None``: the frames' own size. The model was trained on 256×448 crops of frames
            zoomed 1–1.5× beyond the 448 px scale; 576 px (zoom 1.29) measured +0.03 union J on the ``seen``
            split over 448, and 640 px little more at 1.2× the cost (``benchmarks/RESULTS.md``, stage 4).
        upscale: whether ``max_side`` also enlarges frames smaller than it (``False``: they keep their size).
        resolve_overlaps: a pixel two objects claim goes to the higher score, so each frame's masks are
            disjoint (DAVIS PNGs and MOTS need that; ``False`` keeps the masks as predicted, which only the
            YouTube-VIS JSON can hold).
        link_iou: mean IoU over the shared frames that continues a track across chunks.
        link_embed: weight λ of the query-embedding similarity in linking: a tube continues a track when
            ``(1 − λ)·IoU + λ·cos`` reaches ``link_iou`` (:class:`~s2d.infer.linking.TubeLinker`; 0: masks only).
            Measured on the dev benchmark with two models (``benchmarks/RESULTS.md``): 0.3–0.7 lower the
            fragments and ids per mosaic object and raise mosaic J&F by 0.006–0.008 with identical
            single-object figures; frame by frame (``online``) 0.5 raises matched J&F by 0.07.
        birth_overlap: a tube that continues no object starts a new one only when at most this share of its
            pixels lies under the chunk's other objects (:class:`~s2d.infer.linking.TubeLinker`): a second
            query on an object already tracked does not become a second id. 1: never suppressed.
        nms_iou: a tube whose mean mask IoU over the chunk with a higher-scoring tube exceeds this merges into
            it (union of masks, maximum of logits): two queries on one object give one object, not an object and
            a fragment that takes its pixels in turn. 1: off. Measured on the dev benchmark with two models
            (``benchmarks/RESULTS.md``): 0.5 leaves union J&F unchanged, raises matched J&F by 0.043 / 0.047,
            mosaic J&F by 0.034 / 0.004 and roughly halves the id switches; online, switches 1.89 → 0.96.
        min_motion: a tube may start a new object only when the camera-compensated motion inside it
            (:mod:`s2d.infer.motion`: DIS flow at 320 px minus a homography) averages at least this over the
            chunk, in percent of the frame's long side per frame; an object that stops later keeps its id.
            Rocks, benches and sky then never become objects. 0: off (no flow is computed).
        refine: ``"guided"`` upsamples each object's mask probability with a guided filter on the frame
            (:mod:`s2d.infer.refine`: edges move onto the image's edges, flat regions keep the model's
            probability); ``"crf"`` snaps each binary mask to the image edges with a dense CRF (it erases
            low-contrast objects); ``"none"`` upsamples bilinearly.
        refine_max_side: refinement runs at this long side at most (its cost grows with the pixel count);
            the refined mask is then resized to the original frame. 854: DAVIS frames are refined at their size.
        guided_radius: window radius of the guided filter as a fraction of the refinement size's long side
            (0.0375 = 32 px at 854×480; chosen on the dev split, 16–48 px measured).
        guided_eps: the guided filter's regularisation, in squared 0–255 colour levels.
        device: torch device of the model: ``"auto"`` (CUDA when available, else CPU; :mod:`s2d.device`),
            ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        min_area: drop tubes covering fewer pixels than this, summed over the chunk at the model's working
            size (empty or speck-sized queries).
        split: give each space-time connected part of a tube its own track (:mod:`s2d.infer.instances`):
            objects apart from each other that one query covers (two cars) become separate objects.
        split_min_fraction: a part becomes its own object only when it holds at least this fraction of the
            tube's largest part's pixels ...
        split_min_area: ... and at least this fraction of the frame (per frame, at the working size); smaller
            parts stay with the largest part. 0.002 leaves the dev figures unchanged and turns the 25 ids of
            specks on the shared ``intel_cars_overhead`` clip into 5.
        tta_flip: each chunk's prediction is the consensus with the mirrored chunk (:mod:`s2d.infer.tta`);
            the model then runs twice per chunk (and without reusing the overlap frames' encodings).
        tta_scales: also the consensus with the chunk resized by these factors, e.g. ``(1.25,)``.
        online: one frame at a time (``chunk`` 1 and ``overlap`` 0 whatever they say): each frame's masks are
            final, and yielded, before the next frame is read. Tracks are linked frame to frame; with an online
            model (``s2d train --stages online``: ``query_propagation``) each frame's queries also start from
            the previous frame's.
    """

    model: str = "default"
    backend: str = DEFAULT_BACKEND
    score_threshold: float = 0.7
    continue_threshold: float = 0.7
    track_memory: int = 48
    max_objects: int = 20
    chunk: int = 8
    overlap: int = 2
    max_side: Optional[int] = 576
    upscale: bool = True
    resolve_overlaps: bool = True
    link_iou: float = 0.3
    link_embed: float = 0.5
    birth_overlap: float = 1.0
    min_motion: float = 0.0
    nms_iou: float = 0.5
    refine: str = DEFAULT_REFINE
    refine_max_side: int = 854
    guided_radius: float = 0.0375
    guided_eps: float = 0.01
    device: str = "auto"
    min_area: int = 16
    split: bool = True
    split_min_fraction: float = 0.1
    split_min_area: float = 0.002
    tta_flip: bool = False
    tta_scales: Tuple[float, ...] = ()
    online: bool = False

    def __post_init__(self) -> None:
        if self.online is True:  # one frame per chunk (a frozen dataclass: set through object)
            object.__setattr__(self, "chunk", 1)
            object.__setattr__(self, "overlap", 0)
        self.validate()

    def validate(self) -> "SegmentConfig":
        """Raise :class:`SettingError` (one line, naming the option) on a bad value; return ``self``."""
        if not isinstance(self.model, str) or not self.model:
            raise SettingError(f"model must be 'default' or a checkpoint path, got {self.model!r}")
        if self.backend not in BACKENDS:
            raise SettingError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not _is_number(self.score_threshold) or not 0.0 <= float(self.score_threshold) <= 1.0:
            raise SettingError(f"score threshold must be in [0, 1], got {self.score_threshold!r}")
        if not _is_number(self.continue_threshold) or not 0.0 <= float(self.continue_threshold) <= 1.0:
            raise SettingError(f"continue threshold must be in [0, 1], got {self.continue_threshold!r}")
        if not _is_int(self.track_memory) or self.track_memory < 0:
            raise SettingError(f"track memory must be an integer >= 0 (frames), got {self.track_memory!r}")
        if not _is_int(self.max_objects) or self.max_objects < 1:
            raise SettingError(f"max objects must be an integer >= 1, got {self.max_objects!r}")
        if not _is_int(self.chunk) or self.chunk < 1:
            raise SettingError(f"chunk must be an integer >= 1, got {self.chunk!r}")
        if not _is_int(self.overlap) or not 0 <= self.overlap < self.chunk:
            raise SettingError(f"overlap must be an integer with 0 <= overlap < chunk ({self.chunk}), "
                               f"got {self.overlap!r}")
        if self.max_side is not None and (not _is_int(self.max_side) or self.max_side < 16):
            raise SettingError(f"max side must be an integer >= 16 (or None for the frames' size), "
                               f"got {self.max_side!r}")
        if not _is_number(self.link_iou) or not 0.0 < float(self.link_iou) <= 1.0:
            raise SettingError(f"link IoU must be in (0, 1], got {self.link_iou!r}")
        if not _is_number(self.link_embed) or not 0.0 <= float(self.link_embed) <= 1.0:
            raise SettingError(f"link embed must be a weight in [0, 1], got {self.link_embed!r}")
        if not _is_number(self.birth_overlap) or not 0.0 < float(self.birth_overlap) <= 1.0:
            raise SettingError(f"birth overlap must be in (0, 1], got {self.birth_overlap!r}")
        if not _is_number(self.nms_iou) or not 0.0 < float(self.nms_iou) <= 1.0:
            raise SettingError(f"nms iou must be in (0, 1], got {self.nms_iou!r}")
        if not _is_number(self.min_motion) or not 0.0 <= float(self.min_motion) < 100.0:
            raise SettingError(f"min motion must be in [0, 100) (percent of the frame per frame), "
                               f"got {self.min_motion!r}")
        if self.refine not in REFINE_MODES:
            raise SettingError(f"refine must be one of {', '.join(REFINE_MODES)}, got {self.refine!r}")
        if not _is_int(self.refine_max_side) or self.refine_max_side < 16:
            raise SettingError(f"refine max side must be an integer >= 16, got {self.refine_max_side!r}")
        if not isinstance(self.device, str) or not self.device:
            raise SettingError(f"device must be a torch device name such as 'cpu' or 'cuda', got {self.device!r}")
        if not _is_int(self.min_area) or self.min_area < 0:
            raise SettingError(f"min area must be an integer >= 0, got {self.min_area!r}")
        if not _is_number(self.guided_radius) or not 0.0 < float(self.guided_radius) <= 0.5:
            raise SettingError(f"guided radius must be a fraction of the long side in (0, 0.5], "
                               f"got {self.guided_radius!r}")
        if not _is_number(self.guided_eps) or float(self.guided_eps) <= 0.0:
            raise SettingError(f"guided eps must be a number > 0, got {self.guided_eps!r}")
        for name in ("split_min_fraction", "split_min_area"):
            v = getattr(self, name)
            if not _is_number(v) or not 0.0 <= float(v) <= 1.0:
                raise SettingError(f"{name.replace('_', ' ')} must be a fraction in [0, 1], got {v!r}")
        for name in ("split", "upscale", "resolve_overlaps"):
            if not isinstance(getattr(self, name), bool):
                raise SettingError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.online, bool):
            raise SettingError(f"online must be true or false, got {self.online!r}")
        if not isinstance(self.tta_flip, bool):
            raise SettingError(f"tta flip must be true or false, got {self.tta_flip!r}")
        if not isinstance(self.tta_scales, tuple) or not all(_is_number(s) and 0.25 <= s <= 4
                                                              for s in self.tta_scales):
            raise SettingError(f"tta scales must be factors in [0.25, 4], got {self.tta_scales!r}")
        return self

    @property
    def memory_chunks(self) -> int:
        """``track_memory`` in chunks: the chunks that cover that many frames (rounded up)."""
        return -(-self.track_memory // self.step)

    @property
    def step(self) -> int:
        """Frames between the starts of consecutive chunks (``chunk - overlap``)."""
        return self.chunk - self.overlap

    def replace(self, **changes: Any) -> "SegmentConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_formats(text: str) -> Tuple[str, ...]:
    """``"ytvis,davis"`` → ``("ytvis", "davis")``: known names, no repeats, in :data:`FORMATS` order."""
    names = [n.strip().lower() for n in str(text).split(",") if n.strip()]
    if not names:
        raise SettingError(f"--format needs at least one of {', '.join(FORMATS)}")
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise SettingError(f"--format: unknown format {unknown[0]!r} (choose from {', '.join(FORMATS)})")
    return tuple(f for f in FORMATS if f in names)


def check_formats(formats: Sequence[str]) -> Tuple[str, ...]:
    """Validate a sequence of format names (the Python API's form of ``--format``)."""
    if isinstance(formats, str):
        return parse_formats(formats)
    return parse_formats(",".join(formats))
