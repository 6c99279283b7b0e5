"""Keymask discovery building blocks: config, grid, visibility grouping, point-mask matching."""

from __future__ import annotations

import numpy as np
import pytest

from s2d.errors import SettingError
from s2d.keymasks import KeymaskConfig
from s2d.keymasks.grid import grid_points, model_grid
from s2d.keymasks.matching import (
    MaskIndex,
    choose_per_frame,
    crop_to_nonzero,
    group_matches,
    one2x_count,
    point_mask_fractions,
    point_pixels,
)
from s2d.keymasks.visibility import (
    binarize,
    group_by_visibility,
    highly_visible_rows,
    majority_visible,
    visible_ranges,
)

# --------------------------------------------------------------------------- config


def test_defaults_are_the_reference_values():
    c = KeymaskConfig()
    assert (c.visibility_grid, c.match_grid_min, c.match_grid_max, c.match_grid_area_step) == (50, 25, 50, 800)
    assert (c.grid_model_height, c.grid_model_width, c.margin) == (384, 512, 8.0)
    assert (c.visibility_threshold, c.visibility_eps, c.visibility_min_samples) == (0.3, 0.2, 5)
    assert (c.candidate_visible_fraction, c.matching_threshold) == (0.3, 0.5)
    assert (c.one2x_threshold, c.one2x_min_frames, c.merge_vranges) == (0.25, 5, True)
    assert (c.one2x_filter, c.seed) == (None, 777)


@pytest.mark.parametrize("area,frame_pixels,ref,expected", [
    (0, 409920, None, 25),
    (20799, 409920, None, 25),      # floor(20799/800) = 25
    (20800, 409920, None, 26),
    (39999, 409920, None, 49),
    (40000, 409920, None, 50),
    (10 ** 6, 409920, None, 50),
    (30000, 480 * 854, 480 * 854, 37),   # DAVIS 480p: the reference exactly
    (7500, 240 * 427, 480 * 854, 37),    # same fraction of a 240p frame -> same G (× 4.0)
    (7500, 240 * 427, None, 25),         # raw pixels at 240p: small
])
def test_match_grid_area_rule(area, frame_pixels, ref, expected):
    assert KeymaskConfig(area_reference_pixels=ref).match_grid_size(area, frame_pixels) == expected


@pytest.mark.parametrize("cols,expected", [(51, (0.05, 5)), (50, (0.1, 5)), (10, (0.1, 5)), (9, (0.1, 3)),
                                           (1, (0.1, 3))])
def test_match_dbscan_adaptive_params(cols, expected):
    assert KeymaskConfig().match_dbscan_params(cols) == expected


@pytest.mark.parametrize("kwargs", [
    dict(visibility_grid=0), dict(visibility_grid=2.5), dict(match_grid_min=60),
    dict(visibility_threshold=1.5), dict(visibility_eps=0), dict(matching_threshold=-0.1),
    dict(visibility_min_samples=0), dict(merge_vranges="yes"), dict(one2x_filter=2.0),
    dict(grid_margin=300.0), dict(area_reference_pixels=0), dict(match_grid_area_step=0),
    dict(match_small_cols=60), dict(seed=1.5),
])
def test_bad_settings_raise_one_line_setting_error(kwargs):
    with pytest.raises(SettingError) as e:
        KeymaskConfig(**kwargs)
    assert "\n" not in str(e.value) and next(iter(kwargs)) in str(e.value)


def test_overrides_and_dict_round_trip():
    c = KeymaskConfig().with_overrides(["matching_threshold=0.6", "merge-vranges=false", "one2x_filter=0.5",
                                        "area_reference_pixels=null"])
    assert (c.matching_threshold, c.merge_vranges, c.one2x_filter, c.area_reference_pixels) == (0.6, False, 0.5, None)
    assert KeymaskConfig.from_dict(c.to_dict()) == c
    with pytest.raises(SettingError, match="unknown keymask setting"):
        KeymaskConfig().with_overrides(["nope=1"])
    with pytest.raises(SettingError, match="unknown keymask setting"):
        KeymaskConfig.from_dict({"eps": 0.1})
    with pytest.raises(SettingError, match="must be an integer"):
        KeymaskConfig().with_overrides(["visibility_grid=2.5"])


# --------------------------------------------------------------------------- grid


def _cotracker_grid(mask: np.ndarray, grid: int, interp=(384, 512)) -> np.ndarray:
    """CoTracker3's ``_compute_sparse_tracks`` point selection, written with torch as in co-tracker."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    h, w = mask.shape
    margin = interp[1] / 64
    gy, gx = torch.meshgrid(torch.linspace(margin, interp[0] - margin, grid),
                            torch.linspace(margin, interp[1] - margin, grid), indexing="ij")
    pts = torch.stack([gx, gy], dim=-1).reshape(1, -1, 2)
    seg = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], interp, mode="nearest")
    keep = seg[0, 0][pts[0, :, 1].round().long(), pts[0, :, 0].round().long()].bool()
    sel = pts[:, keep][0] * torch.tensor([(w - 1) / (interp[1] - 1), (h - 1) / (interp[0] - 1)])
    return sel.numpy()


@pytest.mark.parametrize("size", [(480, 854), (96, 128), (37, 53)])
@pytest.mark.parametrize("grid", [25, 50])
def test_grid_points_equal_cotracker_selection(size, grid):
    rng = np.random.default_rng(grid + size[0])
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros(size, bool)
    for _ in range(4):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(3, max(4, h // 4))
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    ours = grid_points(mask, grid)
    ref = _cotracker_grid(mask, grid)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_grid_full_and_empty_masks():
    full = np.ones((60, 80), bool)
    pts = grid_points(full, 10)
    assert pts.shape == (100, 2)
    # margin W/64 at 512 wide = 8 px of 511 -> first point at 8/511 of the frame width
    np.testing.assert_allclose(pts[0], [8 * 79 / 511, 8 * 59 / 383], atol=1e-4)
    assert (pts[:, 0] <= 79).all() and (pts[:, 1] <= 59).all()
    assert grid_points(np.zeros((60, 80), bool), 50).shape == (0, 2)
    assert model_grid(1).shape == (1, 2)


# --------------------------------------------------------------------------- visibility


@pytest.mark.parametrize("flags,expected", [
    ([], []),
    ([0, 0, 0], []),
    ([1, 1, 1], [(0, 2)]),
    ([0, 1, 1, 0, 1], [(1, 2), (4, 4)]),
    ([1, 0, 0, 1, 1, 1, 0], [(0, 0), (3, 5)]),
])
def test_visible_ranges(flags, expected):
    assert visible_ranges(flags) == expected


def test_majority_is_strict_and_candidates_need_more_than_30_percent():
    vis = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0], [0, 1, 1, 0]], bool)
    assert majority_visible(vis).tolist() == [True, True, True, False]
    assert majority_visible(vis[:2]).tolist() == [True, False, False, False]  # 1 of 2 is a tie -> not visible
    rows = highly_visible_rows(np.array([[1, 0, 0, 0, 0, 0, 0, 0, 0, 0],   # 0.1
                                         [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],   # 0.3 (not > 0.3)
                                         [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]], bool), [(0, 9)], 0.3)
    assert rows[(0, 9)].tolist() == [2]


def test_binarize_is_strict_and_nan_is_invisible():
    assert binarize(np.array([0.3, 0.31, np.nan, 1.0]), 0.3).tolist() == [False, True, False, True]


def _rows(pattern: str, n: int) -> np.ndarray:
    return np.array([[c == "1" for c in pattern]] * n, bool)


@pytest.mark.parametrize("case", [
    # two clusters of 5 identical rows each, visible early / late; one noise row
    dict(blocks=[("1111110000", 5, [0, 1, 2, 3, 4]), ("0000011111", 5, [5, 6, 7, 8, 9]),
                 ("1010101010", 1, [3])],
         labels=[0] * 5 + [1] * 5 + [-1], ranges={0: [(0, 5)], 1: [(5, 9)]},
         candidates={0: {0, 1, 2, 3, 4}, 1: {5, 6, 7, 8, 9}}),
    # a member whose own frame is outside the cluster's range is no candidate;
    # rows within eps 0.2 (2 of 10 frames) join the cluster
    dict(blocks=[("1111100000", 4, [0, 1, 2, 3]), ("1111110000", 1, [8]), ("1110000000", 1, [2])],
         labels=[0] * 6, ranges={0: [(0, 4)]}, candidates={0: {0, 1, 2, 3, 5}}),
    # a gap in the majority splits the ranges; candidates per range
    dict(blocks=[("1100011", 5, [0, 1, 5, 6, 2])],
         labels=[0] * 5, ranges={0: [(0, 1), (5, 6)]}, candidates={0: {0, 1, 2, 3}}),
    # fewer than min_samples masks: all noise
    dict(blocks=[("1111", 4, [0, 1, 2, 3])], labels=[-1] * 4, ranges={}, candidates={}),
])
def test_group_by_visibility_table(case):
    vis = np.concatenate([_rows(p, n) for p, n, _ in case["blocks"]])
    frames = np.concatenate([f for _, _, f in case["blocks"]])
    labels, clusters = group_by_visibility(vis, frames, 0.2, 5, 0.3)
    assert labels.tolist() == case["labels"]
    assert {c.label: c.ranges for c in clusters} == case["ranges"]
    assert {c.label: set(c.candidates) for c in clusters} == case["candidates"]


# --------------------------------------------------------------------------- matching


def _reference_fraction(points_xy: np.ndarray, mask: np.ndarray) -> float:
    """``pred_tracks_to_binary_masks(return_mask=False)`` + ``compute_point_mask_intersection``."""
    h, w = mask.shape
    pm = np.zeros((h, w), bool)
    c = np.rint(points_xy).astype(np.int64)
    ok = (c[:, 0] >= 0) & (c[:, 0] < w) & (c[:, 1] >= 0) & (c[:, 1] < h)
    pm[c[ok, 1], c[ok, 0]] = True
    inter = (pm & (mask & pm)).sum()
    union = (pm | (mask & pm)).sum()
    return 0.0 if union == 0 else inter / union


def test_point_mask_fractions_equal_reference_on_random_data():
    rng = np.random.default_rng(0)
    h, w, t_count = 20, 30, 6
    index = MaskIndex(h, w, t_count)
    masks = []
    for t in range(t_count):
        for _ in range([2, 0, 3, 1, 2, 2][t]):  # frame 1 has no mask; masks overlap
            m = rng.random((h, w)) < rng.uniform(0.1, 0.7)
            m[0, 0] = bool(rng.integers(0, 2))  # exercise a run starting at pixel 0
            masks.append((t, m))
            index.add(t, m)
    index.finalize()
    pts = rng.uniform(-3, 33, size=(t_count, 40, 2))
    pts[:, :10] = np.round(pts[:, :10])  # duplicates on one pixel count once
    pts[2, 5] = np.nan
    lin = point_pixels(pts, h, w)
    g0, j = point_mask_fractions(lin[1:5], 1, index)
    expected = [_reference_fraction(np.nan_to_num(pts[t], nan=-10), m) for t, m in masks if 1 <= t <= 4]
    assert g0 == 2 and j.size == len(expected)
    np.testing.assert_allclose(j, expected)


def test_point_mask_fractions_without_points_or_masks():
    index = MaskIndex(4, 4, 3)
    index.add(2, np.ones((4, 4), bool))
    index.finalize()
    g0, j = point_mask_fractions(np.full((3, 5), -1), 0, index)  # all points out of bounds
    assert (g0, j.tolist()) == (0, [0.0])
    g0, j = point_mask_fractions(np.zeros((2, 5), np.int64), 0, index)  # frames 0..1 have no masks
    assert j.size == 0


@pytest.mark.parametrize("j,frames,expected", [
    ([0.9, 0.3, 0.1], [0, 0, 0], 1),
    ([0.9, 0.25, 0.9], [0, 0, 1], 0),       # 0.25 is not > 0.25
    ([0.6, 0.6, 0.6, 0.6], [0, 0, 1, 1], 2),
    ([], [], 0),
])
def test_one2x_count(j, frames, expected):
    assert one2x_count(np.array(j, float), np.array(frames, int), 0.25) == expected


def test_crop_to_nonzero():
    m = np.zeros((5, 6), bool)
    m[1, 2] = m[3, 4] = True
    crop, off = crop_to_nonzero(m)
    assert crop.shape == (3, 3) and off == (1, 2)
    assert crop_to_nonzero(np.zeros((3, 3), bool))[0].shape == (0, 0)


def test_group_matches_two_identities_and_noise():
    cfg = KeymaskConfig()
    a = np.arange(0, 20, 2)   # object A: even mask indices
    b = np.arange(1, 20, 2)   # object B: odd
    matches = {int(m): a for m in a}
    matches.update({int(m): b for m in b})
    matches[1] = np.array([1, 7])  # a B row that matched only two masks: far from the B pattern
    matches[21] = np.zeros(0, np.int64)  # a ref with no match at all
    labels = group_matches(matches, cfg.match_dbscan_params)
    assert {labels[int(m)] for m in a} == {0}
    assert {labels[int(m)] for m in b if m != 1} == {1}
    assert labels[1] == -1 and labels[21] == -1


def test_group_matches_uses_adaptive_params():
    seen = []

    def params(cols):
        seen.append(cols)
        return 0.1, 3

    group_matches({5: np.array([5, 6]), 6: np.array([5, 6]), 7: np.array([5, 6, 9])}, params)
    assert seen == [5]  # columns 5..9 after cropping


def test_group_matches_zero_rows_take_part_as_in_the_reference():
    # refs 0..4 form an object; refs 20 and 21 matched only themselves; masks 5..19 are no refs of
    # this cluster, so their rows inside the cropped box are all zero (21 or 22 columns: eps 0.1, min 5)
    matches = {m: np.arange(5) for m in range(5)}
    matches[20] = np.array([20])
    matches[21] = np.array([21])
    ref = group_matches(matches, KeymaskConfig().match_dbscan_params)
    assert {ref[m] for m in range(5)} == {0}
    # the all-zero rows are a dense core that makes the two lone rows one (spurious) group
    assert ref[20] == ref[21] == 1
    only_refs = group_matches(matches, KeymaskConfig().match_dbscan_params, all_rows=False)
    assert {only_refs[m] for m in range(5)} == {0} and only_refs[20] == only_refs[21] == -1


@pytest.mark.parametrize("members,frames,support,scores,kept,dropped", [
    ([3, 4, 9], [0, 0, 2], [5, 7, 5], [0.9, 0.1, 0.5], [4, 9], [3]),   # support first
    ([3, 4, 9], [0, 0, 2], [5, 5, 5], [0.2, 0.8, 0.5], [4, 9], [3]),   # then score
    ([3, 4, 9], [0, 0, 2], [5, 5, 5], [0.5, 0.5, 0.5], [3, 9], [4]),   # then lowest index
    ([8, 2], [4, 1], [1, 1], [0.1, 0.1], [2, 8], []),                  # kept in frame order
])
def test_choose_per_frame_is_deterministic(members, frames, support, scores, kept, dropped):
    assert choose_per_frame(members, frames, support, scores) == (kept, dropped)
