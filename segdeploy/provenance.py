"""Where a graph came from: its export settings and the eager decoder rebuilt from the same weights,
read from its metadata (the checkpoint itself checked by sha256)."""

from __future__ import annotations

from pathlib import Path

from segdeploy import contract
from segdeploy.contract import MaskOutput
from segdeploy.errors import BadInputError
from segdeploy.registry import family_from_metadata, layout_from_io, load_decoder


def resolve_weights(metadata: dict[str, str], checkpoint: Path | None, graph: Path):
    """Rebuild the eager decoder from the weights the graph was exported from, or refuse."""
    from segdeploy.weights import file_sha256

    variant = metadata.get("variant", "")
    if metadata.get("weights") == "random":
        if checkpoint is not None:
            raise BadInputError(f"{graph} was exported from random weights (seed {metadata.get('random_seed')}); drop --checkpoint")
        return load_decoder(variant, None, int(metadata.get("random_seed", "0")))
    expected = metadata.get("weights_sha256", "")
    if checkpoint is None:
        raise BadInputError(f"{graph} was exported from a checkpoint (sha256 {expected[:12]}…); pass it with --checkpoint")
    if not Path(checkpoint).is_file():
        raise BadInputError(f"checkpoint not found: {checkpoint}")
    actual = file_sha256(Path(checkpoint))
    if actual != expected:
        raise BadInputError(f"{checkpoint} (sha256 {actual[:12]}…) is not the checkpoint {graph} was exported from (sha256 {expected[:12]}…)")
    return load_decoder(variant, Path(checkpoint))


def graph_settings(metadata: dict[str, str], graph: Path) -> tuple[MaskOutput, bool, str]:
    """Mask output, postprocess flag and precision recorded at export."""
    layout, precision = graph_layout(metadata, graph)
    return layout.mask_output, layout.postprocess, precision


def graph_layout(metadata: dict[str, str], graph: Path) -> tuple[contract.GraphLayout, str]:
    """The graph's layout (mask output, postprocess, image flavor) and precision recorded at export.
    Graphs written before the multi-image flavor existed carry no ``images`` key: single-image."""
    if not metadata:
        raise BadInputError(f"{graph} carries no segdeploy metadata; verify needs a graph made by `segdeploy export`")
    if metadata.get("contract_version") != contract.CONTRACT_VERSION:
        raise BadInputError(f"{graph} follows contract v{metadata.get('contract_version')}, this segdeploy speaks v{contract.CONTRACT_VERSION}; re-export it")
    try:
        mask_output = MaskOutput(metadata.get("mask_output", ""))
    except ValueError:
        raise BadInputError(f"{graph} has an unknown mask_output {metadata.get('mask_output')!r}") from None
    precision = metadata.get("precision", "fp32")
    if precision not in contract.TOLERANCES:
        raise BadInputError(f"{graph} has precision {precision!r}, which has no tolerance in this segdeploy")
    flavor = metadata.get("images", "single")
    if flavor not in ("single", "multi"):
        raise BadInputError(f"{graph} has an unknown image flavor {flavor!r}")
    multi_image = flavor == "multi"
    postprocess = metadata.get("postprocess") == "1"
    if multi_image and postprocess:
        raise BadInputError(f"{graph} claims the multi-image flavor with in-graph postprocessing, which segdeploy never writes")
    family = family_from_metadata(metadata, str(graph))
    try:
        signature = contract.Signature(metadata.get("signature", "segdeploy"))
        return family.layout(mask_output, postprocess, multi_image, signature), precision
    except ValueError as exc:
        raise BadInputError(f"{graph} has inconsistent metadata: {exc}") from None


def foreign_graph(model, graph: Path, checkpoint: Path | None):
    """Layout and eager decoder for a graph another tool exported (no segdeploy metadata): its
    family and signature are recognised from its declared inputs and outputs, its weights are
    ``checkpoint``'s."""
    from segdeploy.graph_io import value_specs

    inputs, outputs = value_specs(model.graph.input), value_specs(model.graph.output)
    layout = layout_from_io([s.name for s in inputs], {s.name: list(s.dims) for s in outputs}, {s.name: s.dtype for s in inputs})
    if checkpoint is None:
        raise BadInputError(f"{graph} carries no segdeploy metadata; verify it against the weights it holds with --checkpoint W.pth")
    decoder, weights = load_decoder(layout.family.default_variant, Path(checkpoint))
    return layout, decoder, weights
