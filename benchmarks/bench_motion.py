"""Cost of ``s2d segment``'s motion gate (``min_motion``): frames/s with it on and off, alternated in one process.

Usage::

    python benchmarks/bench_motion.py --threads 2 [--source ../shared/data/davis2016/JPEGImages/480p/bmx-bumps]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "davis2016" / "JPEGImages" / "480p" / "bmx-bumps"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(DEFAULT_SOURCE), help="a video or frame folder")
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-motion", type=float, default=0.03)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    import cv2

    cv2.setNumThreads(a.threads)
    from s2d.infer import SegmentConfig, VideoPredictor
    from s2d.infer.weights import load_model
    from s2d.io.video import open_video

    with open_video(a.source) as video:
        frames = [f.rgb for f in video]
    model = load_model(a.model, "cpu")
    times = {0.0: [], a.min_motion: []}
    for _ in range(a.repeats):
        for mm in times:
            t0 = time.perf_counter()
            for _ in VideoPredictor(model, SegmentConfig(device="cpu", min_motion=mm))(frames):
                pass
            times[mm].append(time.perf_counter() - t0)
    base = len(frames) / min(times[0.0])
    gated = len(frames) / min(times[a.min_motion])
    print(f"{len(frames)} frames of {a.source}, {a.threads} threads, best of {a.repeats}")
    print(f"min_motion 0 (off): {base:.2f} frames/s; min_motion {a.min_motion}: {gated:.2f} frames/s "
          f"(ratio {gated / base:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
