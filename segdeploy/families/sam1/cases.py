"""The SAM 1 verify matrix: the shared rows plus SAM 1's lone unpadded click, with prompts written
as ``SamPredictor`` writes them: coordinates in the longest-side-resized frame, clicks then box
corners, SAM's padding point (0,0) labelled -1 only when there is no box."""

from __future__ import annotations

import numpy as np

from segdeploy import contract
from segdeploy.cases import MATRIX, MULTI_IMAGE_MATRIX, Case, CaseSpec, case_from_prompts, draw_from_matrix, embedding_feeds
from segdeploy.contract import Label
from segdeploy.families.sam1.contract import IMAGE_INPUTS

# SAM 1's own row: a lone click without SAM's padding point (N=1), which its official export takes.
SAM1_MATRIX: tuple[CaseSpec, ...] = (
    MATRIX[0], CaseSpec("lone point, no padding (N=1)", 1, ("unpadded",), (768, 1024)), *MATRIX[1:],
)
SAM1_MULTI_IMAGE_MATRIX = MULTI_IMAGE_MATRIX


def prepadded(orig_size: tuple[int, int]) -> tuple[int, int]:
    """SAM's longest-side resize of (H, W) into the model-input frame."""
    height, width = orig_size
    longest = max(height, width)
    side = contract.MODEL_INPUT_SIZE
    return (height * side + longest // 2) // longest, (width * side + longest // 2) // longest


def _prompt(rng: np.random.Generator, kind: str, frame: tuple[int, int], max_clicks: int) -> list[tuple[float, float, int]]:
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
