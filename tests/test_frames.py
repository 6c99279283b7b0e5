"""Stage 1 building blocks: affinities, normalized cuts, corner flip, CRF refinement, depth cue, config."""

from __future__ import annotations

import numpy as np
import pytest

from s2d.errors import InputError, SettingError
from s2d.frames import DepthFolder, FrameSegmenter, MaskConfig, motion_from_flow
from s2d.frames.affinity import (backproject, depth_affinity, feature_affinity, fuse_affinities, motion_affinity,
                                 pool_to_grid)
from s2d.frames.ncut import corner_count, iterative_ncut, ncut_bipartition, second_eigenvector
from s2d.frames.refine import crf_refine, resize_mask
from s2d.frames.score import combine_score, edge_agreement, motion_contrast, size_prior


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1, (a | b).sum())


def textured(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth random texture (trackable by optical flow), uint8 RGB."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC))


def square_mask(h: int, w: int, y0: int, x0: int, s: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y0 + s, x0:x0 + s] = True
    return m


# --------------------------------------------------------------------------- normalized cuts


def test_ncut_recovers_two_separable_regions() -> None:
    # a synthetic "image" of two regions: per-token colour features of a disk on a background, with noise
    h, w = 18, 24
    ys, xs = np.mgrid[0:h, 0:w]
    disk = (ys - 9) ** 2 + (xs - 13) ** 2 < 25
    rng = np.random.default_rng(0)
    colour = np.where(disk[..., None], [0.9, 0.2, 0.1], [0.1, 0.3, 0.9]) + 0.08 * rng.standard_normal((h, w, 3))
    feats = colour.reshape(-1, 3)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    cuts = iterative_ncut(feature_affinity(feats, tau=0.9), (h, w), max_masks=1)
    assert len(cuts) == 1
    assert iou(cuts[0].mask, disk) > 0.9
    assert 0.0 <= cuts[0].eigenvalue < 0.5
    assert cuts[0].eigvec[disk].mean() > 0  # foreground side is positive


def test_second_eigenvector_dense_and_lanczos_agree() -> None:
    rng = np.random.default_rng(1)
    f = rng.standard_normal((500, 8))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    W = np.exp(f @ f.T)  # large graph: Lanczos path
    x, lam = second_eigenvector(W)
    import scipy.linalg

    d = W.sum(1)
    vals, vecs = scipy.linalg.eigh(np.diag(d) - W, np.diag(d), subset_by_index=[1, 1])
    assert lam == pytest.approx(vals[0], abs=1e-6)
    cos = abs(x @ vecs[:, 0]) / (np.linalg.norm(x) * np.linalg.norm(vecs[:, 0]))
    assert cos > 0.999


def test_corner_flip_rule() -> None:
    # two clusters: the border ring (touches all 4 corners, the smaller cluster, so it holds the seed)
    # and the interior; MaskCut's rule flips a foreground covering >= 2 corners
    h = w = 16
    ring = np.zeros((h, w), bool)
    ring[:2, :] = ring[-2:, :] = ring[:, :2] = ring[:, -2:] = True
    lab = ring.ravel()
    W = np.where(lab[:, None] == lab[None, :], 1.0, 1e-3)
    unflipped = ncut_bipartition(W, (h, w), flip_corners=0)
    assert corner_count(unflipped.mask) == 4 and iou(unflipped.mask, ring) > 0.99
    flipped = ncut_bipartition(W, (h, w), flip_corners=2)
    assert corner_count(flipped.mask) == 0 and iou(flipped.mask, ~ring) > 0.99


def test_iterative_ncut_removes_tokens_and_finds_several_objects() -> None:
    h, w = 10, 12
    a, b = square_mask(h, w, 1, 1, 3), square_mask(h, w, 6, 7, 3)
    lab = (a * 1 + b * 2).ravel()
    W = np.where(lab[:, None] == lab[None, :], 1.0, 1e-4)
    cuts = iterative_ncut(W, (h, w), max_masks=3)
    assert len(cuts) >= 2
    found = [max(iou(c.mask, t) for c in cuts) for t in (a, b)]
    assert min(found) > 0.95
    for i in range(len(cuts)):  # removed tokens never reappear
        for j in range(i):
            assert not (cuts[i].mask & cuts[j].mask).any()


# --------------------------------------------------------------------------- motion


def test_motion_affinity_separates_a_moving_square() -> None:
    from s2d.features.flow import flow_pair

    H, W = 96, 128
    bg = textured(H, W, 0)
    obj = textured(24, 24, 1)
    f0, f1 = bg.copy(), bg.copy()
    f0[30:54, 40:64] = obj
    f1[30:54, 44:68] = obj  # the square moves 4 px right; the background is static
    pair = flow_pair(f0, f1)
    mot = motion_from_flow(pair.fwd, pair.fwd_valid)
    grid = (12, 16)
    vec = pool_to_grid(mot.residual, grid).reshape(-1, 2)
    cuts = iterative_ncut(motion_affinity(vec, sigma=1.0), grid, max_masks=1)
    truth = resize_mask(square_mask(H, W, 30, 40, 24), grid)
    assert iou(cuts[0].mask, truth) > 0.6
    # the whole per-frame pipeline, motion only, puts the square on top
    seg = FrameSegmenter(MaskConfig(use_features=False, max_tokens=192), backbone=None)
    fm = seg.segment(f0, [mot])
    assert len(fm) >= 1 and fm.masks.shape[1:] == (H, W)
    assert iou(fm.masks[0], square_mask(H, W, 30, 40, 24)) > 0.7
    assert np.all(np.diff(fm.scores) <= 0) and 0 <= fm.scores.min() and fm.scores.max() <= 1


def test_fusion_modes() -> None:
    app = np.array([[1.0, 1e-5], [1e-5, 1.0]])
    mot = np.array([[1.0, 0.5], [0.5, 1.0]])
    assert np.allclose(fuse_affinities(app, None), app)
    assert np.allclose(fuse_affinities(None, mot), mot)
    s = fuse_affinities(app, mot, fusion="sum", motion_weight=0.5)
    assert s[0, 1] == pytest.approx(0.5 * 1e-5 + 0.25)
    p = fuse_affinities(app, mot, fusion="product", motion_weight=1.0)
    assert p[0, 1] == pytest.approx(max(0.5e-5, 1e-5))
    assert np.allclose(fuse_affinities(app, mot, fusion="product", motion_weight=0.0), mot)


# --------------------------------------------------------------------------- depth


def test_depth_cue_separates_regions_with_identical_appearance() -> None:
    h, w = 12, 16
    near = square_mask(h, w, 3, 4, 6)
    depth = np.where(near, 1.0, 4.0)
    flat = np.ones((h * w, 4)) / 2.0  # identical features everywhere
    W_app = feature_affinity(flat, tau=0.2)
    assert np.allclose(W_app, 1.0)  # appearance alone cannot tell the regions apart
    W = fuse_affinities(W_app, None, depth=depth_affinity(depth, sigma=0.25))
    cuts = iterative_ncut(W, (h, w), max_masks=1)
    assert iou(cuts[0].mask, near) > 0.9


def test_backproject_scales_with_depth() -> None:
    p1 = backproject(np.ones((4, 6)))
    p2 = backproject(2 * np.ones((4, 6)))
    assert np.allclose(p2, 2 * p1)
    assert np.allclose(p1[:, 2], 1.0)


def test_depth_folder(tmp_path) -> None:
    import cv2

    d = tmp_path / "depth"
    d.mkdir()
    np.save(d / "00000.npy", np.full((4, 5), 2.0, np.float32))
    cv2.imwrite(str(d / "00001.png"), np.full((4, 5), 1000, np.uint16))
    folder = DepthFolder(d)
    assert folder.get("00000", 0).mean() == 2.0
    assert folder.get("00001", 1).mean() == 1000.0
    assert folder.get("other", 1).mean() == 1000.0  # falls back to the position
    with pytest.raises(InputError):
        folder.get("x", 7)
    with pytest.raises(InputError):
        DepthFolder(tmp_path / "missing")


# --------------------------------------------------------------------------- refinement and scores


def test_crf_snaps_a_coarse_mask_to_a_sharp_edge() -> None:
    H, W = 80, 112
    truth = np.zeros((H, W), bool)
    truth[20:60, 30:78] = True
    rgb = np.where(truth[..., None], 200, 40).astype(np.uint8)
    rgb = np.ascontiguousarray(np.broadcast_to(rgb, (H, W, 3)))
    coarse = np.zeros((H, W), bool)
    coarse[14:62, 24:72] = True  # too large on three sides, too small on one
    refined = crf_refine(rgb, coarse)
    assert iou(refined, truth) > iou(coarse, truth) + 0.1
    assert iou(refined, truth) > 0.95
    assert np.array_equal(crf_refine(rgb, coarse, iters=0), coarse)
    assert not crf_refine(rgb, np.zeros((H, W), bool)).any()


def test_scores() -> None:
    sal = np.zeros((40, 40), np.float32)
    sal[10:20, 10:20] = 5.0
    obj = square_mask(40, 40, 10, 10, 10)
    assert motion_contrast(obj, sal) > 0.8
    assert motion_contrast(square_mask(40, 40, 25, 25, 10), sal) == 0.0
    assert edge_agreement(obj, obj) == 1.0
    assert size_prior(0.1) == 1.0 and size_prior(0.8) == 0.0
    s = combine_score(area_frac=0.05, contrast=0.9, eigenvalue=None, agreement=1.0)
    assert s == pytest.approx(0.9)
    assert combine_score(area_frac=0.05, contrast=None, eigenvalue=0.2, agreement=None) == pytest.approx(0.8)


# --------------------------------------------------------------------------- config


def test_config_overrides_and_validation() -> None:
    cfg = MaskConfig().with_overrides(["max_masks=5", "refine=none", "motion-sigma=2", "bidirectional=false"])
    assert (cfg.max_masks, cfg.refine, cfg.motion_sigma, cfg.bidirectional) == (5, "none", 2.0, False)
    assert MaskConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(SettingError, match="unknown mask setting"):
        MaskConfig().with_overrides(["nope=1"])
    with pytest.raises(SettingError):
        MaskConfig().with_overrides(["max_masks=two"])
    with pytest.raises(SettingError):
        MaskConfig(max_masks=0)
    with pytest.raises(SettingError):
        MaskConfig(refine="guided")
    with pytest.raises(SettingError):
        MaskConfig(use_features=False, motion=False)


def test_appearance_only_segmenter_with_random_backbone() -> None:
    from s2d.features import build_backbone

    seg = FrameSegmenter(MaskConfig(motion=False, max_tokens=128), backbone=build_backbone("random"))
    rgb = textured(64, 96, 3)
    fm = seg.segment(rgb, index=7, out_size=(32, 48))
    assert fm.index == 7 and fm.masks.shape[1:] == (32, 48) and fm.masks.dtype == bool
    assert len(fm.scores) == len(fm) == len(fm.sources)
    fr = fm.to_frame_result()
    assert list(fr.ids) == list(range(1, len(fm) + 1))
