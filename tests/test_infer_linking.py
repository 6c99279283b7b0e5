"""TubeLinker: which tubes of a new chunk continue which tracks (table-driven on 1×8-pixel frames)."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import pytest
import torch

from s2d.errors import SettingError
from s2d.infer.linking import TubeLinker, match_tubes, group_duplicates, tube_iou


def tube(pattern: str, frames: int) -> np.ndarray:
    """``frames×1×W`` masks: the same row ``pattern`` ('1' = object) on every frame."""
    row = np.array([c == "1" for c in pattern], dtype=bool)[None]
    return np.repeat(row[None], frames, axis=0)


def chunk(frames: Sequence[int], *patterns: str) -> Tuple[List[int], np.ndarray]:
    masks = np.stack([tube(p, len(frames)) for p in patterns]) if patterns else np.zeros((0, len(frames), 1, 8), bool)
    return list(frames), masks


# each case: chunks in video order and the ids the linker must give their tubes (link_iou 0.3)
CASES = {
    "perfect overlap keeps the id": (
        [chunk([0, 1, 2], "11110000"), chunk([2, 3, 4], "11110000")],
        [[1], [1]]),
    "no overlap starts a new id": (
        [chunk([0, 1, 2], "11110000"), chunk([2, 3, 4], "00001111")],
        [[1], [2]]),
    "IoU below the threshold starts a new id": (  # 1/5 = 0.2 < 0.3
        [chunk([0, 1, 2], "11100000"), chunk([2, 3, 4], "00111000")],
        [[1], [2]]),
    "IoU above the threshold keeps the id": (  # 2/4 = 0.5
        [chunk([0, 1, 2], "11100000"), chunk([2, 3, 4], "01110000")],
        [[1], [1]]),
    "two tubes swapped in query order": (
        [chunk([0, 1, 2], "11100000", "00000111"), chunk([2, 3, 4], "00000111", "11100000")],
        [[1, 2], [2, 1]]),
    "one-to-one: the better match wins, the other is new": (
        [chunk([0, 1, 2], "11110000"), chunk([2, 3, 4], "11100000", "11110000")],
        [[1], [2, 1]]),
    "an ended id is never reused": (  # the object skips chunk 2, comes back in chunk 3 with a new id
        [chunk([0, 1, 2], "11110000"), chunk([2, 3, 4]), chunk([4, 5, 6], "11110000")],
        [[1], [], [2]]),
    "ids are not reused after a gap in the middle either": (
        [chunk([0, 1, 2], "11000000", "00000011"), chunk([2, 3, 4], "00000011"),
         chunk([4, 5, 6], "11000000", "00000011")],
        [[1, 2], [2], [3, 2]]),
    "adjacent chunks link last frame to first frame": (
        [chunk([0, 1], "11110000"), chunk([2, 3], "11110000")],
        [[1], [1]]),
    "one-frame chunks (online) link frame to frame": (
        [chunk([0], "11100000", "00000111"), chunk([1], "01110000", "00000111"), chunk([2], "00000111")],
        [[1, 2], [1, 2], [2]]),
    "chunks with a gap between them never link": (
        [chunk([0, 1], "11110000"), chunk([3, 4], "11110000")],
        [[1], [2]]),
    "a shifted last chunk links on all shared frames": (
        [chunk([0, 1, 2, 3], "11110000"), chunk([3, 4, 5, 6], "11110000"), chunk([4, 5, 6, 7], "11110000")],
        [[1], [1], [1]]),
    "new tubes get ids in tube order": (
        [chunk([0, 1], "10000000", "01000000", "00100000")],
        [[1, 2, 3]]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_linker_table(name: str) -> None:
    chunks, expected = CASES[name]
    linker = TubeLinker(link_iou=0.3)
    got = [linker.link(frames, masks) for frames, masks in chunks]
    assert got == expected


def unit(*rows: Sequence[float]) -> torch.Tensor:
    e = torch.tensor(rows, dtype=torch.float32)
    return e / e.norm(dim=1, keepdim=True)


# (embed_weight, chunks as (frames, patterns, embeddings), expected ids)
EMBED_CASES = {
    "masks alone: a moved object is new": (
        0.0, [([0, 1], ["11000000"], [[1, 0]]), ([2, 3], ["00000011"], [[1, 0]])], [[1], [2]]),
    "the embedding recognises a moved object": (  # IoU 0, cos 1: 0.5·0 + 0.5·1 = 0.5 ≥ 0.3
        0.5, [([0, 1], ["11000000"], [[1, 0]]), ([2, 3], ["00000011"], [[1, 0]])], [[1], [1]]),
    "an unlike embedding does not": (  # IoU 0, cos 0
        0.5, [([0, 1], ["11000000"], [[1, 0]]), ([2, 3], ["00000011"], [[0, 1]])], [[1], [2]]),
    "an unlike embedding vetoes a weak overlap": (  # IoU 0.5, cos 0: 0.25 < 0.3
        0.5, [([0, 1], ["11100000"], [[1, 0]]), ([2, 3], ["01110000"], [[0, 1]])], [[1], [2]]),
    "embeddings decide between two overlapping tubes": (  # both IoU 0.6; cos picks the pairing
        0.5, [([0, 1], ["11110000", "00001111"], [[1, 0], [0, 1]]),
              ([2, 3], ["00111100", "00111100"], [[0, 1], [1, 0]])], [[1, 2], [2, 1]]),
}


@pytest.mark.parametrize("name", list(EMBED_CASES))
def test_linker_embeddings(name: str) -> None:
    weight, chunks, expected = EMBED_CASES[name]
    linker = TubeLinker(0.3, embed_weight=weight)
    got = [linker.link(frames, np.stack([tube(p, len(frames)) for p in pats]), embeds=unit(*emb))
           for frames, pats, emb in chunks]
    assert got == expected


def test_embedding_recalls_an_ended_track_that_moved() -> None:
    linker = TubeLinker(0.3, memory=2, embed_weight=0.5)
    a, b = unit([1, 0, 0]), unit([0, 1, 0])
    assert linker.link([0, 1], np.stack([tube("11000000", 2), tube("00001100", 2)]), embeds=torch.cat([a, b])) == [1, 2]
    assert linker.link([2, 3], tube("00001100", 2)[None], embeds=b) == [2]  # object 1 missed
    assert linker.link([4, 5], tube("00000011", 2)[None], embeds=a) == [1]  # back elsewhere: its old id


def test_embeddings_must_match_the_tubes() -> None:
    with pytest.raises(ValueError, match="embeds"):
        TubeLinker(0.3, embed_weight=0.5).link([0], tube("11", 1)[None], embeds=torch.zeros(2, 4))
    with pytest.raises(SettingError, match="embedding weight"):
        TubeLinker(0.3, embed_weight=1.5)


def test_iou_is_the_mean_over_shared_frames() -> None:
    # frame 0 identical (IoU 1), frame 1 disjoint (IoU 0) -> 0.5
    a = np.zeros((1, 2, 1, 4), bool)
    b = np.zeros((1, 2, 1, 4), bool)
    a[0, 0, 0, :2] = b[0, 0, 0, :2] = True
    a[0, 1, 0, :2] = True
    b[0, 1, 0, 2:] = True
    assert tube_iou(a, b).tolist() == [[0.5]]
    assert tube_iou(np.zeros((0, 2, 1, 4), bool), b).shape == (0, 1)
    assert match_tubes(np.array([[0.2, 0.9], [0.8, 0.1]]), 0.5) == {0: 1, 1: 0}
    assert match_tubes(np.array([[0.2, 0.4]]), 0.5) == {}


def test_shared_frames_are_those_the_last_chunk_covered() -> None:
    linker = TubeLinker(0.3)
    linker.link([0, 1], tube("11110000", 2)[None])
    assert linker.shared_frames([1, 2]) == [1]


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_bad_link_iou_is_a_setting_error(bad: float) -> None:
    with pytest.raises(SettingError, match="link_iou"):
        TubeLinker(bad)


def tubes_of(chunks_spec):
    """``[(frames, patterns, starts)]`` → ``[(frames, masks, starts)]``."""
    out = []
    for frames, patterns, starts in chunks_spec:
        f, m = chunk(frames, *patterns)
        out.append((f, m, starts))
    return out


# (memory, [(frames, tube patterns, may each tube start a track?)], expected ids; 0 = dropped)
IDENTITY_CASES = {
    "a weak tube continues its track": (
        0, [([0, 1, 2], ["11110000"], [True]), ([2, 3, 4], ["11110000"], [False])],
        [[1], [1]]),
    "a weak tube that continues nothing is dropped": (
        0, [([0, 1, 2], ["11110000"], [True]), ([2, 3, 4], ["11110000", "00000011"], [True, False])],
        [[1], [1, 0]]),
    "a weak tube never starts a track": (
        0, [([0, 1, 2], ["11110000"], [False]), ([2, 3, 4], ["11110000"], [True])],
        [[0], [1]]),
    "without memory a missed chunk ends the track": (
        0, [([0, 1, 2], ["11110000"], [True]), ([2, 3, 4], [], []), ([4, 5, 6], ["11110000"], [True])],
        [[1], [], [2]]),
    "with memory the returning object gets its id back": (
        2, [([0, 1, 2], ["11110000"], [True]), ([2, 3, 4], [], []), ([4, 5, 6], ["11110000"], [True])],
        [[1], [], [1]]),
    "a weak returning tube is recalled too": (
        2, [([0, 1, 2], ["11110000"], [True]), ([2, 3, 4], [], []), ([4, 5, 6], ["11100000"], [False])],
        [[1], [], [1]]),
    "memory runs out after its chunks": (
        1, [([0, 1, 2], ["11110000"], [True]), ([2, 3, 4], [], []), ([4, 5, 6], [], []),
            ([6, 7, 8], ["11110000"], [True])],
        [[1], [], [], [2]]),
    "a returning object elsewhere is new": (
        2, [([0, 1, 2], ["11110000"], [True]), ([2, 3, 4], [], []), ([4, 5, 6], ["00000111"], [True])],
        [[1], [], [2]]),
    "a live match beats the memory": (
        3, [([0, 1, 2], ["11110000", "00001111"], [True, True]), ([2, 3, 4], ["00001111"], [True]),
            ([4, 5, 6], ["11110000", "00001111"], [True, True])],
        [[1, 2], [2], [1, 2]]),
}


@pytest.mark.parametrize("name", list(IDENTITY_CASES))
def test_linker_two_thresholds_and_memory(name: str) -> None:
    memory, spec, expected = IDENTITY_CASES[name]
    linker = TubeLinker(0.3, memory=memory)
    got = [linker.link(frames, masks, starts=starts) for frames, masks, starts in tubes_of(spec)]
    assert got == expected


def test_limit_keeps_the_first_tubes_and_spends_no_id_on_the_rest() -> None:
    linker = TubeLinker(0.3)
    frames, masks = chunk([0, 1], "10000000", "01000000", "00100000")
    assert linker.link(frames, masks, limit=2) == [1, 2, 0]
    frames, masks = chunk([1, 2], "00000001")
    assert linker.link(frames, masks) == [3]


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_memory_is_a_setting_error(bad) -> None:
    with pytest.raises(SettingError, match="track memory"):
        TubeLinker(0.3, memory=bad)


# (birth_overlap, chunks in video order, expected ids; 0 = a birth suppressed)
BIRTH_CASES = {
    "off: a duplicate inside a tracked object gets its own id": (
        1.0, [chunk([0, 1], "11110000"), chunk([1, 2], "11110000", "01100000")],
        [[1], [1, 2]]),
    "a new tube inside a continued track starts nothing": (
        0.5, [chunk([0, 1], "11110000"), chunk([1, 2], "11110000", "01100000")],
        [[1], [1, 0]]),
    "a tube half outside still starts a track": (  # 2 of 4 pixels under the track: 0.5, not more
        0.5, [chunk([0, 1], "11110000"), chunk([1, 2], "11110000", "00111100")],
        [[1], [1, 2]]),
    "the continued track counts even when it scores lower": (  # tube order = score order
        0.5, [chunk([0, 1], "11110000"), chunk([1, 2], "01110000", "11110000")],
        [[1], [0, 1]]),
    "within one chunk, the second of two new duplicates starts nothing": (
        0.5, [chunk([0, 1], "11110000", "11100000", "00000011")],
        [[1, 0, 2]]),
}


@pytest.mark.parametrize("name", list(BIRTH_CASES))
def test_births_inside_tracked_objects(name: str) -> None:
    overlap, chunks, expected = BIRTH_CASES[name]
    linker = TubeLinker(0.3, birth_overlap=overlap)
    assert [linker.link(frames, masks) for frames, masks in chunks] == expected


@pytest.mark.parametrize("bad", [0, -0.1, 1.5])
def test_bad_birth_overlap_is_a_setting_error(bad) -> None:
    with pytest.raises(SettingError, match="birth overlap"):
        TubeLinker(0.3, birth_overlap=bad)


# (tube patterns, scores, max IoU, {kept: [absorbed]})
NMS_CASES = {
    "off keeps all": (["11110000", "11110000"], [0.9, 0.8], 1.0, {0: [], 1: []}),
    "a duplicate of a better tube is absorbed": (["11110000", "11100000"], [0.9, 0.8], 0.5, {0: [1]}),  # IoU 0.75
    "the better tube keeps whatever the order": (["11100000", "11110000"], [0.8, 0.9], 0.5, {1: [0]}),
    "an overlap at the threshold stays apart": (["11110000", "00111100"], [0.9, 0.8], 0.5, {0: [], 1: []}),
    "a tube only an absorbed tube overlaps stays": (
        ["11110000", "01111000", "00011110"], [0.9, 0.8, 0.7], 0.5, {0: [1], 2: []}),  # 1~0: 0.6; 2~0: 0.14
    "absorbed by the kept tube it overlaps": (
        ["11110000", "00001111", "00111111"], [0.9, 0.8, 0.7], 0.3, {0: [], 1: [2]}),  # 2~0: 0.25, 2~1: 0.67
}


@pytest.mark.parametrize("name", list(NMS_CASES))
def test_group_duplicate_tubes(name: str) -> None:
    patterns, scores, max_iou, expected = NMS_CASES[name]
    _, masks = chunk([0, 1], *patterns)
    assert group_duplicates(masks, scores, max_iou) == expected
