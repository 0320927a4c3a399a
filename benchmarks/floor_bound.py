"""Issue 18: how close to the floor any graph of standard onnxruntime kernels can get, measured.

    PYTHONPATH=. python benchmarks/floor_bound.py G.onnx [--prompts 1,16] [--runs 20] [--json out.json]

The floor (segdeploy.floor) is the graph's matrix FLOPs at single-GEMM speed plus the mask output's
Resize. A SAM decoder also has element-wise work that no rewrite removes: residual adds, LayerNorms
and positional-encoding adds over the 4096x256 image maps, the attention softmaxes, and the
upscaling path's LayerNorm2d and GELUs. `passes_graph` is that work and nothing else, one
onnxruntime kernel per pass, each at the shape onnxruntime runs fastest for it:

- once per call (batch 1; with no mask input the image side of layer 0's first attention is shared
  by all prompts): the image embedding's NCHW -> token-major transpose and layer 0's key+PE add;
- per prompt: layer 0's residual add and norm4; layer 1's key+PE add, residual add and norm4; the
  final attention's key+PE add (6 passes over [4096,256]);
- per prompt: the token-to-image softmaxes over [64,4096] (layers 0 and 1) and [40,4096] (the final
  attention, 5 output tokens), and the per-head image-to-token softmaxes over [4096,8,8] (2);
- per prompt: LayerNorm2d over the 64x128x128 map, timed as a LayerNorm over 256-wide rows (the
  fast kernel shape; the real 64-wide rows run ~3x slower per element), its GELU, and the GELU over
  the 32x256x256 map with the bias already inside the GEMM before it.

Generous on purpose: the dense-embedding add and every bias pass are left out, the matrix work is
counted at the floor's single-GEMM speed, and no pass pays for a layout change. So
(floor + passes) / floor is a lower bound on the ratio `segdeploy bench` reports for any graph of
one onnxruntime CPU kernel per pass, on this machine. Ours, the floor graphs and the passes graph are
timed interleaved in one process (segdeploy.floor.time_interleaved), onnxruntime's default options."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))

from floor_gap import feeds_for

TOKENS, WIDTH = 4096, 256  # the 64x64 image map, token-major
UPSCALED_1 = (16384, 64)  # 64 x 128 x 128, channels last
UPSCALED_2 = (16384, 128)  # 32 x 256 x 256 as the 2nd stage's GEMM writes it (4 positions x 32 channels)
HEADS, QUERY_TOKENS = 8, 8  # SAM's heads; prompt tokens with 3 point slots (1 iou + 4 mask + 3)
OUTPUT_TOKENS = 5  # the final attention runs for the iou and mask tokens only


def passes_graph(prompts: int, seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The decoder's unavoidable element-wise passes (module docstring) as one graph, and its feeds."""
    rng = np.random.default_rng(seed)
    b = prompts
    f32 = TensorProto.FLOAT
    inits = {
        "pe": rng.standard_normal((1, TOKENS, WIDTH), dtype=np.float32),
        "gamma": rng.standard_normal(WIDTH, dtype=np.float32),
        "beta": rng.standard_normal(WIDTH, dtype=np.float32),
    }
    nodes = [
        helper.make_node("Transpose", ["embedding"], ["keys0"], perm=[0, 2, 1]),
        helper.make_node("Add", ["keys0", "pe"], ["keys_pe0"]),
        helper.make_node("Add", ["keys0", "attn0"], ["res0"]),
        helper.make_node("LayerNormalization", ["res0", "gamma", "beta"], ["keys1"], axis=-1),
        helper.make_node("Add", ["keys1", "pe"], ["keys_pe1"]),
        helper.make_node("Add", ["keys_pe1", "attn1"], ["res1"]),
        helper.make_node("LayerNormalization", ["res1", "gamma", "beta"], ["keys2"], axis=-1),
        helper.make_node("Add", ["keys2", "pe"], ["keys_pe2"]),
        helper.make_node("Softmax", ["t2i"], ["t2i_1"], axis=-1),
        helper.make_node("Softmax", ["t2i_1"], ["t2i_2"], axis=-1),
        helper.make_node("Softmax", ["t2i_final"], ["t2i_3"], axis=-1),
        helper.make_node("Softmax", ["i2t"], ["i2t_1"], axis=-1),
        helper.make_node("Softmax", ["i2t_1"], ["i2t_2"], axis=-1),
        helper.make_node("LayerNormalization", ["up1", "gamma", "beta"], ["up1_norm"], axis=-1),
        helper.make_node("Gelu", ["up1_norm"], ["up1_gelu"], domain="com.microsoft"),
        helper.make_node("Gelu", ["up2"], ["up2_gelu"], domain="com.microsoft"),
    ]
    shapes = {
        "embedding": (1, WIDTH, TOKENS),
        "attn0": (b, TOKENS, WIDTH),
        "attn1": (b, TOKENS, WIDTH),
        "t2i": (b, HEADS * QUERY_TOKENS, TOKENS),
        "t2i_final": (b, HEADS * OUTPUT_TOKENS, TOKENS),
        "i2t": (b, TOKENS, HEADS, QUERY_TOKENS),
        "up1": (b * UPSCALED_1[0] * UPSCALED_1[1] // WIDTH, WIDTH),  # LayerNorm2d at the fast row width
        "up2": (b * UPSCALED_2[0], UPSCALED_2[1]),
    }
    outputs = ["keys_pe0", "keys_pe2", "t2i_2", "t2i_3", "i2t_2", "up1_gelu", "up2_gelu"]
    graph = helper.make_graph(
        nodes, "decoder_passes",
        [helper.make_tensor_value_info(name, f32, list(shape)) for name, shape in shapes.items()],
        [helper.make_tensor_value_info(name, f32, None) for name in outputs],
        [numpy_helper.from_array(value, name) for name, value in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    feeds = {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()}
    return model, feeds


def _unfused():
    """Session options for the passes graph: basic optimizations only. At the default level
    onnxruntime fuses each residual Add + LayerNormalization into SkipLayerNormalization, whose CPU
    kernel took 2.75 ms for the pair that runs in 0.27 + 0.44 ms unfused (B=1 here)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return options


def measure(path: str, prompts: int, runs: int, seed: int = 0) -> dict:
    """Ours, the floor's MatMul and Resize, and the passes graph, timed interleaved; p50 ms each."""
    import onnxruntime as ort

    from segdeploy.floor import floor_calls, time_interleaved
    from segdeploy.flops import count_flops

    feeds = feeds_for(path, prompts)
    flops = count_flops(Path(path), feeds).total
    ours = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    masks = ours.run(["masks"], feeds)[0].shape
    passes_model, passes_feeds = passes_graph(prompts, seed)
    passes = ort.InferenceSession(passes_model.SerializeToString(), _unfused())
    calls = {
        "graph": lambda: ours.run(None, feeds),
        **floor_calls(flops, masks, seed=seed),
        "passes": lambda: passes.run(None, passes_feeds),
    }
    times, _ = time_interleaved(calls, runs, block=3 if prompts > 4 else 5)
    p50 = {label: float(np.median(t)) * 1000 for label, t in times.items()}
    floor = p50["matmul"] + p50["resize"]
    return p50 | {
        "prompts": prompts, "graph_flops": flops, "floor": floor,
        "bound_ratio": (floor + p50["passes"]) / floor, "ratio": p50["graph"] / floor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph")
    parser.add_argument("--prompts", default="1,16")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for b in (int(p) for p in args.prompts.split(",")):
        row = measure(args.graph, b, args.runs)
        rows.append(row)
        print(
            f"B={b}: floor {row['floor']:.1f} ms (MatMul {row['matmul']:.1f} + Resize {row['resize']:.1f}); "
            f"unavoidable passes {row['passes']:.1f} ms -> bound {row['bound_ratio']:.2f}x the floor; "
            f"ours {row['graph']:.1f} ms = {row['ratio']:.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
