"""Which video model ``s2d segment`` runs: the packaged default weights or a checkpoint by path.

The default model ships inside the package (``s2d/weights/default.pt``), so ``s2d segment video.mp4``
works after a plain ``pip install`` with no download (there is no network at run time, SPEC §2).
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import Any, Union

from s2d.device import AUTO, resolve_device
from s2d.errors import SettingError

__all__ = ["DEFAULT_MODEL", "default_model_path", "load_model", "resolve_device"]

#: the ``--model`` value that selects the packaged weights
DEFAULT_MODEL = "default"
PathLike = Union[str, "os.PathLike[str]"]


def default_model_path(online: bool = False) -> Path:
    """Where the packaged default weights live: ``default.pt``, or with ``online`` the online model
    ``online.pt`` (distilled from ``default.pt`` by ``s2d train --stages online``). The file may be missing in a
    development checkout."""
    return Path(str(importlib.resources.files("s2d") / "weights" / ("online.pt" if online else "default.pt")))


def load_model(spec: PathLike = DEFAULT_MODEL, device: Any = AUTO, *, online: bool = False,
               backend: str = "torch") -> Any:
    """The :class:`~s2d.model.VideoMask2Former` named by ``spec``, in eval mode on ``device``.

    Args:
        spec: ``"default"`` for the packaged weights, else the path of a checkpoint written by ``s2d train``
            (``<run>/<stage>/model.pt``) or :meth:`VideoMask2Former.save_checkpoint`.
        device: torch device or its name (``"auto"``: CUDA when available, else CPU; :mod:`s2d.device`).
        online: with ``spec="default"``, the packaged online model (``s2d segment --online``) where it is
            installed, else the default model (which also runs frame by frame).
        backend: ``"onnxruntime"``: ``spec`` is a ``.onnx`` file written by ``s2d export-model``, run by an
            :class:`~s2d.infer.onnx_backend.OnnxVideoModel` (same ``predict``); ``"torch"`` refuses ``.onnx`` files.

    Raises:
        SettingError: the default weights are not installed, or the device is not available.
        InputError: the checkpoint is missing, unreadable or does not match its stored config.
    """
    from s2d.model import VideoMask2Former

    if backend == "onnxruntime" or os.fspath(spec).lower().endswith(".onnx"):
        return _load_onnx(spec, device, backend)
    dev = resolve_device(device)
    if os.fspath(spec) == DEFAULT_MODEL:
        path = default_model_path(online)
        if online and not path.is_file():
            path = default_model_path()
        if not path.is_file():
            raise SettingError(f"the default model is not installed ({path} is missing); "
                               f"pass --model PATH with a checkpoint from `s2d train`")
    else:
        path = Path(os.fspath(spec))
    return VideoMask2Former.from_checkpoint(path, device=dev).eval()


def _load_onnx(spec: PathLike, device: Any, backend: str) -> Any:
    """The ONNX Runtime model of ``--backend onnxruntime``: ``spec`` must name the exported ``.onnx`` file."""
    name = os.fspath(spec)
    if backend != "onnxruntime":
        raise SettingError(f"{name} is an ONNX model: run it with --backend onnxruntime")
    if not name.lower().endswith(".onnx"):
        raise SettingError(f"--backend onnxruntime runs a .onnx file written by `s2d export-model {name} --onnx "
                           f"model.onnx`; pass it with --model model.onnx")
    from s2d.infer.onnx_backend import OnnxVideoModel

    return OnnxVideoModel(name, device=str(device))
