"""Every graph form and precision the CLI can write passes verify's whole matrix, for both families:
every row (mask inputs, ragged batches, 16 points, tiny and large images, 32 prompts) at original
sizes shrunk to at most 256 pixels a side (verify --max-side), where the resizing is cheap and the
rows are what they were. The fp16 graphs of both targets run on onnxruntime's CPU provider, the
TensorRT form's included (what build-engine consumes).

The graphs of one family differ in form and precision only, not in weights or layout, so they are
verified on one fresh draw per family per run against one eager reference that runs each case once
(``SharedReference``); the graphs themselves are the session's shared exports, the files
tests/test_export_identity.py hashes."""

from __future__ import annotations

import hashlib
import secrets

import numpy as np
import onnx
import pytest
from typed_graphs import assert_precision_policy

from segdeploy.forms import AttentionForm, Precision, Target, UpscaleForm
from segdeploy.graph_io import load_graph, read_metadata
from segdeploy.provenance import graph_layout
from segdeploy.registry import load_decoder
from segdeploy.runners.torch_runner import TorchRunner
from segdeploy.verify import VerifyOptions, render_report, verify_graph

VARIANTS = {"sam1": "sam_vit_b", "sam2": "sam2.1_hiera_tiny"}
FORMS = [(a, u) for a in AttentionForm for u in UpscaleForm]
MAX_SIDE = 256


class SharedReference:
    """An eager runner that runs each distinct feed once and hands its outputs to every verify."""

    def __init__(self, runner: TorchRunner) -> None:
        self.runner, self.name, self.outputs, self.runs = runner, runner.name, {}, 0

    def __enter__(self) -> SharedReference:
        self.runner.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        key = tuple((name, feeds[name].dtype.str, feeds[name].shape, hashlib.sha256(np.ascontiguousarray(feeds[name]).tobytes()).hexdigest()) for name in sorted(feeds))
        if key not in self.outputs:
            self.outputs[key] = self.runner.infer(feeds)
            self.runs += 1
        return self.outputs[key]


@pytest.fixture(scope="module")
def draws() -> dict[str, int]:
    """One fresh case-draw seed per family for this run."""
    return {family: secrets.randbits(31) for family in VARIANTS}


@pytest.fixture(scope="module")
def references(export_graph) -> dict:
    """Per family: the layout of its graphs here (its default export's), and the eager reference
    of the seed-0 random weights they were all exported from."""
    shared = {}
    for family, variant in VARIANTS.items():
        path = export_graph(variant=variant).path
        layout = graph_layout(read_metadata(load_graph(path)), path)[0]
        shared[family] = layout, SharedReference(TorchRunner(load_decoder(variant, None, 0)[0], layout))
    return shared


def verify_whole_matrix(report, family, draws, references):
    seed = draws[family]
    print(f"seed={seed}")
    layout, reference = references[family]
    assert graph_layout(read_metadata(load_graph(report.path)), report.path)[0] == layout, "a shared reference needs the graph's layout"
    result = verify_graph(VerifyOptions(onnx=report.path, seed=seed, max_side=MAX_SIDE), reference=reference)
    assert result.passed, render_report(result)
    rows = {case.name.split(" (at ")[0] for case in result.cases}
    assert len(rows) == len(result.cases) >= 9 and any(case.ragged for case in result.cases)
    return result


@pytest.mark.parametrize("family", VARIANTS)
@pytest.mark.parametrize("attention,upscale", FORMS, ids=[f"{a.value}-{u.value}" for a, u in FORMS])
def test_every_form_passes_the_whole_matrix(family, attention, upscale, export_graph, draws, references):
    opset = 23 if attention is AttentionForm.ONNX else 17
    report = export_graph(variant=VARIANTS[family], attention=attention, upscale=upscale, opset=opset)
    if attention is AttentionForm.ONNX:  # every attention block became one Attention operator
        assert report.op_counts.get("Attention") == 7 and report.opset == 23
    verify_whole_matrix(report, family, draws, references)


@pytest.mark.parametrize("family", VARIANTS)
@pytest.mark.parametrize("target", list(Target))
def test_fp16_graphs_are_typed_and_pass_the_whole_matrix(family, target, export_graph, draws, references):
    report = export_graph(variant=VARIANTS[family], target=target, precision=Precision.FP16)
    assert_precision_policy(onnx.shape_inference.infer_shapes(onnx.load(str(report.path))), onnx.TensorProto.FLOAT16)
    result = verify_whole_matrix(report, family, draws, references)
    assert result.precision == "fp16"


def test_max_side_keeps_every_row_and_shrinks_sizes(exported, fresh_seed):
    """verify --max-side changes each row's original size only (the tests above run it at 256)."""
    from segdeploy.verify import cap_size

    layout = graph_layout(read_metadata(load_graph(exported.path)), exported.path)[0]
    cases = layout.family.draw_cases(np.random.default_rng(fresh_seed), None, layout)
    capped = [cap_size(case, 64) for case in cases]
    assert len(capped) == len(cases) == 10 and any("(at 48x64)" in case.spec.name for case in capped)  # 3000x4000 -> 48x64
    for case, small in zip(cases, capped):
        (h0, w0), (height, width) = case.spec.orig_size, small.spec.orig_size
        scale = min(1.0, 64 / max(h0, w0))
        assert abs(height - h0 * scale) <= 0.5 and abs(width - w0 * scale) <= 0.5  # aspect kept, at most 64 a side
        assert small.spec.prompts == case.spec.prompts and small.num_points == case.num_points
        for name, array in case.feeds.items():  # the prompts as drawn; only the size input changes
            assert name == "orig_im_size" or np.array_equal(small.feeds[name], array)
        assert "orig_im_size" not in case.feeds or small.feeds["orig_im_size"].tolist() == [height, width]
