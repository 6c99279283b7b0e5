"""Point trackers (``s2d.tracking``): accuracy on synthetic textures, occlusion, re-acquisition, frames
leaving the image, frame ranges, the RAM/disk store, the factory, and keymask discovery end to end.

Synthetic frames are Gaussian-blurred noise warped by known motions, so every point's true position is
known exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Tuple

import cv2
import numpy as np
import pytest

from s2d import rle as rle_utils
from s2d.errors import SettingError
from s2d.features.flow import FlowConfig
from s2d.keymasks import discover_keymasks
from s2d.tracking import DEFAULT_TRACKER, TRACKERS, PointTracker, build_tracker
from s2d.tracking.flow import FlowTracker, FlowTrackerConfig, motion_boundary
from s2d.tracking.lk import LKTracker, LKTrackerConfig
from s2d.tracking.video import ArrayStore
from s2d.types import Track, VideoSegmentation

BACKENDS = ["flow", "lk"]


# --------------------------------------------------------------------------- synthetic scenes


def texture(h: int, w: int, seed: int, sigma: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), sigma)
    a = (a - a.min()) / (a.max() - a.min())
    return (a * 255).astype(np.uint8)


def rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def warped(tex: np.ndarray, T: int, H: int, W: int, mat: Callable[[int], np.ndarray]) -> List[np.ndarray]:
    """Frame t = ``tex`` mapped by the 2×3 affine ``mat(t)`` (texture → frame coordinates)."""
    return [rgb(cv2.warpAffine(tex, mat(t), (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT))
            for t in range(T)]


H, W, T = 96, 128, 10
VEL = np.array([1.3, -0.7])
CENTER = np.array([W / 2, H / 2])
DEG_PER_FRAME = 1.0


def translating(T: int = T, vel: np.ndarray = VEL) -> List[np.ndarray]:
    tex = texture(300, 300, 0)
    return warped(tex, T, H, W, lambda t: np.float32([[1, 0, -80 + vel[0] * t], [0, 1, -80 + vel[1] * t]]))


def rotating() -> List[np.ndarray]:
    tex = texture(300, 300, 0)

    def mat(t: int) -> np.ndarray:
        m = cv2.getRotationMatrix2D((150, 150), DEG_PER_FRAME * t, 1.0)
        m[:, 2] += CENTER - 150
        return m.astype(np.float32)

    return warped(tex, T, H, W, mat)


def rotation_truth(P: np.ndarray, dt: int) -> np.ndarray:
    a = np.deg2rad(-DEG_PER_FRAME * dt)  # OpenCV's positive angle turns counter-clockwise on screen
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (P - CENTER) @ R.T + CENTER


def grid(x0: float, x1: float, y0: float, y1: float, step: float) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(x0, x1 + 1e-6, step), np.arange(y0, y1 + 1e-6, step))
    return np.stack([xs.ravel(), ys.ravel()], 1)


def queries(t: int, P: np.ndarray) -> np.ndarray:
    return np.concatenate([np.full((len(P), 1), float(t)), P], axis=1)


# Occlusion scene: static textured background; a 28×28 textured square slides right 7 px/frame along
# rows 34..61 and covers background points for ~4 frames each.
OCC_T, OCC_S, OCC_Y = 16, 28, 34


def occ_left(t: int) -> int:
    return -10 + 7 * t


def occlusion_frames() -> List[np.ndarray]:
    bg, occ = texture(H, W, 1), texture(OCC_S, OCC_S, 2)
    out = []
    for t in range(OCC_T):
        f = bg.copy()
        x0 = occ_left(t)
        xa, xb = max(x0, 0), min(x0 + OCC_S, W)
        if xb > xa:
            f[OCC_Y:OCC_Y + OCC_S, xa:xb] = occ[:, xa - x0:xb - x0]
        out.append(rgb(f))
    return out


def covered(t: int, P: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Points inside the occluder at frame t (``margin`` > 0 grows it, < 0 shrinks it)."""
    x0 = occ_left(t)
    return ((P[:, 0] >= x0 - margin) & (P[:, 0] <= x0 + OCC_S - 1 + margin)
            & (P[:, 1] >= OCC_Y - margin) & (P[:, 1] <= OCC_Y + OCC_S - 1 + margin))


@pytest.fixture(scope="module")
def occlusion_results():
    frames = occlusion_frames()
    P = grid(6, W - 6, 6, H - 6, 6.0)
    out = {}
    for name in BACKENDS:
        with build_tracker(name).prepare(frames) as tr:
            out[name] = tr.track(queries(0, P[~covered(0, P, 3)]))
    return P[~covered(0, P, 3)], out


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("motion", ["translation", "rotation"])
def test_subpixel_accuracy_forward_and_backward(name, motion):
    frames = translating() if motion == "translation" else rotating()
    P = grid(20, W - 20, 20, H - 20, 12.0)
    qt = T // 2
    with build_tracker(name).prepare(frames) as tr:
        assert tr.num_frames == T and tr.size == (H, W) and tr.working_size == (H, W)
        res = tr.track(queries(qt, P))
    assert res.points.shape == (T, len(P), 2) and res.visible.shape == (T, len(P))
    assert res.visible.all()
    for t in range(T):
        truth = P + VEL * (t - qt) if motion == "translation" else rotation_truth(P, t - qt)
        err = np.linalg.norm(res.points[t] - truth, axis=1)
        assert err.max() < 1.0, (t, err.max())
    np.testing.assert_array_equal(res.points[qt], P.astype(np.float32))


@pytest.mark.parametrize("name", BACKENDS)
def test_tracker_from_a_path_reports_original_coordinates(tmp_path: Path, name):
    """A frame folder decoded at a smaller working size; queries and results stay in original pixels."""
    frames = translating()
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    tracker = FlowTracker(flow=FlowConfig(max_side=96)) if name == "flow" else LKTracker(max_side=96)
    P = grid(24, W - 24, 24, H - 24, 16.0)
    with tracker.prepare(folder) as tr:
        assert tr.size == (H, W) and tr.working_size == (72, 96)
        res = tr.track(queries(0, P))
    err = np.linalg.norm(res.points - (P[None] + VEL[None, None] * np.arange(T)[:, None, None]), axis=2)
    assert res.visible.mean() > 0.95 and err[res.visible].max() < 1.0


# --------------------------------------------------------------------------- visibility


@pytest.mark.parametrize("name", BACKENDS)
def test_occluded_points_become_invisible_and_others_stay_visible(occlusion_results, name):
    P, results = occlusion_results
    res = results[name]
    cov = np.array([covered(t, P, -2) for t in range(OCC_T)])  # well inside the occluder
    far = np.array([~covered(t, P, 12) for t in range(OCC_T)]).all(axis=0)  # never near it (LK window)
    assert cov.sum() > 50 and far.sum() > 50
    assert (~res.visible[cov]).mean() > 0.8
    assert res.visible[:, far].mean() > 0.95
    err = np.linalg.norm(res.points - P[None], axis=2)[:, far]  # the background is static
    assert np.mean(err[res.visible[:, far]] < 1.0) > 0.98


def test_flow_tracker_reacquires_points_after_the_occluder_left(occlusion_results):
    P, results = occlusion_results
    res = results["flow"]
    cov = np.array([covered(t, P, -2) for t in range(OCC_T)])
    was = np.cumsum(cov, axis=0) > 0
    free = np.array([~covered(t, P, 6) for t in range(OCC_T)])
    lost_first = ~res.visible[1]  # lost on the first step: no velocity to re-acquire against
    after = was & free & ~lost_first[None, :]
    assert after.sum() > 50
    assert res.visible[after].mean() > 0.6  # most come back
    err = np.linalg.norm(res.points - P[None], axis=2)
    back = after & res.visible
    assert np.median(err[back]) < 1.0 and np.mean(err[back] < 2.0) > 0.9  # ...near the right place


@pytest.mark.parametrize("name", BACKENDS)
def test_points_leaving_the_frame_become_invisible(name):
    vel = np.array([4.0, 0.0])
    frames = translating(T, vel)
    P = grid(80, W - 10, 20, H - 20, 8.0)
    with build_tracker(name).prepare(frames) as tr:
        res = tr.track(queries(0, P))
    truth = P[None] + vel[None, None] * np.arange(T)[:, None, None]
    out = truth[..., 0] > W - 1 + 2
    inside = truth[..., 0] < W - 1 - 12
    assert out.sum() > 20 and (~res.visible[out]).all()
    assert res.visible[inside].mean() > 0.95


@pytest.mark.parametrize("name", BACKENDS)
def test_query_frame_is_always_visible(name):
    frames = occlusion_frames()
    # on the occluder's edge, outside the frame, and in the corner: visible and exact at their frame
    q = np.array([[4, occ_left(4) + 0.5, OCC_Y + 10], [4, -3.0, 20.0], [7, W - 1, H - 1], [15, 0.0, 0.0]])
    with build_tracker(name).prepare(frames) as tr:
        res = tr.track(q)
    ar = np.arange(len(q))
    qt = q[:, 0].astype(int)
    assert res.visible[qt, ar].all()
    np.testing.assert_array_equal(res.points[qt, ar], q[:, 1:].astype(np.float32))


# --------------------------------------------------------------------------- interface


@pytest.mark.parametrize("name", BACKENDS)
def test_frame_range_restricts_tracking(name):
    frames = translating()
    P = grid(30, W - 30, 30, H - 30, 15.0)
    q = np.concatenate([queries(4, P), queries(6, P)])
    with build_tracker(name).prepare(frames) as tr:
        full = tr.track(q)
        part = tr.track(q, frame_range=(2, 8))
        assert np.isnan(part.points[:2]).all() and np.isnan(part.points[8:]).all()
        assert not part.visible[:2].any() and not part.visible[8:].any()
        np.testing.assert_allclose(part.points[2:8], full.points[2:8], atol=1e-5)
        np.testing.assert_array_equal(part.visible[2:8], full.visible[2:8])
        with pytest.raises(SettingError, match="query frames"):
            tr.track(q, frame_range=(5, 8))
        for bad in [(3, 3), (-1, 4), (0, T + 1), "x"]:
            with pytest.raises(SettingError):
                tr.track(q, frame_range=bad)
        empty = tr.track(np.zeros((0, 3)))
        assert empty.points.shape == (T, 0, 2) and empty.visible.shape == (T, 0)
        with pytest.raises(SettingError):
            tr.track(np.zeros((3, 2)))


def test_unprepared_tracker_and_bad_settings():
    tr = FlowTracker()
    assert isinstance(tr, PointTracker)
    with pytest.raises(SettingError, match="not prepared"):
        tr.track(np.zeros((1, 3)))
    with pytest.raises(SettingError, match="without frames"):
        tr.prepare([])
    with pytest.raises(SettingError):
        FlowTrackerConfig(reacquire_frames=0)
    with pytest.raises(SettingError):
        FlowTrackerConfig(boundary_beta=-1.0)
    with pytest.raises(SettingError):
        LKTrackerConfig(win_size=1)
    with pytest.raises(SettingError):
        FlowTracker(FlowTrackerConfig(), reacquire_frames=2)


def test_build_tracker_names_and_cotracker3():
    assert DEFAULT_TRACKER == "flow" and TRACKERS == ("flow", "lk", "cotracker3")
    assert isinstance(build_tracker(), FlowTracker)
    assert isinstance(build_tracker("flow", reacquire_frames=2), FlowTracker)
    assert build_tracker("flow", reacquire_frames=2).config.reacquire_frames == 2
    assert build_tracker("flow", flow={"max_side": 256}).config.flow == FlowConfig(max_side=256)  # JSON settings
    with pytest.raises(SettingError, match="bad flow settings"):
        build_tracker("flow", flow={"nope": 1})
    lk = build_tracker("lk", config=LKTrackerConfig(win_size=15))
    assert isinstance(lk, LKTracker) and lk.config.win_size == 15
    assert build_tracker("cotracker3").name == "cotracker3"  # tests/test_cotracker3.py has the rest
    with pytest.raises(SettingError, match="unknown tracker"):
        build_tracker("raft")
    with pytest.raises(SettingError, match="bad settings"):
        build_tracker("flow", no_such_option=1)


def test_reacquire_frames_k_delays_reacquisition(occlusion_results):
    P, results = occlusion_results
    with FlowTracker(reacquire_frames=3).prepare(occlusion_frames()) as tr:
        k3 = tr.track(queries(0, P))
    k1 = results["flow"]
    assert k3.visible.sum() < k1.visible.sum()
    assert not (k3.visible & ~k1.visible)[1:].any()  # K=3 is never visible where K=1 is not


# --------------------------------------------------------------------------- store policy


def test_array_store_ram_then_disk(tmp_path: Path):
    st = ArrayStore((4, 5), np.float16, ram_limit_mb=100 / 2 ** 20, cache_dir=tmp_path)  # 100 bytes: 2 items
    items = [np.full((4, 5), i, np.float16) for i in range(6)]
    st.append(items[0])
    assert not st.on_disk
    for a in items[1:]:
        st.append(a)
    assert st.on_disk and st.path.parent == tmp_path
    st.finalize()
    assert (st.path / "items.bin").stat().st_size == 6 * 40
    assert isinstance(st[3], np.memmap) and len(st) == 6
    for i, a in enumerate(items):
        np.testing.assert_array_equal(st[i], a)
    path = st.path
    st.close()
    assert not path.exists()


@pytest.mark.parametrize("name", BACKENDS)
def test_long_video_uses_the_disk_store_with_identical_results(tmp_path: Path, name):
    frames = translating(40)
    P = grid(30, W - 30, 30, H - 30, 15.0)
    q = queries(20, P)
    cls = FlowTracker if name == "flow" else LKTracker
    ram_cfg = FlowTrackerConfig() if name == "flow" else LKTrackerConfig()
    disk_cfg = type(ram_cfg)(ram_limit_mb=0.25, cache_dir=str(tmp_path))
    ram = cls(ram_cfg).prepare(frames)
    disk = cls(disk_cfg).prepare(frames)
    try:
        assert not ram.store.on_disk
        assert disk.store.on_disk and disk.store.path.parent == tmp_path
        assert any(disk.store.path.iterdir())
        a, b = ram.track(q), disk.track(q)
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.visible, b.visible)
    finally:
        path = disk.store.path
        ram.close()
        disk.close()
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_motion_boundary_marks_flow_edges_only():
    f = np.zeros((20, 30, 2), np.float32)
    f[:, 15:, 0] = 5.0
    m = motion_boundary(f)
    assert m[:, 14:16].all() and not m[:, :13].any() and not m[:, 17:].any()
    smooth = np.dstack([np.tile(np.linspace(0, 0.3, 30, dtype=np.float32), (20, 1)), np.zeros((20, 30), np.float32)])
    assert not motion_boundary(smooth).any()  # a 1 % zoom-like gradient is not a boundary


# --------------------------------------------------------------------------- keymask discovery


def two_object_video(T: int = 16) -> Tuple[List[np.ndarray], List[np.ndarray], List[np.ndarray]]:
    """Textured static background; a textured square moving right and a textured disc moving left."""
    bg = texture(H, W, 3, sigma=1.5)
    sq_tex = texture(24, 24, 4, sigma=1.0)
    disc_tex = texture(26, 26, 5, sigma=1.0)
    yy, xx = np.mgrid[:26, :26]
    disc = (xx - 12.5) ** 2 + (yy - 12.5) ** 2 <= 12.5 ** 2
    frames, ma, mb = [], [], []
    for t in range(T):
        f = bg.copy()
        a = np.zeros((H, W), bool)
        b = np.zeros((H, W), bool)
        xa = 10 + 4 * t
        f[14:38, xa:xa + 24] = sq_tex
        a[14:38, xa:xa + 24] = True
        xb = 90 - 3 * t
        region = f[58:84, xb:xb + 26]
        region[disc] = disc_tex[disc]
        b[58:84, xb:xb + 26] = disc
        frames.append(rgb(f))
        ma.append(a)
        mb.append(b)
    return frames, ma, mb


def test_discover_keymasks_end_to_end_with_the_flow_tracker():
    frames, ma, mb = two_object_video()
    n = len(frames)
    tracks = []
    for t in range(n):
        for m, score in ((ma[t], 0.8), (mb[t], 0.7)):
            seq = [None] * n
            seq[t] = m
            tracks.append(Track(len(tracks) + 1, seq, score))
    video = VideoSegmentation(H, W, n, tracks, name="two-objects")
    with build_tracker("flow").prepare(frames) as tr:
        res = discover_keymasks(video, tr, tracker_size=None if tr.size == (H, W) else tr.size)
    assert len(res.objects) >= 2
    hits = set()
    for obj in res.objects:
        ious = []
        for f, rle in zip(obj.frames, obj.masks):
            m = rle_utils.decode(rle)
            ious.append(max((m & g[f]).sum() / (m | g[f]).sum() for g in (ma, mb)))
            which = int(np.argmax([(m & g[f]).sum() for g in (ma, mb)]))
        assert min(ious) > 0.9
        hits.add(which)
        assert obj.num_keymasks >= 5
    assert hits == {0, 1}  # both true objects are found


def test_flow_cache_is_reused_and_single_frame_videos_work(tmp_path: Path):
    from s2d.features.flow import FlowCache

    frames = translating()
    cache = FlowCache(tmp_path, "translating", FlowConfig())
    P = grid(20, W - 20, 20, H - 20, 12.0)
    with FlowTracker().prepare(frames, flow_cache=cache) as tr:
        first = tr.track(queries(3, P))
    assert len(list(cache.dir.glob("*.png"))) == T - 1
    with FlowTracker().prepare(frames, flow_cache=cache) as tr:  # all hits (1/8 px quantised flow)
        second = tr.track(queries(3, P))
    assert np.abs(first.points - second.points).max() < 6 / 16 + 0.01  # ≤ 1/16 px rounding per step, 6 steps
    assert (first.visible == second.visible).mean() > 0.99
    with pytest.raises(SettingError, match="another flow config"):
        FlowTracker(FlowTrackerConfig(flow=FlowConfig(preset="fast"))).prepare(frames, flow_cache=cache)
    for name in BACKENDS:
        with build_tracker(name).prepare(frames[:1]) as tr:
            res = tr.track(np.array([[0, 5.0, 6.0]]))
        assert res.points.shape == (1, 1, 2) and res.visible.all()


# --------------------------------------------------------------------------- robustness settings


def zooming(T: int = T, scale: float = 1.05) -> List[np.ndarray]:
    """The texture zooming in about the frame centre by ``scale`` per frame (a smooth, non-rigid-like
    flow field whose gradient is ``scale − 1`` everywhere: no motion boundary anywhere)."""
    tex = texture(400, 400, 3)

    def mat(t: int) -> np.ndarray:
        m = cv2.getRotationMatrix2D((200, 200), 0.0, scale ** t)
        m[:, 2] += CENTER - 200
        return m.astype(np.float32)

    return warped(tex, T, H, W, mat)


def test_smooth_flow_gradients_are_not_motion_boundaries_by_default():
    """A 5 %/frame zoom: Sundaram's boundary β = 0.002 (the old default) drops points everywhere near the
    centre; the default β = 0.05 keeps them (a real boundary, the sliding square, is still found)."""
    frames = zooming()
    P = grid(40, W - 40, 30, H - 30, 6.0)  # stays inside the frame for 10 frames of zoom
    truth = [(P - CENTER) * 1.05 ** t + CENTER for t in range(T)]
    with FlowTracker().prepare(frames) as tr:
        res = tr.track(queries(0, P))
    with FlowTracker(boundary_beta=0.002).prepare(frames) as tr:
        strict = tr.track(queries(0, P))
    assert res.visible.mean() > 0.95 and strict.visible.mean() < res.visible.mean()
    err = np.linalg.norm(res.points - np.array(truth), axis=2)
    assert np.median(err[res.visible]) < 1.0


def test_tracker_level_fb_thresholds_and_occlusion_window():
    frames = occlusion_frames()
    cfg = FlowTrackerConfig()
    assert cfg.fb_alpha is not None and cfg.occlusion_window > 1
    with FlowTracker(fb_alpha=None, fb_beta=None, occlusion_window=0, boundary_alpha=None).prepare(frames) as tr:
        flow_cfg = tr.store, tr._masks[3].copy()  # the flow config's own 0.01 / 0.5
    with FlowTracker(fb_alpha=0.01, fb_beta=0.5, occlusion_window=0, boundary_alpha=None).prepare(frames) as tr:
        same = tr._masks[3].copy()
    with FlowTracker(fb_alpha=1e3, fb_beta=1e3, occlusion_window=0, boundary_alpha=None).prepare(frames) as tr:
        loose = tr._masks[3].copy()
    with FlowTracker(fb_alpha=0.01, fb_beta=0.5, occlusion_window=5, boundary_alpha=None).prepare(frames) as tr:
        med = tr._masks[3].copy()
    np.testing.assert_array_equal(flow_cfg[1], same)
    assert loose[0].mean() > same[0].mean()  # a huge tolerance accepts (nearly) everything inside the frame
    np.testing.assert_array_equal(med[0], cv2.medianBlur(same[0], 5))
    for bad in (dict(occlusion_window=4), dict(occlusion_window=-1), dict(occlusion_window=True),
                dict(fb_alpha=-1.0), dict(fb_beta=float("nan")), dict(lost_follow_flow="yes")):
        with pytest.raises(SettingError):
            FlowTrackerConfig(**bad)


def test_lost_follow_flow_moves_points_with_inconsistent_flow_only():
    from s2d.tracking.video import ReacquireRule, chain

    def step(t, direction, p):
        """+2 px/frame in x; 1→2 inconsistent with a +5 px flow (a flow error); 2→3 consistent but
        (0, +10) (an occluder's motion); then +2 again."""
        d = np.tile([2.0 * direction, 0.0], (len(p), 1))
        ok = np.ones(len(p), bool)
        if direction > 0 and t == 1:
            d[:] = [5.0, 0.0]
            ok[:] = False
        if direction > 0 and t == 2:
            d[:] = [0.0, 10.0]
        return d, ok

    q = np.array([[0, 10.0, 10.0]])
    xs = {}
    for follow in (False, True):
        pts, vis = chain(step, q, 6, (0, 6), ReacquireRule(1, 2.0, 0.5, follow))
        assert vis[:, 0].tolist() == [True, True, False, False, True, True]
        xs[follow] = pts[:, 0]
    np.testing.assert_allclose(xs[False][2], [14.0, 10.0])  # the velocity
    np.testing.assert_allclose(xs[True][2], [17.0, 10.0])   # the inconsistent flow itself
    for follow in (False, True):  # the consistent, disagreeing step is replaced by the velocity in both
        np.testing.assert_allclose(xs[follow][3] - xs[follow][2], [2.0, 0.0])
