"""Sparse-to-dense distillation training (PAPER.md §3, SPEC §4 stage 3).

Per step: a batch of augmented 3-frame clips (:class:`s2d.train.data.ClipDataset`) goes to the student and to
its EMA teacher. Loss = criterion(student, keymask labels) + ``distill.weight`` · criterion(student, teacher
targets), both with Hungarian matching and Temporal DropLoss; teacher targets are the teacher's queries with
object probability ≥ ``distill.score_threshold`` (0.75), masks upsampled to the clip size and binarised at
logit > 0. After the optimizer step the teacher is updated (momentum 0.999).

Run folder layout (``run_dir``)::

    metrics.jsonl             one JSON line every ``log_every`` steps (all stages)
    distill/last.pt           full training state, written atomically every ``checkpoint_every`` steps
    distill/model.pt          the final teacher (a VideoMask2Former checkpoint: ``s2d segment`` loads it)
    dense_labels.json         dense labelset predicted by the distilled teacher (+ keymasks)
    self-distill/last.pt, self-distill/model.pt
    dense_labels_2.json       with ``self_distill_rounds`` ≥ 2: labels predicted by round 1's model ...
    self-distill-2/last.pt, self-distill-2/model.pt   ... and round 2 trained on them (and so on)
    online/last.pt, online/model.pt   stage ``online``: the per-frame student distilled from model.pt
    online.pt                 ... compact, for ``s2d segment --online --model RUN/online.pt``
    model.pt                  the run's result: the last stage's model, compact (float16, no unused weights;
                              ``s2d segment --model`` loads it; it is what ships as the default model)

``last.pt`` holds student, teacher, optimizer, scheduler, step and the torch / numpy / python RNG states; data
draws depend only on (seed, step, rank), so a resumed run continues identically. A NaN/Inf loss raises
:class:`S2DError` before any update, leaving the last good ``last.pt`` untouched.

The CLI calls :func:`train`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from s2d.errors import InputError, S2DError, SettingError
from s2d.io.atomic import atomic_path, remove_stale_temps
from s2d.model import ModelConfig, VideoMask2Former, VideoSetCriterion
from s2d.train.config import STAGES, TrainConfig, load_train_config
from s2d.train.data import ClipDataset, clip_loader, load_labelset
from s2d.train.ddp import DistEnv, agree, all_reduce_mean, any_true, barrier, init_distributed, wrap_ddp
from s2d.train.ema import EMATeacher, unwrap

__all__ = ["train", "train_stage", "StageResult", "teacher_targets", "build_optimizer", "build_scheduler",
           "TRAIN_CHECKPOINT_FORMAT", "stage_dir"]

TRAIN_CHECKPOINT_FORMAT = "s2d.train/1"
PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class StageResult:
    stage: str
    step: int
    checkpoint: Path          # RUN_DIR/<stage>/last.pt
    model_path: Path          # RUN_DIR/<stage>/model.pt (final teacher)
    student: nn.Module
    teacher: nn.Module
    skipped: bool = False


def stage_dir(run_dir: PathLike, stage: str) -> Path:
    return Path(run_dir) / stage


def self_distill_round(run_dir: PathLike, k: int) -> Tuple[str, Path]:
    """Stage name and dense labelset of self-distillation round ``k`` (1-based): round 1 is ``self-distill``
    with ``dense_labels.json``, round k ≥ 2 ``self-distill-k`` with ``dense_labels_k.json``."""
    if k == 1:
        return "self-distill", Path(run_dir) / "dense_labels.json"
    return f"self-distill-{k}", Path(run_dir) / f"dense_labels_{k}.json"


# --------------------------------------------------------------------------- optimisation


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; backbone lr × ``backbone_multiplier``; no weight decay on norms, biases and query embeddings."""
    s = cfg.solver
    groups: Dict[tuple, List[nn.Parameter]] = {}
    for name, p in unwrap(model).named_parameters():
        if not p.requires_grad:
            continue
        lr = s.lr * (s.backbone_multiplier if name.startswith("backbone.") else 1.0)
        no_wd = p.ndim <= 1 or "query" in name or "level_embed" in name
        wd = s.weight_decay_norm if no_wd else s.weight_decay
        groups.setdefault((lr, wd), []).append(p)
    param_groups = [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
    return torch.optim.AdamW(param_groups, lr=s.lr, betas=cast(Tuple[float, float], tuple(s.betas)),
                             weight_decay=s.weight_decay)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, max_iter: int) -> torch.optim.lr_scheduler.LambdaLR:
    s = cfg.solver
    steps = [int(round(x * max_iter)) if all(v <= 1 for v in s.steps) else int(x) for x in s.steps]

    def factor(it: int) -> float:
        f = s.gamma ** sum(1 for m in steps if it >= m)
        if it < s.warmup_iters:
            alpha = it / max(1, s.warmup_iters)
            f *= s.warmup_factor * (1 - alpha) + alpha
        return f

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.no_grad()
def teacher_queries(outputs: Dict[str, torch.Tensor], score_threshold: float = 0.75) -> List[torch.Tensor]:
    """Per clip, the indices of the teacher's queries with object probability ≥ ``score_threshold`` (in query
    order): the queries :func:`teacher_targets` turns into targets, in its order."""
    probs = outputs["pred_logits"].float().softmax(-1)[..., 0]  # B×Q
    return [(p >= score_threshold).nonzero().flatten() for p in probs]


@torch.no_grad()
def teacher_targets(outputs: Dict[str, torch.Tensor], size: Sequence[int], score_threshold: float = 0.75,
                    mask_threshold: float = 0.0) -> List[Dict[str, torch.Tensor]]:
    """Teacher predictions → a target list: queries with object probability ≥ ``score_threshold``, masks
    bilinearly upsampled to ``size`` and binarised at logit > ``mask_threshold`` (reference: class score,
    no-object removed, then ``> 0.``)."""
    out = []
    for b, keep in enumerate(teacher_queries(outputs, score_threshold)):
        m = outputs["pred_masks"][b, keep].float()  # K×T×h×w
        if m.shape[0]:
            m = F.interpolate(m, size=tuple(int(v) for v in size), mode="bilinear", align_corners=False)
        else:
            m = m.new_zeros(0, m.shape[1], int(size[0]), int(size[1]))
        masks = m > mask_threshold
        out.append({"masks": masks, "labels": torch.zeros(masks.shape[0], dtype=torch.long, device=masks.device)})
    return out


# --------------------------------------------------------------------------- RNG state (weights_only-safe)


def _rng_state() -> Dict[str, Any]:
    np_state = cast(Tuple[str, np.ndarray, int, int, float], np.random.get_state())  # legacy=True: the tuple
    py = random.getstate()
    st = {"torch": torch.get_rng_state(),
          "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
          "numpy_meta": torch.tensor([int(np_state[2]), int(np_state[3])], dtype=torch.int64),
          "numpy_gauss": torch.tensor([float(np_state[4])], dtype=torch.float64),
          "python": torch.tensor(list(py[1]), dtype=torch.int64),
          "python_version": int(py[0]),
          "python_gauss": [] if py[2] is None else [float(py[2])]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: Dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    meta = st["numpy_meta"].tolist()
    np.random.set_state(("MT19937", st["numpy_keys"].numpy().astype(np.uint32), int(meta[0]), int(meta[1]),
                         float(st["numpy_gauss"][0])))
    g = st.get("python_gauss") or []
    random.setstate((int(st["python_version"]), tuple(int(v) for v in st["python"].tolist()),
                     float(g[0]) if g else None))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _read_train_checkpoint(path: Path) -> Dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise InputError(path, f"unreadable training checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != TRAIN_CHECKPOINT_FORMAT:
        raise InputError(path, f"not an s2d training checkpoint (format {TRAIN_CHECKPOINT_FORMAT} expected)")
    return payload


def _num_instances(targets: Sequence[Dict[str, torch.Tensor]], env: DistEnv) -> Optional[float]:
    """Under DDP the reference normalises the mask losses by the mean object count over all processes;
    single-process: ``None`` (the criterion counts them itself)."""
    if not env.distributed:
        return None
    n = sum(int(t["masks"].flatten(1).any(1).sum()) for t in targets)
    return float(all_reduce_mean(torch.tensor([float(n)], device=env.device)).item())


def _checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["step"])


def _truncate_metrics(path: Path, stage: str, step: int) -> None:
    """Drop metric lines of ``stage`` logged after ``step`` (work lost by an interruption, redone on resume)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the interruption
        if not (rec.get("stage") == stage and int(rec.get("step", 0)) > step):
            keep.append(line)
    from s2d.io.atomic import atomic_write_text

    atomic_write_text(path, "".join(k + "\n" for k in keep))


# --------------------------------------------------------------------------- one stage


#: what a stage in progress reads: changing it mid-stage would not continue the run identically
_STAGE_SECTIONS = ("solver", "data", "distill")
_STAGE_KEYS = ("seed",)


def _stage_settings_changed(old: Optional[Dict[str, Any]], new: Dict[str, Any]) -> List[str]:
    """Dotted keys of the settings a running stage reads that differ between ``old`` and ``new`` (train
    config dicts); none for a checkpoint that did not record its config. Tuples and lists compare equal."""
    if not isinstance(old, dict):
        return []
    old, new = json.loads(json.dumps(old, default=str)), json.loads(json.dumps(new, default=str))
    changed = [k for k in _STAGE_KEYS if k in old and old[k] != new.get(k)]
    for sec in _STAGE_SECTIONS:
        a, b = old.get(sec) or {}, new.get(sec) or {}
        # keys the old run did not know (added since) cannot be compared
        changed += [f"{sec}.{k}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    return changed


def train_stage(config: TrainConfig, data: PathLike, videos_root: PathLike, run_dir: PathLike,
                stage: str = "distill", *, resume: bool = False, init: Optional[PathLike] = None,
                device: Union[str, torch.device, None] = None, progress: bool = True,
                env: Optional[DistEnv] = None, max_iter: Optional[int] = None,
                stop_at: Optional[int] = None) -> StageResult:
    """Train one stage on labelset ``data`` (frames under ``videos_root``) into ``run_dir/<stage>/``.

    ``init``: a model checkpoint loaded into student and teacher before training (ignored when resuming).
    ``resume``: continue from ``run_dir/<stage>/last.pt`` when present (a finished stage — ``model.pt``
    present — is skipped); without it an existing ``last.pt`` is an error (never silently overwritten).
    ``max_iter``: stage length (default from the config). ``stop_at``: leave after this step with a checkpoint,
    as an interruption would (a time-boxed run; resume continues identically).
    """
    cfg = config.validate()
    env = env or init_distributed(device)
    sdir = stage_dir(run_dir, stage)
    last, final = sdir / "last.pt", sdir / "model.pt"
    total = _stage_length(cfg, stage, max_iter)
    if last.exists() and not resume:
        raise SettingError(f"{last} exists: pass resume to continue that run, or choose a new run folder")
    st, resumed = _build_stage(cfg, env, stage, data, total, last, final, init=init, resume=resume)
    if agree(resume and final.exists() and st.step >= total, env.device, f"stage {stage} is finished"):
        return st.result(skipped=True)
    loop = _prepare_loop(st, videos_root, run_dir, resumed)
    _run_steps(st, loop, stop_at, progress)
    if st.step < total:
        return st.result()
    if env.is_main:
        cast(VideoMask2Former, st.teacher.model).save_checkpoint(
            final, extra={"stage": stage, "step": st.step, "train_config": cfg.to_dict()})
    barrier(env)
    return st.result()


@dataclass
class _Stage:
    """A stage being trained: its settings, where it writes, what it trains and how far it is."""

    name: str
    cfg: TrainConfig
    mcfg: ModelConfig
    env: DistEnv
    data: PathLike
    total: int
    last: Path          # RUN_DIR/<stage>/last.pt
    final: Path         # RUN_DIR/<stage>/model.pt
    model: VideoMask2Former
    teacher: EMATeacher
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    step: int = 0
    offline: Optional[VideoMask2Former] = None  # stage online: the frozen offline model it distils
    amp_dtype: Optional[torch.dtype] = None     # autocast dtype of the forward passes (None: float32)
    scaler: Optional[Any] = None                # torch.amp.GradScaler with fp16 autocast

    def result(self, skipped: bool = False) -> StageResult:
        return StageResult(self.name, self.step, self.last, self.final, self.model, self.teacher.model,
                           skipped=skipped)


@dataclass
class _Loop:
    """What the step loop reads besides the stage: the clips, the DDP-wrapped student and the criteria."""

    dataset: ClipDataset
    student: nn.Module
    criterion: VideoSetCriterion
    kd_criterion: VideoSetCriterion
    metrics_path: Path


@dataclass
class _StepLosses:
    """The losses of one step (before the update)."""

    loss: torch.Tensor                # total: keymask loss + distill.weight · distillation loss
    value: float                      # ``loss`` as a float
    losses: Dict[str, torch.Tensor]   # the keymask criterion's terms ("loss", "loss_mask", "loss_dice", ...)
    loss_kd: Optional[torch.Tensor]   # the distillation loss (None when distillation is off)
    n_teacher: int                    # teacher targets in the batch
    data_s: float = 0.0               # seconds spent waiting for the batch's clips (read ahead by the workers)
    step_s: float = 0.0               # seconds of the step itself (forward, backward, update)


@dataclass
class _MetricsClock:
    """Time of the last ``metrics.jsonl`` line and the steps since (for ``sec_per_iter``)."""

    t_last: float
    steps_since: int = 0
    data_s: float = 0.0  # seconds waiting for data over those steps


def _stage_length(cfg: TrainConfig, stage: str, max_iter: Optional[int]) -> int:
    if stage == "online":
        return int(max_iter or cfg.online.iters)
    return int(max_iter or (cfg.solver.self_distill_iter
                            if stage.startswith("self-distill") and cfg.solver.self_distill_iter
                            else cfg.solver.max_iter))


def _build_stage(cfg: TrainConfig, env: DistEnv, stage: str, data: PathLike, total: int, last: Path, final: Path,
                 *, init: Optional[PathLike], resume: bool) -> Tuple[_Stage, bool]:
    """Seed, build student, teacher, optimizer and scheduler, and restore ``last`` when resuming; also whether
    a checkpoint was restored."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2 ** 32))
    random.seed(cfg.seed)
    offline = None
    ckpt = _read_train_checkpoint(last) if agree(resume and last.exists(), env.device, f"{last} exists") else None
    if stage == "online":  # the student is the offline model's architecture with query propagation
        if init is None:
            raise SettingError("the online stage needs the offline model to distil (online.teacher)")
        offline = VideoMask2Former.from_checkpoint(init, device=env.device).eval().requires_grad_(False)
        mcfg = offline.config.replace(query_propagation=True)
        model = VideoMask2Former(mcfg, "cpu", backbone_random_init=True)
        if ckpt is None:
            _load_offline_weights(model, offline, init)
    else:
        mcfg = cfg.model_config()
        model = VideoMask2Former(mcfg, "cpu")
        if ckpt is None and init is not None:
            model.load_checkpoint(init)
    model.to(env.device)
    teacher = EMATeacher(model, cfg.distill.ema_momentum, cfg.distill.ema_warmup)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total)
    amp_dtype = amp_dtype_for(cfg.solver.amp, env.device)
    scaler = torch.amp.GradScaler(env.device.type) if amp_dtype == torch.float16 else None
    st = _Stage(stage, cfg, mcfg, env, data, total, last, final, model, teacher, opt, sched, offline=offline,
                amp_dtype=amp_dtype, scaler=scaler)
    if ckpt is not None:
        _restore(st, ckpt)
    return st, ckpt is not None


def amp_dtype_for(mode: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of ``solver.amp`` on ``device`` (``None``: no autocast, float32)."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "fp16" and device.type != "cuda":
        raise SettingError("solver.amp=fp16 needs a CUDA device (use bf16 or off on CPU)")
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _forward(st: "_Stage", module: nn.Module, clips: torch.Tensor, **kw: Any) -> Dict[str, Any]:
    """A forward pass under the stage's mixed precision; floating outputs come back as float32, so the
    matching and the losses run in full precision."""
    if st.amp_dtype is None:
        return module(clips, **kw)
    with torch.autocast(st.env.device.type, dtype=st.amp_dtype):
        out = module(clips, **kw)
    return _to_float32(out)


def _to_float32(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, dict):
        return {k: _to_float32(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_to_float32(v) for v in x]
    return x


def _load_offline_weights(student: VideoMask2Former, offline: VideoMask2Former, path: PathLike) -> None:
    """Start the online student from the offline model: every weight but the (zero-initialised) propagation."""
    got = student.load_state_dict({k: v.detach().cpu() for k, v in offline.state_dict().items()}, strict=False)
    missing = [k for k in got.missing_keys if not k.startswith("decoder.propagate.")]
    if missing or got.unexpected_keys:
        raise InputError(path, f"not an offline model of this architecture (missing {missing[:4]}, "
                               f"unexpected {got.unexpected_keys[:4]})")


def _stored_model_config(stored: Any) -> Dict[str, Any]:
    """A checkpoint's model config as a full dict: fields added since it was written get their defaults (which
    reproduce the old behaviour), so an older run resumes; an unreadable one compares as given."""
    if not isinstance(stored, dict):
        return {}
    try:
        return ModelConfig.from_dict(stored).to_dict()
    except S2DError:
        return dict(stored)


def _restore(st: _Stage, ckpt: Dict[str, Any]) -> None:
    """Load a training checkpoint of this stage (states, step, RNG); refuses another model config or changed
    settings of an unfinished stage."""
    last, mcfg = st.last, st.mcfg
    stored = _stored_model_config(ckpt.get("model_config"))
    if stored != mcfg.to_dict():
        diff = sorted(k for k in set(mcfg.to_dict()) | set(stored) if stored.get(k) != mcfg.to_dict().get(k))
        raise InputError(last, f"training checkpoint was made with another model config (differs in: "
                               f"{', '.join(diff)}); resume with the same config or use a new run folder")
    try:
        st.model.load_state_dict(ckpt["model"])
        st.teacher.load_state_dict(ckpt["teacher"])
        st.opt.load_state_dict(ckpt["optimizer"])
        st.sched.load_state_dict(ckpt["scheduler"])
        if st.scaler is not None and "scaler" in ckpt:
            st.scaler.load_state_dict(ckpt["scaler"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise InputError(last, f"training checkpoint does not match this config: {' '.join(str(e).split())[:300]}"
                         ) from None
    st.step = int(ckpt["step"])
    changed = _stage_settings_changed(ckpt.get("train_config"), st.cfg.to_dict()) if st.step < st.total else []
    if changed:
        raise InputError(last, f"this stage was started with other settings ({', '.join(changed)}); resume "
                               f"with the same settings or use a new run folder")
    _set_rng_state(ckpt["rng"])


def _prepare_loop(st: _Stage, videos_root: PathLike, run_dir: PathLike, resumed: bool) -> _Loop:
    """Dataset, DDP-wrapped student and criteria; the stage folder (a killed run's temp files removed) and, on
    resume, ``metrics.jsonl`` without the lines logged after the checkpoint."""
    cfg, mcfg = st.cfg, st.mcfg
    dataset = ClipDataset(st.data, videos_root, cfg.data, seed=cfg.seed + _data_seed_offset(st.name))
    student = wrap_ddp(st.model, st.env, find_unused_parameters=mcfg.loss.class_weight == 0)
    criterion = VideoSetCriterion(mcfg.loss)
    kd_class = cfg.online.class_weight if st.name == "online" else cfg.distill.class_weight
    kd_criterion = VideoSetCriterion(dataclasses.replace(mcfg.loss, class_weight=kd_class))
    metrics_path = Path(run_dir) / "metrics.jsonl"
    if st.env.is_main:
        sdir = st.last.parent
        sdir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(sdir)  # a killed run's half-written checkpoint
        if resumed:
            _truncate_metrics(metrics_path, st.name, st.step)
    return _Loop(dataset, student, criterion, kd_criterion, metrics_path)


def _data_seed_offset(stage: str) -> int:
    """Each stage draws its own clips: distill 0, self-distill round k 7919·k, online 104729 (added to the seed)."""
    if stage == "distill":
        return 0
    if stage == "online":
        return 104729
    round_k = int(stage.rsplit("-", 1)[1]) if stage.startswith("self-distill-") else 1
    return 7919 * round_k


def _run_steps(st: _Stage, loop: _Loop, stop_at: Optional[int], progress: bool) -> None:
    """Train until the stage's end (or ``stop_at``): log every ``log_every`` steps, checkpoint every
    ``checkpoint_every`` steps and at the last step."""
    from tqdm import tqdm

    cfg, env = st.cfg, st.env
    bar = tqdm(total=st.total, initial=st.step, desc=st.name, unit="it", disable=not (progress and env.is_main),
               dynamic_ncols=True)
    clock = _MetricsClock(time.perf_counter())
    end = st.total if stop_at is None else min(st.total, int(stop_at))
    loader = clip_loader(loop.dataset, st.step, end, rank=env.rank, world=env.world_size,
                         pin_memory=env.device.type == "cuda")
    batches = iter(loader)
    try:
        while st.step < end:
            t0 = time.perf_counter()
            clips, targets = next(batches)  # batch st.step (StepSampler), read ahead by the workers
            out = _train_step(st, loop, clips, targets)
            out.data_s = time.perf_counter() - t0 - out.step_s
            st.step += 1
            clock.steps_since += 1
            clock.data_s += out.data_s
            bar.update(1)
            if env.is_main and (st.step % cfg.log_every == 0 or st.step == st.total):
                _log_step(st, loop.metrics_path, out, clock)
                bar.set_postfix(loss=f"{out.value:.3f}", kd=out.n_teacher)
            if st.step % cfg.checkpoint_every == 0 or st.step == end:
                _save_checkpoint(st)
    finally:
        bar.close()
        del batches  # stops the data workers


def _train_step(st: _Stage, loop: _Loop, clips: torch.Tensor, targets: List[Dict[str, Any]]) -> _StepLosses:
    """One optimisation step on a batch: losses, the NaN/Inf stop, update, teacher EMA update."""
    cfg, env = st.cfg, st.env
    t0 = time.perf_counter()
    clips = clips.to(env.device, non_blocking=True)
    gt = [{"masks": t["masks"].to(env.device), "labels": t["labels"].to(env.device)} for t in targets]
    out = _step_losses(st, loop, clips, gt)
    _check_finite(st, out.value)
    st.opt.zero_grad(set_to_none=True)
    if st.scaler is not None:  # fp16: scaled loss, gradients unscaled before clipping
        st.scaler.scale(out.loss).backward()
        st.scaler.unscale_(st.opt)
    else:
        out.loss.backward()
    if cfg.solver.grad_clip:
        torch.nn.utils.clip_grad_norm_([p for p in st.model.parameters() if p.requires_grad], cfg.solver.grad_clip)
    if st.scaler is not None:
        st.scaler.step(st.opt)
        st.scaler.update()
    else:
        st.opt.step()
    st.sched.step()
    st.teacher.update(st.model, st.step)
    out.step_s = time.perf_counter() - t0
    return out


def _step_losses(st: _Stage, loop: _Loop, clips: torch.Tensor, gt: List[Dict[str, torch.Tensor]]) -> _StepLosses:
    """Student forward; keymask loss plus, with distillation on, ``distill.weight`` × the loss against the
    teacher's targets."""
    if st.offline is not None:
        return _online_losses(st, loop, clips, gt)
    cfg, env = st.cfg, st.env
    loop.student.train()
    out = _forward(st, loop.student, clips)
    losses = loop.criterion(out, gt, num_instances=_num_instances(gt, env))
    loss = losses["loss"]
    n_teacher = 0
    loss_kd = None
    if cfg.distill.enabled and cfg.distill.weight > 0:
        with torch.no_grad():
            t_out = _forward(st, st.teacher.model, clips, aux=False)
        kd_t = teacher_targets(t_out, clips.shape[-2:], cfg.distill.score_threshold, cfg.distill.mask_threshold)
        n_teacher = sum(int(t["masks"].shape[0]) for t in kd_t)
        loss_kd = loop.kd_criterion(out, kd_t, num_instances=_num_instances(kd_t, env))["loss"]
        loss = loss + cfg.distill.weight * loss_kd
    return _StepLosses(loss, float(loss.detach()), losses, loss_kd, n_teacher)


def _online_losses(st: _Stage, loop: _Loop, clips: torch.Tensor, gt: List[Dict[str, torch.Tensor]]) -> _StepLosses:
    """Stage online (:class:`~s2d.train.config.OnlineConfig`): the student unrolled frame by frame against the
    offline model's confident tubes (masks, objectness, query embeddings) and the keymask labels."""
    oc, env = st.cfg.online, st.env
    assert st.offline is not None
    loop.student.train()
    out = _forward(st, loop.student, clips)  # query propagation: one frame at a time
    losses = loop.criterion(out, gt, num_instances=_num_instances(gt, env))
    with torch.no_grad():
        t_out = _forward(st, st.offline, clips, aux=False)
    keep = teacher_queries(t_out, oc.score_threshold)
    kd_t = teacher_targets(t_out, clips.shape[-2:], oc.score_threshold, st.cfg.distill.mask_threshold)
    for b, t in enumerate(kd_t):  # tubes with no pixel are no targets (the criterion drops them too)
        present = t["masks"].flatten(1).any(1)
        keep[b], kd_t[b] = keep[b][present], {k: v[present] for k, v in t.items()}
    indices = loop.kd_criterion.match(out, kd_t)
    loss_kd = loop.kd_criterion(out, kd_t, num_instances=_num_instances(kd_t, env), indices=indices)["loss"]
    pairs = [(out["pred_embeds"][b, src], t_out["pred_embeds"][b, keep[b][tgt.to(keep[b].device)]])
             for b, (src, tgt) in enumerate(indices)]
    s_emb = torch.cat([p[0] for p in pairs]) if pairs else out["pred_embeds"][:, :0].flatten(0, 1)
    t_emb = torch.cat([p[1] for p in pairs]) if pairs else s_emb.detach()
    loss_emb = (1 - F.cosine_similarity(s_emb, t_emb.detach(), dim=-1)).mean() if len(s_emb) else s_emb.sum() * 0
    loss_kd = loss_kd + oc.embed_weight * loss_emb
    loss = oc.label_weight * losses["loss"] + loss_kd
    return _StepLosses(loss, float(loss.detach()), losses, loss_kd, sum(int(t["masks"].shape[0]) for t in kd_t))


def _check_finite(st: _Stage, value: float) -> None:
    """Raise :class:`S2DError` on every rank when the loss is NaN/Inf on any rank (before any update)."""
    if any_true(not math.isfinite(value), st.env.device):
        last = st.last
        where = (f"last good checkpoint: {last} (step {_checkpoint_step(last)})"
                 if last.exists() else "no checkpoint was written yet")
        what = "NaN" if math.isnan(value) else ("Inf" if math.isinf(value) else "NaN/Inf on another rank")
        raise S2DError(f"{st.name}: loss is {what} at step {st.step + 1} (rank {st.env.rank}); training stopped, "
                       f"{where}; lower solver.lr or check the labels, then resume")


def _log_step(st: _Stage, path: Path, out: _StepLosses, clock: _MetricsClock) -> None:
    """Append the step's line to ``metrics.jsonl`` (main process)."""
    now = time.perf_counter()
    rec = {"stage": st.name, "step": st.step, "loss": out.value, "loss_gt": float(out.losses["loss"].detach()),
           "loss_kd": None if out.loss_kd is None else float(out.loss_kd.detach()),
           "loss_mask": float(out.losses["loss_mask"].detach()),
           "loss_dice": float(out.losses["loss_dice"].detach()),
           "teacher_objects": out.n_teacher, "lr": max(st.sched.get_last_lr()),
           "sec_per_iter": (now - clock.t_last) / max(1, clock.steps_since),
           "data_time": clock.data_s / max(1, clock.steps_since), "time": time.time()}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    clock.t_last, clock.steps_since, clock.data_s = now, 0, 0.0


def _save_checkpoint(st: _Stage) -> None:
    """Write ``last.pt`` atomically (main process; see the module docstring), then wait for all ranks."""
    if st.env.is_main:
        payload = {"format": TRAIN_CHECKPOINT_FORMAT, "stage": st.name, "step": st.step, "max_iter": st.total,
                   "train_config": st.cfg.to_dict(), "model_config": st.mcfg.to_dict(),
                   "model": {k: v.detach().cpu() for k, v in st.model.state_dict().items()},
                   "teacher": {k: v.detach().cpu() for k, v in st.teacher.state_dict().items()},
                   "optimizer": st.opt.state_dict(), "scheduler": st.sched.state_dict(), "rng": _rng_state(),
                   "labelset": os.fspath(st.data)}
        if st.scaler is not None:
            payload["scaler"] = st.scaler.state_dict()
        with atomic_path(st.last, fsync=True) as tmp:
            torch.save(payload, tmp)
    barrier(st.env)


# --------------------------------------------------------------------------- whole pipeline


def _record_config(run: Path, cfg: TrainConfig) -> None:
    """Write the config this call trains with to ``run/train_config.json``. A resumed run may change settings
    of stages still to come (e.g. ``dense.*`` before ``self-distill``): the record then says what was used
    from now on, and a differing earlier record is kept as ``train_config.<k>.json``."""
    from s2d.io.atomic import atomic_write_text

    path = run / "train_config.json"
    text = json.dumps(cfg.to_dict(), indent=2)
    if path.is_file():
        old = path.read_text()
        if old == text:
            return
        k = 1
        while (run / f"train_config.{k}.json").exists():
            k += 1
        atomic_write_text(run / f"train_config.{k}.json", old)
    atomic_write_text(path, text, fsync=True)


def train(config: Union[TrainConfig, str, PathLike, None], data: PathLike, videos_root: PathLike,
          run_dir: PathLike, resume: bool = False, *, overrides: Sequence[str] = (),
          stages: Optional[Sequence[str]] = None, device: Union[str, torch.device, None] = None,
          progress: bool = True) -> Dict[str, StageResult]:
    """Run the configured stages (``distill`` then ``self-distill``) — the function ``s2d train`` calls.

    Args:
        config: a :class:`TrainConfig`, a preset name (``tiny``/``cpu``/``paper``) or a YAML file.
        data: the sparse labelset (``pseudo_labels.json`` from ``s2d discover``).
        videos_root: the root the labelset's ``source`` paths are relative to.
        run_dir: output folder (see the module docstring for its layout).
        resume: continue an interrupted run (finished stages are skipped, the dense labelset reused).
        overrides: ``key=value`` strings (see :func:`s2d.train.config.apply_train_overrides`).
        stages: subset of ``("distill", "self-distill", "online")``; default ``config.stages``. ``online``
            distils the run's ``model.pt`` (or ``online.teacher``) into a per-frame model, ``RUN/online.pt``
            (:class:`~s2d.train.config.OnlineConfig`). ``self-distill`` alone
            needs ``run_dir/distill/model.pt`` from an earlier run.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available (``cuda:LOCAL_RANK`` under torchrun).

    Under ``torchrun`` every rank calls this; rank 0 writes all files.
    """
    cfg = load_train_config(config, overrides) if not isinstance(config, TrainConfig) or overrides \
        else config.validate()
    stages = list(stages or cfg.stages)
    for s in stages:
        if s not in STAGES:
            raise SettingError(f"unknown stage {s!r}; choose from {', '.join(STAGES)}")
    load_labelset(data)  # validate early, one-line error on a bad file
    env = init_distributed(device)
    run = Path(run_dir)
    if env.is_main:
        run.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run)
        _record_config(run, cfg)
    results: Dict[str, StageResult] = {}
    # the process group (if any) stays up until exit: see s2d.train.ddp.init_distributed
    if "distill" in stages:
        results["distill"] = train_stage(cfg, data, videos_root, run, "distill", resume=resume, init=cfg.init,
                                         progress=progress, env=env)
    if "self-distill" in stages:
        teacher_ckpt = stage_dir(run, "distill") / "model.pt"
        if not teacher_ckpt.is_file():
            raise InputError(teacher_ckpt, "self-distill needs the distilled model; run the distill stage first")
        for k in range(1, cfg.self_distill_rounds + 1):
            stage, dense = self_distill_round(run, k)
            if not agree(resume and dense.is_file(), env.device, f"{dense} exists"):
                _dense_labels(cfg, env, teacher_ckpt, data, videos_root, dense, progress)
            barrier(env)
            sd_init = teacher_ckpt if cfg.self_distill_init == "teacher" else cfg.init
            results[stage] = train_stage(cfg, dense, videos_root, run, stage, resume=resume, init=sd_init,
                                         progress=progress, env=env)
            teacher_ckpt = results[stage].model_path  # the next round's labels come from this round's model
    if env.is_main and results:
        _save_compact(list(results.values())[-1].model_path, run / "model.pt")
    if "online" in stages:
        offline = Path(cfg.online.teacher) if cfg.online.teacher else run / "model.pt"
        if not offline.is_file():
            raise InputError(offline, "the online stage distils the offline model: train the offline stages "
                                      "first, or set online.teacher=PATH")
        barrier(env)
        results["online"] = train_stage(cfg, data, videos_root, run, "online", resume=resume, init=offline,
                                        progress=progress, env=env)
        if env.is_main:
            _save_compact(results["online"].model_path, run / "online.pt")
    return results


def _dense_labels(cfg: TrainConfig, env: DistEnv, teacher_ckpt: Path, data: PathLike, videos_root: PathLike,
                  dense: Path, progress: bool) -> None:
    """The dense labelset, sharded: every rank labels every ``world``-th video, rank 0 joins the shards in
    video order (the same file as one process writes)."""
    from s2d.train.dense import merge_dense_shards, write_dense_shard

    labelset = load_labelset(data, min_saliency=cfg.data.min_saliency, min_keymasks=cfg.data.min_keymasks,
                             min_score_ratio=cfg.data.min_score_ratio)
    teacher = VideoMask2Former.from_checkpoint(teacher_ckpt, device=env.device)
    write_dense_shard(teacher, labelset, videos_root, dense, cfg.dense, rank=env.rank, world=env.world_size,
                      progress=progress and env.is_main)
    barrier(env)
    if env.is_main:
        merge_dense_shards(labelset, dense, cfg.dense, world=env.world_size)


def _save_compact(model_path: Path, dest: Path) -> None:
    """A stage's final model as the run's compact result (float16, unused weights left out)."""
    final = VideoMask2Former.from_checkpoint(model_path)
    extra = dict(torch.load(model_path, map_location="cpu", weights_only=True).get("extra", {}))
    final.save_checkpoint(dest, extra=extra, compact=True)
