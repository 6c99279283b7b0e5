"""EMA teacher (PAPER.md §3): ``θ_T ← m·θ_T + (1−m)·θ_S`` after every optimizer step, m = 0.999.

Why a warm-up: with m = 0.999 the teacher remembers its initialisation for ~1,000 steps (after 600 steps it is still
0.999^600 = 55 % the starting weights). That is harmless over the reference's 32k iterations but ruins a short CPU
schedule, whose final model *is* the teacher. ``warmup=True`` uses ``m_t = min(m, (1 + t) / (10 + t))`` at update
``t`` (the usual EMA warm-up, as in timm's ``ModelEmaV2/V3``), so the teacher follows the student early and settles
at ``m`` later.

Parameters are averaged; buffers (BatchNorm statistics — frozen in our backbone anyway) are copied from the
student, a superset of the reference (which zips ``parameters()`` only). The teacher never gets gradients.
"""

from __future__ import annotations

import copy
from typing import Any, Dict

import torch
from torch import nn

__all__ = ["EMATeacher", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP / DataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


class EMATeacher:
    """Holds ``self.model``, a frozen deep copy of the student, updated by :meth:`update`."""

    def __init__(self, student: nn.Module, momentum: float = 0.999, warmup: bool = False) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self.warmup = bool(warmup)
        self.model = copy.deepcopy(unwrap(student))
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    @torch.no_grad()
    def momentum_at(self, step: int) -> float:
        """The momentum used by the update after ``step`` earlier updates."""
        return min(self.momentum, (1.0 + step) / (10.0 + step)) if self.warmup else self.momentum

    def update(self, student: nn.Module, step: int = 0) -> None:
        """One EMA step; ``step`` = number of earlier updates (only used with ``warmup``)."""
        m = self.momentum_at(step)
        src = unwrap(student)
        t_params = dict(self.model.named_parameters())
        for name, p in src.named_parameters():
            t = t_params[name]
            t.mul_(m).add_(p.detach().to(t.dtype), alpha=1.0 - m)
        t_bufs = dict(self.model.named_buffers())
        for name, b in src.named_buffers():
            t_bufs[name].copy_(b)

    def state_dict(self) -> Dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state)
