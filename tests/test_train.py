"""Stage-3 training: EMA, clip sampling, training loop, checkpoint/resume, NaN stop, dense labelset."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from s2d.errors import InputError, S2DError, SettingError
from s2d.model import VideoMask2Former
from s2d.train import (ClipDataset, EMATeacher, labelled_windows, load_labelset, load_train_config,
                       sample_clip_frames, teacher_targets, train, train_preset, train_stage)
from train_synth import T, tiny_config, write_dataset


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path)


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- EMA


@pytest.mark.parametrize("step, expected", [(0, 0.1), (1, 2 / 11), (10, 11 / 20), (100, 101 / 110), (10_000, 0.999)])
def test_ema_warmup_momentum(step, expected):
    ema = EMATeacher(torch.nn.Linear(3, 2), momentum=0.999, warmup=True)
    assert ema.momentum_at(step) == pytest.approx(expected)
    assert EMATeacher(torch.nn.Linear(3, 2), momentum=0.999).momentum_at(step) == 0.999


def test_ema_warmup_update_follows_the_student_early():
    student = torch.nn.Linear(3, 2)
    ema = EMATeacher(student, momentum=0.999, warmup=True)
    t0 = ema.model.weight.detach().clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    ema.update(student, step=0)  # m = 0.1: 90 % student
    assert torch.allclose(ema.model.weight, 0.1 * t0 + 0.9 * student.weight)


def test_ema_update_math():
    student = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = EMATeacher(student, momentum=0.9)
    t0 = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
        student[1].running_mean.fill_(5.0)
    ema.update(student)
    s = student.state_dict()
    t = ema.model.state_dict()
    for name, _ in student.named_parameters():
        assert torch.allclose(t[name], 0.9 * t0[name] + 0.1 * s[name])
    assert torch.equal(t["1.running_mean"], s["1.running_mean"])  # buffers copied
    assert all(not p.requires_grad for p in ema.model.parameters())
    # momentum 1 keeps the teacher, 0 copies the student
    EMATeacher(student, 1.0)
    e0 = EMATeacher(torch.nn.Linear(3, 2), 0.0)
    lin = torch.nn.Linear(3, 2)
    e0.update(lin)
    assert torch.equal(e0.model.weight, lin.weight)


# --------------------------------------------------------------------------- clips


def test_clip_sampler_rules(dataset: Path):
    ls = load_labelset(dataset)
    a, b = ls.videos
    assert labelled_windows(a, 3) == [0]            # object 1 on 0,1,2 (and 6), object 2 on 0,3,6
    assert labelled_windows(b, 3) == []
    rng = random.Random(0)
    for _ in range(20):
        assert sample_clip_frames(a, 3, 20, rng) == [0, 1, 2]
    for _ in range(50):  # fallback: a labelled frame plus random frames within ±2
        fr = sample_clip_frames(b, 3, 2, rng)
        assert len(fr) == 3 and len(set(fr)) == 3 and fr == sorted(fr)
        refs = [t for t in fr if t in (0, 3, 6) and all(abs(u - t) <= 2 for u in fr)]
        assert refs, fr


def test_clip_targets_unlabelled_frames_empty(dataset: Path):
    cfg = train_preset("tiny").data
    ds = ClipDataset(dataset, dataset.parent / "videos", cfg, seed=0)
    b = ds.videos[1]  # mp4, decoded on the fly
    clip, tgt = ds.load(b, [2, 3, 4], random.Random(1))
    assert clip.shape == (3, 3, 64, 64) and 0 <= float(clip.min()) and float(clip.max()) <= 1
    m = tgt["masks"]
    assert m.shape == (2, 3, 64, 64) and m.dtype == torch.bool
    assert m[:, 1].flatten(1).any(1).all()          # frame 3 labelled for both objects
    assert not m[:, 0].any() and not m[:, 2].any()  # frames 2 and 4 unlabelled → empty
    # objects without a label in the clip are left out
    _, tgt2 = ds.load(ds.videos[0], [3, 4, 5], random.Random(2))
    assert tgt2["masks"].shape[0] == 1
    clip_a, tgt_a = ds.sample(5)
    clip_b, tgt_b = ds.sample(5)                    # same index → same clip
    assert torch.equal(clip_a, clip_b) and torch.equal(tgt_a["masks"], tgt_b["masks"])


def _box_clip(T: int, H: int, W: int, boxes, value: float):
    """A clip of constant ``value`` and one mask per box ``(y0, y1, x0, x1)`` on every frame."""
    clip = torch.full((T, 3, H, W), value)
    masks = torch.zeros(len(boxes), T, H, W, dtype=torch.bool)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        masks[i, :, y0:y1, x0:x1] = True
    return clip, masks


@pytest.mark.parametrize("donor_boxes, donor_labelled, pasted", [
    ([(4, 12, 4, 12)], [True], 1),                       # one object labelled on all frames: pasted
    ([(4, 12, 4, 12), (20, 28, 20, 28)], [True, True], 2),  # two: pasted together, as separate instances
    ([(4, 12, 4, 12)], [False], 0),                      # labelled on some frames only: nothing pasted
])
def test_paste_objects(donor_boxes, donor_labelled, pasted):
    from s2d.train.data import paste_objects

    clip, masks = _box_clip(3, 32, 32, [(0, 32, 0, 32)], 0.0)    # base: one object covering the frame
    donor, dmasks = _box_clip(3, 32, 32, donor_boxes, 1.0)
    for i, lab in enumerate(donor_labelled):
        if not lab:
            dmasks[i, 1] = False
    out, m = paste_objects(clip, masks, donor, dmasks, (1.0, 1.0), random.Random(0))
    assert m.shape[0] == 1 + pasted and m.dtype == torch.bool
    new = m[1:]
    assert not (m[0] & new.any(0)).any()                   # the base object loses the pasted pixels
    if pasted:
        for i in range(pasted):
            assert int(new[i, 0].sum()) == 64                 # 8×8 at scale 1
            assert torch.equal(new[i, 0], new[i, 2])          # the donor's objects are static here
        inside = new.any(0)
        assert torch.all(out[:, :, inside[0]] == 1.0)         # donor pixels under the masks
        far = ~torch.nn.functional.max_pool2d(inside[:, None].float(), 5, 1, 2)[:, 0].bool()
        assert torch.all(out.permute(1, 0, 2, 3)[:, far] == 0.0)  # base pixels away from the paste untouched
        if pasted == 2:
            assert not (new[0] & new[1]).any()                # still two separate instances
    else:
        assert torch.equal(out, clip) and torch.equal(m, masks)


def test_copy_paste_clips_hold_more_instances(dataset: Path):
    cfg = dataclasses.replace(train_preset("tiny").data, copy_paste=1.0, paste_max=1)
    plain = ClipDataset(dataset, dataset.parent / "videos", train_preset("tiny").data, seed=0)
    pasted = ClipDataset(dataset, dataset.parent / "videos", cfg, seed=0)
    more = 0
    for i in range(12):
        _, a = plain.sample(i)
        clip, b = pasted.sample(i)
        assert clip.shape == (3, 3, 64, 64) and b["labels"].shape[0] == b["masks"].shape[0]
        more += b["masks"].shape[0] > a["masks"].shape[0]
        _, b2 = pasted.sample(i)
        assert torch.equal(b["masks"], b2["masks"])           # deterministic per index
    assert more >= 3


def test_missing_frames_are_input_errors(dataset: Path, tmp_path: Path):
    cfg = train_preset("tiny").data
    with pytest.raises(InputError, match="not found under the videos root"):
        ClipDataset(dataset, tmp_path / "nowhere", cfg)
    (dataset.parent / "videos" / "a" / "00001.png").unlink()
    ds = ClipDataset(dataset, dataset.parent / "videos", cfg)
    with pytest.raises(InputError, match="00001.png"):
        ds.load(ds.videos[0], [0, 1, 2], random.Random(0))
    bad = tmp_path / "bad.json"
    bad.write_text("{\"videos\": 3}")
    with pytest.raises(InputError, match="bad.json"):
        load_labelset(bad)


def test_config_presets_and_overrides(tmp_path: Path):
    paper = train_preset("paper")
    assert paper.solver.lr == 1e-6 and paper.solver.steps == (20200,) and paper.data.batch_size == 4
    assert paper.distill.ema_momentum == 0.999 and paper.distill.score_threshold == 0.75
    cfg = load_train_config("tiny", ["solver.lr=2e-3", "data.size=[32,48]", "model.num_queries=6", "stages=[distill]"])
    assert cfg.solver.lr == 2e-3 and cfg.data.size == (32, 48) and cfg.model_config().num_queries == 6
    assert cfg.stages == ("distill",)
    y = tmp_path / "c.yaml"
    y.write_text("preset: tiny\nsolver:\n  max_iter: 9\n")
    assert load_train_config(y).solver.max_iter == 9
    y.write_text("preset: tiny\nsolver:\n  lr: 1e-4\n  max_iter: 2e1\n")  # PyYAML reads both as text
    got = load_train_config(y).solver
    assert got.lr == 1e-4 and got.max_iter == 20 and isinstance(got.max_iter, int)
    y.write_text("preset: tiny\nsolver:\n  lr: fast\n")
    with pytest.raises(InputError, match="solver.lr must be a number"):
        load_train_config(y)
    with pytest.raises(SettingError):
        load_train_config("tiny", ["solver.nope=1"])
    with pytest.raises(SettingError):
        load_train_config("tiny", ["data.size=[30,48]"])
    with pytest.raises(InputError):
        load_train_config(tmp_path / "missing.yaml")


def test_teacher_targets_threshold():
    logits = torch.tensor([[[3.0, 0.0], [0.0, 3.0]]])           # query 0 confident, query 1 not
    masks = torch.full((1, 2, 3, 2, 2), -1.0)
    masks[0, 0, 1] = 1.0
    t = teacher_targets({"pred_logits": logits, "pred_masks": masks}, (8, 8), 0.75)
    assert t[0]["masks"].shape == (1, 3, 8, 8)
    assert t[0]["masks"][0, 1].all() and not t[0]["masks"][0, 0].any()


# --------------------------------------------------------------------------- training loop


def test_training_reduces_loss_and_writes_metrics(dataset: Path, tmp_path: Path):
    from s2d.model import VideoMask2Former, VideoSetCriterion

    cfg = tiny_config(max_iter=12, lr=2e-3, steps=(1.0,))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, flip=False, max_scale=1.0))
    run = tmp_path / "run"
    res = train(cfg, dataset, dataset.parent / "videos", run, stages=["distill"], progress=False)["distill"]
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 13))
    assert all(k in lines[0] for k in ("loss", "loss_gt", "loss_kd", "lr", "sec_per_iter", "teacher_objects"))
    # the time each step waited for its clips (reading, decoding, augmenting), part of the step's time
    assert all(0 < r["data_time"] <= r["sec_per_iter"] for r in lines)
    ck = torch.load(run / "distill" / "last.pt", weights_only=True)
    assert ck["step"] == 12 and {"model", "teacher", "optimizer", "scheduler", "rng"} <= set(ck)
    model = VideoMask2Former.from_checkpoint(run / "distill" / "model.pt")  # the teacher, loadable
    assert model.config.num_queries == 8
    # loss on fixed clips: trained student < initial model
    ds = ClipDataset(dataset, dataset.parent / "videos", cfg.data, seed=123)
    clips, tg = ds.batch(range(4))
    tg = [{"masks": t["masks"], "labels": t["labels"]} for t in tg]
    crit = VideoSetCriterion(cfg.model_config().loss)
    torch.manual_seed(cfg.seed)
    init = VideoMask2Former(cfg.model_config())
    with torch.no_grad():
        before = float(crit(init(clips), tg)["loss"])
        after = float(crit(res.student(clips), tg)["loss"])
    assert after < 0.8 * before, (before, after)


def test_resume_continues_identically(dataset: Path, tmp_path: Path):
    # random importance sampling (loss.num_points): the torch RNG must be restored
    cfg = dataclasses.replace(tiny_config(max_iter=4), checkpoint_every=100, model_overrides=["loss.num_points=64"])
    videos = dataset.parent / "videos"
    straight = train_stage(cfg, dataset, videos, tmp_path / "r1", progress=False)
    part = train_stage(cfg, dataset, videos, tmp_path / "r2", progress=False, stop_at=2)
    assert part.step == 2 and not (tmp_path / "r2" / "distill" / "model.pt").exists()
    with pytest.raises(SettingError, match="resume"):
        train_stage(cfg, dataset, videos, tmp_path / "r2", progress=False)
    torch.manual_seed(999)  # resume must not depend on the caller's RNG state
    with open(tmp_path / "r2" / "metrics.jsonl", "a") as f:  # a line logged after the checkpoint, then lost
        f.write(json.dumps({"stage": "distill", "step": 3, "loss": 1.0}) + "\n")
    resumed = train_stage(cfg, dataset, videos, tmp_path / "r2", progress=False, resume=True)
    assert resumed.step == 4
    steps = [json.loads(x)["step"] for x in (tmp_path / "r2" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert _states_equal(straight.student.state_dict(), resumed.student.state_dict())
    assert _states_equal(straight.teacher.state_dict(), resumed.teacher.state_dict())
    assert not _states_equal(straight.student.state_dict(), part.student.state_dict())
    again = train_stage(cfg, dataset, videos, tmp_path / "r2", progress=False, resume=True)
    assert again.skipped


def test_resume_accepts_a_checkpoint_written_before_a_model_setting_existed(dataset: Path, tmp_path: Path):
    """A model-config field added since a checkpoint was written takes its default (the old behaviour) on
    resume, instead of refusing the run."""
    cfg = dataclasses.replace(tiny_config(max_iter=3), checkpoint_every=100)
    videos = dataset.parent / "videos"
    train_stage(cfg, dataset, videos, tmp_path / "r", progress=False, stop_at=1)
    last = tmp_path / "r" / "distill" / "last.pt"
    ckpt = torch.load(last, weights_only=False)
    del ckpt["model_config"]["self_attn_key_pos"]  # as written before that setting existed
    torch.save(ckpt, last)
    assert train_stage(cfg, dataset, videos, tmp_path / "r", progress=False, resume=True).step == 3


def test_nan_loss_stops_and_keeps_last_good_checkpoint(dataset: Path, tmp_path: Path, monkeypatch):
    from s2d.model import VideoSetCriterion

    cfg = dataclasses.replace(tiny_config(max_iter=6), checkpoint_every=2)
    real = VideoSetCriterion.forward
    calls = {"n": 0}

    def poisoned(self, outputs, targets, *a, **k):
        out = real(self, outputs, targets, *a, **k)
        calls["n"] += 1
        if calls["n"] > 2 * 3:  # two criteria per step: NaN from step 4 on
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(VideoSetCriterion, "forward", poisoned)
    run = tmp_path / "run"
    with pytest.raises(S2DError, match=r"loss is NaN.*step 4.*last good checkpoint.*step 2\)"):
        train_stage(cfg, dataset, dataset.parent / "videos", run, progress=False)
    ck = torch.load(run / "distill" / "last.pt", weights_only=True)
    assert ck["step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert not (run / "distill" / "model.pt").exists()


# --------------------------------------------------------------------------- dense labelset


def test_dense_labelset_format_and_self_distill(dataset: Path, tmp_path: Path):
    from s2d import rle as rle_utils

    cfg = tiny_config(max_iter=2, self_distill_iter=2)
    # an untrained teacher: keep its predictions to exercise linking
    cfg = dataclasses.replace(cfg, dense=dataclasses.replace(cfg.dense, score_threshold=0.0, min_area=1))
    run = tmp_path / "run"
    res = train(cfg, dataset, dataset.parent / "videos", run, progress=False)
    assert set(res) == {"distill", "self-distill"} and res["self-distill"].step == 2
    dense = json.loads((run / "dense_labels.json").read_text())
    sparse = json.loads(dataset.read_text())
    assert dense["videos"] == sparse["videos"]
    ids = [a["id"] for a in dense["annotations"]]
    assert ids and ids == list(range(1, len(ids) + 1))
    for a in dense["annotations"]:
        assert len(a["segmentations"]) == T and a["category_id"] == 1 and 0 <= a["score"] <= 1
        for s in a["segmentations"]:
            assert s is None or (s["size"] == [48, 64] and isinstance(s["counts"], str))
    # every keymask is kept exactly on its frame
    dense_masks = [[None if s is None else rle_utils.decode(s) for s in a["segmentations"]]
                   for a in dense["annotations"] if a["video_id"] == 1]
    for a in sparse["annotations"]:
        if a["video_id"] != 1:
            continue
        frames = [t for t, s in enumerate(a["segmentations"]) if s]
        km = [rle_utils.decode(a["segmentations"][t]) for t in frames]
        assert any(all(d[t] is not None and (d[t] == m).all() for t, m in zip(frames, km)) for d in dense_masks)
    assert load_labelset(run / "dense_labels.json").videos[0].length == T
    # refinement hook is called on the predicted masks
    from s2d.model import VideoMask2Former
    from s2d.train.dense import build_dense_labelset

    seen = []
    build_dense_labelset(VideoMask2Former.from_checkpoint(run / "distill" / "model.pt"), dataset,
                         dataset.parent / "videos", tmp_path / "d2.json", cfg.dense,
                         refine_fn=lambda rgb, m: seen.append(rgb.shape) or m, progress=False)
    assert seen and seen[0] == (48, 64, 3)

    crf = build_dense_labelset(VideoMask2Former.from_checkpoint(run / "distill" / "model.pt"), dataset,
                               dataset.parent / "videos", tmp_path / "d3.json",
                               dataclasses.replace(cfg.dense, refine="crf"), progress=False)
    assert len(load_labelset(crf).videos) == 2
    # max_frames: only the first frames are labelled (keymasks beyond them are still kept), lengths unchanged
    capped = build_dense_labelset(VideoMask2Former.from_checkpoint(run / "distill" / "model.pt"), dataset,
                                  dataset.parent / "videos", tmp_path / "d4.json",
                                  dataclasses.replace(cfg.dense, max_frames=3, keep_keymasks=False),
                                  progress=False)
    anns = json.loads(capped.read_text())["annotations"]
    assert anns and all(len(a["segmentations"]) == T for a in anns)
    assert all(s is None for a in anns for s in a["segmentations"][3:])
    assert any(s is not None for a in anns for s in a["segmentations"][:3])
    guided = build_dense_labelset(VideoMask2Former.from_checkpoint(run / "distill" / "model.pt"), dataset,
                                  dataset.parent / "videos", tmp_path / "d5.json",
                                  dataclasses.replace(cfg.dense, refine="guided", split=True), progress=False)
    assert len(load_labelset(guided).videos) == 2
    with pytest.raises(SettingError, match="dense.max_frames"):
        load_train_config("tiny", ["dense.max_frames=1"])
    with pytest.raises(SettingError, match="dense: split min area must be a fraction"):
        load_train_config("tiny", ["dense.split_min_area=2"])
    with pytest.raises(SettingError, match="dense: overlap must be .* < window"):
        load_train_config("tiny", ["dense.overlap=3"])


def test_dense_windows_link_one_object_across_the_video():
    import numpy as np

    from s2d import rle as rle_utils
    from s2d.train.config import DenseConfig
    from s2d.train.dense import predict_video_dense

    class Fake:  # one confident square that moves 2 px per frame, one low-score blob
        def predict(self, clip, score_threshold=0.0):
            t, _, h, w = clip.shape
            scale = 1 if clip.dtype == torch.uint8 else 255
            starts = [int(round(float(clip[i, 0, 0, 0]) * scale)) for i in range(t)]  # frame index in pixel 0
            m = torch.zeros(2, t, h, w, dtype=torch.bool)
            for i, s in enumerate(starts):
                m[0, i, 4:12, 2 * s:2 * s + 8] = True
                m[1, i, 20:30, 0:10] = True
            sc = torch.tensor([0.9, 0.5])
            keep = sc >= score_threshold
            return {"scores": sc[keep], "masks": m[keep]}

    frames = []
    for t in range(10):
        f = np.zeros((32, 48, 3), np.uint8)
        f[0, 0, 0] = t
        frames.append(f)
    refined = []
    cfg = DenseConfig(window=3, overlap=1, score_threshold=0.75, max_side=None, min_area=1)
    objs = predict_video_dense(Fake(), iter(frames), 10, cfg, refine_fn=lambda rgb, m: refined.append(1) or m)
    assert len(objs) == 1 and abs(objs[0]["score"] - 0.9) < 1e-6
    segs = objs[0]["segs"]
    assert all(s is not None for s in segs) and len(refined) == 10
    for t, s in enumerate(segs):
        m = rle_utils.decode(s)
        assert m[4:12, 2 * t:2 * t + 8].all() and m.sum() == 64


@pytest.mark.parametrize("min_area, objects", [(0.0, 3), (0.01, 2)])
def test_dense_split_uses_the_segment_rule_for_small_parts(min_area, objects):
    """dense.split gives far-apart parts of one tube their own labels; parts under dense.split_min_area of the
    frame stay with the largest part, as in `s2d segment`."""
    import numpy as np

    from s2d.train.config import DenseConfig
    from s2d.train.dense import predict_video_dense

    class Fake:  # one tube: two 8×8 squares far apart and a 3×3 speck (0.6 % of the 32×48 frame)
        def predict(self, clip, score_threshold=0.0):
            t, _, h, w = clip.shape
            m = torch.zeros(1, t, h, w, dtype=torch.bool)
            m[0, :, 2:10, 2:10] = True
            m[0, :, 20:28, 36:44] = True
            m[0, :, 27:30, 4:7] = True
            return {"scores": torch.tensor([0.9]), "masks": m}

    frames = [np.zeros((32, 48, 3), np.uint8) for _ in range(5)]
    cfg = DenseConfig(window=3, overlap=1, max_side=None, min_area=1, split=True, split_min_area=min_area)
    objs = predict_video_dense(Fake(), iter(frames), 5, cfg)
    assert len(objs) == objects and all(all(s is not None for s in o["segs"]) for o in objs)


def test_image_warm_start_then_init_and_resume_config_mismatch(dataset: Path, tmp_path: Path):
    videos = dataset.parent / "videos"
    warm = load_train_config(tiny_config(max_iter=2), ["data.clip_len=1", "distill.enabled=false"])
    r = train_stage(warm, dataset, videos, tmp_path / "warm", progress=False)   # single frames as images
    init = tmp_path / "warm" / "distill" / "model.pt"
    cfg = load_train_config(tiny_config(max_iter=2), [f"init={init}"])
    r2 = train_stage(cfg, dataset, videos, tmp_path / "main", progress=False, init=cfg.init, stop_at=1)
    assert r.step == 2 and r2.step == 1
    other = load_train_config(cfg, ["model.num_queries=4"])
    with pytest.raises(InputError, match="num_queries"):
        train_stage(other, dataset, videos, tmp_path / "main", progress=False, resume=True)
    # a stage in progress continues only with the settings it started with
    for change, key in (("solver.lr=0.5", "solver.lr"), ("data.clip_len=1", "data.clip_len"), ("seed=3", "seed")):
        with pytest.raises(InputError, match=f"other settings \\({key}\\)"):
            train_stage(load_train_config(cfg, [change]), dataset, videos, tmp_path / "main", progress=False,
                        resume=True)
    same = load_train_config(cfg, ["dense.score_threshold=0.6"])  # a later stage's setting may change
    assert train_stage(same, dataset, videos, tmp_path / "main", progress=False, resume=True).step == 2


@pytest.mark.parametrize("start", ["teacher", "init"])
def test_self_distill_student_starts_where_configured(dataset: Path, tmp_path: Path, monkeypatch, start):
    import s2d.train.loop as loop

    seen = {}
    real = loop.train_stage

    def spy(cfg, data, videos, run, stage="distill", **kw):
        seen[stage] = kw.get("init")
        return real(cfg, data, videos, run, stage, **kw)

    monkeypatch.setattr(loop, "train_stage", spy)
    cfg = load_train_config(tiny_config(max_iter=2), ["solver.self_distill_iter=1", "dense.tta_flip=true",
                                                      f"self_distill_init={start}"])
    run = tmp_path / "run"
    loop.train(cfg, dataset, dataset.parent / "videos", run, progress=False)
    assert seen["distill"] is None
    assert seen["self-distill"] == (run / "distill" / "model.pt" if start == "teacher" else None)
    with pytest.raises(SettingError, match="self_distill_init"):
        load_train_config(cfg, ["self_distill_init=scratch"])
    # resuming with a changed setting records what is used from now on and keeps the earlier record
    first = json.loads((run / "train_config.json").read_text())
    loop.train(load_train_config(cfg, ["dense.min_area=5"]), dataset, dataset.parent / "videos", run,
               resume=True, progress=False)
    assert json.loads((run / "train_config.json").read_text())["dense"]["min_area"] == 5
    assert json.loads((run / "train_config.1.json").read_text()) == first


def test_self_distill_rounds_chain_their_labels_and_resume(dataset: Path, tmp_path: Path, monkeypatch):
    import s2d.train.loop as loop

    calls = []
    real = loop.train_stage

    def spy(cfg, data, videos, run, stage="distill", **kw):
        calls.append((stage, Path(data), kw.get("init")))
        return real(cfg, data, videos, run, stage, **kw)

    monkeypatch.setattr(loop, "train_stage", spy)
    cfg = load_train_config(tiny_config(max_iter=2), ["solver.self_distill_iter=1", "self_distill_rounds=2"])
    run = tmp_path / "run"
    res = loop.train(cfg, dataset, dataset.parent / "videos", run, progress=False)
    assert [c[0] for c in calls] == ["distill", "self-distill", "self-distill-2"]
    assert calls[1][1:] == (run / "dense_labels.json", run / "distill" / "model.pt")
    assert calls[2][1:] == (run / "dense_labels_2.json", run / "self-distill" / "model.pt")
    assert load_labelset(run / "dense_labels_2.json").videos
    assert res["self-distill-2"].step == 1 and (run / "self-distill-2" / "model.pt").is_file()
    final = VideoMask2Former.from_checkpoint(run / "model.pt").state_dict()
    last = VideoMask2Former.from_checkpoint(run / "self-distill-2" / "model.pt").state_dict()
    assert all(torch.allclose(final[k].float(), last[k].float(), atol=1e-2) for k in final)
    again = loop.train(cfg, dataset, dataset.parent / "videos", run, resume=True, progress=False)
    assert all(r.skipped for r in again.values()) and list(again) == ["distill", "self-distill", "self-distill-2"]
    with pytest.raises(SettingError, match="self_distill_rounds"):
        load_train_config(cfg, ["self_distill_rounds=0"])


def test_cli_train_runs_both_stages_and_resumes(dataset: Path, tmp_path: Path):
    """`s2d train` as a user types it: tiny preset, both stages, then --resume finds them finished."""
    from s2d.cli import main

    run = tmp_path / "cli_run"
    argv = ["train", "--data", str(dataset), "--videos", str(dataset.parent / "videos"), "-o", str(run),
            "--config", "tiny", "--set", "solver.max_iter=3", "--set", "dense.refine=none"]
    assert main(argv) == 0
    assert (run / "distill" / "model.pt").is_file() and (run / "self-distill" / "model.pt").is_file()
    assert (run / "dense_labels.json").is_file()
    # RUN_DIR/model.pt: the self-distilled model, compact, and it predicts like the full checkpoint
    full = VideoMask2Former.from_checkpoint(run / "self-distill" / "model.pt")
    compact = VideoMask2Former.from_checkpoint(run / "model.pt")
    assert VideoMask2Former(compact.config).load_checkpoint(run / "model.pt")["compact"] is True
    clip = torch.rand(3, 3, 64, 64)
    assert torch.allclose(full.predict(clip)["mask_logits"], compact.predict(clip)["mask_logits"], atol=0.05)
    assert main(argv) == 2  # an existing run without --resume is refused with a one-line error
    assert main(argv + ["--resume"]) == 0
    assert main(["train", "--data", str(tmp_path / "missing.json"), "--videos", str(tmp_path), "-o", str(run)]) == 2


@pytest.mark.parametrize("saliencies, min_saliency, kept", [
    ([0.2, 0.8, None], 0.5, [1, 2]),   # objects without the field are kept
    ([0.2, 0.8, None], 0.0, [0, 1, 2]),  # 0 keeps all (the reference)
    ([0.5, 0.49, 1.0], 0.5, [0, 2]),    # the threshold itself passes
])
def test_load_labelset_leaves_out_low_saliency_objects(tmp_path, saliencies, min_saliency, kept):
    segs = [{"size": [4, 4], "counts": "04<0"}, None]
    anns = []
    for k, s in enumerate(saliencies):
        a = {"id": k + 1, "video_id": 1, "category_id": 1, "segmentations": segs}
        if s is not None:
            a["saliency"] = s
        anns.append(a)
    p = tmp_path / "pl.json"
    p.write_text(json.dumps({"videos": [{"id": 1, "length": 2, "height": 4, "width": 4, "source": "v",
                                          "file_names": ["v/0.png", "v/1.png"]}], "annotations": anns}))
    video = load_labelset(p, min_saliency=min_saliency).videos[0]
    assert [a["id"] - 1 for a in video.annotations] == kept and len(video.objects) == len(kept)


@pytest.mark.parametrize("ratios, min_ratio, kept", [
    ([0.2, 0.85, 0.88], 0.5, [1, 2]),  # two objects of similar rank both pass (saliency would split them)
    ([0.5, 0.49, 1.0], 0.5, [0, 2]),   # the threshold itself passes
    ([0.2, None, 1.0], 0.0, [0, 1, 2]),  # 0 keeps all, with or without the field
])
def test_load_labelset_score_ratio_gate(tmp_path, ratios, min_ratio, kept):
    segs = [{"size": [4, 4], "counts": "04<0"}, None]
    anns = [{"id": k + 1, "video_id": 1, "category_id": 1, "segmentations": segs,
             **({} if r is None else {"score_ratio": r})} for k, r in enumerate(ratios)]
    p = tmp_path / "pl.json"
    p.write_text(json.dumps({"videos": [{"id": 1, "length": 2, "height": 4, "width": 4, "source": "v",
                                          "file_names": ["v/0.png", "v/1.png"]}], "annotations": anns}))
    video = load_labelset(p, min_score_ratio=min_ratio).videos[0]
    assert [a["id"] - 1 for a in video.annotations] == kept
    anns[0].pop("score_ratio", None)
    p.write_text(json.dumps({"videos": [{"id": 1, "length": 2, "height": 4, "width": 4, "source": "v",
                                          "file_names": ["v/0.png", "v/1.png"]}], "annotations": anns}))
    with pytest.raises(InputError, match="no 'score_ratio'"):
        load_labelset(p, min_score_ratio=0.5)
    with pytest.raises(SettingError, match="data.min_score_ratio"):
        load_train_config("tiny", ["data.min_score_ratio=2"])


def test_dense_labels_are_what_segment_predicts_with_the_same_settings():
    """Dense labelling is "predict, then merge keymasks": its predictions are s2d segment's (the one streaming
    predictor) with DenseConfig.segment_config(), frame for frame; overlaps kept by default, resolved on request."""
    import numpy as np

    from s2d import rle as rle_utils
    from s2d.infer.predictor import segment_frames
    from s2d.model import VideoMask2Former, model_preset
    from s2d.train.config import DenseConfig
    from s2d.train.dense import predict_video_dense

    torch.manual_seed(0)
    model = VideoMask2Former(model_preset("tiny")).eval()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (40, 56, 3), dtype=np.uint8) for _ in range(7)]
    covers = {}
    for resolve in (False, True):
        cfg = DenseConfig(window=3, overlap=1, score_threshold=0.0, max_side=64, min_area=1, split=True,
                          resolve_overlaps=resolve)
        objs = predict_video_dense(model, iter(frames), 6, cfg)
        want: dict = {}
        for res in segment_frames(iter(frames[:6]), cfg.segment_config(), model=model):
            for k, tid in enumerate(res.ids.tolist()):
                want.setdefault(tid, [None] * 6)[res.index] = res.masks[k]
        assert objs and len(objs) == len(want)
        for obj, tid in zip(objs, sorted(want)):
            for t in range(6):
                got = None if obj["segs"][t] is None else rle_utils.decode(obj["segs"][t])
                assert (got is None) == (want[tid][t] is None)
                assert got is None or (got == want[tid][t]).all()
        covers[resolve] = sum(rle_utils.decode(o["segs"][0]).astype(int) for o in objs if o["segs"][0] is not None)
    assert covers[True].max() <= 1  # resolved: disjoint, as every s2d segment export
    assert covers[False].max() > 1  # kept: the random tiny model's masks overlap, and the labels keep that


@pytest.mark.parametrize("stage, offset", [("distill", 0), ("self-distill", 7919), ("self-distill-2", 15838),
                                           ("self-distill-3", 23757), ("online", 104729)])
def test_each_stage_draws_its_own_clips(stage, offset):
    from s2d.train.loop import _data_seed_offset

    assert _data_seed_offset(stage) == offset


@pytest.mark.parametrize("env, seconds", [(None, 7200), ("600", 600), ("1.5", 1.5), ("0", None), ("soon", None)])
def test_process_group_timeout(monkeypatch, env, seconds):
    from s2d.train.ddp import process_group_timeout

    if env is None:
        monkeypatch.delenv("S2D_DDP_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("S2D_DDP_TIMEOUT", env)
    if seconds is None:
        with pytest.raises(SettingError, match="S2D_DDP_TIMEOUT"):
            process_group_timeout()
    else:
        assert process_group_timeout().total_seconds() == seconds


@pytest.mark.parametrize("mode, device, dtype", [
    ("auto", "cpu", None), ("off", "cpu", None), ("bf16", "cpu", torch.bfloat16), ("fp16", "cpu", "error")])
def test_amp_modes(mode, device, dtype):
    from s2d.train.loop import amp_dtype_for

    if dtype == "error":
        with pytest.raises(SettingError, match="fp16 needs a CUDA"):
            amp_dtype_for(mode, torch.device(device))
    else:
        assert amp_dtype_for(mode, torch.device(device)) is dtype


def test_bf16_autocast_training_runs_with_float32_losses(dataset: Path, tmp_path: Path):
    """solver.amp=bf16 on CPU: the forward passes run under bf16 autocast; it trains with finite losses and
    keeps float32 weights."""
    cfg = tiny_config(max_iter=3)
    cfg = dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, amp="bf16"))
    res = train(cfg, dataset, dataset.parent / "videos", tmp_path / "run", stages=["distill"], progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(np.isfinite(r["loss"]) for r in lines)
    assert all(p.dtype == torch.float32 for p in res["distill"].student.parameters())
    with pytest.raises(SettingError, match="solver.amp"):
        load_train_config("tiny", ["solver.amp=half"])


@pytest.mark.parametrize("world", [2, 3])
def test_dense_shards_merge_to_the_one_process_labelset(dataset: Path, tmp_path: Path, world: int):
    """Ranks label every world-th video; the joined file is byte-identical to the one-process labelset."""
    from s2d.train.dense import build_dense_labelset, merge_dense_shards, shard_path, write_dense_shard

    cfg = tiny_config()
    dense_cfg = dataclasses.replace(cfg.dense, score_threshold=0.0, min_area=1)
    torch.manual_seed(0)
    teacher = VideoMask2Former("tiny").eval()
    videos = dataset.parent / "videos"
    one = build_dense_labelset(teacher, dataset, videos, tmp_path / "one.json", dense_cfg, progress=False)
    labelset = load_labelset(dataset)
    out = tmp_path / "sharded.json"
    for rank in range(world):  # as the ranks do, each on its own
        write_dense_shard(teacher, labelset, videos, out, dense_cfg, rank=rank, world=world, progress=False)
    merged = merge_dense_shards(labelset, out, dense_cfg, world=world)
    assert merged.read_bytes() == one.read_bytes()
    assert json.loads(one.read_text())["annotations"]
    assert not any(shard_path(out, r).exists() for r in range(world))


def test_data_workers_give_the_batches_of_the_training_process(dataset: Path, tmp_path: Path):
    """Two DataLoader workers read ahead exactly the clips the training process would read itself, and a run
    stopped mid-way and resumed with workers ends where the uninterrupted run ends."""
    cfg = dataclasses.replace(tiny_config(max_iter=4), checkpoint_every=100, model_overrides=["loss.num_points=64"])
    videos = dataset.parent / "videos"
    inline = train_stage(cfg, dataset, videos, tmp_path / "inline", progress=False)
    cfg2 = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_workers=2))
    workers = train_stage(cfg2, dataset, videos, tmp_path / "workers", progress=False)
    assert _states_equal(inline.student.state_dict(), workers.student.state_dict())
    train_stage(cfg2, dataset, videos, tmp_path / "resumed", progress=False, stop_at=2)
    resumed = train_stage(cfg2, dataset, videos, tmp_path / "resumed", progress=False, resume=True)
    assert _states_equal(inline.student.state_dict(), resumed.student.state_dict())
    lines = [json.loads(x) for x in (tmp_path / "workers" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["data_time"] < r["sec_per_iter"] for r in lines)


def test_step_sampler_shards_steps_by_rank():
    from s2d.train.data import StepSampler

    assert list(StepSampler(2, 0, 2)) == [[0, 1], [2, 3]]
    assert list(StepSampler(2, 1, 3, rank=1, world=2)) == [[6, 7], [10, 11]]  # steps 1, 2 of rank 1
    assert len(StepSampler(2, 5, 3)) == 0
