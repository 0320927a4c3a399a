"""The Triton Python-backend model behind `segdeploy serve`: each dynamic batch of requests, whatever
images they belong to, becomes one ``Decoder.predict_batch`` call; a bad request gets an error
response of its own and the others in its batch get their results.

Triton imports this inside its Python-backend stub (``model.py`` of the repository re-exports
``TritonPythonModel``); ``triton_python_backend_utils`` exists only there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.errors import BadInputError, SegdeployError
from segdeploy.prompts import Prompt
from segdeploy.serving.model_config import image_tensors


def _optional(pb_utils: Any, request: Any, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def request_prompts(pb_utils: Any, request: Any, decoder: Any) -> list[Prompt]:
    """The prompts of one request (one per row of its batch axis), checked; BadInputError otherwise."""
    embeddings = _optional(pb_utils, request, "image_embeddings")
    sizes = _optional(pb_utils, request, "orig_size")
    if embeddings is None or sizes is None:
        raise BadInputError("a request needs image_embeddings and orig_size")
    family = decoder.family
    extra = {name: _optional(pb_utils, request, name) for name in family.image_inputs if name != "image_embeddings"}
    missing = [name for name, value in extra.items() if value is None]
    if missing:
        raise BadInputError(f"a {family.title} decoder needs {' and '.join(missing)}")
    foreign = [t.name for t in image_tensors() if t.name not in family.image_inputs and _optional(pb_utils, request, t.name) is not None]
    if foreign:
        raise BadInputError(f"{', '.join(foreign)} are not a {family.title} decoder's inputs")
    coords, labels = _optional(pb_utils, request, "point_coords"), _optional(pb_utils, request, "point_labels")
    box, mask = _optional(pb_utils, request, "box"), _optional(pb_utils, request, "mask_input")
    multimask = _optional(pb_utils, request, "multimask_output")
    rows = embeddings.shape[0]
    if len({tuple(size) for size in sizes.tolist()}) != 1:
        raise BadInputError("the prompts of one request must share orig_size (send one request per image)")
    prompts = []
    for row in range(rows):
        embedding = {"image_embeddings": embeddings[row]} | {name: value[row] for name, value in extra.items()}
        prompt = Prompt(
            embedding, sizes[row],
            None if coords is None else coords[row], None if labels is None else labels[row],
            None if box is None else box[row], None if mask is None else mask[row],
            True if multimask is None else bool(multimask[row].reshape(-1)[0]),
        )
        decoder.check(prompt)
        prompts.append(prompt)
    return prompts


class TritonPythonModel:
    """Triton's Python-backend interface: initialize, execute, finalize."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        from segdeploy.runtime import Decoder

        self.pb_utils = pb_utils
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        options = json.loads(parameters.get("segdeploy_options", "{}"))
        source = parameters.get("segdeploy_source") or None
        if source is not None and not Path(source).is_absolute():  # a repository that carries its graph
            source = str(Path(args["model_repository"]) / args["model_version"] / source)
        self.decoder = Decoder.load(source, **options)
        self.calls = 0

    def execute(self, requests: list) -> list:
        pb_utils = self.pb_utils
        responses: list[Any] = [None] * len(requests)
        prompts: list[Prompt] = []
        owners: list[tuple[int, int]] = []  # (request index, its prompt count)
        for index, request in enumerate(requests):
            try:
                mine = request_prompts(pb_utils, request, self.decoder)
            except SegdeployError as error:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"bad request: {error}"))
                continue
            except Exception as error:  # malformed tensors the checks above did not foresee
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"bad request: {type(error).__name__}: {error}"))
                continue
            prompts += mine
            owners.append((index, len(mine)))
        if prompts:
            self.calls += 1
            try:
                results = self.decoder.predict_batch(prompts)
            except Exception as error:  # the server keeps serving; these requests learn why
                for index, _ in owners:
                    responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"inference failed: {type(error).__name__}: {error}"))
                return responses
            start = 0
            for index, count in owners:
                mine = results[start : start + count]
                start += count
                responses[index] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("masks", np.stack([r.masks for r in mine])),
                    pb_utils.Tensor("scores", np.stack([r.scores for r in mine])),
                    pb_utils.Tensor("low_res_masks", np.stack([r.low_res_logits for r in mine])),
                ])
        return responses

    def finalize(self) -> None:
        self.decoder.close()
