"""Stage 3 training: sparse-to-dense distillation with an EMA teacher, dense labelset, self-distillation.

Example::

    from s2d.train import train
    results = train("cpu", "out/pseudo_labels.json", "videos/", "runs/r1")          # both stages
    results = train("cpu", "out/pseudo_labels.json", "videos/", "runs/r1", resume=True,
                    overrides=["solver.max_iter=1000"], stages=["distill"])
    results["distill"].model_path        # runs/r1/distill/model.pt — the teacher, a VideoMask2Former checkpoint

Under ``torchrun --nproc-per-node N`` every rank calls :func:`train`; rank 0 writes all files.
Importing this package builds nothing.
"""

from s2d.train.config import (STAGES, TRAIN_PRESETS, DataConfig, DenseConfig, DistillConfig, SolverConfig,
                              TrainConfig, apply_train_overrides, load_train_config, train_preset)
from s2d.train.data import ClipDataset, Labelset, LabelledVideo, labelled_windows, load_labelset, sample_clip_frames
from s2d.train.ema import EMATeacher
from s2d.train.loop import StageResult, teacher_targets, train, train_stage

__all__ = [
    "STAGES", "TRAIN_PRESETS", "DataConfig", "DenseConfig", "DistillConfig", "SolverConfig", "TrainConfig",
    "apply_train_overrides", "load_train_config", "train_preset", "ClipDataset", "Labelset", "LabelledVideo",
    "labelled_windows", "load_labelset", "sample_clip_frames", "EMATeacher", "StageResult", "teacher_targets",
    "train", "train_stage",
]
