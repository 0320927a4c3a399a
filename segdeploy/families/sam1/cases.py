"""The SAM 1 verify matrix: the shared rows plus SAM 1's lone unpadded click, with prompts written
as ``SamPredictor`` writes them: coordinates in the longest-side-resized frame, clicks then box
corners, SAM's padding point (0,0) labelled -1 only when there is no box."""

from __future__ import annotations

import numpy as np

from segdeploy import contract
from segdeploy.cases import LONGEST_SIDE_MATRIX, MULTI_IMAGE_MATRIX, Case, CaseSpec, case_from_prompts, draw_from_matrix, embedding_feeds
from segdeploy.cases import longest_side_prompt as _prompt
from segdeploy.cases import prepadded  # noqa: F401 - SamPredictor's frame, shared
from segdeploy.families.sam1.contract import IMAGE_INPUTS

# SAM 1's matrix: the shared rows plus a lone click without SAM's padding point (N=1), which its
# official export takes.
SAM1_MATRIX: tuple[CaseSpec, ...] = LONGEST_SIDE_MATRIX
SAM1_MULTI_IMAGE_MATRIX = MULTI_IMAGE_MATRIX


def draw_case(spec: CaseSpec, rng: np.random.Generator, postprocess: bool = True, multi_image: bool = False) -> Case:
    """Draw the values of one case; ``multi_image`` writes the multi-image flavor's feeds."""
    frame = prepadded(spec.orig_size)
    prompts = [_prompt(rng, spec.kinds[i % len(spec.kinds)], frame, spec.max_clicks) for i in range(spec.prompts)]
    return case_from_prompts(spec, rng, prompts, image_feeds, postprocess, multi_image, IMAGE_INPUTS)


def image_feeds(rng: np.random.Generator, images: int) -> dict[str, np.ndarray]:
    """``images`` image embeddings at unit order of magnitude."""
    return embedding_feeds(rng, (contract.IMAGE_EMBEDDINGS,), images)


def draw_cases(rng: np.random.Generator, count: int | None = None, postprocess: bool = True, multi_image: bool = False) -> list[Case]:
    """Draw ``count`` cases cycling through the flavor's matrix (default: each row once)."""
    matrix = SAM1_MULTI_IMAGE_MATRIX if multi_image else SAM1_MATRIX
    return draw_from_matrix(matrix, lambda spec: draw_case(spec, rng, postprocess, multi_image), count)
