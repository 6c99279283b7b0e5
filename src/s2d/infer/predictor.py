"""Streaming, chunked video segmentation with a trained video model (SPEC §4, stage 4).

The video is read lazily and cut into chunks of ``chunk`` (L) frames; consecutive chunks share
``overlap`` frames, so chunk starts are ``0, step, 2·step, ...`` with ``step = chunk - overlap``. The last
chunk is the video's last L frames (it may share more frames with the one before), so every chunk but
that of a video shorter than L has L frames. The model predicts mask tubes for a whole chunk; tubes are
linked to the previous chunk's by mask IoU on the shared frames (:class:`~s2d.infer.linking.TubeLinker`).

**Which chunk a frame's masks come from.** The first chunk that covers it. Later chunks see the frame
again only to link their tubes, so a frame is final — and yielded — as soon as its first chunk is done.
The source is therefore never more than L frames ahead of what has been yielded, and memory holds one
chunk: L frames at the working size, the tubes' mask logits at the working size, and one output frame at
the original size. Nothing grows with the video's length except the per-track score table.

Masks come out at the frames' original resolution: each tube's logits (working size) are bilinearly
upsampled and thresholded at 0 — or, with ``refine="crf"``, thresholded at ``refine_max_side``, snapped to
the image's edges with a dense CRF there and resized. Where objects overlap, the pixel goes to the higher
score (the rule every export uses, :meth:`s2d.types.FrameResult.label_map`), so each frame's masks are
disjoint and an object with no pixel left is absent from that frame.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from s2d.errors import InputError, S2DError
from s2d.infer.config import SegmentConfig
from s2d.infer.instances import split_tubes
from s2d.infer.linking import TubeLinker, group_duplicates
from s2d.infer.motion import MotionMeter
from s2d.infer.refine import guided_masks
from s2d.infer.tta import predict_tta
from s2d.io.video import Frame
from s2d.types import FrameResult

__all__ = ["RefineFn", "VideoPredictor", "segment_frames", "working_size"]

PathLike = Union[str, "os.PathLike[str]"]
#: ``refine_fn(rgb H×W×3 uint8, mask H×W bool) -> H×W bool``, e.g. :func:`s2d.frames.refine.crf_refine`
RefineFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


_UPSAMPLE_VALUES = 4_000_000  # float32 values (16 MB) per upsampling call of output masks


def working_size(height: int, width: int, max_side: Optional[int], *, upscale: bool = True) -> Tuple[int, int]:
    """``(h, w)`` with the long side ``max_side`` and the aspect kept (``max_side=None``: unchanged).

    With ``upscale=False`` a frame already within ``max_side`` keeps its size.
    """
    if max_side is None or max(height, width) == max_side or (not upscale and max(height, width) <= max_side):
        return int(height), int(width)
    scale = max_side / max(height, width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def _resize_rgb(rgb: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Area averaging when shrinking (no aliasing), bilinear when enlarging."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    shrink = size[0] <= rgb.shape[0] and size[1] <= rgb.shape[1]
    return cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


@dataclass
class _Item:
    """One frame while it is in the chunk window."""

    pos: int  # position in the stream (0-based): the FrameResult index
    frame: Optional[Frame]  # at the original size, until it is yielded with its result
    work: np.ndarray  # h×w×3 uint8 at the working size (the model's input)


def _merge_duplicates(masks: torch.Tensor, scores: torch.Tensor, logits: torch.Tensor, embeds: Optional[torch.Tensor],
                      max_iou: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Tubes that duplicate a better one (:func:`~s2d.infer.linking.group_duplicates`) merge into it: the union
    of their masks, the maximum of their logits, the better tube's score and embedding."""
    groups = group_duplicates(masks, scores.tolist(), max_iou)
    keep = list(groups)
    masks, logits = masks.clone(), logits.clone()
    for k, absorbed in groups.items():
        for j in absorbed:
            masks[k] |= masks[j]
            logits[k] = torch.maximum(logits[k], logits[j])
    return masks[keep], scores[keep], logits[keep], None if embeds is None else embeds[keep]


class VideoPredictor:
    """Run a video model over a stream of frames, chunk by chunk, and yield one result per frame.

    Args:
        model: a :class:`~s2d.model.VideoMask2Former` (anything with its ``predict``), already on its device.
        config: the inference settings (chunk, overlap, thresholds, sizes, refinement).
        refine_fn: mask refinement used when ``config.refine == "crf"`` (default
            :func:`s2d.frames.refine.crf_refine`); any ``(rgb, mask) -> mask`` works.

    After (or while) streaming, :attr:`track_scores` holds each track's score: the mean of its tube scores
    over the chunks it was found in.
    """

    def __init__(self, model: Any, config: Optional[SegmentConfig] = None, *,
                 refine_fn: Optional[RefineFn] = None) -> None:
        self.model = model
        self.config = (config or SegmentConfig()).validate()
        if refine_fn is None and self.config.refine == "crf":
            from s2d.frames.refine import crf_refine

            refine_fn = crf_refine
        self.refine_fn = refine_fn if self.config.refine == "crf" else None
        self._score_sum: Dict[int, float] = {}
        self._score_n: Dict[int, int] = {}
        self._enc_cache: Dict[int, Tuple[torch.Tensor, List[torch.Tensor]]] = {}
        self._queries: Optional[torch.Tensor] = None  # online model: the last chunk's query embeddings
        self._motion: Optional[MotionMeter] = None  # min_motion > 0: the stream's object motion
        self.frames_read = 0

    @property
    def track_scores(self) -> Dict[int, float]:
        """``{track id: mean tube score over its chunks}`` of the video being (or last) streamed."""
        return {tid: self._score_sum[tid] / self._score_n[tid] for tid in self._score_sum}

    # ------------------------------------------------------------------ streaming
    def stream(self, frames: Iterable[Union[Frame, np.ndarray]]) -> Iterator[Tuple[Frame, FrameResult]]:
        """Yield ``(frame, result)`` for every input frame, in order.

        ``frames`` yields :class:`~s2d.io.video.Frame` objects (as :func:`s2d.io.video.open_video` does) or
        ``H×W×3`` uint8 RGB arrays (named ``00000``, ``00001``...). ``result.index`` is the frame's position
        in the stream. An :class:`~s2d.errors.S2DError` raised by the source (a corrupt video) is re-raised
        after the frames decoded before it have been segmented and yielded.
        """
        cfg = self.config
        self._score_sum, self._score_n = {}, {}
        self._enc_cache = {}
        self._queries = None
        self._motion = MotionMeter() if cfg.min_motion > 0 else None
        self.frames_read = 0
        linker = TubeLinker(cfg.link_iou, cfg.memory_chunks, cfg.link_embed, cfg.birth_overlap)
        window: Deque[_Item] = deque(maxlen=cfg.chunk)  # the last ≤ L frames: the next chunk
        source = iter(frames)
        size: Optional[Tuple[int, int]] = None
        work_size: Optional[Tuple[int, int]] = None
        emitted = 0  # positions below this have been yielded
        error: Optional[S2DError] = None
        while error is None:
            need = cfg.chunk if emitted == 0 else cfg.step
            got = 0
            exhausted = False
            while got < need:
                try:
                    raw = next(source)
                except StopIteration:
                    exhausted = True
                    break
                except S2DError as exc:  # keep what was decoded; raise after yielding it
                    error, exhausted = exc, True
                    break
                frame = self._as_frame(raw, self.frames_read)
                if size is None:
                    size = frame.rgb.shape[:2]
                    work_size = working_size(size[0], size[1], cfg.max_side, upscale=cfg.upscale)
                elif frame.rgb.shape[:2] != size:
                    h, w = frame.rgb.shape[:2]
                    raise InputError(None, f"frame {self.frames_read}: size {w}x{h} differs from {size[1]}x{size[0]} "
                                           f"of the first frame")
                assert work_size is not None  # set with size on the first frame
                window.append(_Item(self.frames_read, frame, _resize_rgb(frame.rgb, work_size)))
                self.frames_read += 1
                got += 1
            if got:
                items = list(window)
                tubes = self._predict_chunk(items, linker)
                for j, item in enumerate(items):
                    if item.pos >= emitted:
                        assert item.frame is not None  # kept until the item is yielded
                        frame, result = item.frame, self._frame_result(item, j, tubes)
                        item.frame = None  # later chunks need only the working-size copy
                        yield frame, result
                emitted = self.frames_read
            if exhausted:
                break
        if error is not None:
            raise error

    def __call__(self, frames: Iterable[Union[Frame, np.ndarray]]) -> Iterator[FrameResult]:
        """Like :meth:`stream`, yielding only the :class:`~s2d.types.FrameResult` objects."""
        for _, result in self.stream(frames):
            yield result

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _as_frame(raw: Union[Frame, np.ndarray], pos: int) -> Frame:
        if isinstance(raw, Frame):
            return raw
        rgb = np.asarray(raw)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InputError(None, f"frame {pos}: expected an H×W×3 uint8 RGB array, got {rgb.shape} {rgb.dtype}")
        return Frame(pos, np.ascontiguousarray(rgb), f"{pos:05d}")

    @torch.no_grad()
    def _predict_chunk(self, items: List[_Item], linker: TubeLinker) -> Dict[str, Any]:
        """Model on one chunk → kept tubes (≤ max_objects, by score), linked: ids, scores, logits K×L×h×w."""
        cfg = self.config
        clip = torch.from_numpy(np.stack([it.work for it in items])).permute(0, 3, 1, 2)  # L×3×h×w uint8
        low = min(cfg.continue_threshold, cfg.score_threshold)
        if cfg.tta_flip or cfg.tta_scales:
            res = predict_tta(self.model, clip.float().div_(255.0), low, flip=cfg.tta_flip, scales=cfg.tta_scales)
        else:
            encoded = self._encode(items, clip)
            kw: Dict[str, Any] = {} if encoded is None else {"encoded": encoded}
            if self._propagates:
                kw["prev_queries"] = self._queries
            res = self.model.predict(clip, score_threshold=low, **kw)
            if self._propagates:
                self._queries = res.get("queries")
        masks = res["masks"]
        logits = res.get("mask_logits")
        if logits is None:  # a model that only gives masks: ±1 logits reproduce them
            logits = masks.float() * 2 - 1
        keep = (masks.flatten(1).sum(1) >= max(1, cfg.min_area)).nonzero().flatten()
        masks, logits, scores = masks[keep].cpu(), logits[keep].float().cpu(), res["scores"][keep].float().cpu()
        embeds = res.get("embeds")
        embeds = None if embeds is None else embeds[keep].float().cpu()
        if cfg.split and len(masks):
            masks, scores, logits, source = split_tubes(masks, scores, logits, min_fraction=cfg.split_min_fraction,
                                                        min_area=cfg.split_min_area * masks.shape[-2] * masks.shape[-1])
            assert logits is not None  # split_tubes returns the logits it is given
            embeds = None if embeds is None else embeds[source]  # a tube's parts share its query
        if cfg.nms_iou < 1.0 and len(masks) > 1:
            masks, scores, logits, embeds = _merge_duplicates(masks, scores, logits, embeds, cfg.nms_iou)
        ids = linker.link([it.pos for it in items], masks, starts=self._may_start(items, masks, scores),
                          limit=cfg.max_objects, embeds=embeds)
        kept = [k for k, i in enumerate(ids) if i > 0]
        ids, scores, logits = [ids[k] for k in kept], scores[kept], logits[kept]
        for tid, sc in zip(ids, scores.tolist()):
            self._score_sum[tid] = self._score_sum.get(tid, 0.0) + float(sc)
            self._score_n[tid] = self._score_n.get(tid, 0) + 1
        return {"ids": np.asarray(ids, dtype=np.int64), "scores": scores.numpy().astype(np.float64).clip(0, 1),
                "logits": logits}

    def _may_start(self, items: List[_Item], masks: torch.Tensor, scores: torch.Tensor) -> List[bool]:
        """Per tube, whether it may start a new object: score ≥ ``score_threshold`` and, with ``min_motion``,
        enough motion of its own in this chunk."""
        starts = (scores >= self.config.score_threshold).numpy()
        if self._motion is not None:
            self._motion.update([(it.pos, it.work) for it in items])
            moving = self._motion.tube_motion([it.pos for it in items], masks) >= self.config.min_motion
            starts = starts & moving  # NaN (no measurable frame) compares False
        return [bool(x) for x in starts]

    @property
    def _propagates(self) -> bool:
        """An online model (query propagation) on chunks that follow each other without overlap: each chunk's
        queries start from the last chunk's."""
        cfg = getattr(self.model, "config", None)
        return bool(getattr(cfg, "query_propagation", False)) and self.config.overlap == 0

    def _encode(self, items: List[_Item], clip: torch.Tensor) -> Optional[Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Per-frame encodings of the chunk (``model.encode``), reusing those of the frames the previous chunk
        shared with this one: every frame goes through the backbone and pixel decoder once, however large the
        overlap. ``None`` for a model without ``encode`` (it then runs on the whole chunk)."""
        encode = getattr(self.model, "encode", None)
        if encode is None:
            return None
        cache = self._enc_cache
        new = [j for j, it in enumerate(items) if it.pos not in cache]
        if new:
            was = self.model.training
            self.model.eval()
            try:
                mf, mem = encode(clip[new])
            finally:
                self.model.train(was)
            for k, j in enumerate(new):
                cache[items[j].pos] = (mf[k], [m[k] for m in mem])
        rows = [cache[it.pos] for it in items]
        encoded = (torch.stack([r[0] for r in rows]), [torch.stack([r[1][lv] for r in rows])
                                                        for lv in range(len(rows[0][1]))])
        keep = {it.pos for it in items[len(items) - self.config.overlap:]} if self.config.overlap else set()
        for pos in list(cache):
            if pos not in keep:
                del cache[pos]
        return encoded

    @torch.no_grad()
    def _frame_result(self, item: _Item, j: int, tubes: Dict[str, Any]) -> FrameResult:
        """Frame ``j`` of the chunk's tubes at the original size, overlaps resolved by score."""
        assert item.frame is not None
        H, W = item.frame.rgb.shape[:2]
        ids, scores, logits = tubes["ids"], tubes["scores"], tubes["logits"]
        if len(ids) == 0:
            return FrameResult.empty(item.pos, H, W)
        masks = np.zeros((len(ids), H, W), dtype=bool)
        if self.config.refine == "none":
            # objects in groups of ≤ _UPSAMPLE_VALUES full-size values: few calls on small frames, bounded
            # memory on large ones (a 4K frame goes one object at a time)
            group = max(1, _UPSAMPLE_VALUES // (H * W))
            for k in range(0, len(ids), group):
                lg = logits[k:k + group, j]
                if tuple(lg.shape[-2:]) != (H, W):
                    lg = F.interpolate(lg[None], size=(H, W), mode="bilinear", align_corners=False)[0]
                masks[k:k + group] = (lg > 0).numpy()
            return self._resolve(item.pos, masks, ids, scores, self.config.resolve_overlaps)
        rh, rw = working_size(H, W, self.config.refine_max_side, upscale=False)
        rgb = item.work if item.work.shape[:2] == (rh, rw) else _resize_rgb(item.frame.rgb, (rh, rw))
        if self.config.refine == "guided":
            masks = guided_masks(rgb, logits[:, j], self.config.guided_radius, self.config.guided_eps, (H, W))
            return self._resolve(item.pos, masks, ids, scores, self.config.resolve_overlaps)
        for k in range(len(ids)):  # one object at a time: memory of one full-size map
            lg = logits[k, j][None, None]
            if tuple(lg.shape[-2:]) != (rh, rw):
                lg = F.interpolate(lg, size=(rh, rw), mode="bilinear", align_corners=False)
            m = (lg[0, 0] > 0).numpy()
            if m.any():
                assert self.refine_fn is not None  # set when config.refine == "crf"
                m = np.asarray(self.refine_fn(rgb, m), dtype=bool)
            if m.shape != (H, W):
                m = F.interpolate(torch.from_numpy(m)[None, None].float(), size=(H, W), mode="bilinear",
                                  align_corners=False)[0, 0].numpy() > 0.5
            masks[k] = m
        return self._resolve(item.pos, masks, ids, scores, self.config.resolve_overlaps)

    @staticmethod
    def _resolve(pos: int, masks: np.ndarray, ids: np.ndarray, scores: np.ndarray, overlaps: bool = True
                 ) -> FrameResult:
        """Overlaps go to the higher score (``overlaps=False``: masks stay as predicted); objects left with no
        pixel are dropped from the frame."""
        if overlaps:
            labels = FrameResult(pos, masks, ids, scores).label_map()
            masks = labels[None] == ids[:, None, None]
        present = masks.reshape(len(ids), -1).any(1)
        return FrameResult(pos, masks[present], ids[present], scores[present])


def segment_frames(source: Union[PathLike, Iterable[Union[Frame, np.ndarray]]],
                   config: Optional[SegmentConfig] = None, *, model: Any = None) -> Iterator[FrameResult]:
    """Segment a video and yield one :class:`~s2d.types.FrameResult` per frame, streaming.

    Args:
        source: a video file, frame folder or glob (opened with :func:`s2d.io.video.open_video` at its
            original resolution), or an iterable of frames (``Frame`` objects or ``H×W×3`` uint8 arrays).
        config: inference settings (default :class:`SegmentConfig`).
        model: an already loaded model; default: ``load_model(config.model, config.device)``.

    Example::

        from s2d.infer import SegmentConfig, segment_frames
        for result in segment_frames("bikes.mp4", SegmentConfig(model="run/self-distill/model.pt")):
            print(result.index, result.ids, result.label_map().shape)
    """
    config = config or SegmentConfig()
    if model is None:
        from s2d.infer.weights import load_model

        model = load_model(config.model, config.device, online=config.online, backend=config.backend)
    predictor = VideoPredictor(model, config)
    if isinstance(source, (str, os.PathLike)):
        from s2d.io.video import open_video

        with open_video(source) as stream:
            yield from predictor(stream)
    else:
        yield from predictor(source)
