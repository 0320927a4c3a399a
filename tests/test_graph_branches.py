"""The onnxruntime form's If branches (segdeploy.graph_branches): each fires where its pattern is, the
branched graph computes what the traced one does on both sides, each side runs when it should (read
from onnxruntime's profile, not inferred from equal outputs), and the TensorRT form has none."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import export_identity
from test_rewrites import traced
from segdeploy.bench import bench_feeds
from segdeploy.graph_branches import apply_branches
from segdeploy.graph_io import all_nodes
from segdeploy.registry import family_of_variant, load_decoder

# Ifs per pass on each family's default graph: SAM 2 resizes straight to the original size (no crop)
FIRES = {"sam_vit_b": {"mask_embedding": 1, "identity_crop": 1}, "sam2.1_hiera_tiny": {"mask_embedding": 1, "identity_crop": 0}}
# (H, W): at 1024x1024 the crop and the second resize keep every pixel (the fast side); a wide strip
# and a smaller image crop and resize
SIZES = [(1024, 1024), (16, 2048), (600, 900)]


@pytest.fixture(scope="module", params=sorted(FIRES))
def graphs(request):
    variant = request.param
    model = traced(variant)
    branched = onnx.ModelProto()
    branched.CopyFrom(model)
    decoder, _ = load_decoder(variant, None, 0)
    counts = apply_branches(branched, decoder.prompt_encoder.no_mask_embed.weight.detach().numpy())
    onnx.checker.check_model(branched, full_check=True)
    return variant, model, branched, counts


def session(model: onnx.ModelProto, profile: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if profile is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def feeds_for(variant: str, size: tuple[int, int], has: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = bench_feeds(len(has), 3, size, rng, postprocess=True, family=family_of_variant(variant))
    feeds["mask_input"] = rng.normal(0.0, 4.0, feeds["mask_input"].shape).astype(np.float32)
    feeds["has_mask_input"] = has.astype(np.float32)
    return feeds


def ran_nodes(model: onnx.ModelProto, feeds, tmp_path: Path) -> set[str]:
    """Names of the nodes that ran in one call (subgraph nodes included)."""
    runner = session(model, tmp_path / "profile")
    runner.run(None, feeds)
    events = json.loads(Path(runner.end_profiling()).read_text())
    return {e["name"].removesuffix("_kernel_time") for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")}


def test_each_pass_fires_where_its_pattern_is(graphs):
    variant, _, branched, counts = graphs
    assert counts == FIRES[variant]
    assert sum(n.op_type == "If" for n in branched.graph.node) == sum(counts.values())
    made = [name for node in all_nodes(branched.graph) for name in node.output]
    assert len(made) == len(set(made)), "a value named twice across the graph and the If sides"


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_both_sides_compute_what_the_traced_graph_does(graphs, size, rng):
    variant, model, branched, _ = graphs
    plain, ours = session(model), session(branched)
    mixed = np.concatenate([[1.0], rng.random(2) < 0.5])  # at least one mask input, the rest drawn
    for has in (np.zeros(3), mixed, np.array([0.0, np.nan, 0.0])):
        feeds = feeds_for(variant, size, has, rng)
        expected, got = plain.run(None, feeds), ours.run(None, feeds)
        assert len(expected) == len(got) == len(model.graph.output)
        for name, want, have in zip([o.name for o in model.graph.output], expected, got):
            assert want.shape == have.shape, name
            if not has.any():  # the fast sides: the same bits
                np.testing.assert_array_equal(have, want, err_msg=name)
            else:  # the full side, in a subgraph onnxruntime optimizes on its own: float rounding apart
                np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4, equal_nan=True, err_msg=f"{name} has={has}")


def test_each_side_runs_when_it_should(graphs, rng, tmp_path):
    variant, _, branched, counts = graphs
    no_mask = feeds_for(variant, (1024, 1024), np.zeros(2), rng)
    with_mask = feeds_for(variant, (600, 900), np.array([0.0, 1.0]), rng)
    ran_fast, ran_full = ran_nodes(branched, no_mask, tmp_path), ran_nodes(branched, with_mask, tmp_path)
    mask_convs = {n.name for n in _branch(branched, "mask_branch").node if n.op_type == "Conv"}
    assert mask_convs and not mask_convs & ran_fast and mask_convs <= ran_full
    if counts["identity_crop"]:
        crop_side = {n.name for n in _branch(branched, "crop_branch", "else_branch").node}
        one_resize = {n.name for n in _branch(branched, "crop_branch").node}
        assert one_resize <= ran_fast and not crop_side & ran_fast
        assert crop_side & ran_full and not one_resize & ran_full
    # and a mask input the fast side skips cannot reach the outputs: NaN logits stay out
    poisoned = no_mask | {"mask_input": np.full_like(no_mask["mask_input"], np.nan)}
    assert all(np.isfinite(out).all() for out in session(branched).run(None, poisoned))


def _branch(model: onnx.ModelProto, stem: str, side: str = "then_branch") -> onnx.GraphProto:
    node = next(n for n in model.graph.node if n.op_type == "If" and n.name.startswith(stem))
    return next(a.g for a in node.attribute if a.name == side)


# the identity manifest's graphs (shared exports): which get which Ifs
def expected_ifs(name: str, fields: dict) -> int:
    if fields.get("target") == "tensorrt":
        return 0  # TensorRT's form stays as traced
    crop = name.startswith("sam1/") and fields.get("postprocess", True) and not fields.get("multi_image")
    return 1 + int(crop)


@pytest.mark.parametrize("name", sorted(export_identity.configs()))
def test_exports_carry_the_branches_of_their_target(name, export_graph):
    fields = export_identity.configs()[name]
    report = export_graph(**export_identity.export_options(fields))
    assert report.op_counts.get("If", 0) == expected_ifs(name, fields), report.op_counts
