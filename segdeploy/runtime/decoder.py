"""``segdeploy.Decoder``: prompts in image coordinates to masks, on any backend, many images per call.

The same semantics and return values as segment-anything's ``SamPredictor.predict`` given the same
image embedding; ``predict_batch`` packs many prompts on many images into one backend call.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from segdeploy import contract
from segdeploy.contract import GraphLayout, MaskOutput
from segdeploy.errors import BadInputError
from segdeploy.limits import MAX_THREADS, RequestLimits
from segdeploy.runners.base import Runner
from segdeploy.runtime.memory import DEFAULT_MAX_CALL_BYTES, prompts_per_call
from segdeploy.prompts import (
    CheckedPrompt,
    Prompt,
    check_prompt,
    pack_prompts,
)

BACKENDS = ("auto", "onnxruntime", "torch", "tensorrt", "aoti")
# Host resizing runs on at most this many output logits at a time (64 MB of float32): measured here,
# 64 prompts x 3 masks at 1024x1024 resize and threshold in 0.2 s this way against 0.47 s in one piece.
HOST_RESIZE_ELEMENTS = 16 << 20
MULTIMASK_TOKENS = MaskOutput.MULTI.tokens
SINGLE_TOKENS = MaskOutput.SINGLE.tokens


class Prediction(NamedTuple):
    """One prompt's result, as ``SamPredictor.predict`` returns it."""

    masks: np.ndarray  # [M,H,W] bool (or float32 logits with return_logits)
    scores: np.ndarray  # [M] float32 predicted IoU
    low_res_logits: np.ndarray  # [M,256,256] float32


class Decoder:
    """A loaded decoder. Build with :meth:`Decoder.load`; safe to share between threads."""

    def __init__(
        self, runner: Runner, layout: GraphLayout, *, source: str, metadata: dict[str, str] | None = None,
        max_call_bytes: int = DEFAULT_MAX_CALL_BYTES, limits: RequestLimits | None = None,
    ) -> None:
        if isinstance(max_call_bytes, bool) or not isinstance(max_call_bytes, int) or max_call_bytes < 1:
            raise BadInputError(f"max_call_bytes must be a positive number of bytes, got {max_call_bytes!r}")
        if limits is not None and not isinstance(limits, RequestLimits):
            raise BadInputError(f"limits must be a segdeploy.RequestLimits, got {type(limits).__name__}")
        self.max_call_bytes = max_call_bytes
        self.limits = limits or RequestLimits()
        self.runner = runner
        self.layout = layout
        self.family = layout.family  # its prompt frame, postprocessing and single-mask rule
        self.source = source
        self.metadata = dict(metadata or {})
        self._lock = None if runner.thread_safe else threading.Lock()
        runner.activate()

    @property
    def backend(self) -> str:
        return self.runner.name

    @classmethod
    def load(
        cls,
        source: str | Path | None = None,
        *,
        backend: str = "auto",
        threads: int | None = None,
        checkpoint: str | Path | None = None,
        variant: str | None = None,
        seed: int = 0,
        device: str = "cpu",
        max_call_bytes: int = DEFAULT_MAX_CALL_BYTES,
        limits: RequestLimits | None = None,
    ) -> Decoder:
        """Load ``source``: an ``.onnx`` graph (onnxruntime; CUDA provider where onnxruntime-gpu
        and a GPU exist), a TensorRT ``.plan`` (sidecar checked), a compiled ``.pt2`` package, or a
        checkpoint (``.pth``/``.pt``/``.safetensors``) or None (seeded random weights) on eager
        PyTorch (``variant``: the default family's default variant when not given). ``backend="torch"`` runs an ``.onnx`` graph's own weights eagerly (``checkpoint``
        where they came from one); ``threads`` sets onnxruntime's and torch's thread count."""
        from segdeploy.runtime.loading import open_source

        if backend not in BACKENDS:
            raise BadInputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if isinstance(max_call_bytes, bool) or not isinstance(max_call_bytes, int) or max_call_bytes < 1:
            raise BadInputError(f"max_call_bytes must be a positive number of bytes, got {max_call_bytes!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS):
            raise BadInputError(f"threads must be None or an integer from 1 to {MAX_THREADS}, got {threads!r}")
        runner, layout, metadata = open_source(
            None if source is None else Path(source), backend, threads=threads,
            checkpoint=None if checkpoint is None else Path(checkpoint), variant=variant, seed=seed, device=device,
        )
        return cls(runner, layout, source=str(source) if source is not None else f"random weights (seed {seed})", metadata=metadata,
                   max_call_bytes=max_call_bytes, limits=limits)

    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Decoder({self.source!r}, backend={self.backend}, mask_output={self.layout.mask_output.value}, images={self.layout.flavor})"

    def predict(
        self,
        embedding: Any,
        *,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
        orig_size: Sequence[int],
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Prediction:
        """Masks for one prompt on one image: ``(masks [M,H,W], scores [M], low-res logits
        [M,256,256])``, as ``SamPredictor.predict`` with the same embedding set (a SAM 2 graph:
        ``SAM2ImagePredictor.predict`` with the same features). Coordinates are in the original
        image's pixels; M is 3 with ``multimask_output``, else 1."""
        prompt = Prompt(embedding, orig_size, point_coords, point_labels, box, mask_input, multimask_output)
        return self.predict_batch([prompt], return_logits=return_logits)[0]

    def predict_batch(self, prompts: Iterable[Prompt], *, return_logits: bool = False, best_only: bool | Sequence[bool] = False) -> list[Prediction]:
        """Many prompts on many images, few backend calls where the graph allows (a multi-image
        graph, or a single-image graph whose prompts share one image and size), each under
        ``max_call_bytes``; results in order, each equal to :meth:`predict` of that prompt alone.
        ``best_only`` (for all prompts, or one flag per prompt): only the highest-scoring of a
        prompt's masks, chosen before the host-side resize, so only that one is resized (what a
        server's small answers want)."""
        if isinstance(prompts, Prompt):
            raise BadInputError("predict_batch takes a list of Prompt")
        try:
            prompts = list(itertools.islice(prompts, self.limits.max_prompts + 1))
        except TypeError:
            raise BadInputError(f"predict_batch takes a list of Prompt, got {type(prompts).__name__}") from None
        self.limits.check_prompts(len(prompts))
        if not prompts:
            return []
        checked, images, image_of = self._check(prompts)
        best = [bool(best_only)] * len(prompts) if isinstance(best_only, (bool, int)) else [bool(flag) for flag in best_only]
        if len(best) != len(prompts):
            raise BadInputError(f"best_only has {len(best)} flags for {len(prompts)} prompts")
        results: list[Prediction | None] = [None] * len(prompts)
        for group in [part for group in self._call_groups(checked, image_of) for part in self._split_calls(group, checked, image_of)]:
            outputs = self._infer(group, checked, images, image_of)
            spans = [self._span(outputs, row, checked[index]) for row, index in enumerate(group)]
            spans = [self._best(outputs, row, span) if best[index] else span for row, (index, span) in enumerate(zip(group, spans))]
            masks = self._masks(outputs, spans, [checked[index] for index in group], return_logits)
            for row, index in enumerate(group):
                results[index] = self._split(outputs, row, spans[row], masks[row])
        return results  # type: ignore[return-value]

    def check(self, prompt: Prompt, where: str = "") -> None:
        """Raise BadInputError unless this decoder can answer ``prompt`` (what ``predict_batch`` checks)."""
        checked = self._check_prompt(prompt, where)
        self.family.check_images(prompt.embedding, where)
        self._split_calls([0], [checked], [0])  # one prompt must fit the memory budget

    def _check_prompt(self, prompt: Prompt, where: str) -> CheckedPrompt:
        checked = check_prompt(prompt, self.family.prompt_rules(), where)
        self.limits.check_output_size(checked.orig_size, where)
        self.limits.check_points(len(checked.labels), where)
        self._check_tokens(checked.multimask_output, where)
        return checked

    def _check(self, prompts: Sequence[Prompt]) -> tuple[list[CheckedPrompt], list[dict[str, np.ndarray]], list[int]]:
        """Checked prompts, the distinct images' inputs (by the embedding's object identity) and each
        prompt's image."""
        checked, images, image_of = [], [], []
        seen: dict[int, int] = {}
        for i, prompt in enumerate(prompts):
            where = f"prompt {i}: " if len(prompts) > 1 else ""
            if not isinstance(prompt, Prompt):
                raise BadInputError(f"{where}expected a segdeploy.Prompt, got {type(prompt).__name__}")
            checked.append(self._check_prompt(prompt, where))
            key = id(prompt.embedding)
            if key not in seen:
                seen[key] = len(images)
                images.append(self.family.check_images(prompt.embedding, where))
            image_of.append(seen[key])
        return checked, images, image_of

    def _check_tokens(self, multimask: bool, where: str) -> None:
        have = self.layout.mask_output
        want = MULTIMASK_TOKENS if multimask else SINGLE_TOKENS
        if not set(want) <= set(have.tokens):
            setting = "multimask_output=True" if multimask else "multimask_output=False"
            raise BadInputError(
                f"{where}{setting} needs mask tokens {list(want)}, and this graph returns {list(have.tokens)} "
                f"(exported with --mask-output {have.value}); export with --mask-output all to serve both settings"
            )

    def _call_groups(self, checked: list[CheckedPrompt], image_of: list[int]) -> list[list[int]]:
        """Prompt indices per backend call: all at once for a multi-image graph; per image (and
        original size, when the graph resizes in-graph) for a single-image graph."""
        if self.layout.multi_image:
            return [list(range(len(checked)))]
        groups: dict[tuple, list[int]] = {}
        for index, prompt in enumerate(checked):
            key = (image_of[index], prompt.orig_size if self.layout.postprocess else None)
            groups.setdefault(key, []).append(index)
        return list(groups.values())

    def _split_calls(self, group: list[int], checked: list[CheckedPrompt], image_of: list[int]) -> list[list[int]]:
        """``group`` in backend calls whose estimated peak stays under ``max_call_bytes`` (a
        multi-image group ordered by image first, so a call stacks few images)."""
        layout = self.layout
        size = checked[group[0]].orig_size if layout.postprocess else None  # a postprocessing group shares its size
        count = prompts_per_call(
            self.max_call_bytes, points=max(len(checked[i].labels) for i in group), orig_size=size,
            masks=len(layout.mask_output.tokens), multi_image=layout.multi_image, attention=self.metadata.get("attention"),
        )
        if len(group) <= count:
            return [group]
        if layout.multi_image:
            group = sorted(group, key=lambda index: image_of[index])
        return [group[first : first + count] for first in range(0, len(group), count)]

    def _infer(self, group: list[int], checked: list[CheckedPrompt], images: list[dict[str, np.ndarray]], image_of: list[int]) -> dict[str, np.ndarray]:
        feeds = pack_prompts([checked[i] for i in group])
        if self.layout.multi_image:
            used = sorted({image_of[i] for i in group})
            row_of = {image: row for row, image in enumerate(used)}
            for name in self.family.image_inputs:
                feeds[name] = np.stack([images[i][name] for i in used])
            feeds[contract.IMAGE_INDEX.name] = np.array([row_of[image_of[i]] for i in group], np.int64)
        else:
            for name, array in images[image_of[group[0]]].items():
                feeds[name] = array[None]
            if self.layout.postprocess:
                feeds[contract.ORIG_IM_SIZE.name] = np.array(checked[group[0]].orig_size, np.int64)
        if self._lock is None:
            return self.runner.infer(feeds)
        with self._lock:
            return self.runner.infer(feeds)

    def _span(self, outputs: dict[str, np.ndarray], row: int, prompt: CheckedPrompt) -> slice:
        """The output columns (mask tokens) this prompt returns."""
        tokens = self.layout.mask_output.tokens
        if not prompt.multimask_output and self.layout.mask_output is MaskOutput.ALL:
            column = self.family.single_column(outputs["low_res_masks"][row], outputs["iou_predictions"][row])
            return slice(column, column + 1)  # SAM 1: token 0; SAM 2: its stability-based choice
        want = MULTIMASK_TOKENS if prompt.multimask_output else SINGLE_TOKENS
        columns = [tokens.index(t) for t in want]
        span = slice(columns[0], columns[-1] + 1)  # the wanted tokens are a contiguous run
        pick = self.family.multimask_column(outputs["low_res_masks"][row, span], outputs["iou_predictions"][row, span]) if prompt.multimask_output else None
        return span if pick is None else slice(span.start + pick, span.start + pick + 1)

    @staticmethod
    def _best(outputs: dict[str, np.ndarray], row: int, span: slice) -> slice:
        """The column of the highest predicted IoU within span (np.argmax: the first on ties)."""
        column = span.start + int(np.argmax(outputs["iou_predictions"][row, span]))
        return slice(column, column + 1)

    def _masks(self, outputs: dict[str, np.ndarray], spans: list[slice], prompts: list[CheckedPrompt], return_logits: bool) -> list[np.ndarray]:
        """Per prompt, its masks at its original size (bool, or float32 logits): the graph's, or
        resized on the host (only the masks it returns; prompts of one size and span resized
        together, a few at a time, so the float logits stay small enough to be reused and cached)."""
        def final(logits: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(logits, dtype=np.float32) if return_logits else logits > 0.0

        if self.layout.postprocess:
            return [final(outputs["masks"][row][span]) for row, span in enumerate(spans)]
        low_res = outputs["low_res_masks"]
        groups: dict[tuple, list[int]] = {}
        for row, (prompt, span) in enumerate(zip(prompts, spans)):
            groups.setdefault((prompt.orig_size, span.start, span.stop), []).append(row)
        masks: list[np.ndarray] = [np.empty(0)] * len(prompts)
        for (size, start, stop), rows in groups.items():
            chunk = max(1, HOST_RESIZE_ELEMENTS // ((stop - start) * size[0] * size[1]))
            for first in range(0, len(rows), chunk):
                part = rows[first : first + chunk]
                resized = self.family.upscale_on_host(low_res[part, start:stop], size)
                for position, row in enumerate(part):
                    masks[row] = final(resized[position])
        return masks

    def _split(self, outputs: dict[str, np.ndarray], row: int, span: slice, masks: np.ndarray) -> Prediction:
        scores = np.ascontiguousarray(outputs["iou_predictions"][row, span], dtype=np.float32)
        low_res = np.ascontiguousarray(outputs["low_res_masks"][row, span], dtype=np.float32)
        if self.family.low_res_clamp is not None:  # SAM 2's predictor clamps what it returns
            low_res = np.clip(low_res, -self.family.low_res_clamp, self.family.low_res_clamp)
        return Prediction(masks, scores, low_res)
