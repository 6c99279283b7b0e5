"""CoTracker3 point tracker (backend name ``cotracker3``): the official offline model, our PyTorch code.

The network (:mod:`s2d.tracking.cotracker3_model`) loads the official ``scaled_offline.pth`` by path —
strictly: a missing or unexpected parameter is a one-line :class:`~s2d.errors.InputError` naming it. Nothing
is downloaded; the weights come from the CoTracker release (facebookresearch/co-tracker), fetched by the user.

Inference follows the official ``CoTrackerPredictor`` (offline, ``window_len=60``) as keymask discovery uses
it (PAPER §2a):

* frames are resized to the model resolution (384×512, bilinear, ``align_corners=True``) and query
  coordinates scaled by ``(512−1)/(W−1)``, ``(384−1)/(H−1)``;
* a 6×6 *support grid* of extra queries on the first frame is tracked with the queries and dropped;
* the whole clip (or ``frame_range``) is one window: the offline model attends over all its frames, its
  learned 60-frame time embedding interpolated to the clip length; 6 refinement steps;
* points whose query frame is after the first frame are also tracked on the time-reversed clip, which gives
  their positions and visibility before the query frame (the predictor's ``backward_tracking``);
* visibility is the sigmoid output binarised at ``> 0.9``; each point is visible, at its query position, on
  its query frame.

``prepare`` runs the CNN encoder once per frame and keeps the features (128×96×128 float32 per frame, about
6.3 MB) on the tracker's device, so the many ``track`` calls of keymask discovery only run the transformer.
The result equals the official predictor's within 1e-4 px (``benchmarks/results/cotracker3_equality.md``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from s2d.errors import InputError, SettingError
from s2d.tracking.base import TrackResult
from s2d.tracking.video import FrameSource, check_queries, is_number, iter_input_frames

if TYPE_CHECKING:
    import torch

    from s2d.tracking.cotracker3_model import CoTracker3Offline

__all__ = ["CoTracker3Config", "CoTracker3Tracker", "load_cotracker3"]


@dataclass(frozen=True)
class CoTracker3Config:
    """Settings of :class:`CoTracker3Tracker` (defaults: the official offline predictor).

    Attributes:
        checkpoint: path of the official ``scaled_offline.pth`` (a state dict, possibly under ``"model"``).
            Required by :meth:`CoTracker3Tracker.prepare`; may be left ``None`` only to inspect settings.
        model_resolution: ``(H, W)`` the frames are resized to (384×512; multiples of 32).
        support_grid_size: side of the support grid tracked along with the queries (6; 0 = none).
        visibility_threshold: a point is visible where the visibility probability is above this (0.9).
        window_len: length of the model's learned time embedding, i.e. of its training window (60 for
            ``scaled_offline.pth``); must match the checkpoint.
        iters: refinement steps of the model (6, as the official predictor).
        device: torch device (``"auto"``: CUDA when available, else the CPU; :mod:`s2d.device`).
        encoder_batch: frames per batch of the CNN encoder in ``prepare`` (memory only; 8).
    """

    checkpoint: Optional[str] = None
    model_resolution: Tuple[int, int] = (384, 512)
    support_grid_size: int = 6
    visibility_threshold: float = 0.9
    window_len: int = 60
    iters: int = 6
    device: str = "auto"
    encoder_batch: int = 8

    def __post_init__(self) -> None:
        if self.checkpoint is not None:
            if not isinstance(self.checkpoint, (str, os.PathLike)):
                raise SettingError(f"CoTracker3Config.checkpoint must be a path, got {self.checkpoint!r}")
            object.__setattr__(self, "checkpoint", os.fspath(self.checkpoint))
        res = self.model_resolution
        if not isinstance(res, (tuple, list)) or len(res) != 2 or not all(_is_int(v) and v >= 32 and v % 32 == 0
                                                                         for v in res):
            raise SettingError(f"CoTracker3Config.model_resolution must be (H, W), multiples of 32, got {res!r}")
        object.__setattr__(self, "model_resolution", (int(res[0]), int(res[1])))
        for key, lowest in (("support_grid_size", 0), ("window_len", 2), ("iters", 1), ("encoder_batch", 1)):
            v = getattr(self, key)
            if not _is_int(v) or v < lowest:
                raise SettingError(f"CoTracker3Config.{key} must be an integer >= {lowest}, got {v!r}")
        thr = self.visibility_threshold
        if not is_number(thr) or not 0.0 <= thr < 1.0:
            raise SettingError(f"CoTracker3Config.visibility_threshold must be in [0, 1), got {thr!r}")
        if not isinstance(self.device, str):
            raise SettingError(f"CoTracker3Config.device must be a device name, got {self.device!r}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _is_int(v: object) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


# --------------------------------------------------------------------------- loading


def load_cotracker3(path: str, *, window_len: int = 60, model_resolution: Tuple[int, int] = (384, 512),
                    device: Any = "cpu") -> "CoTracker3Offline":
    """The offline network with the weights of ``path`` (official layout), in eval mode on ``device``.

    Raises:
        InputError: the file is missing or unreadable, or its parameters are not exactly the model's
            (one line naming the missing, unexpected or mis-shaped keys).
    """
    from s2d.tracking.cotracker3_model import CoTracker3Offline

    state = read_state_dict(path)
    check_keys(path, state, expected_shapes(window_len))
    model = CoTracker3Offline(window_len, model_resolution)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def expected_shapes(window_len: int = 60) -> Dict[str, Tuple[int, ...]]:
    """Parameter names and shapes of the offline model (built on the meta device: no memory, no init cost)."""
    import torch

    from s2d.tracking.cotracker3_model import CoTracker3Offline

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in CoTracker3Offline(window_len).state_dict().items()}


def validate_checkpoint(path: str, window_len: int = 60) -> None:
    """Check a checkpoint's keys and shapes without keeping its tensors (memory-mapped where possible)."""
    check_keys(path, read_state_dict(path, mmap=True), expected_shapes(window_len))


def read_state_dict(path: str, mmap: bool = False) -> Mapping[str, Any]:
    """The tensors of a checkpoint file: a state dict, or one stored under ``"model"``."""
    import torch

    if not os.path.isfile(path):
        raise InputError(path, "no such CoTracker3 checkpoint file (download scaled_offline.pth from the "
                               "CoTracker release and pass its path)")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy format: no mmap
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise InputError(path, f"not a readable PyTorch state-dict checkpoint ({type(exc).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise InputError(path, f"not a state dict (a {type(state).__name__})")
    return state


def check_keys(path: str, state: Mapping[str, Any], expected: Mapping[str, Tuple[int, ...]]) -> None:
    """Raise a one-line :class:`InputError` unless ``state`` has exactly the ``expected`` keys and shapes."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_names(unexpected)}")
    if not problems:
        shapes = [f"{k} {tuple(getattr(state[k], 'shape', ()))} (expected {expected[k]})"
                  for k in expected if tuple(getattr(state[k], "shape", ())) != tuple(expected[k])]
        if shapes:
            hint = " (time_emb length = window_len)" if any(s.startswith("time_emb ") for s in shapes) else ""
            problems.append(f"wrong shapes {_names(shapes)}{hint}")
    if problems:
        raise InputError(path, "not a CoTracker3 offline checkpoint: " + "; ".join(problems))


def _names(items: List[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# --------------------------------------------------------------------------- tracker


class CoTracker3Tracker:
    """CoTracker3 offline point tracker (backend name ``cotracker3``).

    >>> tracker = CoTracker3Tracker(checkpoint="scaled_offline.pth").prepare("video.mp4")   # doctest: +SKIP
    >>> res = tracker.track(np.array([[10, 120.0, 80.0]]))                                  # doctest: +SKIP
    >>> res.points.shape, res.visible.shape                                                # (T, 1, 2), (T, 1)

    The weights are loaded on the first ``prepare`` and kept for later videos; ``close()`` (or a ``with``
    block) frees the prepared video's features.
    """

    name = "cotracker3"

    def __init__(self, config: Optional[CoTracker3Config] = None, **kwargs: Any) -> None:
        if config is None:
            config = CoTracker3Config(**kwargs)
        elif kwargs:
            raise SettingError("pass either a CoTracker3Config or keyword settings, not both")
        if not isinstance(config, CoTracker3Config):
            raise SettingError(f"config must be a CoTracker3Config, got {type(config).__name__}")
        if config.checkpoint is not None:  # a bad file is a one-line error now, not after stage 1
            validate_checkpoint(config.checkpoint, config.window_len)
        self.config = config
        self._model: Optional["CoTracker3Offline"] = None
        self._fmaps: Optional["torch.Tensor"] = None
        self._size: Optional[Tuple[int, int]] = None

    # -- model and video
    @property
    def model(self) -> "CoTracker3Offline":
        """The network (loaded from ``config.checkpoint`` on first use)."""
        if self._model is None:
            from s2d.device import resolve_device

            cfg = self.config
            if cfg.checkpoint is None:
                raise SettingError("the cotracker3 tracker needs a checkpoint: --tracker cotracker3:PATH "
                                   "(the official scaled_offline.pth)")
            self._model = load_cotracker3(cfg.checkpoint, window_len=cfg.window_len,
                                          model_resolution=cfg.model_resolution,
                                          device=resolve_device(cfg.device))
        return self._model

    @property
    def prepared(self) -> bool:
        return self._fmaps is not None

    @property
    def num_frames(self) -> int:
        """Frames of the prepared video."""
        return int(self._need().shape[0])

    @property
    def size(self) -> Tuple[int, int]:
        """``(H, W)`` of the coordinates queries and results are in (the video given to ``prepare``)."""
        self._need()
        assert self._size is not None
        return self._size

    def _need(self) -> "torch.Tensor":
        if self._fmaps is None:
            raise SettingError("the tracker is not prepared (call prepare() with a video first)")
        return self._fmaps

    def prepare(self, source: FrameSource) -> "CoTracker3Tracker":
        """Encode every frame of ``source`` (a video file, frame folder or glob at its original size, or an
        iterable of :class:`~s2d.io.video.Frame` / ``H×W×3`` uint8 arrays) at the model resolution."""
        import torch

        self.close()
        model = self.model
        device = next(model.parameters()).device
        frames, orig = iter_input_frames(source, None)
        size = orig
        batch: List[np.ndarray] = []
        parts: List["torch.Tensor"] = []
        with torch.inference_mode():
            for frame in frames:
                rgb = _rgb(frame.rgb)
                if size is None:
                    size = (int(rgb.shape[0]), int(rgb.shape[1]))
                if batch and rgb.shape != batch[0].shape:
                    raise SettingError(f"frame {frame.index} differs in size from the first frame")
                batch.append(rgb)
                if len(batch) == self.config.encoder_batch:
                    parts.append(self._encode(batch, device))
                    batch = []
            if batch:
                parts.append(self._encode(batch, device))
        if not parts or size is None:
            raise SettingError("cannot prepare a tracker with a video without frames")
        self._fmaps = torch.cat(parts)
        self._size = (int(size[0]), int(size[1]))
        return self

    def _encode(self, batch: List[np.ndarray], device: "torch.device") -> "torch.Tensor":
        import torch
        import torch.nn.functional as F

        from s2d.tracking.cotracker3_model import feature_maps

        x = torch.from_numpy(np.stack(batch)).to(device).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, self.config.model_resolution, mode="bilinear", align_corners=True)
        return feature_maps(self.model.fnet, x)

    # -- tracking
    def track(self, queries: np.ndarray, frame_range: Optional[Tuple[int, int]] = None) -> TrackResult:
        """Track ``N×3`` queries ``(t, x, y)`` (video-size pixels) through the prepared video.

        Args:
            queries: ``N×3`` ``(frame, x, y)``; frames are integers.
            frame_range: optional ``(start, end)``, end exclusive: the model sees only these frames (one
                window); query frames must lie inside; other frames get NaN and ``visible=False``.

        Returns:
            :class:`~s2d.tracking.base.TrackResult`: ``points`` ``T×N×2`` float32 video-size pixels,
            ``visible`` ``T×N`` (visibility probability > ``visibility_threshold``).
        """
        fmaps = self._need()
        q, (lo, hi) = check_queries(queries, int(fmaps.shape[0]), frame_range)
        n, t_all = len(q), int(fmaps.shape[0])
        points = np.full((t_all, n, 2), np.nan, np.float32)
        visible = np.zeros((t_all, n), bool)
        if n:
            q = q.copy()
            q[:, 0] -= lo
            pts, vis = self._track_clip(fmaps[lo:hi], q)
            points[lo:hi], visible[lo:hi] = pts, vis
        return TrackResult(points, visible)

    def _track_clip(self, fmaps: "torch.Tensor", q: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The official predictor's sparse tracking on one clip; ``q`` has clip-relative frames."""
        import torch

        from s2d.tracking.cotracker3_model import grid_points

        cfg = self.config
        (mh, mw), (h, w) = cfg.model_resolution, self.size
        device = fmaps.device
        queries = torch.from_numpy(q.astype(np.float32)).to(device)[None]
        queries[:, :, 1:] *= queries.new_tensor([(mw - 1) / max(w - 1, 1), (mh - 1) / max(h - 1, 1)])
        n = queries.shape[1]
        if cfg.support_grid_size:
            grid = grid_points(cfg.support_grid_size, cfg.model_resolution, device=device)
            queries = torch.cat([queries, torch.cat([torch.zeros_like(grid[:, :, :1]), grid], dim=2)], dim=1)
        with torch.inference_mode():
            tracks, vis = self._forward_backward(fmaps[None], queries)
            tracks, visible = tracks[0, :, :n], vis[0, :, :n] > cfg.visibility_threshold
            frames = queries[0, :n, 0].long()
            arange = torch.arange(n, device=device)
            tracks[frames, arange] = queries[0, :n, 1:]  # exact (scaled) position and visible at the query frame
            visible[frames, arange] = True
            tracks *= tracks.new_tensor([(w - 1) / (mw - 1), (h - 1) / (mh - 1)])
            return tracks.cpu().numpy(), visible.cpu().numpy()

    def _forward_backward(self, fmaps: "torch.Tensor", queries: "torch.Tensor"
                          ) -> Tuple["torch.Tensor", "torch.Tensor"]:
        """Tracks and visibility probabilities; frames before a query's frame come from the reversed clip."""
        import torch

        model, iters = self.model, self.config.iters
        tracks, vis, _ = model(fmaps, queries, iters=iters)
        t = fmaps.shape[1]
        if bool((queries[0, :, 0] > 0).any()):
            inv = queries.clone()
            inv[:, :, 0] = t - inv[:, :, 0] - 1
            inv_tracks, inv_vis, _ = model(fmaps.flip(1), inv, iters=iters)
            before = torch.arange(t, device=fmaps.device)[None, :, None] < queries[:, None, :, 0]
            tracks = torch.where(before[..., None], inv_tracks.flip(1), tracks)
            vis = torch.where(before, inv_vis.flip(1), vis)
        return tracks, vis

    # -- lifetime
    def close(self) -> None:
        """Free the prepared video's features (the loaded weights stay for the next ``prepare``)."""
        self._fmaps = None
        self._size = None

    def __enter__(self) -> "CoTracker3Tracker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _rgb(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise SettingError(f"frames must be H×W×3 (or H×W) arrays, got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.uint8)
