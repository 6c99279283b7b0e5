"""`s2d report` generation time, and the CVAT / FiftyOne round trips, on a real `s2d segment` output (issue #19).

Give it the folder `s2d segment` wrote for one video (``OUT/NAME`` with ``results.json`` and ``overlay.mp4``)::

    s2d segment examples/bikes.mp4 -o /tmp/out --format ytvis,davis,overlay
    python benchmarks/bench_report.py /tmp/out/bikes --out benchmarks/results/report.md

It times :func:`s2d.report.build_report` on a run folder holding only that video (``--repeat`` times, each
into a fresh page folder), then writes the results as CVAT XML in both layouts and reads them back, and
passes every frame's detections through FiftyOne's own ``Detection`` serialisation where fiftyone imports;
a round trip counts as identical when every id, frame and pixel is.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import numpy as np


def same_masks(a, b) -> bool:
    """Identical ids, frame count and masks (an empty mask counts as absent: neither format stores one)."""
    if a.ids != b.ids or a.num_frames != b.num_frames:
        return False
    for ta, tb in zip(a.tracks, b.tracks):
        for t in range(a.num_frames):
            ma, mb = ta.mask(t), tb.mask(t)
            ma = None if ma is None or not ma.any() else ma
            mb = None if mb is None or not mb.any() else mb
            if (ma is None) != (mb is None) or (ma is not None and not np.array_equal(ma, mb)):
                return False
    return True


def time_report(folder: Path, repeat: int) -> List[float]:
    from s2d.report import build_report

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        (run / folder.name).symlink_to(folder.resolve())
        for i in range(repeat):
            start = time.perf_counter()
            build_report(run, output=Path(tmp) / f"page{i}.html", progress=False)
            times.append(time.perf_counter() - start)
    return times


def cvat_rows(video) -> List[str]:
    from s2d.io.formats.cvat import read_cvat, write_cvat

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for layout in ("shapes", "tracks"):
            path = Path(tmp) / f"{layout}.xml"
            t0 = time.perf_counter()
            write_cvat(path, video, layout=layout)
            t1 = time.perf_counter()
            back = read_cvat(path)
            t2 = time.perf_counter()
            rows.append(f"| CVAT XML, layout `{layout}` | {'yes' if same_masks(video, back) else 'NO'} | "
                        f"{path.stat().st_size / 1e6:.2f} MB | {t1 - t0:.2f} s | {t2 - t1:.2f} s |")
    return rows


def fiftyone_row(video) -> str:
    try:
        import fiftyone as fo
    except ImportError:
        return "| FiftyOne `fo.Detection` (to_dict/from_dict) | not run: fiftyone not installed | | | |"
    import json

    from s2d.io.formats.fiftyone import detections_to_frame, frame_detections
    from s2d.types import VideoSegmentation

    t0 = time.perf_counter()
    frames, cats = [], {"object": 1}
    for number, dets in frame_detections(video):
        stored = [fo.Detection.from_dict(json.loads(json.dumps(d.to_dict(extended=True)))) for d in dets]
        frames.append(detections_to_frame(number - 1, stored, video.size, cats))
    back = VideoSegmentation.from_frames(frames, video.height, video.width, num_frames=video.num_frames)
    dt = time.perf_counter() - t0
    return (f"| FiftyOne {fo.__version__} `fo.Detection` (to_dict/from_dict) | "
            f"{'yes' if same_masks(video, back) else 'NO'} | | {dt:.2f} s (both ways) | |")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="an s2d segment output folder of one video (OUT/NAME)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, help="write the markdown table here too")
    args = ap.parse_args(argv)

    from s2d.io.formats import read_ytvis

    videos = read_ytvis(args.folder / "results.json")
    video = videos[0] if isinstance(videos, list) else videos
    times = time_report(args.folder, args.repeat)
    lines = [
        f"# `s2d report` time and export round trips ({args.folder.name}: {video.num_frames} frames, "
        f"{video.width}x{video.height}, {len(video.tracks)} objects)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}; "
        f"command: `python benchmarks/bench_report.py {args.folder} --repeat {args.repeat}`.",
        "",
        "| step | seconds |",
        "|---|---|",
        f"| `build_report` (page, {len(video.tracks)} thumbnails, {len(video.tracks)} sparklines, timeline), "
        f"median of {args.repeat} | {statistics.median(times):.2f} (runs: {', '.join(f'{t:.2f}' for t in times)}) |",
        "",
        "| round trip | identical masks | file | write | read |",
        "|---|---|---|---|---|",
        *cvat_rows(video),
        fiftyone_row(video),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
