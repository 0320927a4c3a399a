"""Checkpoint loading: official layouts load as they are; everything else gets a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from oracle import official_decoder

from segdeploy.errors import BadInputError
from segdeploy.families.sam1.weights import random_decoder
from segdeploy.registry import load_decoder
from segdeploy.weights import RANDOM_LOGIT_STD, file_sha256


@pytest.fixture(scope="module")
def decoder_state():
    decoder, _ = load_decoder(seed=7)
    return decoder.state_dict()


def official_layout(decoder_state) -> dict[str, torch.Tensor]:
    """A full SAM checkpoint's layout: image_encoder.* (tiny stand-ins here) beside the decoder keys."""
    state = {"image_encoder.patch_embed.proj.weight": torch.zeros(8, 3, 16, 16), "image_encoder.pos_embed": torch.zeros(1, 4, 4, 8)}
    state.update(decoder_state)
    return state


def assert_same_weights(model, state):
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_official_checkpoint_loads_and_is_hashed(tmp_path, decoder_state):
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(official_layout(decoder_state), path)
    model, info = load_decoder("sam_vit_b", path)
    assert_same_weights(model, decoder_state)
    assert info.sha256 == file_sha256(path) and info.seed is None


def test_official_modules_accept_our_state_dict(decoder_state):
    official_decoder(decoder_state)  # strict load: same key names and shapes as segment-anything


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict"])
def test_decoder_only_and_wrapped_checkpoints(tmp_path, decoder_state, wrapper):
    path = tmp_path / "mobile_sam.pt"
    torch.save(decoder_state if wrapper is None else {wrapper: decoder_state}, path)
    model, info = load_decoder("mobile_sam", path)
    assert_same_weights(model, decoder_state)
    assert info.variant == "mobile_sam"


def test_safetensors_checkpoint(tmp_path, decoder_state):
    from safetensors.torch import save_file

    path = tmp_path / "decoder.safetensors"
    save_file({k: v.contiguous() for k, v in decoder_state.items()}, str(path))
    model, _ = load_decoder("sam_vit_h", path)
    assert_same_weights(model, decoder_state)


def test_missing_file(tmp_path):
    with pytest.raises(BadInputError, match="checkpoint not found"):
        load_decoder("sam_vit_b", tmp_path / "nope.pth")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(BadInputError, match="not a readable PyTorch or safetensors checkpoint"):
        load_decoder("sam_vit_b", path)


class _Touches:
    """Unpickling this creates a file: a visible side effect, as a hostile checkpoint's would be."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_arbitrary_pickled_objects_are_refused_unrun(tmp_path):
    path, marker = tmp_path / "evil.pth", tmp_path / "ran"
    torch.save({"model": _Touches(marker), "mask_decoder.iou_token.weight": torch.zeros(4, 256)}, path)
    with pytest.raises(BadInputError, match="not a readable PyTorch"):
        load_decoder("sam_vit_b", path)
    assert not marker.exists()  # weights_only: the object's code never ran


def test_foreign_keys_are_named(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(BadInputError, match=r"no prompt_encoder.\* or mask_decoder.\* weights \(found conv1.weight\)"):
        load_decoder("sam_vit_b", path)


def test_missing_and_mismatched_keys_are_named(tmp_path, decoder_state):
    state = dict(decoder_state)
    del state["mask_decoder.iou_token.weight"]
    state["mask_decoder.mask_tokens.weight"] = torch.zeros(5, 256)
    path = tmp_path / "hq.pth"
    torch.save(state, path)
    with pytest.raises(BadInputError) as error:
        load_decoder("sam_vit_b", path)
    message = str(error.value)
    assert "missing 1 keys (e.g. mask_decoder.iou_token.weight)" in message
    assert "mask_decoder.mask_tokens.weight (5, 256) vs (4, 256)" in message
    assert "\n" not in message


def test_unknown_variant():
    with pytest.raises(BadInputError, match="unknown variant"):
        load_decoder("sam_vit_xxl")


def test_random_weights_are_seeded_and_give_realistic_logits(rng):
    from segdeploy.contract import MaskOutput
    from segdeploy.families.sam1.cases import SAM1_MATRIX as MATRIX
    from segdeploy.families.sam1.cases import draw_case
    from segdeploy.families.sam1.graph import SamDecoderGraph as DecoderGraph
    from segdeploy.registry import get_family

    seed = int(rng.integers(1 << 30))
    a, b = random_decoder("sam_vit_b", seed), random_decoder("sam_vit_b", seed)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.state_dict()["mask_decoder.iou_token.weight"], random_decoder("sam_vit_b", seed + 1).state_dict()["mask_decoder.iou_token.weight"])
    case = draw_case(MATRIX[3], rng, postprocess=False)
    with torch.no_grad():
        _, low = DecoderGraph(a, MaskOutput.MULTI, False)(*(torch.from_numpy(case.feeds[s.name]) for s in get_family("sam1").layout(postprocess=False).inputs()))
    # tens, as with trained SAM weights; default initialisation would give logits under 1
    assert RANDOM_LOGIT_STD / 3 < float(low.std()) < RANDOM_LOGIT_STD * 3
    assert float(low.abs().max()) > 10


def test_seeded_copies_equal_a_fresh_build_and_stay_apart():
    """load_decoder of random weights hands out copies of one build per process: a caller changing
    its copy changes no later one, and every copy equals building the weights anew."""
    mine, _ = load_decoder("sam_vit_b", None, 5)
    with torch.no_grad():
        next(mine.parameters()).add_(1.0)
    later, _ = load_decoder("sam_vit_b", None, 5)
    fresh = random_decoder("sam_vit_b", 5)
    assert later.state_dict().keys() == fresh.state_dict().keys()
    assert all(torch.equal(later.state_dict()[k], fresh.state_dict()[k]) for k in fresh.state_dict())
