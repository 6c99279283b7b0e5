"""How much do extra objects cost on the dev split? An upper bound, not a method (issue #14).

Reads the per-sequence DAVIS PNGs a ``sweep_segment.py`` / ``bench_dev.py`` run wrote (``PRED/<seq>/davis``),
drops every predicted id whose pixels lie mostly off the GT object (less than ``--on`` of them inside it, over
the whole sequence), writes the result to ``OUT`` and scores both with the official union protocol. The
difference is what a perfect "is this one of the objects meant?" decision would gain.

Usage::

    python benchmarks/oracle_extras.py /tmp/s2d_dev/pred/sweep_big1x2_defaults /tmp/s2d_dev/pred/oracle_big1x2
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_dev as B  # noqa: E402


def keep_on_gt(pred: List[np.ndarray], gt: List[np.ndarray], on: float) -> List[int]:
    """Ids of ``pred`` (label maps) with at least ``on`` of their pixels inside ``gt`` (bool masks)."""
    keep = []
    for i in sorted(set(np.unique(np.stack(pred)).tolist()) - {0}):
        total = sum(int((p == i).sum()) for p in pred)
        inside = sum(int(((p == i) & g).sum()) for p, g in zip(pred, gt))
        if inside >= on * total:
            keep.append(int(i))
    return keep


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pred", type=Path, help="a run's prediction folder (PRED/<seq>/davis/*.png)")
    ap.add_argument("out", type=Path, help="where the filtered PNGs go (replaced)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/s2d_dev"), help="bench_dev.py's work folder (GT)")
    ap.add_argument("--on", type=float, default=0.5, help="share of an id's pixels on the GT to keep it")
    a = ap.parse_args(argv)
    gt_root = a.work / "gt"
    names = [s.name for s in B.dev_sequences()]
    shutil.rmtree(a.out, ignore_errors=True)
    for name in names:
        files = sorted((a.pred / name / "davis").glob("*.png"))
        pred = [np.array(Image.open(f)) for f in files]
        gt = [np.array(Image.open(gt_root / "Annotations" / "480p" / name / f.name).convert("L")) > 0 for f in files]
        keep = keep_on_gt(pred, gt, a.on)
        (a.out / name / "davis").mkdir(parents=True)
        for f, p in zip(files, pred):
            img = Image.fromarray(np.where(np.isin(p, keep), p, 0).astype(np.uint8), mode="P")
            img.putpalette(Image.open(f).getpalette())
            img.save(a.out / name / "davis" / f.name)
    for label, folder in (("as predicted", a.pred), ("extras removed", a.out)):
        m = B.mean_jf(B.davis_scores(gt_root, folder, names, "union"))
        print(f"{label:15s} union J/F/J&F {m['J']:.3f}/{m['F']:.3f}/{m['JF']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
