"""Shared fixtures: tiny synthetic videos and frame folders (see ``tests/helpers.py``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # make `helpers` importable from every test module

from helpers import make_frame_folder, make_frames, make_video  # noqa: E402


@pytest.fixture
def tiny_frames() -> List[np.ndarray]:
    """12 frames of 32×48 RGB, frame i in colour ``helpers.frame_color(i)``."""
    return make_frames(12, 32, 48)


@pytest.fixture
def tiny_video(tmp_path: Path, tiny_frames: List[np.ndarray]) -> Path:
    """A 12-frame 32×48 H.264 mp4 at 10 fps."""
    return make_video(tmp_path / "tiny.mp4", tiny_frames, fps=10)


@pytest.fixture
def tiny_frame_folder(tmp_path: Path, tiny_frames: List[np.ndarray]) -> Path:
    """A folder ``tiny_frames/`` with 12 PNG frames ``00000.png`` ... ``00011.png``."""
    return make_frame_folder(tmp_path / "tiny_frames", tiny_frames)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny-model tests on one intra-op thread.

    On a busy 2-core machine two torch threads spin-wait (measured: 4x the CPU time, up to 100x wall time
    for backward passes); tiny models gain nothing from a second thread. Restores the count afterwards.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-init video Mask2Former (seed 0) saved as a checkpoint, for inference tests."""
    import torch

    from s2d.model import VideoMask2Former

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    VideoMask2Former("tiny").save_checkpoint(path)
    return path
