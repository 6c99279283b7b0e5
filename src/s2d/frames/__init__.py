"""Stage 1: single-frame unsupervised instance masks (MaskCut/FlowCut/CutS3D-style normalized cuts).

Motion-led on CPU: camera-compensated optical flow gives the motion affinity and a motion-saliency
candidate, appearance features (``lite0`` by default, DINO when weights are given) and an optional depth
map refine the graph, iterative normalized cuts propose up to K masks per frame, a dense CRF snaps them to
image edges, and each mask gets a score in [0, 1].

Main entry points: :class:`MaskConfig`, :class:`FrameSegmenter`, :func:`segment_video`.
Importing this package loads no weights.
"""

from s2d.frames.config import MaskConfig
from s2d.frames.segmenter import DepthFolder, FrameMasks, FrameSegmenter, Motion, motion_from_flow, segment_video

__all__ = ["DepthFolder", "FrameMasks", "FrameSegmenter", "MaskConfig", "Motion", "motion_from_flow",
           "segment_video"]
