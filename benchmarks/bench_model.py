import time, sys, torch
from s2d.model import VideoMask2Former, VideoSetCriterion, model_preset
torch.manual_seed(0)
torch.set_num_threads(2)
def bench(name, shape, backward=True, reps=3, **kw):
    cfg = model_preset(name)
    if kw: cfg = cfg.replace(**kw)
    m = VideoMask2Former(cfg, backbone_random_init=True)
    crit = VideoSetCriterion(cfg.loss)
    n = sum(p.numel() for p in m.parameters())
    nb = sum(p.numel() for p in m.backbone.parameters())
    T, H, W = shape
    x = torch.rand(1, T, 3, H, W)
    mk = torch.zeros(2, T, H, W, dtype=torch.bool); mk[0, :, H//4:H//2, W//4:W//2] = True; mk[1, 0, H//2:, W//2:] = True
    tg = [{"masks": mk}]
    ts = []
    for r in range(reps + 1):
        t0 = time.perf_counter()
        if backward:
            out = m(x); L = crit(out, tg); L["loss"].backward(); m.zero_grad()
        else:
            m.eval()
            with torch.no_grad(): out = m(x)
        ts.append(time.perf_counter() - t0)
    print(f"{name} {kw} {shape} backward={backward}: params {n/1e6:.2f}M (backbone {nb/1e6:.2f}M); s/iter {min(ts[1:]):.3f} (first {ts[0]:.3f})", flush=True)
for a in sys.argv[1:]:
    exec(a)
