"""Frames in, results out.

- :mod:`s2d.io.video`: stream frames from video files (mp4/avi/mov/mkv/webm via PyAV), frame folders and
  globs, one frame at a time; write mp4/webm/avi/mkv videos atomically.
- :mod:`s2d.io.overlay`: draw coloured instance masks, contours and ids on frames; overlay videos.
- :mod:`s2d.io.formats`: result formats (YouTube-VIS JSON, DAVIS PNG, MOTS txt).

Nothing is imported here so that ``import s2d.io`` stays cheap (PyAV and OpenCV load on first use of the
submodule that needs them).
"""
