"""The SAM 2 verify matrix: SAM 1's rows with SAM 2's prompt conventions and inputs.

As ``SAM2ImagePredictor`` writes prompts: coordinates in the 1024x1024 square (no padding, so any
aspect ratio fills it); a box is two points labelled 2 and 3 placed *before* the clicks; every prompt
ends with the padding point (0,0) labelled -1, box or not (the predictor hands boxes to the prompt
encoder as points, which then always pads). Ragged batches fill with ignored slots (-2). The
per-image inputs are the embedding and the two projected high-resolution maps.
"""

from __future__ import annotations

import numpy as np

from segdeploy import contract
from segdeploy.cases import MATRIX, MULTI_IMAGE_MATRIX, Case, CaseSpec, case_from_prompts, draw_from_matrix, embedding_feeds
from segdeploy.contract import Label
from segdeploy.families.sam2 import contract as sam2_contract

SIDE = contract.MODEL_INPUT_SIZE
SAM2_MATRIX: tuple[CaseSpec, ...] = MATRIX  # no unpadded lone click: SAM 2's predictor always pads
SAM2_MULTI_IMAGE_MATRIX: tuple[CaseSpec, ...] = MULTI_IMAGE_MATRIX


def image_feeds(rng: np.random.Generator, images: int) -> dict[str, np.ndarray]:
    """Embeddings and projected high-resolution maps at unit order of magnitude."""
    return embedding_feeds(rng, (contract.IMAGE_EMBEDDINGS, sam2_contract.HIGH_RES_FEATS_0, sam2_contract.HIGH_RES_FEATS_1), images)


def prompt_points(rng: np.random.Generator, kind: str, max_clicks: int) -> list[tuple[float, float, int]]:
    """One prompt as SAM2ImagePredictor writes it: [box corners,] clicks, padding point."""

    def point() -> tuple[float, float]:
        return float(rng.uniform(0, SIDE)), float(rng.uniform(0, SIDE))

    points: list[tuple[float, float, int]] = []
    if kind in ("box", "box+clicks"):
        (x0, y0), (x1, y1) = point(), point()
        points += [(min(x0, x1), min(y0, y1), Label.BOX_TOP_LEFT), (max(x0, x1), max(y0, y1), Label.BOX_BOTTOM_RIGHT)]
    if kind in ("click", "clicks", "max-clicks", "box+clicks"):
        count = {"click": 1, "max-clicks": max_clicks}.get(kind) or int(rng.integers(1, max_clicks + 1))
        for i in range(count):
            x, y = point()
            points.append((x, y, Label.FOREGROUND if i == 0 or rng.random() < 0.5 else Label.BACKGROUND))
    return points + [(0.0, 0.0, Label.PADDING)]


def draw_case(spec: CaseSpec, rng: np.random.Generator, postprocess: bool = True, multi_image: bool = False) -> Case:
    """Draw one case's values in the SAM 2 contract's form."""
    prompts = [prompt_points(rng, spec.kinds[i % len(spec.kinds)], spec.max_clicks) for i in range(spec.prompts)]
    return case_from_prompts(spec, rng, prompts, image_feeds, postprocess, multi_image, sam2_contract.IMAGE_INPUTS)


def draw_cases(rng: np.random.Generator, count: int | None = None, postprocess: bool = True, multi_image: bool = False) -> list[Case]:
    """``count`` cases cycling through the flavor's matrix (default: each row once)."""
    matrix = SAM2_MULTI_IMAGE_MATRIX if multi_image else SAM2_MATRIX
    return draw_from_matrix(matrix, lambda spec: draw_case(spec, rng, postprocess, multi_image), count)
