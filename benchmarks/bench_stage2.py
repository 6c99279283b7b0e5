"""Stage-2 benchmark: keymask discovery on the shared DAVIS-2016 sequences (issue 5, "Measure").

Pipeline (default settings throughout, all 23 sequences unless ``--seqs`` is given):

1. Stage 1 once per sequence through the same code path ``s2d discover`` uses
   (``s2d.keymasks.run._single_frame_masks``), ``--workers`` processes with one thread each; the
   single-frame masks are saved as ``s2d masks``-style YTVIS JSON in ``WORK/masks/<key>.json``
   and their time is measured here.
2. Discovery with ``run_discovery(..., workers=--workers)`` and ``masks_from=WORK/masks`` (stage 1 is
   not recomputed); per-video outputs in ``WORK/discover/videos/*.json`` give tracker-prepare and
   discovery seconds.
3. Measuring against the GT (Annotations/480p/<seq>/*.png, any nonzero pixel = object; used only here).
   Frames with an empty GT are left out of every per-frame mean.

Metrics per sequence (means over the 23 sequences in the last row):

* ``sf J``: per frame the best IoU over that frame's single-frame masks (no mask = 0), mean over frames.
* best object: the discovered id whose keymasks have the largest summed IoU with the GT.
  ``km J (best)``: mean IoU of its keymasks on its keymask frames; ``sf J @ same``: single-frame best IoU
  on those same frames (the fair comparison).
  ``km J (any)``: per frame with any keymask, the best IoU over all keymasks of all objects;
  ``sf J @ same`` again for those frames.
* ``cov best`` / ``cov any``: fraction of GT frames with a keymask of the best object / of any object.
* ``id cons``: over the frames where some keymask has IoU > 0.5 with the GT, the fraction where the best
  such keymask belongs to the best object (1.0 = one id holds the object throughout);
  ``ids>0.5``: number of ids with at least one keymask of IoU > 0.5.
* seconds per 480p frame (per worker process, one thread each): stage 1, tracker prepare, discovery and
  their sum; plus the wall-clock seconds of the whole run divided by all frames (``--workers`` in parallel).

Usage::

    python benchmarks/bench_stage2.py --workers 2 --work /tmp/s2d_bench_stage2 \\
        --out benchmarks/results/stage2.md
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np

DATA = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016")


def _worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def stage1_one(source: str, rel: str, kind: str, out_path: str) -> dict:
    """Stage 1 for one sequence, written as YTVIS dataset JSON; returns timing."""
    from s2d.io.formats.ytvis import write_ytvis_dataset
    from s2d.keymasks.run import DiscoverSettings, VideoInput, _single_frame_masks

    video = VideoInput(source=source, rel=rel, kind=kind)
    t0 = time.perf_counter()
    vs = _single_frame_masks(video, DiscoverSettings(), False)
    # materialize (from_frames may be lazy) before stopping the clock
    n_masks = sum(1 for _ in vs.tracks)
    dt = time.perf_counter() - t0
    write_ytvis_dataset(out_path, [vs])
    rec = {"rel": rel, "stage1_s": dt, "frames": vs.num_frames, "masks": n_masks}
    Path(out_path + ".timing").write_text(json.dumps(rec))
    return rec


def load_gt(root: str, seq: str) -> np.ndarray:
    files = sorted(glob.glob(os.path.join(root, "Annotations/480p", seq, "*.png")))
    return np.stack([cv2.imread(f, cv2.IMREAD_GRAYSCALE) > 0 for f in files])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 0.0


def measure(seq: str, gt: np.ndarray, sf_path: Path, disc_path: Path) -> dict:
    from s2d import rle as R
    from s2d.io.formats.ytvis import read_ytvis

    T = gt.shape[0]
    valid = gt.reshape(T, -1).any(1)
    # (a) single-frame masks
    sf = read_ytvis(sf_path)[0]
    assert sf.num_frames == T, (seq, sf.num_frames, T)
    sf_best = np.zeros(T)
    sf_top = np.zeros(T)  # IoU of the top-scored mask: what stage 1 alone outputs (no GT used to choose)
    top_score = np.full(T, -np.inf)
    all_ious: List[float] = []
    for tr in sf.tracks:
        for t, m in enumerate(tr.masks):
            if m is not None and valid[t]:
                iou = _iou(R.decode(m), gt[t])
                sf_best[t] = max(sf_best[t], iou)
                all_ious.append(iou)
                if tr.score is not None and tr.score > top_score[t]:
                    top_score[t], sf_top[t] = tr.score, iou
    # keymasks
    rec = json.loads(disc_path.read_text())
    anns = rec["annotations"]
    ious: Dict[int, Dict[int, float]] = {}
    for k, a in enumerate(anns):
        oid = int(a.get("id", k + 1))
        d = {}
        for t, m in enumerate(a["segmentations"]):
            if m is not None and valid[t]:
                d[t] = _iou(R.decode(m), gt[t])
        ious[oid] = d
    nv = int(valid.sum())
    out = {"seq": seq, "frames": T, "gt_frames": nv, "objects": len(anns),
           "sf_J": float(sf_best[valid].mean()), "sf_top": float(sf_top[valid].mean()),
           "sf_avg": float(np.mean(all_ious)) if all_ious else float("nan")}
    if ious:
        best = max(ious, key=lambda o: (sum(ious[o].values()), -o))
        kb = ious[best]
    else:
        best, kb = None, {}
    any_frames = sorted({t for d in ious.values() for t in d})
    km_any = [max(d[t] for d in ious.values() if t in d) for t in any_frames]
    out.update({
        "best_id": best,
        "best_keymasks": len(kb),
        "km_J_best": float(np.mean(list(kb.values()))) if kb else float("nan"),
        "sf_J_at_best": float(np.mean([sf_best[t] for t in kb])) if kb else float("nan"),
        "sf_top_at_best": float(np.mean([sf_top[t] for t in kb])) if kb else float("nan"),
        "km_J_any": float(np.mean(km_any)) if km_any else float("nan"),
        "sf_J_at_any": float(np.mean([sf_best[t] for t in any_frames])) if any_frames else float("nan"),
        "cov_best": len(kb) / nv,
        "cov_any": len(any_frames) / nv,
    })
    # (d) identity consistency
    good = []
    for t in any_frames:
        cands = [(d[t], o) for o, d in ious.items() if t in d and d[t] > 0.5]
        if cands:
            good.append(max(cands)[1] == best)
    out["id_frames"] = len(good)
    out["id_cons"] = float(np.mean(good)) if good else float("nan")
    out["ids_gt50"] = sum(1 for d in ious.values() if any(v > 0.5 for v in d.values()))
    tm = rec["timings"]
    out["prepare_s"] = tm["tracker_prepare_s"]
    out["discovery_s"] = tm["discovery_s"]
    return out


def _fmt(v, nd=3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "nan" if np.isnan(v) else f"{v:.{nd}f}"
    return str(v)


def to_markdown(rows: List[dict], meta: dict) -> str:
    cols = [("seq", "seq"), ("frames", "T"), ("objects", "ids"), ("sf_avg", "sf J (avg)"),
            ("sf_top", "sf J (top)"), ("sf_J", "sf J (all)"),
            ("km_J_best", "km J (best id)"), ("sf_top_at_best", "sf top @ same"), ("sf_J_at_best", "sf J @ same"),
            ("km_J_any", "km J (any id)"),
            ("sf_J_at_any", "sf J @ same"), ("cov_best", "cov best"), ("cov_any", "cov any"),
            ("id_cons", "id cons"), ("ids_gt50", "ids>0.5"), ("s1_spf", "stage1 s/f"),
            ("prep_spf", "prepare s/f"), ("disc_spf", "discover s/f"), ("e2e_spf", "e2e s/f")]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |")
    num = [k for k, _ in cols if k not in ("seq",)]
    mean = {"seq": f"**mean ({len(rows)} seqs)**"}
    for k in num:
        vals = [r[k] for r in rows if r.get(k) is not None and not (isinstance(r[k], float) and np.isnan(r[k]))]
        mean[k] = float(np.mean(vals)) if vals else float("nan")
    lines.append("| " + " | ".join(_fmt(mean.get(k)) for k, _ in cols) + " |")
    # frame-weighted speeds
    F = sum(r["frames"] for r in rows)
    w = {k: sum(r[k] * r["frames"] for r in rows) / F for k in ("s1_spf", "prep_spf", "disc_spf", "e2e_spf")}
    lines.append("| **frame-weighted** | " + str(F) + " | " + " | ".join([""] * 13) + " | "
                 + " | ".join(_fmt(w[k]) for k in ("s1_spf", "prep_spf", "disc_spf", "e2e_spf")) + " |")
    return "\n".join(lines), mean, w


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--seqs", nargs="*", default=None, help="subset (default: all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default="/tmp/s2d_bench_stage2", help="outputs (never inside the repo)")
    ap.add_argument("--out", default=None, help="markdown report")
    ap.add_argument("--json", default=None, help="per-sequence rows as JSON")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the discovery outputs already in WORK (their stored timings are reported)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop starting new stage-1 sequences after this many seconds (shortest first then); "
                         "discovery and measuring run on the sequences done (reported as a subset)")
    a = ap.parse_args(argv)
    from s2d.keymasks.run import DiscoverSettings, collect_inputs, run_discovery

    work = Path(a.work)
    mdir, ddir = work / "masks", work / "discover"
    mdir.mkdir(parents=True, exist_ok=True)
    root, videos = collect_inputs([a.data], layout="davis")
    if a.seqs:
        videos = [v for v in videos if Path(v.rel).name in a.seqs]
    byname = {Path(v.rel).name: v for v in videos}
    nframes = {n: len(os.listdir(v.source)) for n, v in byname.items()}
    load = {"before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    t_all = time.perf_counter()

    # ---- stage 1 (once), longest first for balance; reuses finished files
    s1: Dict[str, dict] = {}
    todo = []
    for n, v in byname.items():
        p = mdir / f"{v.key}.json"
        if p.is_file() and Path(str(p) + ".timing").is_file():
            s1[n] = json.loads(Path(str(p) + ".timing").read_text())
        else:
            todo.append(n)
    # longest first balances the workers; with a budget, shortest first finishes the most sequences
    todo.sort(key=lambda n: (nframes[n] if a.budget_s else -nframes[n], n))
    t0 = time.perf_counter()
    ex = ProcessPoolExecutor(max_workers=a.workers, initializer=_worker_init)
    futs = {ex.submit(stage1_one, byname[n].source, byname[n].rel, byname[n].kind,
                      str(mdir / f"{byname[n].key}.json")): n for n in todo}
    pending = set(futs)
    while pending:
        timeout = None if a.budget_s in (None, float("inf")) else max(0.0, a.budget_s - (time.perf_counter() - t0))
        done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
        for f in done:
            n = futs[f]
            if f.cancelled():
                continue
            s1[n] = f.result()
            print(f"stage1 {n}: {s1[n]['stage1_s'] / s1[n]['frames']:.3f} s/frame "
                  f"({s1[n]['masks']} masks)", flush=True)
        if a.budget_s is not None and time.perf_counter() - t0 >= a.budget_s:
            for f in pending:
                f.cancel()
            pending = {f for f in pending if not f.cancelled()}
            a.budget_s = float("inf")  # the running ones finish; nothing new starts
    ex.shutdown(wait=True)
    stage1_wall = time.perf_counter() - t0
    skipped = sorted(set(byname) - set(s1))
    if skipped:
        print(f"stage 1 budget reached; left out: {skipped}", flush=True)
        videos = [v for v in videos if Path(v.rel).name in s1]
    load["after_stage1"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    # ---- discovery from the saved masks
    t0 = time.perf_counter()
    rep = run_discovery(videos, str(ddir), DiscoverSettings(masks_from=str(mdir)), root=root,
                        workers=a.workers, progress=False, resume=a.resume)
    disc_wall = time.perf_counter() - t0
    load["after_discovery"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"discovery: {rep}", flush=True)

    # ---- measure
    rows = []
    for n in sorted(s1):
        v = byname[n]
        dp = ddir / "videos" / f"{v.key}.json"
        if not dp.is_file():
            print(f"!! no discovery output for {n}", flush=True)
            continue
        r = measure(n, load_gt(a.data, n), mdir / f"{v.key}.json", dp)
        T = r["frames"]
        r["s1_spf"] = s1[n]["stage1_s"] / T
        r["prep_spf"] = r["prepare_s"] / T
        r["disc_spf"] = r["discovery_s"] / T
        r["e2e_spf"] = r["s1_spf"] + r["prep_spf"] + r["disc_spf"]
        rows.append(r)
        print(json.dumps(r), flush=True)
    total_wall = time.perf_counter() - t_all
    F = sum(r["frames"] for r in rows)
    table, mean, w = to_markdown(rows, {})
    cmd = "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))
    md = [
        "# Stage 2 — keymask discovery on DAVIS-2016 (issue 5)",
        "",
        f"Command: `{cmd}`",
        "",
        f"Sequences: {len(rows)} of {len(byname)} requested; frames: {F}; workers: {a.workers} "
        + (f"**Subset: stage-1 time budget reached; left out: {', '.join(skipped)}.** " if skipped else "")
        + "(one thread each); default settings (stage 1 `lite0`+motion, tracker `flow`, KeymaskConfig defaults).",
        "",
        "Load (`uptime`): " + "; ".join(f"{k}: `{v}`" for k, v in load.items()),
        "",
        f"Wall clock: stage 1 {stage1_wall:.0f} s (new sequences only), discovery {disc_wall:.0f} s, "
        f"whole run {total_wall:.0f} s → {(stage1_wall + disc_wall) / max(F, 1):.3f} s per frame of wall "
        f"clock with {a.workers} workers "
        f"(≈ {(stage1_wall + disc_wall) * a.workers / max(F, 1):.3f} s per frame per core).",
        "",
        table,
        "",
        "Columns: `sf J (avg)` mean IoU of all single-frame masks; `sf J (top)` IoU of each frame's top-scored",
        "single-frame mask (what stage 1 alone outputs, no GT used to choose), mean over GT frames; `sf J (all)` best",
        "single-frame mask IoU per frame (an oracle: the GT picks it), mean over GT frames; `km J (best id)` mean IoU of",
        "the keymasks of the id that best matches the GT (largest summed IoU) on its keymask frames, `sf top @ same`",
        "and `sf J @ same` the top-scored and the oracle single-frame masks on exactly those frames; `km J (any id)` per frame with any keymask the best keymask",
        "IoU over all ids, and `sf J @ same` on those frames; `cov` fraction of GT frames with a keymask (best id / any",
        "id); `id cons` over frames where some keymask has IoU > 0.5, fraction where the best one is the best id's;",
        "`ids>0.5` ids with a keymask of IoU > 0.5; s/f = seconds per 480p frame in one worker process (1 thread),",
        "e2e = stage 1 + prepare + discovery. nan = no keymask / no frame for that statistic (excluded from the mean).",
    ]
    text = "\n".join(md) + "\n"
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "mean": mean, "frame_weighted": w, "load": load,
                                            "stage1_wall_s": stage1_wall, "discovery_wall_s": disc_wall}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
