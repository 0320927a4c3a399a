"""The HQ-SAM verify matrix: SAM's rows and prompt conventions (HQ-SAM's predictor is SamPredictor's),
with the early ViT feature map beside each image embedding."""

from __future__ import annotations

import numpy as np

from segdeploy import contract
from segdeploy.cases import LONGEST_SIDE_MATRIX, MULTI_IMAGE_MATRIX, Case, CaseSpec, case_from_prompts, draw_from_matrix, embedding_feeds, longest_side_prompt, prepadded
from segdeploy.families.hq import contract as hq_contract

HQ_MATRIX: tuple[CaseSpec, ...] = LONGEST_SIDE_MATRIX
HQ_MULTI_IMAGE_MATRIX: tuple[CaseSpec, ...] = MULTI_IMAGE_MATRIX


def image_feeds(rng: np.random.Generator, images: int, channels: int) -> dict[str, np.ndarray]:
    """Embeddings and early ViT features (C channels) at unit order of magnitude."""
    return embedding_feeds(rng, (contract.IMAGE_EMBEDDINGS, hq_contract.interm_spec(channels)), images)


def draw_case(spec: CaseSpec, rng: np.random.Generator, channels: int, postprocess: bool = True, multi_image: bool = False) -> Case:
    frame = prepadded(spec.orig_size)
    prompts = [longest_side_prompt(rng, spec.kinds[i % len(spec.kinds)], frame, spec.max_clicks) for i in range(spec.prompts)]
    return case_from_prompts(spec, rng, prompts, lambda r, n: image_feeds(r, n, channels), postprocess, multi_image, hq_contract.IMAGE_INPUTS)


def draw_cases(rng: np.random.Generator, channels: int, count: int | None = None, postprocess: bool = True, multi_image: bool = False) -> list[Case]:
    """``count`` cases cycling through the flavor's matrix (default: each row once)."""
    matrix = HQ_MULTI_IMAGE_MATRIX if multi_image else HQ_MATRIX
    return draw_from_matrix(matrix, lambda spec: draw_case(spec, rng, channels, postprocess, multi_image), count)
