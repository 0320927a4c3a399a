"""Clean-up passes run on every exported graph: constant folding and shape-bookkeeping removal
(onnxscript's optimizer), then two of our own: shared copies of identical weights, and one Slice
where the tracer wrote a chain of single-axis Slices (each Slice copies its whole input)."""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper


def optimize_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run every pass; returns a new, equivalent model."""
    optimized = onnxscript_optimize(model)
    dedupe_initializers(optimized)
    merge_slice_chains(optimized)
    return optimized


# The default rewrite rules of onnxscript's optimizer that match an exported decoder (both slice
# rules, the reshape-shape one, Unsqueeze(Unsqueeze)), in the default list's order.
MATCHING_RULES = ("collapse_slice_rule", "collapse_slice2_rule", "materialize_reshape_shape_rule", "unsqueeze_unsqueeze_rule")


def onnxscript_optimize(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxscript's ``optimizer.optimize`` (inline, constant folding and pattern rewrites to a fixed
    point, then its clean-ups) with its default rewrite rules cut to the four that match a decoder
    trace (``MATCHING_RULES``). The other 42 match nothing in any family's export yet took about 40%
    of an export (2.3 s -> 1.5 s per export here); the output is byte-identical to ``optimize``'s
    (the identity manifest's 35 graphs were made by ``optimize``; tests/test_rewrites.py compares the
    two on HQ-SAM's and SAM 1's traces). onnxscript has no public way to pass the rules, so this
    names its pass list; where its private modules differ, ``optimize`` itself runs."""
    import onnxscript.optimizer

    try:
        import onnx_ir as ir
        import onnx_ir.passes.common as common
        from onnxscript.optimizer import _constant_folding as folding
        from onnxscript.rewriter import RewritePass
        from onnxscript.rewriter.rules import common as rules

        matching = [getattr(rules, name) for name in MATCHING_RULES]
    except (ImportError, AttributeError):
        return onnxscript.optimizer.optimize(model)
    fold = folding.FoldConstantsPass(
        shape_inference=True, input_size_limit=folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
        output_size_limit=folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT,
    )
    passes = ir.passes.Sequential(
        common.InlinePass(),
        ir.passes.PassManager(
            [fold, RewritePass(matching), common.RemoveUnusedNodesPass(), common.RemoveUnusedFunctionsPass(), common.RemoveUnusedOpsetsPass()],
            steps=2, early_stop=True,
        ),
        common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.LiftSubgraphInitializersToMainGraphPass(),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
        common.OutputFixPass(),
        common.NameFixPass(),
    )
    graph = ir.serde.deserialize_model(model)
    passes(graph)
    return ir.serde.serialize_model(graph)


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """The nodes reading each value, by name."""
    users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            users[name].append(node)
    return users


def dedupe_initializers(model: onnx.ModelProto) -> int:
    """Point every use of a duplicated initializer at its first copy; returns how many were dropped."""
    graph = model.graph
    first: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    for tensor in graph.initializer:
        key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(numpy_helper.to_array(tensor).tobytes()).hexdigest())
        if key in first:
            rename[tensor.name] = first[key]
        else:
            first[key] = tensor.name
    if not rename:
        return 0
    for node in graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
    outputs = {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name not in rename or t.name in outputs]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(rename)


def constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """The values of the graph's initializers and Constant nodes, by name."""
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def merge_slice_chains(model: onnx.ModelProto) -> int:
    """Replace Slice(axes a) -> Slice(axes b), disjoint and with unit steps, where the first feeds
    only the second, by one Slice over a and b. Returns how many Slices were removed."""
    graph = model.graph
    constants = constant_values(graph)
    users = consumers(graph)
    merged = 0
    nodes = list(graph.node)
    removed: set[int] = set()
    for first in nodes:
        if first.op_type != "Slice" or id(first) in removed or len(first.input) < 4:
            continue
        followers = users.get(first.output[0], [])
        if len(followers) != 1 or followers[0].op_type != "Slice" or len(followers[0].input) < 4:
            continue
        second = followers[0]
        axes = [constants.get(node.input[3]) for node in (first, second)]
        steps = [constants.get(node.input[4]) if len(node.input) > 4 and node.input[4] else np.ones(1) for node in (first, second)]
        if any(a is None for a in axes) or any(s is None or (s != 1).any() for s in steps):
            continue
        if set(axes[0].tolist()) & set(axes[1].tolist()):
            continue
        prefix = first.name or first.output[0]
        starts, ends = f"{prefix}/merged_starts", f"{prefix}/merged_ends"
        axes_name = f"{prefix}/merged_axes"
        graph.initializer.append(numpy_helper.from_array(np.concatenate(axes).astype(np.int64), axes_name))
        concat_starts = helper.make_node("Concat", [first.input[1], second.input[1]], [starts], axis=0, name=starts)
        concat_ends = helper.make_node("Concat", [first.input[2], second.input[2]], [ends], axis=0, name=ends)
        slice_node = helper.make_node("Slice", [first.input[0], starts, ends, axes_name], [second.output[0]], name=f"{prefix}/merged")
        index = list(graph.node).index(second)
        graph.node.remove(second)
        for offset, node in enumerate((concat_starts, concat_ends, slice_node)):
            graph.node.insert(index + offset, node)
        graph.node.remove(first)
        removed.add(id(first))
        merged += 1
    return merged
