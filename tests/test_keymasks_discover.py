"""Keymask discovery end to end on a synthetic two-object video with deliberately noisy masks.

The point tracker is :class:`keymask_scene.ExactTracker`, a test double that knows the objects'
paths and occlusions (see ``tests/keymask_scene.py``).
"""

from __future__ import annotations

import dataclasses
from typing import List

import numpy as np
import pytest

from keymask_scene import OBJ_A, OBJ_B, T, ExactTracker, noisy_masks
from s2d import rle as rle_utils
from s2d.errors import SettingError, ValidationError
from s2d.io.formats import from_ytvis, to_ytvis_results
from s2d.keymasks import KeymaskConfig, discover_keymasks
from s2d.tracking.base import TrackResult
from s2d.types import VideoSegmentation


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _kinds(result, nm, obj) -> List[str]:
    return [nm.truth[result.masks[i].track_id] for i in obj.mask_indices]


@pytest.fixture(scope="module")
def scene():
    nm = noisy_masks()
    tracker = ExactTracker()
    return nm, tracker, discover_keymasks(nm.video, tracker)


def test_two_objects_with_correct_keymasks(scene):
    nm, _, res = scene
    assert len(res.objects) == 2
    a, b = res.objects  # both start on frame 0; same visibility cluster; A's group comes first
    assert (a.id, b.id) == (1, 2)
    assert set(_kinds(res, nm, a)) == {"A"} and set(_kinds(res, nm, b)) == {"B"}
    # every correct mask is a keymask of its object; every keymask is the object's true mask
    a_frames = [t for t in range(T) if t not in (5, 25, 7, 22)]
    b_frames = [t for t in range(T) if t not in (5, 25, 28) and t not in OBJ_B.hidden]
    assert a.frames == a_frames and b.frames == b_frames
    for obj, truth in ((a, OBJ_A), (b, OBJ_B)):
        for t, m in zip(obj.frames, obj.masks):
            assert _iou(rle_utils.decode(m), truth.mask(t)) > 0.8
    assert a.num_keymasks == len(a_frames) and a.one2x_mean == 0.0 and a.duplicates == []
    assert b.visibility_ranges == [(0, T - 1)] and b.match_range == (0, T - 1)


def test_corrupted_masks_are_rejected(scene):
    nm, _, res = scene
    keys = set(res.keymask_indices)
    corrupted = [mi for mi in res.masks if nm.truth[mi.track_id] in ("merged", "random")]
    assert len(corrupted) == 4
    for mi in corrupted:
        assert mi.index not in keys and mi.object_id == 0 and mi.group == -1
    d = res.diagnostics
    assert d["num_masks"] == len(nm.video.tracks) == 64
    assert d["objects"] == 2 and d["keymasks"] == 60 and d["grouped"] == 60
    assert d["coverage"] == pytest.approx(60 / d["candidates"])
    assert d["visibility_to_temporal_factor"] == {0: 2}
    assert d["keymask_frames_covered"] == pytest.approx(34 / 36)  # frames 5 and 25 only had merged masks


def test_tracker_is_called_once_per_frame_and_step(scene):
    nm, tracker, res = scene
    frames_with_masks = len({mi.frame for mi in res.masks})
    frames_with_candidates = len({mi.frame for mi in res.masks if mi.candidate})
    assert res.diagnostics["tracker_calls"] == tracker.calls == frames_with_masks + frames_with_candidates
    assert tracker.queries_seen == sum(mi.visibility_points + mi.match_points for mi in res.masks if mi.candidate)


def test_saliency_is_the_fraction_of_keymasks_ranked_first_on_their_frame(scene):
    nm, _, res = scene
    a, b = res.objects
    assert a.saliency == 1.0  # A (score 0.8) outranks every other mask wherever it has one
    # B (0.7) is first only on its keymask frames without an A mask
    a_frames = {res.masks[i].frame for i, mi in enumerate(res.masks) if nm.truth[mi.track_id] == "A"}
    want = sum(f not in a_frames for f in b.frames) / len(b.frames)
    assert 0 < want < 1 and b.saliency == pytest.approx(want)
    assert b.extra()["saliency"] == round(want, 4)


def test_score_ratio_is_the_mean_keymask_score_over_the_best_score_of_its_frame(scene):
    nm, _, res = scene
    a, b = res.objects
    assert a.score_ratio == pytest.approx(1.0)  # A is the best mask wherever it is
    best = {}
    for mi in res.masks:
        best[mi.frame] = max(best.get(mi.frame, 0.0), mi.score)
    want = sum(0.7 / best[f] for f in b.frames) / len(b.frames)
    assert 0.7 / 0.8 <= want < 1 and b.score_ratio == pytest.approx(want)
    assert b.extra()["score_ratio"] == round(want, 4)


def test_to_video_round_trips_through_ytvis_results(scene):
    _, _, res = scene
    video = res.to_video()
    assert isinstance(video, VideoSegmentation) and video.num_frames == T and video.ids == [1, 2]
    tr = video.track(2)
    assert [t for t, m in enumerate(tr.masks) if m is None] == [5, 15, 16, 17, 18, 19, 25, 28]
    assert tr.score == pytest.approx(0.7)
    assert tr.extra == {"one2x": 0.0, "visibility_ranges": [[0, T - 1]], "num_keymasks": 28,
                        "visibility_cluster": 0, "group": 1, "saliency": res.objects[1].extra()["saliency"],
                        "score_ratio": res.objects[1].extra()["score_ratio"]}
    records = to_ytvis_results(video, video_ids=[7])
    assert records[1]["segmentations"][15] is None and records[1]["one2x"] == 0.0
    back = from_ytvis(records)[0]
    assert back.ids == video.ids
    for t1, t2 in zip(video.tracks, back.tracks):
        assert t1.masks == t2.masks and t1.score == pytest.approx(t2.score)
        assert t2.extra["visibility_ranges"] == t1.extra["visibility_ranges"]


@pytest.mark.parametrize("dup,score,want", [
    ("copy", 0.95, "dupA"),   # same support (identical mask) -> the higher score wins
    ("copy", 0.5, "A"),
    ("copy", 0.8, "A"),       # same support and score -> the lower mask index (A comes first in the input)
    ("eroded", 0.95, "A"),    # rows of dilated A masks miss the eroded copy -> A has more support
])
def test_duplicate_mask_on_a_frame_is_chosen_deterministically(dup, score, want):
    extra = OBJ_A.mask(12) if dup == "copy" else OBJ_A.mask(12, grow=-1)
    nm = noisy_masks(duplicate_a={12: (extra, score)})
    res = discover_keymasks(nm.video, ExactTracker())
    assert len(res.objects) == 2
    a = res.objects[0]
    assert nm.truth[res.masks[a.mask_indices[a.frames.index(12)]].track_id] == want
    assert len(a.duplicates) == 1 and res.masks[a.duplicates[0]].duplicate
    assert res.diagnostics["duplicates_dropped"] == 1


def test_one2x_flag_and_filter():
    # A gets a second matching mask on 6 frames -> every A row sees two masks above 0.25 on >= 5 frames
    dup = {t: (OBJ_A.mask(t, grow=-1), 0.5) for t in (0, 1, 2, 3, 4, 6)}
    nm = noisy_masks(duplicate_a=dup)
    res = discover_keymasks(nm.video, ExactTracker())
    a, b = res.objects
    assert set(_kinds(res, nm, a)) <= {"A", "dupA"} and a.one2x_mean == 1.0 and a.extra()["one2x"] == 1.0
    assert b.one2x_mean == 0.0
    assert all(res.masks[m].one2x == 1 and res.masks[m].one2x_frames >= 6 for m in a.members)
    filtered = discover_keymasks(nm.video, ExactTracker(), KeymaskConfig(one2x_filter=0.5))
    assert len(filtered.objects) == 1 and filtered.objects[0].id == 1
    assert set(_kinds(filtered, nm, filtered.objects[0])) == {"B"}
    assert filtered.diagnostics["one2x_filtered"] == 1


class _ScaledTracker:
    """The exact tracker behind a tracker that works on 2× larger frames."""

    def __init__(self, inner: ExactTracker, f: float) -> None:
        self.inner, self.f = inner, f

    def track(self, queries, frame_range=None):
        q = np.array(queries, dtype=np.float64)
        q[:, 1:] /= self.f
        r = self.inner.track(q)
        return TrackResult(r.points * self.f, r.visible)


def test_tracker_at_another_resolution_gives_the_same_keymasks(scene):
    nm, _, res = scene
    h, w = nm.video.size
    f = (2 * w - 1) / (w - 1)  # align-corners factor between w and 2w-1 pixels wide frames
    assert f == pytest.approx((2 * h - 1) / (h - 1), rel=0.02)
    scaled = discover_keymasks(nm.video, _ScaledTracker(ExactTracker(), f), tracker_size=(2 * h - 1, 2 * w - 1))
    assert [o.frames for o in scaled.objects] == [o.frames for o in res.objects]


def test_merged_ranges_keep_identity_across_a_gap():
    # both objects hidden on frames 15..19: the cluster has two majority-visible ranges
    a_hidden = dataclasses.replace(OBJ_A, hidden=set(range(15, 20)))
    nm = noisy_masks(a=a_hidden)
    merged = discover_keymasks(nm.video, ExactTracker([a_hidden, OBJ_B]))
    assert [c.ranges for c in merged.clusters] == [[(0, 14), (20, T - 1)]]
    assert [set(_kinds(merged, nm, o)) for o in merged.objects] == [{"A"}, {"B"}]
    assert merged.objects[0].match_range == (0, T - 1)
    assert merged.to_video().track(1).extra["visibility_ranges"] == [[0, 14], [20, T - 1]]
    # without merging, candidates are matched only within their own range: identities split at the gap
    seen = []
    split = discover_keymasks(nm.video, ExactTracker([a_hidden, OBJ_B]), KeymaskConfig(merge_vranges=False),
                              progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert [(o.frames[0], o.frames[-1], o.match_range) for o in split.objects] == [
        (0, 14, (0, 14)), (0, 14, (0, 14)), (20, T - 1, (20, T - 1)), (20, T - 1, (20, T - 1))]
    n_frames = len({mi.frame for mi in split.masks})
    assert seen[0] == ("visibility", 1, n_frames) and seen[n_frames - 1] == ("visibility", n_frames, n_frames)
    assert seen[-1][0] == "matching" and seen[-1][1] == seen[-1][2]


def test_video_without_masks():
    tracker = ExactTracker()
    res = discover_keymasks(VideoSegmentation(96, 128, T, []), tracker)
    assert res.objects == [] and tracker.calls == 0 and res.diagnostics["num_masks"] == 0
    assert res.to_video().tracks == []


def test_bad_tracker_output_and_settings():
    nm = noisy_masks()

    class Short:
        def track(self, queries, frame_range=None):
            n = len(queries)
            return TrackResult(np.zeros((3, n, 2)), np.ones((3, n), bool))

    with pytest.raises(ValidationError, match="tracker returned"):
        discover_keymasks(nm.video, Short())
    with pytest.raises(SettingError):
        discover_keymasks(nm.video, ExactTracker(), config={"visibility_grid": 50})
    with pytest.raises(SettingError):
        discover_keymasks(nm.video, ExactTracker(), tracker_size=(1, 0))
    # frozen config: typed, hashable, comparable
    with pytest.raises(dataclasses.FrozenInstanceError):
        KeymaskConfig().visibility_grid = 10  # type: ignore[misc]


def test_summary_is_json_safe(scene):
    import json

    _, _, res = scene
    s = json.loads(json.dumps(res.summary()))
    assert s["diagnostics"]["objects"] == 2 and s["diagnostics"]["cluster_coverage"] == {"0": pytest.approx(60 / 64)}
    assert [o["id"] for o in s["objects"]] == [1, 2] and s["objects"][1]["num_keymasks"] == 28
    assert s["clusters"] == [{"label": 0, "size": 64, "ranges": [[0, T - 1]], "candidates": 64}]


def test_multi_frame_tracks_are_split_into_single_frame_masks(scene):
    nm, _, res = scene
    from s2d.types import Track

    by_kind = {}
    for tr in nm.video.tracks:
        t = tr.present_frames()[0]
        by_kind.setdefault(nm.truth[tr.id], [None] * T)[t] = tr.masks[t]
    merged_tracks = [Track(i + 1, by_kind[k], 0.5) for i, k in enumerate(["A", "B"])]
    res2 = discover_keymasks(nm.video.with_tracks(merged_tracks), ExactTracker())
    assert res2.diagnostics["num_masks"] == sum(m is not None for k in ("A", "B") for m in by_kind[k])
    assert [o.frames for o in res2.objects] == [o.frames for o in res.objects]


@pytest.mark.parametrize("boxes, min_area, want", [
    ([(2, 8, 2, 8)], 1, [36]),                              # one component: unchanged
    ([(2, 8, 2, 8), (12, 16, 20, 30)], 1, [36, 40]),        # two separate objects in one mask: two masks
    ([(2, 8, 2, 8), (12, 14, 20, 22)], 10, [36]),           # a speck below min_area is dropped
])
def test_split_components(boxes, min_area, want):
    from s2d.keymasks.discover import split_components

    m = np.zeros((20, 32), bool)
    for y0, y1, x0, x1 in boxes:
        m[y0:y1, x0:x1] = True
    out = split_components([(3, 0, 7, 0.9, rle_utils.encode(m))], min_area)
    assert sorted(int(rle_utils.area(r)) for *_, r in out) == want
    assert all(e[:4] == (3, 0, 7, 0.9) for e in out)        # frame, position, track id and score kept
    union = np.zeros_like(m)
    for *_, r in out:
        union |= rle_utils.decode(r)
    assert not (union & ~m).any()


def test_split_objects_keep_the_saliency_of_their_mask():
    """Two objects that stage 1 returns as one (top-scored) mask per frame become two objects, both salient."""
    H, W, T_ = 40, 60, 12
    tracks, tid = [], 1
    for t in range(T_):
        m = np.zeros((H, W), bool)
        m[5:15, 5 + t:15 + t] = True         # object A moves right
        m[25:35, 45 - t:55 - t] = True       # object B moves left
        seq = [None] * T_
        seq[t] = rle_utils.encode(m)
        from s2d.types import Track
        tracks.append(Track(tid, seq, 0.9))
        tid += 1
    video = VideoSegmentation(H, W, T_, tracks)

    class Shift:  # exact tracker for the two rigid motions
        def track(self, queries, frame_range=None):
            n = queries.shape[0]
            pts = np.zeros((T_, n, 2), np.float32)
            for k, (t0, x, y) in enumerate(queries):
                d = 1.0 if y < 20 else -1.0
                for t in range(T_):
                    pts[t, k] = (x + d * (t - t0), y)
            return TrackResult(pts, np.ones((T_, n), bool))

    cfg = KeymaskConfig(grid_model_height=H, grid_model_width=W, visibility_grid=20, match_grid_min=10,
                        match_grid_max=10, visibility_min_samples=3, match_min_samples=3,
                        match_small_min_samples=3, match_large_min_samples=3)
    merged = discover_keymasks(video, Shift(), cfg)
    split = discover_keymasks(video, Shift(), dataclasses.replace(cfg, split_components=True))
    assert len(merged.objects) == 1
    assert len(split.objects) == 2 and all(o.saliency == 1.0 for o in split.objects)
    for o in split.objects:
        areas = {int(rle_utils.area(m)) for m in o.masks}
        assert areas == {100}
