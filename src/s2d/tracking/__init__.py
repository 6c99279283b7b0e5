"""Point trackers behind one interface (:class:`~s2d.tracking.base.PointTracker`).

Backends (:func:`build_tracker` names):

* ``flow`` (default) — :class:`~s2d.tracking.flow.FlowTracker`: chained DIS optical flow with a per-point
  forward–backward consistency check; lost points are re-acquired only when consistent again.
* ``lk`` — :class:`~s2d.tracking.lk.LKTracker`: pyramidal Lucas-Kanade with the forward–backward error check.
* ``cotracker3`` — :class:`~s2d.tracking.cotracker3.CoTracker3Tracker`: the learned CoTracker3 offline model in
  our PyTorch code, equal to the official predictor; needs the official ``scaled_offline.pth`` by path
  (``build_tracker("cotracker3", checkpoint=PATH)``; nothing is downloaded).

Usage::

    from s2d.tracking import build_tracker
    tracker = build_tracker("flow").prepare("video.mp4")   # or frames; once per video
    res = tracker.track(queries)                           # N×3 (t, x, y) → TrackResult (T×N×2, T×N)
    tracker.close()                                        # deletes the temporary flow store

Backends are imported lazily (nothing heavy happens at package import).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from s2d.errors import SettingError
from s2d.tracking.base import PointTracker, TrackResult

__all__ = ["PointTracker", "TrackResult", "TRACKERS", "DEFAULT_TRACKER", "build_tracker", "parse_tracker_spec"]

#: Backend names accepted by :func:`build_tracker`.
TRACKERS: Tuple[str, ...] = ("flow", "lk", "cotracker3")
DEFAULT_TRACKER = "flow"


def build_tracker(name: str = DEFAULT_TRACKER, **kwargs: Any):
    """An unprepared tracker by backend name; call ``.prepare(video)`` on it.

    Args:
        name: ``"flow"`` (:class:`~s2d.tracking.flow.FlowTracker`), ``"lk"``
            (:class:`~s2d.tracking.lk.LKTracker`) or ``"cotracker3"``
            (:class:`~s2d.tracking.cotracker3.CoTracker3Tracker`).
        **kwargs: ``config=`` a config object, or the config's fields as keywords
            (:class:`~s2d.tracking.flow.FlowTrackerConfig`, :class:`~s2d.tracking.lk.LKTrackerConfig`,
            :class:`~s2d.tracking.cotracker3.CoTracker3Config`, e.g. ``checkpoint=PATH``).

    Raises:
        SettingError: unknown name or bad settings.
        InputError: ``cotracker3`` with a checkpoint path that is not a file.
    """
    key = str(name).strip().lower() if isinstance(name, str) else name
    if key == "flow":
        from s2d.tracking.flow import FlowTracker

        return _construct(FlowTracker, kwargs)
    if key == "lk":
        from s2d.tracking.lk import LKTracker

        return _construct(LKTracker, kwargs)
    if key == "cotracker3":
        from s2d.tracking.cotracker3 import CoTracker3Tracker

        return _construct(CoTracker3Tracker, kwargs)
    raise SettingError(f"unknown tracker {name!r}; choose one of {', '.join(TRACKERS)}")


def parse_tracker_spec(spec: str) -> Tuple[str, Dict[str, Any]]:
    """``--tracker NAME[:PATH]`` → ``(name, settings)``: ``"flow"`` → ``("flow", {})``,
    ``"cotracker3:ckpt.pth"`` → ``("cotracker3", {"checkpoint": "ckpt.pth"})``.

    Raises:
        SettingError: an unknown name, ``cotracker3`` without a path, or a path after another backend.
    """
    name, sep, path = str(spec).partition(":")
    name = name.strip().lower()
    if name not in TRACKERS:
        raise SettingError(f"--tracker: unknown tracker {name!r}; choose one of flow, lk, cotracker3:PATH")
    if name == "cotracker3":
        if not path:
            raise SettingError("--tracker cotracker3 needs the official checkpoint: --tracker cotracker3:PATH "
                               "(scaled_offline.pth from the CoTracker release)")
        return name, {"checkpoint": path}
    if sep:
        raise SettingError(f"--tracker {name} takes no path (only cotracker3:PATH does)")
    return name, {}


def _construct(cls, kwargs):
    try:
        return cls(**kwargs)
    except TypeError as e:  # unknown keyword of the config dataclass
        raise SettingError(f"bad settings for tracker {cls.name!r}: {e}") from None
