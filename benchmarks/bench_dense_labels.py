"""Quality of a dense labelset (``RUN/dense_labels.json`` of ``s2d train``) against DAVIS-2016 GT, for reference.

The labels never see ground truth; this script only measures them: for every video of the labelset that is a
DAVIS-2016 sequence, the union of all its objects' masks on each frame is compared with the binary GT (J =
region IoU by ``s2d.eval.davis.db_eval_iou``, equal to the DAVIS code), averaged per sequence, then over the
sequences. Usage::

    python benchmarks/bench_dense_labels.py runs/train_seen/dense_labels.json [more.json ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict

import numpy as np
from PIL import Image

from s2d import rle as rle_utils
from s2d.eval.davis import db_eval_iou

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016"


def _sequence(video: dict) -> str:
    name = video.get("source") or video["file_names"][0]
    for part in Path(name).parts:
        if (DATA / "Annotations" / "480p" / part).is_dir():
            return part
    raise SystemExit(f"video {name!r} is not a DAVIS-2016 sequence under {DATA}")


def labelset_union_j(path: str) -> Dict[str, float]:
    """Per-sequence mean union J of the labelset at ``path``."""
    data = json.loads(Path(path).read_text())
    by_video: Dict[int, list] = {}
    for a in data["annotations"]:
        by_video.setdefault(a["video_id"], []).append(a)
    out = {}
    for v in data["videos"]:
        seq = _sequence(v)
        gts = sorted((DATA / "Annotations" / "480p" / seq).glob("*.png"))
        js = []
        for t, g in enumerate(gts):
            gt = np.asarray(Image.open(g)) > 0
            union = np.zeros_like(gt)
            for a in by_video.get(v["id"], []):
                seg = a["segmentations"][t]
                if seg is not None:
                    union |= rle_utils.decode(seg).astype(bool)
            js.append(float(db_eval_iou(gt, union)))
        out[seq] = float(np.mean(js))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labelsets", nargs="+")
    args = ap.parse_args()
    for p in args.labelsets:
        per = labelset_union_j(p)
        print(f"{p}: mean union J {np.mean(list(per.values())):.3f} over {len(per)} sequences")
        for s, j in sorted(per.items()):
            print(f"  {s:<18} {j:.3f}")


if __name__ == "__main__":
    main()
