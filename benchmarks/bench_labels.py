"""Pseudo-label quality and the training gates (issue "Instances that hold on unseen video", 2a/2b).

For a ``pseudo_labels.json`` of ``s2d discover`` (any mix of DAVIS sequences and unlabeled clips), every object is
classified by the gates training applies (``s2d.train.data.load_labelset`` with the given ``--min-saliency`` and
``--min-keymasks``) and, where DAVIS-2016 GT exists for its video, scored against it:

* **label J** — mean IoU of its keymasks with the GT object on their frames;
* **whole** — share of its keymasks with IoU > 0.5 (the keymask is the whole object, not a part or a merge);
* **part** — share of keymasks lying mostly inside the object (≥ 80 % of the keymask in the GT) but covering less
  than half of it;
* the ROC AUC of each object score (``saliency``, ``score_ratio``) for telling objects that lie on the GT object
  (> 50 % of their keymask pixels inside it) from the rest.

Objects of videos without GT are only counted (kept / rejected per video). GT is read only here, for measuring.

With ``--sequences`` a third table adds, per video with GT and over the objects the gates keep (issue #17, to compare
discovery methods on the same data):

* **objects** — objects per sequence (all / kept);
* **coverage** — share of the frames that have a kept label;
* **frame J** — on those frames, IoU of the union of the kept labels with the GT object;
* **identity** — :func:`s2d.eval.identity.identity_stats` of the kept labels as label maps (a frame's *dominant*
  id holds ≥ 25 % of the GT object): ``fragments`` (distinct dominant ids; ideal 1), ``switches`` (changes of the
  dominant id between labelled frames; ideal 0) and ``main id`` (share of the covered frames whose dominant id is
  the most frequent one; ideal 1);
* **s/frame** — discovery seconds per frame without stage 1 (``tracker_prepare_s + discovery_s`` of the run's
  ``videos/*.json`` next to the labels).

Usage::

    python benchmarks/bench_labels.py RUN/pseudo_labels.json --min-saliency 0.5
    python benchmarks/bench_labels.py RUN/pseudo_labels.json --min-saliency 0 --min-score-ratio 0.5 --min-keymasks 5
    python benchmarks/bench_labels.py RUN/pseudo_labels.json --min-saliency 0.5 --sequences
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def gt_folder(source: str, data: Path) -> Optional[Path]:
    """DAVIS-2016 GT of a labelset video named ``davis2016/JPEGImages/480p/<seq>`` (or ending in ``<seq>``)."""
    name = Path(source).name
    for cand in (data / "davis2016" / "Annotations" / "480p" / name,):
        if cand.is_dir():
            return cand
    return None


def read_gt(folder: Path, t: int) -> np.ndarray:
    from PIL import Image

    a = np.asarray(Image.open(folder / f"{t:05d}.png"))
    return a.any(-1) if a.ndim == 3 else a > 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("labels", help="pseudo_labels.json")
    ap.add_argument("--data", default=str(SHARED), help="the shared data folder (for DAVIS GT)")
    ap.add_argument("--min-saliency", type=float, default=0.5)
    ap.add_argument("--min-keymasks", type=int, default=0)
    ap.add_argument("--min-score-ratio", type=float, default=0.0)
    ap.add_argument("--out", default=None, help="markdown report")
    ap.add_argument("--sequences", action="store_true",
                    help="add per-sequence coverage, frame J, identity and seconds per frame (kept objects)")
    a = ap.parse_args(argv)
    from s2d import rle as R
    from s2d.train.data import load_labelset

    data = Path(a.data)
    full = load_labelset(a.labels)
    kept_ls = load_labelset(a.labels, min_saliency=a.min_saliency, min_keymasks=a.min_keymasks,
                            min_score_ratio=a.min_score_ratio)
    kept_ids = {(v.id, ann["id"]) for v in kept_ls.videos for ann in v.annotations}
    rows: Dict[str, List[Dict]] = {"kept": [], "rejected": []}
    per_video = []
    for v in full.videos:
        gt = gt_folder(v.source, data)
        nk = nr = 0
        for ann, obj in zip(v.annotations, v.objects):
            kept = (v.id, ann["id"]) in kept_ids
            nk, nr = nk + kept, nr + (not kept)
            if gt is None:
                continue
            ious, whole, part, inside = [], [], [], []
            for t, m in enumerate(obj):
                if m is None:
                    continue
                p = R.decode(m)
                g = read_gt(gt, t)
                inter = np.logical_and(p, g).sum()
                inside.append(inter / max(p.sum(), 1))
                union = np.logical_or(p, g).sum()
                iou = inter / union if union else 1.0
                ious.append(iou)
                whole.append(iou > 0.5)
                part.append(inter >= 0.8 * max(p.sum(), 1) and inter < 0.5 * max(g.sum(), 1))
            rows["kept" if kept else "rejected"].append(
                {"video": v.source, "J": float(np.mean(ious)), "whole": float(np.mean(whole)),
                 "part": float(np.mean(part)), "keymasks": len(ious),
                 "on_object": float(np.mean(inside)) > 0.5,
                 "saliency": ann.get("saliency"), "score_ratio": ann.get("score_ratio")})
        per_video.append((v.source, gt is not None, nk, nr))
    lines = [f"Command: `python benchmarks/bench_labels.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             "", "| objects | count | with GT | label J (GT) | whole | part | keymasks (GT) |",
             "|---|---|---|---|---|---|---|"]
    for k in ("kept", "rejected"):
        r = rows[k]
        n = sum(x[2] if k == "kept" else x[3] for x in per_video)
        if r:
            w = np.array([x["keymasks"] for x in r], float)
            lines.append(f"| {k} | {n} | {len(r)} | {np.mean([x['J'] for x in r]):.3f} | "
                         f"{np.average([x['whole'] for x in r], weights=w):.3f} | "
                         f"{np.average([x['part'] for x in r], weights=w):.3f} | {int(w.sum())} |")
        else:
            lines.append(f"| {k} | {n} | 0 | – | – | – | 0 |")
    lines += _separation(rows["kept"] + rows["rejected"])
    lines += ["", "| video | GT | kept | rejected |", "|---|---|---|---|"]
    lines += [f"| {s} | {'yes' if g else ''} | {k} | {r} |" for s, g, k, r in per_video]
    if a.sequences:
        lines += sequence_table(full, kept_ls, data, run_timings(Path(a.labels).parent))
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


def _separation(objects: List[Dict]) -> List[str]:
    """ROC AUC of each object score for "on the GT object" (> 50 % of its keymask pixels inside the GT)."""
    from sklearn.metrics import roc_auc_score

    out = ["", "| object score | ROC AUC, on-object vs not (objects with GT) |", "|---|---|"]
    y = [x["on_object"] for x in objects]
    for key in ("saliency", "score_ratio"):
        vals = [x[key] for x in objects]
        if len(set(y)) < 2 or any(not isinstance(v, (int, float)) for v in vals):
            out.append(f"| {key} | – |")
        else:
            out.append(f"| {key} | {roc_auc_score(y, vals):.3f} |")
    return out


# --------------------------------------------------------------------------- per-sequence measures (--sequences)


def run_timings(run: Path) -> Dict[str, float]:
    """Discovery seconds per frame (without stage 1) of every video of a run folder, by video name."""
    import json

    out: Dict[str, float] = {}
    for p in sorted((run / "videos").glob("*.json")):
        rec = json.loads(p.read_text())
        t = rec.get("timings", {})
        if t.get("frames"):
            out[rec["video"]["name"]] = (t.get("tracker_prepare_s", 0.0) + t.get("discovery_s", 0.0)) / t["frames"]
    return out


def _label_map(objects: List[List[Optional[dict]]], t: int, shape) -> Optional[np.ndarray]:
    """The kept labels of frame ``t`` as a label map (object k → k + 1; later objects drawn over earlier ones)."""
    from s2d import rle as R

    out = None
    for k, obj in enumerate(objects):
        if obj[t] is None:
            continue
        if out is None:
            out = np.zeros(shape, np.int32)
        out[R.decode(obj[t])] = k + 1
    return out


def sequence_measures(video, all_objects: int, gt: Path) -> Dict[str, float]:
    """Coverage, frame J and identity of the kept labels of one ``LabelledVideo`` against its DAVIS-2016 GT."""
    from s2d.eval.identity import identity_stats

    ious, pairs = [], []
    shape = (video.height, video.width)
    for t in range(video.length):
        g = read_gt(gt, t)
        pred = _label_map(video.objects, t, shape)
        pairs.append((g.astype(np.int32), pred))
        if pred is not None:
            union = np.logical_or(pred > 0, g).sum()
            ious.append(np.logical_and(pred > 0, g).sum() / union if union else 1.0)
    ident = identity_stats(pairs)[0] if pairs else None
    dom = [d for d in ident.dominant if d is not None] if ident else []
    main = max(dom.count(d) for d in set(dom)) / len(dom) if dom else float("nan")
    return {"objects": all_objects, "kept": len(video.objects), "coverage": len(ious) / max(video.length, 1),
            "frame_J": float(np.mean(ious)) if ious else float("nan"),
            "fragments": ident.fragments if ident else 0, "switches": ident.switches if ident else 0,
            "main_id": main}


def sequence_table(full, kept, data: Path, timings: Dict[str, float]) -> List[str]:
    """The per-sequence table of ``--sequences`` and its mean row (videos with DAVIS GT only)."""
    counts = {v.id: len(v.objects) for v in full.videos}
    rows = []
    for v in kept.videos:
        gt = gt_folder(v.source, data)
        if gt is None:
            continue
        m = sequence_measures(v, counts[v.id], gt)
        m["s_per_frame"] = timings.get(v.record.get("name", v.source), float("nan"))
        rows.append((Path(v.source).name, m))
    keys = ("objects", "kept", "coverage", "frame_J", "fragments", "switches", "main_id", "s_per_frame")
    lines = ["", "| sequence | objects | kept | coverage | frame J | fragments | switches | main id | s/frame |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, m in rows + ([("**mean**", {k: float(np.nanmean([r[k] for _, r in rows])) for k in keys})]
                           if rows else []):
        lines.append(f"| {name} | " + " | ".join(_fmt(m[k]) for k in keys) + " |")
    return lines


def _fmt(v: float) -> str:
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return "–" if v != v else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


if __name__ == "__main__":
    raise SystemExit(main())
