"""The decoder-family registry: variants, the `family` metadata key (absent = sam1), layouts
recognised from declared I/O, and what each family's contract declares."""

from __future__ import annotations

import pytest

from segdeploy import contract
from segdeploy.contract import GraphLayout, MaskOutput
from segdeploy.errors import BadInputError
from segdeploy.registry import FAMILY_NAMES, all_variants, family_from_metadata, family_of_variant, get_family
from segdeploy.graph_io import read_metadata
from segdeploy.provenance import graph_layout, layout_from_io
from segdeploy.tensorrt.profiles import EngineProfile
SAM1, SAM2 = get_family("sam1"), get_family("sam2")


def test_every_variant_has_one_family():
    assert family_of_variant("mobile_sam").name == "sam1"
    assert family_of_variant("sam2_hiera_base_plus").name == family_of_variant("sam2.1_hiera_large").name == "sam2"
    assert len(all_variants()) == len(set(all_variants())) == 16
    for name in FAMILY_NAMES:
        family = get_family(name)
        assert family.name == name and family.default_variant in family.variant_names
    with pytest.raises(BadInputError, match="unknown variant 'sam3'.*sam2.1_hiera_tiny"):
        family_of_variant("sam3")


def test_sam1_graphs_carry_no_family_key_and_read_as_sam1(exported_model):
    metadata = read_metadata(exported_model)
    assert "family" not in metadata
    assert family_from_metadata(metadata).name == "sam1"
    layout, _ = graph_layout(metadata, "g.onnx")
    assert layout.family.name == "sam1" and [s.name for s in layout.inputs()] == [s.name for s in SAM1.layout().inputs()]


def test_unknown_family_is_one_line(exported_model):
    metadata = read_metadata(exported_model) | {"family": "sam9"}
    with pytest.raises(BadInputError) as error:
        graph_layout(metadata, "g.onnx")
    assert "'sam9'" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("postprocess,multi_image,mask_output", [(True, False, MaskOutput.MULTI), (False, False, MaskOutput.SINGLE), (False, True, MaskOutput.ALL)])
def test_sam2_layouts_are_recognised_from_io(postprocess, multi_image, mask_output):
    """Engines and packages carry no ONNX metadata: their family comes from the declared inputs."""
    layout = GraphLayout(mask_output, postprocess, multi_image, family=SAM2)
    outputs = {s.name: list(s.dims) for s in layout.outputs()}
    assert layout_from_io([s.name for s in layout.inputs()], outputs) == layout
    assert outputs["object_score_logits"] == [contract.DimName.PROMPTS.value, 1]
    with pytest.raises(BadInputError):
        layout_from_io([s.name for s in layout.inputs()][1:], outputs)


def test_profiles_follow_the_family():
    sam1 = EngineProfile().shapes(SAM1.layout())
    assert list(sam1) == [s.name for s in SAM1.layout().inputs()]
    sam2 = EngineProfile().shapes(SAM2.layout())
    assert sam2["high_res_feats_0"] == ((1, 32, 256, 256),) * 3 and sam2["high_res_feats_1"] == ((1, 64, 128, 128),) * 3
    assert {k: v for k, v in sam2.items() if not k.startswith("high_res")} == sam1


def test_official_signature_stays_sam1():
    with pytest.raises(ValueError):
        GraphLayout(MaskOutput.ALL, True, signature=contract.Signature.OFFICIAL, family=SAM2)


def test_exported_model_is_unchanged_by_the_family_refactor(exported_model):
    """Contract v1 as it was: the default SAM 1 graph's declared inputs and outputs."""
    assert [v.name for v in exported_model.graph.input] == ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"]
    assert [v.name for v in exported_model.graph.output] == ["masks", "iou_predictions", "low_res_masks"]
