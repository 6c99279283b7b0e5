"""Latency of ``s2d segment``: per-frame (``--online``) vs chunked, on a 480p clip (issue #16).

A frame's **latency** is the time from the moment the source hands the frame over to the moment its result
comes out of :func:`s2d.infer.segment_frames` (decoding excluded: a live source delivers decoded frames as
they arrive). Offline mode holds a frame until its chunk is full, so its latency is up to a chunk of frames'
worth of model time; online mode yields every frame before reading the next. Frames/s is end to end over
the clip (the model loaded before the clock starts). Both modes run in one process, one after the other,
on the same frames held in memory.

Usage::

    python benchmarks/bench_online.py --model default --online-model default --threads 2 \\
        --out benchmarks/results/online_latency.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np

DEFAULT_SOURCE = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016" / "JPEGImages"
                     / "480p" / "bmx-bumps")


def run(model, frames: List[np.ndarray], online: bool) -> Dict[str, float]:
    from s2d.infer import SegmentConfig, segment_frames

    handed: Dict[int, float] = {}

    def source() -> Iterator[np.ndarray]:
        for i, f in enumerate(frames):
            handed[i] = time.perf_counter()
            yield f

    lat: List[float] = []
    t0 = time.perf_counter()
    for res in segment_frames(source(), SegmentConfig(online=online), model=model):
        lat.append(time.perf_counter() - handed[res.index])
    total = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {"frames": len(lat), "fps": len(lat) / total, "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "max_ms": float(ms.max())}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=DEFAULT_SOURCE, help="video or frame folder (default DAVIS bmx-bumps)")
    ap.add_argument("--model", default="default", help="the offline model (checkpoint or 'default')")
    ap.add_argument("--online-model", default="default",
                    help="the online model (checkpoint, or 'default': the packaged online model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=0, help="only the first N frames (0: all)")
    ap.add_argument("--out", default=None, help="write a Markdown table here")
    a = ap.parse_args(argv)
    import cv2
    import torch

    from s2d.infer import load_model
    from s2d.io.video import open_video

    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    with open_video(a.source, end=a.frames or None) as stream:
        frames = [f.rgb for f in stream]
    rows = []
    for label, spec, online, packaged_online in (("offline (chunks of 8, overlap 2)", a.model, False, False),
                                                 ("online, offline model frame by frame", a.model, True, False),
                                                 ("online model", a.online_model, True, True)):
        model = load_model(spec, "cpu", online=packaged_online)
        run(model, frames[:3], online)  # warm-up
        r = run(model, frames, online)
        rows.append((label, spec, r))
        print(f"{label:40s} {r['fps']:.2f} frames/s  latency p50 {r['p50_ms']:.0f} ms  p95 {r['p95_ms']:.0f} ms "
              f"max {r['max_ms']:.0f} ms", flush=True)
    h, w = frames[0].shape[:2]
    lines = [f"# `s2d segment` latency, online vs offline ({Path(a.source).name}, {len(frames)} frames {w}×{h}, "
             f"{a.threads} threads)", "",
             "| mode | model | frames/s | latency p50 (ms) | p95 (ms) | max (ms) |", "|---|---|---|---|---|---|"]
    lines += [f"| {label} | `{spec}` | {r['fps']:.2f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['max_ms']:.0f} |"
              for label, spec, r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
