"""The dev benchmark (issue "Instances that hold on unseen video", SPEC §9): one command, every headline number.

For stage 1's top mask and for each model, on the same frames:

* **single-object** — the 14-sequence dev split (the 7 ``unseen`` sequences of ``data/davis2016`` plus the 7 mp4
  sequences of ``data/davis2016-dev``): union-of-instances J / F / J&F (DAVIS-2016 binary GT) and the matched single
  instance's J&F (official unsupervised protocol, Hungarian matching of predicted ids to the object);
* **multi-object** — 7 dev mosaics: 2×2 tilings of four dev sequences at half size (854×480 in all), each tile's
  GT object its own instance, length = the shortest of the four; every dev sequence lies in two mosaics, at two
  different tile positions. Scored with the DAVIS-2017 unsupervised protocol (``s2d eval davis``);
* **identity** — per GT object of the mosaics: *fragments* (distinct predicted ids that were the object's dominant
  id on some frame; ideally 1), *id switches* (changes of the dominant id between consecutive frames where it has
  one) and *merged* (share of the object's frames whose dominant id also holds ≥ 25 % of another object). The
  dominant id of a frame is the predicted id holding most of the object's pixels, if it holds at least 25 %;
* **overlays** of four shared multi-object clips (``data/videos/more``), with a contact sheet PNG per clip and the
  number of ids it issued, for looking.

Stage 1 runs ``s2d masks`` with its defaults (cached under ``WORK/stage1``; ``--fresh-stage1`` recomputes it). Its
"top mask" row takes each frame's top-scored mask as the one object; the "all masks" row links all of a frame's
masks to the previous frame's by mask IoU (the no-stage-2/3 multi-object baseline). Models run as ``s2d segment``
runs them (``s2d.infer.segment_video``), with its defaults unless a flag changes them.

GT is read only here, for measuring. DAVIS data never enters the repository: everything is written under ``--work``.

Usage::

    python benchmarks/bench_dev.py --model shipped=default --work /tmp/s2d_dev \\
        --out benchmarks/results/dev_shipped.md --json /tmp/s2d_dev/shipped.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
UNSEEN = ("boat", "breakdance-flare", "dog-agility", "hockey", "kite-walk", "motocross-bumps", "stroller")
CLIPS = ("intel_cars_overhead", "sam2_juggle", "intel_walking_trio", "boofcv_horses")
TILE = (240, 427)  # half of 480×854
COVER = 0.25  # a predicted id "holds" an object on a frame when it has at least this share of its pixels


@dataclass(frozen=True)
class Seq:
    """One dev input: ``source`` (frame folder or mp4) and its GT folder of PNGs."""

    name: str
    source: Path
    gt: Path


def dev_sequences(data: Path = SHARED) -> List[Seq]:
    d16, dev = data / "davis2016", data / "davis2016-dev"
    seqs = [Seq(s, d16 / "JPEGImages" / "480p" / s, d16 / "Annotations" / "480p" / s) for s in UNSEEN]
    for mp4 in sorted((dev / "videos").glob("*.mp4")):
        seqs.append(Seq(mp4.stem, mp4, dev / "Annotations" / "480p" / mp4.stem))
    missing = [str(s.source) for s in seqs if not s.source.exists() or not s.gt.is_dir()]
    if missing or len(seqs) != 14:
        raise SystemExit(f"dev split incomplete under {data}: {len(seqs)} sequences, missing {missing}")
    return seqs


def mosaic_groups(names: Sequence[str]) -> List[Tuple[str, ...]]:
    """7 groups of 4: group i takes sequences 2i..2i+3 (cyclic), so each sequence is in two mosaics, once in a
    top and once in a bottom tile."""
    n = len(names)
    return [tuple(names[(2 * i + k) % n] for k in range(4)) for i in range(n // 2)]


def read_frames(source: Path) -> List[np.ndarray]:
    from s2d.io.video import open_video

    with open_video(source) as st:
        return [f.rgb for f in st]


def read_gt(folder: Path) -> List[np.ndarray]:
    from PIL import Image

    out = []
    for p in sorted(folder.glob("*.png")):
        a = np.asarray(Image.open(p))
        out.append((a.any(-1) if a.ndim == 3 else a > 0))  # binary DAVIS-2016 GT: any nonzero pixel (SPEC §9)
    return out


def build_gt_root(seqs: Sequence[Seq], root: Path) -> Path:
    """One DAVIS root over both shared folders (symlinks, so nothing is copied)."""
    ann = root / "Annotations" / "480p"
    ann.mkdir(parents=True, exist_ok=True)
    for s in seqs:
        link = ann / s.name
        if not link.exists():
            link.symlink_to(s.gt, target_is_directory=True)
    return root


def build_mosaics(seqs: Sequence[Seq], work: Path) -> List[Seq]:
    """Write each mosaic's frames (JPEG q95) and palette GT (ids 1-4 by tile) under ``work``; cached."""
    import cv2
    from PIL import Image

    from s2d.io.formats.davis import davis_palette

    by_name = {s.name: s for s in seqs}
    out = []
    for i, group in enumerate(mosaic_groups([s.name for s in seqs])):
        name = f"mosaic{i}"
        fdir, gdir = work / "mosaics" / "frames" / name, work / "mosaics" / "Annotations" / "480p" / name
        out.append(Seq(name, fdir, gdir))
        if (gdir / "done").exists():
            continue
        frames = [read_frames(by_name[g].source) for g in group]
        gts = [read_gt(by_name[g].gt) for g in group]
        T = min(min(len(f) for f in frames), min(len(g) for g in gts))
        shutil.rmtree(fdir, ignore_errors=True)
        shutil.rmtree(gdir, ignore_errors=True)
        fdir.mkdir(parents=True)
        gdir.mkdir(parents=True)
        th, tw = TILE
        for t in range(T):
            img = np.zeros((2 * th, 2 * tw, 3), np.uint8)
            lab = np.zeros((2 * th, 2 * tw), np.uint8)
            for k in range(4):
                y, x = (k // 2) * th, (k % 2) * tw
                img[y:y + th, x:x + tw] = cv2.resize(frames[k][t], (tw, th), interpolation=cv2.INTER_AREA)
                g = cv2.resize(gts[k][t].astype(np.uint8), (tw, th), interpolation=cv2.INTER_NEAREST)
                lab[y:y + th, x:x + tw][g > 0] = k + 1
            Image.fromarray(img).save(fdir / f"{t:05d}.jpg", quality=95)
            pim = Image.fromarray(lab, mode="P")
            pim.putpalette(davis_palette().reshape(-1).tolist())
            pim.save(gdir / f"{t:05d}.png")
        (gdir / "tiles.json").write_text(json.dumps(list(group)))
        (gdir / "done").write_text("")
    return out


# --------------------------------------------------------------------------- stage 1
def stage1(inputs: Sequence[Seq], cache: Path, workers: int, fresh: bool) -> Dict[str, Path]:
    """``s2d masks`` (defaults, one thread each) per input, cached as ``cache/<name>.json``."""
    cache.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    todo = [s for s in inputs if fresh or not (cache / f"{s.name}.json").is_file()]

    def run(s: Seq) -> None:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "s2d", "masks", str(s.source), "-o", str(cache / f"{s.name}.json")],
                           env=env, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"s2d masks failed on {s.source}: {r.stderr.strip().splitlines()[-1:]}")
        print(f"stage 1 {s.name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(run, todo))
    return {s.name: cache / f"{s.name}.json" for s in inputs}


def write_stage1(masks_json: Path, out: Path, top: Optional[int], link_iou: float = 0.3) -> None:
    """Stage-1 masks as DAVIS PNGs: each frame's ``top`` best-scored masks (None: all), linked to the previous
    frame's by mask IoU (Hungarian, ≥ ``link_iou``; else a new id)."""
    from scipy.optimize import linear_sum_assignment

    from s2d import rle as R
    from s2d.io.formats.ytvis import read_ytvis
    from s2d.io import formats
    from s2d.types import Track, VideoSegmentation

    v = read_ytvis(masks_json)[0]
    T = v.num_frames
    per_frame: List[List[tuple]] = [[] for _ in range(T)]
    for tr in v.tracks:
        for t, m in enumerate(tr.masks):
            if m is not None:
                per_frame[t].append((tr.score, m))
    tracks: Dict[int, list] = {}
    scores: Dict[int, List[float]] = {}
    prev: List[tuple] = []
    next_id = 1
    for t in range(T):
        cur = sorted(per_frame[t], key=lambda x: -x[0])[:top]
        dec = [R.decode(m) for _, m in cur]
        ids = [0] * len(cur)
        if prev and cur:
            iou = np.array([[np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1) for _, b in prev]
                            for a in dec])
            for i, j in zip(*linear_sum_assignment(-iou)):
                if iou[i, j] >= link_iou:
                    ids[i] = prev[j][0]
        for i in range(len(cur)):
            if not ids[i]:
                ids[i], next_id = next_id, next_id + 1
            tracks.setdefault(ids[i], [None] * T)[t] = cur[i][1]
            scores.setdefault(ids[i], []).append(cur[i][0])
        prev = [(ids[i], dec[i]) for i in range(len(cur))]
    # DAVIS ids are 1..255: keep the 255 tracks with the largest total score
    keep = sorted(tracks, key=lambda k: -sum(scores[k]))[:255]
    vs = VideoSegmentation(v.height, v.width, T, [Track(k, tracks[k], float(np.mean(scores[k]))) for k in keep],
                           frame_names=[f"{t:05d}" for t in range(T)])
    formats.write_davis(out, vs)


# --------------------------------------------------------------------------- models
def segment_config(model_path: str, overrides: Sequence[str]):
    """``s2d segment``'s settings: its defaults, then ``KEY=VALUE`` overrides (as its ``--set``)."""
    from s2d.infer import SegmentConfig
    from s2d.settings import apply_overrides

    return apply_overrides(SegmentConfig(model=model_path), list(overrides), "segment")


def segment_all(model_path: str, inputs: Sequence[Seq], out: Path, overrides: Sequence[str],
                formats: Tuple[str, ...] = ("davis",)) -> Dict[str, float]:
    """Every input through ``s2d segment``'s code path; ``out/<name>/davis/*.png``. Returns speed and ids."""
    from s2d.infer import segment_video
    from s2d.infer.weights import load_model

    cfg = segment_config(model_path, overrides)
    model = load_model(cfg.model, cfg.device)
    t0, frames, ids = time.perf_counter(), 0, {}
    for s in inputs:
        shutil.rmtree(out / s.name, ignore_errors=True)
        summary = segment_video(str(s.source), str(out), cfg, formats=formats, model=model, progress=False,
                                name=s.name)
        frames += summary.frames
        ids[s.name] = int(summary.objects)
    return {"s_per_frame": (time.perf_counter() - t0) / max(frames, 1), "frames": frames, "ids": ids}


# --------------------------------------------------------------------------- scoring
def davis_scores(gt_root: Path, pred: Path, names: Sequence[str], protocol: str) -> Dict[str, Dict[str, float]]:
    from s2d.eval.davis import evaluate_davis

    rep = evaluate_davis(gt_root, pred, protocol=protocol, sequences=list(names), progress=False)
    return {sq["sequence"]: {"J": float(sq["J-Mean"]), "F": float(sq["F-Mean"])} for sq in rep["sequences"]}


def mean_jf(per: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    J = float(np.mean([v["J"] for v in per.values()]))
    F = float(np.mean([v["F"] for v in per.values()]))
    return {"J": J, "F": F, "JF": (J + F) / 2}


def identity(gt_dir: Path, pred_dir: Path) -> List:
    """:func:`s2d.eval.identity.identity_stats` of one sequence's PNGs (``pred_dir`` or ``pred_dir/davis``)."""
    from PIL import Image

    from s2d.eval.identity import identity_stats

    sub = pred_dir / "davis" if (pred_dir / "davis").is_dir() else pred_dir

    def frames():
        for gp in sorted(gt_dir.glob("*.png")):
            pp = sub / gp.name
            yield np.asarray(Image.open(gp)), (np.asarray(Image.open(pp)) if pp.is_file() else None)

    return identity_stats(frames(), cover=COVER)


def score_method(pred_single: Path, pred_mosaic: Path, gt_single: Path, gt_mosaic: Path, single: Sequence[Seq],
                 mosaics: Sequence[Seq]) -> Dict:
    names = [s.name for s in single]
    mnames = [m.name for m in mosaics]
    union = davis_scores(gt_single, pred_single, names, "union")
    unsup = davis_scores(gt_single, pred_single, names, "unsupervised")
    mosaic = davis_scores(gt_mosaic, pred_mosaic, mnames, "unsupervised")
    from s2d.eval.identity import mean_identity

    idm = mean_identity([o for m in mosaics for o in identity(m.gt, pred_mosaic / m.name)])
    return {"union": mean_jf(union), "unsup": mean_jf(unsup), "mosaic": mean_jf(mosaic), "identity": idm,
            "per_seq": {"union": union, "unsup": unsup, "mosaic": mosaic}}


# --------------------------------------------------------------------------- overlays
def overlays(model_path: str, out: Path, overrides: Sequence[str], data: Path = SHARED) -> Dict[str, Dict]:
    """Segment the shared multi-object clips with overlays; a contact sheet PNG (6 frames) per clip."""
    import cv2

    from s2d.infer.predictor import VideoPredictor
    from s2d.infer.weights import load_model
    from s2d.io.overlay import OverlayWriter, draw_overlay
    from s2d.io.video import open_video, probe_video

    cfg = segment_config(model_path, overrides)
    model = load_model(cfg.model, cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    res = {}
    for clip in CLIPS:
        src = data / "videos" / "more" / f"{clip}.mp4"
        n = probe_video(src).num_frames
        pick = set(np.linspace(0, n - 1, 6).round().astype(int).tolist())
        sheet, per_frame, ids = [], [], set()
        with open_video(src) as st, OverlayWriter(out / f"{clip}.mp4", st.info.fps or 25.0,
                                                  st.info.width, st.info.height) as ow:
            for frame, fr in VideoPredictor(model, cfg).stream(st):
                ow.write(frame.rgb, fr)
                per_frame.append(len(fr.ids))
                ids.update(int(i) for i in fr.ids)
                if fr.index in pick:
                    sheet.append(draw_overlay(frame.rgb, fr))
        h = 240
        tiles = [cv2.resize(s, (round(s.shape[1] * h / s.shape[0]), h)) for s in sheet]
        rows = [np.concatenate(tiles[i:i + 3], 1) for i in range(0, len(tiles), 3)]
        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
        cv2.imwrite(str(out / f"{clip}.png"), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
        res[clip] = {"ids": len(ids), "mean_ids_per_frame": float(np.mean(per_frame)),
                     "max_ids_per_frame": int(max(per_frame))}
    return res


# --------------------------------------------------------------------------- report
def table(rows: List[Dict]) -> List[str]:
    lines = ["| method | union J | union F | union J&F | matched J&F | mosaic J&F | fragments | switches | merged "
             "| covered | s/frame |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        i = r["identity"]
        spf = f"{r['s_per_frame']:.3f}" if "s_per_frame" in r else "–"
        lines.append(f"| {r['method']} | {r['union']['J']:.3f} | {r['union']['F']:.3f} | {r['union']['JF']:.3f} | "
                     f"{r['unsup']['JF']:.3f} | {r['mosaic']['JF']:.3f} | {i['fragments']:.2f} | "
                     f"{i['switches']:.2f} | {i['merged']:.2f} | {i['covered']:.2f} | {spf} |")
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=CKPT",
                    help="a model to measure (repeatable); CKPT 'default' is the shipped model")
    ap.add_argument("--work", default="/tmp/s2d_dev", help="outputs and caches (never inside the repo)")
    ap.add_argument("--workers", type=int, default=2, help="parallel stage-1 processes")
    ap.add_argument("--fresh-stage1", action="store_true", help="recompute the cached stage-1 masks")
    ap.add_argument("--no-stage1", action="store_true", help="skip the stage-1 rows")
    ap.add_argument("--no-overlays", action="store_true", help="skip the shared-clip overlays")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="an `s2d segment` setting for the models (repeatable), e.g. --set split=true")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the models")
    ap.add_argument("--out", default=None, help="markdown report")
    ap.add_argument("--json", default=None, help="all numbers, per sequence")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    work = Path(a.work)
    single = dev_sequences()
    mosaics = build_mosaics(single, work)
    gt_single = build_gt_root(single, work / "gt")
    gt_mosaic = work / "mosaics"
    rows: List[Dict] = []
    if not a.no_stage1:
        masks = stage1(list(single) + list(mosaics), work / "stage1", a.workers, a.fresh_stage1)
        for label, top in (("stage 1 top mask", 1), ("stage 1 all masks, IoU-linked", None)):
            d = work / "pred" / ("stage1_top" if top else "stage1_all")
            for s in list(single) + list(mosaics):
                write_stage1(masks[s.name], d / s.name, top)
            row = {"method": label, **score_method(d, d, gt_single, gt_mosaic, single, mosaics)}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "per_seq"}), flush=True)
    for spec in a.model:
        name, _, ckpt = spec.partition("=")
        ckpt = ckpt or name
        d = work / "pred" / name
        info = segment_all(ckpt, list(single) + list(mosaics), d, a.overrides)
        row = {"method": name, "model": ckpt, **info, **score_method(d, d, gt_single, gt_mosaic, single, mosaics)}
        if not a.no_overlays:
            row["overlays"] = overlays(ckpt, work / "overlays" / name, a.overrides)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "per_seq"}), flush=True)
    cmd = "python " + " ".join(["benchmarks/bench_dev.py"] + list(argv if argv is not None else sys.argv[1:]))
    md = [f"Command: `{cmd}`", "", f"Segment settings: {', '.join(a.overrides) or 'defaults'}", "",
          "Single-object: 14 dev sequences (union = all ids as one foreground; matched = the official unsupervised "
          "protocol's single best id). Mosaic: 7 dev 2×2 mosaics, DAVIS-2017 unsupervised protocol. Identity "
          "columns are per mosaic object (ideal: fragments 1, switches 0, merged 0, covered 1).", "", *table(rows), ""]
    seqs = [s.name for s in single]
    md += ["| sequence | " + " | ".join(f"{r['method']} union J / F" for r in rows) + " |",
           "|---|" + "---|" * len(rows)]
    for s in seqs:
        md.append(f"| {s} | " + " | ".join(f"{r['per_seq']['union'][s]['J']:.3f} / {r['per_seq']['union'][s]['F']:.3f}"
                                           for r in rows) + " |")
    md += ["", "| mosaic (tiles) | " + " | ".join(f"{r['method']} J&F" for r in rows) + " |",
           "|---|" + "---|" * len(rows)]
    for m in mosaics:
        tiles = ", ".join(json.loads((m.gt / "tiles.json").read_text()))
        md.append(f"| {m.name} ({tiles}) | " + " | ".join(
            f"{(r['per_seq']['mosaic'][m.name]['J'] + r['per_seq']['mosaic'][m.name]['F']) / 2:.3f}" for r in rows)
            + " |")
    ov = [r for r in rows if "overlays" in r]
    if ov:
        md += ["", "| shared clip | " + " | ".join(f"{r['method']}: ids (mean / max per frame)" for r in ov) + " |",
               "|---|" + "---|" * len(ov)]
        for c in CLIPS:
            md.append(f"| {c} | " + " | ".join(
                f"{r['overlays'][c]['ids']} ({r['overlays'][c]['mean_ids_per_frame']:.1f} / "
                f"{r['overlays'][c]['max_ids_per_frame']})" for r in ov) + " |")
    text = "\n".join(md) + "\n"
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
