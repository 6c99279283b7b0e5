"""Point-tracker speed and a GT-mask proxy of accuracy on DAVIS-2016 sequences.

    /work/venv/bin/python benchmarks/bench_tracking.py [--seqs bmx-bumps,boat,...] [--backends flow,lk]
        [--points 2500] [--data /work/shared/data/davis2016] [flow-tracker settings, see --help]

Per sequence and backend: prepare seconds per frame; ``track()`` seconds for ~N query points (grid inside
and outside the GT object) from the middle frame through the whole video; proxy accuracy from the GT
masks: *in-mask* = share of visible object points (query inside the eroded GT mask) that lie inside the
GT mask on the other frames; *leak* = share of visible background points (query ≥ 15 px from the object)
that lie inside the GT mask elsewhere (drag onto the object); *vis* = mean visibility of object points.
"""

from __future__ import annotations

import argparse
import glob
import os
import time

import cv2
import numpy as np

from s2d.features.flow import FlowConfig
from s2d.tracking import build_tracker
from s2d.tracking.flow import FlowTrackerConfig


def load_gt(root: str, seq: str) -> np.ndarray:
    files = sorted(glob.glob(os.path.join(root, "Annotations/480p", seq, "*.png")))
    return np.stack([cv2.imread(f, cv2.IMREAD_GRAYSCALE) > 0 for f in files])


def run(root: str, seq: str, backend: str, n_points: int, flow_kw: dict, trk_kw: dict) -> dict:
    gt = load_gt(root, seq)
    T, H, W = gt.shape
    kw = {"config": FlowTrackerConfig(flow=FlowConfig(**flow_kw), **trk_kw)} if backend == "flow" else {}
    tr = build_tracker(backend, **kw)
    t0 = time.perf_counter()
    tr.prepare(os.path.join(root, "JPEGImages/480p", seq))
    prep = (time.perf_counter() - t0) / T
    qt = T // 2
    side = int(np.sqrt(n_points))
    xs, ys = np.meshgrid(np.linspace(8, W - 9, side), np.linspace(8, H - 9, side))
    P = np.stack([xs.ravel(), ys.ravel()], 1)
    q = np.concatenate([np.full((len(P), 1), qt), P], 1)
    t0 = time.perf_counter()
    res = tr.track(q)
    dt = time.perf_counter() - t0
    tr.close()
    k = np.ones((31, 31), np.uint8)
    inner = cv2.erode(gt[qt].astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    far = ~cv2.dilate(gt[qt].astype(np.uint8), k).astype(bool)
    pi = np.round(P).astype(int)
    obj = inner[pi[:, 1], pi[:, 0]]
    bg = far[pi[:, 1], pi[:, 0]]
    pts = np.round(res.points).astype(int)
    ok = (pts[..., 0] >= 0) & (pts[..., 0] < W) & (pts[..., 1] >= 0) & (pts[..., 1] < H)
    inm = np.zeros(ok.shape, bool)
    tt = np.broadcast_to(np.arange(T)[:, None], ok.shape)
    inm[ok] = gt[tt[ok], pts[..., 1][ok], pts[..., 0][ok]]
    others = np.arange(T) != qt
    vo = res.visible[others][:, obj]
    vb = res.visible[others][:, bg]
    return dict(prep=prep, track=dt, n=len(P), T=T,
                inmask=float(inm[others][:, obj][vo].mean()) if vo.any() else float("nan"),
                leak=float(inm[others][:, bg][vb].mean()) if vb.any() else float("nan"),
                vis=float(vo.mean()) if vo.size else float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data/davis2016")
    ap.add_argument("--seqs", default="bmx-bumps,boat,dance-jump,kite-walk,soccerball")
    ap.add_argument("--backends", default="flow")
    ap.add_argument("--points", type=int, default=2500)
    ap.add_argument("--finest-scale", type=int, default=None)
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--preset", default="medium")
    d = FlowTrackerConfig()
    ap.add_argument("--boundary-alpha", type=float, default=d.boundary_alpha, help="negative = off")
    ap.add_argument("--boundary-beta", type=float, default=d.boundary_beta)
    ap.add_argument("--tol-px", type=float, default=d.reacquire_tol_px)
    ap.add_argument("--tol-rel", type=float, default=d.reacquire_tol_rel)
    a = ap.parse_args()
    trk_kw = dict(boundary_alpha=None if a.boundary_alpha < 0 else a.boundary_alpha, boundary_beta=a.boundary_beta,
                  reacquire_tol_px=a.tol_px, reacquire_tol_rel=a.tol_rel)
    flow_kw = dict(finest_scale=a.finest_scale, max_side=a.max_side, preset=a.preset)
    print(f"flow settings {flow_kw} {trk_kw}")
    for backend in a.backends.split(","):
        rows = []
        for seq in a.seqs.split(","):
            r = run(a.data, seq, backend, a.points, flow_kw, trk_kw)
            rows.append(r)
            print(f"{backend:5s} {seq:18s} T={r['T']:3d} prepare {r['prep'] * 1e3:6.1f} ms/frame  track({r['n']} pts) "
                  f"{r['track']:6.3f} s  in-mask {r['inmask']:.3f} leak {r['leak']:.3f} vis {r['vis']:.3f}")
        m = {k: np.nanmean([r[k] for r in rows]) for k in ("prep", "track", "inmask", "leak", "vis")}
        print(f"{backend:5s} {'MEAN':18s}       prepare {m['prep'] * 1e3:6.1f} ms/frame  track "
              f"{m['track']:6.3f} s  in-mask {m['inmask']:.3f} leak {m['leak']:.3f} vis {m['vis']:.3f}")


if __name__ == "__main__":
    main()
