"""The eager PyTorch reference: runs the same DecoderGraph module that export traces."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from segdeploy import contract
from segdeploy.contract import GraphLayout
from segdeploy.forms import GraphForm
from segdeploy.runners.base import Runner


class TorchRunner(Runner):
    """Eager PyTorch on the CPU (or ``device``): the family's graph of ``layout``, float32 plain form
    unless ``form`` says otherwise."""

    name = "torch"

    thread_safe = True  # inference only reads the module

    def __init__(self, decoder, layout: GraphLayout, device: str = "cpu", form: GraphForm = GraphForm()) -> None:
        super().__init__(layout.inputs(), layout.output_names())
        self.device = device
        self.module = layout.family.decoder_graph(decoder, layout, form).eval().to(device)

    def _infer(self, feeds: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        import torch

        args = []
        for spec in self.input_specs:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[spec.name]))
            # orig_im_size is a shape tensor: it stays on the host, as in the graph.
            args.append(tensor if spec.name == contract.ORIG_IM_SIZE.name else tensor.to(self.device))
        with torch.no_grad():
            outputs = self.module(*args)
        return {name: out.float().cpu().numpy() for name, out in zip(self.output_names, outputs)}
