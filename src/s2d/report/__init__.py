"""Static HTML reports of s2d runs (``s2d report OUTDIR``): overlay video, object rows, timelines, eval plots.

:func:`build_report` writes one page opened from disk (no server, no JavaScript); pictures are drawn with
matplotlib and the page with a Jinja2 template shipped in ``s2d/report/templates/``. Importing this package
imports neither matplotlib nor Jinja2.
"""

from __future__ import annotations

from s2d.report.build import build_report

__all__ = ["build_report"]
