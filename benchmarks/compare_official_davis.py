#!/usr/bin/env python
"""Compare ``s2d.eval.davis`` with the official DAVIS-2017 evaluation code on the same inputs.

The official code (``davisvideochallenge/davis2017-evaluation``) runs in its own virtual
environment, never imported by ``s2d``. This one script plays two roles:

* the default **driver** role (run with the s2d venv) builds the cases, starts the official role
  in a subprocess, scores the same cases with ``s2d.eval.davis`` and reports the largest
  differences;
* ``--role official`` (run with the official venv, the official sources on ``sys.path``) scores
  the cases with the official functions and classes and writes its numbers to a pickle.

Levels compared:

1. **frame**: ``db_eval_iou`` and ``db_eval_boundary`` per frame on random masks (sizes from 1×1
   to 480×854, empty frames, masks touching the borders, void regions, several ``bound_th``),
   plus ``db_statistics`` on random score sequences of 0–600 frames (NaNs, > 256 frames).
2. **sequence**: the official ``_evaluate_unsupervised`` / ``_evaluate_semisupervised`` flow on
   (N, T, H, W) arrays built from random label maps (permuted ids, gaps, more and fewer proposals
   than GT, void), against ``evaluate_sequence``. The official Hungarian result is recorded (by
   wrapping ``linear_sum_assignment``) so that objects are compared by GT id.
3. **end to end**: the official ``DAVISEvaluation.evaluate`` on temporary DAVIS-2017-style roots
   (palette PNGs, void 255, ``ImageSets``), against ``evaluate_davis`` on the same folders; and
   the shared DAVIS-2016 sequences (binary GT, re-saved as 1-object palette PNGs for the official
   loader) scored against eroded, dilated, shifted and split versions of their GT. For these, s2d
   reads the original binary PNGs. The ``union`` protocol is compared with the official
   semi-supervised task on merged predictions.

Usage (see benchmarks/results/davis_equality.md)::

    python benchmarks/compare_official_davis.py \
        --official-python /work/official_davis_venv/bin/python --official-src /work/official_davis_src
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DAVIS = (REPO / ".." / "shared" / "data" / "davis2016").resolve()
STAT_KEYS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
GLOBAL_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


# ----------------------------------------------------------------------------- case generation


def _blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random shape: ellipses and rectangles, sometimes speckled, sometimes touching a border."""
    import cv2

    m = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        if rng.random() < 0.25:  # push to the bottom/right edges (seg2bmap's special rows)
            cy, cx = (h - 1 if rng.random() < 0.5 else cy), (w - 1 if rng.random() < 0.5 else cx)
        ry, rx = max(1, int(rng.integers(1, max(2, h // 3)))), max(1, int(rng.integers(1, max(2, w // 3))))
        if rng.random() < 0.5:
            cv2.ellipse(m, (cx, cy), (rx, ry), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            m[max(0, cy - ry) : cy + ry, max(0, cx - rx) : cx + rx] = 1
    if rng.random() < 0.2:
        m |= (rng.random((h, w)) < 0.02).astype(np.uint8)
    return m.astype(bool)


def _perturb(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    import cv2

    m = mask.astype(np.uint8)
    op = rng.integers(0, 5)
    k = np.ones((int(rng.integers(1, 6)),) * 2, np.uint8)
    if op == 0:
        m = cv2.dilate(m, k)
    elif op == 1:
        m = cv2.erode(m, k)
    elif op == 2:
        dy, dx = rng.integers(-6, 7, size=2)
        m = np.roll(m, (int(dy), int(dx)), axis=(0, 1))
    elif op == 3:
        m = m | _blob(rng, *m.shape).astype(np.uint8)
    return m.astype(bool)


def _random_labels(rng: np.random.Generator, t: int, h: int, w: int, n: int, void: bool) -> np.ndarray:
    """(T, H, W) uint8 label maps with ids 1..n (object k drifts over time) and optional void 255."""
    lab = np.zeros((t, h, w), np.uint8)
    base = [_blob(rng, h, w) for _ in range(n)]
    for ti in range(t):
        for k in range(n):
            if rng.random() < 0.1:
                continue  # object absent on this frame
            m = base[k] if ti == 0 else _perturb(rng, base[k])
            lab[ti][m] = k + 1
        if void and rng.random() < 0.7:
            y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
            lab[ti, y0 : y0 + int(rng.integers(1, h + 1)) // 3 + 1, x0 : x0 + int(rng.integers(1, w + 1)) // 3 + 1] = 255
    # The official loader counts objects on the first frame: make sure all n appear there.
    for k in range(n):
        if not (lab[0] == k + 1).any():
            lab[0, min(h - 1, k), min(w - 1, k)] = k + 1
    return lab


def _random_pred(rng: np.random.Generator, gt: np.ndarray, n_gt: int, max_id: int, permute: bool) -> np.ndarray:
    """Prediction label maps: perturbed GT objects under permuted ids plus extra blobs, some ids empty."""
    t, h, w = gt.shape
    pred = np.zeros_like(gt)
    ids = list(range(1, max_id + 1))
    if permute:
        rng.shuffle(ids)
    for ti in range(t):
        if rng.random() < 0.05:
            continue  # an empty predicted frame
        for k in range(min(n_gt, max_id)):
            if rng.random() < 0.1:
                continue
            pred[ti][_perturb(rng, gt[ti] == k + 1)] = ids[k]
        for k in range(n_gt, max_id):
            if rng.random() < 0.6:
                pred[ti][_blob(rng, h, w)] = ids[k]
    return pred


def _sizes(rng: np.random.Generator) -> Tuple[int, int]:
    choice = rng.random()
    if choice < 0.08:
        return int(rng.integers(1, 4)), int(rng.integers(1, 6))
    if choice < 0.7:
        return int(rng.integers(5, 70)), int(rng.integers(5, 90))
    if choice < 0.92:
        return int(rng.integers(100, 260)), int(rng.integers(100, 460))
    return 480, 854


def make_frame_cases(rng: np.random.Generator, n: int) -> List[Dict[str, Any]]:
    cases = []
    for i in range(n):
        h, w = _sizes(rng)
        t = int(rng.integers(1, 4 if h * w > 100000 else 6))
        gt = np.stack([_blob(rng, h, w) if rng.random() > 0.15 else np.zeros((h, w), bool) for _ in range(t)])
        pred = np.stack([_perturb(rng, g) if rng.random() > 0.15 else np.zeros((h, w), bool) for g in gt])
        void = None
        if rng.random() < 0.5:
            void = np.stack([_blob(rng, h, w) & (rng.random() < 0.8) for _ in range(t)])
        bound_th = float(rng.choice([0.008, 0.008, 0.008, 0.02, 0.001, 2.0, 1.5, 3]))
        cases.append({"gt": gt, "pred": pred, "void": void, "bound_th": bound_th})
    return cases


def make_stat_cases(rng: np.random.Generator, n: int) -> List[np.ndarray]:
    cases = []
    for i in range(n):
        t = int(rng.choice([0, 1, 2, 3, 4, 5, 7, 10, 25, 50, 70, 104, 255, 256, 257, 258, 300, 511, 512, 600]))
        v = rng.random(t)
        if rng.random() < 0.3 and t:
            v[rng.random(t) < 0.2] = np.nan
        if rng.random() < 0.2:
            v = np.round(v)
        cases.append(v)
    return cases


def make_sequence_cases(rng: np.random.Generator, n: int) -> List[Dict[str, Any]]:
    cases = []
    for i in range(n):
        h, w = _sizes(rng)
        if h * w > 100000:
            t = int(rng.integers(2, 5))
        else:
            t = int(rng.integers(1, 9))
        n_gt = int(rng.integers(1, 5))
        protocol = str(rng.choice(["unsupervised", "unsupervised", "semi-supervised", "union"]))
        if protocol == "unsupervised":
            max_id = int(rng.choice([0, 1, n_gt - 1 if n_gt > 1 else 1, n_gt, n_gt + 2, int(rng.integers(1, 21)), 20]))
        else:
            max_id = int(rng.integers(0, n_gt + 1))
        gt = _random_labels(rng, t, h, w, n_gt, void=rng.random() < 0.6)
        pred = _random_pred(rng, gt, n_gt, max_id, permute=(protocol == "unsupervised" and rng.random() < 0.7))
        if protocol == "union" and max_id and rng.random() < 0.5:
            pred[pred > 0] = rng.integers(1, 30, size=int((pred > 0).sum()))  # many ids, merged anyway
        cases.append({"gt": gt, "pred": pred, "protocol": protocol})
    return cases


def _gt_arrays(lab: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(N, T, H, W) object masks and (T, H, W) void from palette labels, objects as on frame 0."""
    void = lab == 255
    clean = np.where(void, 0, lab)
    n = int(clean[0].max())
    return np.stack([clean == k for k in range(1, n + 1)]) if n else np.zeros((0, *lab.shape), bool), void


def _pred_arrays(lab: np.ndarray) -> np.ndarray:
    m = int(lab.max()) if lab.size else 0
    return np.stack([lab == k for k in range(1, m + 1)]) if m else np.zeros((0, *lab.shape), bool)


# ----------------------------------------------------------------------------- folders


def _save_palette(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    im = Image.fromarray(arr.astype(np.uint8))  # mode L; putpalette turns it into P, values kept
    pal = np.zeros((256, 3), np.uint8)
    rng = np.random.default_rng(0)
    pal[1:255] = rng.integers(0, 256, size=(254, 3))
    pal[255] = 255
    im.putpalette(pal.reshape(-1).tolist())
    im.save(path)


def _merge_gt(lab: np.ndarray) -> np.ndarray:
    """One-object palette GT: the union of the objects of frame 0 (ids 1..N) becomes 1, void stays."""
    n = int(np.where(lab[0] == 255, 0, lab[0]).max())
    out = ((lab >= 1) & (lab <= n)).astype(np.uint8)
    out[lab == 255] = 255
    return out


def write_fake_root(
    root: Path, seqs: Dict[str, Dict[str, np.ndarray]], pred_root: Path, merge_pred: bool = False, merge_gt: bool = False
) -> None:
    """A DAVIS-2017-style root the official class accepts (no JPEGs: codalab mode)."""
    for sub in ("Annotations/480p", "Annotations_unsupervised/480p", "ImageSets/2017", "JPEGImages/480p"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "ImageSets/2017/val.txt").write_text("".join(f"{s}\n" for s in seqs))
    for name, d in seqs.items():
        for sub in ("Annotations/480p", "Annotations_unsupervised/480p"):
            (root / sub / name).mkdir(parents=True, exist_ok=True)
        (pred_root / name).mkdir(parents=True, exist_ok=True)
        gt = _merge_gt(d["gt"]) if merge_gt else d["gt"]
        for t in range(gt.shape[0]):
            for sub in ("Annotations/480p", "Annotations_unsupervised/480p"):
                _save_palette(gt[t], root / sub / name / f"{t:05d}.png")
            p = d["pred"][t]
            if merge_pred:
                p = (p > 0).astype(np.uint8)
            _save_palette(p, pred_root / name / f"{t:05d}.png")


def make_random_roots(rng: np.random.Generator, work: Path, n_seq: int) -> List[Dict[str, Any]]:
    roots = []
    for protocol in ("unsupervised", "semi-supervised", "union"):
        seqs = {}
        for i in range(n_seq):
            h, w = (480, 854) if i == 0 else _sizes(rng)
            h, w = max(h, 3), max(w, 3)
            t = int(rng.integers(3, 5)) if h * w > 100000 else int(rng.integers(3, 10))
            n_gt = int(rng.integers(1, 4))
            gt = _random_labels(rng, t, h, w, n_gt, void=True)
            if i == 1 and t > 2:  # an object that appears after frame 0 only (ignored by both)
                gt[2][_blob(rng, h, w) & (gt[2] == 0)] = n_gt + 1
            max_id = int(rng.integers(0, 21)) if protocol == "unsupervised" else int(rng.integers(0, n_gt + 1))
            if protocol == "union":
                max_id = int(rng.integers(0, 6))
            pred = _random_pred(rng, gt, n_gt, max_id, permute=protocol == "unsupervised")
            seqs[f"rand{i:02d}"] = {"gt": gt, "pred": pred}
        root = work / f"root_{protocol}"
        pred_root = work / f"pred_{protocol}"
        write_fake_root(root, seqs, pred_root)
        official_root, official_pred = root, pred_root
        if protocol == "union":  # the official side gets the merged GT and merged predictions
            official_root, official_pred = work / "root_union_official", work / "pred_union_official"
            write_fake_root(official_root, seqs, official_pred, merge_pred=True, merge_gt=True)
        roots.append(
            {
                "label": f"random-{protocol}",
                "protocol": protocol,
                "official_task": "unsupervised" if protocol == "unsupervised" else "semi-supervised",
                "root": str(official_root),
                "pred": str(pred_root),
                "official_pred": str(official_pred),
                "ours_gt": str(root),
                "sequences": list(seqs),
            }
        )
    return roots


def make_real_roots(rng: np.random.Generator, work: Path, seq_names: List[str]) -> List[Dict[str, Any]]:
    """Shared DAVIS-2016 GT re-saved as 1-object palette PNGs, with perturbed predictions."""
    import cv2
    from PIL import Image

    src = SHARED_DAVIS / "Annotations" / "480p"
    seqs_multi: Dict[str, Dict[str, np.ndarray]] = {}
    seqs_single: Dict[str, Dict[str, np.ndarray]] = {}
    for si, name in enumerate(seq_names):
        files = sorted((src / name).glob("*.png"))
        gt = np.stack([np.array(Image.open(f)) != 0 for f in files]).astype(np.uint8)
        kind = ("erode", "dilate", "shift", "split")[si % 4]
        k = np.ones((int(rng.integers(3, 16)),) * 2, np.uint8)
        pred_single = np.zeros_like(gt)
        pred_multi = np.zeros_like(gt)
        for t in range(gt.shape[0]):
            g = gt[t]
            if kind == "erode":
                p = cv2.erode(g, k)
            elif kind == "dilate":
                p = cv2.dilate(g, k)
            elif kind == "shift":
                p = np.roll(g, (int(rng.integers(-12, 13)), int(rng.integers(-12, 13))), axis=(0, 1))
            else:
                p = cv2.dilate(g, np.ones((3, 3), np.uint8)) if t % 2 else g.copy()
            if rng.random() < 0.05:
                p = np.zeros_like(p)
            pred_single[t] = p
            # Multi-id proposal set: the perturbed object split in two ids, plus two distractors.
            cols = np.arange(g.shape[1])[None, :]
            mid = int(np.median(np.nonzero(p)[1])) if p.any() else g.shape[1] // 2
            pred_multi[t][(p > 0) & (cols < mid)] = 3
            pred_multi[t][(p > 0) & (cols >= mid)] = 1
            box = np.zeros_like(g)
            box[10 + t % 7 : 120, 20:200] = 1
            pred_multi[t][(box > 0) & (pred_multi[t] == 0)] = 2
            if t % 3 == 0:
                pred_multi[t][400:470, 700:840] = 5
        seqs_single[name] = {"gt": gt, "pred": pred_single}
        seqs_multi[name] = {"gt": gt, "pred": pred_multi}
    out = []
    for label, seqs, protocol, task, merge in (
        ("davis2016-unsupervised", seqs_multi, "unsupervised", "unsupervised", False),
        ("davis2016-semi", seqs_single, "semi-supervised", "semi-supervised", False),
        ("davis2016-union", seqs_multi, "union", "semi-supervised", True),
    ):
        root = work / f"real_root_{label}"
        pred_root = work / f"real_pred_{label}"
        write_fake_root(root, seqs, pred_root)
        official_pred = pred_root
        if merge:
            official_pred = work / f"real_pred_{label}_merged"
            write_fake_root(work / f"real_root_{label}_unused", seqs, official_pred, merge_pred=True)
        # s2d's side reads predictions in the `s2d segment` layout for one of the runs.
        if label == "davis2016-semi":
            alt = work / f"real_pred_{label}_segment_layout"
            for name in seqs:
                shutil.copytree(pred_root / name, alt / name / "davis")
            pred_root = alt
        out.append(
            {
                "label": label,
                "protocol": protocol,
                "official_task": task,
                "root": str(root),
                "pred": str(pred_root),
                "official_pred": str(official_pred),
                "ours_gt": str(SHARED_DAVIS),  # the original binary {0,255} PNGs
                "sequences": list(seqs),
            }
        )
    return out


# ----------------------------------------------------------------------------- official role


def run_official(work: Path, official_src: Path) -> None:
    sys.path.insert(0, str(official_src))
    import warnings

    warnings.filterwarnings("ignore")
    from davis2017 import evaluation as official_eval
    from davis2017.metrics import db_eval_boundary, db_eval_iou
    from davis2017.utils import db_statistics

    with open(work / "cases.pkl", "rb") as fh:
        cases = pickle.load(fh)
    out: Dict[str, Any] = {"frame": [], "stats": [], "sequence": [], "e2e": []}

    for c in cases["frame"]:
        j = db_eval_iou(c["gt"], c["pred"], c["void"])
        f = db_eval_boundary(c["gt"], c["pred"], c["void"], bound_th=c["bound_th"])
        out["frame"].append({"J": np.asarray(j, float), "F": np.asarray(f, float)})
    for v in cases["stats"]:
        out["stats"].append(tuple(float(x) for x in db_statistics(v)))

    recorded: List[Tuple[np.ndarray, np.ndarray]] = []
    real_lsa = official_eval.linear_sum_assignment

    def spy(cost):
        r, c = real_lsa(cost)
        recorded.append((np.asarray(r), np.asarray(c)))
        return r, c

    official_eval.linear_sum_assignment = spy
    cls = official_eval.DAVISEvaluation
    for c in cases["sequence"]:
        gt, void = _gt_arrays(c["gt"])
        n = gt.shape[0]
        if c["protocol"] == "unsupervised":
            pred = _pred_arrays(c["pred"])
            recorded.clear()
            j, f = cls._evaluate_unsupervised(gt, pred, void, ("J", "F"))
            rows, cols = recorded[-1]
            order = np.argsort(cols)  # official rows follow proposal order: put them in GT order
            j, f = j[order], f[order]
            match = [int(rows[o]) + 1 for o in order]
        else:
            if c["protocol"] == "union":
                gt = gt.any(axis=0, keepdims=True)
                lab = (c["pred"] > 0).astype(np.uint8)
                n = 1
            else:
                lab = c["pred"]
            gt = gt[:, 1:-1]
            pred = _pred_arrays(lab[1:-1])
            j, f = cls._evaluate_semisupervised(gt, pred, None, ("J", "F"))
            match = list(range(1, n + 1))
        stats = []
        for ii in range(n):
            jm, jr, jd = db_statistics(j[ii])
            fm, fr, fd = db_statistics(f[ii])
            stats.append([jm, jr, jd, fm, fr, fd])
        out["sequence"].append({"J": j, "F": f, "stats": np.array(stats, float).reshape(n, 6), "match": match})

    for r in cases["e2e"]:
        recorded.clear()
        ev = cls(davis_root=r["root"], task=r["official_task"], gt_set="val", sequences=r["sequences"], codalab=True)
        res = ev.evaluate(r["official_pred"])
        J, F = res["J"], res["F"]
        glob = [
            (np.mean(J["M"]) + np.mean(F["M"])) / 2.0,
            np.mean(J["M"]),
            np.mean(J["R"]),
            np.mean(J["D"]),
            np.mean(F["M"]),
            np.mean(F["R"]),
            np.mean(F["D"]),
        ]
        # Per object, keyed by GT id: the official lists unsupervised objects in proposal order,
        # so the recorded Hungarian columns tell which GT object each entry belongs to.
        per_object = []
        i = 0
        for s_i, seq in enumerate(ev.dataset.get_sequences()):
            n_obj = sum(1 for k in J["M_per_object"] if k.rsplit("_", 1)[0] == seq)
            cols = recorded[s_i][1] if r["official_task"] == "unsupervised" else np.arange(n_obj)
            for ii in range(n_obj):
                stats = [J["M"][i + ii], J["R"][i + ii], J["D"][i + ii], F["M"][i + ii], F["R"][i + ii], F["D"][i + ii]]
                per_object.append((seq, int(cols[ii]) + 1, [float(x) for x in stats]))
            i += n_obj
        out["e2e"].append({"global": [float(x) for x in glob], "per_object": per_object})

    with open(work / "official.pkl", "wb") as fh:
        pickle.dump(out, fh)


# ----------------------------------------------------------------------------- driver


def _maxdiff(a, b) -> float:
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    if a.shape != b.shape:
        return math.inf
    both_nan = np.isnan(a) & np.isnan(b)
    if (np.isnan(a) ^ np.isnan(b)).any():
        return math.inf
    d = np.abs(np.where(both_nan, 0, a) - np.where(both_nan, 0, b))
    return float(d.max()) if d.size else 0.0


def run_driver(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO / "src"))

    work = Path(args.work)
    if args.reuse and (work / "official.pkl").is_file():
        with open(work / "cases.pkl", "rb") as fh:
            cases = pickle.load(fh)
        t_official = float("nan")
    else:
        cases, t_official = _build_and_run_official(args, work)
    return _compare(args, cases, work, t_official)


def _build_and_run_official(args: argparse.Namespace, work: Path) -> Tuple[Dict[str, Any], float]:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    cases: Dict[str, Any] = {
        "frame": make_frame_cases(rng, args.frame_cases),
        "stats": make_stat_cases(rng, args.stat_cases),
        "sequence": make_sequence_cases(rng, args.sequence_cases),
        "e2e": [],
    }
    cases["e2e"] += make_random_roots(rng, work, args.random_root_sequences)
    if SHARED_DAVIS.is_dir() and not args.no_real:
        names = sorted(p.name for p in (SHARED_DAVIS / "Annotations" / "480p").iterdir() if p.is_dir())
        if args.real_sequences:
            names = names[: args.real_sequences]
        cases["e2e"] += make_real_roots(rng, work, names)
    with open(work / "cases.pkl", "wb") as fh:
        pickle.dump(cases, fh)
    print(f"built cases in {time.time() - t0:.1f}s", flush=True)

    t0 = time.time()
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [args.official_python, str(Path(__file__).resolve()), "--role", "official", "--work", str(work),
         "--official-src", str(args.official_src)],
        check=True,
        env=env,
    )
    t_official = time.time() - t0
    print(f"official: {t_official:.1f}s", flush=True)
    return cases, t_official


def _compare(args: argparse.Namespace, cases: Dict[str, Any], work: Path, t_official: float) -> int:
    from s2d.eval import davis as ours

    with open(work / "official.pkl", "rb") as fh:
        off = pickle.load(fh)

    t0 = time.time()
    diffs: Dict[str, float] = {}

    def note(key: str, value: float) -> None:
        diffs[key] = max(diffs.get(key, 0.0), value)

    for c, o in zip(cases["frame"], off["frame"]):
        note("frame J (db_eval_iou)", _maxdiff(ours.db_eval_iou(c["gt"], c["pred"], c["void"]), o["J"]))
        note("frame F (db_eval_boundary)", _maxdiff(ours.db_eval_boundary(c["gt"], c["pred"], c["void"], c["bound_th"]), o["F"]))
    for v, o in zip(cases["stats"], off["stats"]):
        m = ours.db_statistics(v)
        note("db_statistics Mean", _maxdiff(m[0], o[0]))
        note("db_statistics Recall", _maxdiff(m[1], o[1]))
        note("db_statistics Decay", _maxdiff(m[2], o[2]))
    mismatched_matching = 0
    for c, o in zip(cases["sequence"], off["sequence"]):
        gt, void = _gt_arrays(c["gt"])
        res = ours.evaluate_sequence(gt, _pred_arrays(c["pred"]), c["protocol"], void)
        p = c["protocol"]
        note(f"sequence[{p}] per-frame J", _maxdiff(res["J"], o["J"]))
        note(f"sequence[{p}] per-frame F", _maxdiff(res["F"], o["F"]))
        mine = np.array([[ob[k] for k in STAT_KEYS] for ob in res["objects"]], float).reshape(-1, 6)
        for i, k in enumerate(STAT_KEYS):
            note(f"sequence[{p}] {k}", _maxdiff(mine[:, i], o["stats"][:, i]))
        if p == "unsupervised":
            got = [ob["matched_id"] for ob in res["objects"]]
            exp = [m if m <= max(int(c["pred"].max()), 0) else None for m in o["match"]]
            if got != exp:
                mismatched_matching += 1
    e2e_summary = []
    for r, o in zip(cases["e2e"], off["e2e"]):
        rep = ours.evaluate_davis(r["ours_gt"], r["pred"], protocol=r["protocol"], sequences=r["sequences"], progress=False)
        g = [rep["global"][k] for k in GLOBAL_KEYS]
        d = _maxdiff(g, o["global"])
        note(f"end-to-end global ({r['label']})", d)
        mine = {(row["sequence"], row["object"]): [row[k] for k in STAT_KEYS] for row in rep["rows"]}
        theirs = {(s, k): v for s, k, v in o["per_object"]}
        if set(mine) != set(theirs):
            note(f"end-to-end per-object ({r['label']})", math.inf)
        else:
            note(f"end-to-end per-object ({r['label']})", max([_maxdiff(mine[k], theirs[k]) for k in mine] or [0.0]))
        e2e_summary.append((r["label"], len(r["sequences"]), len(rep["rows"]), rep["global"], o["global"]))
    t_ours = time.time() - t0

    n_seq_by = {p: sum(1 for c in cases["sequence"] if c["protocol"] == p) for p in ("unsupervised", "semi-supervised", "union")}
    lines = [
        f"cases: {len(cases['frame'])} frame-level stacks ({sum(c['gt'].shape[0] for c in cases['frame'])} frames), "
        f"{len(cases['stats'])} statistics sequences, {len(cases['sequence'])} sequence-level cases {n_seq_by}, "
        f"{len(cases['e2e'])} end-to-end runs",
        f"time: official {t_official:.1f}s (incl. its own I/O), s2d {t_ours:.1f}s",
        f"unsupervised matchings that differ from the official: {mismatched_matching}",
        "",
        "| quantity | max abs diff |",
        "|---|---|",
    ]
    worst = 0.0
    for k in sorted(diffs):
        lines.append(f"| {k} | {diffs[k]:.3g} |")
        worst = max(worst, diffs[k])
    lines.append("")
    lines.append("| end-to-end run | sequences | objects | s2d J&F-Mean | official J&F-Mean |")
    lines.append("|---|---|---|---|---|")
    for label, ns, no, mine, theirs in e2e_summary:
        lines.append(f"| {label} | {ns} | {no} | {mine['J&F-Mean']:.6f} | {theirs[0]:.6f} |")
    lines.append("")
    ok = worst < 1e-4 and mismatched_matching == 0
    lines.append(f"RESULT: {'PASS' if ok else 'FAIL'} (largest difference {worst:.3g}, tolerance 1e-4)")
    text = "\n".join(lines)
    print(text)
    if args.report:
        Path(args.report).write_text(text + "\n")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=["driver", "official"], default="driver")
    ap.add_argument("--work", default="/tmp/s2d_davis_compare")
    ap.add_argument("--official-python", default="/work/official_davis_venv/bin/python")
    ap.add_argument("--official-src", default="/work/official_davis_src")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frame-cases", type=int, default=400)
    ap.add_argument("--stat-cases", type=int, default=300)
    ap.add_argument("--sequence-cases", type=int, default=300)
    ap.add_argument("--random-root-sequences", type=int, default=8)
    ap.add_argument("--real-sequences", type=int, default=0, help="limit the shared DAVIS-2016 sequences (0 = all 23)")
    ap.add_argument("--no-real", action="store_true", help="skip the shared DAVIS-2016 runs")
    ap.add_argument("--reuse", action="store_true", help="reuse the cases and official results already in --work")
    ap.add_argument("--report", default=None, help="also write the summary table to this file")
    args = ap.parse_args()
    if args.role == "official":
        run_official(Path(args.work), Path(args.official_src))
        return 0
    return run_driver(args)


if __name__ == "__main__":
    sys.exit(main())
