"""The verify case matrix every family draws from: prompts drawn fresh from a seeded RNG, in the
contract's form.

Each case names its batch size, prompt kinds, mask-input use and original image size; the values
(embeddings, coordinates, masks) are random on every draw. A family draws each prompt as its
predictor writes it (``families/<name>/cases.py``); here they are packed as the contract says: a
box is two points labelled 2 and 3, a ragged batch fills shorter prompts with ignored slots
labelled -2, and mask inputs follow the row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from segdeploy import contract
from segdeploy.contract import Label

# Image embeddings are drawn at unit order of magnitude, as the image encoder's outputs are.
EMBEDDING_STD = 0.5
MASK_LOGIT_SCALE = 20.0


@dataclass(frozen=True)
class CaseSpec:
    """One row of the matrix: what is drawn, not the values."""

    name: str
    prompts: int
    kinds: tuple[str, ...]  # cycled over prompts: "click", "clicks", "max-clicks", "box", "box+clicks" (a family may add its own)
    orig_size: tuple[int, int]  # (H, W)
    mask_input: str = "off"  # "off", "on", "mixed"
    max_clicks: int = 4
    images: int = 1  # the multi-image flavor: prompts spread over this many images


MATRIX: tuple[CaseSpec, ...] = (
    CaseSpec("one click, square", 1, ("click",), (1024, 1024)),
    CaseSpec("negative clicks, portrait", 2, ("clicks",), (1500, 1000)),
    CaseSpec("boxes, landscape", 7, ("box",), (720, 1280)),
    CaseSpec("box plus clicks, mask input", 2, ("box+clicks",), (1080, 1920), mask_input="on"),
    CaseSpec("ragged mixed prompts", 7, ("click", "box", "clicks", "box+clicks"), (480, 640), "mixed"),
    CaseSpec("16 points", 2, ("max-clicks", "clicks"), (1024, 768), max_clicks=15),
    CaseSpec("tiny image", 2, ("box+clicks",), (17, 23)),
    CaseSpec("large image", 1, ("box+clicks",), (3000, 4000), "on"),
    CaseSpec("32 prompts ragged", 32, ("click", "clicks", "box", "box+clicks"), (256, 192), "mixed"),
)

# The multi-image flavor's matrix: every row but the first spreads its prompts over several images
# (some images may get no prompt); the coordinates' frame comes from orig_size as above.
MULTI_IMAGE_MATRIX: tuple[CaseSpec, ...] = (
    CaseSpec("one image, one click", 1, ("click",), (1024, 1024)),
    CaseSpec("2 images, boxes", 4, ("box",), (720, 1280), images=2),
    CaseSpec("3 images, ragged mixed prompts", 7, ("click", "box", "clicks", "box+clicks"), (480, 640), "mixed", images=3),
    CaseSpec("5 images, box plus clicks, mask input", 3, ("box+clicks",), (1080, 1920), "on", images=5),
    CaseSpec("8 images, 24 prompts ragged", 24, ("click", "clicks", "box", "box+clicks"), (1500, 1000), "mixed", images=8),
    CaseSpec("2 images, 16 points", 2, ("max-clicks", "clicks"), (1024, 768), max_clicks=15, images=2),
)


# The rows for SamPredictor's conventions: the shared ones plus a lone click without SAM's padding
# point (N=1), which segment-anything's official export takes.
LONGEST_SIDE_MATRIX: tuple[CaseSpec, ...] = (
    MATRIX[0], CaseSpec("lone point, no padding (N=1)", 1, ("unpadded",), (768, 1024)), *MATRIX[1:],
)


def prepadded(orig_size: tuple[int, int]) -> tuple[int, int]:
    """SAM's longest-side resize of (H, W) into the model-input frame."""
    height, width = orig_size
    longest = max(height, width)
    side = contract.MODEL_INPUT_SIZE
    return (height * side + longest // 2) // longest, (width * side + longest // 2) // longest


def longest_side_prompt(rng: np.random.Generator, kind: str, frame: tuple[int, int], max_clicks: int) -> list[tuple[float, float, int]]:
    """One prompt as SamPredictor writes it in the longest-side frame ``frame`` (H, W): clicks, then
    box corners; the padding point (0,0) labelled -1 only without a box; "unpadded" is one bare click."""
    height, width = frame

    def point() -> tuple[float, float]:
        return float(rng.uniform(0, width)), float(rng.uniform(0, height))

    points: list[tuple[float, float, int]] = []
    if kind == "unpadded":
        x, y = point()
        return [(x, y, Label.FOREGROUND)]
    if kind in ("click", "clicks", "max-clicks", "box+clicks"):
        count = {"click": 1, "max-clicks": max_clicks}.get(kind) or int(rng.integers(1, max_clicks + 1))
        for i in range(count):
            x, y = point()
            label = Label.FOREGROUND if i == 0 or rng.random() < 0.5 else Label.BACKGROUND
            points.append((x, y, label))
    if kind in ("box", "box+clicks"):
        (x0, y0), (x1, y1) = point(), point()
        points.append((min(x0, x1), min(y0, y1), Label.BOX_TOP_LEFT))
        points.append((max(x0, x1), max(y0, y1), Label.BOX_BOTTOM_RIGHT))
    else:
        points.append((0.0, 0.0, Label.PADDING))
    return points


@dataclass
class Case:
    """A drawn case: contract feeds plus each prompt's real length (for the ragged check)."""

    spec: CaseSpec
    feeds: dict[str, np.ndarray]
    lengths: list[int] = field(default_factory=list)
    image_inputs: tuple[str, ...] = field(kw_only=True)  # feeds with one row per image

    @property
    def is_ragged(self) -> bool:
        return len(set(self.lengths)) > 1

    @property
    def num_points(self) -> int:
        return int(self.feeds[contract.POINT_COORDS.name].shape[1])

    @property
    def num_images(self) -> int:
        return int(self.feeds[contract.IMAGE_EMBEDDINGS.name].shape[0])

    @property
    def is_multi_image(self) -> bool:
        return contract.IMAGE_INDEX.name in self.feeds


def _mask_logits(rng: np.random.Generator) -> np.ndarray:
    """A blobby low-res mask in logit units, like a previous prediction."""
    side = contract.LOW_RES_SIZE
    coarse = rng.standard_normal((8, 8)).astype(np.float32)
    return MASK_LOGIT_SCALE * np.kron(coarse, np.ones((side // 8, side // 8), np.float32))


def embedding_feeds(rng: np.random.Generator, specs, images: int) -> dict[str, np.ndarray]:
    """Per-image inputs of ``specs`` for ``images`` images, at unit order of magnitude."""
    return {spec.name: (EMBEDDING_STD * rng.standard_normal((images, *spec.dims[1:]))).astype(np.float32) for spec in specs}


def draw_from_matrix(
    matrix: tuple[CaseSpec, ...], draw: Callable[[CaseSpec], Case], count: int | None = None,
) -> list[Case]:
    """``count`` cases cycling through ``matrix`` (default: each row once), each drawn by ``draw``."""
    count = len(matrix) if count is None else count
    return [draw(matrix[i % len(matrix)]) for i in range(count)]


def case_from_prompts(
    spec: CaseSpec, rng: np.random.Generator, prompts: list[list[tuple[float, float, int]]],
    image_feeds: Callable[[np.random.Generator, int], dict[str, np.ndarray]], postprocess: bool, multi_image: bool,
    image_inputs: tuple[str, ...],
) -> Case:
    """A case from drawn prompts (x, y, label in the model-input frame): packed with ignored slots
    that carry garbage coordinates, mask inputs as the row says, the images from ``image_feeds``
    (one per call, or the row's count spread by ``image_index`` in the multi-image flavor)."""
    width = max(len(p) for p in prompts)
    coords = rng.uniform(0, contract.MODEL_INPUT_SIZE, (spec.prompts, width, 2)).astype(np.float32)  # ignored slots: must not matter
    labels = np.full((spec.prompts, width), float(Label.IGNORED), np.float32)
    for b, prompt in enumerate(prompts):
        for n, (x, y, label) in enumerate(prompt):
            coords[b, n] = (x, y)
            labels[b, n] = float(label)
    has_mask = {"off": np.zeros, "on": np.ones}.get(spec.mask_input)
    has_mask_input = has_mask(spec.prompts, np.float32) if has_mask else (rng.random(spec.prompts) < 0.5).astype(np.float32)
    images = spec.images if multi_image else 1
    feeds = image_feeds(rng, images)
    if multi_image:
        feeds[contract.IMAGE_INDEX.name] = rng.integers(0, images, spec.prompts).astype(np.int64)
    feeds |= {
        contract.POINT_COORDS.name: coords,
        contract.POINT_LABELS.name: labels,
        contract.MASK_INPUT.name: np.stack([_mask_logits(rng)[None] for _ in range(spec.prompts)]),
        contract.HAS_MASK_INPUT.name: has_mask_input,
    }
    if postprocess and not multi_image:
        feeds[contract.ORIG_IM_SIZE.name] = np.array(spec.orig_size, np.int64)
    return Case(spec=spec, feeds=feeds, lengths=[len(p) for p in prompts], image_inputs=image_inputs)


def single_prompt(case: Case, index: int) -> dict[str, np.ndarray]:
    """The feeds of prompt ``index`` alone, without its ignored slots (and, in the multi-image
    flavor, with its own image only)."""
    length = case.lengths[index]
    feeds = dict(case.feeds)
    if case.is_multi_image:
        image = int(case.feeds[contract.IMAGE_INDEX.name][index])
        for name in case.image_inputs:
            feeds[name] = np.ascontiguousarray(case.feeds[name][image : image + 1])
        feeds[contract.IMAGE_INDEX.name] = np.zeros(1, np.int64)
    for name in (contract.POINT_COORDS.name, contract.POINT_LABELS.name):
        feeds[name] = np.ascontiguousarray(case.feeds[name][index : index + 1, :length])
    for name in (contract.MASK_INPUT.name, contract.HAS_MASK_INPUT.name):
        feeds[name] = np.ascontiguousarray(case.feeds[name][index : index + 1])
    return feeds
