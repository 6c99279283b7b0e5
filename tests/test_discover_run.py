"""`s2d discover` orchestration: inputs and layouts, per-video files, parallel = serial, resume, failures, Ray.

The videos are tiny real mp4s of two textured squares moving over a textured background; stage 1 is
replaced by given single-frame masks (the documented ``masks_from`` path, as `s2d discover --masks`),
so the real flow tracker and the real keymask discovery run in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from s2d.errors import InputError, SettingError
from s2d.io.formats import write_ytvis_results
from s2d.keymasks.run import DiscoverSettings, collect_inputs, run_discovery
from s2d.types import Track, VideoSegmentation
from tests.helpers import make_frame_folder, make_video

T, H, W = 24, 72, 96


def _scene(seed: int):
    """Frames and true masks of two textured squares moving in opposite directions."""
    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3)).astype(np.uint8), (0, 0), 2)
    tex = [cv2.GaussianBlur(rng.integers(0, 255, (18, 18, 3)).astype(np.uint8), (0, 0), 1) for _ in range(2)]
    frames, masks = [], []
    for t in range(T):
        img = bg.copy()
        ms = []
        for k, (x0, y0, vx) in enumerate([(8, 10, 2), (70, 44, -2)]):
            x = x0 + vx * t
            img[y0:y0 + 18, x:x + 18] = tex[k]
            m = np.zeros((H, W), bool)
            m[y0:y0 + 18, x:x + 18] = True
            ms.append(m)
        frames.append(img)
        masks.append(ms)
    return frames, masks


def _masks_file(path: Path, masks, name: str) -> None:
    tracks = []
    for t, ms in enumerate(masks):
        for m in ms:
            seq = [None] * T
            seq[t] = m
            tracks.append(Track(len(tracks) + 1, seq, 0.9))
    write_ytvis_results(path, [VideoSegmentation(H, W, T, tracks, name=name)])


@pytest.fixture()
def dataset(tmp_path):
    """ROOT/JPEGImages/{a,b}/ frame folders plus per-video masks files in MASKS/."""
    root = tmp_path / "root"
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    for seed, name in [(0, "a"), (1, "b")]:
        frames, masks = _scene(seed)
        make_frame_folder(root / "JPEGImages" / name, frames)
        _masks_file(masks_dir / f"{name}.json", masks, name)
    return root, masks_dir


# ------------------------------------------------------------------------- inputs
def test_layouts_and_plain_inputs(tmp_path, dataset):
    root, _ = dataset
    got_root, vids = collect_inputs([str(root)], layout="ytvis")
    assert got_root == root.resolve()
    assert [(v.rel, v.kind) for v in vids] == [("JPEGImages/a", "folder"), ("JPEGImages/b", "folder")]
    # the same folders given directly: names relative to their common parent
    _, vids = collect_inputs([str(root / "JPEGImages" / "b"), str(root / "JPEGImages" / "a")])
    assert [v.rel for v in vids] == ["a", "b"]
    # a video file and the "folders" layout mixing files and frame folders
    frames, _ = _scene(2)
    make_video(root / "JPEGImages" / "c.mp4", frames)
    _, vids = collect_inputs([str(root / "JPEGImages")], layout="folders")
    assert [(v.rel, v.kind) for v in vids] == [("a", "folder"), ("b", "folder"), ("c.mp4", "video")]
    assert len({v.key for v in vids}) == 3


@pytest.mark.parametrize("case", ["root_without_layout", "wrong_layout", "missing", "not_video", "two_roots"])
def test_input_errors(tmp_path, dataset, case):
    root, _ = dataset
    (tmp_path / "notes.txt").write_text("x")
    args = {
        "root_without_layout": ([str(root)], None),
        "wrong_layout": ([str(root)], "davis"),
        "missing": ([str(tmp_path / "nope.mp4")], None),
        "not_video": ([str(tmp_path / "notes.txt")], None),
        "two_roots": ([str(root), str(root)], "ytvis"),
    }[case]
    with pytest.raises((InputError, SettingError)) as exc:
        collect_inputs(*args)
    assert "\n" not in str(exc.value)


# ------------------------------------------------------------------------- runs
def _run(root, masks_dir, out, **kw):
    vroot, vids = collect_inputs([str(root)], layout="ytvis")
    settings = DiscoverSettings(masks_from=str(masks_dir))
    return run_discovery(vids, str(out), settings, root=vroot, progress=False, log=lambda s: None, **kw)


def _merged(out: Path) -> dict:
    data = json.loads((out / "pseudo_labels.json").read_text())
    data["info"].pop("root", None)
    return data


def test_discovery_finds_both_objects_and_writes_the_dataset(tmp_path, dataset):
    root, masks_dir = dataset
    rep = _run(root, masks_dir, tmp_path / "out")
    assert rep.done == ["JPEGImages/a", "JPEGImages/b"] and not rep.failed
    data = _merged(tmp_path / "out")
    assert [v["name"] for v in data["videos"]] == ["JPEGImages/a", "JPEGImages/b"]
    assert data["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert data["videos"][0]["file_names"][0] == "JPEGImages/a/00000.png"
    assert all(len(v["file_names"]) == T for v in data["videos"])
    for vid in data["videos"]:
        anns = [a for a in data["annotations"] if a["video_id"] == vid["id"]]
        assert len(anns) == 2, "two moving squares → two objects"
        for a in anns:
            assert len(a["segmentations"]) == T
            assert sum(s is not None for s in a["segmentations"]) >= T // 2


def test_parallel_workers_give_identical_output(tmp_path, dataset):
    root, masks_dir = dataset
    _run(root, masks_dir, tmp_path / "serial")
    _run(root, masks_dir, tmp_path / "pool", workers=2)
    assert _merged(tmp_path / "serial") == _merged(tmp_path / "pool")


def test_resume_skips_finished_videos_and_gives_the_same_result(tmp_path, dataset):
    root, masks_dir = dataset
    out = tmp_path / "out"
    _run(root, masks_dir, out)
    full = _merged(out)
    # an interrupted run: one video's file is missing, the merge was never written
    files = sorted((out / "videos").glob("*.json"))
    files[1].unlink()
    (out / "pseudo_labels.json").unlink()
    with pytest.raises(SettingError, match="--resume"):
        _run(root, masks_dir, out)
    rep = _run(root, masks_dir, out, resume=True)
    assert rep.skipped == ["JPEGImages/a"] and rep.done == ["JPEGImages/b"]
    assert _merged(out) == full


def test_resume_with_other_settings_is_refused(tmp_path, dataset):
    root, masks_dir = dataset
    out = tmp_path / "out"
    _run(root, masks_dir, out)
    _, vids = collect_inputs([str(root)], layout="ytvis")
    other = DiscoverSettings(masks_from=str(masks_dir), keymasks={"visibility_threshold": 0.5})
    with pytest.raises(SettingError, match="other settings"):
        run_discovery(vids, str(out), other, resume=True, progress=False, log=lambda s: None)


def test_resume_with_another_root_is_refused(tmp_path, dataset):
    root, masks_dir = dataset
    out = tmp_path / "out"
    _run(root, masks_dir, out)
    vroot, vids = collect_inputs([str(root)], layout="ytvis")
    with pytest.raises(SettingError, match="was started with root"):
        run_discovery(vids, str(out), DiscoverSettings(masks_from=str(masks_dir)), root=vroot.parent, resume=True,
                      progress=False, log=lambda s: None)
    assert _run(root, masks_dir, out, resume=True).skipped  # the same root resumes


def test_a_failing_video_is_logged_and_the_others_finish(tmp_path, dataset):
    root, masks_dir = dataset
    (masks_dir / "b.json").write_text("{broken")
    rep = _run(root, masks_dir, tmp_path / "out")
    assert rep.done == ["JPEGImages/a"]
    assert "b.json" in rep.failed["JPEGImages/b"] and "\n" not in rep.failed["JPEGImages/b"]
    log = [json.loads(l) for l in (tmp_path / "out" / "failed.jsonl").read_text().splitlines()]
    assert log[0]["video"] == "JPEGImages/b"
    assert [v["name"] for v in _merged(tmp_path / "out")["videos"]] == ["JPEGImages/a"]


def test_ray_matches_the_process_pool(tmp_path, dataset):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 's2d[ray]')")
    root, masks_dir = dataset
    _run(root, masks_dir, tmp_path / "pool", workers=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        _run(root, masks_dir, tmp_path / "ray", ray_address="auto")
    finally:
        ray.shutdown()
    assert _merged(tmp_path / "ray") == _merged(tmp_path / "pool")


def test_video_declaring_more_frames_than_it_decodes(tmp_path, monkeypatch):
    """Complete mp4s can declare a frame or two more than they decode (edit lists, dropped B-frames; e.g.
    two of the shared clips). Stage 1 then must not size the video by the declared count, or the tracker
    (which counts decoded frames) disagrees and the video fails."""
    import dataclasses

    import s2d.io.video as video_io
    from s2d.keymasks.run import discover_video

    frames, _ = _scene(0)
    path = tmp_path / "clip.mp4"
    make_video(path, frames, fps=10)
    real_probe = video_io.probe_video

    def over_declaring_probe(source, **kw):
        info = real_probe(source, **kw)
        return dataclasses.replace(info, total_frames=T + 2, num_frames=T + 2)

    monkeypatch.setattr(video_io, "probe_video", over_declaring_probe)
    assert video_io.probe_video(path).total_frames == T + 2
    _, vids = collect_inputs([str(path)])
    rec = discover_video(vids[0], DiscoverSettings(max_side=96))
    assert rec["video"]["length"] == T
    assert all(len(a["segmentations"]) == T for a in rec["annotations"])


@pytest.mark.parametrize("settings, message", [
    ({"keymasks": {"typo": 1}}, "unknown keymask setting"),
    ({"masks": {"typo": 1}}, "stage-1 settings \\(masks.KEY\\): unknown mask setting.*typo"),
    ({"masks": {"max_masks": "abc"}}, "max_masks"),
    ({"tracker_settings": {"foo": 1}}, "tracker"),
])
def test_bad_settings_fail_before_anything_is_written(tmp_path, dataset, settings, message):
    """A typo in --set is a one-line SettingError before stage 1 runs, and leaves no output folder, so the
    corrected command is not refused as a different run."""
    root, masks_dir = dataset
    _, vids = collect_inputs([str(root)], layout="ytvis")
    out = tmp_path / "out"
    with pytest.raises(SettingError, match=message):
        run_discovery(vids, str(out), DiscoverSettings(masks_from=str(masks_dir), **settings), progress=False,
                      log=lambda s: None)
    assert not out.exists()
    rep = run_discovery(vids, str(out), DiscoverSettings(masks_from=str(masks_dir)), progress=False,
                        log=lambda s: None)
    assert len(rep.done) == 2


def test_a_resumed_run_removes_the_temps_a_killed_run_left(tmp_path, dataset):
    from s2d.io.atomic import temp_path_for

    root, masks_dir = dataset
    _, vids = collect_inputs([str(root)], layout="ytvis")
    out = tmp_path / "out"
    run_discovery(vids, str(out), DiscoverSettings(masks_from=str(masks_dir)), progress=False, log=lambda s: None)
    left = [temp_path_for(out / "videos" / "x.json"), temp_path_for(out / "pseudo_labels.json")]
    for p in left:
        p.write_text("{")
    rep = run_discovery(vids, str(out), DiscoverSettings(masks_from=str(masks_dir)), resume=True, progress=False,
                        log=lambda s: None)
    assert len(rep.skipped) == 2 and not any(p.exists() for p in left)
