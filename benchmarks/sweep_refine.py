"""Sweep output refinements on the 14 dev sequences with one model pass (issue #14, `s2d segment --refine`).

Every mode is applied to the same upsampled mask logits of each frame (the model runs once), then scored with the
union protocol on the dev split of ``bench_dev.py``. Modes (pixels of the 854×480 frame):

* ``none`` — bilinear upsampling, threshold 0;
* ``guided:R:EPS`` — guided filter of the probability with the frame as guide (radius R px, eps in squared 0–255
  levels), threshold 0.5;
* ``crfsoft:U:SIDE`` — dense CRF with the model's probability as unary (clipped to [1-U, U]) at long side SIDE.

Tubes are taken as ``s2d segment`` keeps them (its defaults otherwise, no split). Usage::

    python benchmarks/sweep_refine.py none guided:16:0.01 guided:32:0.01 crfsoft:0.9:480 --work /tmp/s2d_dev
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def refine(mode: str, rgb: np.ndarray, logit: np.ndarray) -> np.ndarray:
    """One full-size object logit map → bool mask, by ``mode`` (see the module docstring)."""
    if mode == "none":
        return logit > 0
    kind, *args = mode.split(":")
    p = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    if kind == "guided":
        from s2d.infer.refine import guided_probability

        return guided_probability(rgb, p, int(float(args[0])), float(args[1])) > 0.5
    if kind == "crfsoft":
        from s2d.frames.refine import crf_refine

        u, side = float(args[0]), int(float(args[1]))
        H, W = logit.shape
        sc = side / max(H, W)
        h, w = round(H * sc), round(W * sc)
        ps = cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA)
        m = crf_refine(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA), ps > 0.5, prob=ps, unary=u)
        return cv2.resize(m.astype(np.float32), (W, H)) > 0.5
    raise SystemExit(f"unknown mode {mode!r}")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modes", nargs="+")
    ap.add_argument("--model", default="default")
    ap.add_argument("--work", default="/tmp/s2d_dev")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from PIL import Image

    import bench_dev as B
    from s2d.infer import SegmentConfig
    from s2d.infer.predictor import VideoPredictor
    from s2d.infer.weights import load_model
    from s2d.io.formats.davis import davis_palette
    from s2d.io.video import open_video
    from s2d.types import FrameResult

    work = Path(a.work)
    single = B.dev_sequences()
    gt = B.build_gt_root(single, work / "gt")
    cfg = SegmentConfig(model=a.model, refine="none", split=False)
    model = load_model(cfg.model, cfg.device)
    pal = davis_palette().reshape(-1).tolist()
    seconds: Dict[str, float] = {m: 0.0 for m in a.modes}

    class AllModes(VideoPredictor):
        """Writes every mode's label map of each frame; yields empty results (only the files matter)."""

        seq = ""

        def _frame_result(self, item, j, tubes):  # noqa: ANN001 - the predictor's own hook
            H, W = item.frame.rgb.shape[:2]
            ids, scores, logits = tubes["ids"], tubes["scores"], tubes["logits"]
            up = [F.interpolate(logits[k, j][None, None], size=(H, W), mode="bilinear",
                                align_corners=False)[0, 0].numpy() for k in range(len(ids))]
            for mode in a.modes:
                t0 = time.perf_counter()
                masks = np.array([refine(mode, item.frame.rgb, lg) for lg in up], dtype=bool).reshape(-1, H, W)
                seconds[mode] += time.perf_counter() - t0
                fr = self._resolve(item.pos, masks, ids, scores) if len(ids) else FrameResult.empty(item.pos, H, W)
                out = work / "pred" / f"refine_{mode.replace(':', '_')}" / self.seq
                out.mkdir(parents=True, exist_ok=True)
                im = Image.fromarray(fr.label_map().astype(np.uint8), mode="P")
                im.putpalette(pal)
                im.save(out / f"{item.pos:05d}.png")
            return FrameResult.empty(item.pos, H, W)

    frames = 0
    for s in single:
        pred = AllModes(model, cfg)
        pred.seq = s.name
        with open_video(s.source) as st:
            frames += sum(1 for _ in pred(st))
    for mode in a.modes:
        u = B.mean_jf(B.davis_scores(gt, work / "pred" / f"refine_{mode.replace(':', '_')}",
                                     [s.name for s in single], "union"))
        print(mode, json.dumps({**u, "refine_s_per_frame": seconds[mode] / frames}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
