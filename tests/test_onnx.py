"""ONNX export (`s2d export-model`) and the ONNX Runtime backend (`s2d segment --backend onnxruntime`).

A tiny random-init model (both pixel decoders: FPN, and multi-scale deformable attention with ``grid_sample``) is
exported once per module and compared with PyTorch on clips of other lengths and frame sizes than the one it was
traced with (the clip length and the frame size, in multiples of 32, are dynamic; the runtime pads other sizes). Tolerance 1e-4 on logits: float32 kernels of the two runtimes sum in
different orders (measured ≈ 1e-6 on these logits of magnitude ≈ 1–10), so 1e-4 leaves a 100× margin and still
catches a wrong op (those differ by ≥ 1e-2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

from s2d.cli import main
from s2d.errors import InputError, SettingError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from s2d.infer.onnx_backend import ExportSettings, OnnxVideoModel, compare_backends, export_onnx  # noqa: E402
from s2d.model import VideoMask2Former, model_preset  # noqa: E402
from tests.helpers import moving_square  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOL = 1e-4
#: (T, H, W) of the checks: the traced shape, one frame, sizes the runtime pads to multiples of 32, portrait
SHAPES = [(3, 64, 96), (1, 64, 64), (5, 50, 90), (2, 130, 70)]
EXPORT = ExportSettings(size=(64, 96))


def _tiny(decoder: str) -> VideoMask2Former:
    torch.manual_seed(0)
    return VideoMask2Former(model_preset("tiny").replace(pixel_decoder=decoder)).eval()


@pytest.fixture(scope="module", params=["fpn", "msdeform"])
def exported(request, tmp_path_factory: pytest.TempPathFactory):
    model = _tiny(request.param)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / f"tiny_{request.param}.onnx", EXPORT)
    return model, path


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_onnx_outputs_equal_pytorch_at_dynamic_shapes(exported, shape) -> None:
    model, path = exported
    onnx_model = OnnxVideoModel(path, threads=1)
    clip = torch.rand(*shape[:1], 3, *shape[1:], generator=torch.Generator().manual_seed(sum(shape)))
    diff = compare_backends(model, onnx_model, clip)
    assert diff["logits"] < TOL and diff["mask_logits"] < TOL and diff["embeds"] < TOL, diff
    # predict: same interface and post-processing, masks equal after thresholding at 0
    ref = model.predict(clip, score_threshold=0.0)
    got = onnx_model.predict(clip, score_threshold=0.0)
    assert torch.equal(ref["masks"], got["masks"])
    assert torch.allclose(ref["scores"], got["scores"], atol=TOL)
    assert torch.allclose(ref["embeds"], got["embeds"], atol=TOL)


def test_metadata_and_uint8_input(exported) -> None:
    model, path = exported
    onnx_model = OnnxVideoModel(path, threads=1)
    assert onnx_model.metadata["format"] == "s2d.video_mask2former.onnx/1"
    assert json.loads(onnx_model.metadata["model_config"]) == model.config.to_dict()
    clip = torch.randint(0, 256, (2, 3, 48, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    ref, got = model.predict(clip), onnx_model.predict(clip, size=(96, 128))
    assert got["masks"].shape[-2:] == (96, 128)
    assert torch.equal(model.predict(clip, size=(96, 128))["masks"], got["masks"])
    assert torch.equal(ref["masks"], onnx_model.predict(clip)["masks"])


def _video(path: Path, n: int = 7, h: int = 48, w: int = 64) -> Path:
    from s2d.io.video import VideoWriter

    with VideoWriter(path, 10, w, h) as writer:
        for f in moving_square(n, h, w):
            writer.write(f)
    return path


def _pngs(folder: Path) -> List[np.ndarray]:
    from PIL import Image

    return [np.array(Image.open(p)) for p in sorted(folder.glob("*.png"))]


def test_export_model_and_segment_with_onnxruntime_match_pytorch(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    VideoMask2Former("tiny").save_checkpoint(ckpt)
    onnx_path = tmp_path / "tiny.onnx"
    assert main(["export-model", str(ckpt), "--onnx", str(onnx_path), "--check"]) == 0
    err = capsys.readouterr().err
    assert "wrote" in err and err.count("check ") == 2
    video = _video(tmp_path / "v.mp4")
    fast = ["--score-threshold", "0", "--max-side", "64", "--chunk", "4", "--overlap", "1", "--format", "davis,ytvis"]
    # --refine none: the masks are the logits thresholded at 0, which must agree exactly; the default guided
    # refinement filters the probabilities, where float noise may move a pixel at exactly 0.5 (measured: 1 of
    # 21,504 with this random-weight model, whose logits sit near 0 everywhere)
    for refine, max_diff in (("none", 0.0), ("guided", 1e-3)):
        out = {}
        for backend, model in (("torch", ckpt), ("onnxruntime", onnx_path)):
            out[backend] = tmp_path / f"{backend}_{refine}"
            assert main(["segment", str(video), "-o", str(out[backend]), "--model", str(model), "--backend", backend,
                         "--refine", refine, *fast]) == 0
        ref, got = _pngs(out["torch"] / "v" / "davis"), _pngs(out["onnxruntime"] / "v" / "davis")
        assert len(ref) == len(got) == 7 and any(r.any() for r in ref)
        assert np.mean(np.stack(ref) != np.stack(got)) <= max_diff
        scores = [[r["score"] for r in json.loads((d / "v" / "results.json").read_text())] for d in out.values()]
        assert np.allclose(scores[0], scores[1], atol=TOL)


def _run(argv: List[str], capsys) -> tuple:
    rc = main(argv)
    return rc, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_bad_files_and_backend_mismatches_are_one_line_errors(tmp_path: Path, capsys) -> None:
    video = _video(tmp_path / "v.mp4", n=2)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    base = ["segment", str(video), "-o", str(tmp_path / "o"), "--backend", "onnxruntime", "--model"]
    for model, match in ((str(tmp_path / "missing.onnx"), "not found"), (str(bad), "not a loadable ONNX model"),
                         ("default", "export-model")):
        rc, err = _run(base + [model], capsys)
        assert rc == 2 and len(err) == 1 and match in err[0], err
    rc, err = _run(["segment", str(video), "-o", str(tmp_path / "o"), "--model", str(bad)], capsys)
    assert rc == 2 and len(err) == 1 and "--backend onnxruntime" in err[0]
    with pytest.raises(InputError, match="not an s2d video model export"):
        import onnx
        from onnx import TensorProto, helper

        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        other = tmp_path / "other.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), other)
        OnnxVideoModel(other)
    with pytest.raises(SettingError, match="online models"):
        export_onnx(VideoMask2Former(model_preset("tiny").replace(query_propagation=True)), tmp_path / "x.onnx")
    rc, err = _run(["export-model", "default", "--onnx", str(tmp_path / "x.pt")], capsys)
    assert rc == 2 and len(err) == 1 and ".onnx" in err[0]


def test_missing_extra_is_a_one_line_error_naming_it(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    video = _video(tmp_path / "v.mp4", n=2)
    rc, err = _run(["segment", str(video), "-o", str(tmp_path / "o"), "--backend", "onnxruntime",
                    "--model", str(tmp_path / "m.onnx")], capsys)
    assert rc == 2 and len(err) == 1 and "s2d[onnx]" in err[0] and "onnxruntime" in err[0]
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    rc, err = _run(["export-model", "default", "--onnx", str(tmp_path / "m.onnx")], capsys)
    assert rc == 2 and len(err) == 1 and "s2d[onnx]" in err[0]
