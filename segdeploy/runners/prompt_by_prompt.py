"""Runs a graph with the official export's signature (one prompt per call, float32 orig_im_size)
under this contract's feeds: each prompt of a batch is one call, without its ignored (-2) slots."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from segdeploy import contract
from segdeploy.contract import GraphLayout, Label, MaskOutput, Signature
from segdeploy.runners.base import Runner


def official_feeds(feeds: Mapping[str, np.ndarray], index: int, image_inputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Prompt ``index`` of contract feeds in the official signature's form (the per-image inputs
    ``image_inputs`` as they are)."""
    keep = feeds[contract.POINT_LABELS.name][index] != float(Label.IGNORED)
    return {name: feeds[name] for name in image_inputs} | {
        "point_coords": np.ascontiguousarray(feeds["point_coords"][index : index + 1, keep]),
        "point_labels": np.ascontiguousarray(feeds["point_labels"][index : index + 1, keep]),
        "mask_input": np.ascontiguousarray(feeds["mask_input"][index : index + 1]),
        "has_mask_input": np.ascontiguousarray(feeds["has_mask_input"][index : index + 1]),
        "orig_im_size": feeds["orig_im_size"].astype(np.float32),
    }


class PromptByPromptRunner(Runner):
    """Contract feeds (prompt batches, int64 size) in, contract outputs out; ``inner`` runs one
    prompt per call with the official signature."""

    def __init__(self, inner: Runner, layout: GraphLayout) -> None:
        outer = layout.family.layout(layout.mask_output, postprocess=True, signature=Signature.OFFICIAL)
        super().__init__(layout.family.layout(MaskOutput.ALL, postprocess=True).inputs(), outer.output_names())
        self.image_inputs = layout.family.image_inputs
        self.family = layout.family
        self.inner = inner
        self.name = f"{inner.name} (one prompt per call)"
        self.thread_safe = inner.thread_safe

    def _activate(self) -> None:
        self.inner.activate()

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results: dict[str, list[np.ndarray]] = {name: [] for name in self.output_names}
        for index in range(feeds[contract.POINT_COORDS.name].shape[0]):
            outputs = self.inner.infer(self.family.official_images(official_feeds(feeds, index, self.image_inputs)))
            for name in self.output_names:
                results[name].append(outputs[name])
        return {name: np.concatenate(values) for name, values in results.items()}
