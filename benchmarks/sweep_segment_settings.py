"""How the `s2d segment` defaults (max side, score threshold, refinement) were chosen (issue 7).

Runs a checkpoint over all 23 shared DAVIS-2016 sequences with ``s2d.infer.segment_video`` at a low score
threshold (0.2) and the given settings, then scores union-of-instances J (all ids merged; first and last frame
left out, as the union protocol does) with the tracks whose mean score passes each threshold in 0.2…0.8, per
split (SPEC §9). Thresholds here filter whole tracks after the run — an approximation of running with that
threshold (which filters per chunk); the chosen default is then confirmed by ``bench_stage3.py``. Choose on
``seen``; ``unseen`` is reported, never tuned on.

Usage (``KEY=VALUE`` are :class:`s2d.infer.SegmentConfig` fields)::

    python benchmarks/sweep_segment_settings.py CKPT WORKDIR [max_side=576] [refine=crf] ...
"""

import sys, json, glob, numpy as np, cv2, torch
from pathlib import Path
torch.set_num_threads(1); cv2.setNumThreads(1)
from s2d.infer import SegmentConfig, segment_video, load_model
from s2d import rle as R
ckpt, work = sys.argv[1], Path(sys.argv[2])
extra = dict(a.split('=') for a in sys.argv[3:])
kw = {k: (float(v) if k in ('score_threshold',) else (None if v == 'none' else (v if k == 'refine' else int(v)))) for k, v in extra.items()}
kw.setdefault('score_threshold', 0.2)
cfg = SegmentConfig(model=ckpt, **kw)
model = load_model(ckpt, 'cpu')
DATA = str(Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'davis2016')
UNSEEN = {"boat", "breakdance-flare", "dog-agility", "hockey", "kite-walk", "motocross-bumps", "stroller"}
seqs = sorted(p.name for p in Path(DATA, 'JPEGImages/480p').iterdir())
thrs = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
res = {t: {} for t in thrs}
for s in seqs:
    segment_video(f'{DATA}/JPEGImages/480p/{s}', work, cfg, formats=('ytvis',), progress=False, model=model)
    recs = json.load(open(work / s / 'results.json'))
    gts = sorted(glob.glob(f'{DATA}/Annotations/480p/{s}/*.png'))
    gt = [cv2.imread(g, 0) > 0 for g in gts]
    for t in thrs:
        keep = [r for r in recs if r['score'] >= t]
        js = []
        for f in range(1, len(gt) - 1):  # union protocol: first and last excluded
            u = np.zeros_like(gt[f])
            for r in keep:
                m = r['segmentations'][f]
                if m is not None: u |= R.decode(m).astype(bool)
            un = (u | gt[f]).sum(); js.append((u & gt[f]).sum() / un if un else 1.0)
        res[t][s] = float(np.mean(js))
for t in thrs:
    un = np.mean([v for k, v in res[t].items() if k in UNSEEN]); se = np.mean([v for k, v in res[t].items() if k not in UNSEEN])
    print(f'thr {t}: union J unseen {un:.3f} seen {se:.3f}')
json.dump(res, open(work / 'sweep.json', 'w'))

