"""benchmarks/oracle_extras.py: which predicted ids count as lying on the GT object (table-driven)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from oracle_extras import keep_on_gt  # noqa: E402


def rows(*patterns: str) -> List[np.ndarray]:
    """One 1×N label map per pattern (digits are ids)."""
    return [np.array([[int(c) for c in p]], dtype=np.uint8) for p in patterns]


def masks(*patterns: str) -> List[np.ndarray]:
    return [np.array([[c == "1" for c in p]]) for p in patterns]


CASES = {
    "an id on the object stays, one beside it goes": (rows("11022"), masks("11100"), 0.5, [1]),
    "exactly half on the object stays": (rows("1100"), masks("1000"), 0.5, [1]),
    "counted over the whole sequence, not per frame": (rows("1100", "1100"), masks("1100", "0000"), 0.6, []),
    "no ids, nothing kept": (rows("000"), masks("111"), 0.5, []),
}


@pytest.mark.parametrize("name", list(CASES))
def test_keep_on_gt(name: str) -> None:
    pred, gt, on, expected = CASES[name]
    assert keep_on_gt(pred, gt, on) == expected
