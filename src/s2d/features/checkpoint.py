"""Reading weight files: one-line errors for missing, unreadable or wrongly laid out checkpoints.

Every loader in :mod:`s2d.features` goes through :func:`read_state_dict` (which reads the file and
unwraps the common training wrappers) and :func:`check_layout` (which compares the keys and shapes
with the layout the architecture expects). Both raise :class:`s2d.errors.InputError` naming the file
and the problem in one line, so the CLI can report ``error: <file>: <problem>`` without a traceback.

Accepted wrappers (tried in this order; the first that applies wins):

* a plain state dict ``{name: tensor}`` — the official ``*_pretrain.pth`` files of DINO and DINOv2;
* ``{"teacher": state_dict, ...}`` — full DINO / DINOv2 training checkpoints
  (``dino_*_full_checkpoint.pth``: the teacher is what DINO's own evaluation code loads);
* ``{"model": ...}``, ``{"state_dict": ...}``, ``{"student": ...}``, ``{"module": ...}``.

Then the key prefixes ``module.`` (DistributedDataParallel) and ``backbone.`` (DINO's multi-crop
wrapper) are stripped; when some keys carry ``backbone.``, only those are kept (the projection heads
``head.*`` of a training checkpoint are dropped). Non-tensor entries are ignored.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Dict, Iterable, Sequence, Tuple

import torch

from s2d.errors import InputError, PathLike

__all__ = ["read_state_dict", "check_layout", "load_into", "format_keys", "WRAPPER_KEYS"]

#: Keys under which training checkpoints keep the model's state dict (first match wins).
WRAPPER_KEYS: Tuple[str, ...] = ("teacher", "model", "state_dict", "student", "module")

_PREFIXES: Tuple[str, ...] = ("module.", "backbone.")


def format_keys(keys: Sequence[str], first: int = 5) -> str:
    """``[a, b, c, ...] (N in all)`` — a short, one-line list of (possibly many) keys."""
    shown = ", ".join(keys[:first])
    more = ", ..." if len(keys) > first else ""
    return f"[{shown}{more}] ({len(keys)} in all)"


def _torch_load(path: Path) -> object:
    """``torch.load(weights_only=True)``, also allowing ``argparse.Namespace`` (DINO stores its ``args``)."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch < 2.5
        return torch.load(path, map_location="cpu", weights_only=True)
    with safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def _strip_prefixes(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def read_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file and return its (unwrapped, prefix-stripped) state dict on the CPU.

    Raises :class:`InputError` for a missing file (``"no such file"``), a folder, a file ``torch.load``
    cannot read (``"cannot read checkpoint: ..."``; only tensors and plain containers are accepted,
    never arbitrary pickled objects), or a file that holds no state dict.
    """
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.exists():
        raise InputError(path, "no such file")
    if p.is_dir():
        raise InputError(path, "is a folder, not a checkpoint file")
    try:
        with open(p, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise InputError(path, f"cannot read checkpoint: {exc.strerror or exc}") from None
    if not magic:
        raise InputError(path, "cannot read checkpoint: the file is empty")
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":  # torch.save writes a zip (or, legacy, a pickle)
        raise InputError(path, "cannot read checkpoint: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        obj = _torch_load(p)
    except Exception as exc:  # torch raises many types for corrupt files (pickle, zip, EOF, ...)
        msg = " ".join(str(exc).split())
        if "Weights only load failed" in msg or "weights_only" in msg:
            problem = ("cannot read checkpoint: it holds pickled Python objects, not only tensors "
                       "(save model.state_dict() instead)")
        else:
            if len(msg) > 120 and ". " in msg:
                msg = msg.split(". ")[0]  # torch's messages go on with generic advice
            if len(msg) > 160:
                msg = msg[:157] + "..."
            problem = f"cannot read checkpoint (truncated or corrupt?): {msg or type(exc).__name__}"
        raise InputError(path, problem) from None
    if not isinstance(obj, Mapping):
        raise InputError(path, f"not a state dict (the file holds a {type(obj).__name__})")
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        found = ", ".join(sorted(map(str, obj.keys()))[:5])
        raise InputError(path, f"not a state dict: no tensors found (top-level keys: {found or 'none'})")
    return _strip_prefixes(sd)


def check_layout(
    path: PathLike,
    what: str,
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, Tuple[int, ...]],
    *,
    optional: Iterable[str] = (),
    ignored: Iterable[str] = (),
) -> None:
    """Raise :class:`InputError` unless ``state`` has exactly the ``expected`` keys and shapes.

    ``optional`` keys may be absent (e.g. BatchNorm ``num_batches_tracked``); ``ignored`` keys may be
    present and are not used (e.g. DINOv2's ``mask_token``). The message names the file, says what the
    file is not (``what``, e.g. ``"dino_vits16"``) and lists the first few missing and unexpected keys,
    or the first few shape mismatches, with their counts — on one line.
    """
    optional, ignored = set(optional), set(ignored)
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected and k not in ignored]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {format_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {format_keys(unexpected)}")
        raise InputError(path, f"not a {what} checkpoint: " + "; ".join(parts))
    wrong = [
        f"{k} {tuple(state[k].shape)} in file, {tuple(shape)} expected"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != tuple(shape)
    ]
    if wrong:
        more = ", ..." if len(wrong) > 3 else ""
        raise InputError(
            path, f"not a {what} checkpoint: shape mismatch: {'; '.join(wrong[:3])}{more} ({len(wrong)} in all)"
        )
    bad = [k for k, v in state.items() if k in expected and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InputError(path, f"corrupt {what} checkpoint: non-finite values in {format_keys(bad)}")


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``model`` strictly, casting to the model's dtypes.

    Keys of the model that ``state`` lacks (only those :func:`check_layout` allowed as optional, such
    as ``num_batches_tracked``) are set to zero.
    """
    own = model.state_dict()
    full = {k: (state[k] if k in state else torch.zeros_like(ref)).to(dtype=ref.dtype) for k, ref in own.items()}
    model.load_state_dict(full, strict=True)
