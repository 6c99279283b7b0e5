#!/usr/bin/env python
"""CPU speed of the CoTracker3 backend vs the flow tracker on one DAVIS clip, in one run.

Both trackers get the same frames (``--frames`` frames of a 480p DAVIS-2016 sequence at full size) and the same
``--points`` queries (a grid over the frame, on the middle frame, so the CoTracker3 backend runs its forward and
its time-reversed pass, as keymask discovery does for every frame after the first). Weights: random, in the
official layout (:func:`s2d.tracking.cotracker3_model.random_state_dict`; the cost does not depend on their
values). Reports wall and process-CPU seconds of ``prepare`` and ``track``, per frame.

Usage (see benchmarks/results/cotracker3_speed.md)::

    python benchmarks/cotracker3_speed.py --seq bmx-bumps --frames 24 --points 500 --threads 1
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

DAVIS = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis2016"


def load_frames(root: Path, seq: str, n: int) -> list:
    import cv2

    paths = sorted((root / "JPEGImages" / "480p" / seq).glob("*.jpg"))[:n]
    return [np.ascontiguousarray(cv2.imread(str(p))[:, :, ::-1]) for p in paths]


def grid_queries(n: int, frame: int, h: int, w: int) -> np.ndarray:
    side = int(np.ceil(np.sqrt(n)))
    ys, xs = np.meshgrid(np.linspace(8, h - 9, side), np.linspace(8, w - 9, side), indexing="ij")
    q = np.stack([np.full(side * side, frame, float), xs.ravel(), ys.ravel()], axis=1)
    return q[:n]


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def run(name: str, tracker, frames: list, queries: np.ndarray) -> dict:
    _, pw, pc = timed(lambda: tracker.prepare(frames))
    res, tw, tc = timed(lambda: tracker.track(queries))
    tracker.close()
    t = len(frames)
    row = dict(name=name, prepare_wall=pw, prepare_cpu=pc, track_wall=tw, track_cpu=tc,
               per_frame_wall=(pw + tw) / t, per_frame_cpu=(pc + tc) / t, visible=float(res.visible.mean()))
    print(f"{name}: prepare {pw:.1f} s wall / {pc:.1f} s CPU, track {tw:.1f} s / {tc:.1f} s; "
          f"{row['per_frame_wall']:.2f} s/frame wall, {row['per_frame_cpu']:.2f} s/frame CPU", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--davis", default=str(DAVIS))
    ap.add_argument("--seq", default="bmx-bumps")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--points", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (default 1)")
    ap.add_argument("--checkpoint", default=None, help="weights (default: random, official layout)")
    args = ap.parse_args()

    import cv2
    import torch

    from s2d.tracking import build_tracker
    from s2d.tracking.cotracker3_model import random_state_dict

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    frames = load_frames(Path(args.davis), args.seq, args.frames)
    h, w = frames[0].shape[:2]
    queries = grid_queries(args.points, len(frames) // 2, h, w)
    print(f"{args.seq}: {len(frames)} frames of {w}×{h}, {len(queries)} queries on frame {len(frames) // 2}, "
          f"{args.threads} thread(s), load {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = os.path.join(tmp, "random.pth")
            torch.save(random_state_dict(0), ckpt)
        rows = [run("flow", build_tracker("flow"), frames, queries),
                run("cotracker3", build_tracker("cotracker3", checkpoint=ckpt, device="cpu"), frames, queries)]
    print(f"load after: {os.getloadavg()[0]:.1f}")
    print("\n| tracker | prepare wall / CPU s | track wall / CPU s | s per frame (wall) | s per frame (CPU) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['prepare_wall']:.1f} / {r['prepare_cpu']:.1f} | {r['track_wall']:.1f} / "
              f"{r['track_cpu']:.1f} | {r['per_frame_wall']:.2f} | {r['per_frame_cpu']:.2f} |")


if __name__ == "__main__":
    main()
