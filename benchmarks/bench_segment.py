"""Stage-4 benchmark: `s2d segment` speed and memory (SPEC §7, issue 7).

(a) **Speed** on a real 480p clip (default: the DAVIS-2016 frame folder ``bmx-bumps``, 854×480, 90 frames):
    end-to-end frames/s of :func:`s2d.infer.segment_video` with the default settings and output formats
    (decode, resize, model per chunk, linking, masks at the original size, PNG/JSON/overlay writing; the
    model is loaded before the clock starts), and the backbone-only forward throughput on the same frames
    at the input size the segmenter uses (the working size, padded to the model's size divisibility as in
    its forward pass), batches of ``chunk`` frames, same process, same thread count. SPEC §7 asks for
    ≥ 4 frames/s end to end and ≥ 0.5 of the backbone-only throughput.
(b) **Memory**: peak RSS (``VmHWM`` of ``/proc/self/status``, one fresh subprocess per run) of segmenting the clip looped
    back and forth to 200 and to 2,000 frames (the looped mp4 is written frame by frame from a generator; the
    segmenter streams it). SPEC §7 asks for peak(2,000) ≤ 1.2 × peak(200).

``--model`` takes a checkpoint, ``default`` (the packaged weights) or ``preset:NAME`` (an untrained model of
that preset, e.g. ``preset:cpu``: the shipped architecture with ImageNet Lite0 features and random heads —
its speed is the trained model's, but with random heads few objects pass the score threshold, so the output
writers do less work than with a trained model). ``--frames N`` limits the speed run to the first N frames
(e.g. ``--frames 10 --mem-frames 20,40`` for a smoke test).

Usage::

    python benchmarks/bench_segment.py --model runs/train/self-distill/model.pt --threads 2 \\
        --out benchmarks/results/segment.md
    python benchmarks/bench_segment.py --model preset:cpu --frames 10 --mem-frames 20,40
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, List

import numpy as np

DEFAULT_SOURCE = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016" / "JPEGImages" / "480p" / "bmx-bumps")


def _set_threads(n: int) -> None:
    import cv2
    import torch

    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def _model_path(spec: str, work: Path) -> str:
    """A checkpoint path (or ``default``) that child processes can load; ``preset:NAME`` is saved once."""
    if not spec.startswith("preset:"):
        return spec
    import torch

    from s2d.model import VideoMask2Former

    path = work / f"{spec.split(':', 1)[1]}.pt"
    if not path.is_file():
        torch.manual_seed(0)
        VideoMask2Former(spec.split(":", 1)[1]).save_checkpoint(path)
    return str(path)


def _frames(source: str, limit: int = 0) -> Iterator[np.ndarray]:
    from s2d.io.video import open_video

    with open_video(source, end=limit or None) as stream:
        for f in stream:
            yield f.rgb


def _write_video(path: Path, frames: Iterator[np.ndarray], fps: float) -> Path:
    """Encode frames as they come (near-lossless H.264, fast preset): nothing is held in memory."""
    from s2d.io.video import VideoWriter

    writer = None
    for rgb in frames:
        if writer is None:
            writer = VideoWriter(path, fps, rgb.shape[1], rgb.shape[0], crf=12, preset="ultrafast")
        writer.write(rgb)
    assert writer is not None, "no frames"
    writer.close()
    return path


def _looped(source: str, n: int) -> Iterator[np.ndarray]:
    """``n`` frames of the clip played forward, backward, forward... (no jump cut), re-read on every pass.

    Only this benchmark-input generator holds a clip (for the backward passes); the measured process reads
    the finished mp4 as a stream.
    """
    made, forward = 0, True
    while made < n:
        frames = _frames(source) if forward else reversed(list(_frames(source)))
        for rgb in frames:
            if made >= n:
                return
            yield rgb
            made += 1
        forward = not forward


def speed(source: str, model_spec: str, threads: int, limit: int, work: Path) -> dict:
    import torch
    import torch.nn.functional as F

    from s2d.infer import DEFAULT_FORMATS, SegmentConfig, load_model, segment_video, working_size
    from s2d.io.video import probe_video

    _set_threads(threads)
    info = probe_video(source)
    src = source
    if limit and (info.num_frames or 0) > limit:
        src = str(_write_video(work / f"first{limit}.mp4", _frames(source, limit), info.fps or 25.0))
    cfg = SegmentConfig(model=model_spec)
    model = load_model(model_spec, cfg.device)
    h, w = working_size(info.orig_height, info.orig_width, cfg.max_side)
    with torch.no_grad():  # warm-up: first-call allocations are not throughput
        model.predict(torch.zeros(2, 3, h, w, dtype=torch.uint8))
    summary = segment_video(src, work / "out", cfg, DEFAULT_FORMATS, model=model, progress=False)
    e2e_fps = summary.frames / summary.seconds

    # backbone only: the same frames at the working size, normalised and padded as in the model's forward
    import cv2

    frames = [cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA) for rgb in _frames(src)]
    div = model.config.size_divisibility
    bb = model.backbone.eval()
    seconds = 0.0
    with torch.no_grad():
        for i in range(0, len(frames), cfg.chunk):
            x = torch.from_numpy(np.stack(frames[i:i + cfg.chunk])).permute(0, 3, 1, 2).float().div_(255)
            t0 = time.perf_counter()
            x = F.pad(bb.normalize(x), (0, (-w) % div, 0, (-h) % div))
            bb.multiscale(x)
            seconds += time.perf_counter() - t0
    bb_fps = len(frames) / seconds
    return {"source": source, "frames": summary.frames, "size": f"{info.orig_width}x{info.orig_height}",
            "working_size": f"{w}x{h}", "objects": summary.objects, "e2e_s": round(summary.seconds, 3),
            "e2e_fps": round(e2e_fps, 3), "backbone_fps": round(bb_fps, 3), "ratio": round(e2e_fps / bb_fps, 3),
            "formats": list(DEFAULT_FORMATS), "chunk": cfg.chunk, "overlap": cfg.overlap, "refine": cfg.refine}


def _hwm_mib() -> float:
    """This process's peak resident set (``VmHWM``, MiB). Not ``ru_maxrss``: Linux carries that over from the
    parent across fork + exec, so a child started by a big parent would report the parent's peak."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: best effort


def child_memory(video: str, model_spec: str, threads: int, out: str) -> None:
    """Run in a fresh process: segment ``video`` and print peak RSS (MiB) as JSON."""
    from s2d.infer import DEFAULT_FORMATS, SegmentConfig, load_model, segment_video

    _set_threads(threads)
    cfg = SegmentConfig(model=model_spec)
    model = load_model(model_spec, cfg.device)
    base = _hwm_mib()
    s = segment_video(video, out, cfg, DEFAULT_FORMATS, model=model, progress=False)
    peak = _hwm_mib()
    print(json.dumps({"frames": s.frames, "objects": s.objects, "seconds": round(s.seconds, 2),
                      "rss_after_load_mib": round(base, 1), "peak_rss_mib": round(peak, 1)}))


def memory(source: str, model_spec: str, threads: int, lengths: List[int], work: Path) -> List[dict]:
    from s2d.io.video import probe_video

    fps = probe_video(source).fps or 25.0
    rows = []
    for n in lengths:
        video = _write_video(work / f"loop{n}.mp4", _looped(source, n), fps)
        proc = subprocess.run([sys.executable, __file__, "--_child", str(video), "--model", model_spec,
                               "--threads", str(threads), "--_out", str(work / f"mem{n}")],
                              capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
        if proc.returncode:
            raise SystemExit(f"memory run on {n} frames failed:\n{proc.stderr[-3000:]}")
        rows.append(dict(json.loads(proc.stdout.strip().splitlines()[-1]), length=n))
        video.unlink()
    return rows


def markdown(cmd: str, sp: dict, mem: List[dict], threads: int) -> str:
    lines = ["# `s2d segment` speed and memory", "", f"Command: `{cmd}`", "",
             f"Threads: {threads} (torch and OpenCV). Default settings: chunk {sp['chunk']}, "
             f"overlap {sp['overlap']}, refine {sp['refine']}, formats {','.join(sp['formats'])}; "
             f"model loaded before timing.", "",
             "## Speed", "",
             "| source | size | working size | frames | objects | end-to-end frames/s | backbone-only frames/s "
             "| ratio |",
             "|---|---|---|---|---|---|---|---|",
             f"| {sp['source']} | {sp['size']} | {sp['working_size']} | {sp['frames']} | {sp['objects']} | "
             f"{sp['e2e_fps']:.2f} | {sp['backbone_fps']:.2f} | {sp['ratio']:.2f} |", ""]
    if mem:
        lines += ["## Memory (peak RSS, fresh process per run)", "",
                  "| frames | objects | seconds | RSS after model load (MiB) | peak RSS (MiB) |",
                  "|---|---|---|---|---|"]
        for r in mem:
            lines.append(f"| {r['length']} | {r['objects']} | {r['seconds']} | {r['rss_after_load_mib']} | "
                         f"{r['peak_rss_mib']} |")
        if len(mem) >= 2:
            lines += ["", f"Peak RSS ratio {mem[-1]['length']} / {mem[0]['length']} frames: "
                          f"{mem[-1]['peak_rss_mib'] / mem[0]['peak_rss_mib']:.3f}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example:\n  python benchmarks/bench_segment.py "
                                        "--model preset:cpu --frames 10 --mem-frames 20,40")
    ap.add_argument("--source", default=DEFAULT_SOURCE,
                    help="480p video file or frame folder (default: DAVIS bmx-bumps)")
    ap.add_argument("--model", default="default", help="checkpoint path, 'default', or 'preset:NAME' (untrained)")
    ap.add_argument("--threads", type=int, default=2, help="torch/OpenCV threads (default 2)")
    ap.add_argument("--frames", type=int, default=0, help="speed run on the first N frames only (default: all)")
    ap.add_argument("--mem-frames", default="200,2000",
                    help="comma-separated looped lengths for the memory runs (default 200,2000; '' to skip)")
    ap.add_argument("--work", help="scratch folder (default: a temp folder, removed afterwards)")
    ap.add_argument("--out", help="write the markdown table here (and the numbers to the same name .json)")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        child_memory(args._child, args.model, args.threads, args._out)
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "benchmarks/bench_segment.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory(prefix="s2d_bench_segment_", dir=args.work) as tmp:
        work = Path(tmp)
        model = _model_path(args.model, work)
        sp = speed(args.source, model, args.threads, args.frames, work)
        print(json.dumps(sp), flush=True)
        lengths = [int(x) for x in args.mem_frames.split(",") if x.strip()]
        mem = memory(args.source, model, args.threads, lengths, work) if lengths else []
        for r in mem:
            print(json.dumps(r), flush=True)
    text = markdown(cmd, sp, mem, args.threads)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps({"speed": sp, "memory": mem}, indent=2))


if __name__ == "__main__":
    main()
