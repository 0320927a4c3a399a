"""TensorRT backend: runs a plan built by `segdeploy build-engine` through Polygraphy's TrtRunner,
after checking its sidecar against this machine (before deserializing) and each call's shapes
against the engine's profiles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from segdeploy import contract
from segdeploy.contract import TensorSpec
from segdeploy.runners.base import Runner


class TrtRunner(Runner):
    name = "tensorrt"

    def __init__(self, plan: Path, input_specs: Sequence[TensorSpec], output_names: Sequence[str]) -> None:
        super().__init__(input_specs, output_names)
        self.plan = Path(plan)
        self.sidecar = None
        self.runner = None

    def _activate(self) -> None:
        from segdeploy.tensorrt.environment import require_tensorrt
        from segdeploy.tensorrt.sidecar import check_compatible, read_sidecar

        self.sidecar = read_sidecar(self.plan)
        check_compatible(self.sidecar, require_tensorrt(), self.plan)
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes
        from polygraphy.backend.trt import TrtRunner as PolygraphyTrtRunner

        self.runner = PolygraphyTrtRunner(EngineFromBytes(BytesFromPath(str(self.plan))))
        self.runner.activate()

    def _deactivate(self) -> None:
        if self.runner is not None:
            self.runner.deactivate()
            self.runner = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        from segdeploy.tensorrt.sidecar import check_in_profile

        prompts, points = feeds[contract.POINT_COORDS.name].shape[:2]
        size = feeds.get(contract.ORIG_IM_SIZE.name)
        images = feeds[contract.IMAGE_EMBEDDINGS.name].shape[0] if contract.IMAGE_INDEX.name in feeds else None
        check_in_profile(self.sidecar, int(prompts), int(points), None if size is None else (int(size[0]), int(size[1])), images)
        outputs = self.runner.infer(feeds)
        return {name: np.asarray(outputs[name], dtype=np.float32) for name in self.output_names}
