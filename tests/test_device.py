"""One device policy (s2d.device): auto = CUDA when there, else CPU; bad names and missing GPUs are one line."""

import pytest
import torch

from s2d.cli import main
from s2d.device import resolve_device
from s2d.errors import SettingError

HAS_CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("name, want", [
    ("auto", "cuda" if HAS_CUDA else "cpu"), (None, "cuda" if HAS_CUDA else "cpu"), ("AUTO", "cuda" if HAS_CUDA else "cpu"),
    ("cpu", "cpu"), (torch.device("cpu"), "cpu"),
])
def test_resolve_device(name, want):
    assert resolve_device(name).type == want


@pytest.mark.parametrize("name, message", [
    ("gpu0", "not a torch device: 'gpu0'"), (3.5, "not a torch device"),
    *([] if HAS_CUDA else [("cuda", "no CUDA device is available"), ("cuda:1", "no CUDA device is available")]),
])
def test_bad_devices_are_one_line_setting_errors(name, message):
    with pytest.raises(SettingError, match=message):
        resolve_device(name)


@pytest.mark.parametrize("command", ["masks", "discover", "segment", "train"])
def test_every_command_checks_device_before_any_output(tmp_path, capsys, command):
    out = tmp_path / "out"
    clip = tmp_path / "clip"
    clip.mkdir()
    from PIL import Image
    import numpy as np

    for i in range(3):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(clip / f"{i:05d}.jpg")
    argv = {"masks": ["masks", str(clip), "-o", str(out)], "discover": ["discover", str(clip), "-o", str(out)],
            "segment": ["segment", str(clip), "-o", str(out)],
            "train": ["train", "--data", str(tmp_path / "none.json"), "--videos", str(tmp_path), "-o", str(out)]}
    rc = main(argv[command] + ["--device", "gpu0"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert rc == 2 and len(errors) == 1 and errors[0].startswith("s2d: error:") and "gpu0" in errors[0], errors
    assert not out.exists()
