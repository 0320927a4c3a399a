"""SAM 2 decoders from checkpoints in the real official layout: SAM2Base built from the sam2
package's released configs (random weights from a fresh seed), saved as the released ``.pt`` files
are (``{"model": state_dict}``) and loaded by segdeploy; and every released config's decoder
settings against segdeploy's variants."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from sam2_configs import build_sam2_base, head_attributes, package_dir, postprocessing_args, read_config, released_configs
from sam2_oracle import official_outputs
from test_sam2 import assert_matches, run_graph

from segdeploy import contract
from segdeploy.cases import CaseSpec
from segdeploy.contract import GraphLayout, MaskOutput
from segdeploy.errors import BadInputError
from segdeploy.families.sam2 import contract as sam2_contract
from segdeploy.families.sam2.baseline import import_sam2
from segdeploy.families.sam2.cases import draw_case
from segdeploy.families.sam2.model import VARIANTS
from segdeploy.families.sam2.weights import OFFICIAL_PREFIXES, from_official, load_decoder
from segdeploy.registry import get_family

SAM2 = get_family("sam2")

TINY = ("sam2_hiera_tiny", "sam2.1_hiera_tiny")
# box corners, clicks, padding and ignored slots; the mask input is on for the first prompt only
PROMPTS = CaseSpec("released checkpoint", 2, ("box+clicks", "clicks"), (768, 1024), "on")
# what segdeploy's graph always does (sigmoid IoU head, object-score output, high-res skip inputs)
ALWAYS_ON = ("use_high_res_features_in_sam", "iou_prediction_use_sigmoid", "pred_obj_scores")


def sam2_base_defaults() -> dict[str, object]:
    """SAM2Base's constructor defaults (what a config leaves out)."""
    import_sam2()
    signature = inspect.signature(importlib.import_module("sam2.modeling.sam2_base").SAM2Base.__init__)
    return {name: p.default for name, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}


def build_and_save(variant: str, seed: int, folder: Path) -> tuple[torch.nn.Module, dict[str, torch.Tensor], Path]:
    """SAM2Base from the variant's released config with seeded random weights, saved as its release."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam2_base(released_configs()[variant])
    state = model.state_dict()
    path = folder / f"{variant}.pt"
    torch.save({"model": state}, path)
    return model, state, path


@pytest.mark.parametrize("variant", TINY)
def test_released_layout_loads_and_matches_sam2base(variant, tmp_path, fresh_seed, rng):
    """The whole model's file loads; its decoder keys, outputs and high-res projections are ours."""
    model, official, path = build_and_save(variant, fresh_seed, tmp_path)
    decoder, info = load_decoder(variant, path)
    assert info.sha256 is not None and info.path == str(path)

    # (a) every decoder key of the whole model is consumed, one-to-one, with its exact tensor
    heads = {k: v for k, v in official.items() if k.startswith(tuple(OFFICIAL_PREFIXES))}
    assert len(heads) < len(official)  # the rest (image encoder, memory, object pointers) is ignored
    ours = decoder.state_dict()
    mapped = {key: next(iter(from_official({key: value}))) for key, value in heads.items()}
    assert sorted(mapped.values()) == sorted(ours)
    for key, value in heads.items():
        assert torch.equal(ours[mapped[key]], value), key

    # (b) our graph's outputs are SAM2Base's own prompt encoder + mask decoder
    case = draw_case(PROMPTS, rng, postprocess=False)
    case.feeds["has_mask_input"][1:] = 0.0
    layout = GraphLayout(MaskOutput.MULTI, postprocess=False, family=SAM2)
    assert_matches(run_graph(decoder, layout, case.feeds), official_outputs(model, case.feeds, multimask=True))

    # (c) the encoder-side projection segdeploy exposes is SAM2Base.forward_image's
    raw = [torch.from_numpy(rng.standard_normal((1, contract.EMBED_DIM, s, s)).astype(np.float32)) for s in (*sam2_contract.HIGH_RES_SIZES, contract.EMBEDDING_SIZE)]

    class RawEncoder(torch.nn.Module):
        def forward(self, image):
            return {"backbone_fpn": [r.clone() for r in raw]}

    model.image_encoder = RawEncoder()
    with torch.no_grad():
        want = model.forward_image(torch.zeros(1, 3, contract.MODEL_INPUT_SIZE, contract.MODEL_INPUT_SIZE))["backbone_fpn"]
        got = decoder.mask_decoder.project_high_res(raw[0], raw[1])
    for level, (mine, theirs) in enumerate(zip(got, want)):
        spec = (sam2_contract.HIGH_RES_FEATS_0, sam2_contract.HIGH_RES_FEATS_1)[level]
        assert tuple(mine.shape) == spec.dims
        assert torch.allclose(mine, theirs, atol=1e-5, rtol=0), level


def test_released_configs_match_variants():
    """The 8 released configs, one per segdeploy variant, set the decoder as segdeploy builds it."""
    configs = released_configs()
    on_disk = {*package_dir().glob("configs/sam2/*.yaml"), *package_dir().glob("configs/sam2.1/*.yaml")}
    assert set(configs.values()) == on_disk and len(on_disk) == 8
    assert set(configs) == set(VARIANTS) == set(sam2_contract.VARIANT_NAMES)
    # every SAM2Base attribute that reaches the heads is checked below
    assert head_attributes() == {
        "sam_prompt_embed_dim", "sam_image_embedding_size", "image_size", "sam_mask_decoder_extra_args",
        "use_high_res_features_in_sam", "iou_prediction_use_sigmoid", "pred_obj_scores", "pred_obj_scores_mlp",
        "use_multimask_token_for_obj_ptr",
    }
    defaults = sam2_base_defaults()
    for variant, path in configs.items():
        model = read_config(path)["model"]
        settings = {**defaults, **model}
        config = VARIANTS[variant]
        neck = model["image_encoder"]["neck"]
        assert neck["d_model"] == config.embed_dim == contract.EMBED_DIM == 256, variant  # sam_prompt_embed_dim
        assert model["memory_attention"]["d_model"] == neck["d_model"], variant
        assert settings["image_size"] == contract.MODEL_INPUT_SIZE, variant
        assert settings["image_size"] // settings["backbone_stride"] == contract.EMBEDDING_SIZE, variant
        # three FPN levels reach the decoder (scalp drops the coarsest of four): strides 4 and 8 are the skips
        assert len(neck["backbone_channel_list"]) - model["image_encoder"]["scalp"] == 3, variant
        assert all(settings[name] is True for name in ALWAYS_ON), variant
        assert settings["pred_obj_scores_mlp"] == config.pred_obj_scores_mlp, variant
        assert settings["use_multimask_token_for_obj_ptr"] is True, variant  # the object pointer only (not exported)
        assert settings.get("sam_mask_decoder_extra_args") is None, variant
    assert postprocessing_args() == {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": sam2_contract.STABILITY_DELTA,
        "dynamic_multimask_stability_thresh": sam2_contract.STABILITY_THRESH,
    }
    assert all((c.stability_delta, c.stability_thresh) == (sam2_contract.STABILITY_DELTA, sam2_contract.STABILITY_THRESH) for c in VARIANTS.values())


def test_released_layout_renamed_key_is_one_line(tmp_path, fresh_seed, rng):
    """A released checkpoint with one decoder key renamed fails to load with one line naming the
    key as the file spells it: any mask decoder key, and a transformer MLP key (named differently
    in segdeploy's own layout)."""
    _, official, _ = build_and_save("sam2.1_hiera_tiny", fresh_seed, tmp_path)
    heads = sorted(k for k in official if k.startswith("sam_mask_decoder."))
    mlps = [k for k in heads if ".mlp.layers." in k and ".transformer." in k]
    assert mlps
    for pool in (heads, mlps):
        key = pool[int(rng.integers(len(pool)))]
        renamed = key.replace("sam_mask_decoder.", "sam_mask_decoder.renamed_", 1)
        broken = dict(official)
        broken[renamed] = broken.pop(key)
        path = tmp_path / "broken.pt"
        torch.save({"model": broken}, path)
        with pytest.raises(BadInputError) as error:
            load_decoder("sam2.1_hiera_tiny", path)
        message = str(error.value)
        assert "\n" not in message and str(path) in message
        assert f"missing 1 keys (e.g. {key})" in message and f"unexpected 1 keys (e.g. {renamed})" in message, message
