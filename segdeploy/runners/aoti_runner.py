"""AOTInductor backend: runs a .pt2 package built by `segdeploy build-engine --runtime aoti`, after
checking its sidecar against this machine (torch version, device, CPU instruction set, file hash)
before loading it, and each call's prompt and point counts against the compiled ranges."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from segdeploy import contract
from segdeploy.contract import TensorSpec
from segdeploy.runners.base import Runner


class AotiRunner(Runner):
    name = "aoti"

    def __init__(self, package: Path, input_specs: Sequence[TensorSpec], output_names: Sequence[str]) -> None:
        super().__init__(input_specs, output_names)
        self.package = Path(package)
        self.sidecar = None
        self.model = None

    @classmethod
    def from_package(cls, package: Path) -> AotiRunner:
        """A runner with the inputs and outputs the package's sidecar records."""
        from segdeploy.aoti.sidecar import read_sidecar

        layout = read_sidecar(package).layout
        return cls(package, layout.inputs(), layout.output_names())

    def _activate(self) -> None:
        from segdeploy.aoti.sidecar import check_loadable, read_sidecar, torch_environment

        self.sidecar = read_sidecar(self.package)
        check_loadable(self.sidecar, torch_environment(), self.package)
        import torch._inductor

        self.model = torch._inductor.aoti_load_package(str(self.package))

    def _deactivate(self) -> None:
        self.model = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        import torch

        from segdeploy.aoti.sidecar import check_in_ranges

        prompts, points = feeds[contract.POINT_COORDS.name].shape[:2]
        sizes = {"prompts": int(prompts), "points": int(points)}
        if contract.IMAGE_INDEX.name in feeds:
            sizes["images"] = int(feeds[contract.IMAGE_EMBEDDINGS.name].shape[0])
        check_in_ranges(self.sidecar, sizes)
        device = self.sidecar.device
        args = []
        for spec in self.input_specs:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[spec.name]))
            # orig_im_size holds sizes: it stays on the host, as when the package was traced
            args.append(tensor if spec.name == contract.ORIG_IM_SIZE.name else tensor.to(device))
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = self.sidecar.tf32
        try:
            with torch.no_grad():
                outputs = self.model(*args)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        return {name: out.float().cpu().numpy() for name, out in zip(self.output_names, outputs)}
