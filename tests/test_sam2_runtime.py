"""segdeploy.Decoder on SAM 2 graphs against the sam2 package's SAM2ImagePredictor.predict, given the
same features (no encoder runs): onnxruntime on single- and multi-image graphs, and eager."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2_oracle import sam2_predictor, set_features

from segdeploy import Decoder, Prompt
from segdeploy.errors import BadInputError
from segdeploy.families.sam2.baseline import import_sam2
from segdeploy.families.sam2.rules import single_column
from segdeploy.families.sam2.weights import load_decoder

SIZES = ((480, 640), (1500, 1000))


@pytest.fixture(scope="module")
def predictor():
    return sam2_predictor(load_decoder("sam2.1_hiera_tiny", seed=0)[0])  # the session graphs' weights


def features(rng: np.random.Generator) -> dict:
    """One image's features as SAM2ImagePredictor keeps them."""
    return {
        "image_embed": (0.5 * rng.standard_normal((1, 256, 64, 64))).astype(np.float32),
        "high_res_feats": [(0.5 * rng.standard_normal(shape)).astype(np.float32) for shape in ((1, 32, 256, 256), (1, 64, 128, 128))],
    }


def prompts(rng: np.random.Generator, size: tuple[int, int]) -> list[dict]:
    """A click (multimask), clicks and a box (single mask), a box with a mask input (single mask)."""
    height, width = size

    def points(n: int) -> np.ndarray:
        return np.stack([rng.uniform(0, width, n), rng.uniform(0, height, n)], axis=1)

    box = np.sort(points(2), axis=0).reshape(4)
    mask = (20 * rng.standard_normal((1, 256, 256))).astype(np.float32)
    return [
        {"point_coords": points(1), "point_labels": np.array([1]), "multimask_output": True},
        {"point_coords": points(3), "point_labels": np.array([1, 0, 1]), "box": box, "multimask_output": False},
        {"box": box, "mask_input": mask, "multimask_output": False},
    ]


def assert_same(got, want) -> None:
    masks, scores, low = got
    want_masks, want_scores, want_low = want
    assert masks.dtype == bool and want_masks.dtype == np.float32  # the predictor returns 0/1 floats; Decoder bools, as for SAM 1
    want_masks = want_masks > 0.5
    assert masks.shape == want_masks.shape
    inter = np.logical_and(masks, want_masks).sum(axis=(1, 2))
    union = np.logical_or(masks, want_masks).sum(axis=(1, 2))
    assert (np.where(union > 0, inter / np.maximum(union, 1), 1.0) >= 0.999).all()
    assert np.abs(scores - want_scores).max() <= 1e-4
    assert np.abs(low - want_low).max() <= 1e-3 and np.abs(low).max() <= 32.0


@pytest.mark.parametrize("graph", ["single-image", "multi-image"])
def test_predict_matches_sam2_image_predictor(graph, sam2_all, sam2_multi, predictor, rng):
    """predict (single-image graph, masks resized in the graph; or one call of predict_batch on the
    multi-image graph, resized on the host) equals SAM2ImagePredictor.predict prompt by prompt; the
    single mask is the predictor's stability-based choice among the four tokens."""
    if graph == "multi-image":  # other weights (sam2_hiera_small): its own oracle
        oracle = sam2_predictor(load_decoder("sam2_hiera_small", seed=0)[0])
        check_against_predictor(Decoder.load(sam2_multi.path), oracle, rng, batch_call=True)
    else:
        check_against_predictor(Decoder.load(sam2_all.path), predictor, rng, batch_call=False)


def test_aoti_package_predict_matches_sam2_image_predictor(sam2_package, predictor, rng):
    """The same as above for sam2_all's AOTInductor package (built in the background: a test of its
    own, named by its fixture, so it runs after the build with the other package tests)."""
    check_against_predictor(Decoder.load(sam2_package), predictor, rng, batch_call=False)


def check_against_predictor(decoder: Decoder, oracle, rng, batch_call: bool) -> None:
    with decoder:
        images = [(features(rng), size) for size in SIZES]
        batch, wanted = [], []
        for image, size in images:
            set_features(oracle, image["image_embed"], image["high_res_feats"], size)
            for prompt in prompts(rng, size):
                wanted.append(oracle.predict(**prompt))
                batch.append(Prompt(image, size, **prompt))
        if batch_call:
            results = decoder.predict_batch(batch)
        else:
            results = [decoder.predict(p.embedding, orig_size=p.orig_size, point_coords=p.point_coords, point_labels=p.point_labels,
                                       box=p.box, mask_input=p.mask_input, multimask_output=p.multimask_output) for p in batch]
    assert len(results) == len(wanted)
    for got, want in zip(results, wanted):
        assert_same(got, want)


def test_eager_decoder_matches_the_predictor(predictor, rng):
    """Decoder.load() without a file: eager PyTorch with the variant's seeded random weights."""
    image, size = features(rng), SIZES[0]
    set_features(predictor, image["image_embed"], image["high_res_feats"], size)
    with Decoder.load(variant="sam2.1_hiera_tiny", seed=0) as decoder:
        for prompt in prompts(rng, size):
            got = decoder.predict((image["image_embed"], *image["high_res_feats"]), orig_size=size, **prompt)
            assert_same(got, predictor.predict(**prompt))


def test_single_column_is_the_mask_decoders_choice(rng):
    """The host-side single-mask choice equals MaskDecoder._dynamic_multimask_via_stability on
    logits scaled so that both branches occur."""
    mask_decoder = import_sam2()["mask_decoder"].MaskDecoder(
        transformer_dim=256, transformer=torch.nn.Identity(), dynamic_multimask_via_stability=True,
    ).eval()
    logits = rng.standard_normal((16, 4, 256, 256)).astype(np.float32) * np.geomspace(0.5, 50, 16, dtype=np.float32)[:, None, None, None]
    iou = rng.random((16, 4)).astype(np.float32)
    want_logits, want_iou = mask_decoder._dynamic_multimask_via_stability(torch.from_numpy(logits), torch.from_numpy(iou))
    columns = [single_column(logits[b], iou[b]) for b in range(16)]
    assert 0 in columns and set(columns) - {0}  # both branches
    for b, column in enumerate(columns):
        assert np.array_equal(logits[b, column], want_logits[b, 0].numpy()) and iou[b, column] == want_iou[b, 0]


def test_sam2_decoder_names_its_features(sam2_all, rng):
    with Decoder.load(sam2_all.path) as decoder:
        with pytest.raises(BadInputError, match="image's features") as error:
            decoder.predict(features(rng)["image_embed"], point_coords=np.array([[1, 2]]), point_labels=np.array([1]), orig_size=(10, 10))
        assert "\n" not in str(error.value)
        bad = features(rng)
        bad["high_res_feats"][1] = bad["high_res_feats"][1][:, :32]
        with pytest.raises(BadInputError, match="high_res_feats_1 must be float"):
            decoder.predict(bad, point_coords=np.array([[1, 2]]), point_labels=np.array([1]), orig_size=(10, 10))
