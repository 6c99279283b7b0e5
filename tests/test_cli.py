"""The `s2d` command line: help texts, exports through every format, scoring, and bad input.

Commands run in-process through :func:`s2d.cli.main` (fast) and, for the no-traceback promise, once
through a real ``python -m s2d`` subprocess.
"""

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

from s2d.cli import build_parser, main
from s2d.io import formats
from s2d.types import Track, VideoSegmentation

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DAVIS = SHARED / "davis2016"


def _video(h: int = 12, w: int = 16, T: int = 4) -> VideoSegmentation:
    """Two objects moving right; object 2 is absent on frame 0."""
    a = [np.zeros((h, w), bool) for _ in range(T)]
    b = [np.zeros((h, w), bool) for _ in range(T)]
    for t in range(T):
        a[t][2:6, t:t + 4] = True
        b[t][7:11, 8 + t // 2:12 + t // 2] = True
    return VideoSegmentation(h, w, T, [Track(1, a, 0.9), Track(2, [None] + b[1:], 0.6)],
                             fps=10.0, name="clip", video_id=1)


# ----------------------------------------------------------------------------- help
@pytest.mark.parametrize("argv", [[], ["eval"], ["eval", "ytvis"], ["eval", "davis"], ["export"], ["segment"],
                                  ["report"]])
def test_every_help_is_complete(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: s2d")
    # every option of the (sub)parser is documented with a help string
    assert "--help" in out
    if argv == ["export"]:
        for opt in ("--to", "--video", "-o", "--from", "--gt", "--dataset", "--video-id", "--score-threshold"):
            assert opt in out
    if argv == ["segment"]:
        for opt in ("-o", "--model", "--score-threshold", "--max-objects", "--chunk", "--overlap", "--max-side",
                    "--refine", "--device", "--format", "--set", "results.json", "davis/", "mots.txt", "overlay.mp4"):
            assert opt in out
    if argv == ["eval", "davis"]:
        for opt in ("--gt", "--pred", "--protocol", "--sequences", "--json", "unsupervised", "union"):
            assert opt in out


def test_every_option_has_help_text():
    import argparse

    def walk(p):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sp in action.choices.values():
                    yield from walk(sp)
            elif action.option_strings and action.dest not in ("help", "version"):
                yield p.prog, action

    missing = [f"{prog} {a.option_strings}" for prog, a in walk(build_parser()) if not a.help]
    assert not missing, missing


def test_python_dash_m_runs():
    proc = subprocess.run([sys.executable, "-m", "s2d", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("s2d ")


# ----------------------------------------------------------------------------- export
def test_export_round_trip_through_every_format(tmp_path, capsys):
    src = _video()
    res = tmp_path / "results.json"
    formats.write_ytvis_results(res, [src])

    assert main(["export", str(res), "--to", "davis", "-o", str(tmp_path / "pngs")]) == 0
    pngs = sorted((tmp_path / "pngs").glob("*.png"))
    assert [p.name for p in pngs] == ["00000.png", "00001.png", "00002.png", "00003.png"]
    assert Image.open(pngs[0]).mode == "P"

    assert main(["export", str(tmp_path / "pngs"), "--to", "mots", "-o", str(tmp_path / "clip.txt")]) == 0
    assert main(["export", str(tmp_path / "clip.txt"), "--to", "ytvis", "-o", str(tmp_path / "back.json")]) == 0
    back = formats.read_ytvis(tmp_path / "back.json")
    assert len(back) == 1
    got = back[0]
    assert sorted(got.ids) == [1, 2]
    for t in range(src.num_frames):
        for tid in (1, 2):
            want = src.track(tid).mask(t)
            have = got.track(tid).mask(t)
            if want is None:
                assert have is None or not have.any()
            else:
                assert np.array_equal(want, have)


def test_export_overlay_needs_video_and_draws_it(tmp_path, capsys):
    from tests.helpers import make_video

    src = _video()
    res = tmp_path / "results.json"
    formats.write_ytvis_results(res, [src])
    # without --video: one-line error, exit 2
    assert main(["export", str(res), "--to", "overlay", "-o", str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--video" in err and "results.json" in err

    frames = [np.full((src.height, src.width, 3), 40 * t, np.uint8) for t in range(src.num_frames)]
    mp4 = make_video(tmp_path / "clip.mp4", frames, fps=10)
    out = tmp_path / "overlay.mp4"
    assert main(["export", str(res), "--to", "overlay", "--video", str(mp4), "-o", str(out)]) == 0
    from s2d.io.video import open_video

    with open_video(out) as stream:
        got = list(stream)
    assert len(got) == src.num_frames
    assert got[0].rgb.shape[:2] == (src.height, src.width)


def test_export_several_videos_to_davis_subfolders(tmp_path):
    a, b = _video(), _video()
    b.name, b.video_id = "other", 2
    res = tmp_path / "r.json"
    formats.write_ytvis_results(res, [a, b])
    out = tmp_path / "pngs"
    assert main(["export", str(res), "--to", "davis", "-o", str(out)]) == 0
    assert len(list(out.iterdir())) == 2
    assert all(len(list(d.glob("*.png"))) == 4 for d in out.iterdir())
    assert main(["export", str(res), "--video-id", "2", "--to", "davis", "-o", str(tmp_path / "one")]) == 0
    assert len(list((tmp_path / "one").glob("*.png"))) == 4


# ----------------------------------------------------------------------------- eval
def test_eval_ytvis_on_a_json_pair(tmp_path, capsys):
    video = _video()
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    formats.write_ytvis_dataset(gt, [video])
    formats.write_ytvis_results(pred, [video])
    out = tmp_path / "m.json"
    assert main(["eval", "ytvis", "--gt", str(gt), "--pred", str(pred), "--class-agnostic", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "AP50" in table and "AR10" in table
    metrics = json.loads(out.read_text())
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR1"] == pytest.approx(0.5)


needs_davis = pytest.mark.skipif(not DAVIS.is_dir(), reason=f"shared DAVIS data not found at {DAVIS}")


@needs_davis
@pytest.mark.parametrize("protocol", ["unsupervised", "semi", "union"])
def test_eval_davis_gt_against_itself_and_empty(tmp_path, capsys, protocol):
    seq = "bear" if (DAVIS / "Annotations/480p/bear").is_dir() else sorted(
        p.name for p in (DAVIS / "Annotations/480p").iterdir())[0]
    gt_dir = DAVIS / "Annotations/480p" / seq
    frames = sorted(gt_dir.glob("*.png"))[:8]
    gt_root = tmp_path / "gt" / seq
    gt_root.mkdir(parents=True)
    same = tmp_path / "same" / seq
    empty = tmp_path / "empty" / seq
    same.mkdir(parents=True)
    empty.mkdir(parents=True)
    for f in frames:
        m = (np.array(Image.open(f)) > 0).astype(np.uint8)
        Image.fromarray(m * 255).save(gt_root / f.name)
        Image.fromarray(m, mode="L").save(same / f.name)
        Image.fromarray(np.zeros_like(m), mode="L").save(empty / f.name)
    out = tmp_path / "r.json"
    assert main(["eval", "davis", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "same"),
                 "--protocol", protocol, "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["global"]["J&F-Mean"] == pytest.approx(1.0)
    assert main(["eval", "davis", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "empty"),
                 "--protocol", protocol, "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["global"]["J&F-Mean"] == pytest.approx(0.0)
    assert "J&F" in capsys.readouterr().out


# ----------------------------------------------------------------------------- bad input
def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("s2d: error:"), err
    assert "\n" not in err, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    _one_line_error(capsys, ["export", str(missing), "--to", "davis", "-o", str(tmp_path / "o")], "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"videos": [')
    _one_line_error(capsys, ["export", str(bad), "--to", "davis", "-o", str(tmp_path / "o")], "bad.json")
    _one_line_error(capsys, ["eval", "ytvis", "--gt", str(bad), "--pred", str(bad)], "bad.json")
    # an RLE whose size does not match the video
    video = _video()
    gt = tmp_path / "gt.json"
    formats.write_ytvis_dataset(gt, [video])
    data = json.loads(gt.read_text())
    data["annotations"][0]["segmentations"][1] = {"size": [3, 3], "counts": "9"}
    wrong = tmp_path / "wrong_size.json"
    wrong.write_text(json.dumps(data))
    _one_line_error(capsys, ["export", str(wrong), "--to", "mots", "-o", str(tmp_path / "x.txt")], "wrong_size.json")
    # a folder without PNG frames
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["export", str(tmp_path / "empty"), "--to", "ytvis", "-o", str(tmp_path / "x.json")],
                    "empty")
    # a GT root without sequences
    _one_line_error(capsys, ["eval", "davis", "--gt", str(tmp_path / "empty"), "--pred", str(tmp_path)], "empty")
    # nothing was written under the output names
    assert not (tmp_path / "o").exists() and not (tmp_path / "x.txt").exists()


def test_subprocess_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "s2d", "export", str(tmp_path / "missing.json"),
                           "--to", "davis", "-o", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "missing.json" in proc.stderr


# ----------------------------------------------------------------------------- README
def _readme_s2d_commands():
    text = (REPO / "README.md").read_text()
    cmds = []
    # fences pair up in order: an opening ```lang line, then the next ``` line closes it
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
    for block in (body for lang, body in blocks if lang in ("", "bash", "sh", "console")):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()  # drop trailing comments
            for part in re.split(r"&&|;|\|", line):
                part = part.strip()
                if part.startswith("s2d ") or part == "s2d":
                    cmds.append(part)
    return cmds


def test_readme_commands_parse_with_the_cli():
    """Every `s2d ...` command in the README is accepted by the current argument parser."""
    cmds = _readme_s2d_commands()
    assert cmds, "README shows no s2d commands"
    parser = build_parser()
    for cmd in cmds:
        argv = shlex.split(cmd)[1:]
        if "--help" in argv or "-h" in argv or "--version" in argv:
            continue
        parser.parse_args(argv)  # raises SystemExit on drift


@pytest.mark.parametrize("argv", [[], ["masks"], ["discover"], ["train"], ["segment"], ["eval"], ["eval", "ytvis"],
                                  ["eval", "davis"], ["export"], ["report"], ["export-model"]])
def test_readme_shows_the_current_help(argv, monkeypatch, capsys):
    """The README's command reference is the real `--help` output (generated with COLUMNS=100)."""
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        main(argv + ["--help"])
    out = capsys.readouterr().out.rstrip()
    assert out in (REPO / "README.md").read_text(), f"README help of `s2d {' '.join(argv)}` is out of date"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python API blocks run as written on a tiny clip and results file."""
    from tests.helpers import make_video

    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2
    video = _video()
    monkeypatch.chdir(tmp_path)
    make_video(tmp_path / "clip.mp4", [np.full((video.height, video.width, 3), 50 * t, np.uint8)
                                       for t in range(video.num_frames)], fps=10)
    formats.write_ytvis_results(tmp_path / "results.json", [video])
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert len(list((tmp_path / "pngs").glob("*.png"))) == video.num_frames
    assert (tmp_path / "overlay.mp4").stat().st_size > 0


@pytest.mark.parametrize("kind", ["video", "folder"])
def test_export_dataset_with_video_is_a_trainable_labelset(tmp_path, kind):
    """`s2d export RESULTS --to ytvis --dataset --video SRC` names the video as `s2d discover` does, so
    `s2d train --videos <folder of SRC>` reads it: the user path for the image warm start on stage-1 masks."""
    from s2d.train.config import DataConfig
    from s2d.train.data import ClipDataset
    from tests.helpers import make_frame_folder, make_video

    video = _video()
    frames = [np.full((video.height, video.width, 3), 40 * t, np.uint8) for t in range(video.num_frames)]
    src = tmp_path / "data" / ("clip.mp4" if kind == "video" else "clip")
    if kind == "video":
        src.parent.mkdir()
        make_video(src, frames, fps=10)
    else:
        make_frame_folder(src, frames)
    formats.write_ytvis_results(tmp_path / "masks.json", [video])
    out = tmp_path / "labels.json"
    assert main(["export", str(tmp_path / "masks.json"), "--to", "ytvis", "--dataset", "--video", str(src),
                 "-o", str(out)]) == 0
    rec = json.loads(out.read_text())["videos"][0]
    assert (rec["source"], rec["source_kind"]) == (src.name, kind)
    assert len(rec["file_names"]) == video.num_frames
    ds = ClipDataset(out, tmp_path / "data", DataConfig(clip_len=1, size=(12, 16), min_scale=1.0, max_scale=1.0,
                                                        flip=False, brightness=0.0, contrast=0.0, min_saliency=0.0))
    clip, target = ds.sample(0)
    assert clip.shape == (1, 3, 12, 16) and target["masks"].shape[1:] == (1, 12, 16)
    t = target["frames"][0]
    assert abs(float(clip.mean()) - 40 * t / 255) < 0.03  # the labelled frame itself was decoded


@pytest.mark.parametrize("command, setting, needle", [
    ("discover", "masks.max_masks=abc", "masks.max_masks must be a number, got 'abc' (from --set)"),
    ("discover", "tracker.fb_alpha=x", "tracker.fb_alpha must be a number"),
    ("discover", "tracker.flow.typo=1", "unknown tracker setting 'tracker.flow.typo'"),
    ("discover", "foo.bar=1", "unknown section 'foo'"),
    ("discover", "seed=2.5", "seed must be an integer"),
    ("masks", "max_masks=many", "max_masks must be a number"),
    ("train", "solver.lr=fast", "solver.lr must be a number"),
    ("train", "data.size=[64]", "data.size must be a list of 2 values"),
    ("train", "model.num_queries=x", "num_queries must be a number"),
    ("segment", "link_iou=high", "link_iou must be a number"),
])
def test_bad_settings_are_one_line_errors_before_any_output(tmp_path, capsys, command, setting, needle):
    """Every command reads --set through the one settings parser: a value of the wrong type names the key and
    the source, exits 2 and writes nothing."""
    video = tmp_path / "clip"
    video.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(video / f"{i:05d}.jpg")
    out = tmp_path / "out"
    argv = {"discover": ["discover", str(video), "-o", str(out)],
            "masks": ["masks", str(video), "-o", str(out)],
            "train": ["train", "--data", str(tmp_path / "labels.json"), "--videos", str(tmp_path), "-o", str(out)],
            "segment": ["segment", str(video), "-o", str(out)]}[command]
    _one_line_error(capsys, argv + ["--set", setting], needle)
    assert not out.exists()
