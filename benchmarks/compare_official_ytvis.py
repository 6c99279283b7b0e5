"""Check ``s2d.eval.ytvis`` against the official YouTube-VIS scorer on random inputs.

The official scorer is the ``youtubevos/cocoapi`` fork. It installs as ``pycocotools`` and would
shadow the real package, so it runs in its own virtual environment: this script generates the
cases, then calls itself there (``--worker``) to score them with the official code, scores them
with s2d here, and reports the largest difference per statistic.

Set-up of the official side (nothing of it lives in this repository)::

    python3 -m venv /work/official_ytvis_venv
    /work/official_ytvis_venv/bin/pip install "numpy==1.23.5" "cython<3" "matplotlib<3.8" setuptools wheel
    git --git-dir=<fetched youtubevos/cocoapi> archive HEAD PythonAPI common | tar -x -C /work/official_ytvis_src
    cd /work/official_ytvis_src/PythonAPI && /work/official_ytvis_venv/bin/python setup.py build_ext --inplace

Run::

    python benchmarks/compare_official_ytvis.py \\
        --official /work/official_ytvis_src/PythonAPI \\
        --official-python /work/official_ytvis_venv/bin/python --cases 300 --seed 0

The official ``Params`` calls ``np.linspace`` with a float ``num`` and ``accumulate`` uses
``np.float``: numpy 1.23 still has ``np.float``, and the worker wraps ``np.linspace`` to cast
``num`` to int (10.0 → 10, 101.0 → 101: the same arrays). The official ``loadRes`` fails on an
empty result list (``anns[0]``); for those cases the worker builds the empty result set itself
and runs the unchanged official evaluation on it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


# ----------------------------------------------------------------------------------------------
# worker: runs inside the official venv, imports only numpy and the official pycocotools
# ----------------------------------------------------------------------------------------------

def _worker(official_dir: str, case_dir: str, n_cases: int) -> None:
    sys.path.insert(0, official_dir)
    import numpy as np

    real_linspace = np.linspace

    def linspace(start, stop, num=50, *args, **kwargs):  # official passes num as a float
        return real_linspace(start, stop, int(num), *args, **kwargs)

    np.linspace = linspace
    from pycocotools.ytvos import YTVOS  # the fork, from official_dir
    from pycocotools.ytvoseval import YTVOSeval

    out = {}
    for i in range(n_cases):
        base = os.path.join(case_dir, f"case{i:04d}")
        with open(base + ".meta.json") as fh:
            meta = json.load(fh)
        with contextlib.redirect_stdout(io.StringIO()):
            gt = YTVOS(base + ".gt.json")
            with open(base + ".res.json") as fh:
                n_res = len(json.load(fh))
            if n_res:
                dt = gt.loadRes(base + ".res.json")
            else:  # loadRes indexes anns[0]; an empty result set built by hand instead
                dt = YTVOS()
                dt.dataset["videos"] = list(gt.dataset["videos"])
                dt.dataset["categories"] = list(gt.dataset["categories"])
                dt.dataset["annotations"] = []
                dt.createIndex()
            ev = YTVOSeval(gt, dt, "segm")
            ev.params.useCats = 0 if meta["class_agnostic"] else 1
            ev.params.maxDets = list(meta["max_dets"])
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out[i] = [float(v) for v in ev.stats]
    with open(os.path.join(case_dir, "official.json"), "w") as fh:
        json.dump(out, fh)


# ----------------------------------------------------------------------------------------------
# random cases
# ----------------------------------------------------------------------------------------------

def _make_case(rng, idx: int):
    """One random GT/results pair; each feature is switched on at random so all combinations occur."""
    import numpy as np
    from pycocotools import mask as mask_utils

    def enc(m):
        r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}

    def rect(h, w, big):
        m = np.zeros((h, w), dtype=bool)
        if big:
            y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
            y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
        else:
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            y1, x1 = min(h, y0 + rng.integers(1, 6)), min(w, x0 + rng.integers(1, 6))
        m[y0:y1, x0:x1] = True
        return m

    def perturb(m):
        m = m.copy()
        kind = rng.integers(0, 4)
        if kind == 0:
            m = np.roll(m, (rng.integers(-2, 3), rng.integers(-2, 3)), axis=(0, 1))
        elif kind == 1:
            m ^= rng.random(m.shape) < 0.05
        elif kind == 2:
            ys, xs = np.nonzero(m)
            if len(ys):
                m[ys.min():ys.min() + max(1, (ys.max() - ys.min()) // 2), :] = False
        return m

    feats = {
        "crowd": rng.random() < 0.4, "null_frames": rng.random() < 0.6, "ties": rng.random() < 0.5,
        "unknown_cat": rng.random() < 0.25, "empty_results": rng.random() < 0.06,
        "gt_id_zero": rng.random() < 0.1, "area_quirks": rng.random() < 0.3,
        "uncompressed_gt": rng.random() < 0.2, "polygon_gt": rng.random() < 0.1,
        "len_mismatch": rng.random() < 0.1, "size_mismatch": rng.random() < 0.08,
        "big": rng.random() < 0.35, "many_dets": rng.random() < 0.2, "dup_masks": rng.random() < 0.2,
        "dup_gt": rng.random() < 0.2,
    }
    class_agnostic = bool(rng.random() < 0.5)
    max_dets = [[1, 10, 100], [1, 10, 100], [1, 10, 100], [1, 2, 3], [100, 10, 1], [1, 5, 20]][rng.integers(0, 6)]
    n_cats = int(rng.integers(1, 5))
    cat_ids = sorted(rng.choice(np.arange(1, 40), size=n_cats, replace=False).tolist())
    n_vids = int(rng.integers(1, 7))
    vid_ids = rng.choice(np.arange(1, 100), size=n_vids, replace=False).tolist()
    videos, anns, results = [], [], []
    next_ann = 0 if feats["gt_id_zero"] else 1
    for vid in vid_ids:
        big = feats["big"] and rng.random() < 0.7
        h, w = (int(rng.integers(130, 300)), int(rng.integers(130, 300))) if big else (int(rng.integers(3, 12)), int(rng.integers(3, 12)))
        n_frames = int(rng.integers(1, 5))
        videos.append({"id": int(vid), "height": h, "width": w, "length": n_frames,
                       "file_names": [f"{vid}/{t:05d}.jpg" for t in range(n_frames)]})
        n_gt = int(rng.integers(0, 4)) if rng.random() < 0.85 else 0
        gt_masks = []
        for _ in range(n_gt):
            masks = [rect(h, w, big or rng.random() < 0.5) for _ in range(n_frames)]
            if feats["dup_gt"] and gt_masks and rng.random() < 0.5:
                masks = gt_masks[-1][1]  # equal IoU to two GT: the official keeps the later one
            segs, areas = [], []
            for m in masks:
                if feats["null_frames"] and rng.random() < 0.25:
                    segs.append(None)
                    areas.append(None)
                    continue
                if feats["polygon_gt"] and rng.random() < 0.5:
                    ys, xs = np.nonzero(m)
                    x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
                    segs.append([[x0, y0, x1, y0, x1, y1, x0, y1]])
                elif feats["uncompressed_gt"] and rng.random() < 0.5:
                    flat = m.astype(np.uint8).flatten(order="F")
                    runs, cur, n = [], 0, 0
                    for v in flat:
                        if v != cur:
                            runs.append(n)
                            cur, n = v, 0
                        n += 1
                    runs.append(n)
                    segs.append({"size": [h, w], "counts": [int(r) for r in runs]})
                else:
                    segs.append(enc(m))
                areas.append(int(m.sum()))
            if feats["area_quirks"]:  # areas that do not agree with the masks: the JSON value counts
                areas = [None if a is None else [0, a, a * 3 + 0.5, 20000, 70000][rng.integers(0, 5)] for a in areas]
            crowd = int(feats["crowd"] and rng.random() < 0.3)
            ann = {"id": next_ann, "video_id": int(vid), "category_id": int(rng.choice(cat_ids)),
                   "segmentations": segs, "areas": areas, "iscrowd": crowd}
            if rng.random() < 0.2:
                ann["ignore"] = int(rng.integers(0, 2))  # the official overwrites it: has no effect
            if feats["unknown_cat"] and rng.random() < 0.1:
                ann["category_id"] = 999  # GT of a category not listed: dropped
            anns.append(ann)
            next_ann += 1
            gt_masks.append((ann["category_id"], masks))
        n_pred = int(rng.integers(0, 6)) + (int(rng.integers(5, 25)) if feats["many_dets"] else 0)
        prev = None
        for _ in range(n_pred):
            if gt_masks and rng.random() < 0.7:
                cat, masks = gt_masks[rng.integers(0, len(gt_masks))]
                masks = [perturb(m) if rng.random() < 0.7 else m for m in masks]
                if rng.random() < 0.2:
                    cat = int(rng.choice(cat_ids))
            else:
                cat = int(rng.choice(cat_ids))
                masks = [rect(h, w, big or rng.random() < 0.5) for _ in range(n_frames)]
            if feats["dup_masks"] and prev is not None and rng.random() < 0.3:
                masks = prev
            prev = masks
            if feats["unknown_cat"] and rng.random() < 0.2:
                cat = 1000
            segs = []
            for m in masks:
                if feats["null_frames"] and rng.random() < 0.2:
                    segs.append(None)
                elif rng.random() < 0.05:
                    segs.append(enc(np.zeros_like(m)))  # empty frame: area 0, left out of avg_area
                else:
                    segs.append(enc(m))
            if feats["len_mismatch"] and rng.random() < 0.3:
                segs = segs[: rng.integers(0, len(segs) + 1)] if rng.random() < 0.5 else segs + [enc(masks[-1])]
            if feats["size_mismatch"] and rng.random() < 0.3 and segs:
                segs[-1] = enc(np.ones((h + 1, w), dtype=bool))
            score = float(rng.choice([0.5, 0.7, 0.9])) if feats["ties"] else float(rng.random())
            results.append({"video_id": int(vid), "category_id": cat, "segmentations": segs, "score": score})
    if feats["empty_results"]:
        results = []
    perm = rng.permutation(len(results))
    results = [results[i] for i in perm]  # results are not grouped by video in the file
    gt = {"info": {"case": idx}, "videos": videos, "annotations": anns,
          "categories": [{"id": int(c), "name": f"c{c}", "supercategory": "x"} for c in cat_ids]}
    active = [k for k, v in feats.items() if v] + (["class_agnostic"] if class_agnostic else [])
    return gt, results, {"class_agnostic": class_agnostic, "max_dets": max_dets, "features": active}


def _unit_cases():
    """The hand-computed cases of the unit tests, so the official confirms their expected values."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "test_eval_ytvis.py")
    spec = importlib.util.spec_from_file_location("_ytvis_unit_cases", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = []
    for name, gt, res, kwargs, _expected in mod.CASES:
        meta = {"class_agnostic": bool(kwargs.get("class_agnostic", False)),
                "max_dets": list(kwargs.get("max_dets", (1, 10, 100))), "features": ["unit:" + name]}
        out.append((gt, res, meta))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", default="/work/official_ytvis_src/PythonAPI",
                    help="the fork's PythonAPI folder, built with build_ext --inplace")
    ap.add_argument("--official-python", default="/work/official_ytvis_venv/bin/python")
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="write the cases to this folder and keep them")
    ap.add_argument("--no-unit-cases", action="store_true",
                    help="leave out the hand-computed cases of tests/test_eval_ytvis.py (run first)")
    ap.add_argument("--worker", nargs=2, metavar=("CASE_DIR", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args.official, args.worker[0], int(args.worker[1]))
        return 0

    import numpy as np

    from s2d.eval.ytvis import evaluate_ytvis

    rng = np.random.default_rng(args.seed)
    case_dir = args.keep or tempfile.mkdtemp(prefix="ytvis_cases_")
    os.makedirs(case_dir, exist_ok=True)
    cases = [] if args.no_unit_cases else _unit_cases()
    n_unit = len(cases)
    cases += [_make_case(rng, i) for i in range(args.cases)]
    args.cases = len(cases)
    metas = []
    for i, (gt, res, meta) in enumerate(cases):
        base = os.path.join(case_dir, f"case{i:04d}")
        for suffix, obj in ((".gt.json", gt), (".res.json", res), (".meta.json", meta)):
            with open(base + suffix, "w") as fh:
                json.dump(obj, fh)
        metas.append(meta)

    t0 = time.time()
    subprocess.run([args.official_python, os.path.abspath(__file__), "--official", args.official,
                    "--worker", case_dir, str(args.cases)], check=True)
    t_official = time.time() - t0
    with open(os.path.join(case_dir, "official.json")) as fh:
        official = {int(k): v for k, v in json.load(fh).items()}

    t0 = time.time()
    ours = {}
    for i in range(args.cases):
        base = os.path.join(case_dir, f"case{i:04d}")
        with open(base + ".gt.json") as fh:
            gt = json.load(fh)
        with open(base + ".res.json") as fh:
            res = json.load(fh)
        m = evaluate_ytvis(gt, res, class_agnostic=metas[i]["class_agnostic"], max_dets=metas[i]["max_dets"])
        ours[i] = [m[k] for k in STAT_KEYS]
    t_ours = time.time() - t0

    diffs = np.abs(np.array([ours[i] for i in range(args.cases)]) - np.array([official[i] for i in range(args.cases)]))
    per_stat = diffs.max(axis=0)
    bad = [i for i in range(args.cases) if diffs[i].max() > 1e-4]
    counts = {}
    for meta in metas[n_unit:]:
        for f in meta["features"]:
            counts[f] = counts.get(f, 0) + 1
    n_minus1 = int((np.array([official[i] for i in range(args.cases)]) == -1).sum())
    print(f"cases: {args.cases - n_unit} random (seed {args.seed}) + {n_unit} hand-computed unit cases, in {case_dir}")
    print("feature counts: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    print(f"official -1 entries: {n_minus1} of {12 * args.cases}")
    off = np.array([official[i] for i in range(args.cases)])
    print("max |s2d - official| per stat (cases where the official is not -1 / strictly between 0 and 1):")
    for n, (k, v) in enumerate(zip(STAT_KEYS, per_stat)):
        print(f"  {k:<6} {v:.3g}   ({int((off[:, n] != -1).sum())} / {int(((off[:, n] > 0) & (off[:, n] < 1)).sum())})")
    print(f"overall max diff: {per_stat.max():.3g}; cases over 1e-4: {len(bad)} {bad[:20]}")
    print(f"time: official {t_official:.1f} s, s2d {t_ours:.1f} s")
    if not args.keep:
        shutil.rmtree(case_dir, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
