"""`import s2d` is cheap and side-effect free, and exposes the core API lazily."""

import subprocess
import sys

import numpy as np

import s2d


def test_import_s2d_loads_no_heavy_module():
    code = "import sys, s2d; print(sorted(m for m in ('torch', 'cv2', 'av', 's2d.infer', 's2d.types') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_top_level_names_resolve_to_the_package_objects():
    from s2d.infer import SegmentConfig, segment_frames
    from s2d.io.formats import YtvisResultsWriter
    from s2d.types import FrameResult

    assert s2d.segment_frames is segment_frames and s2d.SegmentConfig is SegmentConfig
    assert s2d.FrameResult is FrameResult and s2d.YtvisResultsWriter is YtvisResultsWriter
    assert set(s2d.__all__) <= set(dir(s2d))
    for name in s2d.__all__:
        assert getattr(s2d, name) is not None
    fr = s2d.FrameResult(0, np.zeros((1, 4, 4), bool), np.array([1]), np.array([0.5]))
    assert fr.label_map().shape == (4, 4)
