"""Tiny synthetic training data for the stage-3 tests: moving squares, sparse keymask labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np

from helpers import make_frame_folder, make_video
from s2d import rle as rle_utils

H, W, T = 48, 64, 9


def scene(seed: int, n: int = T) -> tuple:
    rng = np.random.default_rng(seed)
    bg = rng.integers(40, 90, size=(H, W, 3), dtype=np.uint8)
    frames, masks = [], [[], []]
    for t in range(n):
        f = bg.copy()
        for k, (y, x, c) in enumerate([(8, 4 + 3 * t, (230, 40, 40)), (26, 44 - 2 * t, (40, 220, 60))]):
            m = np.zeros((H, W), bool)
            m[y:y + 14, max(0, x):max(0, x + 14)] = True
            f[m] = c
            masks[k].append(m)
        frames.append(f)
    return frames, masks


def write_dataset(root: Path, *, with_video_file: bool = True) -> Path:
    """``root/videos/{a (frame folder), b.mp4}`` + ``root/pseudo_labels.json``; returns the JSON path.

    Video a: object 1 labelled on frames 0,1,2 and 6 (one 3-frame window), object 2 on 0,3,6.
    Video b: both objects on every 3rd frame only (no window → the ±20 fallback).
    """
    vids: List[Dict] = []
    anns: List[Dict] = []
    specs = [("a", "folder", [[0, 1, 2, 6], [0, 3, 6]])]
    if with_video_file:
        specs.append(("b.mp4", "video", [[0, 3, 6], [0, 3, 6]]))
    for vid_id, (rel, kind, labelled) in enumerate(specs, 1):
        frames, masks = scene(vid_id)
        if kind == "folder":
            make_frame_folder(root / "videos" / rel, frames)
            names = [f"{rel}/{i:05d}.png" for i in range(T)]
        else:
            make_video(root / "videos" / rel, frames, fps=10)
            names = [f"{rel}/{i:05d}" for i in range(T)]
        vids.append({"id": vid_id, "name": rel, "source": rel, "source_kind": kind, "length": T,
                     "height": H, "width": W, "file_names": names})
        for k, frames_k in enumerate(labelled):
            segs = [rle_utils.encode(masks[k][t]) if t in frames_k else None for t in range(T)]
            anns.append({"id": len(anns) + 1, "video_id": vid_id, "category_id": 1, "iscrowd": 0,
                         "segmentations": segs})
    data = {"info": {}, "videos": vids, "annotations": anns,
            "categories": [{"id": 1, "name": "object", "supercategory": "object"}]}
    p = root / "pseudo_labels.json"
    p.write_text(json.dumps(data))
    return p


def tiny_config(**solver):
    from s2d.train import train_preset

    import dataclasses

    cfg = train_preset("tiny")
    return dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, **solver))


def dense_ddp_config(cfg):
    """``cfg`` with one short self-distillation round whose dense labels keep every prediction."""
    import dataclasses

    return dataclasses.replace(cfg, self_distill_rounds=1,
                               solver=dataclasses.replace(cfg.solver, self_distill_iter=1),
                               dense=dataclasses.replace(cfg.dense, score_threshold=0.0, min_area=1))


def ddp_worker(rank: int, world: int, port: int, data: str, videos: str, run: str, out: str) -> None:
    import os

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    from s2d.train import load_train_config, train

    # as under torchrun: train() initialises the group from the environment; it lives until exit, so a
    # second train() call in the same process reuses it
    try:
        import dataclasses

        cfg = dataclasses.replace(tiny_config(max_iter=3), checkpoint_every=3)
        res = train(cfg, data, videos, run, stages=["distill"], device="cpu", progress=False)
        torch.save({k: v.detach().clone() for k, v in res["distill"].student.state_dict().items()},
                   os.path.join(out, f"rank{rank}.pt"))
        # self-distillation: the dense labelset is labelled in shards, one per rank, and joined by rank 0
        train(dense_ddp_config(cfg), data, videos, run, stages=["self-distill"], device="cpu", progress=False)
        # resumed, every rank finds both stages finished and the dense labels there: nothing is redone
        again = train(dense_ddp_config(cfg), data, videos, run, resume=True, device="cpu", progress=False)
        with open(os.path.join(out, f"resume_rank{rank}.txt"), "w") as f:
            f.write(" ".join(f"{k}={v.skipped}" for k, v in again.items()))
        # ranks that see different run folders: a one-line error on every rank, not one rank waiting forever
        from s2d.errors import SettingError

        try:
            train(cfg, data, videos, run if rank == 0 else run + "_elsewhere", resume=True, stages=["distill"],
                  device="cpu", progress=False)
            msg = "no error"
        except SettingError as e:
            msg = str(e)
        with open(os.path.join(out, f"disagree_rank{rank}.txt"), "w") as f:
            f.write(msg)
        # objectness loss off (reference S2D configs): the class head gets no gradient → find_unused_parameters
        cfg0 = load_train_config(cfg, ["model.loss.class_weight=0", "solver.max_iter=2"])
        res0 = train(cfg0, data, videos, run + "_cw0", stages=["distill"], device="cpu", progress=False)
        torch.save({k: v.detach().clone() for k, v in res0["distill"].student.state_dict().items()},
                   os.path.join(out, f"cw0_rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
