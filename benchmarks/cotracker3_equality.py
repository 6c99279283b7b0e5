#!/usr/bin/env python
"""Compare ``s2d.tracking.cotracker3`` with the official CoTracker3 offline predictor on the same inputs.

The official code (``facebookresearch/co-tracker``) runs in its own virtual environment and is never imported by
``s2d``. This one script plays two roles:

* the default **driver** role (the s2d venv) writes a random-weight checkpoint in the official layout
  (:func:`s2d.tracking.cotracker3_model.random_state_dict`, a pure function of ``--seed``), asks the official
  role for a second checkpoint made by the official constructor itself (its own initialisation,
  ``torch.manual_seed(seed)``), builds the cases, starts the official role in a subprocess, tracks the same
  cases with ``CoTracker3Tracker`` meanwhile, and prints the differences as a Markdown table;
* ``--role official`` (the official venv, the official sources on ``sys.path`` from ``--official-src``) runs
  ``cotracker.predictor.CoTrackerPredictor(checkpoint, offline=True, window_len=60)`` with
  ``backward_tracking=True`` on every case and writes tracks and visibility to one ``.npz`` per case (a rerun
  on the same inputs skips finished cases).

Cases (:func:`build_cases`): the tiny CI case, a synthetic textured square moving over a textured background,
and DAVIS-2016 clips (JPEG frames of ``--davis``, resized to 216×120), with queries on several frames (so the
backward pass runs), all queries on the first frame, the official constructor's own random weights, and a
``frame_range`` sub-clip (the official predictor then gets the sub-clip). ``--write-ref`` stores the tiny case
with its official outputs for ``tests/test_cotracker3.py``.

Usage (see benchmarks/results/cotracker3_equality.md)::

    python benchmarks/cotracker3_equality.py --official-python /work/cotracker_venv/bin/python \\
        --official-src /work/cotracker_src --work /tmp/ct3eq --write-ref tests/data/cotracker3_ref.npz
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

DAVIS = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis2016"


# --------------------------------------------------------------------------- official role


def official_role(args: argparse.Namespace) -> None:
    """Run the official predictor on every case of ``--cases``; write ``--out``."""
    import torch

    sys.path.insert(0, args.official_src)
    from cotracker.models.build_cotracker import build_cotracker
    from cotracker.predictor import CoTrackerPredictor

    if args.init_out:
        torch.manual_seed(args.seed)
        torch.save(build_cotracker(None, offline=True, window_len=60).state_dict(), args.init_out)
        return
    torch.set_num_threads(args.threads)
    cases = np.load(args.cases, allow_pickle=False)
    meta = json.loads(str(cases["meta"]))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictors: Dict[str, CoTrackerPredictor] = {}
    for case in meta:
        target = out_dir / f"{case['name']}.{case['key']}.npz"
        if target.exists():  # finished by an earlier run on the same inputs
            continue
        ckpt = case["checkpoint"]
        if ckpt not in predictors:
            predictors[ckpt] = CoTrackerPredictor(checkpoint=ckpt, offline=True, window_len=60)
        lo, hi = case["frame_range"]
        video = torch.from_numpy(cases[case["name"] + "/video"][lo:hi]).permute(0, 3, 1, 2)[None].float()
        queries = torch.from_numpy(cases[case["name"] + "/queries"]).float()[None]
        queries[..., 0] -= lo
        t0 = time.perf_counter()
        tracks, vis = predictors[ckpt](video, queries=queries, backward_tracking=True)
        secs = time.perf_counter() - t0
        np.savez(target, tracks=tracks[0].numpy(), visible=vis[0].numpy(), seconds=np.array(secs))
        print(f"official {case['name']}: {secs:.1f} s", flush=True)


# --------------------------------------------------------------------------- cases


def moving_square(t: int = 24, h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """``t×h×w×3`` uint8: a textured square (side ``h``·0.3) moving diagonally over a smooth textured background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.stack([128 + 60 * np.sin(xx / 7.0 + c) * np.cos(yy / 9.0 - c) for c in range(3)], axis=-1)
    side = max(4, int(0.3 * h))
    tex = rng.integers(0, 256, (side, side, 3))
    frames = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        f = bg.copy()
        y0 = (h // 10 + int(round(1.5 * i))) % (h - side)
        x0 = (w // 16 + int(round(3 * i))) % (w - side)
        f[y0:y0 + side, x0:x0 + side] = tex
        frames[i] = np.clip(f, 0, 255)
    return frames


def davis_clip(seq: str, start: int, length: int, size: tuple) -> np.ndarray:
    import cv2

    folder = DAVIS / "JPEGImages" / "480p" / seq
    names = sorted(folder.glob("*.jpg"))[start:start + length]
    out = [cv2.resize(cv2.imread(str(p))[:, :, ::-1], (size[1], size[0]), interpolation=cv2.INTER_AREA)
           for p in names]
    return np.ascontiguousarray(np.stack(out))


def random_queries(rng: np.random.Generator, n: int, t: int, h: int, w: int, frames: List[int]) -> np.ndarray:
    q = np.empty((n, 3), np.float32)
    q[:, 0] = rng.choice(frames, n)
    q[:, 1] = rng.uniform(0, w - 1, n)
    q[:, 2] = rng.uniform(0, h - 1, n)
    return q


def build_cases(random_ckpt: str, init_ckpt: str, davis: Path, seed: int) -> List[dict]:
    """The compared cases (cheapest first): ``name``, ``video``, ``queries``, ``frame_range``, ``checkpoint``."""
    rng = np.random.default_rng(17)
    sq = moving_square(16)
    cases = [dict(tiny_case(seed), checkpoint=random_ckpt),
             dict(name="square_mixed_frames", video=sq, queries=random_queries(rng, 30, 16, 96, 128, [0, 5, 10, 15])),
             dict(name="square_first_frame", video=sq[:12], queries=random_queries(rng, 20, 12, 96, 128, [0])),
             dict(name="square_official_init", video=sq[:12], queries=random_queries(rng, 20, 12, 96, 128, [0, 6]),
                  checkpoint=init_ckpt)]
    if (davis / "JPEGImages").is_dir():
        video = davis_clip("bmx-bumps", 0, 24, (120, 216))
        cases.append(dict(name="bmx-bumps_24f", video=video,
                          queries=random_queries(rng, 60, 24, 120, 216, [0, 8, 12, 23])))
        video = davis_clip("kite-walk", 0, 24, (120, 216))
        cases.append(dict(name="kite-walk_range_4_20", video=video,
                          queries=random_queries(rng, 30, 24, 120, 216, [4, 10, 19]), frame_range=(4, 20)))
    for c in cases:
        c.setdefault("checkpoint", random_ckpt)
        c.setdefault("frame_range", (0, len(c["video"])))
        digest = hashlib.sha1(c["video"].tobytes() + c["queries"].tobytes() + repr(c["frame_range"]).encode()
                              + Path(c["checkpoint"]).name.encode())
        c["key"] = digest.hexdigest()[:10]
    return cases


def save_cases(cases: List[dict], path: Path) -> None:
    arrays = {c["name"] + "/video": c["video"] for c in cases}
    arrays.update({c["name"] + "/queries": c["queries"] for c in cases})
    meta = [dict(name=c["name"], checkpoint=c["checkpoint"], frame_range=list(c["frame_range"]), key=c["key"])
            for c in cases]
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


# --------------------------------------------------------------------------- driver role


def ours(case: dict) -> tuple:
    """Our tracker on one case: ``(points T×N×2, visible T×N, seconds)`` over the case's frame range."""
    from s2d.tracking.cotracker3 import CoTracker3Tracker

    lo, hi = case["frame_range"]
    t0 = time.perf_counter()
    with CoTracker3Tracker(checkpoint=case["checkpoint"], device="cpu").prepare(list(case["video"])) as tr:
        res = tr.track(case["queries"], frame_range=tuple(case["frame_range"]))
    return res.points[lo:hi], res.visible[lo:hi], time.perf_counter() - t0


def ours_cached(case: dict, folder: Path) -> tuple:
    """:func:`ours`, kept in ``folder`` (one ``.npz`` per case) so that a rerun skips finished cases."""
    path = folder / f"{case['name']}.{case['key']}.npz"
    if not path.exists():
        pts, vis, secs = ours(case)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(path, points=pts, visible=vis, seconds=np.array(secs))
        print(f"ours {case['name']}: {secs:.1f} s", flush=True)
    d = np.load(path)
    return d["points"], d["visible"], float(d["seconds"])


def compare(case: dict, official: Dict[str, np.ndarray], ours_result: tuple) -> dict:
    pts, vis, secs = ours_result
    ref_pts, ref_vis = official["tracks"], official["visible"]
    row = dict(name=case["name"], frames=int(pts.shape[0]), points=int(pts.shape[1]),
               max_abs=float(np.abs(pts - ref_pts).max()), vis_agree=int((vis == ref_vis).sum()),
               vis_total=int(vis.size), visible_frac=float(ref_vis.mean()), ours_s=secs,
               official_s=float(official["seconds"]))
    print(f"{case['name']}: max |Δ| {row['max_abs']:.2e}, visibility {row['vis_agree']}/{row['vis_total']}", flush=True)
    return row


def table(rows: List[dict]) -> str:
    lines = ["| case | frames | queries | max abs Δ tracks (px) | visibility agreement | visible (official) "
             "| ours s | official s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['frames']} | {r['points']} | {r['max_abs']:.2e} | "
                     f"{r['vis_agree']}/{r['vis_total']} | {r['visible_frac']:.2f} | {r['ours_s']:.1f} | "
                     f"{r['official_s']:.1f} |")
    return "\n".join(lines)


def start_official(args: argparse.Namespace, *extra: str) -> subprocess.Popen:
    cmd = [args.official_python, os.path.abspath(__file__), "--role", "official", "--official-src",
           args.official_src, "--seed", str(args.seed), "--threads", str(args.threads), *extra]
    return subprocess.Popen(cmd)


def wait(proc: subprocess.Popen) -> None:
    if proc.wait() != 0:
        raise SystemExit(f"the official role failed (exit status {proc.returncode})")


def tiny_case(seed: int) -> dict:
    """The stored CI reference: 6 frames of 24×32, 10 queries on frames 0 and 3 (forward and backward passes)."""
    rng = np.random.default_rng(seed)
    video = moving_square(6, 24, 32, seed)
    q = random_queries(rng, 10, 6, 24, 32, [0, 3])
    return dict(name="tiny", video=video, queries=q, frame_range=(0, 6))


def driver_role(args: argparse.Namespace) -> None:
    """Official role in a subprocess while our tracker runs here; then the comparison per case."""
    import torch

    from s2d.tracking.cotracker3_model import random_state_dict

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    random_ckpt, init_ckpt = str(work / f"random_seed{args.seed}.pth"), str(work / f"official_init_seed{args.seed}.pth")
    torch.save(random_state_dict(args.seed), random_ckpt)
    if not Path(init_ckpt).exists():
        wait(start_official(args, "--init-out", init_ckpt))
    cases = build_cases(random_ckpt, init_ckpt, Path(args.davis), args.seed)
    if args.ref_only:
        cases = cases[:1]
    save_cases(cases, work / "cases.npz")
    official_proc = start_official(args, "--cases", str(work / "cases.npz"), "--out", str(work / "official"))
    mine = {c["name"]: ours_cached(c, work / "ours") for c in cases}
    wait(official_proc)
    rows = [compare(c, dict(np.load(work / "official" / f"{c['name']}.{c['key']}.npz")), mine[c["name"]])
            for c in cases]
    print("\n" + table(rows))
    print(f"\nall cases: max abs Δ {max(r['max_abs'] for r in rows):.2e} px, visibility "
          f"{sum(r['vis_agree'] for r in rows)}/{sum(r['vis_total'] for r in rows)} identical")
    if args.write_ref:
        tiny = cases[0]
        write_ref(Path(args.write_ref), args.seed, tiny,
                  dict(np.load(work / "official" / f"{tiny['name']}.{tiny['key']}.npz")))


def write_ref(path: Path, seed: int, case: dict, official: Dict[str, np.ndarray]) -> None:
    from s2d.tracking.cotracker3_model import random_state_dict

    state = random_state_dict(seed)
    checksum = np.array([float(state[k].double().sum()) for k in sorted(state)])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, seed=np.array(seed), video=case["video"], queries=case["queries"],
                        tracks=official["tracks"], visible=official["visible"], weight_sums=checksum)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", choices=("driver", "official"), default="driver")
    ap.add_argument("--official-src", required=True, help="folder holding the official 'cotracker' package")
    ap.add_argument("--official-python", default=sys.executable, help="python of the official venv")
    ap.add_argument("--work", default="/tmp/cotracker3_equality", help="scratch folder (checkpoints, cases)")
    ap.add_argument("--davis", default=str(DAVIS), help="DAVIS-2016 root (JPEGImages/480p/<seq>/)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write-ref", default=None, help="also store the tiny CI reference here (.npz)")
    ap.add_argument("--ref-only", action="store_true", help="only the tiny reference case")
    ap.add_argument("--cases", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)  # a folder: one .npz per case
    ap.add_argument("--init-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "official":
        official_role(args)
    else:
        driver_role(args)


if __name__ == "__main__":
    main()
