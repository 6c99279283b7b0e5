"""Tests of the classical flow module (``s2d.features.flow``) and camera compensation (``s2d.features.camera``).

All inputs are synthetic textures with known motion, so every expected flow is exact.
"""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np
import pytest

from helpers import make_video
from s2d.errors import SettingError
from s2d.features import flow as flow_mod
from s2d.features.camera import (
    fit_camera_motion,
    homography_flow,
    largest_component,
    motion_mask_baseline,
    motion_saliency,
    otsu_threshold,
    residual_flow,
    saliency_to_mask,
)
from s2d.features.flow import (
    FlowCache,
    FlowConfig,
    FlowPair,
    compute_flow,
    fb_consistency,
    flow_pair,
    iter_flow_pairs,
    pixel_grid,
    resize_flow,
    sample_bilinear,
    sample_flow,
    warp,
    working_size,
)
from s2d.io.video import open_video

H, W = 96, 128
BORDER = 12  # interior margin excluded from flow-accuracy checks


def texture(h: int, w: int, seed: int = 0, sigma: float = 1.5) -> np.ndarray:
    """Smooth random texture: Gaussian-blurred uniform noise stretched to 0..255, ``h×w×3`` uint8."""
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), sigma)
    t = (t - t.min()) / (t.max() - t.min()) * 255
    return np.repeat(t.astype(np.uint8)[..., None], 3, axis=2)


def shifted_pair(dx: int, dy: int, seed: int = 0):
    """``img0``, ``img1`` crops of one texture with ``img1(x + d) = img0(x)``: true flow ``(dx, dy)``."""
    big = texture(H + 40, W + 40, seed)
    oy, ox = 20, 20
    img0 = big[oy:oy + H, ox:ox + W]
    img1 = big[oy - dy:oy - dy + H, ox - dx:ox - dx + W]
    return np.ascontiguousarray(img0), np.ascontiguousarray(img1)


def interior(a: np.ndarray, m: int = BORDER) -> np.ndarray:
    return a[m:-m, m:-m]


SH, SW = 144, 192  # square scenes: DIS's default finest level (half resolution) needs a few patches per object


def square_scene(bg_shift=(0, 0), sq_shift=(6, 0), sq=(50, 70, 44)):
    """``SH×SW`` background texture moved by ``bg_shift`` and a differently textured square moved by
    ``sq_shift``. Returns ``img0, img1, mask0, mask1`` (square masks in frames 0 and 1).
    """
    y, x, s = sq
    bg = texture(SH + 40, SW + 40, seed=1)
    fg = 255 - texture(s, s, seed=2, sigma=1.0)  # different statistics from the background
    bdx, bdy = bg_shift
    img0 = bg[20:20 + SH, 20:20 + SW].copy()
    img1 = bg[20 - bdy:20 - bdy + SH, 20 - bdx:20 - bdx + SW].copy()
    img0[y:y + s, x:x + s] = fg
    sdx, sdy = sq_shift
    img1[y + sdy:y + sdy + s, x + sdx:x + sdx + s] = fg
    m0 = np.zeros((SH, SW), bool)
    m0[y:y + s, x:x + s] = True
    m1 = np.zeros((SH, SW), bool)
    m1[y + sdy:y + sdy + s, x + sdx:x + sdx + s] = True
    return img0, img1, m0, m1


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


# --------------------------------------------------------------------------- config


def test_config_defaults_and_validation():
    cfg = FlowConfig()
    assert cfg.preset == "medium" and cfg.max_side == 512
    assert working_size(480, 854, cfg) == (288, 512)
    assert working_size(96, 128, cfg) == (96, 128)  # never upscaled
    assert working_size(480, 854, FlowConfig(max_side=None)) == (480, 854)
    for bad in ({"preset": "slow"}, {"max_side": 0}, {"max_side": True}, {"fb_alpha": -1}, {"fb_beta": float("nan")},
                {"variational_refinement": 1}):
        with pytest.raises(SettingError):
            FlowConfig(**bad)
    assert FlowConfig().fingerprint() == FlowConfig().fingerprint()
    assert FlowConfig().fingerprint() != FlowConfig(preset="fast").fingerprint()


# --------------------------------------------------------------------------- flow accuracy


@pytest.mark.parametrize("preset", ["medium", "fast"])
def test_translation_flow(preset):
    img0, img1 = shifted_pair(3, -2)
    f = compute_flow(img0, img1, FlowConfig(preset=preset))
    assert f.shape == (H, W, 2) and f.dtype == np.float32
    err = np.linalg.norm(interior(f) - np.array([3, -2], np.float32), axis=-1)
    assert np.median(err) < 0.3


def test_rotation_flow():
    img0 = texture(H, W, seed=3)
    M = cv2.getRotationMatrix2D((W / 2, H / 2), 4.0, 1.0)  # maps frame-0 pixels to frame 1
    img1 = cv2.warpAffine(img0, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    f = compute_flow(img0, img1)
    g = pixel_grid(H, W).astype(np.float64)
    true = g @ M[:, :2].T + M[:, 2] - g
    err = np.linalg.norm(interior(f - true, 16), axis=-1)
    assert np.median(err) < 1.0


def test_gray_and_float_inputs_match_rgb():
    img0, img1 = shifted_pair(3, -2)
    f_rgb = compute_flow(img0, img1)
    f_gray = compute_flow(cv2.cvtColor(img0, cv2.COLOR_RGB2GRAY), cv2.cvtColor(img1, cv2.COLOR_RGB2GRAY))
    f_float = compute_flow(img0 / 255.0, img1 / 255.0)
    np.testing.assert_allclose(f_rgb, f_gray, atol=1e-5)
    np.testing.assert_allclose(f_rgb, f_float, atol=0.05)


def test_working_size_and_scale():
    big0 = cv2.resize(shifted_pair(3, -2)[0], (W * 4, H * 4), interpolation=cv2.INTER_LINEAR)
    big1 = cv2.resize(shifted_pair(3, -2)[1], (W * 4, H * 4), interpolation=cv2.INTER_LINEAR)
    cfg = FlowConfig(max_side=W)
    p = flow_pair(big0, big1, cfg)
    assert p.size == (H, W) and p.image_size == (4 * H, 4 * W)
    assert p.scale == (0.25, 0.25)
    err = np.linalg.norm(interior(p.fwd) - np.array([3, -2], np.float32), axis=-1)
    assert np.median(err) < 0.3  # working-size pixels: 12 px at the frame size is 3 at the working size


def test_tiny_frames_are_padded_for_dis():
    a = texture(8, 12, seed=4)
    f = compute_flow(a, a)
    assert f.shape == (8, 12, 2) and np.isfinite(f).all()


def test_reused_dis_instance_gives_fresh_results():
    """OpenCV lowers a DIS instance's finest scale for frames too small for it; we must undo that."""
    img0, img1 = shifted_pair(3, -2)
    cfg = FlowConfig()
    fresh = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(
        cv2.cvtColor(img0, cv2.COLOR_RGB2GRAY), cv2.cvtColor(img1, cv2.COLOR_RGB2GRAY), None)
    compute_flow(texture(8, 12, seed=4), texture(8, 12, seed=5), cfg)  # tiny frame first
    np.testing.assert_array_equal(compute_flow(img0, img1, cfg), fresh)
    fine = compute_flow(img0, img1, FlowConfig(finest_scale=0))
    assert not np.array_equal(fine, fresh)
    with pytest.raises(SettingError):
        FlowConfig(finest_scale=9)


def test_dis_instance_is_per_thread():
    img0, img1 = shifted_pair(3, -2)
    ref = compute_flow(img0, img1)
    out, inst = [None, None], [None, None]

    def run(i):
        out[i] = compute_flow(img0, img1)
        inst[i] = flow_mod._dis(FlowConfig())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inst[0] is not inst[1] and inst[0] is not flow_mod._dis(FlowConfig())
    assert flow_mod._dis(FlowConfig()) is flow_mod._dis(FlowConfig())  # reused within a thread
    for o in out:
        np.testing.assert_allclose(o, ref, atol=1e-4)


# --------------------------------------------------------------------------- consistency


def test_fb_consistency_flags_occluded_background():
    img0, img1, m0, m1 = square_scene(sq_shift=(6, 0))
    p = flow_pair(img0, img1)
    assert p.fwd.shape == p.bwd.shape == (SH, SW, 2) and p.fwd_valid.dtype == bool
    occluded = m1 & ~m0  # background of frame 0 covered by the square in frame 1
    assert occluded.sum() == 6 * 44
    assert (~p.fwd_valid[occluded]).mean() > 0.7
    # everything away from the square's edges (and the frame border) stays valid
    near = cv2.dilate((m0 | m1).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    far = ~near
    far[:4], far[-4:], far[:, :4], far[:, -4:] = False, False, False, False
    assert p.fwd_valid[far].mean() > 0.95
    # backward: frame-1 background uncovered by the square is inconsistent too
    disoccluded = m0 & ~m1
    assert (~p.bwd_valid[disoccluded]).mean() > 0.6


def test_fb_consistency_exact_cases():
    f = np.zeros((20, 30, 2), np.float32)
    f[..., 0] = 2.0
    assert fb_consistency(f, -f)[:, :28].all()
    assert not fb_consistency(f, -f)[:, 28:].any()  # targets leave the frame
    assert not fb_consistency(f, f)[:, :28].any()  # fwd + bwd = 4 px: inconsistent
    with pytest.raises(ValueError):
        fb_consistency(f, f[:10])


# --------------------------------------------------------------------------- utilities


def test_warp_aligns_frames():
    img0, img1 = shifted_pair(3, -2)
    f = compute_flow(img0, img1)
    w = warp(img1, f)
    assert w.shape == img1.shape and w.dtype == np.uint8
    diff = np.abs(interior(w).astype(int) - interior(img0).astype(int))
    assert np.median(diff) <= 3
    # bool maps stay bool, many channels are fine, shape mismatch is refused
    exact = np.zeros((H, W, 2), np.float32)
    exact[..., 0] = 3
    m = np.zeros((H, W), bool)
    m[10:20, 13:23] = True
    wm = warp(m, exact, interpolation=cv2.INTER_NEAREST)
    assert wm.dtype == bool and wm[10:20, 10:20].all() and wm.sum() == 100
    feat = np.random.default_rng(0).random((H, W, 7)).astype(np.float32)
    wf = warp(feat, exact)
    np.testing.assert_allclose(wf[:, :W - 3], feat[:, 3:], atol=1e-5)
    with pytest.raises(ValueError):
        warp(m[:10], exact)


def test_sample_flow_bilinear():
    g = pixel_grid(40, 60)
    f = np.stack([0.5 * g[..., 0] + 1, -0.25 * g[..., 1]], axis=-1).astype(np.float32)  # linear field
    pts = np.array([[3.3, 7.7], [10.5, 0.25], [58.9, 38.1]], np.float32)
    out = sample_flow(f, pts)
    expected = np.stack([0.5 * pts[:, 0] + 1, -0.25 * pts[:, 1]], axis=1)
    np.testing.assert_allclose(out, expected, atol=1e-3)
    assert sample_flow(f, np.zeros((0, 2))).shape == (0, 2)
    # outside the frame: clamped to the border value
    np.testing.assert_allclose(sample_flow(f, [[-5.0, 0.0]]), f[0:1, 0], atol=1e-5)
    assert np.isnan(sample_flow(f, [[np.nan, 1.0], [2.0, 2.0]])[0]).all()
    # generic maps: H×W and H×W×C
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(sample_bilinear(m, [[1.5, 0.5], [3, 2]]), [3.5, 11])
    assert sample_bilinear(np.zeros((3, 4, 5)), [[1, 1]]).shape == (1, 5)


def test_resize_flow_scales_vectors():
    f = np.zeros((40, 60, 2), np.float32)
    f[..., 0], f[..., 1] = 2.0, 3.0
    r = resize_flow(f, (20, 90))
    assert r.shape == (20, 90, 2)
    np.testing.assert_allclose(r[..., 0], 3.0, atol=1e-5)
    np.testing.assert_allclose(r[..., 1], 1.5, atol=1e-5)
    np.testing.assert_allclose(resize_flow(f, (40, 60)), f)
    # a real flow resized to the frame size and back is unchanged in the interior
    img0, img1 = shifted_pair(3, -2)
    p = flow_pair(img0, img1)
    up = resize_flow(p.fwd, (2 * H, 2 * W))
    assert abs(float(np.median(interior(up, 2 * BORDER)[..., 0])) - 6) < 0.6


# --------------------------------------------------------------------------- camera motion


def test_camera_motion_translation_and_moving_square():
    img0, img1, m0, m1 = square_scene(bg_shift=(2, 1), sq_shift=(-4, 3))
    p = flow_pair(img0, img1)
    fit = fit_camera_motion(p.fwd, p.fwd_valid)
    Hm, frac = fit  # unpacks as (H, inlier_fraction)
    assert Hm.shape == (3, 3) and Hm.dtype == np.float64 and not fit.fallback and fit.method == "homography"
    np.testing.assert_allclose(Hm[:2, 2], [2, 1], atol=0.5)
    np.testing.assert_allclose(Hm[:2, :2], np.eye(2), atol=0.02)
    assert frac > 0.6
    res = np.linalg.norm(residual_flow(p.fwd, Hm), axis=-1)
    bg = ~(cv2.dilate((m0 | m1).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0)
    inner = cv2.erode(m0.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert np.median(interior(res)[interior(bg)]) < 0.5
    assert np.median(res[inner]) > 5.0  # true residual |(-6, 2)| = 6.3
    sal = motion_saliency(p)
    assert sal.shape == (SH, SW) and sal.dtype == np.float32
    assert np.median(sal[inner]) > 5.0
    for fb in (True, False):
        mask = motion_mask_baseline(img0, img1, fb_check=fb)
        assert mask.shape == (SH, SW) and mask.dtype == bool
        assert iou(mask, m0) > 0.8


def test_motion_mask_baseline_matches_its_parts_and_resizes():
    img0, img1, m0, _ = square_scene(bg_shift=(2, 1), sq_shift=(-4, 3))
    big0 = cv2.resize(img0, (2 * SW, 2 * SH), interpolation=cv2.INTER_LINEAR)
    big1 = cv2.resize(img1, (2 * SW, 2 * SH), interpolation=cv2.INTER_LINEAR)
    cfg = FlowConfig(max_side=SW)
    mask = motion_mask_baseline(big0, big1, cfg)
    assert mask.shape == (2 * SH, 2 * SW)
    small = saliency_to_mask(motion_saliency(flow_pair(big0, big1, cfg)))
    np.testing.assert_array_equal(mask, cv2.resize(small.astype(np.float32), (2 * SW, 2 * SH)) > 0.5)
    big_gt = cv2.resize(m0.astype(np.uint8), (2 * SW, 2 * SH), interpolation=cv2.INTER_NEAREST) > 0
    assert iou(mask, big_gt) > 0.8
    assert motion_mask_baseline(big0, big1, cfg, out_size=(SH, SW)).shape == (SH, SW)


def test_fit_camera_motion_fallbacks():
    f = np.zeros((64, 64, 2), np.float32)
    f[..., 0] = 1.5
    f[..., 1] = -0.5
    none = fit_camera_motion(f, np.zeros((64, 64), bool))
    assert none.method == "identity" and none.fallback and none.inlier_fraction == 0.0
    np.testing.assert_array_equal(none.H, np.eye(3))
    few = np.zeros((64, 64), bool)
    few[4, 4] = few[12, 12] = few[20, 4] = True  # three grid points
    fit = fit_camera_motion(f, few)
    assert fit.method == "translation" and fit.fallback
    np.testing.assert_allclose(fit.H[:2, 2], [1.5, -0.5])
    aff = fit_camera_motion(f, method="affine")
    assert aff.method == "affine" and not aff.fallback
    np.testing.assert_allclose(homography_flow(aff.H, (64, 64)), f, atol=1e-3)
    assert fit_camera_motion(f, method="translation").fallback is False
    mag = fit_camera_motion(f, robust="magsac")
    np.testing.assert_allclose(mag.H[:2, 2], [1.5, -0.5], atol=1e-3)
    with pytest.raises(SettingError):
        fit_camera_motion(f, method="similarity")
    with pytest.raises(SettingError):
        fit_camera_motion(f, sample_step=0)


def test_homography_flow_matches_projection():
    Hm = np.array([[1.02, 0.01, 3.0], [-0.02, 0.98, -1.0], [1e-4, -2e-4, 1.0]])
    hf = homography_flow(Hm, (30, 40))
    for x, y in [(0, 0), (39, 29), (17, 5)]:
        v = Hm @ [x, y, 1.0]
        np.testing.assert_allclose(hf[y, x], v[:2] / v[2] - [x, y], atol=1e-3)
    np.testing.assert_allclose(residual_flow(hf, Hm), 0, atol=1e-4)


def test_otsu_and_largest_component():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(1, 0.2, 1000), rng.normal(5, 0.3, 300)])
    t = otsu_threshold(v)
    assert (v[:1000] > t).mean() < 0.01 and (v[1000:] > t).all()  # splits the two modes
    assert otsu_threshold(np.full(10, 2.0)) == 2.0
    m = np.zeros((20, 20), bool)
    m[1:3, 1:3] = True
    m[10:16, 10:16] = True
    lc = largest_component(m)
    assert lc.sum() == 36 and lc[12, 12]
    assert not largest_component(np.zeros((5, 5), bool)).any()


# --------------------------------------------------------------------------- cache and streaming


def _pattern_frames(n: int = 5):
    """96×128 frames: a textured background and a 32 px square moving 3 px/frame to the right."""
    frames = []
    bg = texture(96, 128, seed=5)
    fg = 255 - texture(32, 32, seed=6)
    for i in range(n):
        a = bg.copy()
        a[30:62, 20 + 3 * i:52 + 3 * i] = fg
        frames.append(a)
    return frames


def _square_flow(p: FlowPair, t: int) -> np.ndarray:
    """Median flow inside the (eroded) square of frame ``t``."""
    sq = p.fwd[36:56, 26 + 3 * t:46 + 3 * t]
    return np.median(sq.reshape(-1, 2), axis=0)


def test_cache_round_trip_and_keys(tmp_path):
    video = make_video(tmp_path / "clip.mp4", _pattern_frames(3))
    cfg = FlowConfig()
    cache = FlowCache.for_video(tmp_path / "cache", video, cfg, image_size=(96, 128))
    img0, img1 = shifted_pair(3, -2)
    p = flow_pair(img0, img1, cfg)
    assert cache.get(0, 1) is None and (0, 1) not in cache
    path = cache.put(0, 1, p)
    assert path.exists() and (0, 1) in cache and path.parent == cache.dir
    q = cache.get(0, 1, image_size=(H, W))
    assert isinstance(q, FlowPair) and (q.t0, q.t1) == (0, 1) and q.image_size == (H, W)
    np.testing.assert_allclose(q.fwd, p.fwd, atol=1 / 16 + 1e-6)
    np.testing.assert_allclose(q.bwd, p.bwd, atol=1 / 16 + 1e-6)
    assert (q.fwd_valid == p.fwd_valid).mean() > 0.98
    assert cache.put_flows(0, 1, p.fwd, p.bwd).read_bytes() == path.read_bytes()
    assert cache.nbytes() == path.stat().st_size < p.fwd.nbytes  # well below raw float32 fwd alone
    # no temp files left behind; meta.json describes the entry
    assert sorted(f.name for f in cache.dir.iterdir()) == ["000000_000001.png", "meta.json"]

    # the key changes with the config, the working size and the video file (size/mtime)
    same = FlowCache.make_key(video, cfg, (96, 128))
    assert same == cache.key
    assert FlowCache.make_key(video, FlowConfig(preset="fast"), (96, 128)) != same
    assert FlowCache.make_key(video, FlowConfig(fb_beta=1.0), (96, 128)) != same
    assert FlowCache.make_key(video, cfg, (640, 960)) != same
    st = os.stat(video)
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    stale = FlowCache.for_video(tmp_path / "cache", video, cfg, image_size=(96, 128))
    assert stale.key != same and stale.get(0, 1) is None


def test_cache_key_for_frame_folders(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:05d}.png"), texture(16, 16, seed=i))
    k1 = FlowCache.make_key(folder, FlowConfig())
    assert k1 == FlowCache.make_key(str(folder) + "/", FlowConfig())
    cv2.imwrite(str(folder / "00001.png"), texture(16, 16, seed=9) // 2)  # rewrite a frame
    assert FlowCache.make_key(folder, FlowConfig()) != k1
    assert FlowCache.make_key(str(folder / "*.png"), FlowConfig()) != k1
    with pytest.raises(SettingError):
        FlowCache(tmp_path, "../evil")


def test_cache_write_is_atomic_and_corrupt_entries_miss(tmp_path, monkeypatch):
    cache = FlowCache(tmp_path, "vid")
    img0, img1 = shifted_pair(3, -2)
    p = flow_pair(img0, img1)
    cache.put(0, 1, p)
    good = cache.path(0, 1).read_bytes()

    # a failure while writing leaves the previous entry untouched and no temp file
    import s2d.io.atomic as atomic

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        cache.put(0, 1, FlowPair.from_flows(p.fwd + 1, p.bwd, p.image_size))
    monkeypatch.undo()
    assert cache.path(0, 1).read_bytes() == good
    assert [f.name for f in cache.dir.iterdir()] == ["000000_000001.png"]

    # a truncated or foreign file is a miss, not an error
    cache.path(0, 1).write_bytes(good[: len(good) // 2])
    assert cache.get(0, 1) is None
    cv2.imwrite(str(cache.path(1, 2)), np.zeros((8, 8, 3), np.uint8))
    assert cache.get(1, 2) is None


def test_iter_flow_pairs_over_video_with_cache(tmp_path, monkeypatch):
    frames = _pattern_frames(5)
    video = make_video(tmp_path / "clip.mp4", frames)
    cfg = FlowConfig()
    stream = open_video(video)
    cache = FlowCache.for_video(tmp_path / "cache", video, cfg, image_size=(stream.info.height, stream.info.width))
    got = list(iter_flow_pairs(stream, cfg, cache=cache))
    assert [t for t, _ in got] == [0, 1, 2, 3]
    assert all((p.t0, p.t1) == (t, t + 1) for t, p in got)
    for t, p in got:
        assert p.fwd.shape == (96, 128, 2) and p.image_size == (96, 128)
        np.testing.assert_allclose(_square_flow(p, t), [3, 0], atol=0.5)
    assert len(list(cache.dir.glob("*.png"))) == 4

    # second pass: every pair comes from the cache, DIS is never run
    def no_dis(*a, **k):
        raise AssertionError("DIS called on a cache hit")

    monkeypatch.setattr(flow_mod, "_dis_calc", no_dis)
    again = list(iter_flow_pairs(open_video(video), cfg, cache=cache))
    assert [t for t, _ in again] == [0, 1, 2, 3]
    for (_, a), (_, b) in zip(got, again):
        np.testing.assert_allclose(a.fwd, b.fwd, atol=1 / 16 + 1e-6)
    monkeypatch.undo()

    # step=2 pairs every other frame; no cache works too
    stepped = list(iter_flow_pairs(open_video(video), cfg, step=2))
    assert [(p.t0, p.t1) for _, p in stepped] == [(0, 2), (2, 4)]
    np.testing.assert_allclose(_square_flow(stepped[0][1], 0), [6, 0], atol=0.5)
    with pytest.raises(SettingError):
        list(iter_flow_pairs(open_video(video), cfg, step=0))


def test_iter_flow_pairs_is_lazy():
    """The iterator pulls frames one at a time (never materialises the stream)."""
    pulled = []

    def gen():
        from s2d.io.video import Frame

        for i, a in enumerate(_pattern_frames(4)):
            pulled.append(i)
            yield Frame(i, a, f"{i:05d}")

    it = iter_flow_pairs(gen())
    t, _ = next(it)
    assert t == 0 and pulled == [0, 1]
