"""``segdeploy info``: the contract and metadata an exported graph carries."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from segdeploy.contract import TensorSpec
from segdeploy.graph_io import all_nodes, graph_opset, load_graph, read_metadata, value_specs


@dataclass
class GraphInfo:
    path: str
    size_bytes: int
    opset: int
    producer: str
    metadata: dict[str, str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    node_count: int
    op_counts: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


def describe_graph(path: Path) -> GraphInfo:
    model = load_graph(path)
    nodes = all_nodes(model.graph)
    ops = Counter(node.op_type for node in nodes)
    return GraphInfo(
        path=str(path),
        size_bytes=Path(path).stat().st_size,
        opset=graph_opset(model),
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        metadata=read_metadata(model),
        inputs=value_specs(model.graph.input),
        outputs=value_specs(model.graph.output),
        node_count=len(nodes),
        op_counts=dict(ops.most_common()),
    )


def render_info(info: GraphInfo) -> str:
    lines = [f"{info.path}  ({info.size_bytes / 1e6:.1f} MB, opset {info.opset}, {info.node_count} nodes, by {info.producer})"]
    if info.metadata:
        lines.append("metadata:")
        lines += [f"  {key:18} {value}" for key, value in sorted(info.metadata.items())]
    else:
        lines.append("metadata: none (not exported by segdeploy)")
    for title, specs in (("inputs", info.inputs), ("outputs", info.outputs)):
        lines.append(f"{title}:")
        lines += [f"  {s.name:18} {s.dtype:8} {s.shape_text()}" for s in specs]
    top = ", ".join(f"{op} {n}" for op, n in list(info.op_counts.items())[:12])
    lines.append(f"ops: {top}")
    return "\n".join(lines)
