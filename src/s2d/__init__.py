"""s2d — unsupervised video instance segmentation (Sparse-To-Dense Keymask Distillation).

The package is layered by concept (see SPEC §3): ``s2d.io`` reads frames and reads/writes result
formats, ``s2d.types`` holds the one canonical result type, ``s2d.eval`` scores results exactly
like the official YouTube-VIS and DAVIS tools. Importing ``s2d`` has no side effects and loads no
model: the names below are imported on first use. Example::

    import s2d

    for result in s2d.segment_frames("bikes.mp4"):          # one FrameResult per frame, streaming
        print(result.index, result.ids.tolist())
    s2d.segment_video("bikes.mp4", "out", formats=("ytvis", "davis"))
"""

import importlib
from typing import TYPE_CHECKING, Any, List

__version__ = "0.1.0"

if TYPE_CHECKING:  # what IDEs and type checkers see; at run time the names load lazily (below)
    from s2d.infer import SegmentConfig, VideoPredictor, load_model, segment_frames, segment_video
    from s2d.io.formats import (
        DavisWriter,
        MotsWriter,
        YtvisResultsWriter,
        read_davis,
        read_mots,
        read_ytvis,
        write_davis,
        write_mots,
        write_ytvis_dataset,
        write_ytvis_results,
    )
    from s2d.io.video import open_video
    from s2d.types import FrameResult, Track, VideoSegmentation

_EXPORTS = {
    "FrameResult": "s2d.types", "Track": "s2d.types", "VideoSegmentation": "s2d.types",
    "SegmentConfig": "s2d.infer", "VideoPredictor": "s2d.infer", "load_model": "s2d.infer",
    "segment_frames": "s2d.infer", "segment_video": "s2d.infer",
    "open_video": "s2d.io.video",
    "read_ytvis": "s2d.io.formats", "write_ytvis_results": "s2d.io.formats", "write_ytvis_dataset": "s2d.io.formats",
    "YtvisResultsWriter": "s2d.io.formats", "read_davis": "s2d.io.formats", "write_davis": "s2d.io.formats",
    "DavisWriter": "s2d.io.formats", "read_mots": "s2d.io.formats", "write_mots": "s2d.io.formats",
    "MotsWriter": "s2d.io.formats",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 's2d' has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))
