"""``segdeploy export``: trace the decoder graph into ONNX with the contract's dynamic axes,
check it, stamp metadata, and write it atomically and deterministically."""

from __future__ import annotations

import io
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from segdeploy import contract
from segdeploy.version import __version__
from segdeploy.attention_op import ATTENTION_OPSET, fuse_attention
from segdeploy.contract import MaskOutput
from segdeploy.errors import BadInputError
from segdeploy.forms import (
    DEFAULT_FORMS,
    AttentionForm,
    GraphForm,
    Precision,
    Target,
    UpscaleForm,
    default_upscale,
    upscale_unsupported,
)
from segdeploy.graph_io import all_nodes, set_metadata, write_atomically
from segdeploy.graph_branches import apply_branches
from segdeploy.graph_passes import optimize_graph
from segdeploy.rewrites import apply_rules
from segdeploy.registry import default_variant, family_metadata, family_of_variant, load_decoder

if TYPE_CHECKING:
    from segdeploy.families.base import Family
    from segdeploy.weights import WeightsInfo

# The newest opset the TorchScript exporter in our supported torch versions writes.
MAX_TRACE_OPSET = 20
DEFAULT_EXPORT_DIR = Path("export")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ExportOptions:
    variant: str = field(default_factory=lambda: default_variant())
    checkpoint: Path | None = None
    seed: int = 0
    opset: int = contract.MIN_OPSET
    mask_output: MaskOutput = MaskOutput.MULTI
    postprocess: bool | None = None  # None: on for the single-image flavor, off for multi-image
    out: Path | None = None
    target: Target = Target.ONNXRUNTIME
    attention: AttentionForm | None = None  # None: the target's default
    upscale: UpscaleForm | None = None  # None: the target's default
    precision: Precision = Precision.FP32
    multi_image: bool = False
    signature: contract.Signature = contract.Signature.SEGDEPLOY
    family_options: tuple[tuple[str, str], ...] = ()  # (name, value): the family's export-time choices

    @property
    def family(self) -> Family:
        """The decoder family of ``variant``, bound to it and the family options (BadInputError for
        an unknown variant or option)."""
        family = family_of_variant(self.variant)
        unknown = sorted({name for name, _ in self.family_options} - set(family.export_options))
        if unknown:
            known = ", ".join(family.export_options) or "none"
            raise BadInputError(f"--family-option {unknown[0]} is not an option of the {family.title} family (its options: {known})")
        return family_of_variant(self.variant, dict(self.family_options))

    @property
    def layout(self) -> contract.GraphLayout:
        family = self.family
        if self.multi_image and self.postprocess:
            raise BadInputError("the multi-image flavor resizes masks on the host (original sizes differ per image); drop --postprocess")
        if self.signature not in family.signatures:
            raise BadInputError(
                f"--signature {self.signature.value} is not one of the {family.title} family's signatures; "
                f"{self.variant} is a {family.name} decoder (use --signature {contract.Signature.SEGDEPLOY.value})"
            )
        if self.signature is contract.Signature.OFFICIAL:
            if self.multi_image or self.postprocess is False:
                raise BadInputError("--signature official is the official export's: one image, masks at the original size (drop --multi-image/--no-postprocess)")
            if self.mask_output not in family.official_mask_outputs:
                raise BadInputError(f"--signature official returns the {family.title} official export's masks: use --mask-output {family.official_mask_outputs_text}")
        elif self.mask_output is MaskOutput.BEST:
            raise BadInputError("--mask-output best is the official export's selection; use it with --signature official")
        postprocess = not self.multi_image if self.postprocess is None else self.postprocess
        return family.layout(self.mask_output, postprocess, self.multi_image, self.signature)

    @property
    def form(self) -> GraphForm:
        upscale = self.upscale or default_upscale(self.target, self.precision, self.opset)
        return GraphForm(self.attention or DEFAULT_FORMS[self.target][0], upscale, self.precision)

    @property
    def form_note(self) -> str:
        """Why the form differs from the target's default one; empty when it does not."""
        target_upscale = DEFAULT_FORMS[self.target][1]
        why = upscale_unsupported(target_upscale, self.precision, self.opset)
        if self.upscale is None and why:
            return f"upscale {self.form.upscale.value} instead of the {self.target.value} target's {target_upscale.value}: {why}"
        return ""

    def default_path(self) -> Path:
        layout = self.layout
        post = "_multiimage" if layout.multi_image else "" if layout.postprocess else "_nopost"
        post += "_official" if layout.official else ""
        precision = "" if self.precision is Precision.FP32 else f"_{self.precision.value}"
        return DEFAULT_EXPORT_DIR / f"{self.variant}_{self.mask_output.value}{post}{precision}_{self.target.value}_opset{self.opset}.onnx"


@dataclass
class ExportReport:
    path: Path
    weights: WeightsInfo
    opset: int
    mask_output: str
    postprocess: bool
    node_count: int
    op_counts: dict[str, int]
    size_bytes: int
    seconds: float
    metadata: dict[str, str] = field(default_factory=dict)
    form: str = ""
    form_note: str = ""  # why the form is not the target's default, if it is not

    def to_dict(self) -> dict:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def validate_opset(opset: int, attention: AttentionForm) -> None:
    import onnx

    if opset < contract.MIN_OPSET:
        raise BadInputError(f"opset {opset} is too old: the graph needs LayerNormalization, opset {contract.MIN_OPSET} or newer")
    if attention is AttentionForm.ONNX:
        newest = onnx.defs.onnx_opset_version()
        if not ATTENTION_OPSET <= opset <= newest:
            raise BadInputError(f"--attention onnx needs the Attention operator: use --opset {ATTENTION_OPSET}..{newest}")
    elif opset > MAX_TRACE_OPSET:
        raise BadInputError(f"opset {opset} is newer than the exporter writes; use {contract.MIN_OPSET}..{MAX_TRACE_OPSET} (or --attention onnx at {ATTENTION_OPSET})")


def validate_form(form: GraphForm, opset: int) -> None:
    """Refuse a form that cannot be written at ``opset`` (checked before tracing, not by shape inference)."""
    why = upscale_unsupported(form.upscale, form.precision, opset)
    if why:
        raise BadInputError(
            f"--upscale {form.upscale.value} cannot be {form.precision.value}: {why}; use --upscale {UpscaleForm.MATMUL.value} "
            f"(the same function as MatMuls, the {form.precision.value} default) or --attention onnx --opset {ATTENTION_OPSET}"
        )


def graph_metadata(weights: WeightsInfo, options: ExportOptions) -> dict[str, str]:
    return family_metadata(options.layout.family) | {
        "version": __version__,
        "contract_version": contract.CONTRACT_VERSION,
        "variant": weights.variant,
        "weights": "checkpoint" if weights.sha256 else "random",
        "weights_sha256": weights.sha256 or "",
        "random_seed": "" if weights.seed is None else str(weights.seed),
        "opset": str(options.opset),
        "mask_output": options.mask_output.value,
        "postprocess": "1" if options.layout.postprocess else "0",
        "images": options.layout.flavor,
        "signature": options.layout.signature.value,
        "precision": options.form.precision.value,
        "attention": options.form.attention.value,
        "upscale": options.form.upscale.value,
        "target": options.target.value,
    }


def declare_contract_shapes(values, specs: list[contract.TensorSpec]) -> None:
    """Overwrite the declared shapes of graph values with the contract's (the tracer's guesses for
    outputs behind Resize are arbitrary names)."""
    by_name = {spec.name: spec for spec in specs}
    for value in values:
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for dim in by_name[value.name].dims:
            entry = dims.add()
            if isinstance(dim, str):
                entry.dim_param = dim
            else:
                entry.dim_value = dim


def trace_to_onnx(graph_module, options: ExportOptions):
    """Trace with the TorchScript exporter (handles the data-dependent resize sizes) and return the
    checked ModelProto with the contract's dynamic axes."""
    import onnx
    import torch

    layout = options.layout
    inputs, outputs = layout.inputs(), layout.outputs()
    dynamic_axes = {
        spec.name: {i: d for i, d in enumerate(spec.dims) if isinstance(d, str)} for spec in inputs + outputs
    }
    buffer = io.BytesIO()
    feeds = layout.family.example_inputs(layout)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph_module,
            feeds,
            buffer,
            dynamo=False,
            opset_version=min(options.opset, MAX_TRACE_OPSET),
            input_names=[s.name for s in inputs],
            output_names=[s.name for s in outputs],
            dynamic_axes={k: v for k, v in dynamic_axes.items() if v},
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buffer.getvalue())
    declare_contract_shapes(model.graph.output, outputs)
    model.doc_string = "SAM prompt encoder + mask decoder exported by segdeploy"
    return model


def export_onnx(options: ExportOptions, progress: Progress | None = None) -> ExportReport:
    """Export the decoder described by ``options``; returns what was written."""
    import onnx

    say = progress or (lambda _msg: None)
    form = options.form
    validate_opset(options.opset, form.attention)
    validate_form(form, options.opset)
    layout = options.layout
    family = layout.family
    started = time.perf_counter()
    say("loading weights")
    decoder, weights = load_decoder(options.variant, options.checkpoint, options.seed)
    graph_module = family.decoder_graph(decoder, layout, form).eval()
    say("tracing to ONNX")
    model = trace_to_onnx(graph_module, options)
    say("optimizing the graph")
    model = optimize_graph(model)
    if form.attention is AttentionForm.ONNX:
        say("fusing attention blocks into Attention operators")
        model, _ = fuse_attention(model, options.opset)
    if options.target is Target.ONNXRUNTIME:
        say("putting the mask input's embedding and identity crops behind If nodes (segdeploy.graph_branches)")
        apply_branches(model, decoder.prompt_encoder.no_mask_embed.weight.detach().numpy())
    if options.target is Target.ONNXRUNTIME and form.precision is Precision.FP32:
        say("fusing for onnxruntime (segdeploy.rewrites)")
        model, _ = apply_rules(model)
    metadata = graph_metadata(weights, options)
    set_metadata(model, metadata)
    say("checking the graph")
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    path = options.out or options.default_path()
    data = model.SerializeToString(deterministic=True)
    say(f"writing {path}")
    write_atomically(Path(path), data)
    nodes = all_nodes(model.graph)
    ops = Counter(node.op_type for node in nodes)
    return ExportReport(
        path=Path(path),
        weights=weights,
        opset=options.opset,
        mask_output=options.mask_output.value,
        postprocess=layout.postprocess,
        node_count=len(nodes),
        op_counts=dict(sorted(ops.items())),
        size_bytes=len(data),
        seconds=time.perf_counter() - started,
        metadata=metadata,
        form=options.form.describe(),
        form_note=options.form_note,
    )
