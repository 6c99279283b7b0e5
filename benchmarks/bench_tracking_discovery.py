"""Keymask discovery driven by the flow tracker on DAVIS-2016: speed and identity coherence.

    python benchmarks/bench_tracking_discovery.py [SEQ ... | all] [--set key=value ...]

Stand-in for stage 1: on every frame the GT mask plus two random ellipses (distractors that change
every frame), i.e. ~3 single-frame masks per frame. Reports prepare and discovery seconds per frame,
and how the GT masks end up: in how many discovered objects (1 is ideal) and the share of frames of
the best of those objects ("best-object GT coverage"). The summary also counts sequences whose GT
masks end up in no object (the mean "objects holding GT" counts them as 0, which flatters a tracker
that loses objects) and sequences split into more than one object. ``--set`` overrides FlowTrackerConfig fields,
e.g. ``--set reacquire_tol_px=1.0 --set boundary_alpha=None``.
"""

from __future__ import annotations

import argparse
import ast
import os
import time
from pathlib import Path

import cv2
import numpy as np

from bench_tracking import all_seqs, load_gt
from s2d.keymasks import discover_keymasks
from s2d.tracking import build_tracker
from s2d.types import Track, VideoSegmentation

DEFAULT_SEQS = "kite-walk dance-jump boat breakdance-flare horsejump-low rollerblade surf tennis".split()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("seqs", nargs="*", default=DEFAULT_SEQS)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016"))
    ap.add_argument("--set", action="append", default=[], help="FlowTrackerConfig field=value")
    a = ap.parse_args()
    if a.seqs == ["all"]:
        a.seqs = all_seqs(a.data)
    kw = {}
    for item in a.set:
        k, v = item.split("=", 1)
        kw[k] = ast.literal_eval(v)
    summary = []
    for seq in a.seqs:
        gt = load_gt(a.data, seq)
        T, H, W = gt.shape
        rng = np.random.default_rng(0)
        tracks, gtids = [], set()
        for t in range(T):
            masks = [gt[t]]
            for _ in range(2):
                m = np.zeros((H, W), np.uint8)
                c = (int(rng.integers(100, W - 100)), int(rng.integers(80, H - 80)))
                axes = (int(rng.integers(30, 90)), int(rng.integers(30, 90)))
                cv2.ellipse(m, c, axes, 0, 0, 360, 1, -1)
                masks.append(m.astype(bool))
            for j, m in enumerate(masks):
                if m.any():
                    seq_masks = [None] * T
                    seq_masks[t] = m
                    tracks.append(Track(len(tracks) + 1, seq_masks, 0.5))
                    if j == 0:
                        gtids.add(len(tracks))
        video = VideoSegmentation(H, W, T, tracks)
        t0 = time.perf_counter()
        tr = build_tracker("flow", **kw).prepare(os.path.join(a.data, "JPEGImages/480p", seq))
        t1 = time.perf_counter()
        res = discover_keymasks(video, tr)
        t2 = time.perf_counter()
        tr.close()
        g = [sum(1 for i in o.mask_indices if res.masks[i].track_id in gtids) for o in res.objects]
        g = [x for x in g if x]
        summary.append((len(g), max(g) / T if g else 0.0, (t1 - t0) / T, (t2 - t1) / T))
        print(f"{seq:18s} T={T:3d} masks={len(tracks)} prepare {(t1 - t0) / T:.3f} s/frame, discovery "
              f"{(t2 - t1) / T:.3f} s/frame ({res.diagnostics['tracker_calls']} tracker calls), objects "
              f"{len(res.objects)}, GT masks per object {g}")
    s = np.array(summary)
    found = s[:, 0] > 0
    mean_found = s[found, 0].mean() if found.any() else float("nan")
    print(f"settings {kw or 'defaults'}: mean objects holding GT {s[:, 0].mean():.2f} (over the "
          f"{int(found.sum())} sequences where any does: {mean_found:.2f}; "
          f"GT in no object: {int((~found).sum())}, split into >1: {int((s[:, 0] > 1).sum())}), "
          f"best-object GT coverage {s[:, 1].mean():.3f}, prepare {s[:, 2].mean():.3f} s/frame, "
          f"discovery {s[:, 3].mean():.3f} s/frame")


if __name__ == "__main__":
    main()
