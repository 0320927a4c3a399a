"""`segdeploy inspect PLAN`: layers and tactics from TensorRT's engine inspector, and a verdict per
attention block and for the upscaling path: fused or not.

The verdict reads the inspector's JSON (detailed profiling verbosity): a layer carries the ONNX node
names it implements in its name (fused layers join them with " + " or list them in a Myelin
"ForeignNode" range) and in "Metadata". An attention block is fused when one layer covers its
softmax and both of its matrix products (or runs a tactic named for MHA/attention); the upscaling
path is fused when none of its LayerNorm/GELU nodes runs as a layer of its own."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

ATTENTION_BLOCK = re.compile(r"(/[\w./]*?(?:self_attn|cross_attn_token_to_image|cross_attn_image_to_token|final_attn_token_to_image))/")
FUSED_TACTIC = re.compile(r"mha|fmha|flash|attention", re.IGNORECASE)


@dataclass
class LayerInfo:
    name: str
    layer_type: str
    tactic: str
    metadata: str = ""

    @property
    def text(self) -> str:
        return f"{self.name} {self.metadata}"


@dataclass
class Verdict:
    block: str
    fused: bool
    evidence: str


@dataclass
class InspectReport:
    plan: str
    layers: list[LayerInfo] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_layers(inspector_json: str) -> list[LayerInfo]:
    """Layers from IEngineInspector.get_engine_information(LayerInformationFormat.JSON)."""
    data = json.loads(inspector_json)
    layers = []
    for entry in data.get("Layers", []):
        if isinstance(entry, str):  # ProfilingVerbosity below DETAILED gives names only
            layers.append(LayerInfo(entry, "", ""))
            continue
        layers.append(LayerInfo(
            name=str(entry.get("Name", "")),
            layer_type=str(entry.get("LayerType", "")),
            tactic=str(entry.get("TacticName", entry.get("TacticValue", ""))),
            metadata=str(entry.get("Metadata", "")),
        ))
    return layers


def attention_blocks(node_names: list[str]) -> dict[str, list[str]]:
    """ONNX node names grouped by attention block path."""
    blocks: dict[str, list[str]] = {}
    for name in node_names:
        match = ATTENTION_BLOCK.search(name)
        if match:
            blocks.setdefault(match.group(1), []).append(name)
    return blocks


def fusion_verdicts(layers: list[LayerInfo], node_names: list[str], node_types: dict[str, str]) -> list[Verdict]:
    """One verdict per attention block and one for the upscaling path."""
    verdicts = []
    for block, names in sorted(attention_blocks(node_names).items()):
        core = [n for n in names if node_types.get(n) in ("MatMul", "Softmax")]
        touching = [layer for layer in layers if block + "/" in layer.text]
        tactic = next((layer for layer in touching if FUSED_TACTIC.search(layer.tactic) or FUSED_TACTIC.search(layer.layer_type)), None)
        covering = next((layer for layer in touching if core and all(n in layer.text for n in core)), None)
        if tactic is not None:
            verdicts.append(Verdict(block, True, f"layer {tactic.name!r} runs tactic {tactic.tactic!r}"))
        elif covering is not None and len(core) >= 3:
            verdicts.append(Verdict(block, True, f"one layer covers its MatMuls and Softmax: {covering.name!r}"))
        elif not touching:
            verdicts.append(Verdict(block, False, "no engine layer names this block (built without detailed profiling verbosity?)"))
        else:
            verdicts.append(Verdict(block, False, f"{len(touching)} separate layers: " + ", ".join(layer.name for layer in touching[:4])))
    upscale = [n for n in node_names if "output_upscaling" in n and node_types.get(n) in ("LayerNormalization", "Gelu", "Erf")]
    if upscale:
        alone = [n for n in upscale if any(layer.name == n for layer in layers)]
        verdicts.append(Verdict(
            "upscaling", not alone,
            f"{len(alone)} of {len(upscale)} LayerNorm/GELU nodes run as layers of their own" + (f": {', '.join(alone[:3])}" if alone else ""),
        ))
    return verdicts


def inspect_engine(plan: Path, onnx: Path | None = None) -> InspectReport:
    """Deserialize ``plan`` (after the sidecar check) and report its layers and fusion verdicts."""
    from segdeploy.graph_io import load_graph
    from segdeploy.tensorrt.environment import require_tensorrt
    from segdeploy.tensorrt.sidecar import check_compatible, read_sidecar

    sidecar = read_sidecar(plan)
    check_compatible(sidecar, require_tensorrt(), plan)
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    engine = runtime.deserialize_cuda_engine(Path(plan).read_bytes())
    inspector = engine.create_engine_inspector()
    layers = parse_layers(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    graph = load_graph(Path(onnx or sidecar.onnx_path)).graph
    verdicts = fusion_verdicts(layers, [n.name for n in graph.node], {n.name: n.op_type for n in graph.node})
    return InspectReport(str(plan), layers, verdicts)


def render_inspect(report: InspectReport) -> str:
    lines = [f"{report.plan}: {len(report.layers)} layers"]
    lines += [f"  {layer.layer_type:18} {layer.tactic[:40]:40} {layer.name[:90]}" for layer in report.layers]
    lines.append("fusion:")
    lines += [f"  {'FUSED  ' if v.fused else 'unfused'} {v.block}: {v.evidence}" for v in report.verdicts]
    return "\n".join(lines)
