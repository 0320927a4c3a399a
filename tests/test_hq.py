"""The HQ-SAM family against segment_anything_hq (PyPI 0.3, its own modules holding the same weights;
fresh seeds every run): the exported graphs and segdeploy.Decoder against SamPredictor.predict with
features and interm_features set directly, both hq_token_only settings and both multimask settings;
verify catching a perturbed HQ weight; fp16; official-layout checkpoints; the contract's C."""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from segdeploy import Decoder, Prompt
from segdeploy.contract import MaskOutput
from segdeploy.errors import BadInputError, MissingDependencyError
from segdeploy.export import ExportOptions, export_onnx
from segdeploy.families.hq.baseline import import_hq, official_sam
from segdeploy.forms import Precision, Target
from segdeploy.registry import family_of_variant, get_family
from segdeploy.verify import VerifyOptions, verify_graph

try:
    import_hq()
    ORACLE_MISSING = None
except MissingDependencyError as exc:  # the oracle: `make test` installs it (make hq-oracle)
    ORACLE_MISSING = str(exc)


@pytest.fixture(autouse=True)
def _oracle_installed():
    """Every test here fails, naming the install step, where the oracle is missing (not a silent skip)."""
    if ORACLE_MISSING:
        pytest.fail(f"{ORACLE_MISSING} (`make hq-oracle` installs it)", pytrace=False)

from segdeploy.families.hq.weights import load_decoder

VARIANT = "hq_vit_tiny"  # C=160: the smallest early feature; every variant shares the code
CHANNELS = 160
SIZES = [(1024, 1024), (480, 640), (1500, 1000), (17, 23)]
LOW_RES_ABS, SCORE_ABS, MASK_IOU = 1e-3, 1e-4, 0.999


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def hq_predictor(decoder):
    """segment_anything_hq's SamPredictor around its Sam holding ``decoder``'s weights; its
    torchvision import (image resizing, never reached here) gets a stand-in where it does not load."""
    sam = official_sam(decoder)
    try:
        importlib.import_module("torchvision.transforms.functional")
        stand_in = False
    except Exception:
        stand_in = True
        functional = types.ModuleType("torchvision.transforms.functional")
        functional.resize = functional.to_pil_image = None
        transforms = types.ModuleType("torchvision.transforms")
        transforms.functional = functional
        package = types.ModuleType("torchvision")
        package.transforms = transforms
        saved = {name: sys.modules.get(name) for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")}
        sys.modules.update({"torchvision": package, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional})
    try:
        predictor_module = importlib.import_module("segment_anything_hq.predictor")
    finally:
        if stand_in:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
    return predictor_module.SamPredictor(sam)


def set_features(predictor, embedding: np.ndarray, interm: np.ndarray, orig_size) -> None:
    """What set_image leaves behind: features, interm_features (the four global blocks; [0] read)."""
    predictor.reset_image()
    predictor.features = torch.from_numpy(embedding)
    predictor.interm_features = [torch.from_numpy(interm)] + [torch.zeros_like(torch.from_numpy(interm))] * 3
    predictor.original_size = tuple(orig_size)
    predictor.input_size = predictor.transform.get_preprocess_shape(orig_size[0], orig_size[1], 1024)
    predictor.is_image_set = True


def random_prompt(rng: np.random.Generator, kind: str, size) -> dict:
    height, width = size
    kwargs: dict = {}
    if "click" in kind:
        count = 1 if kind == "click" else int(rng.integers(2, 5))
        kwargs["point_coords"] = np.stack([rng.uniform(0, width, count), rng.uniform(0, height, count)], axis=1)
        labels = (rng.random(count) < 0.7).astype(np.int64)
        labels[0] = 1
        kwargs["point_labels"] = labels
    if "box" in kind:
        xs, ys = np.sort(rng.uniform(0, width, 2)), np.sort(rng.uniform(0, height, 2))
        kwargs["box"] = np.array([xs[0], ys[0], xs[1], ys[1]])
    if "mask" in kind:
        kwargs["mask_input"] = 20.0 * np.kron(rng.standard_normal((8, 8)), np.ones((32, 32)))[None].astype(np.float32)
    return kwargs


@pytest.fixture(scope="module")
def decoder():
    return load_decoder(VARIANT, None, 0)[0]  # the exports' weights (seed 0)


@pytest.fixture(scope="module")
def predictor(decoder):
    return hq_predictor(decoder)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """The graphs the tests share: single-image with every token (onnxruntime form), the
    multi-image flavor with hq_token_only, and an fp16 graph (tensorrt form)."""
    folder = tmp_path_factory.mktemp("hq")
    return {
        "all": export_onnx(ExportOptions(variant=VARIANT, mask_output=MaskOutput.ALL, out=folder / "all.onnx")).path,
        "multi-hq-only": export_onnx(ExportOptions(
            variant=VARIANT, mask_output=MaskOutput.ALL, multi_image=True, family_options=(("hq_token_only", "1"),), out=folder / "multi.onnx",
        )).path,
    }


@pytest.fixture(scope="module")
def draws(predictor, fresh_seed_module):
    """Images and prompts, with the predictor's answers for both hq_token_only settings."""
    rng = np.random.default_rng(fresh_seed_module)
    kinds = ["click", "box", "clicks+mask", "box+clicks"]
    images, prompts = [], []
    for i, size in enumerate(SIZES[:3]):
        embedding = (0.5 * rng.standard_normal((1, 256, 64, 64))).astype(np.float32)
        interm = (0.5 * rng.standard_normal((1, 64, 64, CHANNELS))).astype(np.float32)
        images.append((embedding, interm, size))
        for j in range(2):
            prompts.append((i, random_prompt(rng, kinds[(2 * i + j) % len(kinds)], size), (i + j) % 2 == 0))
    answers = {}
    for hq_token_only in (False, True):
        for index, (image, kwargs, multimask) in enumerate(prompts):
            set_features(predictor, *images[image])
            answers[hq_token_only, index] = predictor.predict(**kwargs, multimask_output=multimask, hq_token_only=hq_token_only)
    return images, prompts, answers


@pytest.fixture(scope="module")
def fresh_seed_module():
    import secrets

    seed = secrets.randbits(31)
    print(f"seed={seed}")
    return seed


@pytest.mark.parametrize("source", ["all", "multi-hq-only", "eager"])
def test_decoder_matches_hq_predictor(source, graphs, draws):
    """Decoder.predict_batch (one call per image, or one call in all for the multi-image graph) equals
    SamPredictor.predict(..., hq_token_only=the graph's) for every prompt: one mask each."""
    images, prompts, answers = draws
    hq_token_only = source == "multi-hq-only"
    loaded = Decoder.load(None, variant=VARIANT) if source == "eager" else Decoder.load(graphs[source])
    with loaded as runtime:
        batch = [Prompt({"features": images[i][0], "interm_features": [images[i][1]]}, images[i][2], multimask_output=m, **kwargs) for i, kwargs, m in prompts]
        for i, (image, _, _) in enumerate(prompts):  # prompts on one image share one object
            batch[i].embedding = batch[2 * image].embedding
        results = runtime.predict_batch(batch)
    assert len(results) == len(prompts)
    for index, (got, want) in enumerate(zip(results, (answers[hq_token_only, i] for i in range(len(prompts))))):
        masks, scores, low_res = got
        assert masks.shape == want[0].shape == (1, *images[prompts[index][0]][2]), index
        assert np.abs(low_res - want[2]).max() <= LOW_RES_ABS, (index, np.abs(low_res - want[2]).max())
        assert np.abs(scores - want[1]).max() <= SCORE_ABS, index
        assert mask_iou(masks, want[0]) >= MASK_IOU, (index, mask_iou(masks, want[0]))


def test_hq_token_only_changes_the_masks(draws):
    """Both settings were drawn: the fused and the HQ-token-only masks differ (the test above sees both)."""
    _, prompts, answers = draws
    assert any(np.abs(answers[False, i][2] - answers[True, i][2]).max() > 1.0 for i in range(len(prompts)))


def test_graph_records_hq_token_only_and_c(graphs):
    from segdeploy.compare import contract_problems
    from segdeploy.graph_io import load_graph, read_metadata, value_specs
    from segdeploy.provenance import graph_layout

    for name, flag in (("all", "0"), ("multi-hq-only", "1")):
        model = load_graph(graphs[name])
        metadata = read_metadata(model)
        assert metadata["family"] == "hq" and metadata["hq_token_only"] == flag and metadata["variant"] == VARIANT
        layout, _ = graph_layout(metadata, graphs[name])
        interm = next(s for s in layout.inputs() if s.name == "interm_embeddings")
        assert interm.dims[-1] == CHANNELS
        declared = value_specs(model.graph.input), value_specs(model.graph.output)
        assert contract_problems(*declared, layout) == []
        # the same graph read as another variant's: the contract check names C
        other = family_of_variant("hq_vit_b").layout(layout.mask_output, layout.postprocess, layout.multi_image)
        problems = contract_problems(*declared, other)
        assert any("interm_embeddings" in p and "768" in p for p in problems), problems


def test_verify_passes_and_catches_a_perturbed_hq_weight(graphs, tmp_path, rng):
    report = verify_graph(VerifyOptions(onnx=graphs["all"], cases=2, seed=int(rng.integers(1 << 30))))
    assert report.passed, report.to_dict()
    model = onnx.load(str(graphs["all"]))
    # compress_vit_feat's first weight: the one initializer with C input channels (a ConvTranspose's
    # [C,256,2,2], or [C,1024] as a GEMM in the matmul form), on the HQ path only
    tensor = next(t for t in model.graph.initializer if t.dims and t.dims[0] == CHANNELS and len(t.dims) >= 2)
    array = numpy_helper.to_array(tensor).copy()
    eager = load_decoder(VARIANT, None, 0)[0].state_dict()["mask_decoder.compress_vit_feat.0.weight"].numpy()  # the graph's weights
    assert np.array_equal(np.sort(array, axis=None), np.sort(eager, axis=None)), f"{tensor.name} is not compress_vit_feat's first weight"
    index = tuple(int(rng.integers(size)) for size in array.shape)
    array[index] += 2 * np.abs(array).max()
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    faulty = tmp_path / "faulty.onnx"
    onnx.save(model, str(faulty))
    from typer.testing import CliRunner

    from segdeploy.cli import app

    result = CliRunner().invoke(app, ["verify", "--onnx", str(faulty), "--cases", "2", "--seed", str(int(rng.integers(1 << 30)))])
    assert result.exit_code == 1 and "FAIL" in result.output, f"perturbing compress_vit_feat{list(index)} went unnoticed: {result.output}"


def test_fp16_graph(tmp_path, rng):
    path = export_onnx(ExportOptions(variant=VARIANT, precision=Precision.FP16, target=Target.TENSORRT, out=tmp_path / "fp16.onnx")).path
    report = verify_graph(VerifyOptions(onnx=path, cases=3, seed=int(rng.integers(1 << 30))))
    assert report.passed, report.to_dict()
    assert report.worst("masks", "mask_iou_worst") >= 0.99


def test_official_layout_checkpoint_loads(decoder, tmp_path):
    """A file laid out as sam_hq_vit_tiny.pth (SAM's state dict with an image encoder, plus the HQ
    keys), random weights: loads as it is, and the graph equals that model."""
    other, _ = load_decoder(VARIANT, None, 7)
    state = official_sam(other).state_dict()
    hq_keys = [k for k in state if k.startswith(("mask_decoder.hf_", "mask_decoder.compress_vit_feat", "mask_decoder.embedding_"))]
    assert len(hq_keys) == 25
    state["image_encoder.patch_embed.proj.weight"] = torch.zeros(64, 3, 4, 4)
    path = tmp_path / "sam_hq_vit_tiny.pth"
    torch.save(state, path)
    loaded, info = load_decoder(VARIANT, path)
    assert info.sha256
    for key, value in other.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(BadInputError, match="width 160"):
        load_decoder("hq_vit_b", path)
    sam_only = {k: v for k, v in state.items() if k not in hq_keys}
    torch.save(sam_only, tmp_path / "sam.pth")
    with pytest.raises(BadInputError, match="without HQ-SAM"):
        load_decoder(VARIANT, tmp_path / "sam.pth")


def test_every_variant_has_its_width():
    for variant, channels in (("hq_vit_b", 768), ("hq_vit_l", 1024), ("hq_vit_h", 1280), ("hq_vit_tiny", 160)):
        family = family_of_variant(variant)
        assert family is get_family("hq").bind({"variant": variant})
        assert family.image_specs()[1].dims == (1, 64, 64, channels)
    assert get_family("hq").image_specs()[1].dims == (1, 64, 64, -1)  # unbound: C varies


def test_tensorrt_profiles_fix_c():
    from segdeploy.tensorrt.profiles import EngineProfile

    family = family_of_variant("hq_vit_l")
    single = EngineProfile().shapes(family.layout())
    assert single["interm_embeddings"] == ((1, 64, 64, 1024),) * 3
    multi = EngineProfile().shapes(family.layout(MaskOutput.ALL, postprocess=False, multi_image=True))
    assert [shape[0] for shape in multi["interm_embeddings"]] == [shape[0] for shape in multi["image_embeddings"]]
    assert all(shape[1:] == (64, 64, 1024) for shape in multi["interm_embeddings"])


@pytest.mark.parametrize("mask_output,hq_token_only", [(MaskOutput.BEST, False), (MaskOutput.BEST, True), (MaskOutput.SINGLE, False)],
                         ids=["best-fused", "best-hq-token-only", "single-fused"])
def test_official_signature_graph_equals_samonnxmodel(decoder, tmp_path, rng, mask_output, hq_token_only):
    """`export --signature official --mask-output best|single`: the official HQ export's inputs (float
    sizes, interm_embeddings [4,1,64,64,C], only [0] read), one prompt per call, against
    segment_anything_hq's own SamOnnxModel (multimask_output=True for best, its default False for
    single) run eagerly, which is right at every size (its traced export is not), with the same
    weights: every input kind, every size, both hq_token_only settings."""
    import onnxruntime as ort
    from test_official_signature import client_feeds

    from segdeploy.contract import Signature

    options = ExportOptions(variant=VARIANT, signature=Signature.OFFICIAL, mask_output=mask_output, out=tmp_path / "official.onnx",
                            family_options=(("hq_token_only", "1" if hq_token_only else "0"),))
    session = ort.InferenceSession(str(export_onnx(options).path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == ["image_embeddings", "interm_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"]
    reference = import_hq()["onnx"].SamOnnxModel(official_sam(decoder), hq_token_only=hq_token_only, multimask_output=mask_output is MaskOutput.BEST).eval()
    for size in SIZES[:3]:
        for feeds in client_feeds(rng, size):  # the official client's prompts, plus the early ViT features
            feeds["interm_embeddings"] = np.concatenate([0.5 * rng.standard_normal((1, 1, 64, 64, CHANNELS)), rng.standard_normal((3, 1, 64, 64, CHANNELS))]).astype(np.float32)
            masks, scores, low_res = session.run(["masks", "iou_predictions", "low_res_masks"], feeds)
            with torch.no_grad():
                want_masks, want_scores, want_low = (t.numpy() for t in reference(**{k: torch.from_numpy(v) for k, v in feeds.items()}))
            kind = feeds["point_labels"].tolist()
            assert masks.shape == want_masks.shape == (1, 1, *size), (kind, size)
            assert np.abs(low_res - want_low).max() <= LOW_RES_ABS, (kind, size, np.abs(low_res - want_low).max())
            assert np.abs(scores - want_scores).max() <= SCORE_ABS, (kind, size)
            assert mask_iou(masks[0, 0] > 0, want_masks[0, 0] > 0) >= MASK_IOU, (kind, size)


def test_official_signature_mask_outputs_are_the_families_own(tmp_path):
    """HQ-SAM's official export has one mask (single or best); SAM 1's has all or best: the others are
    refused in one line that names the choices."""
    from typer.testing import CliRunner

    from segdeploy.cli import app

    for variant, mask_output, named in ((VARIANT, "all", "single (SamOnnxModel's default"), ("sam_vit_b", "single", "all (SamOnnxModel's four masks)")):
        result = CliRunner().invoke(app, ["export", "--variant", variant, "--signature", "official", "--mask-output", mask_output, "--out", str(tmp_path / "x.onnx")])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and named in lines[0], result.output
