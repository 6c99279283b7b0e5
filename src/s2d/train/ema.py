"""EMA teacher (PAPER.md §3): ``θ_T ← m·θ_T + (1−m)·θ_S`` after every optimizer step, m = 0.999.

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

    def __init__(self, student: nn.Module, momentum: float = 0.999) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self.model = copy.deepcopy(unwrap(student))
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        m = self.momentum
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
