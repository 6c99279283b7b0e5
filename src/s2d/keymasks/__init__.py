"""Stage 2: keymask discovery (PAPER §2) — noisy single-frame masks → keymasks with object identities.

>>> from s2d.keymasks import KeymaskConfig, discover_keymasks
>>> result = discover_keymasks(single_frame_masks, tracker, KeymaskConfig())   # doctest: +SKIP
>>> sparse = result.to_video()      # VideoSegmentation: RLE on keymask frames, None elsewhere

Modules: :mod:`~s2d.keymasks.config` (settings, reference defaults), :mod:`~s2d.keymasks.grid` (query
points inside a mask), :mod:`~s2d.keymasks.visibility` (γ curves, DBSCAN, ranges, candidates),
:mod:`~s2d.keymasks.matching` (propagate-and-match, one2x, match DBSCAN), :mod:`~s2d.keymasks.discover`
(the per-video driver). The point tracker is any :class:`s2d.tracking.base.PointTracker`.
"""

from s2d.keymasks.config import KeymaskConfig
from s2d.keymasks.discover import KeymaskObject, KeymaskResult, MaskInfo, discover_keymasks

__all__ = ["KeymaskConfig", "discover_keymasks", "KeymaskResult", "KeymaskObject", "MaskInfo"]
