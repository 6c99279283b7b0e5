"""Streaming inference: one result per frame at the original size, linking across chunks, bounded read-ahead.

Two models: the real tiny random-init ``VideoMask2Former`` (loaded from a checkpoint like any trained one)
for the whole path, and a scripted model whose tubes are known, so the expected ids and masks can be
written down exactly.
"""

from __future__ import annotations

from dataclasses import replace

from pathlib import Path
from typing import Callable, Dict, Iterator, List

import dataclasses
import numpy as np
import pytest
import torch

from s2d.errors import InputError, SettingError
from s2d.infer import SegmentConfig, VideoPredictor, load_model, segment_frames, working_size
from s2d.types import FrameResult

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scene(n: int, h: int = 40, w: int = 60) -> List[np.ndarray]:
    """Random background with a textured square moving right 2 px per frame."""
    rng = np.random.default_rng(1)
    bg = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    obj = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    out = []
    for t in range(n):
        f = bg.copy()
        f[10:22, 4 + 2 * t:16 + 2 * t] = obj
        out.append(f)
    return out


class Counted:
    """A frame source that checks, at every read, how far it runs ahead of what was yielded."""

    def __init__(self, frames: List[np.ndarray], yielded: List[FrameResult]) -> None:
        self.frames, self.yielded, self.reads, self.max_ahead = frames, yielded, 0, 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for f in self.frames:
            self.reads += 1
            self.max_ahead = max(self.max_ahead, self.reads - len(self.yielded))
            yield f


# --------------------------------------------------------------------------- the real (tiny) model
def test_tiny_model_streams_one_result_per_frame_at_original_size(tiny_ckpt: Path) -> None:
    model = load_model(tiny_ckpt, "cpu")
    cfg = SegmentConfig(model=str(tiny_ckpt), score_threshold=0.0, chunk=4, overlap=1, max_side=64, min_area=1)
    frames = scene(11)
    out: List[FrameResult] = []
    src = Counted(frames, out)
    predictor = VideoPredictor(model, cfg)
    for fr in predictor(src):
        out.append(fr)
    assert [fr.index for fr in out] == list(range(11))
    assert all((fr.height, fr.width) == (40, 60) for fr in out)
    assert src.max_ahead <= cfg.chunk  # memory: never more than one chunk read ahead
    assert any(len(fr) for fr in out), "score_threshold=0 must output something"
    for fr in out:
        assert len(fr) <= cfg.max_objects
        assert fr.masks.reshape(len(fr), -1).any(1).all()  # absent objects are left out, not empty
        assert (fr.masks.sum(0) <= 1).all()  # overlaps resolved: disjoint masks
    # every id that was used has a score (the mean over its chunks)
    seen: List[int] = []
    for fr in out:
        seen += [i for i in sorted(fr.ids.tolist()) if i not in seen]
    assert set(seen) <= set(predictor.track_scores)
    assert all(0.0 <= s <= 1.0 for s in predictor.track_scores.values())
    # the Python API on a path gives the same frames
    again = list(segment_frames(frames, cfg, model=model))
    assert all(np.array_equal(a.masks, b.masks) and a.ids.tolist() == b.ids.tolist() for a, b in zip(out, again))


class _NoEncode:
    """The same model seen through ``predict`` only: every chunk then runs through the backbone in full."""

    def __init__(self, model) -> None:
        self.model = model

    def predict(self, clip, **kw):
        return self.model.predict(clip, **kw)


@pytest.mark.parametrize("n,L,K", [(11, 4, 1), (13, 5, 3), (9, 4, 0), (3, 8, 2)])
def test_shared_frames_are_encoded_once_and_give_the_same_result(tiny_ckpt: Path, n: int, L: int, K: int) -> None:
    model = load_model(tiny_ckpt, "cpu")
    cfg = SegmentConfig(model=str(tiny_ckpt), score_threshold=0.0, chunk=L, overlap=K, max_side=64, min_area=1)
    encoded: List[int] = []
    encode = model.encode

    def counting_encode(frames, *a, **kw):
        encoded.append(int(frames.shape[0]))
        return encode(frames, *a, **kw)

    model.encode = counting_encode
    frames = scene(n)
    cached = list(VideoPredictor(model, cfg)(frames))
    n_encoded = sum(encoded)
    plain = list(VideoPredictor(_NoEncode(model), cfg)(frames))  # forward() encodes every chunk in full
    # the last chunk is the video's last L frames: it may share more than K frames with the one before
    step = L - K
    starts = sorted({*range(0, max(n - L, 0) + 1, step), max(n - L, 0)})
    extra = 0 if len(starts) < 2 else (starts[-2] + L) - starts[-1] - K
    assert n_encoded == n + extra
    assert sum(encoded) > n_encoded or len(starts) == 1
    assert len(cached) == len(plain) == n
    for a, b in zip(cached, plain):
        assert a.ids.tolist() == b.ids.tolist()
        assert (a.masks != b.masks).mean() < 1e-3  # the same up to float rounding of batched convolutions


def test_tiny_model_api_opens_a_path(tiny_ckpt: Path, tmp_path: Path) -> None:
    from helpers import make_frame_folder

    folder = make_frame_folder(tmp_path / "clip", scene(5))
    cfg = SegmentConfig(model=str(tiny_ckpt), score_threshold=0.0, chunk=3, overlap=1, max_side=32)
    out = list(segment_frames(folder, cfg))  # loads the model from cfg.model
    assert [fr.index for fr in out] == list(range(5)) and out[0].masks.shape[1:] == (40, 60)


# --------------------------------------------------------------------------- a scripted model
class Scripted:
    """``predict`` returns tubes drawn by ``draw(t) -> {key: (mask at working size, score)}``.

    The frame index is read from the flat red channel of the clip (frames are filled with value 3·t), so
    the model knows which video frames a chunk holds. Tubes are sorted by score, like the real model.
    """

    def __init__(self, draw: Callable[[int, int, int], Dict[str, tuple]]) -> None:
        self.draw = draw
        self.calls: List[List[int]] = []

    def predict(self, clip: torch.Tensor, score_threshold: float = 0.0, **_: object) -> dict:
        T, _, h, w = clip.shape
        ts = [int(clip[i, 0, 0, 0]) // 3 for i in range(T)]
        self.calls.append(ts)
        tubes: Dict[str, list] = {}
        scores: Dict[str, float] = {}
        for i, t in enumerate(ts):
            for key, (m, s) in self.draw(t, h, w).items():
                tubes.setdefault(key, [np.zeros((h, w), bool)] * T)[i] = m
                scores[key] = s
        keys = sorted((k for k in tubes if scores[k] >= score_threshold), key=lambda k: -scores[k])
        masks = torch.from_numpy(np.array([np.stack(tubes[k]) for k in keys], dtype=bool).reshape(len(keys), T, h, w))
        return {"scores": torch.tensor([scores[k] for k in keys]), "masks": masks,
                "mask_logits": masks.float() * 8 - 4}


def flat_frames(n: int, h: int = 32, w: int = 48) -> List[np.ndarray]:
    return [np.full((h, w, 3), (3 * t, 0, 0), np.uint8) for t in range(n)]


def square(t: int, h: int, w: int) -> Dict[str, tuple]:
    """One object moving 1 px (working size) per frame; a second one on frames 0-3 and again from 9."""
    a = np.zeros((h, w), bool)
    a[4:12, t:t + 8] = True
    out = {"a": (a, 0.9)}
    if t < 4 or t >= 9:
        b = np.zeros((h, w), bool)
        b[12:16, 2:8] = True
        out["b"] = (b, 0.6)
    return out


def test_scripted_tubes_are_linked_and_upsampled_exactly() -> None:
    # working size 16×24 (max_side 24), original 32×48: factor 2 exactly
    model = Scripted(square)
    cfg = SegmentConfig(chunk=4, overlap=2, max_side=24, score_threshold=0.5, min_area=1, refine="none",
                        track_memory=0)
    predictor = VideoPredictor(model, cfg)
    out = list(predictor(flat_frames(12)))
    assert [fr.index for fr in out] == list(range(12))
    for t, fr in enumerate(out):
        ids = fr.ids.tolist()
        assert ids[0] == 1  # the moving object keeps id 1 across all chunks
        expect = np.zeros((32, 48), bool)
        expect[8:24, 2 * t:2 * t + 16] = True  # the working-size square, upsampled ×2
        assert np.array_equal(fr.masks[0], expect)
        # object b: id 2 on frames 0-3; gone; back from frame 9 with a NEW id (no track memory)
        if t < 4:
            assert ids == [1, 2]
        elif t < 9:
            assert ids == [1]
        else:
            assert ids == [1, 3]
    assert predictor.track_scores[1] == pytest.approx(0.9) and predictor.track_scores[2] == pytest.approx(0.6)


def test_a_returning_object_gets_its_id_back_within_the_track_memory() -> None:
    # b is missing from the chunk of frames 4-7 and comes back on frame 9, in the middle of the chunk 6-9
    cfg = SegmentConfig(chunk=4, overlap=2, max_side=24, score_threshold=0.5, min_area=1, refine="none",
                        track_memory=2)
    out = list(VideoPredictor(Scripted(square), cfg)(flat_frames(12)))
    assert [fr.ids.tolist() for fr in out] == [[1, 2]] * 4 + [[1]] * 5 + [[1, 2]] * 3


def dipping(t: int, h: int, w: int) -> Dict[str, tuple]:
    """A still square and a second one scoring 0.55 throughout; the first scores 0.9, but 0.55 in chunks whose
    last frame is 4-7 (a scripted tube takes the score of its last frame)."""
    a = np.zeros((h, w), bool)
    a[2:10, 2:10] = True
    b = np.zeros((h, w), bool)
    b[10:16, 14:22] = True
    return {"a": (a, 0.55 if 4 <= t < 8 else 0.9), "b": (b, 0.55)}


@pytest.mark.parametrize("continue_threshold, expected", [
    (0.7, [[1]] * 4 + [[]] * 4 + [[2]] * 2),  # one threshold: the dip ends the track, a new id after it
    (0.5, [[1]] * 10),                          # two thresholds: the track goes on; b never starts one
])
def test_two_thresholds_keep_a_track_through_a_dip(continue_threshold: float, expected) -> None:
    # chunks 0-3, 2-5, 4-7, 6-9: the chunk of frames 4-7 sees a only at 0.55
    cfg = SegmentConfig(chunk=4, overlap=2, max_side=24, score_threshold=0.7, continue_threshold=continue_threshold,
                        min_area=1, refine="none", track_memory=0)
    out = list(VideoPredictor(Scripted(dipping), cfg)(flat_frames(10)))
    assert [fr.ids.tolist() for fr in out] == expected


def test_overlaps_go_to_the_higher_score() -> None:
    def draw(t: int, h: int, w: int) -> Dict[str, tuple]:
        a = np.zeros((h, w), bool)
        b = np.zeros((h, w), bool)
        a[0:10, 0:10] = True
        b[5:15, 5:15] = True
        small = np.zeros((h, w), bool)
        small[6:8, 6:8] = True  # entirely under a: absent from the frame
        return {"a": (a, 0.7), "b": (b, 0.9), "c": (small, 0.6)}

    cfg = SegmentConfig(max_side=None, min_area=1, refine="none")
    fr = next(iter(VideoPredictor(Scripted(draw), cfg)(flat_frames(1))))
    # tubes come sorted by score: b (0.9) gets id 1, a (0.7) id 2, c (0.6) id 3 but keeps no pixel
    assert fr.ids.tolist() == [1, 2] and fr.scores.tolist() == pytest.approx([0.9, 0.7])
    assert fr.masks[0].sum() == 100 and fr.masks[0][5:15, 5:15].all()  # b whole
    assert fr.masks[1].sum() == 100 - 25 and not fr.masks[1][5:10, 5:10].any()  # a loses the shared corner

    low = replace(cfg, score_threshold=0.5, continue_threshold=0.5)
    fr = next(iter(VideoPredictor(Scripted(draw), low)(flat_frames(1))))
    assert fr.ids.tolist() == [1, 2]  # c passes the threshold but keeps no pixel under a
    kept = next(iter(VideoPredictor(Scripted(draw), replace(low, resolve_overlaps=False))(flat_frames(1))))
    assert kept.ids.tolist() == [1, 2, 3]  # as predicted: a keeps its corner, c is there under it
    assert [int(m.sum()) for m in kept.masks] == [100, 100, 4] and (kept.masks[0] & kept.masks[1]).sum() == 25


def test_upscale_off_runs_small_frames_at_their_size() -> None:
    seen: List[tuple] = []

    def draw(t: int, h: int, w: int) -> Dict[str, tuple]:
        seen.append((h, w))
        return {}

    for upscale, size in [(True, (64, 96)), (False, (32, 48))]:
        seen.clear()
        list(VideoPredictor(Scripted(draw), SegmentConfig(max_side=96, upscale=upscale))(flat_frames(2)))
        assert set(seen) == {size}


# (frames, chunk, overlap) -> the chunks the model sees: starts every chunk-overlap frames, the last chunk is
# the video's last `chunk` frames
CHUNKS = [
    (10, 4, 1, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]),
    (9, 4, 1, [[0, 1, 2, 3], [3, 4, 5, 6], [5, 6, 7, 8]]),
    (3, 8, 2, [[0, 1, 2]]),  # shorter than one chunk
    (8, 8, 2, [[0, 1, 2, 3, 4, 5, 6, 7]]),  # exactly one chunk
    (3, 1, 0, [[0], [1], [2]]),  # chunk 1
    (7, 3, 0, [[0, 1, 2], [3, 4, 5], [4, 5, 6]]),  # overlap 0; the last chunk is shifted back
    (6, 4, 3, [[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]]),  # overlap > chunk / 2
    (1, 4, 2, [[0]]),
]


@pytest.mark.parametrize("n,L,K,expected", CHUNKS, ids=[f"T{n}-L{L}-K{K}" for n, L, K, _ in CHUNKS])
def test_chunk_plan_and_bounded_read_ahead(n: int, L: int, K: int, expected: List[List[int]]) -> None:
    model = Scripted(square)
    out: List[FrameResult] = []
    src = Counted(flat_frames(n), out)
    for fr in VideoPredictor(model, SegmentConfig(chunk=L, overlap=K, max_side=None, min_area=1))(src):
        out.append(fr)
    assert model.calls == expected
    assert [fr.index for fr in out] == list(range(n))
    assert src.max_ahead <= L


def test_zero_detections_and_empty_input() -> None:
    model = Scripted(lambda t, h, w: {})
    out = list(VideoPredictor(model, SegmentConfig(chunk=3, overlap=1))(flat_frames(5)))
    assert [len(fr) for fr in out] == [0] * 5 and out[0].masks.shape == (0, 32, 48)
    assert list(VideoPredictor(model, SegmentConfig())([])) == []


def test_a_corrupt_source_yields_the_good_frames_then_raises() -> None:
    def broken() -> Iterator[np.ndarray]:
        yield from flat_frames(6)
        raise InputError("clip.mp4", "corrupt video stream after frame 5 (last decoded frame index 5)")

    got: List[int] = []
    with pytest.raises(InputError, match="frame 5"):
        for fr in VideoPredictor(Scripted(square), SegmentConfig(chunk=4, overlap=1, max_side=None))(broken()):
            got.append(fr.index)
    assert got == list(range(6))


def test_mixed_frame_sizes_are_an_input_error() -> None:
    frames = flat_frames(2) + [np.zeros((10, 10, 3), np.uint8)]
    with pytest.raises(InputError, match="frame 2: size 10x10"):
        list(VideoPredictor(Scripted(square), SegmentConfig(chunk=2, overlap=1))(frames))


def test_crf_refinement_runs_at_the_reduced_size() -> None:
    seen = []

    def refine(rgb: np.ndarray, m: np.ndarray) -> np.ndarray:
        seen.append(rgb.shape[:2])
        return m

    cfg = SegmentConfig(chunk=2, overlap=1, max_side=24, refine="crf", refine_max_side=24, min_area=1)
    out = list(VideoPredictor(Scripted(square), cfg, refine_fn=refine)(flat_frames(3)))
    assert seen and set(seen) == {(16, 24)} and out[0].masks.shape[1:] == (32, 48)


def _edge_frames(n: int, h: int = 32, w: int = 48) -> List[np.ndarray]:
    """Frames whose left 20 columns are bright (red channel still encodes the frame index)."""
    frames = flat_frames(n, h, w)
    for f in frames:
        f[:, :20, 1:] = 200
    return frames


def test_guided_refinement_moves_mask_edges_onto_image_edges() -> None:
    def blurry(t: int, h: int, w: int) -> Dict[str, tuple]:  # object ends at column 9 of 24 (18 px at 48)
        m = np.zeros((h, w), bool)
        m[2:14, 0:9] = True
        return {"a": (m, 0.9)}

    base = dict(chunk=2, overlap=1, max_side=24, min_area=1, refine_max_side=48)
    plain = next(iter(VideoPredictor(Scripted(blurry), SegmentConfig(refine="none", **base))(_edge_frames(2))))
    guided = next(iter(VideoPredictor(Scripted(blurry), SegmentConfig(refine="guided", guided_radius=0.1,
                                                                      **base))(_edge_frames(2))))
    cols = lambda fr: np.nonzero(fr.masks[0][16])[0]  # noqa: E731 - the object's columns on row 16
    assert cols(plain).max() == 17
    assert cols(guided).max() == 19                          # snapped to the image edge at column 20
    assert guided.masks.shape == plain.masks.shape == (1, 32, 48)


def test_split_gives_far_apart_parts_their_own_ids() -> None:
    def two_in_one(t: int, h: int, w: int) -> Dict[str, tuple]:
        m = np.zeros((h, w), bool)
        m[2:8, 2:8] = True
        m[10:16, 16:22] = True
        return {"a": (m, 0.9)}

    base = dict(chunk=3, overlap=1, max_side=24, min_area=1, refine="none")
    one = list(VideoPredictor(Scripted(two_in_one), SegmentConfig(split=False, **base))(flat_frames(5)))
    two = list(VideoPredictor(Scripted(two_in_one), SegmentConfig(split=True, **base))(flat_frames(5)))
    assert all(fr.ids.tolist() == [1] for fr in one)
    assert all(fr.ids.tolist() == [1, 2] for fr in two)      # two tracks, linked across chunks
    assert all(np.array_equal(a.masks[0], b.masks.any(0)) for a, b in zip(one, two))


def test_working_size() -> None:
    assert working_size(480, 854, 448) == (252, 448)
    assert working_size(40, 60, 448) == (299, 448)  # small inputs are enlarged to the training scale
    assert working_size(40, 60, 448, upscale=False) == (40, 60)
    assert working_size(40, 60, None) == (40, 60)


@pytest.mark.parametrize("changes,match", [
    ({"chunk": 0}, "chunk"), ({"chunk": 4, "overlap": 4}, "overlap"), ({"overlap": -1}, "overlap"),
    ({"score_threshold": 1.5}, "score threshold"), ({"max_objects": 0}, "max objects"),
    ({"refine": "bilateral"}, "refine"), ({"max_side": 8}, "max side"), ({"link_iou": 0}, "link IoU"),
    ({"guided_radius": 0}, "guided radius"), ({"guided_eps": -1}, "guided eps"), ({"split": "yes"}, "split"),
    ({"upscale": 1}, "upscale"), ({"resolve_overlaps": "no"}, "resolve_overlaps"),
    ({"continue_threshold": -0.1}, "continue threshold"), ({"track_memory": -1}, "track memory"),
    ({"track_memory": 1.5}, "track memory"), ({"birth_overlap": 0}, "birth overlap"), ({"nms_iou": 1.5}, "nms iou"),
])
def test_bad_settings_are_one_line_setting_errors(changes: dict, match: str) -> None:
    with pytest.raises(SettingError, match=match) as e:
        SegmentConfig(**changes)
    assert "\n" not in str(e.value)


def test_load_model_errors(tmp_path: Path) -> None:
    from s2d.infer import default_model_path

    with pytest.raises(InputError, match="checkpoint file not found"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(SettingError, match="not a torch device"):
        load_model(tmp_path / "nope.pt", "gpu7")
    if not default_model_path().is_file():
        with pytest.raises(SettingError, match="default model is not installed"):
            load_model("default")


def _centred(t: int, h: int, w: int) -> Dict[str, tuple]:
    m = np.zeros((h, w), bool)
    m[4:12, w // 2 - 6:w // 2 + 6] = True  # mirror-symmetric
    return {"a": (m, 0.9)}


def test_tta_consensus_runs_in_the_stream(tiny_ckpt: Path) -> None:
    """tta_flip / tta_scales (the dense labeller's consensus) run inside the one streaming predictor; for a
    mirror-symmetric prediction the flip consensus equals the plain prediction."""
    cfg = SegmentConfig(score_threshold=0.5, max_side=None, refine="none", split=False, min_area=1)
    plain = list(VideoPredictor(Scripted(_centred), cfg)(flat_frames(5)))
    flip = list(VideoPredictor(Scripted(_centred), cfg.replace(tta_flip=True))(flat_frames(5)))
    assert [r.ids.tolist() for r in flip] == [r.ids.tolist() for r in plain] == [[1]] * 5
    assert all((a.masks == b.masks).all() for a, b in zip(flip, plain))
    model = load_model(str(tiny_ckpt))
    scaled = list(segment_frames(iter(scene(5)), cfg.replace(score_threshold=0.0, tta_scales=(1.25,)), model=model))
    assert len(scaled) == 5 and all(r.masks.shape[1:] == (40, 60) for r in scaled)
    with pytest.raises(SettingError, match="tta scales"):
        cfg.replace(tta_scales=(0.0,))


def test_duplicate_tubes_merge_into_one_object() -> None:
    def draw(t: int, h: int, w: int) -> Dict[str, tuple]:
        a = np.zeros((h, w), bool)
        b = np.zeros((h, w), bool)
        a[2:10, 2:12] = True
        b[2:12, 2:12] = True  # the same object with more of it: IoU 0.8 with a
        return {"a": (a, 0.9), "b": (b, 0.8)}

    cfg = SegmentConfig(chunk=4, overlap=2, max_side=24, score_threshold=0.5, min_area=1, refine="none",
                        split=False, nms_iou=0.5)
    out = list(VideoPredictor(Scripted(draw), cfg)(flat_frames(6)))
    expect = np.zeros((32, 48), bool)
    expect[4:24, 4:24] = True  # the union of both, upsampled ×2
    for fr in out:
        assert fr.ids.tolist() == [1] and np.array_equal(fr.masks[0], expect)
    off = list(VideoPredictor(Scripted(draw), dataclasses.replace(cfg, nms_iou=1.0))(flat_frames(6)))
    assert all(fr.ids.tolist() == [1, 2] for fr in off)
