"""A 2-process gloo DDP run of the tiny model gives the same weights on both ranks, and its sharded dense labelset
equals the one-process labelset."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from train_synth import ddp_worker, dense_ddp_config, tiny_config, write_dataset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # over ~20 s: the second CI step (pytest -m slow)
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="gloo backend unavailable")
def test_ddp_two_ranks_same_weights(tmp_path: Path):
    data = write_dataset(tmp_path, with_video_file=False)
    out = tmp_path / "out"
    out.mkdir()
    run = tmp_path / "run"
    mp.spawn(ddp_worker, args=(2, _free_port(), str(data), str(tmp_path / "videos"), str(run), str(out)),
             nprocs=2, join=True)
    w0 = torch.load(out / "rank0.pt", weights_only=True)
    w1 = torch.load(out / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    ck = torch.load(run / "distill" / "last.pt", weights_only=True)   # only rank 0 writes
    assert ck["step"] == 3
    for k in w0:
        assert torch.equal(ck["model"][k], w0[k]), k
    stages = [json.loads(x)["stage"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert stages == ["distill"] * 3 + ["self-distill"]               # one writer
    c0, c1 = (torch.load(out / f"cw0_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(c0[k], c1[k]) for k in c0)
    # the dense labelset the two ranks labelled in shards equals the one-process labelset of the same teacher
    from s2d.model import VideoMask2Former
    from s2d.train.dense import build_dense_labelset

    teacher = VideoMask2Former.from_checkpoint(run / "distill" / "model.pt").eval()
    one = build_dense_labelset(teacher, data, tmp_path / "videos", tmp_path / "one.json",
                               dense_ddp_config(tiny_config(max_iter=3)).dense, progress=False)
    assert (run / "dense_labels.json").read_bytes() == one.read_bytes()
    assert (run / "self-distill" / "model.pt").is_file()
    # after a resume both ranks agree that every stage is done (and neither relabels nor retrains)
    for r in (0, 1):
        assert (out / f"resume_rank{r}.txt").read_text() == "distill=True self-distill=True"
    # ranks that see different run folders both stop with the same kind of one-line error
    for r in (0, 1):
        msg = (out / f"disagree_rank{r}.txt").read_text()
        assert "ranks disagree" in msg and "last.pt exists" in msg and "\n" not in msg, msg
