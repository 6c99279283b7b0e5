"""Point trackers behind one interface (:class:`~s2d.tracking.base.PointTracker`).

Backends (:func:`build_tracker` names):

* ``flow`` (default) — :class:`~s2d.tracking.flow.FlowTracker`: chained DIS optical flow with a per-point
  forward–backward consistency check; lost points are re-acquired only when consistent again.
* ``lk`` — :class:`~s2d.tracking.lk.LKTracker`: pyramidal Lucas-Kanade with the forward–backward error check.
* ``cotracker3`` — planned (the official ``scaled_offline.pth`` loaded by path); not available yet.

Usage::

    from s2d.tracking import build_tracker
    tracker = build_tracker("flow").prepare("video.mp4")   # or frames; once per video
    res = tracker.track(queries)                           # N×3 (t, x, y) → TrackResult (T×N×2, T×N)
    tracker.close()                                        # deletes the temporary flow store

Backends are imported lazily (nothing heavy happens at package import).
"""

from __future__ import annotations

from typing import Any, Tuple

from s2d.errors import SettingError
from s2d.tracking.base import PointTracker, TrackResult

__all__ = ["PointTracker", "TrackResult", "TRACKERS", "DEFAULT_TRACKER", "build_tracker"]

#: Backend names accepted by :func:`build_tracker` (``cotracker3`` is reserved and raises).
TRACKERS: Tuple[str, ...] = ("flow", "lk", "cotracker3")
DEFAULT_TRACKER = "flow"


def build_tracker(name: str = DEFAULT_TRACKER, **kwargs: Any):
    """An unprepared tracker by backend name; call ``.prepare(video)`` on it.

    Args:
        name: ``"flow"`` (:class:`~s2d.tracking.flow.FlowTracker`), ``"lk"``
            (:class:`~s2d.tracking.lk.LKTracker`) or ``"cotracker3"`` (planned; raises).
        **kwargs: ``config=`` a config object, or the config's fields as keywords
            (:class:`~s2d.tracking.flow.FlowTrackerConfig`, :class:`~s2d.tracking.lk.LKTrackerConfig`).

    Raises:
        SettingError: unknown name, bad settings, or ``cotracker3`` (not available yet).
    """
    key = str(name).strip().lower() if isinstance(name, str) else name
    if key == "flow":
        from s2d.tracking.flow import FlowTracker

        return _construct(FlowTracker, kwargs)
    if key == "lk":
        from s2d.tracking.lk import LKTracker

        return _construct(LKTracker, kwargs)
    if key == "cotracker3":
        raise SettingError("CoTracker3 backend not available yet; planned (official scaled_offline.pth loaded "
                           "by path). Use tracker 'flow' (default) or 'lk'.")
    raise SettingError(f"unknown tracker {name!r}; choose one of {', '.join(TRACKERS[:2])} "
                       f"(cotracker3 is planned)")


def _construct(cls, kwargs):
    try:
        return cls(**kwargs)
    except TypeError as e:  # unknown keyword of the config dataclass
        raise SettingError(f"bad settings for tracker {cls.name!r}: {e}") from None
