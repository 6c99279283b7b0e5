"""Speed and quality of the classical flow module (``s2d.features.flow`` / ``s2d.features.camera``).

Measures on the shared DAVIS-2016 sequences (854×480):

1. seconds per frame pair of ``compute_flow`` (DIS, grayscale conversion and resizing included) for each
   DIS preset at full 480p and at the working size;
2. the motion-only baseline (DIS t→t+1, RANSAC homography removed, Otsu, largest connected component)
   mean J against the GT (any nonzero pixel = foreground; empty∪empty counts as J = 1) over all sequences,
   every 5th frame — per preset and working size;
3. the flow-cache bytes per pair (16-bit PNG of fwd+bwd at 1/8 px) and the error the quantisation adds.

Usage::

    python benchmarks/bench_flow.py [--data ../shared/data/davis2016] [--every 5] [--quick]

Prints a markdown table; ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from s2d.features.camera import fit_camera_motion, motion_saliency, residual_flow, saliency_to_mask  # noqa: E402
from s2d.features.flow import FlowCache, FlowConfig, compute_flow, flow_pair, working_size  # noqa: E402


def working_size_wh(cfg: FlowConfig):
    h, w = working_size(480, 854, cfg)
    return w, h


def read_rgb(path: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def sequences(root: Path):
    for d in sorted((root / "JPEGImages" / "480p").iterdir()):
        if d.is_dir():
            yield d.name, sorted(glob.glob(str(d / "*.jpg")))


def bench_speed(root: Path, configs, n_pairs: int):
    seqs = list(sequences(root))
    # a few pairs from several sequences (different motion/texture)
    pairs = []
    for name, files in seqs[:: max(1, len(seqs) // 4)][:4]:
        imgs = [read_rgb(f) for f in files[: n_pairs // 4 + 1]]
        pairs += list(zip(imgs[:-1], imgs[1:]))
    out = {}
    for label, cfg in configs:
        compute_flow(pairs[0][0], pairs[0][1], cfg)  # warm-up (creates the DIS instance)
        t = time.perf_counter()
        for a, b in pairs:
            compute_flow(a, b, cfg)
        out[label] = (time.perf_counter() - t) / len(pairs)
    return out


def _upsample(mask: np.ndarray, shape) -> np.ndarray:
    if mask.shape == tuple(shape):
        return mask
    return cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) > 0.5


def bench_baseline(root: Path, cfg: FlowConfig, every: int):
    """Per-sequence mean J of the baseline with and without the forward–backward check.

    Computes one :func:`flow_pair` per frame and derives both masks exactly as
    :func:`motion_mask_baseline` does (``fb_check=False``: forward flow only; ``True``: :func:`motion_saliency`).
    """
    per_seq = {"fwd": {}, "fb": {}}
    for name, files in sequences(root):
        js = {"fwd": [], "fb": []}
        for t in range(0, len(files), every):
            t1 = t + 1 if t + 1 < len(files) else t - 1
            img, img1 = read_rgb(files[t]), read_rgb(files[t1])
            gt_path = root / "Annotations" / "480p" / name / (Path(files[t]).stem + ".png")
            gt = cv2.imread(str(gt_path), cv2.IMREAD_GRAYSCALE) > 0
            pair = flow_pair(img, img1, cfg)
            fit = fit_camera_motion(pair.fwd)
            plain = saliency_to_mask(np.linalg.norm(residual_flow(pair.fwd, fit.H), axis=-1))
            js["fwd"].append(jaccard(_upsample(plain, gt.shape), gt))
            js["fb"].append(jaccard(_upsample(saliency_to_mask(motion_saliency(pair)), gt.shape), gt))
        for k in js:
            per_seq[k][name] = float(np.mean(js[k]))
    return per_seq


def bench_speed_pair(root: Path, configs, n_pairs: int):
    files = next(iter(sequences(root)))[1][: n_pairs + 1]
    imgs = [read_rgb(f) for f in files]
    out = {}
    for label, cfg in configs:
        flow_pair(imgs[0], imgs[1], cfg)
        t = time.perf_counter()
        for a, b in zip(imgs[:-1], imgs[1:]):
            flow_pair(a, b, cfg)
        out[label] = (time.perf_counter() - t) / (len(imgs) - 1)
    return out


def bench_cache(root: Path, cfg: FlowConfig, n: int):
    sizes, errs, raw = [], [], []
    for name, files in list(sequences(root))[:: 3]:
        for t in range(0, min(len(files) - 1, n), 10):
            p = flow_pair(read_rgb(files[t]), read_rgb(files[t + 1]), cfg)
            data = FlowCache.encode(p.fwd, p.bwd)
            f, b = FlowCache.decode(data)
            sizes.append(len(data))
            raw.append(p.fwd.size * 2 * 2)  # float16 fwd + bwd
            errs.append(max(np.abs(f - p.fwd).max(), np.abs(b - p.bwd).max()))
    return float(np.mean(sizes)), float(np.max(sizes)), float(np.mean(raw)), float(np.max(errs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016"))
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=40, help="frame pairs timed per setting")
    ap.add_argument("--sides", default="854,512", help="working long sides to compare (854 = full 480p)")
    ap.add_argument("--presets", default="ultrafast,fast,medium")
    ap.add_argument("--no-finest0", dest="finest0", action="store_false",
                    help="skip the extra row: medium with finest_scale=0 at the last working size")
    ap.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    root = Path(args.data)
    sides = [int(s) for s in args.sides.split(",")]
    presets = args.presets.split(",")
    configs = [(f"{p}@{s}", FlowConfig(preset=p, max_side=s)) for s in sides for p in presets]
    if args.finest0:
        configs.append((f"medium+fs0@{sides[-1]}", FlowConfig(preset="medium", max_side=sides[-1], finest_scale=0)))

    speed = bench_speed(root, configs, args.pairs)
    speed_pair = bench_speed_pair(root, configs, max(4, args.pairs // 4))
    rows, results = [], {}
    for label, cfg in configs:
        per_seq = bench_baseline(root, cfg, args.every)
        j = {k: float(np.mean(list(v.values()))) for k, v in per_seq.items()}
        results[label] = {"s_per_flow": speed[label], "s_per_flow_pair": speed_pair[label],
                          "mean_J_fwd_only": j["fwd"], "mean_J_fb_check": j["fb"], "per_seq_J": per_seq}
        w, h = working_size_wh(cfg)
        name = cfg.preset if cfg.finest_scale is None else f"{cfg.preset}, finest_scale={cfg.finest_scale}"
        rows.append(f"| {name} | {w}×{h} | {speed[label] * 1000:.1f} | {speed_pair[label] * 1000:.1f} | "
                    f"{j['fwd']:.3f} | {j['fb']:.3f} |")
    mean_b, max_b, raw_b, qerr = bench_cache(root, FlowConfig(), 60)
    results["cache"] = {"mean_bytes_per_pair": mean_b, "max_bytes_per_pair": max_b, "raw_float16_bytes": raw_b,
                        "max_abs_quant_err_px": qerr}

    print(f"Motion-only baseline on {root} (23 DAVIS-2016 sequences, every {args.every}th frame), "
          f"cv2 {cv2.__version__}, {cv2.getNumThreads()} threads\n")
    print("| DIS preset | working size | ms / flow (compute_flow) | ms / pair (flow_pair: fwd+bwd+checks) "
          "| baseline J, fwd only | baseline J, fb check (default) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    default = FlowConfig()
    key = f"{default.preset}@{default.max_side}"
    if key in results:
        print(f"\nPer-sequence J ({key}, the default):\n")
        print("| sequence | J fwd only | J fb check |\n|---|---|---|")
        for k, v in results[key]["per_seq_J"]["fwd"].items():
            print(f"| {k} | {v:.3f} | {results[key]['per_seq_J']['fb'][k]:.3f} |")
    print(f"\nFlow cache (default config, fwd+bwd, 16-bit PNG at 1/8 px): mean {mean_b / 1024:.1f} KiB/pair, "
          f"max {max_b / 1024:.1f} KiB (raw float16 {raw_b / 1024:.0f} KiB); "
          f"≈ {mean_b * 1e4 / 1e9:.2f} GB per 10k frames; max quantisation error {qerr:.4f} px")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
