"""Where a graph came from: its export settings and the eager decoder rebuilt from the same weights,
read from its metadata (the checkpoint itself checked by sha256)."""

from __future__ import annotations

from pathlib import Path

from segdeploy import contract
from segdeploy.contract import MaskOutput
from segdeploy.errors import BadInputError
from segdeploy.families import family_from_metadata


def resolve_weights(metadata: dict[str, str], checkpoint: Path | None, graph: Path):
    """Rebuild the eager decoder from the weights the graph was exported from, or refuse."""
    from segdeploy.weights import file_sha256, load_decoder

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
        return contract.GraphLayout(mask_output, postprocess, multi_image, signature, family), precision
    except ValueError as exc:
        raise BadInputError(f"{graph} has inconsistent metadata: {exc}") from None




def foreign_graph(model, graph: Path, checkpoint: Path | None):
    """Layout and eager decoder for a graph another tool exported (no segdeploy metadata): its
    signature is recognised from its declared inputs and outputs, its weights are ``checkpoint``'s."""
    from segdeploy.graph_io import value_specs
    from segdeploy.weights import load_decoder

    inputs, outputs = value_specs(model.graph.input), value_specs(model.graph.output)
    layout = layout_from_io([s.name for s in inputs], {s.name: list(s.dims) for s in outputs}, {s.name: s.dtype for s in inputs})
    if checkpoint is None:
        raise BadInputError(f"{graph} carries no segdeploy metadata; verify it against the weights it holds with --checkpoint W.pth")
    decoder, weights = load_decoder(contract.DEFAULT_VARIANT, Path(checkpoint))
    return layout, decoder, weights


def layout_from_io(input_names: list[str], outputs: dict[str, list], input_dtypes: dict[str, str] | None = None) -> contract.GraphLayout:
    """A layout recognised from declared I/O (foreign graphs, engines and packages): this contract's
    flavors, or the official export's signature (float32 ``orig_im_size``)."""
    official = (input_dtypes or {}).get(contract.ORIG_IM_SIZE.name) == "float32"
    family = _family_from_io(input_names)
    if family != "sam1":
        return _layout_of_family(family, input_names, outputs)
    known = {tuple(s.name for s in contract.OFFICIAL_INPUTS) if official else tuple(s.name for s in contract.input_specs(p, m))
             for p, m in ((True, False), (False, False), (False, True))}
    if tuple(input_names) not in known:
        raise BadInputError(f"inputs {input_names} are neither segdeploy's contract nor the official export's signature")
    dims = outputs.get("iou_predictions", [])
    counts = {1: MaskOutput.BEST if official else MaskOutput.SINGLE, 3: MaskOutput.MULTI, 4: MaskOutput.ALL}
    if len(dims) != 2 or dims[1] not in counts or (official and dims[1] == 3):
        raise BadInputError(f"cannot tell the masks per prompt from iou_predictions dims {dims}")
    if official:
        return contract.GraphLayout(counts[dims[1]], postprocess=True, signature=contract.Signature.OFFICIAL)
    multi_image = contract.IMAGE_INDEX.name in input_names
    return contract.GraphLayout(counts[dims[1]], postprocess="masks" in outputs, multi_image=multi_image)


def _family_from_io(input_names: list[str]) -> str:
    """The family whose per-image inputs a graph declares (sam1 when only image_embeddings)."""
    from segdeploy.families import FAMILY_NAMES, get_family

    for name in FAMILY_NAMES:
        extra = get_family(name).image_inputs
        if len(extra) > 1 and set(extra) <= set(input_names):
            return name
    return "sam1"


def _layout_of_family(family: str, input_names: list[str], outputs: dict[str, list]) -> contract.GraphLayout:
    """A non-sam1 layout recognised from declared I/O: flavor from the inputs, masks per prompt from
    iou_predictions (1: single, 3: multi, 4: all)."""
    dims = outputs.get("iou_predictions", [])
    counts = {1: MaskOutput.SINGLE, 3: MaskOutput.MULTI, 4: MaskOutput.ALL}
    if len(dims) != 2 or dims[1] not in counts:
        raise BadInputError(f"cannot tell the masks per prompt from iou_predictions dims {dims}")
    for postprocess, multi_image in ((True, False), (False, False), (False, True)):
        layout = contract.GraphLayout(counts[dims[1]], postprocess, multi_image, family=family)
        if [s.name for s in layout.inputs()] == list(input_names):
            return layout
    raise BadInputError(f"inputs {input_names} are not a {family} graph's")
