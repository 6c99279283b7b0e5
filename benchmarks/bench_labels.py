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

Usage::

    python benchmarks/bench_labels.py RUN/pseudo_labels.json --min-saliency 0.5
    python benchmarks/bench_labels.py RUN/pseudo_labels.json --min-saliency 0 --min-score-ratio 0.5 --min-keymasks 5
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


if __name__ == "__main__":
    raise SystemExit(main())
