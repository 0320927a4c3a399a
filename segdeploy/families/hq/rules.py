"""HQ-SAM's pre- and postprocessing for the runtime: SamPredictor's (segment_anything_hq's predictor is
segment-anything's with ``interm_features`` and ``hq_token_only`` added):

- coordinates, prompts and full-size masks: SAM's longest-side frame (``segdeploy.prompts``);
- the image's inputs: ``features`` and ``interm_features`` as ``set_image`` keeps them;
- one mask per prompt: with ``multimask_output`` the best-scored of tokens 1..3, else token 0 (each
  fused with the HQ token in the graph).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from segdeploy import contract
from segdeploy.errors import BadInputError
from segdeploy.families.hq import contract as hq_contract
from segdeploy.prompts import check_embedding

SIDE = contract.EMBEDDING_SIZE


def check_features(value: Any, channels: int | None, where: str = "") -> dict[str, np.ndarray]:
    """One image's inputs as float32 arrays by input name, without the leading image dimension.

    Takes a mapping by input name (``image_embeddings``, ``interm_embeddings``) or SamPredictor's
    (``features``, ``interm_features``), or the pair (features, interm_features); the early feature
    may be ``interm_features`` as the predictor keeps it (a list of the global blocks' [1,64,64,C]
    outputs, of which [0] is read), a stack of them [K,1,64,64,C], or [1,64,64,C] / [64,64,C].
    ``channels``: the C the decoder takes (None: any ViT width HQ-SAM has)."""
    if isinstance(value, Mapping) and set(value) == set(hq_contract.IMAGE_INPUTS):
        parts = [value[name] for name in hq_contract.IMAGE_INPUTS]
    elif isinstance(value, Mapping) and {"features", "interm_features"} <= set(value):
        parts = [value["features"], value["interm_features"]]
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 2:
        parts = list(value)
    else:
        raise BadInputError(
            f"{where}an HQ-SAM decoder takes the image's (features, interm_features) as SamPredictor keeps them, "
            "or {'image_embeddings': ..., 'interm_embeddings': ...}"
        )
    return {contract.IMAGE_EMBEDDINGS.name: check_embedding(parts[0], where), "interm_embeddings": check_interm(parts[1], channels, where)}


def check_interm(value: Any, channels: int | None, where: str = "") -> np.ndarray:
    if isinstance(value, (list, tuple)):
        if not value:
            raise BadInputError(f"{where}interm_features is empty")
        value = value[0]  # the first global block's output, as MaskDecoderHQ reads it
    try:
        array = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
    except Exception as exc:
        raise BadInputError(f"{where}interm_embeddings is not an array ({type(exc).__name__})") from None
    if array.ndim == 5:  # the official export's stack [K,1,64,64,C]: [0] is read
        array = array[0]
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    widths = (channels,) if channels else tuple(sorted(set(hq_contract.VIT_CHANNELS.values())))
    if array.ndim != 3 or array.shape[:2] != (SIDE, SIDE) or array.shape[2] not in widths or not np.issubdtype(array.dtype, np.floating):
        wanted = "C" if channels is None else str(channels)
        raise BadInputError(f"{where}interm_embeddings must be float [1,{SIDE},{SIDE},{wanted}] (channels last), got {array.dtype} {list(array.shape)}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise BadInputError(f"{where}interm_embeddings holds NaN or inf")
    return array


def multimask_column(iou: np.ndarray) -> int:
    """MaskDecoderHQ's multimask choice among the candidates (tokens 1..3): the best-scored one."""
    return int(np.argmax(iou))
