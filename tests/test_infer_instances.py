"""Space-time splitting of mask tubes into separate objects (s2d.infer.instances), on tiny tubes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2d.infer.instances import split_tubes, tube_parts

L, H, W = 4, 24, 40


def _tube(*boxes, frames=range(L)):
    m = np.zeros((L, H, W), bool)
    for t in frames:
        for y0, y1, x0, x1 in boxes:
            m[t, y0:y1, x0 + t:x1 + t] = True  # every box moves right by 1 px per frame
    return m


@pytest.mark.parametrize("tube, parts", [
    (_tube((2, 10, 2, 10)), 1),                          # one moving object
    (_tube((2, 10, 2, 10), (14, 22, 25, 33)), 2),        # two objects far apart on every frame
    (_tube((2, 10, 2, 10), (2, 10, 11, 19)), 1),         # 1 px apart: within the gap, one part
    (_tube((2, 10, 2, 10), (14, 15, 30, 31)), 1),        # a 1-px speck stays with the object
])
def test_split_counts(tube, parts):
    m = torch.from_numpy(tube[None])
    out_m, out_s, out_l, src = split_tubes(m, torch.tensor([0.9]), torch.where(m, 3.0, -3.0))
    assert out_m.shape[0] == parts and src.tolist() == [0] * parts
    assert torch.equal(out_m.any(0), m[0])                # the parts cover the tube exactly, once
    assert int(out_m.sum()) == int(m.sum())
    assert torch.allclose(out_s, torch.full((parts,), 0.9))
    for i in range(parts):                                # each part's logits are positive on it only
        assert torch.equal(out_l[i] > 0, out_m[i])


def test_short_lived_part_joins_the_main_part():
    a = _tube((2, 10, 2, 10))
    b = _tube((14, 22, 25, 33), frames=[0])              # present on 1 of 4 frames
    m = torch.from_numpy((a | b)[None])
    out_m, *_ = split_tubes(m, torch.tensor([0.5]))
    assert out_m.shape[0] == 1


def test_parts_labels_and_tubes_keep_their_order():
    lab = tube_parts(_tube((2, 10, 2, 10), (14, 22, 25, 33)))
    assert lab.dtype == np.int32 and set(np.unique(lab)) == {0, 1, 2}
    one = torch.from_numpy(_tube((2, 10, 2, 10))[None])
    two = torch.from_numpy(_tube((2, 10, 2, 10), (14, 22, 25, 33))[None])
    out_m, out_s, out_l, src = split_tubes(torch.cat([two, one]), torch.tensor([0.8, 0.7]))
    assert src.tolist() == [0, 0, 1] and out_l is None and out_s.tolist() == pytest.approx([0.8, 0.8, 0.7])
    empty = split_tubes(torch.zeros(0, L, H, W, dtype=torch.bool), torch.zeros(0))
    assert empty[0].shape[0] == 0
