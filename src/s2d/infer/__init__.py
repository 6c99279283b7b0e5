"""Stage 4 of S2D: streaming video segmentation with a trained video model (``s2d segment``).

Chunks of L frames with overlap go through the model one at a time; tubes are linked across chunks by
mask IoU on the shared frames; results stream out frame by frame, so memory is bounded by the chunk, not
the video. Example::

    from s2d.infer import SegmentConfig, load_model, segment_frames, segment_video

    cfg = SegmentConfig(model="runs/train/self-distill/model.pt", score_threshold=0.5)
    for result in segment_frames("bikes.mp4", cfg):          # one FrameResult per frame
        print(result.index, result.ids.tolist())
    summary = segment_video("bikes.mp4", "out", cfg, formats=("ytvis", "davis", "overlay"))

Importing this package loads no model and no weights.
"""

import importlib
from typing import Any

# name -> submodule; imported on first use, so `import s2d.infer.config` (the CLI's parser) stays light
_EXPORTS = {
    "DEFAULT_FORMATS": "config", "DEFAULT_REFINE": "config", "FORMATS": "config", "REFINE_MODES": "config",
    "SegmentConfig": "config", "check_formats": "config", "parse_formats": "config",
    "TubeLinker": "linking", "match_tubes": "linking", "tube_iou": "linking",
    "VideoPredictor": "predictor", "segment_frames": "predictor", "working_size": "predictor",
    "SegmentSummary": "segment", "output_dir": "segment", "segment_video": "segment",
    "DEFAULT_MODEL": "weights", "default_model_path": "weights", "load_model": "weights", "resolve_device": "weights",
}

__all__ = [
    "DEFAULT_FORMATS",
    "DEFAULT_MODEL",
    "DEFAULT_REFINE",
    "FORMATS",
    "REFINE_MODES",
    "SegmentConfig",
    "SegmentSummary",
    "TubeLinker",
    "VideoPredictor",
    "check_formats",
    "default_model_path",
    "load_model",
    "match_tubes",
    "output_dir",
    "parse_formats",
    "resolve_device",
    "segment_frames",
    "segment_video",
    "tube_iou",
    "working_size",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"s2d.infer.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 's2d.infer' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(list(globals()) + list(_EXPORTS))
