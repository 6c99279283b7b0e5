"""YouTube-VIS scorer on tiny hand-made videos whose AP/AR can be worked out by hand.

All videos are 4×5 pixels. Rows of the frame are the unit of area: ``row(r)`` is 5 pixels.
The official scorer (``youtubevos/cocoapi``) is compared on random inputs in
``benchmarks/compare_official_ytvis.py``; these tests pin the rules one at a time.

AP over one threshold with a single GT is the mean of the interpolated precision at the 101
recall points 0, .01, ..., 1. When the only GT is found at rank k (1-based) after k-1 false
positives, precision is 1/k at every recall point, so AP at that threshold is 1/k.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from s2d.errors import InputError
from s2d.eval.ytvis import (
    STAT_KEYS,
    _video_iou,
    evaluate_ytvis,
    format_ytvis_table,
    load_ytvis_gt,
    load_ytvis_results,
)
from s2d.rle import area as rle_area
from s2d.rle import decode, encode

H, W = 4, 5


def mask(*cells) -> np.ndarray:
    """4×5 mask; each cell is a row index or a (row, col) pair."""
    m = np.zeros((H, W), dtype=bool)
    for c in cells:
        if isinstance(c, tuple):
            m[c] = True
        else:
            m[c, :] = True
    return m


def segs(*frames):
    """Per-frame RLEs; a frame is None (absent) or a tuple of cells for ``mask``."""
    return [None if f is None else encode(mask(*f)) for f in frames]


def make_gt(anns, n_videos=1, cats=(1,), n_frames=2):
    videos = [{"id": v, "height": H, "width": W, "length": n_frames} for v in range(1, n_videos + 1)]
    out = []
    for i, a in enumerate(anns):
        s = a["segs"]
        out.append({
            "id": a.get("id", i + 1), "video_id": a.get("video", 1), "category_id": a.get("cat", 1),
            "segmentations": s, "iscrowd": a.get("crowd", 0),
            "areas": a["areas"] if "areas" in a else [None if x is None else rle_area(x) for x in s],
        })
    return {"videos": videos, "annotations": out, "categories": [{"id": c, "name": f"c{c}"} for c in cats]}


def pred(s, score, video=1, cat=1):
    return {"video_id": video, "category_id": cat, "segmentations": s, "score": score}


ROW0_ROW1 = ((0,), (1,))                 # GT: row 0 in frame 0, row 1 in frame 1 (10 px)
GT1 = [{"segs": segs(*ROW0_ROW1)}]
PERFECT = segs(*ROW0_ROW1)
# frame 0: I=5, U=5; frame 1: one pixel of row 1 → I=1, U=5; video IoU = 6/10 = 0.6 exactly
IOU_06 = segs((0,), ((1, 0),))
NOWHERE = segs((3,), (3,))               # IoU 0 with GT1


def ap_at(value_per_threshold):
    """AP/AR as the official mean over the 10 IoU thresholds."""
    return float(np.mean(value_per_threshold))


# --------------------------------------------------------------------------------- table of cases
# (name, gt, results, kwargs, expected subset of the metrics)
CASES = [
    ("perfect", make_gt(GT1), [pred(PERFECT, 0.9)], {},
     {"AP": 1.0, "AP50": 1.0, "AP75": 1.0, "APs": 1.0, "APm": -1, "APl": -1,
      "AR1": 1.0, "AR10": 1.0, "AR100": 1.0, "ARs": 1.0, "ARm": -1, "ARl": -1}),
    # IoU exactly 0.6 matches at thresholds .50 .55 .60 (3 of 10): AP = AR = 3/10
    ("iou_0.6", make_gt(GT1), [pred(IOU_06, 0.9)], {},
     {"AP": 0.3, "AP50": 1.0, "AP75": 0.0, "AR100": 0.3}),
    # a missing predicted frame still counts the GT pixels in the union: I=5, U=10 → IoU 0.5
    ("null_pred_frame", make_gt(GT1), [pred(segs((0,), None), 0.9)], {},
     {"AP": 0.1, "AP50": 1.0, "AP75": 0.0}),
    # a frame missing in both adds nothing: I=5, U=5 → IoU 1
    ("null_both_frames", make_gt([{"segs": segs((0,), None)}]), [pred(segs((0,), None), 0.9)], {},
     {"AP": 1.0}),
    # the official zip() stops at the shorter sequence: frame 1 of the GT is never compared
    ("shorter_prediction", make_gt(GT1), [pred(segs((0,)), 0.9)], {}, {"AP": 1.0}),
    # FP ranked above the TP: precision 1/2 at every recall point → AP = .5; AR1 sees only the FP
    ("fp_above_tp", make_gt(GT1), [pred(NOWHERE, 0.9), pred(PERFECT, 0.8)], {},
     {"AP": 0.5, "AP50": 0.5, "AR1": 0.0, "AR10": 1.0}),
    # two predictions on one GT, perfect one first: the second is an FP after full recall → AP 1
    ("order_perfect_first", make_gt(GT1), [pred(PERFECT, 0.9), pred(IOU_06, 0.8)], {},
     {"AP": 1.0, "AR1": 1.0}),
    # IoU-0.6 one first: at .50–.60 it is the TP (AP 1); at the 7 higher thresholds it is an FP
    # ahead of the perfect TP (AP 1/2): AP = (3·1 + 7·0.5)/10 = 0.65; AR1 = 3/10
    ("order_iou06_first", make_gt(GT1), [pred(IOU_06, 0.9), pred(PERFECT, 0.8)], {},
     {"AP": 0.65, "AP50": 1.0, "AP75": 0.5, "AR1": 0.3, "AR10": 1.0}),
    # equal scores keep file order (stable mergesort), so both orders above reappear
    ("tie_file_order_a", make_gt(GT1), [pred(IOU_06, 0.5), pred(PERFECT, 0.5)], {}, {"AP": 0.65}),
    ("tie_file_order_b", make_gt(GT1), [pred(PERFECT, 0.5), pred(IOU_06, 0.5)], {}, {"AP": 1.0}),
    # two GT, ranks TP, FP, TP: recall (.5, .5, 1), precision (1, .5, 2/3) → envelope (1, 2/3, 2/3);
    # recall points 0.00–0.50 (51 of them) read 1, 0.51–1.00 (50) read 2/3: AP = (51 + 100/3)/101
    ("tp_fp_tp", make_gt([{"segs": segs((0,), (0,))}, {"segs": segs((2,), (2,))}]),
     [pred(segs((0,), (0,)), 0.9), pred(NOWHERE, 0.8), pred(segs((2,), (2,)), 0.7)], {},
     {"AP": (51 + 100 / 3) / 101, "AR100": 1.0, "AR1": 0.5}),
    # crowd GT is ignored: a prediction on it is neither TP nor FP, and it absorbs several
    ("crowd_ignored", make_gt([{"segs": segs((3,), (3,)), "crowd": 1}, {"segs": segs(*ROW0_ROW1)}]),
     [pred(NOWHERE, 0.95), pred(NOWHERE, 0.9), pred(PERFECT, 0.8)], {},
     {"AP": 1.0, "AR1": 0.0, "AR10": 1.0}),
    # the same without iscrowd: the two predictions on row 3 are a TP then an FP
    # ranks TP, FP, TP → same arithmetic as tp_fp_tp
    ("crowd_as_regular", make_gt([{"segs": segs((3,), (3,))}, {"segs": segs(*ROW0_ROW1)}]),
     [pred(NOWHERE, 0.95), pred(NOWHERE, 0.9), pred(PERFECT, 0.8)], {},
     {"AP": (51 + 100 / 3) / 101}),
    # no predictions: AP 0 and AR 0 where there is GT, -1 where there is none
    ("no_predictions", make_gt(GT1), [], {},
     {"AP": 0.0, "AP50": 0.0, "AR100": 0.0, "APs": 0.0, "APm": -1, "ARl": -1}),
    # no GT at all: every statistic is -1
    ("no_gt", make_gt([]), [pred(PERFECT, 0.9)], {}, {k: -1 for k in STAT_KEYS}),
    # an FP in a second video without GT outranks the TP of video 1 → AP 0.5
    ("pred_in_video_without_gt", make_gt(GT1, n_videos=2),
     [pred(PERFECT, 0.95, video=2), pred(PERFECT, 0.9, video=1)], {}, {"AP": 0.5}),
    # class-aware: the perfect mask has the wrong (but known) category → AP 0; agnostic → 1
    ("wrong_category_aware", make_gt(GT1, cats=(1, 2)), [pred(PERFECT, 0.9, cat=2)], {},
     {"AP": 0.0, "AR100": 0.0}),
    ("wrong_category_agnostic", make_gt(GT1, cats=(1, 2)), [pred(PERFECT, 0.9, cat=2)],
     {"class_agnostic": True}, {"AP": 1.0, "AR100": 1.0}),
    # a category missing from the GT list is dropped even when class-agnostic (official quirk)
    ("unknown_category_agnostic", make_gt(GT1), [pred(PERFECT, 0.9, cat=99)],
     {"class_agnostic": True}, {"AP": 0.0, "num_pred": 0, "num_pred_unknown_category": 1}),
    # area ranges use the GT 'areas' list (None and 0 left out of the mean), not the masks:
    # mean(20000, 30000) = 25000 → medium
    ("gt_areas_from_json", make_gt([{"segs": segs(*ROW0_ROW1), "areas": [None, 0, 20000, 30000]}]),
     [pred(PERFECT, 0.9)], {}, {"AP": 1.0, "APs": -1, "APm": 1.0, "ARm": 1.0, "APl": -1}),
    # an unmatched small prediction does not count against the medium range
    ("small_fp_ignored_in_medium", make_gt([{"segs": segs(*ROW0_ROW1), "areas": [20000, 20000]}]),
     [pred(NOWHERE, 0.95), pred(PERFECT, 0.9)], {}, {"AP": 0.5, "APm": 1.0}),
    # the official AP uses maxDets == 100 literally: without 100 it is -1, AP50 still works
    ("max_dets_without_100", make_gt(GT1), [pred(PERFECT, 0.9)], {"max_dets": (1, 10, 20)},
     {"AP": -1, "AP50": 1.0, "AR100": 1.0}),
    # official quirk: a GT whose annotation id is 0 is matched but never counts as a TP
    ("gt_id_zero", make_gt([{"segs": segs(*ROW0_ROW1), "id": 0}]), [pred(PERFECT, 0.9)], {},
     {"AP": 0.0, "AR100": 0.0}),
]


@pytest.mark.parametrize("name,gt,results,kwargs,expected", CASES, ids=[c[0] for c in CASES])
def test_hand_computed(name, gt, results, kwargs, expected):
    metrics = evaluate_ytvis(gt, results, **kwargs)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), f"{name}: {key}"


def test_all_stat_keys_present_and_in_range():
    metrics = evaluate_ytvis(make_gt(GT1), [pred(IOU_06, 0.9), pred(PERFECT, 0.3)])
    assert set(STAT_KEYS) <= set(metrics)
    assert all(metrics[k] == -1 or 0 <= metrics[k] <= 1 for k in STAT_KEYS)
    assert metrics["num_videos"] == 1 and metrics["num_gt"] == 1 and metrics["num_pred"] == 2


def test_crowd_not_counted_as_gt():
    gt = make_gt([{"segs": segs((3,), (3,)), "crowd": 1}, {"segs": segs(*ROW0_ROW1)}])
    assert evaluate_ytvis(gt, [])["num_gt"] == 1


def test_ignore_field_has_no_effect():
    # the official overwrites 'ignore' with iscrowd, so an 'ignore': 1 GT is still scored
    gt = make_gt(GT1)
    gt["annotations"][0]["ignore"] = 1
    assert evaluate_ytvis(gt, [pred(PERFECT, 0.9)])["AP"] == pytest.approx(1.0)


def test_inputs_not_modified():
    gt, res = make_gt(GT1), [pred(IOU_06, 0.9)]
    before = json.dumps([gt, res], sort_keys=True)
    evaluate_ytvis(gt, res)
    assert json.dumps([gt, res], sort_keys=True) == before


def test_uncompressed_and_polygon_gt_equal_compressed():
    m = mask(1, 2)
    flat = m.flatten(order="F").astype(int)
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    unc = {"size": [H, W], "counts": runs}
    poly = [[0.0, 1.0, 5.0, 1.0, 5.0, 3.0, 0.0, 3.0]]  # rows 1–2 as a polygon
    for seg in (unc, poly):
        gt = make_gt([{"segs": [seg], "areas": [10]}], n_frames=1)
        assert evaluate_ytvis(gt, [pred([encode(m)], 0.9)])["AP"] == pytest.approx(1.0)


def test_video_iou_matches_brute_force():
    rng = np.random.default_rng(0)
    from s2d.eval.ytvis import _Track, _frame_areas

    def track(n):
        s = [None if rng.random() < 0.2 else encode(rng.random((6, 7)) < 0.4) for _ in range(n)]
        return _Track(ann_id=1, category=1, segs=s, pixel_areas=_frame_areas(s), avg_area=0)

    dts = [track(int(rng.integers(1, 5))) for _ in range(6)]
    gts = [track(int(rng.integers(1, 5))) for _ in range(4)]
    got = _video_iou(dts, gts)
    for i, d in enumerate(dts):
        for j, g in enumerate(gts):
            inter = union = 0
            for a, b in zip(d.segs, g.segs):
                ma = decode(a) if a is not None else np.zeros((6, 7), bool)
                mb = decode(b) if b is not None else np.zeros((6, 7), bool)
                inter += int((ma & mb).sum())
                union += int((ma | mb).sum())
            assert got[i, j] == (inter / union if union else 0.0)


def test_results_for_unknown_video_rejected():
    with pytest.raises(InputError, match="not in the ground truth"):
        evaluate_ytvis(make_gt(GT1), [pred(PERFECT, 0.9, video=7)])


def test_bad_max_dets():
    with pytest.raises(ValueError):
        evaluate_ytvis(make_gt(GT1), [], max_dets=(1, 10))


# ------------------------------------------------------------------------------------- loaders

def write(tmp_path, name, obj_or_text):
    p = tmp_path / name
    p.write_text(obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text))
    return p


def test_load_roundtrip(tmp_path):
    gt = make_gt(GT1)
    res = [pred(PERFECT, 0.9)]
    g = load_ytvis_gt(write(tmp_path, "gt.json", gt))
    r = load_ytvis_results(write(tmp_path, "res.json", res), gt=g)
    assert evaluate_ytvis(g, r)["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize("content,problem", [
    ("{not json", "not valid JSON"),
    ([], "must be a JSON object"),
    ({"videos": [], "annotations": []}, "'categories'"),
    ({"videos": [{"id": 1}, {"id": 1}], "annotations": [], "categories": []}, "duplicate id"),
    ({"videos": [{"id": 1}], "annotations": [{"id": 1, "video_id": 1, "category_id": 1,
                                               "segmentations": [{"size": [2], "counts": "x"}]}],
      "categories": [{"id": 1}]}, "size"),
])
def test_load_gt_errors(tmp_path, content, problem):
    path = write(tmp_path, "gt.json", content)
    with pytest.raises(InputError) as err:
        load_ytvis_gt(path)
    msg = str(err.value)
    assert str(path) in msg and problem in msg and "\n" not in msg


def test_load_gt_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_ytvis_gt(tmp_path / "nope.json")


@pytest.mark.parametrize("content,problem", [
    ("[1, 2", "not valid JSON"),
    ({"a": 1}, "JSON list"),
    ([{"video_id": 1, "category_id": 1, "score": 0.5}], "'segmentations'"),
    ([{"video_id": 1, "category_id": 1, "segmentations": [], "score": "high"}], "'score'"),
    ([{"video_id": 1, "category_id": 1, "segmentations": [[1, 2, 3]], "score": 0.5}], "RLE"),
])
def test_load_results_errors(tmp_path, content, problem):
    path = write(tmp_path, "res.json", content)
    with pytest.raises(InputError) as err:
        load_ytvis_results(path)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_load_results_checked_against_gt(tmp_path):
    gt = make_gt(GT1)
    wrong_size = [pred([encode(np.zeros((5, 5), bool)), encode(np.zeros((5, 5), bool))], 0.9)]
    with pytest.raises(InputError, match="RLE size"):
        load_ytvis_results(write(tmp_path, "a.json", wrong_size), gt=gt)
    with pytest.raises(InputError, match="frames"):
        load_ytvis_results(write(tmp_path, "b.json", [pred(segs((0,)), 0.9)]), gt=gt)
    with pytest.raises(InputError, match="not in the ground truth"):
        load_ytvis_results(write(tmp_path, "c.json", [pred(PERFECT, 0.9, video=3)]), gt=gt)
    # without gt only the structure is checked
    assert len(load_ytvis_results(write(tmp_path, "d.json", wrong_size))) == 1


def test_format_table():
    metrics = evaluate_ytvis(make_gt(GT1), [pred(IOU_06, 0.9)])
    table = format_ytvis_table(metrics)
    lines = table.splitlines()
    assert any(line.startswith("AP ") and line.endswith("30.0") for line in lines)
    assert any(line.startswith("AP50 ") and line.endswith("100.0") for line in lines)
    assert any(line.startswith("APm ") and line.endswith("n/a") for line in lines)
    assert "videos: 1" in table and "predictions: 1" in table
    assert len({len(line) for line in lines if line.startswith("A")}) == 1  # fixed width
