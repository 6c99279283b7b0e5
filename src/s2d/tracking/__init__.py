"""Point trackers behind one interface (:class:`~s2d.tracking.base.PointTracker`).

Backends: chained DIS optical flow with a forward–backward check (default), pyramidal
Lucas-Kanade, and later CoTracker3 loaded by path. Nothing is imported at package import time.
"""

from s2d.tracking.base import PointTracker, TrackResult

__all__ = ["PointTracker", "TrackResult"]
