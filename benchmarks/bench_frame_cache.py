"""Would a per-worker cache of decoded frames serve training's clip reads? (issue #18)

Replays the clips that training draws (``ClipDataset``'s sampling: the same seeds, steps, batch size and the
round-robin of batches over ``data.num_workers`` workers) on a real labelset, and counts the share of frame
reads that a least-recently-used cache of N decoded frames per worker would have served, when each read
keeps every frame it decoded between its first and last wanted frame. No video is decoded.

Usage::

    python benchmarks/bench_frame_cache.py runs/disc_all_split/pseudo_labels.json --min-keymasks 5
"""

from __future__ import annotations

import argparse
import random
from collections import OrderedDict
from typing import List, Optional

from s2d.train.config import DataConfig
from s2d.train.data import load_labelset, sample_clip_frames


def hit_rate(videos: List, cfg: DataConfig, steps: int, capacity: int) -> float:
    caches: List[OrderedDict] = [OrderedDict() for _ in range(max(1, cfg.num_workers))]
    reads = hits = 0
    for step in range(steps):
        cache = caches[step % len(caches)]
        for index in range(step * cfg.batch_size, (step + 1) * cfg.batch_size):
            rng = random.Random(f"0:{index}")  # ClipDataset.rng(index) with seed 0
            video = videos[rng.randrange(len(videos))]
            frames = sample_clip_frames(video, cfg.clip_len, cfg.frame_range, rng)
            need = [t for t in frames if (video.id, t) not in cache]
            reads, hits = reads + len(frames), hits + len(frames) - len(need)
            for t in range(min(need), max(need) + 1) if need else ():
                cache[(video.id, t)] = True
            for t in frames:
                cache.move_to_end((video.id, t))
            while len(cache) > capacity:
                cache.popitem(last=False)
    return hits / max(reads, 1)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("labels")
    ap.add_argument("--min-keymasks", type=int, default=5)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--capacity", type=int, nargs="+", default=[60, 150, 300, 600])
    args = ap.parse_args(argv)
    cfg = DataConfig()
    ls = load_labelset(args.labels, min_keymasks=args.min_keymasks)
    videos = [v for v in ls.videos if v.objects and v.labelled_frames()]
    print(f"{len(videos)} videos, {args.steps} steps, batch {cfg.batch_size}, {cfg.num_workers} workers")
    print("| frames cached per worker | share of frame reads served |\n|---|---|")
    for cap in args.capacity:
        print(f"| {cap} | {hit_rate(videos, cfg, args.steps, cap):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
