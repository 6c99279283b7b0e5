"""Static HTML reports of s2d runs (``s2d report OUTDIR``): overlay video, object rows, timelines, eval plots.

:func:`build_report` writes one page opened from disk (no server, no JavaScript); pictures are drawn with
matplotlib and the page with a Jinja2 template shipped in ``s2d/report/templates/``. Importing this package
imports neither matplotlib nor Jinja2.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_report"]


def build_report(*args: Any, **kwargs: Any) -> Any:
    """See :func:`s2d.report.build.build_report`."""
    from s2d.report.build import build_report as _build

    return _build(*args, **kwargs)
