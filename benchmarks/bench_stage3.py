"""Stage-3 quality benchmark (issues 6 and 7): DAVIS J&F of keymask pseudo-labels vs trained models.

For every method, every shared DAVIS-2016 sequence is written as DAVIS palette PNGs under
``WORK/<method>/<seq>/`` and scored with ``s2d.eval.davis.evaluate_davis`` (our scorer, equal to the official
code) in two protocols (SPEC §9):

* ``union`` — the headline for DAVIS-2016's binary GT: all predicted ids merged into one foreground;
* ``unsupervised`` — the official unsupervised protocol: the best-matching single predicted id.

Results are reported on the two fixed splits of SPEC §9: ``unseen`` (boat, breakdance-flare, dog-agility,
hockey, kite-walk, motocross-bumps, stroller — never trained on, not even their frames) and ``seen`` (the
other 16, whose frames — never their GT — were training data).

Methods:

* ``single-frame-top1`` / ``single-frame-all`` (``--single-frame DIR``): stage 1 alone — each frame's
  top-scored mask, or all its masks linked frame to frame by mask IoU (the "no stage 2/3" baselines).
* ``pseudo`` (``--pseudo FILE``): the sparse keymask pseudo-labels of ``s2d discover`` over all 23 sequences;
  frames without a keymask are empty. ``pseudo-salient`` (``--pseudo-min-saliency S``): only the objects
  training keeps (``data.min_saliency``) — exactly what stage 3 trains on.
* ``NAME=CHECKPOINT`` (``--model``, repeatable): a trained model run as ``s2d segment`` runs it (streaming
  chunks linked by mask IoU, :mod:`s2d.infer`), with ``--score-threshold``/``--chunk``/``--overlap``/
  ``--max-side``/``--refine`` as given.

GT is used only here, for measuring. Usage::

    python benchmarks/bench_stage3.py --pseudo /tmp/s2d_b2/discover/pseudo_labels.json \\
        --model distilled=runs/train_seen/distill/model.pt \\
        --model self-distilled=runs/train_seen/self-distill/model.pt \\
        --work /tmp/s2d_b3 --out benchmarks/results/stage3.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

DATA = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016")
UNSEEN = ("boat", "breakdance-flare", "dog-agility", "hockey", "kite-walk", "motocross-bumps", "stroller")


def _sequences(data: str) -> List[str]:
    return sorted(p.name for p in (Path(data) / "JPEGImages" / "480p").iterdir() if p.is_dir())


def write_pseudo(pseudo: str, out: Path, seqs: List[str], min_saliency: float = 0.0) -> None:
    """Write the keymask pseudo-labels of every sequence as DAVIS PNGs (frames without keymask: empty);
    with ``min_saliency`` only the objects training keeps (``data.min_saliency``)."""
    from s2d.io import formats
    from s2d.io.formats.ytvis import read_ytvis

    by_name = {Path(v.name or "").name: v for v in read_ytvis(pseudo)}
    if min_saliency > 0:
        for v in by_name.values():
            v.tracks = [t for t in v.tracks if t.extra.get("saliency", 1.0) >= min_saliency]
    missing = [s for s in seqs if s not in by_name]
    if missing:
        raise SystemExit(f"{pseudo}: no pseudo-labels for {', '.join(missing)}")
    for s in seqs:
        v = by_name[s]
        frames = sorted(p.stem for p in (Path(DATA) / "JPEGImages" / "480p" / s).glob("*.jpg"))
        v.frame_names = frames
        formats.write_davis(out / s, v)


def write_single_frame(masks_dir: str, out: Path, seqs: List[str], top: Optional[int], link_iou: float = 0.3) -> None:
    """Stage-1 masks (``s2d masks`` JSON per sequence, as bench_stage2 saves them) linked frame to frame by
    mask IoU (Hungarian, ≥ ``link_iou``; else a new id) — the "no stage 2/3" baseline. ``top``: keep only the
    ``top`` highest-scored masks of each frame (None: all). DAVIS frames are named 00000… as the PNGs written."""
    from bench_dev import write_stage1

    files = {Path(p).name.split(".")[0].split("__")[-1]: p for p in Path(masks_dir).glob("*.json")}
    for s in seqs:
        write_stage1(Path(files[s]), out / s, top, link_iou)


def write_model(ckpt: str, out: Path, seqs: List[str], cfg_kwargs: Dict) -> Dict[str, float]:
    """Segment every sequence with the model as ``s2d segment`` does; returns seconds per frame."""
    from s2d.infer import SegmentConfig, segment_video

    cfg = SegmentConfig(model=ckpt, **cfg_kwargs)
    t0, frames = time.perf_counter(), 0
    tmp = out.parent / (out.name + "_segment")
    for s in seqs:
        src = Path(DATA) / "JPEGImages" / "480p" / s
        summary = segment_video(str(src), str(tmp), cfg, formats=("davis",), progress=False)
        frames += int(summary["frames"]) if isinstance(summary, dict) else len(list(src.glob("*.jpg")))
        dst = out / s
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            import shutil

            shutil.rmtree(dst)
        os.replace(tmp / s / "davis", dst)
    return {"s_per_frame": (time.perf_counter() - t0) / max(frames, 1), "frames": frames}


def score(pred: Path, seqs: List[str]) -> Dict[str, Dict]:
    from s2d.eval.davis import evaluate_davis

    res = {}
    for protocol in ("union", "unsupervised"):
        rep = evaluate_davis(DATA, pred, protocol=protocol, sequences=seqs, progress=False)
        per = {}
        for sq in rep["sequences"]:
            objs = sq["objects"]
            per[sq["name"] if "name" in sq else sq.get("sequence")] = {
                "J": float(np.mean([o["J-Mean"] for o in objs])), "F": float(np.mean([o["F-Mean"] for o in objs]))}
        res[protocol] = per
    return res


def split_means(per: Dict[str, Dict], seqs: List[str]) -> Dict[str, float]:
    J = [per[s]["J"] for s in seqs]
    F = [per[s]["F"] for s in seqs]
    return {"J": float(np.mean(J)), "F": float(np.mean(F)), "JF": float((np.mean(J) + np.mean(F)) / 2)}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pseudo", default=None, help="pseudo_labels.json of s2d discover over all 23 sequences")
    ap.add_argument("--single-frame", default=None, metavar="MASKS_DIR",
                    help="stage-1 masks per sequence (bench_stage2's WORK/masks): adds 'single-frame top-1' and "
                         "'single-frame all' (all masks, linked frame to frame by IoU)")
    ap.add_argument("--pseudo-min-saliency", type=float, default=None,
                    help="also score the pseudo-labels training keeps (objects with saliency >= this)")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=CKPT")
    ap.add_argument("--work", default="/tmp/s2d_bench_stage3", help="outputs (never inside the repo)")
    ap.add_argument("--score-threshold", type=float, default=None)
    ap.add_argument("--chunk", type=int, default=None)
    ap.add_argument("--overlap", type=int, default=None)
    ap.add_argument("--max-side", type=int, default=None)
    ap.add_argument("--refine", default=None, choices=("none", "crf"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seqs", nargs="*", default=None)
    ap.add_argument("--out", default=None, help="markdown report")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    seqs = a.seqs or _sequences(DATA)
    unseen = [s for s in seqs if s in UNSEEN]
    seen = [s for s in seqs if s not in UNSEEN]
    work = Path(a.work)
    cfg_kwargs = {k: v for k, v in (("score_threshold", a.score_threshold), ("chunk", a.chunk),
                                    ("overlap", a.overlap), ("max_side", a.max_side), ("refine", a.refine))
                  if v is not None}
    methods = []
    if a.single_frame:
        methods += [("single-frame-top1", "sf:1"), ("single-frame-all", "sf:0")]
    if a.pseudo:
        methods.append(("pseudo", None))
        if a.pseudo_min_saliency:
            methods.append(("pseudo-salient", None))
    for m in a.model:
        name, _, ckpt = m.partition("=")
        methods.append((name, ckpt))
    rows, per_seq = [], {}
    for name, ckpt in methods:
        out = work / name
        info: Dict[str, float] = {}
        if ckpt is None:
            write_pseudo(a.pseudo, out, seqs, a.pseudo_min_saliency if name == "pseudo-salient" else 0.0)
        elif ckpt.startswith("sf:"):
            write_single_frame(a.single_frame, out, seqs, int(ckpt[3:]) or None)
        else:
            info = write_model(ckpt, out, seqs, cfg_kwargs)
        res = score(out, seqs)
        per_seq[name] = res
        row = {"method": name, **info}
        for split, ss in (("unseen", unseen), ("seen", seen)):
            if not ss:
                continue
            for protocol in ("union", "unsupervised"):
                for k, v in split_means(res[protocol], ss).items():
                    row[f"{split}_{protocol}_{k}"] = v
        rows.append(row)
        print(json.dumps(row), flush=True)
    cmd = "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))
    lines = ["| method | split | union J | union F | union J&F | unsup. J | unsup. F | unsup. J&F | s/frame |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for split in ("unseen", "seen"):
            if f"{split}_union_J" not in r:
                continue
            vals = [r[f"{split}_{p}_{k}"] for p in ("union", "unsupervised") for k in ("J", "F", "JF")]
            spf = f"{r['s_per_frame']:.3f}" if "s_per_frame" in r else "–"
            lines.append(f"| {r['method']} | {split} ({len(unseen if split == 'unseen' else seen)}) | "
                         + " | ".join(f"{v:.3f}" for v in vals) + f" | {spf} |")
    seq_lines = ["| seq | split | " + " | ".join(f"{n} union J" for n, _ in methods) + " |",
                 "|---|---|" + "---|" * len(methods)]
    for s in seqs:
        seq_lines.append(f"| {s} | {'unseen' if s in UNSEEN else 'seen'} | "
                         + " | ".join(f"{per_seq[n]['union'][s]['J']:.3f}" for n, _ in methods) + " |")
    md = "\n".join([f"Command: `{cmd}`", "", f"Segment settings: {cfg_kwargs or 'defaults'}", "",
                    *lines, "", *seq_lines, ""])
    print(md)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(md)
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "per_seq": per_seq}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
