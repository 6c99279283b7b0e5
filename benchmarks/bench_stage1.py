"""Stage-1 benchmark: single-frame masks on the shared DAVIS-2016 sequences.

For every sequence in ``--data`` (JPEGImages/480p/<seq>/*.jpg, Annotations/480p/<seq>/*.png; any nonzero
annotation pixel is foreground) and every ``--every``-th frame, each variant produces its masks and we
report per sequence and as the mean over sequences:

* best-mask J: per frame the max IoU over the frame's masks with the ground truth (no mask = 0);
* top-mask J: IoU of the top-scored mask;
* seconds per 480p frame for features, flow, NCut (incl. affinities) and refinement (CRF + scoring).

The ground truth is used only here, for measuring. Rows: the motion-only baseline (DIS t→t+1, RANSAC
homography, Otsu, largest component; ``s2d.features.camera.motion_mask_baseline``), ``lite0`` appearance
only, ``lite0`` + motion (the default), ``random`` features + motion as a floor, and ablations.

Flow for a frame is computed once (pairs t−1→t and t→t+1) and shared by all variants; its time is the
streaming cost per frame (one forward+backward DIS pair per frame, as ``segment_video`` computes it).

Usage::

    python benchmarks/bench_stage1.py --workers 2 --out benchmarks/results/stage1.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "davis2016"

# name -> (backbone or None, MaskConfig overrides, description)
VARIANTS: Dict[str, Tuple[object, dict, str]] = {
    "baseline": (None, {}, "motion-only baseline (DIS t→t+1, homography RANSAC, Otsu, largest component)"),
    "lite0_appearance": ("lite0", {"motion": False}, "lite0 features only, no motion"),
    "default": ("lite0", {}, "lite0 + motion (default settings)"),
    "random_motion": ("random", {}, "random features + motion (floor for the appearance cue)"),
    "motion_only_ncut": (None, {"use_features": False}, "no features: motion NCut + saliency candidate"),
    "default_no_crf": ("lite0", {"refine": "none"}, "default without the CRF"),
    "default_no_saliency": ("lite0", {"saliency_candidate": False}, "default without the saliency candidate"),
    "default_one_direction": ("lite0", {"bidirectional": False}, "default, motion towards t+1 only"),
    "default_sum_fusion": ("lite0", {"fusion": "sum"}, "default with weighted-sum instead of product fusion"),
    "default_512_tokens": ("lite0", {"max_tokens": 512}, "default with at most 512 graph nodes"),
    "default_k1": ("lite0", {"max_masks": 1}, "default with one cut per frame"),
}
DEFAULT_ROWS = ["baseline", "lite0_appearance", "default", "random_motion", "motion_only_ncut", "default_no_crf",
                "default_sum_fusion",
                "default_no_saliency", "default_one_direction"]


def _read_rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / u if u else 1.0


def run_sequence(args: Tuple[str, str, int, List[str], List[str], int]) -> dict:
    data, seq, every, variants, overrides, threads = args
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    try:  # BLAS threads too: idle spinning threads of concurrent processes otherwise distort timings
        import threadpoolctl

        threadpoolctl.threadpool_limits(threads)
    except ImportError:  # pragma: no cover
        pass
    from s2d.features.camera import motion_mask_baseline
    from s2d.features.flow import FlowConfig, flow_pair
    from s2d.frames import FrameSegmenter, MaskConfig, motion_from_flow

    root = Path(data)
    frames = sorted((root / "JPEGImages" / "480p" / seq).glob("*.jpg"))
    anns = root / "Annotations" / "480p" / seq
    segs = {}
    for v in variants:
        if v == "baseline":
            continue
        bb, ov, _ = VARIANTS[v]
        cfg = MaskConfig(**ov).with_overrides(overrides)
        segs[v] = FrameSegmenter(cfg, backbone=bb if cfg.use_features else None)
    fcfg = FlowConfig()
    out = {v: {"best": [], "top": [], "n_masks": [], "t": {"features": 0.0, "flow": 0.0, "ncut": 0.0, "refine": 0.0}}
           for v in variants}
    n = 0
    for t in range(0, len(frames), every):
        rgb = _read_rgb(frames[t])
        gt = cv2.imread(str(anns / (frames[t].stem + ".png")), cv2.IMREAD_GRAYSCALE) > 0
        nb = {}
        for dt in (-1, 1):
            if 0 <= t + dt < len(frames):
                nb[dt] = _read_rgb(frames[t + dt])
        # flow: one DIS pair per neighbour; the streaming cost per frame is one pair (shared by t and t+1)
        t0 = time.perf_counter()
        motions = []
        n_pairs = 0
        for dt in (-1, 1):
            if dt in nb:
                p = flow_pair(rgb, nb[dt], fcfg)
                n_pairs += 1
                motions.append(motion_from_flow(p.fwd, p.fwd_valid))
        t_flow = (time.perf_counter() - t0) / max(n_pairs, 1)
        n += 1
        for v in variants:
            rec = out[v]
            if v == "baseline":
                t0 = time.perf_counter()
                m = motion_mask_baseline(rgb, nb.get(1, nb.get(-1)), fcfg)
                rec["t"]["flow"] += time.perf_counter() - t0
                masks, scores = [m], [1.0]
            else:
                seg = segs[v]
                fm = seg.segment(rgb, motions if seg.cfg.motion else [], index=t)
                for k, s in fm.timings.items():
                    rec["t"][k] += s
                if seg.cfg.motion:
                    rec["t"]["flow"] += t_flow
                masks, scores = list(fm.masks), list(fm.scores)
            ious = [_iou(m, gt) for m in masks]
            rec["best"].append(max(ious) if ious else 0.0)
            rec["top"].append(ious[int(np.argmax(scores))] if ious else 0.0)
            rec["n_masks"].append(len(masks))
    res = {"sequence": seq, "frames": n, "variants": {}}
    for v in variants:
        rec = out[v]
        res["variants"][v] = {"best_J": float(np.mean(rec["best"])), "top_J": float(np.mean(rec["top"])),
                              "masks_per_frame": float(np.mean(rec["n_masks"])),
                              "seconds": {k: s / n for k, s in rec["t"].items()}}
    return res


def timing_run(data: str, seq: str, n_frames: int, threads: int) -> dict:
    """End-to-end streaming cost of the default pipeline (``segment_video`` over a 480p frame folder, as
    ``s2d masks`` runs it), in one process with ``threads`` torch/OpenCV/BLAS threads."""
    import tempfile

    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(threads)
    except ImportError:  # pragma: no cover
        pass
    from s2d.frames import FrameSegmenter, MaskConfig, segment_video

    src = sorted((Path(data) / "JPEGImages" / "480p" / seq).glob("*.jpg"))[:n_frames]
    with tempfile.TemporaryDirectory() as tmp:
        for p in src:
            os.symlink(p, Path(tmp) / p.name)
        seg = FrameSegmenter(MaskConfig(), backbone="lite0")
        seg.segment(_read_rgb(src[0]))  # warm-up (lazy imports, allocator)
        acc = {"features": 0.0, "flow": 0.0, "ncut": 0.0, "refine": 0.0}
        t0 = time.perf_counter()
        n = 0
        for fm in segment_video(tmp, seg):
            n += 1
            for k in acc:
                acc[k] += fm.timings.get(k, 0.0)
        wall = time.perf_counter() - t0
    return {"sequence": seq, "frames": n, "threads": threads, "wall_s_per_frame": wall / n,
            "steps_s_per_frame": {k: v / n for k, v in acc.items()}}


def summarize(results: List[dict], variants: List[str]) -> dict:
    summary = {}
    for v in variants:
        rows = [r["variants"][v] for r in results]
        secs = {k: float(np.average([r["seconds"][k] for r in rows], weights=[x["frames"] for x in results]))
                for k in rows[0]["seconds"]}
        summary[v] = {"best_J": float(np.mean([r["best_J"] for r in rows])),
                      "top_J": float(np.mean([r["top_J"] for r in rows])),
                      "masks_per_frame": float(np.mean([r["masks_per_frame"] for r in rows])),
                      "seconds": secs, "seconds_total": float(sum(secs.values()))}
    return summary


def to_markdown(results: List[dict], summary: dict, variants: List[str], command: str, meta: dict,
                timings: List[dict] = ()) -> str:
    lines = ["# Stage 1 — single-frame masks on the shared DAVIS-2016 sequences", "",
             f"Command: `{command}`", "",
             f"{meta['sequences']} sequences, every {meta['every']}th frame ({meta['frames']} frames), 854×480 input; "
             f"J = region IoU with the binary GT (any nonzero pixel); best = best mask of the frame, top = top-scored "
             f"mask; a frame without masks scores 0. Seconds per frame on {meta['threads']} torch/OpenCV thread(s) "
             f"per worker, {meta['workers']} worker(s), measured {meta['date']}; flow = one forward+backward DIS pair "
             f"(the streaming cost per frame).", "",
             "## Mean over sequences", "",
             "| variant | best-mask J | top-mask J | masks/frame | features s | flow s | NCut s | refine s | total s/frame |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v in variants:
        s = summary[v]
        t = s["seconds"]
        lines.append(f"| `{v}` — {VARIANTS[v][2]} | {s['best_J']:.3f} | {s['top_J']:.3f} | {s['masks_per_frame']:.2f} | "
                     f"{t['features']:.3f} | {t['flow']:.3f} | {t['ncut']:.3f} | {t['refine']:.3f} | {s['seconds_total']:.3f} |")
    if timings:
        lines += ["", "## End-to-end speed of the default pipeline (streaming, one process)", "",
                  "Per-variant seconds above are measured inside the parallel quality pass and include contention "
                  "from the other worker and any other load on the machine; this is `segment_video` over a 480p "
                  "frame folder as `s2d masks` runs it (decode, flow t→t+1 once per frame, features, NCut, CRF, "
                  "scoring, resizing to 854×480).", "",
                  "| sequence | frames | threads | wall s/frame | features | flow | NCut | refine |",
                  "|---|---|---|---|---|---|---|---|"]
        for tm in timings:
            st = tm["steps_s_per_frame"]
            lines.append(f"| {tm['sequence']} | {tm['frames']} | {tm['threads']} | {tm['wall_s_per_frame']:.3f} | "
                         f"{st['features']:.3f} | {st['flow']:.3f} | {st['ncut']:.3f} | {st['refine']:.3f} |")
    lines += ["", "## Per sequence (best-mask J / top-mask J)", "",
              "| sequence | frames | " + " | ".join(f"`{v}`" for v in variants) + " |",
              "|---|---|" + "---|" * len(variants)]
    for r in results:
        cells = [f"{r['variants'][v]['best_J']:.3f} / {r['variants'][v]['top_J']:.3f}" for v in variants]
        lines.append(f"| {r['sequence']} | {r['frames']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="DAVIS-2016 root (JPEGImages/480p, Annotations/480p)")
    ap.add_argument("--every", type=int, default=5, help="evaluate every N-th frame (default 5)")
    ap.add_argument("--variants", nargs="+", default=DEFAULT_ROWS, choices=sorted(VARIANTS), help="rows to run")
    ap.add_argument("--sequences", nargs="+", help="only these sequences (default: all)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="MaskConfig override applied to every non-baseline variant (for ablations)")
    ap.add_argument("--workers", type=int, default=2, help="parallel processes over sequences (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenCV threads per worker (default 1)")
    ap.add_argument("--timing-seqs", nargs="*", default=["bus", "tennis"], metavar="SEQ",
                    help="after the quality pass, time the default pipeline end to end (segment_video) on these "
                         "sequences with 1 and 2 threads (default: bus tennis — a large and a small object); "
                         "none given = skip")
    ap.add_argument("--timing-frames", type=int, default=30, metavar="N", help="frames per timed sequence (default 30)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stage1.md"),
                    help="markdown output (a .json beside it gets the raw numbers); '-' to only print")
    args = ap.parse_args(argv)
    seqs = args.sequences or sorted(p.name for p in (Path(args.data) / "JPEGImages" / "480p").iterdir() if p.is_dir())
    jobs = [(args.data, s, args.every, args.variants, args.overrides, args.threads) for s in seqs]
    t0 = time.time()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as ex:
            results = list(ex.map(run_sequence, jobs))
    else:
        results = [run_sequence(j) for j in jobs]
    summary = summarize(results, args.variants)
    timings = []
    for seq in args.timing_seqs or []:
        for th in (1, 2):
            with ProcessPoolExecutor(1) as ex:  # a fresh process per setting
                timings.append(ex.submit(timing_run, args.data, seq, args.timing_frames, th).result())
    meta = {"sequences": len(seqs), "every": args.every, "frames": sum(r["frames"] for r in results),
            "workers": args.workers, "threads": args.threads, "wall_s": time.time() - t0,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "overrides": args.overrides}
    command = "python benchmarks/bench_stage1.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md = to_markdown(results, summary, args.variants, command.strip(), meta, timings)
    print(md)
    for v in args.variants:
        s = summary[v]
        print(f"{v:24s} best {s['best_J']:.3f} top {s['top_J']:.3f} s/frame {s['seconds_total']:.3f}", file=sys.stderr)
    if args.out != "-":
        from s2d.io.atomic import atomic_write_text

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, md)
        atomic_write_text(out.with_suffix(".json"), json.dumps(
            {"command": command, "meta": meta, "summary": summary, "timing": timings, "sequences": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
