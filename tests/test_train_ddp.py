"""A 2-process gloo DDP run of the tiny model gives the same weights on both ranks."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from train_synth import ddp_worker, write_dataset


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
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3                                           # one writer
    c0, c1 = (torch.load(out / f"cw0_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(c0[k], c1[k]) for k in c0)
