"""The SAM 2 family against the `sam2` package's own modules with the same weights (fresh seeds
each run): eager over the case matrix for SAM 2 and SAM 2.1, the graph forms, the stability-based
single mask, and the official checkpoint layout."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
import torch
from sam2_oracle import official_outputs

from segdeploy.cases import CaseSpec
from segdeploy.contract import GraphLayout, MaskOutput
from segdeploy.errors import BadInputError
from segdeploy.registry import get_family
from segdeploy.families.sam2.baseline import official_modules
from segdeploy.families.sam2.cases import SAM2_MATRIX, draw_case
from segdeploy.families.sam2.graph import stability_scores
from segdeploy.families.sam2.weights import load_decoder, to_official
from segdeploy.forms import AttentionForm, GraphForm, UpscaleForm

LOGIT_ABS, IOU_ABS, SCORE_ABS = 1e-3, 1e-4, 1e-4
FAMILY = get_family("sam2")
FEWTOKEN_MATMUL = GraphForm(AttentionForm.FEWTOKEN, UpscaleForm.MATMUL)
ROWS = [spec for spec in SAM2_MATRIX if spec.prompts <= 8]  # the 32-prompt row is the ONNX tests' (ragged vs alone)
VARIANTS = ("sam2_hiera_tiny", "sam2.1_hiera_large")


@pytest.fixture(scope="module")
def decoders():
    """Both releases with random weights from a fresh seed (printed on failure), and their official twins."""
    seed = secrets.randbits(31) % 100_000
    print(f"weights seed={seed}")
    built = {}
    for offset, variant in enumerate(VARIANTS):
        decoder, _ = load_decoder(variant, seed=seed + offset)
        built[variant] = (decoder, official_modules(decoder))
    return built


def run_graph(decoder, layout: GraphLayout, feeds: dict[str, np.ndarray], form: GraphForm = GraphForm()) -> dict[str, np.ndarray]:
    graph = FAMILY.decoder_graph(decoder, layout, form).eval()
    with torch.no_grad():
        outputs = graph(*(torch.from_numpy(feeds[s.name]) for s in layout.inputs()))
    return {name: out.numpy() for name, out in zip(layout.output_names(), outputs)}


def assert_matches(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got["low_res_masks"].shape == want["low_res_masks"].shape
    assert np.abs(got["low_res_masks"] - want["low_res_masks"]).max() <= LOGIT_ABS
    assert np.abs(got["iou_predictions"] - want["iou_predictions"]).max() <= IOU_ABS
    assert np.abs(got["object_score_logits"] - want["object_score_logits"]).max() <= SCORE_ABS


@pytest.mark.parametrize("index", range(len(ROWS)), ids=[s.name for s in ROWS])
def test_eager_matches_sam2_package(index, decoders, rng):
    """Every row (SAM 2 and SAM 2.1 alternately), multimask output; the few-token/matmul form too on
    every other row."""
    spec = ROWS[index]
    decoder, holder = decoders[VARIANTS[index % 2]]
    case = draw_case(spec, rng, postprocess=False)
    layout = GraphLayout(MaskOutput.MULTI, postprocess=False, family=get_family("sam2"))
    want = official_outputs(holder, case.feeds, multimask=True)
    assert_matches(run_graph(decoder, layout, case.feeds), want)
    if index % 2 == 0:
        assert_matches(run_graph(decoder, layout, case.feeds, FEWTOKEN_MATMUL), want)


def test_single_mask_is_the_predictors_stability_choice(decoders, rng):
    """multimask_output=False: token 0 where stable, else the best of tokens 1..3, as the predictor
    (dynamic_multimask_via_stability), in both forms. Token 0's logits at trained scale are mostly
    stable; scaled down to ~0.3 they are not: together both branches run."""
    trained, _ = decoders[VARIANTS[1]]
    shrunk, _ = load_decoder(VARIANTS[1], seed=int(rng.integers(1000)))
    with torch.no_grad():
        last = shrunk.mask_decoder.output_hypernetworks_mlps[0].layers[-1]
        last.weight.mul_(0.3 / 12.0)
        last.bias.mul_(0.3 / 12.0)
    spec = CaseSpec("mixed", 4, ("click", "box", "clicks", "box+clicks"), (480, 640), "mixed")
    stable = []
    for decoder, form in ((trained, GraphForm()), (shrunk, FEWTOKEN_MATMUL)):
        case = draw_case(spec, rng, postprocess=False)
        want = official_outputs(official_modules(decoder), case.feeds, multimask=False)
        assert_matches(run_graph(decoder, GraphLayout(MaskOutput.SINGLE, postprocess=False, family=get_family("sam2")), case.feeds, form), want)
        every = run_graph(decoder, GraphLayout(MaskOutput.ALL, postprocess=False, family=get_family("sam2")), case.feeds)
        stable += list(stability_scores(torch.from_numpy(every["low_res_masks"][:, :1]), 0.05).numpy()[:, 0] >= 0.98)
    assert any(stable) and not all(stable), stable


def test_official_checkpoint_layout_loads(tmp_path, fresh_seed):
    """A whole-model checkpoint in the official layout ({"model": ...}, sam_* keys, sam2 MLP names,
    image encoder and memory keys) loads strictly; the key names match the sam2 package's modules."""
    decoder, _ = load_decoder("sam2.1_hiera_tiny", seed=fresh_seed % 1000)
    official = to_official(decoder.state_dict())
    assert set(official) == set(official_modules(decoder).state_dict())
    assert "sam_mask_decoder.transformer.layers.0.mlp.layers.0.weight" in official
    assert "sam_mask_decoder.conv_s0.weight" in official and "sam_mask_decoder.obj_score_token.weight" in official
    extra = {"image_encoder.trunk.pos_embed": torch.zeros(1, 96, 7, 7), "no_mem_embed": torch.zeros(1, 1, 256), "memory_attention.layers.0.norm1.weight": torch.ones(256)}
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {**extra, **official}}, path)
    loaded, info = load_decoder("sam2.1_hiera_tiny", path)
    assert info.sha256 is not None and info.seed is None
    for key, value in decoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_checkpoint_mismatches_are_one_line(tmp_path):
    from segdeploy.registry import load_decoder as load_any

    sam1 = tmp_path / "sam_vit_b.pth"
    torch.save(load_any("sam_vit_b", seed=1)[0].state_dict(), sam1)
    with pytest.raises(BadInputError) as error:
        load_decoder("sam2_hiera_small", sam1)
    assert "mask_decoder.obj_score_token.weight" in str(error.value) and "\n" not in str(error.value)
    sam2 = tmp_path / "sam2.pt"
    torch.save({"model": to_official(load_decoder("sam2_hiera_small", seed=1)[0].state_dict())}, sam2)
    with pytest.raises(BadInputError, match="SAM 2 checkpoint"):
        load_any("sam_vit_b", sam2)
    with pytest.raises(BadInputError, match="unknown variant"):
        load_any("sam2_hiera_huge")


def test_random_weights_are_seeded_and_scaled(rng):
    a, _ = load_decoder("sam2_hiera_base_plus", seed=5)
    b, _ = load_decoder("sam2_hiera_base_plus", seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    case = draw_case(ROWS[2], rng, postprocess=False)
    low = run_graph(a, GraphLayout(MaskOutput.MULTI, postprocess=False, family=get_family("sam2")), case.feeds)["low_res_masks"]
    assert 4.0 < low.std() < 40.0  # realistic logits (tens), like SAM 1's random weights
