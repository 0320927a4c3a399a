"""What ``Decoder.load`` opens, as documented: checkpoints (.pth, .safetensors) on eager torch, an
.onnx graph's own weights on torch (``backend="torch"``, with its checkpoint), and one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segdeploy import Decoder
from segdeploy.errors import BadInputError
from segdeploy.registry import load_decoder


def _prompt(rng):
    embedding = (0.5 * rng.standard_normal((1, 256, 64, 64))).astype(np.float32)
    return embedding, dict(point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]), orig_size=(300, 400))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Seed-3 random weights saved as .pth and .safetensors, and the decoder they hold."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("ckpt")
    decoder, _ = load_decoder("sam_vit_b", None, 3)
    state = {k: v.contiguous() for k, v in decoder.state_dict().items()}
    torch.save(state, folder / "w.pth")
    save_file(state, str(folder / "w.safetensors"))
    return folder, decoder


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoints_load_on_eager_torch(checkpoints, suffix, rng):
    folder, decoder = checkpoints
    embedding, prompt = _prompt(rng)
    with Decoder.load(folder / f"w{suffix}") as loaded, Decoder.load(None, seed=3) as same, Decoder.load(None, seed=4) as other:
        assert loaded.backend == "torch" and loaded.metadata["weights"] == "checkpoint"
        got = loaded.predict(embedding, **prompt)
        assert np.array_equal(got.low_res_logits, same.predict(embedding, **prompt).low_res_logits)
        assert not np.allclose(got.low_res_logits, other.predict(embedding, **prompt).low_res_logits)


def test_torch_backend_runs_an_onnx_graphs_checkpoint(checkpoints, tmp_path, rng):
    from segdeploy.export import ExportOptions, export_onnx

    folder, _ = checkpoints
    graph = export_onnx(ExportOptions(checkpoint=folder / "w.pth", out=tmp_path / "g.onnx")).path
    embedding, prompt = _prompt(rng)
    with Decoder.load(graph, backend="torch", checkpoint=folder / "w.pth") as eager, Decoder.load(graph) as ort:
        assert eager.backend == "torch" and ort.backend == "onnxruntime"
        a, b = eager.predict(embedding, **prompt), ort.predict(embedding, **prompt)
        assert np.abs(a.low_res_logits - b.low_res_logits).max() <= 1e-3
    with pytest.raises(BadInputError, match="exported from a checkpoint .*pass it with"):
        Decoder.load(graph, backend="torch")  # exported from a checkpoint: which one must be given


@pytest.mark.parametrize("source,kwargs,message", [
    (None, {"backend": "onnxruntime"}, "random weights"),
    ("missing.onnx", {}, "file not found"),
    ("w.txt", {}, "Decoder.load takes"),
    (None, {"backend": "cuda"}, "backend"),
    (None, {"variant": "sam3"}, "unknown variant"),
])
def test_refusals_are_one_line(source, kwargs, message, tmp_path):
    if source == "w.txt":
        (tmp_path / source).write_text("x")
    with pytest.raises(BadInputError) as error:
        Decoder.load(None if source is None else tmp_path / source, **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_checkpoint_with_another_backend_is_refused(checkpoints):
    folder, _ = checkpoints
    with pytest.raises(BadInputError, match="eager torch"):
        Decoder.load(folder / "w.safetensors", backend="onnxruntime")
