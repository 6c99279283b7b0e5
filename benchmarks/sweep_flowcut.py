"""How the FlowCut-style discovery defaults (``k``, ``iou_threshold``, ``min_length``) were chosen (issue #17).

The FlowCut paper's values are unknown here (only its abstract was available), so they are chosen on the 16
``seen`` DAVIS-2016 sequences of the shared data (the 7 ``unseen`` ones are never tuned on). For every ``k`` and
``iou_threshold`` of the grid, ``s2d discover --method flowcut`` runs once with ``min_length=1`` on the cached
stage-1 masks; ``min_length`` only drops short segments afterwards, so each value of it is scored from the same
run with ``load_labelset(min_keymasks=L)`` (a segment's length is its number of labelled frames). Objects are
gated as the ``cpu`` training preset gates them (``saliency >= 0.5``), then scored with
``bench_labels.sequence_measures`` (coverage, frame J, identity).

Usage::

    nice -n 10 python benchmarks/sweep_flowcut.py --masks /work/cache/stage1 --work /tmp/flowcut/sweep \\
        --out benchmarks/results/flowcut_sweep.md
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_labels as BL  # noqa: E402

SEEN = ("bmx-bumps bus dance-jump drift-turn flamingo horsejump-low mallard-fly mallard-water motorbike paragliding "
        "rollerblade scooter-gray soccerball surf swing tennis").split()


def run(sequences: List[str], data: Path, masks: Path, out: Path, sets: List[str]) -> Path:
    """One ``s2d discover --method flowcut`` run (in-process, one worker) → its pseudo_labels.json."""
    from s2d.keymasks.run import DiscoverSettings, collect_inputs, run_discovery

    if (out / "pseudo_labels.json").is_file():
        return out / "pseudo_labels.json"
    dirs = [str(data / "davis2016" / "JPEGImages" / "480p" / s) for s in sequences]
    root, videos = collect_inputs(dirs, root=str(data))
    settings = DiscoverSettings(method="flowcut", masks_from=str(masks), threads=1).with_overrides(sets)
    report = run_discovery(videos, str(out), settings, root=root, progress=False)
    return Path(str(report.merged))


def score(labels: Path, data: Path, min_length: int) -> Dict[str, float]:
    """Mean per-sequence measures of the objects with saliency >= 0.5 and at least ``min_length`` frames."""
    from s2d.train.data import load_labelset

    full = load_labelset(labels, min_keymasks=min_length)
    kept = load_labelset(labels, min_saliency=0.5, min_keymasks=min_length)
    counts = {v.id: len(v.objects) for v in full.videos}
    rows = []
    for v in kept.videos:
        gt = BL.gt_folder(v.source, data)
        if gt is not None:
            rows.append(BL.sequence_measures(v, counts[v.id], gt))
    timings = BL.run_timings(labels.parent)
    keys = ("objects", "kept", "coverage", "frame_J", "fragments", "switches", "main_id")
    out = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    out["s_per_frame"] = float(np.mean(list(timings.values())))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(BL.SHARED), help="the shared data folder")
    ap.add_argument("--masks", required=True, help="folder of cached stage-1 masks (<seq>.json, s2d masks)")
    ap.add_argument("--work", required=True, help="folder for the runs (reused when present)")
    ap.add_argument("--k", default="1,2,3")
    ap.add_argument("--iou", default="0.3,0.5,0.7")
    ap.add_argument("--min-length", default="1,3,5,8")
    ap.add_argument("--out", default=None, help="markdown table")
    a = ap.parse_args(argv)
    data, work = Path(a.data), Path(a.work)
    grid = [(int(k), float(i), True) for k, i in itertools.product(a.k.split(","), a.iou.split(","))]
    grid.append((2, 0.5, False))  # without flow warping, for comparison
    lines = [f"Command: `python benchmarks/sweep_flowcut.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             "", "16 seen DAVIS-2016 sequences, objects with saliency >= 0.5; means over sequences.", "",
             "| k | iou_threshold | warp | min_length | objects | kept | coverage | frame J | fragments | "
             "switches | main id | s/frame |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, iou, warp in grid:
        sets = [f"flowcut.k={k}", f"flowcut.iou_threshold={iou}", "flowcut.min_length=1", f"flowcut.warp={warp}"]
        labels = run(SEEN, data, Path(a.masks), work / f"k{k}_iou{iou}_warp{int(warp)}", sets)
        for length in (int(x) for x in a.min_length.split(",")):
            m = score(labels, data, length)
            lines.append(f"| {k} | {iou} | {'yes' if warp else 'no'} | {length} | {m['objects']:.1f} | "
                         f"{m['kept']:.1f} | {m['coverage']:.3f} | {m['frame_J']:.3f} | {m['fragments']:.2f} | "
                         f"{m['switches']:.2f} | {m['main_id']:.3f} | {m['s_per_frame']:.3f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
