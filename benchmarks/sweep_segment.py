"""Sweep `s2d segment` settings on the dev benchmark with one model pass per chunk (issues #14, #16).

Each variant is a comma-separated list of ``KEY=VALUE`` segment settings (``""`` = the defaults). All variants
run ``s2d segment``'s own code path (:func:`bench_dev.segment_all`) on the 14 dev sequences and the 7 dev
mosaics and are scored as ``bench_dev.py`` scores them (union, matched, mosaic J&F, identity). The model's
output of each chunk (tubes with score ≥ ``--floor``, logits stored as float16) is cached on disk under
``WORK/chunk_cache/NAME`` and reused by every later variant, so only the post-processing is re-run: linking,
thresholds, splitting, refinement. Settings that change the model's input (``max_side``, ``chunk``) miss the
cache and run the model. Variants must not go below the floor (``score_threshold``/``continue_threshold``).
An online model (``query_propagation``, from ``s2d train --stages online``) runs uncached in every variant: its
output on a frame depends on the frames before it.

Usage::

    python benchmarks/sweep_segment.py --model shipped=default "" "continue_threshold=0.5,track_memory=8"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_dev as B  # noqa: E402


class CachedModel:
    """A video model whose ``predict`` output per clip is cached on disk (tubes scoring ≥ ``floor``)."""

    def __init__(self, model: Any, cache: Path, floor: float) -> None:
        self.model, self.cache, self.floor = model, cache, float(floor)
        cache.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def predict(self, clip: torch.Tensor, score_threshold: float = 0.0, **_: Any) -> Dict[str, torch.Tensor]:
        if score_threshold < self.floor - 1e-9:
            raise ValueError(f"threshold {score_threshold} is below the cache floor {self.floor}")
        path = self.cache / f"{hashlib.sha1(clip.numpy().tobytes()).hexdigest()}.pt"
        if path.is_file():
            self.hits += 1
            out = torch.load(path)
        else:
            self.misses += 1
            res = self.model.predict(clip, score_threshold=self.floor)
            out = {"scores": res["scores"].cpu(), "logits": res["mask_logits"].cpu().half()}
            if "embeds" in res:
                out["embeds"] = res["embeds"].cpu()
            torch.save(out, path)
        keep = out["scores"] >= score_threshold
        logits = out["logits"][keep].float()
        got = {"scores": out["scores"][keep], "masks": logits > 0, "mask_logits": logits}
        if "embeds" in out:  # caches written before the model gave embeddings have none
            got["embeds"] = out["embeds"][keep]
        return got


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help="comma-separated KEY=VALUE settings per variant ('' = defaults)")
    ap.add_argument("--model", required=True, metavar="NAME=CKPT", help="CKPT 'default' is the shipped model")
    ap.add_argument("--work", default="/tmp/s2d_dev", help="bench_dev.py's work folder (mosaics, GT, caches)")
    ap.add_argument("--floor", type=float, default=0.3, help="cache tubes scoring at least this")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="append one JSON line per variant to this file")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from s2d.infer import weights

    name, _, ckpt = a.model.partition("=")
    ckpt = ckpt or name
    work = Path(a.work)
    model = weights.load_model(ckpt, "cpu")
    if not model.config.query_propagation:  # an online model's output depends on the frames before: not cached
        model = CachedModel(model, work / "chunk_cache" / name, a.floor)
    single = B.dev_sequences()
    mosaics = B.build_mosaics(single, work)
    gt_single = B.build_gt_root(single, work / "gt")
    original = weights.load_model
    weights.load_model = lambda *args, **kw: model  # segment_all loads the model by name: hand it the cached one
    try:
        for variant in a.variants:
            overrides = [x.strip() for x in variant.split(",") if x.strip()]
            tag = "_".join(o.replace("=", "") for o in overrides) or "defaults"
            pred = work / "pred" / f"sweep_{name}_{tag}"
            t0 = time.perf_counter()
            info = B.segment_all(ckpt, list(single) + list(mosaics), pred, overrides)
            row = {"model": name, "variant": variant, "seconds": round(time.perf_counter() - t0),
                   "ids": sum(info["ids"].values()),
                   **B.score_method(pred, pred, gt_single, work / "mosaics", single, mosaics)}
            u, m, i = row["union"], row["mosaic"], row["identity"]
            print(f"{variant or 'defaults':50s} union J/F/J&F {u['J']:.3f}/{u['F']:.3f}/{u['JF']:.3f} "
                  f"matched {row['unsup']['JF']:.3f} mosaic {m['JF']:.3f} fragments {i['fragments']:.2f} "
                  f"switches {i['switches']:.2f} merged {i['merged']:.2f} covered {i['covered']:.2f} "
                  f"ids {row['ids']}", flush=True)
            if a.json:
                with open(a.json, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
    finally:
        weights.load_model = original
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
