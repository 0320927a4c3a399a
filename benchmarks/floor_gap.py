"""Issue 18: how far the default onnxruntime graphs are from the decode floor, and where the time goes.

    PYTHONPATH=. python benchmarks/floor_gap.py profile G.onnx [--prompts 1] [--runs 25]
        onnxruntime's profiler (SessionOptions.enable_profiling) on G, summed by op type
    PYTHONPATH=. python benchmarks/floor_gap.py ab OLD.onnx NEW.onnx [MORE.onnx ...] [--prompts 1] [--runs 40] [--repeats 3]
        OLD and NEW timed interleaved in one process (segdeploy.floor.time_interleaved), p50 per repeat and
        NEW/OLD per repeat (the ratio is what counts on a shared machine, the spread is reported)
    PYTHONPATH=. python benchmarks/floor_gap.py floor G.onnx [--prompts 1,16]
        segdeploy.floor.measure_floor per B (what `segdeploy bench` prints as vs floor), with onnxruntime's
        default spinning workers and without
    PYTHONPATH=. python benchmarks/floor_gap.py spin G.onnx [--prompts 1,16]
        G with idle workers spinning (onnxruntime's default) and not (session.intra_op.allow_spinning=0),
        interleaved: the session option OrtRunner.spinning sets

    PYTHONPATH=. python benchmarks/floor_gap.py settle G.onnx [--prompts 1] [--runs 12]
        G, the floor's MatMul and its Resize called 12 times each in turn, --runs rounds, no settling:
        the median time per call position after a session switch (how long each takes to get back
        to speed; segdeploy.floor.SETTLE_S is chosen from it)

Feeds are `segdeploy bench`'s: 3 point slots, 1024x1024 original size, 2 threads."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

from segdeploy.bench import bench_feeds
from segdeploy.registry import family_of_variant


def feeds_for(path: str, prompts: int, points: int = 3, size=(1024, 1024)) -> dict[str, np.ndarray]:
    model = onnx.load(path, load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    family = family_of_variant(meta["segdeploy.variant"])
    names = {i.name for i in model.graph.input}
    feeds = bench_feeds(prompts, points, size, np.random.default_rng(0), postprocess="orig_im_size" in names, family=family)
    return {k: v for k, v in feeds.items() if k in names}


def session(path: str, threads: int = 2, profile_prefix: str | None = None, spinning: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def profile(path: str, prompts: int, runs: int, threads: int = 2) -> dict:
    """Per op type: total ms over ``runs`` calls / runs, node count; and the wall p50."""
    import time

    feeds = feeds_for(path, prompts)
    with tempfile.TemporaryDirectory() as scratch:
        sess = session(path, threads, os.path.join(scratch, "prof"))
        for _ in range(3):
            sess.run(None, feeds)
        walls = []
        for _ in range(runs):
            started = time.perf_counter()
            sess.run(None, feeds)
            walls.append(time.perf_counter() - started)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    nodes: dict[str, set] = defaultdict(set)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            per_op[op] += event["dur"] / 1000.0
            nodes[op].add(event["name"])
    total_calls = runs + 3
    table = {op: {"ms": ms / total_calls, "nodes": len(nodes[op])} for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])}
    return {"graph": path, "prompts": prompts, "runs": runs, "wall_p50_ms": 1000 * float(np.median(walls)),
            "kernel_ms": sum(v["ms"] for v in table.values()), "ops": table}


def render_profile(result: dict) -> str:
    lines = [f"{result['graph']}  B={result['prompts']}  wall p50 {result['wall_p50_ms']:.1f} ms, kernels {result['kernel_ms']:.1f} ms/run"]
    for op, row in result["ops"].items():
        lines.append(f"  {op:<28} {row['ms']:7.2f} ms  ({row['nodes']} nodes)")
    return "\n".join(lines)


def ab(old: str, new: str, prompts: int, runs: int, repeats: int, threads: int = 2, more: tuple[str, ...] = ()) -> list[dict]:
    """OLD and NEW (and ``more`` graphs) interleaved; per repeat the p50s and NEW/OLD (``ratio``), and
    each further graph's p50 over OLD under its path."""
    from segdeploy.floor import time_interleaved

    feeds = feeds_for(old, prompts)
    sessions = {"old": session(old, threads), "new": session(new, threads)} | {path: session(path, threads) for path in more}
    results = []
    for _ in range(repeats):
        times, _ = time_interleaved({k: (lambda s=s: s.run(None, feeds)) for k, s in sessions.items()}, runs, block=3 if prompts > 4 else 5)
        p50 = {k: 1000 * float(np.median(v)) for k, v in times.items()}
        results.append(p50 | {"ratio": p50["new"] / p50["old"]} | {f"{path} / old": p50[path] / p50["old"] for path in more})
    return results


def spin(path: str, prompts: int, runs: int, repeats: int, threads: int = 2) -> list[dict]:
    from segdeploy.floor import time_interleaved

    feeds = feeds_for(path, prompts)
    a, b = session(path, threads), session(path, threads, spinning=False)
    results = []
    for _ in range(repeats):
        times, _ = time_interleaved({"spin": lambda: a.run(None, feeds), "nospin": lambda: b.run(None, feeds)}, runs, block=3)
        p50 = {k: 1000 * float(np.median(v)) for k, v in times.items()}
        results.append(p50 | {"ratio": p50["nospin"] / p50["spin"]})
    return results


def settle(path: str, prompts: int, rounds: int, calls: int = 12, threads: int = 2) -> dict[str, list[float]]:
    """Median ms per call position (0 = first after another session ran) for G and its floor graphs."""
    import time

    import onnxruntime as ort

    from segdeploy.floor import floor_calls
    from segdeploy.flops import count_flops

    feeds = feeds_for(path, prompts)
    flops = count_flops(path, feeds).total
    graph = session(path, threads)
    masks = graph.run(["masks"], feeds)[0].shape
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    runs = {"graph": lambda: graph.run(None, feeds), **floor_calls(flops, masks, options)}
    times: dict[str, list[list[float]]] = {label: [[] for _ in range(calls)] for label in runs}
    for _ in range(rounds):
        for label, call in runs.items():
            for position in range(calls):
                started = time.perf_counter()
                call()
                times[label][position].append(1000 * (time.perf_counter() - started))
    return {label: [float(np.median(v)) for v in per_position] for label, per_position in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["profile", "ab", "floor", "spin", "settle"])
    parser.add_argument("graphs", nargs="+")
    parser.add_argument("--prompts", default="1")
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    prompts = [int(p) for p in args.prompts.split(",")]
    out = []
    for b in prompts:
        if args.mode == "profile":
            for graph in args.graphs:
                result = profile(graph, b, args.runs)
                print(render_profile(result))
                out.append(result)
        elif args.mode == "ab":
            old, new, *more = args.graphs
            rows = ab(old, new, b, args.runs, args.repeats, more=tuple(more))
            for row in rows:
                extra = "".join(f", {path} {row[path]:.1f} ms ({row[f'{path} / old']:.3f} of old)" for path in more)
                print(f"B={b}: old {row['old']:.1f} ms, new {row['new']:.1f} ms, new/old {row['ratio']:.3f}{extra}")
            ratios = [r["ratio"] for r in rows]
            print(f"B={b}: new/old median {np.median(ratios):.3f} (range {min(ratios):.3f}..{max(ratios):.3f})")
            out.append({"prompts": b, "repeats": rows})
        elif args.mode == "settle":
            medians = settle(args.graphs[0], b, args.runs)
            for label, row in medians.items():
                print(f"B={b} {label:6s} " + " ".join(f"{ms:.1f}" for ms in row))
            out.append({"prompts": b, "ms_by_position": medians})
        elif args.mode == "spin":
            rows = spin(args.graphs[0], b, args.runs, args.repeats)
            for row in rows:
                print(f"B={b}: spinning {row['spin']:.1f} ms, not spinning {row['nospin']:.1f} ms, ratio {row['ratio']:.3f}")
            out.append({"prompts": b, "repeats": rows})
        else:
            from segdeploy.floor import measure_floor

            for graph in args.graphs:
                for spinning in (True, False):
                    report = measure_floor(graph, feeds_for(graph, b), runs=args.runs, threads=2, spinning=spinning)
                    print(f"{graph} B={b} {'spinning' if spinning else 'not spinning'}: {report.describe()}  per prompt {report.graph_ms / b:.2f} ms")
                    out.append(report.to_dict() | {"spinning": spinning})
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
