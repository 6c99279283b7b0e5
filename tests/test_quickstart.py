"""The README quickstart, run exactly as written: the shipped default model on the shipped example clip."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from s2d.infer import default_model_path
from s2d.io.video import open_video, probe_video

REPO = Path(__file__).resolve().parents[1]


def _quickstart_command() -> str:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- quickstart -->\s*```bash\n(.*?)```", text, flags=re.S)
    assert block, "README has no <!-- quickstart --> block"
    lines = [ln for ln in block.group(1).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("s2d segment "), lines
    return lines[0]


def test_default_model_is_packaged() -> None:
    path = default_model_path()
    assert Path(path).is_file(), f"{path} missing: the package must ship its default model"
    assert Path(path).stat().st_size < 30 * 2**20  # SPEC §9: shipped weights ≤ 30 MB


@pytest.mark.slow  # over ~20 s: the second CI step (pytest -m slow)
def test_readme_quickstart_runs_as_written(tmp_path: Path) -> None:
    cmd = _quickstart_command()
    argv = shlex.split(cmd)
    (tmp_path / "examples").symlink_to(REPO / "examples")  # the command's relative paths, from a fresh folder
    proc = subprocess.run([sys.executable, "-m", "s2d", *argv[1:]], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / argv[argv.index("-o") + 1] / "bikes"
    info = probe_video(REPO / "examples" / "bikes.mp4")
    T, H, W = info.num_frames, info.orig_height, info.orig_width

    # DAVIS PNGs: one palette PNG per frame, named 00000.png…, at the clip's size, with some objects
    pngs = sorted((out / "davis").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(T)]
    ids = set()
    for p in pngs[:: max(1, T // 25)]:
        im = Image.open(p)
        assert im.mode == "P" and im.size == (W, H)
        ids |= set(np.unique(np.asarray(im)).tolist())
    assert ids - {0}, "the default model found no object on the example clip"

    # YouTube-VIS results: pycocotools decodes every mask; one entry per frame per track
    results = json.loads((out / "results.json").read_text())
    assert results and all(len(r["segmentations"]) == T for r in results)
    for r in results:
        assert 0 <= r["score"] <= 1 and r["category_id"] == 1
        seg = next(s for s in r["segmentations"] if s is not None)
        assert mask_utils.decode(seg).shape == (H, W)

    # overlay: a playable mp4 with every frame
    with open_video(out / "overlay.mp4") as v:
        n = sum(1 for _ in v)
    assert n == T
