"""Identity measures per GT object (s2d.eval.identity), table-driven on tiny label maps."""

from __future__ import annotations

import numpy as np
import pytest

from s2d.eval.identity import identity_stats, mean_identity

# two GT objects side by side on a 4×8 frame: object 1 = left half, object 2 = right half
GT = np.zeros((4, 8), np.uint8)
GT[:, :4], GT[:, 4:] = 1, 2


def _pred(left: int, right: int) -> np.ndarray:
    p = np.zeros((4, 8), np.uint8)
    p[:, :4], p[:, 4:] = left, right
    return p


@pytest.mark.parametrize("preds, want", [
    # one id per object, always: ideal
    ([_pred(1, 2)] * 3, [(1, 0, 0.0, 1.0), (1, 0, 0.0, 1.0)]),
    # one id spans both objects: each is covered by it, every frame merged
    ([_pred(5, 5)] * 3, [(1, 0, 1.0, 1.0), (1, 0, 1.0, 1.0)]),
    # object 1 changes id on the middle frame and back: 2 fragments, 2 switches
    ([_pred(1, 2), _pred(3, 2), _pred(1, 2)], [(2, 2, 0.0, 1.0), (1, 0, 0.0, 1.0)]),
    # object 2 missed on one frame
    ([_pred(1, 2), _pred(1, 0), None], [(1, 0, 0.0, 2 / 3), (1, 0, 0.0, 1 / 3)]),
])
def test_identity_table(preds, want):
    got = identity_stats([(GT, p) for p in preds])
    flat = [v for o in got for v in (o.fragments, o.switches, o.merged, o.covered)]
    assert flat == pytest.approx([v for w in want for v in w])


def test_cover_threshold_and_void():
    p = np.zeros((4, 8), np.uint8)
    p[:, :1] = 7                      # holds 1/4 of object 1
    gt = GT.copy()
    gt[0, :] = 255                    # void row is ignored
    held = identity_stats([(gt, p)], cover=0.25)[0]
    assert held.covered == 1.0 and held.dominant == [7]
    assert identity_stats([(gt, p)], cover=0.5)[0].covered == 0.0
    assert [o.object for o in identity_stats([(gt, p)])] == [1, 2]


def test_mean_and_errors():
    m = mean_identity(identity_stats([(GT, _pred(1, 1))]))
    assert m["objects"] == 2 and m["merged"] == 1.0 and m["fragments"] == 1.0
    assert mean_identity([])["objects"] == 0
    with pytest.raises(ValueError, match="shape"):
        identity_stats([(GT, np.zeros((2, 2), np.uint8))])
    with pytest.raises(ValueError, match="cover"):
        identity_stats([], cover=0.0)
