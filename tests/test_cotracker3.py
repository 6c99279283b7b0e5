"""CoTracker3 backend: equality with the official predictor (stored reference), strict loading, the tracker
contract, and the CLI's errors.

``tests/data/cotracker3_ref.npz`` was written by ``benchmarks/cotracker3_equality.py --write-ref`` (see
benchmarks/results/cotracker3_equality.md): a 6-frame 24×32 clip, 10 queries on frames 0 and 3, and the
official ``CoTrackerPredictor``'s tracks and visibility with the random weights
``random_state_dict(seed)`` — regenerated here from the stored seed (the real architecture, 25 M parameters).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from s2d.cli import main
from s2d.errors import InputError, SettingError
from s2d.tracking import PointTracker, build_tracker, parse_tracker_spec
from s2d.tracking.cotracker3 import CoTracker3Config, CoTracker3Tracker, validate_checkpoint

REF = Path(__file__).parent / "data" / "cotracker3_ref.npz"


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(REF))


@pytest.fixture(scope="module")
def ckpt(ref, tmp_path_factory) -> Path:
    """The reference's random weights in the official layout, and the check that they were regenerated exactly."""
    import torch

    from s2d.tracking.cotracker3_model import random_state_dict

    state = random_state_dict(int(ref["seed"]))
    sums = np.array([float(state[k].double().sum()) for k in sorted(state)])
    np.testing.assert_allclose(sums, ref["weight_sums"], rtol=1e-6, err_msg="random weights differ from the reference's")
    path = tmp_path_factory.mktemp("cotracker3") / "random.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def tracker(ckpt, ref, one_torch_thread):
    tr = CoTracker3Tracker(checkpoint=str(ckpt), device="cpu").prepare(list(ref["video"]))
    yield tr
    tr.close()


def test_equals_official_predictor(tracker, ref):
    res = tracker.track(ref["queries"])
    assert np.abs(res.points - ref["tracks"]).max() < 1e-4
    assert (res.visible == ref["visible"]).all()
    assert 0 < ref["visible"].mean() < 1  # the reference has both decisions


def test_point_tracker_contract(tracker, ref):
    assert isinstance(tracker, PointTracker) and tracker.prepared
    assert tracker.num_frames == 6 and tracker.size == (24, 32)
    q = np.array([[1, 3.0, 4.0], [3, 20.5, 10.25], [4, 31.0, 23.0]])
    res = tracker.track(q, frame_range=(1, 5))
    assert res.points.shape == (6, 3, 2) and res.visible.shape == (6, 3)
    assert np.isnan(res.points[[0, 5]]).all() and not res.visible[[0, 5]].any()
    assert np.isfinite(res.points[1:5]).all()
    assert res.visible[[1, 3, 4], [0, 1, 2]].all()  # visible at the query frame ...
    np.testing.assert_allclose(res.points[[1, 3, 4], [0, 1, 2]], q[:, 1:], atol=1e-4)  # ... where it was asked
    empty = tracker.track(np.zeros((0, 3)))
    assert empty.points.shape == (6, 0, 2) and empty.visible.shape == (6, 0)
    with pytest.raises(SettingError, match="query frames"):
        tracker.track(np.array([[0, 1.0, 1.0]]), frame_range=(1, 5))
    with pytest.raises(SettingError, match="not prepared"):
        CoTracker3Tracker(checkpoint=None).track(q)


def test_strict_loading_names_missing_and_unexpected_keys(ckpt, tmp_path):
    import torch

    state = torch.load(ckpt, weights_only=True)
    validate_checkpoint(str(ckpt))
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": state}, wrapped)  # the official layout may nest the state dict under "model"
    validate_checkpoint(str(wrapped))
    broken = dict(state)
    del broken["corr_mlp.fc1.bias"]
    broken["head.extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(broken, bad)
    with pytest.raises(InputError) as err:
        CoTracker3Tracker(checkpoint=str(bad))
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg
    assert "missing keys corr_mlp.fc1.bias" in msg and "unexpected keys head.extra.weight" in msg
    with pytest.raises(InputError, match="wrong shapes time_emb"):
        validate_checkpoint(str(ckpt), window_len=16)
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(InputError, match="not a readable PyTorch"):
        build_tracker("cotracker3", checkpoint=str(junk))
    with pytest.raises(InputError, match="no such CoTracker3 checkpoint"):
        build_tracker("cotracker3", checkpoint=str(tmp_path / "missing.pth"))


def test_build_tracker_spec_and_config():
    assert parse_tracker_spec("flow") == ("flow", {})
    assert parse_tracker_spec("cotracker3:/x/scaled_offline.pth") == ("cotracker3", {"checkpoint": "/x/scaled_offline.pth"})
    for spec, match in (("cotracker3", "needs the official checkpoint"), ("flow:x.pth", "takes no path"),
                        ("raft", "unknown tracker")):
        with pytest.raises(SettingError, match=match):
            parse_tracker_spec(spec)
    tr = build_tracker("cotracker3")  # settings only (e.g. for --set tracker.KEY=...): no weights needed yet
    assert isinstance(tr, CoTracker3Tracker) and tr.config == CoTracker3Config()
    assert tr.config.model_resolution == (384, 512) and tr.config.support_grid_size == 6
    assert tr.config.visibility_threshold == 0.9 and tr.config.window_len == 60
    with pytest.raises(SettingError, match="needs a checkpoint"):
        tr.prepare([np.zeros((8, 8, 3), np.uint8)])
    assert CoTracker3Config(model_resolution=[192, 256]).model_resolution == (192, 256)  # from JSON
    for bad in (dict(model_resolution=(100, 512)), dict(visibility_threshold=1.5), dict(iters=0),
                dict(support_grid_size=-1)):
        with pytest.raises(SettingError):
            CoTracker3Config(**bad)
    with pytest.raises(SettingError, match="bad settings"):
        build_tracker("cotracker3", no_such_option=1)


def test_cli_bad_checkpoint_is_one_line(tmp_path, tiny_frame_folder, capsys):
    for spec, match in ((f"cotracker3:{tmp_path / 'missing.pth'}", "no such CoTracker3 checkpoint file"),
                        ("cotracker3", "needs the official checkpoint")):
        rc = main(["discover", str(tiny_frame_folder), "-o", str(tmp_path / "out"), "--tracker", spec])
        err = capsys.readouterr().err
        assert rc == 2 and match in err and "Traceback" not in err
        assert len([ln for ln in err.splitlines() if ln.startswith("s2d: error")]) == 1


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(ckpt, ref, tracker):
    with CoTracker3Tracker(checkpoint=str(ckpt), device="cuda").prepare(list(ref["video"])) as gpu:
        res = gpu.track(ref["queries"])
    assert np.abs(res.points - tracker.track(ref["queries"]).points).max() < 1e-2
