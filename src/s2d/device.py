"""The one device policy of every command and API: ``auto`` (the default) is CUDA when a GPU is there, else the CPU.

``--device`` of ``s2d masks``, ``discover``, ``train`` and ``segment`` and the ``device`` arguments of the Python
API all go through :func:`resolve_device`: a name torch does not know, or a CUDA device on a machine without
one, is a one-line :class:`~s2d.errors.SettingError`. Nothing here imports torch until it is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from s2d.errors import SettingError

if TYPE_CHECKING:
    import torch

__all__ = ["AUTO", "DEVICE_HELP", "resolve_device"]

AUTO = "auto"
#: the ``--device`` help text of every command
DEVICE_HELP = "torch device: auto (default: cuda if available, else cpu), cpu, cuda or cuda:N"


def resolve_device(device: Any = AUTO) -> "torch.device":
    """``torch.device`` for ``device`` (``"auto"``/``None``, a name such as ``"cuda:1"``, or a device)."""
    import torch

    if device is None or (isinstance(device, str) and device.strip().lower() == AUTO):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise SettingError(f"--device: not a torch device: {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SettingError(f"--device {device}: no CUDA device is available (use auto or cpu)")
    return dev
