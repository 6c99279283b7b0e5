"""benchmarks/sweep_segment.py: the cached model gives what the model gives, above any threshold."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from sweep_segment import CachedModel  # noqa: E402


class Fake:
    def __init__(self) -> None:
        self.calls = 0

    def predict(self, clip: torch.Tensor, score_threshold: float = 0.0, **_: object) -> dict:
        self.calls += 1
        scores = torch.tensor([0.9, 0.6, 0.35])
        logits = torch.stack([torch.full((clip.shape[0], 4, 6), v) for v in (2.5, -1.0, 0.75)])
        logits[1, :, :2, :2] = 3.0
        keep = scores >= score_threshold
        return {"scores": scores[keep], "masks": logits[keep] > 0, "mask_logits": logits[keep]}


def test_cached_predictions_equal_the_model_and_run_it_once_per_clip(tmp_path):
    fake = Fake()
    cached = CachedModel(fake, tmp_path / "cache", floor=0.3)
    clip = torch.randint(0, 255, (3, 3, 4, 6), dtype=torch.uint8)
    for threshold in (0.3, 0.5, 0.7, 0.5):
        got, want = cached.predict(clip, score_threshold=threshold), Fake().predict(clip, score_threshold=threshold)
        assert torch.equal(got["scores"], want["scores"])
        assert torch.equal(got["masks"], want["masks"])
        assert torch.allclose(got["mask_logits"], want["mask_logits"])
    assert fake.calls == 1 and cached.hits == 3
    other = torch.zeros_like(clip)
    cached.predict(other, score_threshold=0.5)
    assert fake.calls == 2


def test_a_threshold_under_the_floor_is_refused(tmp_path):
    cached = CachedModel(Fake(), tmp_path, floor=0.5)
    clip = torch.zeros((1, 3, 4, 6), dtype=torch.uint8)
    with pytest.raises(ValueError, match="floor"):
        cached.predict(clip, score_threshold=0.3)
