"""ONNX export of the video model (``s2d export-model``) and the ONNX Runtime backend of ``s2d segment``.

The exported graph is :meth:`VideoMask2Former.forward` on one clip in eval mode, without auxiliary outputs::

    clip         T×3×H×W float32 RGB in [0, 1]   T dynamic; H, W dynamic multiples of 32 (size_divisibility)
    pred_logits  1×Q×2   objectness logits [object, no-object]
    pred_masks   1×Q×T×H/4×W/4 mask logits
    pred_embeds  1×Q×C   query embeddings (before unit-length normalisation)

**Why multiples of 32.** Every op exports with symbolic shapes (the deformable attention's ``grid_sample``
included), but a frame size that is not a multiple of the backbone's stride makes PyTorch's in-model padding and
TF-"SAME" convolution padding depend on the size's remainder, which the exporter resolves by fixing the size. So
the graph takes frames already padded: :class:`OnnxVideoModel` pads each clip at the right and bottom with the
backbone's mean colour (zero after the graph's normalisation, exactly the zeros PyTorch pads with after
normalising) and crops the masks back to ``ceil(H/4)×ceil(W/4)``. :class:`OnnxVideoModel` runs such a file with
ONNX Runtime and turns the outputs into :meth:`VideoMask2Former.predict`'s result with the same post-processing code
(:func:`s2d.model.video_mask2former.predictions`), so :class:`~s2d.infer.predictor.VideoPredictor` runs it
unchanged. It has no ``encode``: the predictor then sends whole chunks (overlap frames are encoded again).

``onnx``, ``onnxscript`` (the exporter) and ``onnxruntime`` are the optional extra ``s2d[onnx]``; they are imported
only when a function here needs them. Example::

    from s2d.infer.onnx_backend import OnnxVideoModel, export_onnx
    from s2d.infer.weights import load_model
    export_onnx(load_model("default", "cpu"), "default.onnx")
    model = OnnxVideoModel("default.onnx", threads=2)
    res = model.predict(clip_uint8_T3HW, score_threshold=0.5)     # as VideoMask2Former.predict
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

from s2d.errors import InputError, SettingError

if TYPE_CHECKING:  # torch is imported where it is used: the CLI's parser imports this module
    import torch

__all__ = ["ONNX_FORMAT", "OUTPUT_NAMES", "ExportSettings", "OnnxVideoModel", "export_onnx", "compare_backends",
           "require_extra"]

PathLike = Union[str, "os.PathLike[str]"]
#: ``metadata_props["format"]`` of a file written by :func:`export_onnx`
ONNX_FORMAT = "s2d.video_mask2former.onnx/1"
INPUT_NAME = "clip"
OUTPUT_NAMES = ("pred_logits", "pred_masks", "pred_embeds")
EXTRA_HINT = "pip install 's2d[onnx]'"


@dataclass(frozen=True)
class ExportSettings:
    """How :func:`export_onnx` traces the model.

    Attributes:
        opset: ONNX opset of the graph (≥ 17: ``LayerNormalization`` and ``GridSample`` are native ops).
        frames: clip length T of the example input the exporter traces with (> 1, so that T stays dynamic).
        size: ``(H, W)`` of the example input, multiples of the model's ``size_divisibility`` (32) that differ from
            each other and from it, so that both stay dynamic.
        max_frames, max_side: upper bounds the dynamic dimensions are declared with.
    """

    opset: int = 18
    frames: int = 3
    size: Tuple[int, int] = (224, 352)
    max_frames: int = 256
    max_side: int = 4096

    def validate(self, divisibility: int = 32) -> "ExportSettings":
        if not 17 <= self.opset <= 23:
            raise SettingError(f"opset must be in 17..23, got {self.opset}")
        h, w = self.size
        if self.frames < 2 or h % divisibility or w % divisibility or len({h, w, divisibility}) < 3:
            raise SettingError(f"the example clip needs ≥ 2 frames and two different sides that are multiples of "
                               f"{divisibility} (and not {divisibility}) to keep its shape dynamic")
        return self


def require_extra(*modules: str) -> List[Any]:
    """Import optional dependencies of the extra ``s2d[onnx]``, or raise a one-line :class:`SettingError`
    naming the extra and the missing module."""
    import importlib

    found = []
    for module in modules:
        try:
            found.append(importlib.import_module(module))
        except ImportError:
            raise SettingError(f"ONNX export and runtime need the optional extra s2d[onnx] ({module} is not "
                               f"installed): {EXTRA_HINT}") from None
    return found


# ----------------------------------------------------------------------------------------------- export


def _clip_graph(model: Any) -> Any:
    """What the ONNX file holds: the model's forward pass on one clip, eval mode, no auxiliary outputs."""
    from torch import nn

    class ClipGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, clip: "torch.Tensor") -> Tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
            out = self.model(clip[None], aux=False)
            return out["pred_logits"], out["pred_masks"], out["pred_embeds"]

    return ClipGraph().eval()


def _static_same_padding(model: Any) -> Any:
    """Replace timm's TF-"SAME" convolutions (``Conv2dSame``: the padding is computed from the input size on every
    call) by a fixed padding and a plain convolution, in place.

    On an input whose size is a multiple of the stride, SAME padding is ``max((k − 1)·d + 1 − s, 0)`` (split as
    timm splits it, the odd pixel after), whatever the size. The graph's frames are multiples of 32, so every
    strided convolution of the backbones (total stride ≤ 32) sees such inputs, and the result equals timm's;
    with the size-dependent form the exporter fixes the frame size (and spends minutes on its symbolic shapes).
    """
    import torch.nn.functional as F
    from torch import nn

    class StaticSameConv2d(nn.Conv2d):
        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            pads = []
            for k, s, d in reversed(list(zip(self.kernel_size, self.stride, self.dilation))):  # (w, h) for F.pad
                total = max((k - 1) * d + 1 - s, 0)
                pads += [total // 2, total - total // 2]
            return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    for module in model.modules():
        if type(module).__name__ == "Conv2dSame" and isinstance(module, nn.Conv2d):
            module.__class__ = StaticSameConv2d
    return model


def export_onnx(model: Any, path: PathLike, settings: Optional[ExportSettings] = None) -> Path:
    """Write ``model`` (a :class:`~s2d.model.VideoMask2Former`) to ``path`` as ONNX, with T, H and W dynamic.

    Uses PyTorch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, which needs ``onnxscript``); the file
    carries the model config and the graph's contract in its metadata. Online models (``query_propagation``)
    are refused: their decoder loops over the frames with state from the previous chunk.
    """
    import torch

    require_extra("onnx", "onnxscript")
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "to_dict"):
        raise SettingError("export_onnx takes a VideoMask2Former")
    div = int(cfg.size_divisibility)
    st = (settings or ExportSettings()).validate(div)
    if getattr(cfg, "query_propagation", False):
        raise SettingError("online models (query_propagation) cannot be exported to ONNX yet; export the "
                           "offline model (it also runs frame by frame with s2d segment --online)")
    graph = _clip_graph(_static_same_padding(copy.deepcopy(model).to("cpu")))
    example = torch.rand(st.frames, 3, *st.size, generator=torch.Generator().manual_seed(0))
    dims = {0: torch.export.Dim("frames", min=1, max=st.max_frames),
            2: div * torch.export.Dim("height_blocks", min=1, max=st.max_side // div),
            3: div * torch.export.Dim("width_blocks", min=1, max=st.max_side // div)}
    path = Path(path)
    from s2d.io.atomic import atomic_path

    import logging

    quiet = logging.getLogger("onnxscript")  # its optimizer logs a warning per op it does not fold
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    with torch.no_grad(), atomic_path(path, fsync=True) as tmp:
        program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=st.opset, input_names=[INPUT_NAME],
                                    output_names=list(OUTPUT_NAMES), dynamic_shapes={"clip": dims}, verbose=False)
        if program is None:  # pragma: no cover - the dynamo exporter returns its program
            raise RuntimeError("torch.onnx.export returned no program")
        program.optimize()
        program.model.metadata_props.update(_metadata(model, st))
        program.save(str(tmp))
    quiet.setLevel(level)
    return path


def _metadata(model: Any, st: ExportSettings) -> Dict[str, str]:
    import torch

    mean = [float(v) for v in model.backbone.pixel_mean.flatten()]
    return {"format": ONNX_FORMAT, "model_config": json.dumps(model.config.to_dict()), "input": INPUT_NAME,
            "outputs": ",".join(OUTPUT_NAMES), "dynamic": "frames,height,width",
            "size_divisibility": str(model.config.size_divisibility), "pad_value": json.dumps(mean),
            "opset": str(st.opset), "torch": torch.__version__}


# ---------------------------------------------------------------------------------------------- runtime


class OnnxVideoModel:
    """An exported video model run by ONNX Runtime, with :meth:`VideoMask2Former.predict`'s interface.

    Args:
        path: a file written by :func:`export_onnx` (``s2d export-model``).
        device: ``"cpu"``, ``"cuda"``/``"cuda:N"`` (ONNX Runtime's CUDA provider, when installed) or ``"auto"``.
        threads: intra-op threads (default: ``torch.get_num_threads()``, what the PyTorch backend uses).

    Raises :class:`SettingError` when onnxruntime is not installed and :class:`InputError` when the file is
    missing, is not ONNX, or is not an s2d export.
    """

    config = None  # no ModelConfig: the predictor treats it as an offline model
    training = False

    def __init__(self, path: PathLike, device: str = "cpu", threads: Optional[int] = None) -> None:
        import torch

        (ort,) = require_extra("onnxruntime")
        self.path = Path(os.fspath(path))
        if not self.path.is_file():
            raise InputError(self.path, "ONNX model file not found")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=_providers(ort, device))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
            raise InputError(self.path, f"not a loadable ONNX model ({type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        names = [o.name for o in self.session.get_outputs()]
        if self.metadata.get("format") != ONNX_FORMAT or names != list(OUTPUT_NAMES):
            raise InputError(self.path, f"not an s2d video model export (expected format {ONNX_FORMAT} and outputs "
                                        f"{', '.join(OUTPUT_NAMES)}; write it with s2d export-model)")
        self.divisibility = int(self.metadata["size_divisibility"])
        self.pad_value = torch.tensor(json.loads(self.metadata["pad_value"]), dtype=torch.float32).view(3, 1, 1)

    def eval(self) -> "OnnxVideoModel":
        return self

    def train(self, mode: bool = True) -> "OnnxVideoModel":
        return self

    def forward(self, clip: "torch.Tensor") -> Dict[str, "torch.Tensor"]:
        """The raw outputs for one clip ``T×3×H×W`` (uint8, or float in [0, 1]) as CPU tensors, masks
        ``1×Q×T×ceil(H/4)×ceil(W/4)`` (the clip is padded to what the graph takes and the masks cropped back)."""
        import torch

        x = clip.cpu().float().div(255.0) if clip.dtype == torch.uint8 else clip.cpu().float()
        t, _, h, w = x.shape
        div = self.divisibility
        ph, pw = h + (-h) % div, w + (-w) % div
        if (ph, pw) != (h, w):  # pad with the mean colour: zero after normalisation, as PyTorch pads
            padded = self.pad_value.expand(3, ph, pw).repeat(t, 1, 1, 1)
            padded[..., :h, :w] = x
            x = padded
        outs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.contiguous().numpy()})
        res = {k: torch.from_numpy(v) for k, v in zip(OUTPUT_NAMES, outs)}
        res["pred_masks"] = res["pred_masks"][..., :-(-h // 4), :-(-w // 4)]
        return res

    __call__ = forward

    def predict(self, clip: "torch.Tensor", normalized: bool = False, size: Optional[Sequence[int]] = None,
                score_threshold: float = 0.0, top_k: Optional[int] = None, encoded: Any = None,
                prev_queries: Any = None) -> Dict[str, "torch.Tensor"]:
        """As :meth:`VideoMask2Former.predict` (same post-processing). The graph normalises its input, so
        ``normalized`` must be false; ``encoded`` and ``prev_queries`` are not supported (no ``encode``, no
        online model)."""
        import torch

        from s2d.model.video_mask2former import predictions

        if normalized or encoded is not None or prev_queries is not None:
            raise ValueError("OnnxVideoModel.predict takes RGB clips only (no normalized/encoded/prev_queries)")
        if clip.ndim == 5:
            if clip.shape[0] != 1:
                raise ValueError("predict takes one clip; loop over the batch")
            clip = clip[0]
        h, w = int(clip.shape[-2]), int(clip.shape[-1])
        out_size = (h, w) if size is None else (int(size[0]), int(size[1]))
        with torch.no_grad():
            return predictions(self.forward(clip), (h, w), out_size, score_threshold, top_k)


def _providers(ort: Any, device: str) -> List[str]:
    """ONNX Runtime's execution providers for a device name: CUDA for ``cuda``/``auto`` where it is built in."""
    available = ort.get_available_providers()
    dev = str(device).lower()
    if dev.startswith("cuda") and "CUDAExecutionProvider" not in available:
        raise SettingError("device cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
    if (dev.startswith("cuda") or dev == "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


# ------------------------------------------------------------------------------------------- comparison


def compare_backends(model: Any, onnx_model: OnnxVideoModel, clip: "torch.Tensor") -> Dict[str, float]:
    """Raw outputs of PyTorch and ONNX Runtime on one clip (``T×3×H×W``, uint8 or float in [0, 1]).

    Returns the max abs difference of the objectness logits, mask logits and embeddings, and the fraction of
    mask-logit values whose sign (the mask at threshold 0) differs.
    """
    import torch

    x = clip.float().div(255.0) if clip.dtype == torch.uint8 else clip.float()
    with torch.no_grad():
        ref = model.eval()(x[None].to(model.device), aux=False)
    got = onnx_model.forward(x)
    diff = {k: float((ref[k].float().cpu() - got[k]).abs().max()) for k in OUTPUT_NAMES}
    flips = float(((ref["pred_masks"].cpu() > 0) != (got["pred_masks"] > 0)).float().mean())
    return {"logits": diff["pred_logits"], "mask_logits": diff["pred_masks"], "embeds": diff["pred_embeds"],
            "mask_flip_fraction": flips}
