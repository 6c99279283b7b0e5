"""Point-tracker visibility / position quality on DAVIS-2016, measured the way keymask discovery uses it.

    python benchmarks/bench_tracking.py [--seqs all|bmx-bumps,boat,...] [--every 10]
        [--config NAME=JSON ...] [--data ../shared/data/davis2016]

``--config`` (repeatable) names a FlowTracker variant: a JSON object of :class:`FlowTrackerConfig` fields,
``flow`` fields (:class:`FlowConfig`) may be given at the top level too, e.g.
``--config 'new={}' --config 'strict={"fb_alpha":0.01,"fb_beta":0.5,"boundary_alpha":0.01}'``. ``lk`` as
the JSON value (``--config lk=lk``) runs the Lucas-Kanade backend. Default: ``legacy`` (the settings before
the tracking-robustness work) and ``default`` (the current defaults). All variants of a sequence share
one DIS computation when their DIS settings agree (an in-memory flow cache; the consistency masks are
recomputed per variant).

Protocol, per sequence: query frames ``0, every, 2·every, ...``; on each, the 50×50 discovery grid
(:func:`s2d.keymasks.grid.grid_points`, CoTracker's 384×512 model grid) split into *object* points (inside
the GT mask of the query frame) and *background* points (outside it); one ``track()`` call per query frame
with both sets, through the whole video. On every other frame ``t`` with a non-empty GT mask:

* ``vis``    — object points marked visible (the GT object is there on nearly all DAVIS-2016 frames, so
  this is a visibility *recall*);
* ``γ-rec``  — share of frames where γ_t = mean object-point visibility > 0.3 (what discovery thresholds);
* ``prec``   — visible object points whose rounded position lies inside GT_t (position precision);
* ``pos-in`` — *all* object points (visible or not) inside GT_t — propagate-and-match ignores visibility;
* ``bg-vis`` / ``bg-prec`` — background points visible / visible background points outside GT_t
  (``bg-γ`` = share of frames where the background's γ_t > 0.3);
* time: ``prep`` s per frame (DIS + masks; the DIS part is timed once per DIS setting), ``track`` s per
  call (≈2 500 points).

Per-sequence values are means over (query frame, frame) pairs; the summary is the mean over sequences.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from s2d.features.flow import FlowConfig, FlowPair, compute_flow, prepare_gray
from s2d.io.video import open_video
from s2d.keymasks.grid import grid_points
from s2d.tracking import build_tracker
from s2d.tracking.flow import FlowTrackerConfig

#: The FlowTracker settings before this benchmark was written (for before/after in one run).
LEGACY = {"fb_alpha": 0.01, "fb_beta": 0.5, "boundary_alpha": 0.01, "boundary_beta": 0.002,
          "reacquire_frames": 1, "reacquire_tol_px": 2.0, "reacquire_tol_rel": 0.5}
_LEGACY_NEW_FIELDS = {"occlusion_window": 0, "lost_follow_flow": False}  # set only if they exist

METRICS = ("vis", "grec", "prec", "posin", "bgvis", "bggrec", "bgprec", "prep", "track")
HEAD = ("vis", "γ-rec", "prec", "pos-in", "bg-vis", "bg-γ", "bg-prec", "prep s/f", "track s")


def all_seqs(root: str) -> list:
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, "JPEGImages/480p", "*")))


def load_gt(root: str, seq: str) -> np.ndarray:
    files = sorted(glob.glob(os.path.join(root, "Annotations/480p", seq, "*.png")))
    return np.stack([cv2.imread(f, cv2.IMREAD_GRAYSCALE) > 0 for f in files])


class MemoryFlows:
    """Duck-typed :class:`s2d.features.flow.FlowCache`: raw DIS flows of one video in RAM; ``get`` builds
    the :class:`FlowPair` (consistency masks) with whatever ``cfg`` the tracker using it sets."""

    def __init__(self, root: str, seq: str, cfg: FlowConfig) -> None:
        t0 = time.perf_counter()
        self.size: Optional[Tuple[int, int]] = None
        self.flows: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]] = {}
        prev = None
        for fr in open_video(os.path.join(root, "JPEGImages/480p", seq), max_side=cfg.max_side):
            g = prepare_gray(fr.rgb, cfg)
            if prev is not None:
                self.flows[(prev[0], fr.index)] = (compute_flow(prev[1], g, cfg), compute_flow(g, prev[1], cfg))
            prev = (fr.index, g)
        self.n = len(self.flows) + 1
        self.dis_s = time.perf_counter() - t0  # decode + DIS for the whole video
        self.cfg = cfg

    def get(self, t0: int, t1: int, size=None) -> Optional[FlowPair]:
        f = self.flows.get((t0, t1))
        return None if f is None else FlowPair.from_flows(f[0], f[1], size or f[0].shape[:2], self.cfg, t0, t1)

    def put(self, *a) -> None:  # never called: every pair is present
        raise AssertionError("MemoryFlows miss")


def make_config(spec: dict) -> FlowTrackerConfig:
    names = {f.name for f in fields(FlowTrackerConfig)}
    fnames = {f.name for f in fields(FlowConfig)}
    flow = dict(spec.get("flow", {}))
    kw = {}
    for k, v in spec.items():
        if k == "flow":
            continue
        if k in names:
            kw[k] = v
        elif k in fnames:
            flow[k] = v
        else:
            raise SystemExit(f"unknown setting {k!r}")
    return FlowTrackerConfig(flow=FlowConfig(**flow), **kw)


def evaluate(res_pts: np.ndarray, res_vis: np.ndarray, gt: np.ndarray, qt: int, obj: np.ndarray) -> dict:
    T, H, W = gt.shape
    frames = np.array([t for t in range(T) if t != qt and gt[t].any()])
    pts = np.round(res_pts[frames]).astype(np.int64)
    vis = res_vis[frames]
    okb = (pts[..., 0] >= 0) & (pts[..., 0] < W) & (pts[..., 1] >= 0) & (pts[..., 1] < H)
    okb &= np.isfinite(res_pts[frames]).all(axis=2)
    inm = np.zeros(vis.shape, bool)
    tt = np.broadcast_to(frames[:, None], vis.shape)
    inm[okb] = gt[tt[okb], pts[..., 1][okb], pts[..., 0][okb]]
    out = {}
    for tag, sel in (("", obj), ("bg", ~obj)):
        if not sel.any():
            continue
        v, m = vis[:, sel], inm[:, sel]
        out[tag + "vis"] = v.mean()
        out[tag + "grec"] = (v.mean(axis=1) > 0.3).mean()
        if tag == "":
            out["prec"] = m[v].mean() if v.any() else np.nan
            out["posin"] = m.mean()
        else:
            out["bgprec"] = (~m[v]).mean() if v.any() else np.nan
    return out


def run_seq(root: str, seq: str, configs: Dict[str, object], every: int,
            flows_cache: Dict[tuple, MemoryFlows]) -> Dict[str, dict]:
    gt = load_gt(root, seq)
    T = gt.shape[0]
    qts = [t for t in range(0, T, every) if gt[t].any()]
    out = {}
    for name, cfg in configs.items():
        acc = {k: [] for k in METRICS[:-2]}
        if cfg == "lk":
            t0 = time.perf_counter()
            tr = build_tracker("lk").prepare(os.path.join(root, "JPEGImages/480p", seq))
            prep = (time.perf_counter() - t0) / T
        else:
            fc = cfg.flow
            key = (seq, fc.preset, fc.max_side, fc.finest_scale, fc.variational_refinement)
            if key not in flows_cache:
                flows_cache.clear()
                flows_cache[key] = MemoryFlows(root, seq, fc)
            mem = flows_cache[key]
            mem.cfg = fc
            tr = build_tracker("flow", config=cfg)
            t0 = time.perf_counter()
            tr.prepare(os.path.join(root, "JPEGImages/480p", seq), flow_cache=mem)
            prep = (time.perf_counter() - t0 + mem.dis_s) / T
        tt = []
        for qt in qts:
            obj_p = grid_points(gt[qt], 50)
            bg_p = grid_points(~gt[qt], 50)
            P = np.concatenate([obj_p, bg_p])
            q = np.concatenate([np.full((len(P), 1), qt), P], 1)
            t0 = time.perf_counter()
            res = tr.track(q)
            tt.append(time.perf_counter() - t0)
            obj = np.arange(len(P)) < len(obj_p)
            for k, v in evaluate(res.points, res.visible, gt, qt, obj).items():
                acc[k].append(v)
        tr.close()
        r = {k: float(np.nanmean(v)) if v else float("nan") for k, v in acc.items()}
        r.update(prep=prep, track=float(np.mean(tt)))
        out[name] = r
    return out


def fmt_row(label: str, r: dict) -> str:
    vals = [f"{r[k]:.3f}" for k in METRICS[:-2]] + [f"{r['prep']:.3f}", f"{r['track']:.3f}"]
    return f"| {label} | " + " | ".join(vals) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016"))
    ap.add_argument("--seqs", default="all")
    ap.add_argument("--every", type=int, default=10, help="query every N-th frame (default 10)")
    ap.add_argument("--config", action="append", default=[], metavar="NAME=JSON")
    ap.add_argument("--per-seq", action="store_true", help="print the per-sequence table too")
    a = ap.parse_args()
    seqs = all_seqs(a.data) if a.seqs == "all" else a.seqs.split(",")
    specs = a.config or ["legacy=" + json.dumps({**LEGACY, **_legacy_extra()}), "default={}"]
    configs: Dict[str, object] = {}
    for s in specs:
        name, js = s.split("=", 1)
        configs[name] = "lk" if js.strip() == "lk" else make_config(json.loads(js))
    for name, c in configs.items():
        print(f"# {name}: {c if c == 'lk' else json.dumps(c.to_dict(), default=str)}", flush=True)
    flows_cache: Dict[tuple, MemoryFlows] = {}
    rows: Dict[str, Dict[str, dict]] = {n: {} for n in configs}
    for seq in seqs:
        r = run_seq(a.data, seq, configs, a.every, flows_cache)
        for n in configs:
            rows[n][seq] = r[n]
            print(f"{seq:18s} {n:12s} " + " ".join(f"{k}={r[n][k]:.3f}" for k in METRICS), flush=True)
    hdr = "| | " + " | ".join(HEAD) + " |\n|" + "---|" * (len(HEAD) + 1)
    if a.per_seq:
        for n in configs:
            print(f"\n{n}\n{hdr}")
            for seq in seqs:
                print(fmt_row(seq, rows[n][seq]))
    print(f"\nmean over {len(seqs)} sequences (query every {a.every} frames)\n{hdr}")
    for n in configs:
        print(fmt_row(n, {k: float(np.nanmean([rows[n][s][k] for s in seqs])) for k in METRICS}))
        worst = min(seqs, key=lambda s: rows[n][s]["grec"])
        print(f"|   worst γ-rec: {worst} {rows[n][worst]['grec']:.3f} |")


def _legacy_extra() -> dict:
    names = {f.name for f in fields(FlowTrackerConfig)}
    return {k: v for k, v in _LEGACY_NEW_FIELDS.items() if k in names}


if __name__ == "__main__":
    main()
