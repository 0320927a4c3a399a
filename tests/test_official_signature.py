"""`export --signature official`: a drop-in for clients of segment-anything's official ONNX export,
equal to SamOnnxModel run eagerly at every image size; and `verify` on graphs other tools exported."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from oracle import official_onnx_model
from test_verify import perturb_one_weight
from typer.testing import CliRunner

from segdeploy.families.sam1.baseline import export_official
from segdeploy.cli import app
from segdeploy.compare import binarized_iou
from segdeploy.contract import TOLERANCES, MaskOutput, Signature
from segdeploy.families.sam1.contract import OFFICIAL_INPUTS
from segdeploy.export import ExportOptions, export_onnx
from segdeploy.graph_io import value_specs
from segdeploy.families.sam1.rules import to_model_frame
from segdeploy.families.sam1.weights import load_decoder

runner = CliRunner()
NOTEBOOK_SIZE = (1200, 1800)  # the official ONNX example's truck.jpg
SIZES = [NOTEBOOK_SIZE, (480, 640), (1500, 1000), (17, 23), (1024, 1024)]


@pytest.fixture(scope="module")
def official_graphs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("official-signature")
    return {
        output: export_onnx(ExportOptions(out=folder / f"{output.value}.onnx", mask_output=output, signature=Signature.OFFICIAL)).path
        for output in (MaskOutput.ALL, MaskOutput.BEST)
    }


def client_feeds(rng: np.random.Generator, size: tuple[int, int]) -> list[dict[str, np.ndarray]]:
    """What the official example's client code sends: its click and its box + negative click (in
    the notebook's pixel frame, scaled to this size), random clicks, a box alone, and a mask input."""
    height, width = size
    scale = np.array([width / 1800, height / 1200])
    notebook_click = (np.array([[500, 375]]) * scale, np.array([1]), False)
    notebook_box = (np.concatenate([np.array([[575, 750]]), np.array([[425, 600], [700, 875]])]) * scale, np.array([0, 2, 3]), False)
    clicks = int(rng.integers(1, 5))
    random_clicks = (np.stack([rng.uniform(0, width, clicks), rng.uniform(0, height, clicks)], 1), (rng.random(clicks) < 0.6).astype(int), False)
    xs, ys = np.sort(rng.uniform(0, width, 2)), np.sort(rng.uniform(0, height, 2))
    box_alone = (np.array([[xs[0], ys[0]], [xs[1], ys[1]]]), np.array([2, 3]), True)
    feeds = []
    for points, labels, has_mask in (notebook_click, notebook_box, random_clicks, box_alone):
        if 2 not in labels:  # the example pads point-only prompts with (0, 0), label -1
            points, labels = np.concatenate([points, [[0.0, 0.0]]]), np.concatenate([labels, [-1]])
        mask = 20.0 * np.kron(rng.standard_normal((8, 8)), np.ones((32, 32)))[None, None] if has_mask else np.zeros((1, 1, 256, 256))
        feeds.append({
            "image_embeddings": (0.5 * rng.standard_normal((1, 256, 64, 64))).astype(np.float32),
            "point_coords": to_model_frame(points, size)[None].astype(np.float32),
            "point_labels": labels[None].astype(np.float32),
            "mask_input": mask.astype(np.float32),
            "has_mask_input": np.array([1.0 if has_mask else 0.0], np.float32),
            "orig_im_size": np.array(size, np.float32),
        })
    return feeds


@pytest.mark.parametrize("output", [MaskOutput.ALL, MaskOutput.BEST], ids=["all", "best"])
def test_equals_samonnxmodel_at_every_size(official_graphs, output, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    decoder, _ = load_decoder(seed=0)
    reference = official_onnx_model(decoder.state_dict(), return_single_mask=output is MaskOutput.BEST)
    session = ort.InferenceSession(str(official_graphs[output]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [s.name for s in OFFICIAL_INPUTS]
    for size in SIZES:
        for feeds in client_feeds(rng, size):
            masks, scores, low_res = session.run(["masks", "iou_predictions", "low_res_masks"], feeds)
            with torch.no_grad():
                want = [t.numpy() for t in reference(**{k: torch.from_numpy(v) for k, v in feeds.items()})]
            assert masks.shape == want[0].shape == (1, output.count, *size)
            assert np.abs(low_res - want[2]).max() <= 1e-3 and np.abs(scores - want[1]).max() <= 1e-4
            err = np.abs(masks - want[0]).max()
            assert err <= 1e-3 or err / np.abs(want[0]).max() <= 1e-4, (size, err)
            # verify's IoU: a pixel whose reference logit is within the fp32 logit bound of 0 counts as agreeing
            # (on the 17x23 size one such pixel, flipped by a rounding, took the plain IoU to 0.9965 in ~1 of 40 draws)
            assert binarized_iou(want[0], masks, margin=TOLERANCES["fp32"].logit_abs).min() >= 0.999, size


def test_best_follows_the_point_count_rule(official_graphs, rng):
    """return_single_mask: token 0 for prompts of 3+ points, else the best-scored of tokens 1..3."""
    session = ort.InferenceSession(str(official_graphs[MaskOutput.BEST]), providers=["CPUExecutionProvider"])
    every = ort.InferenceSession(str(official_graphs[MaskOutput.ALL]), providers=["CPUExecutionProvider"])
    for feeds in client_feeds(rng, (480, 640)):
        _, best_score, best_low = session.run(None, feeds)
        _, scores, low = every.run(None, feeds)
        token = 0 if feeds["point_coords"].shape[1] > 2 else 1 + int(np.argmax(scores[0, 1:]))
        assert np.abs(best_score[0, 0] - scores[0, token]) <= 1e-5
        assert np.abs(best_low[0, 0] - low[0, token]).max() <= 1e-4


def test_verify_fails_the_official_export_and_passes_ours(tmp_path, rng):
    decoder, _ = load_decoder(seed=3)
    weights = tmp_path / "w.pth"
    torch.save(decoder.state_dict(), weights)
    theirs = export_official(decoder.state_dict(), tmp_path / "theirs.onnx")
    result = runner.invoke(app, ["verify", "--onnx", str(theirs), "--checkpoint", str(weights), "--cases", "6"])
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if "FAIL" in line and "masks" in line]
    assert failed and "480x640" in result.output and "official" in result.output
    assert all("low_res_masks" not in line for line in failed), "the official export's low-res masks are right"

    ours = tmp_path / "ours.onnx"
    assert runner.invoke(app, ["export", "--signature", "official", "--mask-output", "all", "--checkpoint", str(weights), "--out", str(ours)]).exit_code == 0
    stripped = tmp_path / "ours-without-metadata.onnx"
    model = onnx.load(str(ours))
    del model.metadata_props[:]
    onnx.save(model, str(stripped))
    for graph in (ours, stripped):  # with our metadata, and recognised from its signature alone
        result = runner.invoke(app, ["verify", "--onnx", str(graph), "--checkpoint", str(weights), "--cases", "3"])
        assert result.exit_code == 0, result.output
    faulty = tmp_path / "faulty.onnx"
    perturb_one_weight(stripped, faulty, rng)
    assert runner.invoke(app, ["verify", "--onnx", str(faulty), "--checkpoint", str(weights), "--cases", "3"]).exit_code == 1


def test_foreign_graph_errors(tmp_path, exported):
    model = onnx.load(str(exported.path))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    result = runner.invoke(app, ["verify", "--onnx", str(bare)])
    assert result.exit_code == 2 and "--checkpoint" in result.output
    model.graph.input[1].name = "coords"
    odd = tmp_path / "odd.onnx"
    onnx.save(model, str(odd))
    result = runner.invoke(app, ["verify", "--onnx", str(odd), "--checkpoint", str(tmp_path / "w.pth")])
    assert result.exit_code == 2 and "official export's signature" in result.output


@pytest.mark.parametrize("args,message", [
    (["--signature", "official"], "--mask-output all"),
    (["--signature", "official", "--mask-output", "all", "--multi-image"], "drop --multi-image"),
    (["--mask-output", "best"], "--signature official"),
])
def test_signature_option_errors(tmp_path, args, message):
    result = runner.invoke(app, ["export", *args, "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and message in result.output


def test_declared_io_is_the_official_exports(official_graphs, tmp_path):
    decoder, _ = load_decoder(seed=0)
    theirs = onnx.load(str(export_official(decoder.state_dict(), tmp_path / "theirs.onnx")))
    ours = onnx.load(str(official_graphs[MaskOutput.ALL]))
    assert [(s.name, s.dtype, s.dims) for s in value_specs(ours.graph.input)] == [(s.name, s.dtype, s.dims) for s in value_specs(theirs.graph.input)]
    assert [(s.name, s.dtype) for s in value_specs(ours.graph.output)] == [(s.name, s.dtype) for s in value_specs(theirs.graph.output)]
