"""Clip reads from the middle of real videos: seeking to the keyframe vs decoding from frame 0 (issue #18).

For every ``.mp4`` under ``--videos`` (default: the shared clips), reads 3-frame clips at three positions (a
quarter, half and 90 % into the video) twice — with :func:`s2d.io.video.open_video`'s keyframe seek, and with it
off (decoding every frame from the first, the behaviour before) — checks that the frames are identical, and
reports the read times. Also a 2,000-frame video made by concatenating a shared clip (``--long``).

Usage::

    python benchmarks/bench_seek.py                      # all shared mp4 clips
    python benchmarks/bench_seek.py --out benchmarks/results/seek.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def read_clip(path: Path, start: int, n: int, seek: bool) -> List[np.ndarray]:
    import s2d.io.video as video_io

    saved = video_io.SEEK_MIN_FRAMES
    video_io.SEEK_MIN_FRAMES = saved if seek else 10**12
    try:
        with video_io.open_video(path, start=start, end=start + n) as v:
            return [f.rgb for f in v]
    finally:
        video_io.SEEK_MIN_FRAMES = saved


def make_long(src: Path, out: Path, frames: int) -> Path:
    """A ``frames``-long mp4 of ``src`` played forward and back (a real, long, constant-rate video)."""
    from s2d.io.video import VideoWriter, open_video

    with open_video(src, max_side=640) as v:
        clip = [f.rgb for f in v]
        fps = v.info.fps or 25.0
    seq = clip + clip[::-1][1:-1]
    with VideoWriter(out, fps, clip[0].shape[1], clip[0].shape[0]) as w:
        for i in range(frames):
            w.write(seq[i % len(seq)])
    return out


def _middle(rows: List[str], frames: int) -> str:
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        if cells[0] == f"long{frames}.mp4" and cells[2] == str(frames // 2):
            return f"seek {cells[4]} s vs {cells[5]} s"
    return "–"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", default=str(SHARED / "videos"))
    ap.add_argument("--long", type=int, default=2000, help="frames of the long test video (0: skip)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    from s2d.io.video import probe_video

    paths = sorted(Path(a.videos).rglob("*.mp4"))
    if a.long:
        import tempfile

        tmp = Path(tempfile.mkdtemp())
        paths.append(make_long(paths[0], tmp / f"long{a.long}.mp4", a.long))
    rows, same, t_seek, t_seq = [], True, [], []
    for p in paths:
        n = probe_video(p).total_frames or 0
        if n < 40:
            continue
        for frac in (0.25, 0.5, 0.9):
            start = int(n * frac)
            t0 = time.perf_counter()
            fast = read_clip(p, start, 3, True)
            t1 = time.perf_counter()
            slow = read_clip(p, start, 3, False)
            t2 = time.perf_counter()
            ok = len(fast) == len(slow) == 3 and all(np.array_equal(x, y) for x, y in zip(fast, slow))
            same &= ok
            t_seek.append(t1 - t0)
            t_seq.append(t2 - t1)
            rows.append(f"| {p.name} | {n} | {start} | {'yes' if ok else '**NO**'} | {t1 - t0:.3f} | {t2 - t1:.3f} |")
    cmd = "python benchmarks/bench_seek.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        f"Command: `{cmd.strip()}`", "",
        f"{len(rows)} clip reads (3 frames each) in {len(paths)} videos; frames identical in all: "
        f"{'yes' if same else 'NO'}. All reads: seek {sum(t_seek):.1f} s, from frame 0 {sum(t_seq):.1f} s "
        f"(× {sum(t_seq) / max(sum(t_seek), 1e-9):.1f}); the middle of the {a.long}-frame video: "
        f"{_middle(rows, a.long)}.", "",
        "| video | frames | start | identical | seek s | from frame 0 s |", "|---|---|---|---|---|---|", *rows]) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
