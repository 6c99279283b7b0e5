"""Stage 2: keymask discovery (PAPER §2) — noisy single-frame masks → keymasks with object identities.

>>> from s2d.keymasks import KeymaskConfig, discover_keymasks
>>> result = discover_keymasks(single_frame_masks, tracker, KeymaskConfig())   # doctest: +SKIP
>>> sparse = result.to_video()      # VideoSegmentation: RLE on keymask frames, None elsewhere

Modules: :mod:`~s2d.keymasks.config` (settings, reference defaults), :mod:`~s2d.keymasks.grid` (query
points inside a mask), :mod:`~s2d.keymasks.visibility` (γ curves, DBSCAN, ranges, candidates),
:mod:`~s2d.keymasks.matching` (propagate-and-match, one2x, match DBSCAN), :mod:`~s2d.keymasks.discover`
(the per-video driver). The point tracker is any :class:`s2d.tracking.base.PointTracker`.

:mod:`~s2d.keymasks.flowcut` is the alternative method (``s2d discover --method flowcut``): FlowCut-style
temporal mask matching, with the same outputs (``result.to_video()``):

>>> from s2d.keymasks import FlowCutConfig, discover_flowcut
>>> result = discover_flowcut(single_frame_masks, "video.mp4", FlowCutConfig())   # doctest: +SKIP
"""

from s2d.keymasks.config import KeymaskConfig
from s2d.keymasks.discover import KeymaskObject, KeymaskResult, MaskInfo, discover_keymasks
from s2d.keymasks.flowcut import FlowCutConfig, FlowCutObject, FlowCutResult, discover_flowcut

__all__ = ["KeymaskConfig", "discover_keymasks", "KeymaskResult", "KeymaskObject", "MaskInfo", "FlowCutConfig",
           "discover_flowcut", "FlowCutResult", "FlowCutObject"]
