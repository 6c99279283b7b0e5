"""DAVIS J/F scorer: hand-computed values, protocol behaviour, folder loading and errors.

Exact equality with the official DAVIS-2017 code is measured by
``benchmarks/compare_official_davis.py`` (it needs the official code in its own venv). These tests
pin the definitions with numbers worked out by hand, so a regression shows even without it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s2d.errors import InputError
from s2d.eval.davis import (
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    disk_kernel,
    evaluate_davis,
    evaluate_sequence,
    f_measure,
    format_davis_table,
    seg2bmap,
    tolerance_radius,
)

SHARED_DAVIS = (Path(__file__).parents[1] / ".." / "shared" / "data" / "davis2016").resolve()


def square(h: int, w: int, y: int, x: int, size: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y : y + size, x : x + size] = True
    return m


def save_palette(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(arr, np.uint8))
    im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    assert im.mode == "P"
    im.save(path)


def save_gray(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8)).save(path)


# ------------------------------------------------------------------------------------ J


def test_iou_shifted_square_is_exact_fraction():
    gt = square(30, 30, 5, 5, 10)
    pred = square(30, 30, 5, 7, 10)  # shifted 2 px right: 80 shared pixels, 120 in the union
    j = db_eval_iou(gt[None], pred[None])
    assert j.shape == (1,)
    assert j[0] == pytest.approx(80 / 120, abs=0)


def test_iou_excludes_void_and_empty_union_is_one():
    gt = square(20, 20, 0, 0, 10)
    pred = square(20, 20, 0, 5, 10)  # 50 shared, 150 union
    void = np.zeros((20, 20), bool)
    void[:, 10:] = True  # removes the 50 prediction-only pixels from the union
    assert db_eval_iou(gt, pred)[()] == pytest.approx(50 / 150)
    assert db_eval_iou(gt, pred, void)[()] == pytest.approx(50 / 100)
    empty = np.zeros((2, 8, 8), bool)
    assert db_eval_iou(empty, empty).tolist() == [1.0, 1.0]
    # a GT that lies entirely in void counts as empty too
    assert db_eval_iou(gt, np.zeros_like(gt), gt)[()] == 1.0


# ------------------------------------------------------------------------------------ F


def test_seg2bmap_by_hand():
    seg = np.zeros((4, 4), bool)
    seg[1:3, 1:3] = True
    expected = np.array(
        [[1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]],
        bool,
    )
    assert (seg2bmap(seg) == expected).all()
    # Quirk kept from the original rule: a mask that fills the frame has no boundary at all.
    assert not seg2bmap(np.ones((5, 6), bool)).any()


def test_tolerance_and_disk():
    assert tolerance_radius((480, 854)) == 8.0  # ceil(0.008 * 979.6)
    assert tolerance_radius((30, 30)) == 1.0
    assert tolerance_radius((30, 30), bound_th=3) == 3.0
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
    assert (disk_kernel(1) == cross).all()
    assert disk_kernel(8).shape == (17, 17)
    assert disk_kernel(1.5).shape == (4, 4)  # fractional radii keep the official even-sized grid


def test_boundary_identical_disjoint_shifted_and_empty():
    gt = square(30, 30, 5, 5, 10)
    assert db_eval_boundary(gt[None], gt[None]).tolist() == [1.0]
    far = square(30, 30, 18, 18, 10)  # radius 1 at 30×30: no boundary pixel within reach
    assert db_eval_boundary(gt, far)[()] == 0.0
    # every boundary pixel moves by one column, inside the radius-1 disk: a perfect match
    shifted1 = square(30, 30, 5, 6, 10)
    assert f_measure(shifted1, gt) == 1.0
    shifted3 = square(30, 30, 5, 8, 10)
    assert 0.0 < f_measure(shifted3, gt) < 1.0
    empty = np.zeros((30, 30), bool)
    assert f_measure(empty, empty) == 1.0
    assert f_measure(empty, gt) == 0.0  # precision 1, recall 0
    assert f_measure(gt, empty) == 0.0


def test_boundary_shift_by_hand():
    # 10×10 square (rows/cols 5..14) shifted 3 px right; radius 1 = the 4-neighbour cross.
    # GT boundary (40 px): row 4 x 4..14, col 4 y 5..14, row 14 x 5..14, col 14 y 5..13.
    # Precision: top 9/11, left 3/10, bottom 8/10, right 0/9 = 20/40.
    # Recall: top 9/11, left 0/10, bottom 9/10, right 2/9 = 20/40. So F = 0.5.
    gt = square(30, 30, 5, 5, 10)
    pred = square(30, 30, 5, 8, 10)
    assert np.count_nonzero(seg2bmap(gt)) == 40
    assert f_measure(pred, gt) == 0.5


# ------------------------------------------------------------------------------------ statistics


def test_statistics_by_hand():
    v = [1, 1, 0, 0, 1, 0.2, 0.6, 0.9]
    mean, recall, decay = db_statistics(v)
    assert mean == pytest.approx(4.7 / 8)
    assert recall == pytest.approx(5 / 8)
    # quarter edges round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7]: first v[0:3], last v[5:8]
    assert decay == pytest.approx(2 / 3 - 1.7 / 3)
    assert db_statistics([0.3]) == pytest.approx((0.3, 0.0, 0.0))
    m, r, d = db_statistics([np.nan, 1.0, 1.0, 1.0])
    assert m == 1.0 and r == 0.75


def test_statistics_long_sequence_wraps_like_official():
    # The official uint8 quarter edges wrap past 255: at 300 frames the last quarter is
    # v[224:44] (empty), and at 256 frames its end 255 + 1 wraps to 0 (NumPy ≥ 2 arithmetic).
    assert math.isnan(db_statistics(np.linspace(1, 0, 300))[2])
    assert math.isnan(db_statistics(np.linspace(1, 0, 256))[2])
    assert db_statistics(np.linspace(1, 0, 255))[2] > 0.7


# ------------------------------------------------------------------------------------ protocols


def _two_object_video(t: int = 5, h: int = 40, w: int = 50):
    gt = np.zeros((2, t, h, w), bool)
    pred = np.zeros((2, t, h, w), bool)
    for i in range(t):
        gt[0, i] = square(h, w, 2 + i, 2, 12)
        gt[1, i] = square(h, w, 20, 25 + i, 10)
        pred[0, i] = square(h, w, 3 + i, 2, 12)  # slightly off
        pred[1, i] = square(h, w, 20, 24 + i, 11)
    return gt, pred


def test_unsupervised_matching_undoes_a_permutation():
    gt, pred = _two_object_video()
    semi_like = evaluate_sequence(gt, pred, "unsupervised")
    swapped = evaluate_sequence(gt, pred[::-1], "unsupervised")
    assert semi_like["matching"] == {1: 1, 2: 2}
    assert swapped["matching"] == {1: 2, 2: 1}
    np.testing.assert_array_equal(semi_like["J"], swapped["J"])
    np.testing.assert_array_equal(semi_like["F"], swapped["F"])
    # unsupervised scores every frame; semi-supervised drops the first and last frame
    semi = evaluate_sequence(gt, pred, "semi-supervised")
    assert semi["frames"] == [1, 2, 3]
    np.testing.assert_array_equal(semi["J"], semi_like["J"][:, 1:-1])
    assert semi["objects"][0]["J-Mean"] == pytest.approx(float(np.mean(semi_like["J"][0, 1:-1])))


def test_unmatched_gt_scores_zero_and_extra_proposals_are_ignored():
    gt, pred = _two_object_video()
    res = evaluate_sequence(gt, pred[:1], "unsupervised")
    assert res["matching"] == {1: 1, 2: None}
    assert res["objects"][1]["J-Mean"] == 0.0 and res["objects"][1]["F-Mean"] == 0.0
    # extra distractor proposals do not change the best assignment
    distractor = np.zeros_like(pred[:1])
    distractor[0, :, 35:, 40:] = True
    res3 = evaluate_sequence(gt, np.concatenate([distractor, pred]), "unsupervised")
    assert res3["matching"] == {1: 2, 2: 3}


def test_union_protocol_merges_ids():
    gt, pred = _two_object_video()
    halves = np.zeros((2, *gt.shape[1:]), bool)
    union = gt.any(axis=0)
    halves[0, :, :, :8] = union[:, :, :8]  # the cut splits object 1: ids do not follow objects
    halves[1, :, :, 8:] = union[:, :, 8:]
    res = evaluate_sequence(gt, halves, "union")
    assert len(res["objects"]) == 1
    assert res["objects"][0]["J-Mean"] == 1.0 and res["objects"][0]["F-Mean"] == 1.0
    assert res["frames"] == [1, 2, 3]
    unsup = evaluate_sequence(gt, halves, "unsupervised")
    assert unsup["objects"][0]["J-Mean"] < 1.0


def test_semi_rejects_more_ids_than_objects():
    gt, pred = _two_object_video()
    with pytest.raises(InputError, match="semi-supervised"):
        evaluate_sequence(gt[:1], pred, "semi-supervised")
    with pytest.raises(ValueError):
        evaluate_sequence(gt, pred, "bogus")


# ------------------------------------------------------------------------------------ folders


def _write_video(root: Path, seq: str, labels: np.ndarray, palette: bool = True) -> None:
    for t, lab in enumerate(labels):
        (save_palette if palette else save_gray)(lab, root / seq / f"{t:05d}.png")


def test_binary_gt_is_one_object_and_segment_layout(tmp_path: Path):
    gt = np.zeros((4, 20, 30), np.uint8)
    for t in range(4):
        gt[t, 4:12, 5 + t : 15 + t] = 255
    _write_video(tmp_path / "gt" / "Annotations" / "480p", "clip", gt, palette=False)
    pred = (gt > 0).astype(np.uint8) * 7  # any id; one object
    _write_video(tmp_path / "pred" / "clip" / "davis", "", pred)  # s2d segment layout
    for protocol in ("unsupervised", "union"):
        rep = evaluate_davis(tmp_path / "gt", tmp_path / "pred", protocol=protocol, progress=False)
        assert rep["n_objects"] == 1
        assert rep["sequences"][0]["gt_format"] == "binary"
        assert rep["global"]["J&F-Mean"] == 1.0
        assert rep["gt_dir"].endswith("480p")
    rep = evaluate_davis(tmp_path / "gt", tmp_path / "pred", protocol="unsupervised", progress=False)
    assert rep["rows"][0]["matched_id"] == 7
    table = format_davis_table(rep)
    assert "J&F-Mean" in table and "clip" in table


def test_palette_gt_void_and_objects(tmp_path: Path):
    gt = np.zeros((3, 20, 20), np.uint8)
    gt[:, 2:8, 2:8] = 1
    gt[:, 12:18, 12:18] = 2
    gt[:, 10:12, :] = 255  # void band
    gt[2, 0, 19] = 3  # id absent from frame 0: not an object (official loader), warned about
    _write_video(tmp_path / "gt", "s", gt)
    pred = np.where(gt == 255, 0, gt).astype(np.uint8)
    pred[2, 0, 19] = 0
    pred[:, 10:12, 2:8] = 1  # prediction spills into the void band: ignored by J
    _write_video(tmp_path / "pred", "s", pred)
    rep = evaluate_davis(tmp_path / "gt", tmp_path / "pred", protocol="unsupervised", progress=False)
    assert rep["sequences"][0]["gt_format"] == "palette"
    assert rep["n_objects"] == 2
    assert [r["J-Mean"] for r in rep["rows"]] == [1.0, 1.0]
    assert any("do not occur on the first frame" in w for w in rep["warnings"])


def test_more_than_20_ids_keeps_largest_or_best_scored(tmp_path: Path):
    h, w = 40, 60
    gt = np.zeros((3, h, w), np.uint8)
    pred = np.zeros((3, h, w), np.uint8)
    for t in range(3):
        for k in range(22):  # ids 1..22 in small cells; ids 21 and 22 are the largest
            y, x = divmod(k, 11)
            size = 4 if k < 20 else 5
            pred[t, 2 + 16 * y : 2 + 16 * y + size, 2 + 5 * x : 2 + 5 * x + size] = k + 1
        gt[t][pred[t] == 1] = 1
    _write_video(tmp_path / "gt", "many", gt)
    _write_video(tmp_path / "pred", "many", pred)
    rep = evaluate_davis(tmp_path / "gt", tmp_path / "pred", protocol="unsupervised", progress=False)
    assert len(rep["warnings"]) == 1 and "kept the 20" in rep["warnings"][0]
    # the two smallest-area ids with the highest numbers (19, 20) lose to 21 and 22
    assert "dropped ids [19, 20]" in rep["warnings"][0]
    assert rep["rows"][0]["matched_id"] == 1
    scores = {"many": {k: (1.0 if k <= 20 else 0.0) for k in range(1, 23)}}
    rep2 = evaluate_davis(tmp_path / "gt", tmp_path / "pred", protocol="unsupervised", scores=scores, progress=False)
    assert "dropped ids [21, 22]" in rep2["warnings"][0] and "score" in rep2["warnings"][0]


def test_missing_prediction_frame_names_the_file(tmp_path: Path):
    gt = np.zeros((3, 10, 10), np.uint8)
    gt[:, 2:5, 2:5] = 1
    _write_video(tmp_path / "gt", "seq", gt)
    _write_video(tmp_path / "pred", "seq", gt[:2])
    with pytest.raises(InputError, match=r"00002\.png"):
        evaluate_davis(tmp_path / "gt", tmp_path / "pred", protocol="unsupervised", progress=False)
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match="missing prediction folder"):
        evaluate_davis(tmp_path / "gt", tmp_path / "other", protocol="unsupervised", progress=False)
    with pytest.raises(InputError, match="not found"):
        evaluate_davis(tmp_path / "gt", tmp_path / "nothing_here", protocol="unsupervised", progress=False)
    # semi-supervised does not score the last frame, so it does not need it
    rep = evaluate_davis(tmp_path / "gt", tmp_path / "pred", protocol="semi-supervised", progress=False)
    assert rep["global"]["J-Mean"] == 1.0


def test_semi_id_above_object_count_is_an_input_error(tmp_path: Path):
    gt = np.zeros((3, 10, 10), np.uint8)
    gt[:, 2:5, 2:5] = 1
    _write_video(tmp_path / "gt", "seq", gt)
    _write_video(tmp_path / "pred", "seq", gt * 2)
    with pytest.raises(InputError, match="union"):
        evaluate_davis(tmp_path / "gt", tmp_path / "pred", protocol="semi", progress=False)


# ------------------------------------------------------------------------------------ real data


@pytest.mark.skipif(not SHARED_DAVIS.is_dir(), reason=f"shared DAVIS-2016 data not found at {SHARED_DAVIS}")
def test_shared_davis_gt_against_itself_and_empty(tmp_path: Path):
    ann = SHARED_DAVIS / "Annotations" / "480p"
    seqs = ["dog-agility", "rollerblade"]
    for seq in seqs:
        files = sorted((ann / seq).glob("*.png"))[:12]
        for f in files:
            lab = (np.array(Image.open(f)) > 0).astype(np.uint8)
            save_palette(lab, tmp_path / "same" / seq / f.name)
            save_palette(np.zeros_like(lab), tmp_path / "empty" / seq / f.name)
            save_gray(np.array(Image.open(f)), tmp_path / "gt" / seq / f.name)  # a 12-frame copy of the GT
    for protocol in ("unsupervised", "union", "semi-supervised"):
        rep = evaluate_davis(tmp_path / "gt", tmp_path / "same", protocol=protocol, progress=False)
        assert rep["global"]["J-Mean"] == 1.0 and rep["global"]["F-Mean"] == 1.0, protocol
        rep0 = evaluate_davis(tmp_path / "gt", tmp_path / "empty", protocol=protocol, progress=False)
        assert rep0["global"]["J-Mean"] == 0.0 and rep0["global"]["F-Mean"] == 0.0, protocol
    # the DAVIS root itself is accepted (Annotations/480p found); frames beyond 12 are missing
    with pytest.raises(InputError, match="00012.png"):
        evaluate_davis(SHARED_DAVIS, tmp_path / "same", protocol="unsupervised", sequences=seqs, progress=False)
