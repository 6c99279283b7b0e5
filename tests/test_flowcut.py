"""FlowCut-style discovery (`s2d discover --method flowcut`, issue #17): IoU after warping, chaining of masks into
segments, its settings, and a CLI run whose pseudo-labels `s2d train` reads.

Scenes are tiny textured squares over a textured background, so the real DIS flow runs in milliseconds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import pytest

from s2d.cli import main
from s2d.errors import SettingError
from s2d.io.formats import write_ytvis_results
from s2d.keymasks.flowcut import FlowCutConfig, discover_flowcut, mask_iou, warped_iou
from s2d.keymasks.run import DiscoverSettings
from s2d.train.data import load_labelset
from s2d.types import Track, VideoSegmentation
from tests.helpers import make_video

T, H, W, S = 16, 72, 96, 16  # frames, height, width, square side

# square placements: (x, y) per frame, or None where stage 1 has no mask of it
Path2D = List[Optional[Tuple[int, int]]]


def _linear(x0: int, y0: int, vx: int) -> Path2D:
    return [(x0 + vx * t, y0) for t in range(T)]


def _flicker(seed: int) -> Path2D:
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(0, W - S)), int(rng.integers(0, H - S))) for _ in range(T)]


def _gaps(path: Path2D, missing: Tuple[int, ...]) -> Path2D:
    return [None if t in missing else p for t, p in enumerate(path)]


def _scene(paths: List[Path2D], *, textured: Tuple[bool, ...] = (), seed: int = 0):
    """Frames with a textured square drawn on each path's placements (unless ``textured[i]`` is False: then the
    mask has no image content, as a spurious stage-1 mask) and the single-frame masks of stage 1."""
    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3)).astype(np.uint8), (0, 0), 2)
    texs = [cv2.GaussianBlur(rng.integers(0, 255, (S, S, 3)).astype(np.uint8), (0, 0), 1) for _ in paths]
    frames, tracks = [], []
    for t in range(T):
        img = bg.copy()
        for i, path in enumerate(paths):
            if path[t] is None:
                continue
            x, y = path[t]
            if i >= len(textured) or textured[i]:
                img[y:y + S, x:x + S] = texs[i]
            m = np.zeros((H, W), bool)
            m[y:y + S, x:x + S] = True
            seq: List[Optional[np.ndarray]] = [None] * T
            seq[t] = m
            tracks.append(Track(len(tracks) + 1, seq, 0.9 - 0.1 * i))
        frames.append(img)
    return frames, VideoSegmentation(H, W, T, tracks, name="clip")


def _spans(result) -> List[Tuple[int, int, int]]:
    """(first frame, last frame, masks) of every object."""
    return [(o.frames[0], o.frames[-1], len(o.frames)) for o in result.objects]


# --------------------------------------------------------------------------- IoU after warping


def _square(x: int, y: int = 10, side: int = 10, size: Tuple[int, int] = (40, 60)) -> np.ndarray:
    m = np.zeros(size, bool)
    m[y:y + side, x:x + side] = True
    return m


@pytest.mark.parametrize("a, b, expected", [
    (_square(10), _square(10), 1.0),
    (_square(10), _square(30), 0.0),
    (_square(10), _square(15), 50 / 150),
    (np.zeros((40, 60), bool), np.zeros((40, 60), bool), 0.0),
])
def test_mask_iou(a, b, expected):
    assert mask_iou(a[None], b[None])[0, 0] == pytest.approx(expected)


@pytest.mark.parametrize("shift, flow_dx, expected", [
    (5, -5.0, 1.0),          # flow later → earlier says "came from 5 px left": the warped mask lands exactly
    (5, 0.0, 50 / 150),      # zero flow: the plain IoU
    (8, -8.0, 1.0),
    (8, -4.0, 60 / 140),     # half the motion compensated
])
def test_warped_iou_uses_the_flow(shift, flow_dx, expected):
    earlier, later = _square(10)[None], _square(10 + shift)[None]
    flow = np.zeros((40, 60, 2), np.float32)
    flow[..., 0] = flow_dx
    assert warped_iou(earlier, later, flow)[0, 0] == pytest.approx(expected, abs=1e-6)
    assert warped_iou(earlier, later, None)[0, 0] == pytest.approx(mask_iou(earlier, later)[0, 0])


# --------------------------------------------------------------------------- chaining


CASES: Dict[str, Tuple[List[Path2D], Tuple[bool, ...], dict, List[Tuple[int, int, int]]]] = {
    "two moving squares -> two objects": (
        [_linear(4, 8, 2), _linear(70, 44, -2)], (), {}, [(0, T - 1, T), (0, T - 1, T)]),
    "fast square: chained after warping": (
        [_linear(2, 20, 4)], (), {"k": 1, "iou_threshold": 0.7}, [(0, T - 1, T)]),
    "fast square: plain IoU does not chain": (
        [_linear(2, 20, 4)], (), {"k": 1, "iou_threshold": 0.7, "warp": False}, []),
    "flickering mask never chains": (
        [_flicker(3)], (False,), {"k": 3, "iou_threshold": 0.3}, []),
    "flicker next to a real object": (
        [_linear(4, 8, 2), _flicker(4)], (True, False), {}, [(0, T - 1, T)]),
    "a missing frame is bridged with k=2": (
        [_gaps(_linear(4, 20, 2), (7,))], (), {"k": 2}, [(0, T - 1, T - 1)]),
    "a missing frame splits the segment with k=1": (
        [_gaps(_linear(4, 20, 2), (7,))], (), {"k": 1}, [(0, 6, 7), (8, T - 1, 8)]),
    "segments shorter than min_length are dropped": (
        [_gaps(_linear(4, 20, 2), (2, 5, 6, 7, 8, 9, 10, 11, 12))], (), {"k": 1, "min_length": 3},
        [(13, 15, 3)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_chaining(name):
    paths, textured, settings, expected = CASES[name]
    frames, masks = _scene(paths, textured=textured)
    result = discover_flowcut(masks, frames, FlowCutConfig(**settings))
    assert _spans(result) == expected
    assert [o.id for o in result.objects] == list(range(1, len(expected) + 1))
    threshold = FlowCutConfig(**settings).iou_threshold
    for o in result.objects:
        assert len(o.link_ious) == len(o.frames) - 1 and min(o.link_ious) >= threshold


def test_objects_carry_the_training_fields_and_labels_are_the_stage1_masks():
    frames, masks = _scene([_linear(4, 8, 2), _linear(70, 44, -2)])
    result = discover_flowcut(masks, frames)
    first, second = result.objects
    assert first.saliency == 1.0 and second.saliency == 0.0  # stage 1 ranked square 1 first on every frame
    assert first.score_ratio == pytest.approx(1.0) and second.score_ratio == pytest.approx(0.8 / 0.9)
    video = result.to_video()
    assert [tr.extra["num_keymasks"] for tr in video.tracks] == [T, T]
    assert set(video.tracks[0].extra) >= {"saliency", "score_ratio", "num_keymasks", "segment"}
    for t in range(T):
        np.testing.assert_array_equal(video.frame(t).masks[0], masks.frame(t).masks[0])
    assert result.diagnostics["objects"] == 2 and result.diagnostics["frames_covered"] == 1.0


def test_frame_count_must_match_the_masks():
    frames, masks = _scene([_linear(4, 8, 2)])
    with pytest.raises(Exception, match="frames"):
        discover_flowcut(masks, frames[:-2])


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("settings, needle", [
    ({"k": 0}, "flowcut.k must be an integer >= 1"),
    ({"k": 1.5}, "flowcut.k must be an integer"),
    ({"iou_threshold": 0.0}, "flowcut.iou_threshold must be a number in (0, 1]"),
    ({"iou_threshold": 1.5}, "flowcut.iou_threshold"),
    ({"iou_threshold": math.nan}, "flowcut.iou_threshold"),
    ({"min_length": 0}, "flowcut.min_length must be an integer >= 1"),
    ({"warp": "yes"}, "flowcut.warp must be true or false"),
    ({"flow_preset": "slow"}, "flowcut.flow_preset must be one of"),
    ({"flow_max_side": 4}, "flowcut.flow_max_side must be an integer >= 8"),
    ({"component_min_fraction": -0.1}, "flowcut.component_min_fraction"),
])
def test_config_rejects_bad_values(settings, needle):
    with pytest.raises(SettingError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        FlowCutConfig(**settings)


def test_config_from_mapping_and_overrides():
    assert FlowCutConfig.from_dict({"k": 3}).k == 3
    assert FlowCutConfig().with_overrides(["iou_threshold=0.6", "warp=off"]) == FlowCutConfig(iou_threshold=0.6,
                                                                                                warp=False)
    with pytest.raises(SettingError, match="unknown flowcut setting 'flowcut.typo'"):
        FlowCutConfig.from_dict({"typo": 1})


@pytest.mark.parametrize("method, sets, needle", [
    ("flowcut", ["flowcut.k=x"], "flowcut.k must be a number"),
    ("flowcut", ["flowcut.typo=1"], "unknown flowcut setting 'flowcut.typo'"),
    ("flowcut", ["flowcut.k=0"], "flowcut.k must be an integer >= 1"),
    ("flowcut", ["visibility_threshold=0.4"], "visibility_threshold is a keymask setting"),
    ("keymask", ["flowcut.k=3"], "flowcut.k is a setting of --method flowcut"),
    ("cotracker", [], "unknown discovery method 'cotracker'"),
    ("flowcut", ["tracker.reacquire_frames=2"], "--method flowcut uses no point tracker"),
])
def test_discover_settings_reject_bad_method_settings(method, sets, needle):
    with pytest.raises(SettingError, match=needle):
        DiscoverSettings(method=method).with_overrides(sets).check()


def test_flowcut_takes_no_other_tracker():
    with pytest.raises(SettingError, match="--tracker and tracker.KEY settings apply to --method keymask only"):
        DiscoverSettings(method="flowcut", tracker="lk").check()


def test_discover_settings_fingerprint():
    """The default (keymask) fingerprint is the one of runs made before methods existed, so they still resume;
    flowcut settings are part of a flowcut run's fingerprint."""
    assert "method" not in DiscoverSettings().fingerprint()
    fp = DiscoverSettings(method="flowcut").with_overrides(["flowcut.k=3"]).check().fingerprint()
    assert fp["method"] == "flowcut" and fp["flowcut"] == {"k": 3}


# --------------------------------------------------------------------------- CLI


def test_cli_flowcut_run_gives_a_labelset_train_reads(tmp_path, capsys):
    frames, masks = _scene([_linear(4, 8, 2), _linear(70, 44, -2)])
    video = make_video(tmp_path / "clip.mp4", frames)
    masks_file = tmp_path / "clip_masks.json"
    write_ytvis_results(masks_file, [masks])
    out = tmp_path / "run"
    rc = main(["discover", str(video), "--masks", str(masks_file), "--method", "flowcut", "-o", str(out),
               "--set", "flowcut.k=3"])
    assert rc == 0, capsys.readouterr().err
    labels = load_labelset(out / "pseudo_labels.json")
    (v,) = labels.videos
    assert v.source == "clip.mp4" and v.kind == "video" and v.length == T
    assert len(v.objects) == 2 and all(sum(m is not None for m in obj) == T for obj in v.objects)
    assert [a["saliency"] for a in v.annotations] == [1.0, 0.0]
    assert all("score_ratio" in a for a in v.annotations)
    assert len(load_labelset(out / "pseudo_labels.json", min_saliency=0.5).videos[0].objects) == 1


@pytest.mark.parametrize("argv, needle", [
    (["--method", "flowcut", "--set", "flowcut.iou_threshold=2"], "flowcut.iou_threshold must be a number"),
    (["--method", "flowcut", "--set", "flowcut.nope=1"], "unknown flowcut setting 'flowcut.nope'"),
    (["--set", "flowcut.k=2"], "flowcut.k is a setting of --method flowcut"),
])
def test_cli_bad_flowcut_settings_are_one_line_errors(tmp_path, capsys, argv, needle):
    frames, _ = _scene([_linear(4, 8, 2)])
    video = make_video(tmp_path / "clip.mp4", frames[:3])
    out = tmp_path / "run"
    rc = main(["discover", str(video), "-o", str(out)] + argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    assert not Path(out).exists()
