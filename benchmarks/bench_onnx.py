"""ONNX Runtime vs PyTorch for the video model (issue #19, part 3): equality and frames/s, in one run.

1. **Export** the model (default: the packaged ``default.pt``) with :func:`s2d.infer.onnx_backend.export_onnx`
   (or reuse ``--onnx``).
2. **Equality of the raw outputs** on real frames: clips cut from the video at two frame sizes (the working size of
   ``s2d segment``, long side 576, and the frames' own 854×480) and two clip lengths (3 and the default chunk, 8):
   max abs difference of the objectness logits, mask logits and query embeddings, and the fraction of mask-logit
   values whose sign differs (the masks at threshold 0).
3. **Speed and end-to-end equality**: :func:`s2d.infer.segment_video` with the default settings and output formats
   on the same video, PyTorch and ONNX Runtime interleaved (A B A B ...) so that both see the same load on a shared
   machine, both on ``--threads`` intra-op threads; the model is loaded before the clock starts. Reported: wall
   frames/s, process CPU seconds per frame (less sensitive to other jobs on the machine), the time inside the model's
   ``predict``, and whether every frame's DAVIS PNG (pixel = object id) is identical between the two backends.

Usage::

    python benchmarks/bench_onnx.py --video ../shared/data/davis2016-dev/videos/bear.mp4 --threads 2 \\
        --out benchmarks/results/onnx.md
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

DEFAULT_VIDEO = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "davis2016-dev" / "videos" / "bear.mp4")


class _Timed:
    """A model proxy that adds up the wall and CPU seconds spent in ``predict`` (and ``encode``)."""

    def __init__(self, model: Any) -> None:
        self.model, self.wall, self.cpu = model, 0.0, 0.0
        self.config = getattr(model, "config", None)
        if hasattr(model, "encode"):
            self.encode = self._wrap(model.encode)

    def _wrap(self, fn: Any) -> Any:
        def call(*args: Any, **kw: Any) -> Any:
            w, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kw)
            finally:
                self.wall += time.perf_counter() - w
                self.cpu += time.process_time() - c
        return call

    def predict(self, *args: Any, **kw: Any) -> Any:
        return self._wrap(self.model.predict)(*args, **kw)

    @property
    def training(self) -> bool:
        return bool(getattr(self.model, "training", False))

    def train(self, mode: bool = True) -> Any:
        self.model.train(mode)
        return self

    def eval(self) -> Any:
        return self.train(False)


def _frames(video: str, n: int) -> List[np.ndarray]:
    from s2d.io.video import open_video

    with open_video(video) as stream:
        return [f.rgb for _, f in zip(range(n), stream)]


def _equality(model: Any, onnx_model: Any, frames: List[np.ndarray], chunk: int) -> List[Dict[str, Any]]:
    import torch

    from s2d.infer.onnx_backend import compare_backends
    from s2d.infer.predictor import _resize_rgb, working_size

    rows = []
    h, w = frames[0].shape[:2]
    for size in (working_size(h, w, 576), (h, w)):
        for t in (3, chunk):
            clip = np.stack([_resize_rgb(f, size) for f in frames[10:10 + t]])
            x = torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous()
            diff = compare_backends(model, onnx_model, x)
            rows.append({"T": t, "H": size[0], "W": size[1], **diff})
            print(f"equality {t}×{size[0]}×{size[1]}: {diff}", flush=True)
    return rows


def _segment_once(model: Any, video: str, out: Path) -> Dict[str, float]:
    from s2d.infer import SegmentConfig, segment_video

    timed = _Timed(model)
    w, c = time.perf_counter(), time.process_time()
    s = segment_video(video, out, SegmentConfig(), model=timed, progress=False, name="clip")
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    return {"frames": s.frames, "wall": wall, "cpu": cpu, "model_wall": timed.wall, "model_cpu": timed.cpu,
            "objects": s.objects}


def _pngs_equal(a: Path, b: Path) -> Tuple[int, int, int, int]:
    """``(identical frames, frames, differing pixels, pixels)`` of two folders of DAVIS PNGs."""
    from PIL import Image

    pa, pb = sorted(a.glob("*.png")), sorted(b.glob("*.png"))
    diffs = [int((np.array(Image.open(x)) != np.array(Image.open(y))).sum()) for x, y in zip(pa, pb)]
    pixels = sum(np.array(Image.open(x)).size for x in pa)
    return sum(d == 0 for d in diffs), max(len(pa), len(pb)), sum(diffs), int(pixels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--onnx", default=None, help="an exported file to reuse (default: export into a temp folder)")
    ap.add_argument("--video", default=DEFAULT_VIDEO)
    ap.add_argument("--frames", type=int, default=24, help="frames read for the equality clips")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="A B pairs (PyTorch, ONNX Runtime)")
    ap.add_argument("--out", default=None, help="write the Markdown report here")
    args = ap.parse_args()

    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    from s2d.infer.onnx_backend import OnnxVideoModel, export_onnx
    from s2d.infer.weights import load_model

    work = Path(tempfile.mkdtemp(prefix="bench_onnx_"))
    model = load_model(args.model, "cpu")
    export_s = None
    onnx_path = Path(args.onnx) if args.onnx else work / "model.onnx"
    if not args.onnx or not onnx_path.is_file():
        t = time.perf_counter()
        export_onnx(model, onnx_path)
        export_s = time.perf_counter() - t
        print(f"exported {onnx_path} in {export_s:.0f} s", flush=True)
    onnx_model = OnnxVideoModel(onnx_path, device="cpu", threads=args.threads)
    frames = _frames(args.video, args.frames)
    eq = _equality(model, onnx_model, frames, 8)

    load = [os.getloadavg()[0]]
    runs: Dict[str, List[Dict[str, float]]] = {"torch": [], "onnxruntime": []}
    for r in range(args.rounds):
        for name, m in (("torch", model), ("onnxruntime", onnx_model)):
            res = _segment_once(m, args.video, work / f"{name}_{r}")
            runs[name].append(res)
            print(f"round {r} {name}: {res['frames'] / res['wall']:.2f} frames/s wall, "
                  f"{res['cpu'] / res['frames']:.3f} CPU s/frame, model {res['model_wall']:.1f} s", flush=True)
    load.append(os.getloadavg()[0])
    pngs = _pngs_equal(work / "torch_0" / "clip" / "davis", work / "onnxruntime_0" / "clip" / "davis")
    report = _report(args, onnx_path, export_s, eq, runs, pngs, load)
    print(report)
    if args.out:
        Path(args.out).write_text(report)


def _report(args: Any, onnx_path: Path, export_s: Any, eq: List[Dict[str, Any]],
            runs: Dict[str, List[Dict[str, float]]], pngs: Tuple[int, int, int, int], load: List[float]) -> str:
    import onnxruntime
    import torch

    def med(name: str, key: str, per_frame: bool = False) -> float:
        vals = [r[key] / (r["frames"] if per_frame else 1) for r in runs[name]]
        return float(np.median(vals))

    fps = {k: float(np.median([r["frames"] / r["wall"] for r in runs[k]])) for k in runs}
    cpu = {k: med(k, "cpu", True) for k in runs}
    mdl = {k: med(k, "model_wall") for k in runs}
    lines = [
        "# ONNX Runtime vs PyTorch (issue #19, part 3)",
        "",
        f"`python benchmarks/bench_onnx.py --video {args.video} --threads {args.threads} "
        f"--rounds {args.rounds}` — torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{platform.processor() or platform.machine()}, {args.threads} intra-op threads for both backends. "
        f"Model `{args.model}`, exported with the dynamo exporter"
        + (f" in {export_s:.0f} s" if export_s else "") + f" ({onnx_path.stat().st_size / 1e6:.1f} MB). "
        f"The machine is shared with other jobs (a training run has priority): 1-minute load average "
        f"{load[0]:.2f} before the speed runs and {load[1]:.2f} after; compare the two backends by their ratio "
        f"within this run.",
        "",
        "## Equality of the raw outputs (real frames, one clip per row)",
        "",
        "| T | H×W | max abs Δ objectness logits | max abs Δ mask logits | max abs Δ embeddings | mask pixels that differ |",
        "|---|---|---|---|---|---|",
    ]
    for r in eq:
        lines.append(f"| {r['T']} | {r['H']}×{r['W']} | {r['logits']:.2e} | {r['mask_logits']:.2e} | "
                     f"{r['embeds']:.2e} | {r['mask_flip_fraction']:.2e} |")
    lines += [
        "",
        f"## `s2d segment` (default settings and outputs), {runs['torch'][0]['frames']:.0f} frames, "
        f"backends interleaved A B × {args.rounds}",
        "",
        "| backend | frames/s (wall, median) | CPU s / frame (median) | model predict s (wall, median) | per run frames/s |",
        "|---|---|---|---|---|",
    ]
    for k in runs:
        per = ", ".join(f"{r['frames'] / r['wall']:.2f}" for r in runs[k])
        lines.append(f"| {k} | {fps[k]:.2f} | {cpu[k]:.3f} | {mdl[k]:.1f} | {per} |")
    lines += [
        "",
        f"ONNX Runtime / PyTorch: **{fps['onnxruntime'] / fps['torch']:.2f}×** frames/s (wall), "
        f"{cpu['torch'] / cpu['onnxruntime']:.2f}× by CPU time, {mdl['torch'] / mdl['onnxruntime']:.2f}× in the model. "
        f"DAVIS PNGs (pixel = object id) identical on {pngs[0]} of {pngs[1]} frames; {pngs[2]} of {pngs[3]:,} "
        f"pixels differ ({pngs[2] / max(pngs[3], 1):.1e}).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
