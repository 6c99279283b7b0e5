"""Typed configuration of stage-3 training (:class:`TrainConfig`): solver, clip data, distillation, dense labels.

Presets (:func:`train_preset`):

* ``tiny``  — tests: the ``tiny`` model, 2 clips of 3 frames at 64×64, a few steps.
* ``cpu``   — default: the ``cpu`` model, AdamW 1e-4, 2 clips of 3 frames at 256×448, 600 iterations of
  distillation, then 2 self-distillation rounds of 300.
* ``paper`` — the S2D ytvis configs (PAPER.md §3–4): ``paper`` model, AdamW lr 1e-6, wd 0.05, backbone ×0.1,
  4 clips, 32k iterations, lr ×0.1 at 20200, warm-up 10, full-model L2 grad clip 0.01, EMA 0.999,
  teacher score ≥ 0.75, short side ∈ {360, 480} by clip, flip by clip, brightness/contrast.

``TrainConfig.from_dict`` / ``to_dict`` round-trip (checkpoints store the dict); :func:`load_train_config`
reads a preset name or a YAML file and applies ``key=value`` overrides (``solver.lr=3e-5``,
``data.batch_size=4``, ``model.num_queries=20`` — ``model.*`` go to the model config).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from s2d.errors import InputError, SettingError
from s2d.model.config import ModelConfig, apply_overrides, model_preset

if TYPE_CHECKING:
    from s2d.infer.config import SegmentConfig

__all__ = ["AMP_MODES", "SolverConfig", "DataConfig", "DistillConfig", "DenseConfig", "OnlineConfig", "TrainConfig",
           "TRAIN_PRESETS", "STAGES", "train_preset", "load_train_config", "apply_train_overrides"]

STAGES = ("distill", "self-distill", "online")
#: mixed-precision modes of training (``solver.amp``)
AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass(frozen=True)
class SolverConfig:
    """AdamW + warm-up + step decay (detectron2 ``WarmupMultiStepLR``), full-model L2 gradient clipping.

    ``max_iter`` is the distillation stage's length; ``self_distill_iter`` the self-distillation round's
    (``None``: same as ``max_iter``). ``steps`` are fractions of the stage length when all ≤ 1, else iterations.

    ``amp``: mixed precision of the forward passes (:data:`AMP_MODES`). ``"auto"``: on CUDA bf16 autocast where
    the GPU supports it, else fp16 with a gradient scaler; off on CPU. ``"bf16"`` (CUDA or CPU), ``"fp16"``
    (CUDA only, with the scaler) or ``"off"``. Losses and matching always run in float32.
    """

    lr: float = 1e-4
    weight_decay: float = 0.05
    weight_decay_norm: float = 0.0
    backbone_multiplier: float = 0.1
    betas: Tuple[float, float] = (0.9, 0.999)
    max_iter: int = 600
    self_distill_iter: Optional[int] = 300
    steps: Tuple[float, ...] = (0.63,)
    gamma: float = 0.1
    warmup_iters: int = 10
    warmup_factor: float = 1.0
    grad_clip: Optional[float] = 0.01
    amp: str = "auto"


@dataclass(frozen=True)
class DataConfig:
    """Clip sampling and per-clip augmentation (identical on all frames of a clip).

    Attributes:
        clip_len: frames per clip (T).
        frame_range: fallback rule: a labelled frame plus random frames within ± this many frames.
        batch_size: clips per step (per process under DDP).
        size: output ``(H, W)`` of every clip (divisible by 4).
        min_scale, max_scale: random zoom relative to the scale that covers ``size``; > 1 crops tighter.
        flip: horizontal flip with probability 0.5 (by clip).
        brightness, contrast: factors drawn in ``[1 - x, 1 + x]`` (by clip); 0 disables.
        min_saliency: train only on pseudo-label objects whose ``saliency`` (from ``s2d discover``) is at
            least this; 0 keeps all (the reference). Background regions are temporally coherent too and become
            keymask objects; stage 1 rarely ranks them first on a frame (see ``s2d.keymasks.discover``).
        min_keymasks: train only on pseudo-label objects labelled on at least this many frames; 0 keeps all.
        min_score_ratio: train only on pseudo-label objects whose ``score_ratio`` (from ``s2d discover``: mean
            stage-1 score of its keymasks relative to the best mask of their frames) is at least this; 0 keeps
            all. Several objects of one frame can all pass it, where ``min_saliency`` keeps only the first.
        copy_paste: probability that a clip gets the objects of other real clips pasted onto it (video
            copy-paste, :func:`s2d.train.data.paste_objects`), so that clips hold several separate instances;
            0 disables.
        paste_max: at most this many donor clips are pasted onto one clip (1..paste_max, uniformly).
        paste_scale: the pasted objects are resized by a factor drawn from this range (then shrunk further if
            they would not fit the clip).
        num_workers: data-loading worker processes that decode and augment clips ahead of the step (0: in the
            training process, between steps).
        prefetch_factor: batches each worker prepares ahead.
    """

    clip_len: int = 3
    frame_range: int = 20
    batch_size: int = 2
    size: Tuple[int, int] = (256, 448)
    min_scale: float = 1.0
    max_scale: float = 1.5
    flip: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    min_saliency: float = 0.5
    min_keymasks: int = 0
    min_score_ratio: float = 0.0
    copy_paste: float = 0.0
    paste_max: int = 2
    paste_scale: Tuple[float, float] = (0.4, 1.0)
    num_workers: int = 2
    prefetch_factor: int = 2


@dataclass(frozen=True)
class DistillConfig:
    """EMA teacher and its distillation targets (PAPER.md §3)."""

    enabled: bool = True
    ema_momentum: float = 0.999
    ema_warmup: bool = True  # m_t = min(m, (1+t)/(10+t)): short schedules end with a trained teacher (ema.py)
    score_threshold: float = 0.75
    mask_threshold: float = 0.0
    weight: float = 1.0
    class_weight: float = 0.0  # objectness loss on teacher targets (reference KD_CLASS_WEIGHT 0): with it on,
    # an early teacher with no confident query would push every student query to "no object"


@dataclass(frozen=True)
class DenseConfig:
    """Dense labelset from the distilled teacher (sliding windows linked by mask IoU)."""

    window: int = 3
    overlap: int = 1
    score_threshold: float = 0.75
    link_iou: float = 0.5
    max_side: Optional[int] = 576  # as `s2d segment` runs the model (its best working size, RESULTS.md)
    # frames smaller than max_side are enlarged to it (as `s2d segment` does); False: they keep their size, as
    # the dense labels were made before issue #15 (not measured apart yet)
    upscale: bool = True
    # False: labels keep the teacher's masks where they overlap (as the recipes' labels were made before issue
    # #15); True: a pixel two objects claim goes to the higher score, as `s2d segment` writes it. Measured from
    # one distilled model (RESULTS.md, "dense labels"): resolving lowered the round's F 0.515 -> 0.462 and raised
    # id switches per mosaic object 0.43 -> 4.57
    resolve_overlaps: bool = False
    keep_keymasks: bool = True
    keymask_iou: float = 0.3
    # "none" | "crf" (at the working size). Measured (benchmarks/results/stage3_selfdistill.md): the CRF lowers
    # the dense labels' J on the seen sequences (0.653 → 0.628; it erases low-contrast objects) and the
    # self-distilled model's unseen union J (0.626 → 0.609), so labels stay as the teacher predicts them
    refine: str = "none"  # or "guided": the guided filter of `s2d segment --refine guided` at the working size
    guided_radius: float = 0.0375
    guided_eps: float = 0.01
    min_area: int = 16
    tta_flip: bool = False  # consensus with the mirrored clip (s2d.infer.tta)
    tta_scales: Tuple[float, ...] = ()  # consensus with the clip resized by these factors, e.g. [1.25]
    # label only the first max_frames frames of each video (None: all): bounds the labelling time of long,
    # unlabeled clips; the rest of the video stays unlabelled (training samples labelled windows only)
    max_frames: Optional[int] = None
    # split each predicted tube into its space-time connected parts (s2d.infer.instances), so that objects one
    # query covers become separate labels; parts under split_min_area of the frame stay with the largest
    # part (the rule and default of `s2d segment`)
    split: bool = False
    split_min_area: float = 0.002
    # frames an object missing from a chunk stays linkable (s2d segment's track_memory); 0: the track ends
    track_memory: int = 0
    max_objects: int = 20  # at most this many tubes per chunk, highest scores first
    # weight of the query-embedding similarity in linking (s2d segment's link_embed); 0: masks only, as the
    # shipped recipe's labels were made
    link_embed: float = 0.0
    # a tube starts a label object only when it moves on its own (s2d segment's min_motion, percent of the
    # frame's long side per frame); 0: off
    min_motion: float = 0.0
    # merge a tube into a better one it overlaps by more than this mean IoU (s2d segment's nms_iou); 1: off, as
    # every recipe's labels were made
    nms_iou: float = 1.0

    def segment_config(self) -> "SegmentConfig":
        """These settings as the :class:`~s2d.infer.config.SegmentConfig` that dense labelling predicts with
        (one threshold for starting and continuing tracks, refinement at the video's own size)."""
        from s2d.infer.config import SegmentConfig

        return SegmentConfig(
            score_threshold=self.score_threshold, continue_threshold=self.score_threshold,
            track_memory=self.track_memory, max_objects=self.max_objects, chunk=self.window, overlap=self.overlap,
            max_side=self.max_side, upscale=self.upscale, resolve_overlaps=self.resolve_overlaps,
            link_iou=self.link_iou, link_embed=self.link_embed, min_motion=self.min_motion, nms_iou=self.nms_iou,
            refine=self.refine,
            guided_radius=self.guided_radius, guided_eps=self.guided_eps, min_area=self.min_area, split=self.split, split_min_area=self.split_min_area,
            tta_flip=self.tta_flip, tta_scales=tuple(self.tta_scales))


@dataclass(frozen=True)
class OnlineConfig:
    """Stage ``online``: a per-frame student distilled from the offline model (offline-to-online distillation
    after OOKD, arXiv 2302.07516).

    The student is the offline model's architecture with query propagation (:class:`~s2d.model.ModelConfig`),
    started from the offline weights; it sees a clip one frame at a time, each frame's queries starting from
    the previous frame's. The frozen offline model predicts tubes on the whole clip; its queries scoring at
    least ``score_threshold`` are the targets (query filtering), matched one-to-one to the student's queries
    over the whole clip (association), so a student query must follow one object through the frames. The
    student learns their masks (mask losses), their scores (objectness, weight ``class_weight``: unmatched
    queries learn "no object") and their query embeddings (``1 − cos``, weight ``embed_weight``), plus the
    sparse keymask labels as in ``distill`` (weight ``label_weight``).

    Attributes:
        teacher: the offline model to distil (a checkpoint path); ``None``: the run's ``model.pt``.
        iters: optimisation steps of the stage.
        score_threshold: τ, the teacher queries kept as targets.
        class_weight, embed_weight, label_weight: loss weights (see above).
    """

    teacher: Optional[str] = None
    iters: int = 300
    score_threshold: float = 0.75
    class_weight: float = 2.0
    embed_weight: float = 1.0
    label_weight: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``train()`` needs besides the data paths."""

    model: str = "cpu"
    model_overrides: List[str] = field(default_factory=list)
    init: Optional[str] = None
    stages: Tuple[str, ...] = ("distill", "self-distill")
    # where the self-distill student starts: "teacher" (the distilled model, fine-tuned on the dense labels) or
    # "init" (what distill started from: ``init`` or the ImageNet backbone — a fresh student, Noisy-Student style)
    self_distill_init: str = "teacher"
    # self-distillation rounds: each predicts the dense labels with the previous round's model (round 1: the
    # distilled one) and trains on them. Measured on `unseen`: round 1 +0.03 union J, round 2 another +0.02
    # (benchmarks/results/stage3_selfdistill.md); PAPER §3: "followed by another round of self-distillation"
    self_distill_rounds: int = 2
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    solver: SolverConfig = field(default_factory=SolverConfig)
    data: DataConfig = field(default_factory=DataConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)

    def __post_init__(self) -> None:
        self.validate()

    def model_config(self) -> ModelConfig:
        return apply_overrides(model_preset(self.model), self.model_overrides)

    def validate(self) -> "TrainConfig":
        for s in self.stages:
            if s not in STAGES:
                raise SettingError(f"unknown stage {s!r}; choose from {', '.join(STAGES)}")
        h, w = self.data.size
        if h % 4 or w % 4 or h < 8 or w < 8:
            raise SettingError(f"data.size must be ≥ 8 and divisible by 4, got {self.data.size}")
        if self.data.clip_len < 1 or self.data.batch_size < 1:
            raise SettingError("data.clip_len and data.batch_size must be ≥ 1")
        if not 0 < self.data.min_scale <= self.data.max_scale:
            raise SettingError("need 0 < data.min_scale ≤ data.max_scale")
        if not isinstance(self.data.min_keymasks, int) or self.data.min_keymasks < 0:
            raise SettingError(f"data.min_keymasks must be an integer ≥ 0, got {self.data.min_keymasks!r}")
        if not 0.0 <= self.data.min_score_ratio <= 1.0:
            raise SettingError(f"data.min_score_ratio must be in [0, 1], got {self.data.min_score_ratio}")
        if not 0.0 <= self.data.copy_paste <= 1.0:
            raise SettingError(f"data.copy_paste must be a probability in [0, 1], got {self.data.copy_paste}")
        if not isinstance(self.data.paste_max, int) or self.data.paste_max < 1:
            raise SettingError(f"data.paste_max must be an integer ≥ 1, got {self.data.paste_max!r}")
        for name in ("num_workers", "prefetch_factor"):
            v = getattr(self.data, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "num_workers" else 1):
                raise SettingError(f"data.{name} must be an integer ≥ {0 if name == 'num_workers' else 1}, got {v!r}")
        lo, hi = self.data.paste_scale
        if not 0 < lo <= hi:
            raise SettingError(f"data.paste_scale must be (lo, hi) with 0 < lo ≤ hi, got {self.data.paste_scale}")
        if not 0 <= self.distill.ema_momentum <= 1:
            raise SettingError(f"distill.ema_momentum must be in [0, 1], got {self.distill.ema_momentum}")
        if self.solver.amp not in AMP_MODES:
            raise SettingError(f"solver.amp must be one of {', '.join(AMP_MODES)}, got {self.solver.amp!r}")
        if self.solver.lr <= 0 or self.solver.max_iter < 1:
            raise SettingError("solver.lr must be > 0 and solver.max_iter ≥ 1")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise SettingError("log_every and checkpoint_every must be ≥ 1")
        if not isinstance(self.self_distill_rounds, int) or self.self_distill_rounds < 1:
            raise SettingError(f"self_distill_rounds must be an integer ≥ 1, got {self.self_distill_rounds!r}")
        if self.self_distill_init not in ("teacher", "init"):
            raise SettingError(f"self_distill_init must be 'teacher' or 'init', got {self.self_distill_init!r}")
        try:
            self.dense.segment_config()  # one validation of the prediction settings: s2d segment's
        except SettingError as exc:
            raise SettingError(f"dense: {str(exc).replace('chunk', 'window')}") from None
        if self.dense.max_frames is not None and (not isinstance(self.dense.max_frames, int)
                                                  or self.dense.max_frames < self.dense.window):
            raise SettingError(f"dense.max_frames must be null or an integer ≥ dense.window, "
                               f"got {self.dense.max_frames!r}")
        if self.dense.window < 1 or not 0 <= self.dense.overlap < self.dense.window:
            raise SettingError("need dense.window ≥ 1 and 0 ≤ dense.overlap < dense.window")
        o = self.online
        if not isinstance(o.iters, int) or o.iters < 1:
            raise SettingError(f"online.iters must be an integer ≥ 1, got {o.iters!r}")
        if not 0.0 <= o.score_threshold <= 1.0:
            raise SettingError(f"online.score_threshold must be in [0, 1], got {o.score_threshold}")
        for name in ("class_weight", "embed_weight", "label_weight"):
            if getattr(o, name) < 0:
                raise SettingError(f"online.{name} must be ≥ 0, got {getattr(o, name)}")
        self.model_config()  # raises SettingError on bad model name/overrides
        return self

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        return _lists(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Build from a mapping (a checkpoint's or run record's stored config); unknown keys and bad values are
        errors."""
        from s2d.settings import from_mapping

        return from_mapping(cls, d, what="train")


def _lists(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _lists(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_lists(v) for v in d]
    return d


def _tiny() -> TrainConfig:
    return TrainConfig(
        model="tiny", seed=0, log_every=1, checkpoint_every=2, self_distill_rounds=1,
        solver=SolverConfig(lr=1e-3, max_iter=6, self_distill_iter=4, steps=(0.8,), warmup_iters=0, grad_clip=1.0),
        data=DataConfig(batch_size=2, size=(64, 64), min_scale=1.0, max_scale=1.2, num_workers=0),
        distill=DistillConfig(ema_momentum=0.9),
        dense=DenseConfig(max_side=64, refine="none"),
        online=OnlineConfig(iters=4),
    )


def _cpu() -> TrainConfig:
    return TrainConfig(model="cpu")


def _paper() -> TrainConfig:
    return TrainConfig(
        model="paper", log_every=20, checkpoint_every=1000,
        solver=SolverConfig(lr=1e-6, weight_decay=0.05, backbone_multiplier=0.1, max_iter=32000,
                            self_distill_iter=32000, steps=(20200,), gamma=0.1, warmup_iters=10,
                            warmup_factor=1.0, grad_clip=0.01),
        # MIN_SIZE_TRAIN (360, 480) choice by clip; crop (600, 720) absolute — fixed-size batches here.
        data=DataConfig(clip_len=3, frame_range=20, batch_size=4, size=(480, 720), min_scale=0.75, max_scale=1.0,
                        flip=True, brightness=0.2, contrast=0.2, min_saliency=0.0),
        distill=DistillConfig(ema_momentum=0.999, ema_warmup=False, score_threshold=0.75, mask_threshold=0.0,
                              weight=1.0),
        dense=DenseConfig(score_threshold=0.75, max_side=None, refine="none"),  # the reference has no CRF
    )


TRAIN_PRESETS = {"tiny": _tiny, "cpu": _cpu, "paper": _paper}


def train_preset(name: str) -> TrainConfig:
    try:
        return TRAIN_PRESETS[name]().validate()
    except KeyError:
        raise SettingError(f"unknown train preset {name!r}; choose one of {', '.join(TRAIN_PRESETS)}") from None


def apply_train_overrides(cfg: TrainConfig, overrides: Iterable[str], source: str = "--set") -> TrainConfig:
    """Apply ``key=value`` strings (``solver.lr=3e-5``, ``data.size=[128,224]``, ``init=null``) through the one
    settings parser (:mod:`s2d.settings`). ``model.KEY=VALUE`` appends ``KEY=VALUE`` to ``model_overrides``,
    checked against the model config at once."""
    from s2d.settings import apply_overrides, split_item

    own, model = [], list(cfg.model_overrides)
    for item in overrides:
        key, raw = split_item(item)
        if key.startswith("model."):
            model.append(f"{key[6:]}={raw}")
        else:
            own.append(item)
    if model != list(cfg.model_overrides):
        cfg = dataclasses.replace(cfg, model_overrides=model)
    return apply_overrides(cfg, own, "train", source)


def load_train_config(config: Union[str, "os.PathLike[str]", TrainConfig, None] = "cpu",
                      overrides: Iterable[str] = ()) -> TrainConfig:
    """A preset name (``tiny``/``cpu``/``paper``) or a YAML file (optionally with ``preset: NAME`` as base),
    then ``key=value`` overrides."""
    if config is None:
        config = "cpu"
    if isinstance(config, TrainConfig):
        base = config
    elif str(config) in TRAIN_PRESETS:
        base = train_preset(str(config))
    else:
        import yaml

        path = os.fspath(config)
        if not os.path.isfile(path):
            raise InputError(path, f"not a train preset ({', '.join(TRAIN_PRESETS)}) nor a YAML file")
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InputError(path, f"unreadable YAML: {e}") from None
        if not isinstance(data, dict):
            raise InputError(path, "train config YAML must be a mapping")
        from s2d.settings import merge

        preset = data.pop("preset", "cpu")
        try:
            base = merge(train_preset(str(preset)), data, what="train")
        except SettingError as e:  # the file is named once, by InputError
            raise InputError(path, str(e)) from None
    return apply_train_overrides(base, overrides)
