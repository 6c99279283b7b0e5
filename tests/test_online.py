"""Online mode (issue #16): the query-propagation model, its distillation stage, and per-frame streaming."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from s2d.errors import InputError, SettingError
from s2d.infer import SegmentConfig, VideoPredictor
from s2d.model import VideoMask2Former, model_preset
from s2d.train import train
from train_synth import tiny_config, write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    offline = VideoMask2Former("tiny").eval()
    online = VideoMask2Former(model_preset("tiny").replace(query_propagation=True)).eval()
    got = online.load_state_dict(offline.state_dict(), strict=False)
    assert sorted(got.missing_keys) == ["decoder.propagate.bias", "decoder.propagate.weight"]
    return offline, online


def test_online_model_starts_equal_to_the_offline_model_frame_by_frame():
    offline, online = _pair()
    clip = torch.rand(1, 3, 3, 64, 64)
    with torch.no_grad():
        per_frame = [offline(clip[:, t:t + 1]) for t in range(3)]
        unrolled = online(clip)
    want = torch.cat([o["pred_masks"] for o in per_frame], dim=2)
    assert torch.allclose(unrolled["pred_masks"], want, atol=1e-4)
    assert torch.allclose(unrolled["pred_logits"], torch.stack([o["pred_logits"] for o in per_frame]).mean(0),
                          atol=1e-4)


def test_unrolled_clip_equals_frames_fed_one_at_a_time_with_their_queries():
    _, online = _pair()
    with torch.no_grad():
        online.decoder.propagate.weight.normal_(0, 0.1)  # a trained propagation: frames depend on the last one
    clip = torch.rand(1, 3, 3, 64, 64)
    with torch.no_grad():
        whole = online(clip)
        prev, masks = None, []
        for t in range(3):
            out = online(clip[:, t:t + 1], prev_queries=prev)
            res = online.predict(clip[0, t:t + 1], prev_queries=prev)  # predict hands on the same queries
            assert torch.allclose(res["queries"], out["pred_embeds"], atol=1e-5)
            prev = out["pred_embeds"]
            masks.append(out["pred_masks"])
        alone = online(clip[:, 1:2])["pred_masks"]
    assert torch.allclose(whole["pred_masks"], torch.cat(masks, dim=2), atol=1e-4)
    assert not torch.allclose(alone, masks[1], atol=1e-4)  # the carried queries change frame 1


def test_online_segment_config_reads_one_frame_at_a_time():
    cfg = SegmentConfig(online=True)
    assert (cfg.chunk, cfg.overlap) == (1, 0)
    assert SegmentConfig.__dataclass_fields__["online"].default is False
    with pytest.raises(SettingError, match="online"):
        SegmentConfig(online="yes")


class _Source:
    """Frames that record how many were read when each result came out."""

    def __init__(self, n: int) -> None:
        rng = np.random.default_rng(0)
        self.frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(n)]
        self.read = 0

    def __iter__(self):
        for f in self.frames:
            self.read += 1
            yield f


@pytest.mark.parametrize("propagate", [False, True])
def test_online_predictor_yields_each_frame_before_reading_the_next(propagate: bool):
    offline, online = _pair()
    model = online if propagate else offline
    pred = VideoPredictor(model, SegmentConfig(online=True, score_threshold=0.0, continue_threshold=0.0,
                                               max_side=64, refine="none", split=False))
    src = _Source(5)
    reads = []
    for res in pred(src):
        reads.append(src.read)
        assert res.masks.shape[1:] == (48, 64)
    assert reads == [1, 2, 3, 4, 5]
    assert pred._propagates is propagate


def test_online_stage_distils_the_offline_model(tmp_path: Path):
    data = write_dataset(tmp_path)
    videos = data.parent / "videos"
    cfg = tiny_config(max_iter=4)
    run = tmp_path / "run"
    train(cfg, data, videos, run, stages=["distill"], progress=False)
    assert (run / "model.pt").is_file()
    cfg = dataclasses.replace(cfg, online=dataclasses.replace(cfg.online, iters=3, score_threshold=0.0))
    res = train(cfg, data, videos, run, stages=["online"], progress=False)["online"]
    assert res.step == 3
    student = VideoMask2Former.from_checkpoint(run / "online.pt")
    assert student.config.query_propagation
    offline = VideoMask2Former.from_checkpoint(run / "model.pt")
    assert not offline.config.query_propagation
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    online_lines = [r for r in lines if r["stage"] == "online"]
    assert [r["step"] for r in online_lines] == [1, 2, 3]
    assert all(r["teacher_objects"] > 0 and np.isfinite(r["loss_kd"]) for r in online_lines)
    # the propagation learned something (it starts at zero)
    assert float(student.decoder.propagate.weight.detach().abs().sum()) > 0
    again = train(cfg, data, videos, run, stages=["online"], progress=False, resume=True)["online"]
    assert again.skipped


def test_online_stage_needs_the_offline_model(tmp_path: Path):
    data = write_dataset(tmp_path)
    with pytest.raises(InputError, match="online stage distils"):
        train(tiny_config(max_iter=2), data, data.parent / "videos", tmp_path / "run", stages=["online"],
              progress=False)


def test_the_packaged_online_model_is_the_online_default():
    from s2d.infer import load_model
    from s2d.infer.weights import default_model_path

    if not default_model_path(online=True).is_file():
        pytest.fail("the online model is not installed in s2d/weights")
    online = load_model("default", "cpu", online=True)
    assert online.config.query_propagation
    assert not load_model("default", "cpu").config.query_propagation
    offline = VideoMask2Former.from_checkpoint(default_model_path(), "cpu")
    assert online.config.replace(query_propagation=False) == offline.config  # distilled from it
