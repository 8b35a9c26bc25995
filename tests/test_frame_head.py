"""In-graph crop + resize (edgekd.export.frame_head) against the training preprocessing (Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from edgekd import EdgekdError
from edgekd.export.frame_head import add_frame_head, unsupported_reason
from edgekd.preprocess import Preprocess
from edgekd.runtime.backends import create_backend
from edgekd.runtime.classifier import channel_order_feed

SIZE = (24, 32)  # (h, w) of the model input: not square, so the crop's aspect ratio is exercised


def _pass_through_model(path: Path, size: tuple[int, int] = SIZE, opset: int = 18) -> Path:
    """A model whose input is uint8 frames at `size` and whose output is those frames as float: the head's output."""
    frames = helper.make_tensor_value_info("frames", TensorProto.UINT8, ["batch", *size, 3])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", *size, 3])
    graph = helper.make_graph([helper.make_node("Cast", ["frames"], ["embedding"], to=TensorProto.FLOAT)], "g",
                              [frames], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _frame_model(tmp_path: Path, pp: Preprocess):
    """The pass-through model with the head: frames of any size in, the head's [B, h, w, 3] out."""
    path = _pass_through_model(tmp_path / "m.onnx", pp.size)
    add_frame_head(path, pp)
    return create_backend(path)


def _photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth shading, edges and fine texture, like a camera frame (pure noise is not what cameras see)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width * 200, yy / height * 200, 100 + 80 * np.sin(xx / 7) * np.cos(yy / 11)], -1)
    img[(xx - width / 2) ** 2 + (yy - height / 2) ** 2 < (min(width, height) / 4) ** 2] = (240, 200, 30)
    img += rng.normal(0, 3, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
def test_head_matches_pillow_preprocessing(tmp_path, interpolation, resize_mode):
    pp = Preprocess(size=SIZE, interpolation=interpolation, resize_mode=resize_mode)
    model = _pass_through_model(tmp_path / "m.onnx")
    io = add_frame_head(model, pp)
    assert io["shape"] == ["batch", "height", "width", 3] and io["dtype"] == "uint8"
    backend = create_backend(model)
    assert backend.input_name == "frames"
    # frames up to 5x the model's size each way (1080p -> 224 is 4.8x) whose eval view is whole pixels (frame_head's
    # docstring: a view starting at a fraction of a pixel is shifted, and stronger shrinking drifts further)
    for i, (w, h) in enumerate([(160, 120), (120, 160), (128, 72), (16, 12), (40, 30), (96, 100)]):
        img = _photo_like(w, h, seed=i)
        expected = pp.render(img).astype(int)
        got = backend.run(np.asarray(img)[None])["embedding"][0].astype(int)
        diff = np.abs(got - expected)
        assert diff.max() <= 3, (w, h, diff.max())
        assert diff.mean() < 0.3, (w, h, diff.mean())  # Pillow rounds between its two passes, the graph does not


def test_channel_order_input_reorders_after_resizing(tmp_path):
    backend = _frame_model(tmp_path, Preprocess(size=SIZE))
    rgb = np.asarray(_photo_like(64, 48))[None]
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    out_rgb = backend.run(rgb)["embedding"]
    np.testing.assert_array_equal(backend.run(bgr, {"channel_order": channel_order_feed("bgr")})["embedding"],
                                  out_rgb)
    assert not np.array_equal(backend.run(bgr)["embedding"], out_rgb)  # the default order is RGB
    with pytest.raises(ValueError, match="color"):
        channel_order_feed("rgba")


def test_slivers_of_frames_still_give_a_model_input(tmp_path):
    backend = _frame_model(tmp_path, Preprocess(size=(8, 32)))  # a wide model: a 1-pixel column crops to 1 x 0.25
    for h, w in [(1, 1), (1, 1000), (1000, 1), (3, 2)]:
        frame = np.full((1, h, w, 3), 77, np.uint8)
        np.testing.assert_array_equal(backend.run(frame)["embedding"], np.full((1, 8, 32, 3), 77.0))


def test_a_batch_of_frames_of_one_size(tmp_path):
    backend = _frame_model(tmp_path, Preprocess(size=SIZE))
    frames = np.stack([np.asarray(_photo_like(50, 40, seed=s)) for s in range(3)])
    out = backend.run(frames)["embedding"]
    for i in range(3):
        np.testing.assert_array_equal(out[i], backend.run(frames[i:i + 1])["embedding"][0])


def test_what_cannot_run_in_the_graph_is_refused(tmp_path):
    assert unsupported_reason(Preprocess()) is None
    assert "box" in unsupported_reason(Preprocess(interpolation="box"))
    assert "longest" in unsupported_reason(Preprocess(resize_mode="longest"))
    with pytest.raises(EdgekdError, match="lanczos"):
        add_frame_head(_pass_through_model(tmp_path / "a.onnx"), Preprocess(size=SIZE, interpolation="lanczos"))
    with pytest.raises(EdgekdError, match="opset 17"):
        add_frame_head(_pass_through_model(tmp_path / "b.onnx", opset=17), Preprocess(size=SIZE))
    pixels = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, *SIZE])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3, *SIZE])
    graph = helper.make_graph([helper.make_node("Identity", ["pixels"], ["embedding"])], "g", [pixels], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "c.onnx"))
    with pytest.raises(EdgekdError, match="uint8 'frames' input"):
        add_frame_head(tmp_path / "c.onnx", Preprocess(size=SIZE))
