"""A Python client of `segdeploy serve` over tritonclient: register an image once, then click by its id.

``predict`` returns what ``Decoder.predict`` returns (a ``Prediction``: masks [M,H,W] bool, scores [M],
low-res logits [M,256,256]), so a local decoder and a remote one are interchangeable::

    client = SegdeployClient("127.0.0.1:8001")          # gRPC (or "http://127.0.0.1:8000")
    image_id = client.add_image(embedding, orig_size=(H, W))   # or add_image(image=png_bytes) with serve --encoder
    masks, scores, low_res = client.predict(image_id, point_coords=[[x, y]], point_labels=[1])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from segdeploy.errors import BadInputError, MissingDependencyError, SegdeployError
from segdeploy.runtime.decoder import Prediction
from segdeploy.serving.model_config import KSERVE_TYPES, MODEL_NAME, SERVE_INPUTS, image_tensors

DTYPES = {t.name: t.dtype for t in (*image_tensors(), *SERVE_INPUTS)}


class ServerError(SegdeployError):
    """The server refused a request (its one-line reason), e.g. an image id it no longer holds."""

    exit_code = 1


class SegdeployClient:
    """One connection to `segdeploy serve` (gRPC by default; ``http://`` URLs use HTTP). Not thread-safe:
    one client per thread."""

    def __init__(self, url: str = "127.0.0.1:8001", *, model: str = MODEL_NAME, timeout_s: float | None = None):
        http = url.startswith(("http://", "https://"))
        try:
            if http:
                import tritonclient.http as module
            else:
                import tritonclient.grpc as module
        except ImportError:
            raise MissingDependencyError("the segdeploy client needs tritonclient: pip install 'segdeploy[serve]'") from None
        self.module, self.model, self.timeout_s = module, model, timeout_s
        self.client = module.InferenceServerClient(url.split("://", 1)[1] if http else url)
        self.last_request_bytes = self.last_response_bytes = 0  # payload bytes of the last call (tensors only)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> SegdeployClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_image(self, embedding: Any = None, *, image: bytes | np.ndarray | None = None, image_id: str | None = None,
                  orig_size: Sequence[int] | None = None) -> str:
        """Register an image in the server's store; returns its id (``image_id``, or one the server
        derives from the content). Give its embedding (SAM 2: the features, as a mapping by input
        name or the sequence image_embeddings, high_res_feats_0, high_res_feats_1) with the image's
        ``orig_size`` (H, W), or the image itself (PNG/JPEG bytes, or an RGB uint8 [H,W,3] array) on
        a server started with --encoder."""
        if (embedding is None) == (image is None):
            raise BadInputError("add_image takes an embedding or an image, one of them")
        feeds: dict[str, np.ndarray] = {}
        if embedding is not None:
            feeds |= {name: array[None] for name, array in _image_arrays(embedding).items()}
        elif isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise BadInputError(f"an image array must be RGB uint8 [H,W,3], got {image.dtype} {list(image.shape)}")
            feeds["image"] = np.array([[np.ascontiguousarray(image).tobytes()]], dtype=np.object_)
            orig_size = image.shape[:2]
        else:
            feeds["image"] = np.array([[bytes(image)]], dtype=np.object_)
        if orig_size is not None:
            feeds["orig_size"] = np.asarray(orig_size, np.int64).reshape(1, 2)
        if image_id is not None:
            feeds["image_id"] = np.array([[image_id.encode()]], dtype=np.object_)
        result = self._infer(feeds, ["image_id"])
        return _text(result.as_numpy("image_id"))

    def predict(
        self, image_id: str, *, point_coords: Any = None, point_labels: Any = None, box: Any = None, mask_input: Any = None,
        orig_size: Sequence[int] | None = None, multimask_output: bool = True, best_only: bool = False,
        use_previous_logits: bool = False, low_res: bool = True, mask_format: str = "rle",
    ) -> Prediction:
        """Masks for one prompt on a registered image, as ``Decoder.predict`` returns them. ``best_only``:
        only the highest-scoring mask; ``use_previous_logits``: refine with the image's last click's
        logits (kept by the server); ``low_res=False`` leaves the [M,256,256] logits on the server
        (a small answer; ``low_res_logits`` is then None); ``mask_format``: rle (compact), binary or
        low_res (no full-size masks: ``masks`` is None)."""
        feeds: dict[str, np.ndarray] = {"image_id": np.array([[image_id.encode()]], dtype=np.object_)}
        if point_coords is not None:
            feeds["point_coords"] = np.asarray(point_coords, np.float32).reshape(1, -1, 2)
            feeds["point_labels"] = np.asarray(point_labels if point_labels is not None else [], np.float32).reshape(1, -1)
        if box is not None:
            feeds["box"] = np.asarray(box, np.float32).reshape(1, 4)
        if mask_input is not None:
            feeds["mask_input"] = np.asarray(mask_input, np.float32).reshape(1, 1, 256, 256)
        if orig_size is not None:
            feeds["orig_size"] = np.asarray(orig_size, np.int64).reshape(1, 2)
        feeds["multimask_output"] = np.array([[multimask_output]])
        feeds["best_only"] = np.array([[best_only]])
        feeds["use_previous_logits"] = np.array([[use_previous_logits]])
        feeds["mask_format"] = np.array([[mask_format.encode()]], dtype=np.object_)
        feeds["return_low_res"] = np.array([[low_res and mask_format == "rle"]])
        outputs = ["scores"] + {"rle": ["masks_rle"], "binary": ["masks"], "low_res": []}.get(mask_format, [])
        if low_res or mask_format == "low_res":
            outputs.append("low_res_masks")
        result = self._infer(feeds, outputs)
        masks = None
        if mask_format == "rle":
            from segdeploy.serving.mask_codec import decode_rle, rles_from_json

            masks = decode_rle(rles_from_json(result.as_numpy("masks_rle").reshape(-1)[0], check=False), check=False)  # the server's own RLE
        elif mask_format == "binary":
            masks = result.as_numpy("masks")[0]
        scores = result.as_numpy("scores")[0]
        logits = result.as_numpy("low_res_masks")[0] if "low_res_masks" in outputs else None
        return Prediction(masks, scores, logits)

    def _infer(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> Any:
        inputs = []
        for name, array in feeds.items():
            tensor = self.module.InferInput(name, list(array.shape), KSERVE_TYPES[DTYPES[name]])
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        requested = [self.module.InferRequestedOutput(name) for name in outputs]
        self.last_request_bytes = sum(_nbytes(array) for array in feeds.values())
        try:
            timeout = {} if self.timeout_s is None or self.module.__name__.endswith("http") else {"client_timeout": self.timeout_s}
            result = self.client.infer(self.model, inputs, outputs=requested, **timeout)
        except Exception as error:  # tritonclient's InferenceServerException: the server's one line
            message = error.message() if hasattr(error, "message") and callable(error.message) else str(error)
            raise ServerError(str(message).strip()) from None
        self.last_response_bytes = sum(_nbytes(result.as_numpy(name)) for name in outputs)
        return result


def _image_arrays(embedding: Any) -> dict[str, np.ndarray]:
    """An image's inputs by served name (float32, without the leading 1)."""
    names = [t.name for t in image_tensors()]
    if isinstance(embedding, Mapping):
        arrays = dict(embedding)
    elif isinstance(embedding, Sequence) and not isinstance(embedding, (str, bytes)):
        arrays = dict(zip(names, embedding))
    else:
        arrays = {names[0]: embedding}
    unknown = sorted(set(arrays) - set(names))
    if unknown:
        raise BadInputError(f"unknown image inputs {unknown}; the server takes {names}")
    shapes = {t.name: t.dims for t in image_tensors()}
    out = {}
    for name, value in arrays.items():
        array = np.ascontiguousarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, np.float32)
        if array.shape == (1, *shapes[name]):
            array = array[0]
        if array.shape != tuple(shapes[name]):
            raise BadInputError(f"{name} must be [1,{','.join(map(str, shapes[name]))}], got {list(array.shape)}")
        out[name] = array
    return out


def _text(array: np.ndarray) -> str:
    item = array.reshape(-1)[0]
    return item.decode() if isinstance(item, bytes) else str(item)


def _nbytes(array: np.ndarray | None) -> int:
    if array is None:
        return 0
    if array.dtype == np.object_:
        return sum(len(item) if isinstance(item, (bytes, str)) else 0 for item in array.reshape(-1))
    return int(array.nbytes)
