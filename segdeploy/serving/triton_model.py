"""The Triton Python-backend model behind `segdeploy serve`: each dynamic batch of requests, whatever
images they belong to, becomes one ``Decoder.predict_batch`` call; a bad request (an unknown image id
among them) gets an error response of its own (INVALID_ARG: HTTP 400, gRPC INVALID_ARGUMENT) and the
others in its batch get their results.

A request is one of (model_config.py holds the names):
- a registration: an image's inputs (its family's image inputs, or ``image`` with ``serve --encoder``)
  and no prompt; they go into the image store under ``image_id`` (given, or derived from the content),
  and the answer is that id;
- a click by id: ``image_id`` and prompts; the image's inputs come from the store;
- an inline click (the old schema): the image's inputs and prompts in the request itself.

Triton imports this inside its Python-backend stub (``model.py`` of the repository re-exports
``TritonPythonModel``); ``triton_python_backend_utils`` exists only there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.errors import BadInputError, SegdeployError
from segdeploy.prompts import Prompt
from segdeploy.serving.model_config import MASK_FORMATS, image_tensors

ORIG_SIZE = "orig_size"  # kept with a registered image, so its clicks need not repeat it


@dataclass
class Click:
    """One request's prompts and how to answer them."""

    index: int
    prompts: list[Prompt]
    image_id: str | None
    mask_format: str
    best_only: bool
    low_res: bool


def answer_bytes(click: Click) -> int:
    """The full-size masks a click is answered with, counted twice (the bool masks and their copy in
    the answer: an RLE's Fortran-order input, or the output tensor)."""
    return sum(2 * (1 if click.best_only or not prompt.multimask_output else 3) * int(prompt.orig_size[0]) * int(prompt.orig_size[1]) for prompt in click.prompts)


def answer_groups(clicks: list[Click], max_bytes: int) -> list[list[Click]]:
    """A dynamic batch's clicks in consecutive groups whose answers' masks (``answer_bytes``) stay
    under a quarter of ``max_bytes`` (the decoder's call budget), so the masks of a batch of large
    images are made and answered a group at a time: 32 clicks at 8192x8192 peaked at 3.76 GiB RSS in
    one group, 2.42 GiB with half the budget per group (the answers' RLEs and the server's buffers
    come on top), 2.02 GiB with a quarter (benchmarks/serve_memory.py). A click above that alone is
    a group of its own."""
    groups: list[list[Click]] = []
    total = 0
    for click in clicks:
        size = answer_bytes(click)
        if groups and total + size <= max_bytes // 4:
            groups[-1].append(click)
            total += size
        else:
            groups.append([click])
            total = size
    return groups


@dataclass
class Batch:
    """The images of one execute() call, fetched once per id (the prompts of an image share its arrays)."""

    store: Any
    fetched: dict[str, tuple[dict[str, np.ndarray], np.ndarray | None]] = field(default_factory=dict)

    def image(self, image_id: str, names: tuple[str, ...]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """The image's decoder inputs and its registered orig_size (or None); UnknownImageError."""
        if image_id not in self.fetched:
            stored = self.store.get(image_id)
            missing = [name for name in names if name not in stored]
            if missing:
                raise BadInputError(f"image {image_id!r} was stored without {', '.join(missing)} (by a server of another decoder family?); register it again")
            self.fetched[image_id] = ({name: stored[name] for name in names}, stored.get(ORIG_SIZE))
        return self.fetched[image_id]


def _optional(pb_utils: Any, request: Any, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _text(value: np.ndarray | None, name: str) -> str | None:
    if value is None:
        return None
    item = value.reshape(-1)[0]
    try:
        return item.decode() if isinstance(item, bytes) else str(item)
    except UnicodeDecodeError:
        raise BadInputError(f"{name} must be UTF-8 text") from None


def _flag(value: np.ndarray | None, default: bool) -> bool:
    return default if value is None else bool(value.reshape(-1)[0])


class Model:
    """What one model instance holds: the decoder, the image store and the optional encoder."""

    def __init__(self, decoder: Any, store: Any, encoder: Any = None):
        self.decoder, self.store, self.encoder = decoder, store, encoder
        self.image_names = tuple(decoder.family.image_inputs)

    def read(self, pb_utils: Any, request: Any, index: int, batch: Batch) -> Click | str:
        """A request as a Click, or a registration done (its image id); BadInputError when malformed."""
        get = lambda name: _optional(pb_utils, request, name)  # noqa: E731
        family = self.decoder.family
        inline = {name: get(name) for name in self.image_names}
        foreign = [t.name for t in image_tensors() if t.name not in self.image_names and get(t.name) is not None]
        if foreign:
            raise BadInputError(f"{', '.join(foreign)} are not a {family.title} decoder's inputs")
        image, image_id = get("image"), _text(get("image_id"), "image_id")
        sizes = get(ORIG_SIZE)
        coords, labels, box, mask = get("point_coords"), get("point_labels"), get("box"), get("mask_input")
        has_inline = any(value is not None for value in inline.values())
        if has_inline and image is not None:
            raise BadInputError("send an image or its embedding, not both")
        if image_id is not None and not image_id:
            raise BadInputError("image_id must not be empty")
        if coords is None and box is None and mask is None:  # no prompt: a registration
            return self.register(inline if has_inline else None, image, image_id, sizes)
        if image is not None:
            raise BadInputError("register an image in a request of its own (image and no prompt), then click by its image_id")
        mask_format = _text(get("mask_format"), "mask_format")
        if mask_format is not None and mask_format not in MASK_FORMATS:
            raise BadInputError(f"mask_format must be one of {', '.join(MASK_FORMATS)}, got {mask_format!r}")
        by_id = image_id is not None and not has_inline
        if has_inline:
            missing = [name for name, value in inline.items() if value is None]
            if missing:
                raise BadInputError(f"a {family.title} decoder needs {' and '.join(missing)}")
            rows = next(iter(inline.values())).shape[0]
            images = [{name: value[row] for name, value in inline.items()} for row in range(rows)]
            if image_id is not None and rows == 1:  # an inline click may register its image too
                self.store.put(image_id, images[0] | ({} if sizes is None else {ORIG_SIZE: np.asarray(sizes[0], np.int64)}))
        elif image_id is not None:
            stored, size = batch.image(image_id, self.image_names)
            rows = len(next(v for v in (coords, box, mask) if v is not None))
            images = [stored] * rows  # one dict per image: Decoder.predict_batch groups prompts by it
            if sizes is None and size is not None:
                sizes = np.repeat(np.asarray(size, np.int64)[None], rows, 0)
        else:
            raise BadInputError(f"a click needs image_id (a registered image) or the image's inputs ({', '.join(self.image_names)})")
        if sizes is None:
            raise BadInputError("a click needs orig_size (or an image_id registered with it)")
        if len({tuple(size) for size in sizes.tolist()}) != 1:
            raise BadInputError("the prompts of one request must share orig_size (send one request per image)")
        if _flag(get("use_previous_logits"), False):
            if image_id is None:
                raise BadInputError("use_previous_logits needs an image_id (the store keeps logits per image)")
            if mask is not None:
                raise BadInputError("send mask_input or use_previous_logits, not both")
            previous = self.store.get_logits(image_id)
            if previous is not None:
                mask = np.repeat(np.asarray(previous)[None], len(images), 0)
        multimask = get("multimask_output")
        prompts = []
        for row, embedding in enumerate(images):
            prompt = Prompt(
                embedding, sizes[row] if row < len(sizes) else sizes[0],
                None if coords is None else coords[row], None if labels is None else labels[row],
                None if box is None else box[row], None if mask is None else mask[row],
                True if multimask is None else bool(multimask[row].reshape(-1)[0]),
            )
            self.decoder.check(prompt)
            prompts.append(prompt)
        default_format, default_best = ("rle", True) if by_id else ("binary", False)
        return Click(index, prompts, image_id, mask_format or default_format, _flag(get("best_only"), default_best), _flag(get("return_low_res"), False))

    def register(self, inline: dict[str, np.ndarray | None] | None, image: np.ndarray | None, image_id: str | None, sizes: np.ndarray | None) -> str:
        """Store one image's inputs (given, or encoded from ``image``); returns its id."""
        from segdeploy.serving.image_store import content_id

        size = None if sizes is None else tuple(int(n) for n in np.asarray(sizes).reshape(-1)[:2])
        if inline is not None:
            missing = [name for name, value in inline.items() if value is None]
            if missing:
                raise BadInputError(f"a {self.decoder.family.title} decoder needs {' and '.join(missing)}")
            if any(value.shape[0] != 1 for value in inline.values()):
                raise BadInputError("register one image per request")
            arrays = self.decoder.family.check_images({name: value[0] for name, value in inline.items()})
            image_id = image_id or content_id(arrays)
        elif image is not None:
            if self.encoder is None:
                raise BadInputError("this server has no image encoder: register the image's embedding instead, or start it with serve --encoder ENCODER.onnx")
            if image.size != 1:
                raise BadInputError("register one image per request")
            from segdeploy.serving.encoder import decode_image

            data = image.reshape(-1)[0]
            rgb = decode_image(bytes(data), size)
            image_id = image_id or content_id({"rgb": rgb})
            if size is None:
                size = rgb.shape[:2]
            if image_id in self.store and image_id == content_id({"rgb": rgb}):
                return image_id  # the same pixels are stored already: no second encoder run
            arrays = self.encoder.encode(rgb)
        else:
            raise BadInputError(f"a request needs a prompt (point_coords, box or mask_input), or an image to register ({', '.join(self.image_names)}, or image)")
        if size is not None:
            arrays[ORIG_SIZE] = np.asarray(size, np.int64)
        self.store.put(image_id, arrays)
        return image_id

    def answer(self, pb_utils: Any, click: Click, results: list) -> Any:
        """The response of one click from its predictions, in its mask format."""
        from segdeploy.serving.mask_codec import encode_rle, rles_to_json

        tensors = [pb_utils.Tensor("scores", np.stack([r.scores for r in results]))]
        if click.mask_format == "binary":
            tensors.append(pb_utils.Tensor("masks", np.stack([r.masks for r in results])))
        if click.mask_format == "rle":
            encoded = [rles_to_json(encode_rle(r.masks)) for r in results]
            tensors.append(pb_utils.Tensor("masks_rle", np.array(encoded, dtype=np.object_).reshape(-1, 1)))
        if click.mask_format in ("binary", "low_res") or click.low_res:
            tensors.append(pb_utils.Tensor("low_res_masks", np.stack([r.low_res_logits for r in results])))
        if click.image_id is not None:
            tensors.append(pb_utils.Tensor("image_id", np.array([click.image_id.encode()] * len(results), dtype=np.object_).reshape(-1, 1)))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def remember(self, click: Click, results: list) -> None:
        """Keep the last click's best low-res logits with its image (what use_previous_logits reads)."""
        if click.image_id is None or not results:
            return
        best = _best(results[-1])
        try:
            self.store.put_logits(click.image_id, best.low_res_logits)
        except BadInputError:
            pass  # evicted meanwhile: the next refinement starts without logits


def _best(result: Any) -> Any:
    """The highest-scoring of a prediction's masks."""
    column = int(np.argmax(result.scores))
    return type(result)(result.masks[column : column + 1], result.scores[column : column + 1], result.low_res_logits[column : column + 1])


FAILURE_METRIC = "segdeploy_request_failure"


class Failures:
    """Failed requests on Triton's metrics endpoint, by reason (client: INVALID_ARG; server: INTERNAL).
    Triton's own nv_inference_request_failure counts only a failed execute() of the Python backend,
    not error responses among a batch's answers, so these counters are what a dashboard reads."""

    def __init__(self, pb_utils: Any, model: str, instance: str):
        self.counters: dict[str, Any] = {}
        self.family: Any = None
        self.broken = ""
        try:
            # kept on self: a family's metrics stop working once it is garbage-collected
            self.family = family = pb_utils.MetricFamily(name=FAILURE_METRIC, description="segdeploy serve: failed requests by reason (client: bad request; server: internal)",
                                           kind=pb_utils.MetricFamily.COUNTER)
            self.counters = {reason: family.Metric(labels={"model": model, "instance": instance, "reason": reason}) for reason in ("client", "server")}
        except Exception:  # a Triton without custom metrics: errors are still answered
            pass

    def count(self, client: bool) -> None:
        counter = self.counters.get("client" if client else "server")
        if counter is not None:
            try:
                counter.increment(1.0)
            except Exception as error:  # never let counting cost an answer
                self.broken = f"{type(error).__name__}: {error}"


def _error(pb_utils: Any, message: str, client: bool, failures: Failures | None = None) -> Any:
    """A TritonError with INVALID_ARG (a client's mistake: HTTP 400) or INTERNAL (the server's)."""
    codes = getattr(pb_utils, "TritonError", None)
    code = getattr(codes, "INVALID_ARG" if client else "INTERNAL", None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    if failures is not None:
        failures.count(client)
    return pb_utils.InferenceResponse(error=error)


class TritonPythonModel:
    """Triton's Python-backend interface: initialize, execute, finalize."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        from segdeploy.runtime import Decoder
        from segdeploy.serving.image_store import open_image_store

        self.pb_utils = pb_utils
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        options = json.loads(parameters.get("segdeploy_options", "{}"))
        here = Path(args["model_repository"]) / args["model_version"]
        source = parameters.get("segdeploy_source") or None
        if source is not None and not Path(source).is_absolute():  # a repository that carries its graph
            source = str(here / source)
        decoder = Decoder.load(source, **options)
        store = open_image_store(parameters.get("segdeploy_image_store") or "shared", int(parameters.get("segdeploy_image_store_bytes") or 2 << 30))
        encoder = None
        if parameters.get("segdeploy_encoder"):
            from segdeploy.serving.encoder import ImageEncoder

            path = Path(parameters["segdeploy_encoder"])
            encoder = ImageEncoder(path if path.is_absolute() else here / path, decoder.family.image_specs(), options.get("threads"))
        self.model = Model(decoder, store, encoder)
        self.failures = Failures(pb_utils, config.get("name", "sam_decoder"), str(args.get("model_instance_name", "")))
        self.calls = 0

    def execute(self, requests: list) -> list:
        pb_utils, model = self.pb_utils, self.model
        responses: list[Any] = [None] * len(requests)
        clicks: list[Click] = []
        batch = Batch(model.store)
        for index, request in enumerate(requests):
            try:
                read = model.read(pb_utils, request, index, batch)
            except SegdeployError as error:
                responses[index] = _error(pb_utils, f"bad request: {error}", client=True, failures=self.failures)
                continue
            except Exception as error:  # malformed tensors the checks above did not foresee
                responses[index] = _error(pb_utils, f"bad request: {type(error).__name__}: {error}", client=True, failures=self.failures)
                continue
            if isinstance(read, str):
                responses[index] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("image_id", np.array([[read.encode()]], dtype=np.object_))])
            else:
                clicks.append(read)
        for group in answer_groups(clicks, model.decoder.max_call_bytes):  # each group's masks answered before the next's are made
            self._answer(group, responses)
        return responses

    def _answer(self, clicks: list[Click], responses: list) -> None:
        pb_utils, model = self.pb_utils, self.model
        prompts = [prompt for click in clicks for prompt in click.prompts]
        self.calls += 1
        try:
            results = model.decoder.predict_batch(prompts, best_only=[click.best_only for click in clicks for _ in click.prompts])
        except Exception as error:  # the server keeps serving; these requests learn why
            for click in clicks:
                responses[click.index] = _error(pb_utils, f"inference failed: {type(error).__name__}: {error}", client=False, failures=self.failures)
            return
        start = 0
        for click in clicks:
            mine = results[start : start + len(click.prompts)]
            start += len(click.prompts)
            try:
                responses[click.index] = model.answer(pb_utils, click, mine)
                model.remember(click, mine)
            except Exception as error:
                responses[click.index] = _error(pb_utils, f"answer failed: {type(error).__name__}: {error}", client=False, failures=self.failures)

    def finalize(self) -> None:
        self.model.decoder.close()
        self.model.store.close()
